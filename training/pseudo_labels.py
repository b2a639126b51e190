"""The one pseudo-label rule: which label the product writes for a pixel.

The teacher's raw label stands unless the PRN is confident enough to change it: a refined label
replaces the raw one only where the refined distribution's top probability reaches
``min_confidence``. ``min_confidence = 0`` writes every refined label (the PRN's argmax, the
method as first specified); ``min_confidence > 1`` never replaces (the teacher's labels); values
between trade the PRN's corrections against its mistakes, and the measured best is the default.

The trainer (the student's target loss), evaluation, the exported ``pseudolabeler.onnx`` and the
bench scripts all reach :func:`written_labels` through the one PRN step
(:class:`prnseg.training.prn_step.PRNStep`), so what is measured is what ships.
"""

from __future__ import annotations

import torch


def max_softmax(logits: torch.Tensor, dim: int = 1) -> torch.Tensor:
    """``softmax(logits, dim).amax(dim)`` as ``1 / sum(exp(l - max l))``: the same value without
    normalising all C channels and without a Softmax node (ONNX Runtime's CPU Softmax over a
    non-last axis transposes and took half the fused graph's time at full resolution)."""
    shifted = logits - logits.amax(dim, keepdim=True)
    return 1.0 / torch.exp(shifted).sum(dim)


def written_labels(raw_logits: torch.Tensor, refined_logits: torch.Tensor | None, min_confidence: float,
                   dim: int = 1) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(label, confidence, replaced) from class scores along ``dim``.

    ``raw_logits`` are the teacher's, ``refined_logits`` the PRN's refinement of them (same
    shape) or None (no PRN: the teacher's labels). ``label`` is int64, ``confidence`` the top
    probability of the distribution the label came from, ``replaced`` a bool mask of the pixels
    whose label is the PRN's. Traced as it is into ``pseudolabeler.onnx``.
    """
    raw, conf_raw = raw_logits.argmax(dim), max_softmax(raw_logits.float(), dim)
    if refined_logits is None:
        return raw, conf_raw, torch.zeros_like(raw, dtype=torch.bool)
    ref, conf_ref = refined_logits.argmax(dim), max_softmax(refined_logits.float(), dim)
    replaced = (conf_ref >= min_confidence) & (ref != raw)
    return torch.where(replaced, ref, raw), torch.where(replaced, conf_ref, conf_raw), replaced
