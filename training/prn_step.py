"""The PRN's step: its training losses and its inference, in one place (as MIC's
``MaskingConsistencyModule`` owns its masked view and loss).

Inference is teacher logits + the teacher's detached encoder features -> PRN -> refined logits +
noise logit -> the label the product writes (the one rule of :mod:`.pseudo_labels`) and the noise
mask. The trainer (the student's target pseudo-labels), ``prnseg eval``, the exported
``pseudolabeler.onnx`` and ``bench/prn_variants.py`` all call :meth:`PRNStep.infer` or
:meth:`PRNStep.pseudo_labels`, so what is trained on, measured and shipped cannot drift apart.
Callers differ only in where the stride-4 maps are resized to (the crop, the label, the image,
channels-last in the exported graph), which they pass in as ``resize``.

The step holds settings, not networks: the PRN is an argument, so the trainer can pass its DDP
wrapper for the training forward and the plain module for inference.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import NamedTuple

import torch

from .augment import consistency_view
from .fft_perturb import fft_perturb_logits, sample_eps
from .losses import consistency_noise_loss, prn_losses
from .pseudo_labels import written_labels
from .tta import tta_probabilities

NOISE_SIGNALS = ("source_fft", "target_consistency", "target_tta")
REFINE_SIGNALS = ("source_fft", "target_tta")

Resize = Callable[[torch.Tensor], torch.Tensor]


class PseudoLabels(NamedTuple):
    """What the PRN step writes for each pixel, at the caller's output resolution."""

    label: torch.Tensor        # int64: the rule's label (the PRN's where confident enough, else the teacher's)
    confidence: torch.Tensor   # top probability of the distribution ``label`` came from
    replaced: torch.Tensor     # bool: pixels whose label is the PRN's
    raw_label: torch.Tensor    # int64: the teacher's argmax
    noise_prob: torch.Tensor   # sigmoid of the noise logit
    noise: torch.Tensor        # bool: noise_prob >= noise_threshold


class PRNBatch(NamedTuple):
    """One chunk of PRN input: the teacher's encoder features and logits (and labels where known)."""

    features: Sequence[torch.Tensor]
    logits: torch.Tensor
    labels: torch.Tensor | None = None


class PRNLosses(NamedTuple):
    loss: torch.Tensor                     # weighted sum, ready for backward
    terms: dict[str, torch.Tensor]         # detached terms to log
    target: tuple[torch.Tensor, torch.Tensor] | None  # detached (refined, noise) of the target chunk


