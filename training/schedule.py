"""Learning-rate schedule of the reference: linear warm-up from ``warmup_ratio`` then poly decay,
evaluated per iteration."""

from __future__ import annotations


def lr_factor(step: int, total: int, warmup_iters: int = 1500, warmup_ratio: float = 1e-6,
              power: float = 1.0, min_factor: float = 0.0) -> float:
    """Multiplier on each group's base lr at ``step`` (0-based)."""
    poly = (1.0 - min(step, total) / max(total, 1)) ** power * (1.0 - min_factor) + min_factor
    if warmup_iters > 0 and step < warmup_iters:
        return poly * (1.0 - (1.0 - step / warmup_iters) * (1.0 - warmup_ratio))
    return poly
