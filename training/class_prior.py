"""Logit adjustment of the teacher's target pseudo-labels by its own running class marginal.

A self-trained teacher drifts towards the classes it already predicts most (confirmation bias):
on benchmark version 3 self-training fixes road and car while traffic signs, buses, trains and
walls fade. Post-hoc logit adjustment (Menon et al., "Long-tail learning via logit adjustment",
ICLR 2021), with the teacher's own mean class probability on the target as the prior, takes a
pixel's label as ``argmax_c log p_c - tau * log pi_c``: a rare class wins a pixel where the
teacher gives it nearly as much probability as a frequent one. The prior is label-free (a running
mean over the target crops the teacher already sees), so the rule needs no target labels; class-
balanced self-training (CBST, Zou et al. 2018) counters the same bias with per-class thresholds.
"""

from __future__ import annotations

import torch

from prnseg.training import distributed as dist_utils


class TargetClassMarginal:
    """Running mean of the teacher's class probabilities over target pixels (an EMA per batch).

    ``update`` folds one batch in (averaged over DDP ranks, so every rank adjusts alike);
    ``adjust`` returns the adjusted distribution. The state goes into the trainer's checkpoint, so
    a resumed run adjusts exactly as the uninterrupted one.
    """

    def __init__(self, num_classes: int, momentum: float = 0.99, eps: float = 1e-6):
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"class marginal momentum must be in [0, 1), got {momentum}")
        self.num_classes = num_classes
        self.momentum = momentum
        self.eps = eps
        self.marginal: torch.Tensor | None = None   # float64 C, None until the first batch

    @torch.no_grad()
    def update(self, probs: torch.Tensor) -> torch.Tensor:
        """Fold the batch's mean class probabilities (``probs`` B x C x H x W) in; return the marginal."""
        if probs.shape[1] != self.num_classes:
            raise ValueError(f"expected {self.num_classes}-class probabilities, got {probs.shape[1]} channels")
        batch = probs.detach().double().mean(dim=(0, 2, 3))
        batch = dist_utils.all_reduce_sum_(batch) / dist_utils.world_size()
        if self.marginal is None:
            self.marginal = batch
        else:
            self.marginal = self.momentum * self.marginal.to(batch.device) + (1 - self.momentum) * batch
        return self.marginal

    def adjust(self, probs: torch.Tensor, tau: float) -> torch.Tensor:
        """``softmax(log probs - tau * log marginal)`` over dim 1: probabilities whose argmax is the
        logit-adjusted label and whose maximum is that label's confidence."""
        if self.marginal is None:
            raise RuntimeError("TargetClassMarginal.adjust before any update")
        return adjust_probabilities(probs, self.marginal, tau, self.eps)

    def state_dict(self) -> dict:
        return {"momentum": self.momentum,
                "marginal": None if self.marginal is None else self.marginal.detach().cpu().tolist()}

    def load_state_dict(self, state: dict) -> None:
        m = state.get("marginal")
        self.marginal = None if m is None else torch.tensor(m, dtype=torch.float64)


def adjust_probabilities(probs: torch.Tensor, prior: torch.Tensor, tau: float, eps: float = 1e-6) -> torch.Tensor:
    """Probabilities ``probs`` (B x C x ...) re-weighted by ``prior ** -tau`` and renormalised over
    dim 1; ``tau = 0`` returns them unchanged."""
    if tau == 0:
        return probs
    w = prior.to(device=probs.device, dtype=torch.float32).clamp_min(eps).pow(-tau)
    shape = [1, -1] + [1] * (probs.dim() - 2)
    out = probs.float() * w.view(shape)
    return out / out.sum(1, keepdim=True)