@dataclass(frozen=True)
class PRNStep:
    """Settings of the PRN's training signal and of the pseudo-label rule; see the module doc."""

    use_refined_labels: bool = True
    refine_min_confidence: float = 0.0
    noise_threshold: float = 0.5
    noise_signal: str = "source_fft"
    refine_signal: str = "source_fft"
    noise_pos_weight: str | float = "balanced"
    ce_reduction: str = "all_pixels"
    eps_low: float = 0.05
    eps_high: float = 0.2
    jitter_strength: float = 0.2
    refine_weight: float = 1.0
    noise_weight: float = 1.0

    def __post_init__(self):
        if self.noise_signal not in NOISE_SIGNALS:
            raise ValueError(f"prn.noise_signal must be one of {', '.join(NOISE_SIGNALS)}, got {self.noise_signal!r}")
        if self.refine_signal not in REFINE_SIGNALS:
            raise ValueError(f"prn.refine_signal must be one of {', '.join(REFINE_SIGNALS)}, "
                             f"got {self.refine_signal!r}")

    @classmethod
    def from_config(cls, cfg) -> "PRNStep":
        """The step a training config describes (its ``prn`` and ``uda`` sections)."""
        p, u = cfg.prn, cfg.uda
        return cls(use_refined_labels=p.use_refined_labels, refine_min_confidence=p.refine_min_confidence,
                   noise_threshold=p.noise_threshold, noise_signal=p.noise_signal, refine_signal=p.refine_signal,
                   noise_pos_weight=p.noise_pos_weight,
                   ce_reduction=u.ce_reduction, eps_low=p.eps_low, eps_high=p.eps_high,
                   jitter_strength=u.jitter_strength, refine_weight=u.loss_weights.prn_refine,
                   noise_weight=u.loss_weights.prn_noise)

    # ----------------------------------------------------------------- inference
    @staticmethod
    @contextmanager
    def bn_statistics(prn, running: bool) -> Iterator[None]:
        """Run ``prn`` inside with its running BatchNorm statistics (eval mode) when ``running``,
        else in the mode it is in; its mode is restored after."""
        was = prn.training
        if running:
            prn.eval()
        try:
            yield
        finally:
            prn.train(was)

    @staticmethod
    def run(prn, features: Sequence[torch.Tensor], logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(refined logits, noise logit) at stride 4. The features are detached: the PRN's losses
        must never reach the network that made them."""
        return prn([f.detach() for f in features], logits)

    def pseudo_labels(self, raw_logits: torch.Tensor, refined_logits: torch.Tensor, noise_logit: torch.Tensor,
                      resize: Resize | None = None, resize_noise: Resize | None = None, dim: int = 1) -> PseudoLabels:
        """The written labels and noise mask from the teacher's and the PRN's maps.

        ``resize`` takes each B x K x h x w map to the output resolution with its K axis at
        ``dim`` (None: the maps are there already); ``resize_noise``, when given, takes the
        noise logit to the output without its channel axis. The refined map is resized only
        when the rule reads it (``use_refined_labels``).
        """
        resize = resize or (lambda t: t)
        raw = resize(raw_logits)
        refined = resize(refined_logits) if self.use_refined_labels else None
        label, confidence, replaced = written_labels(raw, refined, self.refine_min_confidence, dim)
        noise = resize_noise(noise_logit) if resize_noise is not None else resize(noise_logit).select(dim, 0)
        noise_prob = torch.sigmoid(noise)
        noisy = noise_prob >= self.noise_threshold
        return PseudoLabels(label, confidence, replaced, raw.argmax(dim), noise_prob, noisy)

    def infer(self, prn, features: Sequence[torch.Tensor], logits: torch.Tensor, resize: Resize | None = None,
              resize_noise: Resize | None = None, dim: int = 1) -> PseudoLabels:
        """:meth:`run` then :meth:`pseudo_labels` on the teacher's ``logits``."""
        refined, noise = self.run(prn, features, logits)
        return self.pseudo_labels(logits, refined, noise, resize, resize_noise, dim)

    # ------------------------------------------------------------------ training
    def perturb(self, source_logits: torch.Tensor, target_logits: torch.Tensor,
                generator: torch.Generator | None = None) -> torch.Tensor:
        """Source logits with a target image's low-frequency amplitude (eps ~ U(eps_low, eps_high)
        per sample): target-like noise on predictions whose labels are known."""
        eps = sample_eps(source_logits.shape[0], self.eps_low, self.eps_high, generator=generator)
        return fft_perturb_logits(source_logits, target_logits, eps.to(source_logits.device))

    def losses(self, prn, source: PRNBatch, *, target: PRNBatch | None = None,
               target_images: torch.Tensor | None = None, teacher: Callable[[torch.Tensor], torch.Tensor] | None = None,
               labeled: PRNBatch | None = None, generator: torch.Generator | None = None) -> PRNLosses:
        """The PRN's losses from one forward over every chunk (under DDP one forward per backward).

        ``source``: perturbed source logits and their labels, which each head learns from when its
        signal is ``source_fft``. The target signals learn on ``target`` (the teacher's features
        and logits of ``target_images``), with ``teacher`` (images -> logits) giving a second
        opinion: ``target_consistency`` (noise head) marks where its label changes on a mirrored,
        jittered and blurred view; ``target_tta`` (either head) learns its label averaged over
        scales and mirrors (:func:`~prnseg.training.tta.tta_probabilities`) and, for the noise
        head, where that differs from its single pass. ``labeled``: hand-labelled target images,
        both heads supervised by their labels.
        """
        signals = (self.refine_signal, self.noise_signal)
        on_source = "source_fft" in signals
        on_target = any(sig.startswith("target_") for sig in signals)
        if on_target and (target is None or target_images is None or teacher is None):
            raise ValueError(f"prn signals {'/'.join(signals)} need target, target_images and teacher")
        chunks = [*([source] if on_source else []), *([target] if on_target else []),
                  *([labeled] if labeled is not None else [])]
        refined, noise = self.run(prn, [torch.cat(fs) for fs in zip(*(c.features for c in chunks))],
                                  torch.cat([c.logits for c in chunks]))
        sizes = [c.logits.shape[0] for c in chunks]
        outputs = list(zip(refined.split(sizes), noise.split(sizes)))
        sup = {}
        if on_source:
            sup["source_fft"] = self._supervised(*outputs.pop(0), source)
        target_out = None
        if on_target:
            ref_t, noise_t = outputs.pop(0)
            target_out = (ref_t.detach(), noise_t.detach())
            if "target_tta" in signals:
                tta_label = tta_probabilities(teacher, target_images).argmax(1)
                sup["target_tta"] = self._supervised(ref_t, noise_t, target._replace(labels=tta_label))
            if self.noise_signal == "target_consistency":
                with torch.no_grad():
                    view = consistency_view(target_images, self.jitter_strength, generator=generator)
                    view_logits = teacher(view).flip(-1)
                sup["target_consistency"] = {"noise": consistency_noise_loss(
                    noise_t, target.logits, view_logits, target_images.shape[-2:], pos_weight=self.noise_pos_weight)}
        main = {"ref": sup[self.refine_signal]["ref"], "noise": sup[self.noise_signal]["noise"]}
        loss = self.refine_weight * main["ref"] + self.noise_weight * main["noise"]
        terms = {}
        if labeled is not None:   # the teacher's real target errors: the signal the PRN lacks elsewhere
            ref_l, noise_l = outputs.pop(0)
            lab = self._supervised(ref_l, noise_l, labeled)
            loss = loss + self.refine_weight * lab["ref"] + self.noise_weight * lab["noise"]
            terms.update(prn_ref_labeled=lab["ref"].detach(), prn_noise_labeled=lab["noise"].detach())
        terms.update(prn_ref=main["ref"].detach(), prn_noise=main["noise"].detach())
        return PRNLosses(loss, terms, target_out)

    def _supervised(self, refined, noise, batch: PRNBatch) -> dict[str, torch.Tensor]:
        return prn_losses(refined, noise, batch.logits, batch.labels, pos_weight=self.noise_pos_weight,
                          reduction_mode=self.ce_reduction)
