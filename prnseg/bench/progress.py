"""Progress lines on stderr and the time-left estimate of a run that can take many minutes.

Steps are weighted by their expected cost (``unit_cost``) so that the estimate holds when a big
encoder follows a small one.
"""

from __future__ import annotations

import contextlib
import sys
import time

from prnseg.bench.settings import Settings

# Relative cost of one image forward per encoder at 512x1024 (measured ratios on a CPU, the
# DAFormer head included); only used to estimate the remaining time before a step has run.
ARCH_COST = {"tiny": 0.04, "mit_b0": 1.0, "mit_b1": 1.3, "mit_b2": 1.9, "mit_b3": 2.3, "mit_b4": 2.7,
             "mit_b5": 3.0}


class Progress:
    """One line per step on stderr, with its duration and an estimate of the time left.

    Each step has a weight (image-forward equivalents x the encoder's relative cost x pixels);
    seconds per weight unit are calibrated on the steps already run.
    """

    def __init__(self, weights: list[float]):
        self.weights = weights
        self.done_w = 0.0
        self.done_s = 0.0
        self.i = 0
        self.t_start = time.perf_counter()

    def skip(self, what: str) -> None:
        """A planned step that will not run (a backend not available here), said as such."""
        print(f"[{self.i + 1}/{max(len(self.weights), self.i + 1)}] {what}", file=sys.stderr, flush=True)
        self.i += 1

    def left_s(self) -> float | None:
        if self.done_w <= 0:
            return None
        return self.done_s / self.done_w * sum(self.weights[self.i:])

    @contextlib.contextmanager
    def step(self, what: str):
        n = len(self.weights)
        print(f"[{self.i + 1}/{n}] {what} ...", file=sys.stderr, flush=True)
        t0 = time.perf_counter()
        status = "done"
        try:
            yield
        except BaseException:
            status = "failed"
            raise
        finally:
            dt = time.perf_counter() - t0
            self.done_w += self.weights[self.i] if self.i < n else 0.0
            n = max(n, self.i + 1)
            self.done_s += dt
            self.i += 1
            left = self.left_s()
            eta = f"; about {fmt_s(left)} left (estimate)" if left is not None and self.i < n else ""
            print(f"      {status} in {fmt_s(dt)}{eta}", file=sys.stderr, flush=True)


def fmt_s(s: float) -> str:
    if s < 90:
        return f"{s:.1f} s"
    return f"{s / 60:.1f} min"


def unit_cost(arch: str, hw: tuple[int, int], batch: int = 1) -> float:
    return ARCH_COST.get(arch, 1.0) * hw[0] * hw[1] / (512 * 1024) * batch


def plan_weights(s: Settings, targets: list[tuple[str, tuple[int, int]]]) -> list[float]:
    """Weights of the progress steps in the order they run, one per planned row (see ``Progress``)."""
    weights = []
    calls = s.warmup + max(s.iters or 3, s.images)
    n_torch = (1 + (2 if s.on_cuda else 1) * s.fp16) if "pytorch" in s.backends else 0
    n_runtime = ("onnxruntime" in s.backends) * ((2 if s.fp16 else 1) + s.on_cuda) + ("tensorrt" in s.backends)
    for arch, hw in targets:
        if s.model is None:
            weights.append(14 * unit_cost(arch, hw))  # traces + parity gate + fp16 conversion
        for b in s.batches:
            weights += [calls * unit_cost(arch, hw, b)] * n_torch
            weights += [(calls + s.images / b) * unit_cost(arch, hw, b)] * n_runtime
    if s.train:
        weights.append(s.train_steps * 2 * 10 * unit_cost(s.train_arch, (s.train_crop, s.train_crop), 4))
    return weights
