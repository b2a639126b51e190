"""Pseudo-label quality for ``prnseg eval``: raw vs refined pseudo-labels and the noise detectors.

The counting itself (confusion matrices, detector statistics, AUROC) is the root package's
numpy metrics (:mod:`prnseg.metrics`), shared with the export parity gate and ``prnseg label``.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from prnseg.labels import IGNORE_INDEX, NUM_CLASSES
from prnseg.metrics import BinaryDetectionStats, ConfusionMatrix, nan_to_none, to_numpy


class PseudoLabelQuality:
    """Raw (teacher) vs written (the pseudo-label rule's) pseudo-labels against ground truth, and two detectors of
    wrong pseudo-labels: the PRN's noise probability and the confidence baseline
    ``1 - max softmax``.

    The detectors are scored against the errors of the ``error_reference`` label, "raw" by
    default: the noise head is trained to flag pixels where its *input* prediction is wrong,
    and the confidence baseline describes that same prediction. The baseline flags a pixel when
    ``1 - confidence > 1 - confidence_threshold``, i.e. when the teacher is below the DAFormer
    threshold.

    ``refined`` scores the labels the product writes (training/pseudo_labels.py: the PRN's label
    where it is confident enough, else the teacher's); ``prn_argmax``, when given, the PRN's own
    argmax everywhere, which the rule guards against.

    ``kept`` scores the labels a training run actually consumes with the noise mask applied: the
    refined label on the pixels the noise head keeps (``noise_prob < noise_threshold``), with
    ``coverage`` the share of labelled pixels kept. A useful mask raises ``kept`` mIoU above
    ``refined`` at a coverage that still leaves enough pixels to learn from.
    """

    def __init__(
        self,
        num_classes: int = NUM_CLASSES,
        ignore_index: int = IGNORE_INDEX,
        noise_threshold: float = 0.5,
        confidence_threshold: float = 0.968,
        n_bins: int = 1024,
        error_reference: str = "raw",
    ):
        if error_reference not in ("raw", "refined"):
            raise ValueError(f"error_reference must be 'raw' or 'refined', got {error_reference!r}")
        self.ignore_index = ignore_index
        self.error_reference = error_reference
        self.raw = ConfusionMatrix(num_classes, ignore_index)
        self.refined = ConfusionMatrix(num_classes, ignore_index)
        self.kept = ConfusionMatrix(num_classes, ignore_index)
        self.prn_argmax = ConfusionMatrix(num_classes, ignore_index)
        self.noise_detector = BinaryDetectionStats(noise_threshold, n_bins)
        self.confidence_baseline = BinaryDetectionStats(1.0 - confidence_threshold, n_bins)

    def update(self, raw_label, refined_label, gt, noise_prob=None, confidence=None,
               prn_label=None) -> "PseudoLabelQuality":
        raw = to_numpy(raw_label)
        refined = to_numpy(refined_label)
        gt = to_numpy(gt)
        self.raw.update(raw, gt)
        self.refined.update(refined, gt)
        if prn_label is not None:
            self.prn_argmax.update(to_numpy(prn_label), gt)
        valid = gt != self.ignore_index
        wrong = (raw if self.error_reference == "raw" else refined) != gt
        if noise_prob is not None:
            self.noise_detector.update(noise_prob, wrong, valid)
            self.kept.update(refined, np.where(self.noise_detector.flags(noise_prob), self.ignore_index, gt))
        if confidence is not None:
            self.confidence_baseline.update(1.0 - to_numpy(confidence).astype(np.float64), wrong, valid)
        return self

    def merge(self, other: "PseudoLabelQuality") -> "PseudoLabelQuality":
        self.raw.merge(other.raw)
        self.refined.merge(other.refined)
        self.kept.merge(other.kept)
        self.prn_argmax.merge(other.prn_argmax)
        self.noise_detector.merge(other.noise_detector)
        self.confidence_baseline.merge(other.confidence_baseline)
        return self

    def summary(self, classes: str | Sequence[int] | None = None) -> dict:
        raw_miou = self.raw.miou(classes)
        refined_miou = self.refined.miou(classes)
        labelled = self.refined.counts.sum()
        kept = {**self.kept.to_dict(classes),
                "coverage": nan_to_none(self.kept.counts.sum() / labelled if labelled else float("nan"))}
        out = {
            "raw": self.raw.to_dict(classes),
            "refined": self.refined.to_dict(classes),
            "miou_gain": nan_to_none(refined_miou - raw_miou),
            "kept": kept,
            "error_reference": self.error_reference,
            "noise_detector": self.noise_detector.to_dict(),
            "confidence_baseline": self.confidence_baseline.to_dict(),
        }
        if self.prn_argmax.counts.sum():
            out["prn_argmax"] = self.prn_argmax.to_dict(classes)
        return out
