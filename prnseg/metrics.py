"""Evaluation metrics in numpy, streaming over a dataset and mergeable across shards.

The one implementation ``prnseg eval`` (training), the export parity gate and ``prnseg label
--gt`` (serve) all score with; torch-free.

* :class:`ConfusionMatrix` -- mIoU as mmseg's ``mean_iou`` and the Cityscapes scripts compute
  it: intersections and unions summed over the dataset, ``nanmean`` over the classes (a class
  absent from both prediction and ground truth is NaN and left out); a prediction outside
  ``[0, num_classes)`` on a labelled pixel counts as a miss.
* :class:`BinaryDetectionStats` -- scores a per-pixel noise detector against the true
  pseudo-label errors: precision/recall/F1 at a threshold and AUROC from score histograms.

Both also take counts made elsewhere (``add_counts``), e.g. the per-image statistics a
``prnseg label`` manifest stores. Torch tensors are accepted anywhere an array is (converted on
the CPU, without importing torch here).
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from prnseg.labels import CITYSCAPES_CLASSES, CLASS_SUBSETS, IGNORE_INDEX, NUM_CLASSES


def to_numpy(x) -> np.ndarray:
    """numpy view of an array-like or a (possibly CUDA, possibly grad-tracking) torch tensor."""
    if hasattr(x, "detach") and hasattr(x, "cpu"):
        x = x.detach().cpu()
        if str(x.dtype) in ("torch.bfloat16", "torch.float16"):
            x = x.float()
        return x.numpy()
    return np.asarray(x)


def nan_to_none(v: float) -> float | None:
    """A JSON-ready number: NaN (and None) -> None."""
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

    def add_counts(self, counts) -> "ConfusionMatrix":
        """Add counts made elsewhere: a num_classes x (num_classes + 1) array laid out as
        :attr:`counts` (or anything that reshapes to it, e.g. the flat counts)."""
        counts = np.asarray(counts, dtype=np.int64)
        if counts.size != self._counts.size:
            raise ValueError(f"{counts.size} counts for a {self.num_classes}-class confusion matrix "
                             f"({self._counts.size} expected)")
        self._counts += counts.reshape(self._counts.shape)
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
            "miou": nan_to_none(self.miou(ids)),
            "per_class_iou": {self.class_names[i]: nan_to_none(float(iou[i])) for i in ids},
            "pixel_accuracy": nan_to_none(self.pixel_accuracy()),
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

    def add_counts(self, tp: int = 0, fp: int = 0, fn: int = 0, tn: int = 0, pos_hist=None,
                   neg_hist=None) -> "BinaryDetectionStats":
        """Add counts made elsewhere: the four cells at this threshold and/or score histograms of
        ``n_bins`` bins each (positives, negatives)."""
        for name, hist in (("pos_hist", pos_hist), ("neg_hist", neg_hist)):
            if hist is not None and np.size(hist) != self.n_bins:
                raise ValueError(f"{name} has {np.size(hist)} bins, expected {self.n_bins}")
        self.tp += int(tp)
        self.fp += int(fp)
        self.fn += int(fn)
        self.tn += int(tn)
        if pos_hist is not None:
            self.pos_hist += np.asarray(pos_hist, dtype=np.int64).ravel()
        if neg_hist is not None:
            self.neg_hist += np.asarray(neg_hist, dtype=np.int64).ravel()
        return self

    def merge(self, other: "BinaryDetectionStats") -> "BinaryDetectionStats":
        if other.n_bins != self.n_bins or other.threshold != self.threshold:
            raise ValueError("cannot merge detection stats with different bins or thresholds")
        return self.add_counts(other.tp, other.fp, other.fn, other.tn, other.pos_hist, other.neg_hist)

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
            "precision": nan_to_none(self.precision()),
            "recall": nan_to_none(self.recall()),
            "f1": nan_to_none(self.f1()),
            "auroc": nan_to_none(self.auroc()),
            "flagged_rate": nan_to_none(self.flagged_rate()),
            "positive_rate": nan_to_none(self.positive_rate()),
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
