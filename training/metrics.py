"""Evaluation metrics in numpy, streaming over a dataset and mergeable across shards.

* :class:`ConfusionMatrix` -- mIoU as mmseg's ``mean_iou`` and the Cityscapes scripts compute
  it: intersections and unions summed over the dataset, ``nanmean`` over the classes (a class
  absent from both prediction and ground truth is NaN and left out); a prediction outside
  ``[0, num_classes)`` on a labelled pixel counts as a miss.
* :class:`BinaryDetectionStats` -- scores a per-pixel noise detector against the true
  pseudo-label errors: precision/recall/F1 at a threshold and AUROC from score histograms.
* :class:`PseudoLabelQuality` -- raw vs refined pseudo-labels and two noise detectors (the
  PRN's noise probability, and the ``1 - max softmax`` confidence baseline) side by side.

Torch tensors are accepted anywhere an array is (converted on the CPU).
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from prnseg.serve.labels import CITYSCAPES_CLASSES, CLASS_SUBSETS, IGNORE_INDEX, NUM_CLASSES


def to_numpy(x) -> np.ndarray:
    """numpy view of an array-like or a (possibly CUDA, possibly grad-tracking) torch tensor."""
    if hasattr(x, "detach") and hasattr(x, "cpu"):
        x = x.detach().cpu()
        if str(x.dtype) in ("torch.bfloat16", "torch.float16"):
            x = x.float()
        return x.numpy()
    return np.asarray(x)


def _nan_to_none(v: float) -> float | None:
    return None if v is None or (isinstance(v, float) and math.isnan(v)) else float(v)


def _safe_div(num: float, den: float) -> float:
    return float(num) / float(den) if den else float("nan")


def resolve_classes(classes: str | Sequence[int] | None, num_classes: int) -> np.ndarray:
    """A class subset given as trainIds or as a name in ``CLASS_SUBSETS`` ("synthia16", ...)."""
    if classes is None:
        return np.arange(num_classes)
    if isinstance(classes, str):
        if classes not in CLASS_SUBSETS:
            raise ValueError(f"unknown class subset {classes!r}; known: {sorted(CLASS_SUBSETS)}")
        classes = CLASS_SUBSETS[classes]
    ids = np.asarray(list(classes), dtype=np.int64)
    if ids.size == 0 or ids.min() < 0 or ids.max() >= num_classes:
        raise ValueError(f"class subset must be non-empty trainIds in [0, {num_classes})")
    return ids


class ConfusionMatrix:
    """Streaming confusion matrix of trainId predictions vs ground truth.

    Rows are ground-truth classes, columns predictions; an extra last column collects
    predictions outside ``[0, num_classes)`` (e.g. 255) on labelled pixels: they lower that
    class's IoU and the accuracy exactly as a wrong class would, and add to no class's
    false positives. Ground-truth ``ignore_index`` pixels are skipped.
    """

    def __init__(
        self,
        num_classes: int = NUM_CLASSES,
        ignore_index: int = IGNORE_INDEX,
        class_names: Sequence[str] | None = None,
    ):
        self.num_classes = int(num_classes)
        self.ignore_index = int(ignore_index)
        if class_names is None:
            class_names = (
                CITYSCAPES_CLASSES if num_classes == len(CITYSCAPES_CLASSES)
                else [str(i) for i in range(num_classes)]
            )
        if len(class_names) != num_classes:
            raise ValueError(f"{len(class_names)} class names for {num_classes} classes")
        self.class_names = tuple(class_names)
        self._counts = np.zeros((self.num_classes, self.num_classes + 1), dtype=np.int64)

    @property
    def matrix(self) -> np.ndarray:
        """num_classes x num_classes counts (gt row, prediction column)."""
        return self._counts[:, : self.num_classes].copy()

    @property
    def counts(self) -> np.ndarray:
        """The full num_classes x (num_classes + 1) counts, last column = invalid predictions."""
        return self._counts.copy()

    def reset(self) -> None:
        self._counts[:] = 0

    def update(self, pred, gt) -> "ConfusionMatrix":
        pred = to_numpy(pred).astype(np.int64, copy=False).ravel()
        gt = to_numpy(gt).astype(np.int64, copy=False).ravel()
        if pred.shape != gt.shape:
            raise ValueError(f"prediction has {pred.size} pixels, ground truth {gt.size}")
        labelled = gt != self.ignore_index
        gt = gt[labelled]
        pred = pred[labelled]
        if gt.size and (gt.min() < 0 or gt.max() >= self.num_classes):
            bad = gt[(gt < 0) | (gt >= self.num_classes)][0]
            raise ValueError(
                f"ground truth contains label {bad}, outside [0, {self.num_classes}) and not "
                f"the ignore label {self.ignore_index}"
            )
        c = self.num_classes
        pred = np.where((pred < 0) | (pred >= c), c, pred)
        self._counts += np.bincount(gt * (c + 1) + pred, minlength=c * (c + 1)).reshape(c, c + 1)
        return self

    def merge(self, other: "ConfusionMatrix") -> "ConfusionMatrix":
        if other.num_classes != self.num_classes:
            raise ValueError("cannot merge confusion matrices of different class counts")
        self._counts += other._counts
        return self

    def iou(self) -> np.ndarray:
        """Per-class IoU; NaN where the class is in neither prediction nor ground truth."""
        tp = np.diag(self._counts).astype(np.float64)
        gt_total = self._counts.sum(axis=1)
        pred_total = self._counts[:, : self.num_classes].sum(axis=0)
        union = (gt_total + pred_total - tp).astype(np.float64)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(union > 0, tp / np.maximum(union, 1), np.nan)

    def miou(self, classes: str | Sequence[int] | None = None) -> float:
        """``nanmean`` of the IoU over ``classes`` (all, trainIds or a ``CLASS_SUBSETS`` name);
        NaN when no class in the subset has any pixel."""
        values = self.iou()[resolve_classes(classes, self.num_classes)]
        if np.all(np.isnan(values)):
            return float("nan")
        return float(np.nanmean(values))

    def pixel_accuracy(self) -> float:
        return _safe_div(np.trace(self._counts), self._counts.sum())

    def class_accuracy(self) -> np.ndarray:
        """Per-class recall; NaN for classes absent from the ground truth."""
        gt_total = self._counts.sum(axis=1).astype(np.float64)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(gt_total > 0, np.diag(self._counts) / np.maximum(gt_total, 1), np.nan)

    def to_dict(self, classes: str | Sequence[int] | None = None) -> dict:
        """JSON-ready summary (NaN -> None); ``per_class_iou`` lists the classes of the subset."""
        ids = resolve_classes(classes, self.num_classes)
        iou = self.iou()
        return {
            "miou": _nan_to_none(self.miou(ids)),
            "per_class_iou": {self.class_names[i]: _nan_to_none(float(iou[i])) for i in ids},
            "pixel_accuracy": _nan_to_none(self.pixel_accuracy()),
            "n_pixels": int(self._counts.sum()),
        }


class BinaryDetectionStats:
    """Streaming scores of a per-pixel detector (score in [0, 1]) against binary targets.

    Precision, recall and F1 use exact counts at ``threshold`` (a pixel is flagged when
    ``score >= threshold``, the rule of the trainer and the exported graph). AUROC uses ``n_bins``
    equal-width histograms of the positive and negative scores, so it streams over a dataset in
    constant memory: it is the Mann-Whitney statistic with scores quantised to their bin (pairs
    in the same bin count as ties, 1/2). The result is exact when no positive and negative share
    a bin and otherwise off by at most half the fraction of positive/negative pairs that share
    one (about 1/n_bins for smooth score distributions). Scores outside [0, 1] are clipped into
    the end bins.
    """

    def __init__(self, threshold: float = 0.5, n_bins: int = 1024):
        if n_bins < 2:
            raise ValueError("n_bins must be >= 2")
        self.threshold = float(threshold)
        self.n_bins = int(n_bins)
        self.pos_hist = np.zeros(self.n_bins, dtype=np.int64)
        self.neg_hist = np.zeros(self.n_bins, dtype=np.int64)
        self.tp = self.fp = self.fn = self.tn = 0

    def flags(self, scores) -> np.ndarray:
        """The pixels this detector flags: ``score >= threshold``."""
        return to_numpy(scores) >= self.threshold

    def update(self, scores, targets, valid=None) -> "BinaryDetectionStats":
        s = to_numpy(scores).astype(np.float64, copy=False).ravel()
        t = to_numpy(targets).astype(bool, copy=False).ravel()
        if s.shape != t.shape:
            raise ValueError(f"{s.size} scores for {t.size} targets")
        if valid is not None:
            v = to_numpy(valid).astype(bool, copy=False).ravel()
            s, t = s[v], t[v]
        flagged = self.flags(s)
        self.tp += int(np.count_nonzero(flagged & t))
        self.fp += int(np.count_nonzero(flagged & ~t))
        self.fn += int(np.count_nonzero(~flagged & t))
        self.tn += int(np.count_nonzero(~flagged & ~t))
        bins = np.clip((s * self.n_bins).astype(np.int64), 0, self.n_bins - 1)
        self.pos_hist += np.bincount(bins[t], minlength=self.n_bins)
        self.neg_hist += np.bincount(bins[~t], minlength=self.n_bins)
        return self

    def merge(self, other: "BinaryDetectionStats") -> "BinaryDetectionStats":
        if other.n_bins != self.n_bins or other.threshold != self.threshold:
            raise ValueError("cannot merge detection stats with different bins or thresholds")
        self.pos_hist += other.pos_hist
        self.neg_hist += other.neg_hist
        self.tp += other.tp
        self.fp += other.fp
        self.fn += other.fn
        self.tn += other.tn
        return self

    def precision(self) -> float:
        return _safe_div(self.tp, self.tp + self.fp)

    def recall(self) -> float:
        return _safe_div(self.tp, self.tp + self.fn)

    def f1(self) -> float:
        return _safe_div(2 * self.tp, 2 * self.tp + self.fp + self.fn)

    def flagged_rate(self) -> float:
        return _safe_div(self.tp + self.fp, self.tp + self.fp + self.fn + self.tn)

    def positive_rate(self) -> float:
        return _safe_div(self.tp + self.fn, self.tp + self.fp + self.fn + self.tn)

    def auroc(self) -> float:
        """P(score of a positive > score of a negative) + 1/2 P(same bin); NaN if either class
        is empty."""
        return auroc_from_histograms(self.pos_hist, self.neg_hist)

    def to_dict(self) -> dict:
        return {
            "threshold": self.threshold,
            "precision": _nan_to_none(self.precision()),
            "recall": _nan_to_none(self.recall()),
            "f1": _nan_to_none(self.f1()),
            "auroc": _nan_to_none(self.auroc()),
            "flagged_rate": _nan_to_none(self.flagged_rate()),
            "positive_rate": _nan_to_none(self.positive_rate()),
            "n_pixels": int(self.tp + self.fp + self.fn + self.tn),
        }


def auroc_from_histograms(pos_hist: np.ndarray, neg_hist: np.ndarray) -> float:
    """Mann-Whitney AUROC of binned scores (bins ordered by increasing score)."""
    pos = np.asarray(pos_hist, dtype=np.float64)
    neg = np.asarray(neg_hist, dtype=np.float64)
    n_pos, n_neg = pos.sum(), neg.sum()
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    neg_below = np.cumsum(neg) - neg
    return float((pos * (neg_below + 0.5 * neg)).sum() / (n_pos * n_neg))


def auroc_exact(scores, targets) -> float:
    """Exact AUROC by ranking (midranks for ties), for data small enough to hold and sort."""
    s = to_numpy(scores).astype(np.float64).ravel()
    t = to_numpy(targets).astype(bool).ravel()
    n_pos = int(t.sum())
    n_neg = t.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(s, kind="mergesort")
    sorted_s = s[order]
    ranks = np.empty(s.size, dtype=np.float64)
    _, first, counts = np.unique(sorted_s, return_index=True, return_counts=True)
    midranks = first + (counts + 1) / 2.0
    ranks[order] = np.repeat(midranks, counts)
    return float((ranks[t].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


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
                "coverage": _nan_to_none(self.kept.counts.sum() / labelled if labelled else float("nan"))}
        out = {
            "raw": self.raw.to_dict(classes),
            "refined": self.refined.to_dict(classes),
            "miou_gain": _nan_to_none(refined_miou - raw_miou),
            "kept": kept,
            "error_reference": self.error_reference,
            "noise_detector": self.noise_detector.to_dict(),
            "confidence_baseline": self.confidence_baseline.to_dict(),
        }
        if self.prn_argmax.counts.sum():
            out["prn_argmax"] = self.prn_argmax.to_dict(classes)
        return out
