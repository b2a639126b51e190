"""Ground truth for ``prnseg label --gt``: which label belongs to an image, and pseudo-label quality.

Matching rule (first existing file wins), for an image at ``REL/NAME.ext`` under INPUT_DIR, with
GT_DIR searched at ``REL`` and, when REL starts with ``leftImg8bit/`` or ``rgb_anon/``, also at
REL with that first folder replaced by ``gtFine/`` or ``gt/`` (so INPUT_DIR and GT_DIR may both
be a dataset root):

* Cityscapes: ``X_leftImg8bit`` -> ``X_gtFine_labelTrainIds.png``, then ``X_gtFine_labelIds.png``;
* Dark Zurich / ACDC: ``X_rgb_anon`` -> ``X_gt_labelTrainIds.png``, then ``X_gt_labelIds.png``;
* any image: ``NAME.png`` holding trainIds (a plain folder of labels at the same relative path).

trainIds outside 0..18 count as ignore (255), as the training datasets read them. Per-image
statistics are stored sparsely in each manifest line, so a report merges them across resumed
runs and shards; the formulas are those of ``prnseg eval`` (``prnseg/metrics.py``, numpy only):
confusion-matrix mIoU for raw and refined labels, ``kept`` (the refined label on the pixels the
written noise mask keeps, and their share), and the noise mask scored against the raw label's
errors on labelled pixels. The noise AUROC uses the 256 levels of the uint8
``noise_prob``; eval bins the float probability finer, so its AUROC can differ in the third digit.
"""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath

import cv2
import numpy as np

from prnseg.labels import IGNORE_INDEX
from prnseg.metrics import BinaryDetectionStats, ConfusionMatrix

GT_MATCHING = ("X_leftImg8bit.* -> X_gtFine_labelTrainIds.png | X_gtFine_labelIds.png; X_rgb_anon.* -> "
               "X_gt_labelTrainIds.png | X_gt_labelIds.png; else NAME.png (trainIds); same relative folder "
               "(leftImg8bit/ -> gtFine/, rgb_anon/ -> gt/)")

_SUFFIXES = (
    ("_leftImg8bit", (("_gtFine_labelTrainIds.png", "trainIds"), ("_gtFine_labelIds.png", "labelIds"))),
    ("_rgb_anon", (("_gt_labelTrainIds.png", "trainIds"), ("_gt_labelIds.png", "labelIds"))),
)
_ROOT_SWAP = {"leftImg8bit": "gtFine", "rgb_anon": "gt"}


def gt_candidates(rel: str) -> list[tuple[str, str]]:
    """(path relative to GT_DIR, id format) to try, in order, for an image at ``rel``."""
    p = PurePosixPath(rel)
    dirs = [p.parent]
    if len(p.parts) > 1 and p.parts[0] in _ROOT_SWAP:
        dirs.append(PurePosixPath(_ROOT_SWAP[p.parts[0]], *p.parts[1:-1]))
    names: list[tuple[str, str]] = []
    for suffix, options in _SUFFIXES:
        if p.stem.endswith(suffix):
            base = p.stem[: -len(suffix)]
            names += [(base + tail, fmt) for tail, fmt in options]
    names.append((p.stem + ".png", "trainIds"))
    return [((d / n).as_posix(), fmt) for d in dirs for n, fmt in names]


def find_gt(gt_dir: Path, rel: str) -> tuple[str, str] | None:
    for cand, fmt in gt_candidates(rel):
        if os.path.isfile(gt_dir / cand):
            return cand, fmt
    return None


def _sparse(counts: np.ndarray) -> list[list[int]]:
    flat = counts.ravel()
    nz = np.flatnonzero(flat)
    return [[int(i), int(flat[i])] for i in nz]


def _dense(pairs, size: int) -> np.ndarray:
    out = np.zeros(size, dtype=np.int64)
    for i, c in pairs:
        out[int(i)] += int(c)
    return out


def image_stats(gt: np.ndarray, raw: np.ndarray, refined: np.ndarray, noise: np.ndarray,
                noise_prob: np.ndarray, num_classes: int) -> dict:
    """Mergeable per-image statistics. Predictions are resized (nearest) to the label's size when
    they differ, as eval scores at the label's resolution."""
    if gt.shape != raw.shape:
        h, w = gt.shape
        raw, refined, noise, noise_prob = (cv2.resize(a, (w, h), interpolation=cv2.INTER_NEAREST)
                                           for a in (raw, refined, noise, noise_prob))
    raw_cm = ConfusionMatrix(num_classes, IGNORE_INDEX).update(raw, gt)
    ref_cm = ConfusionMatrix(num_classes, IGNORE_INDEX).update(refined, gt)
    valid = gt != IGNORE_INDEX
    wrong = (raw != gt) & valid
    right = valid & ~wrong
    flagged = noise.astype(bool)
    kept_cm = ConfusionMatrix(num_classes, IGNORE_INDEX).update(refined, np.where(flagged, IGNORE_INDEX, gt))
    return {
        "raw_cm": _sparse(raw_cm.counts),
        "refined_cm": _sparse(ref_cm.counts),
        "kept_cm": _sparse(kept_cm.counts),
        "tp": int(np.count_nonzero(flagged & wrong)), "fp": int(np.count_nonzero(flagged & right)),
        "fn": int(np.count_nonzero(~flagged & wrong)), "tn": int(np.count_nonzero(~flagged & right)),
        "pos_hist": _sparse(np.bincount(noise_prob[wrong], minlength=256)),
        "neg_hist": _sparse(np.bincount(noise_prob[right], minlength=256)),
    }


class GTSummary:
    """Sum of per-image statistics -> the report's pseudo-label quality section."""

    def __init__(self, num_classes: int, class_names, noise_threshold: float):
        self.num_classes = num_classes
        self.raw = ConfusionMatrix(num_classes, IGNORE_INDEX, class_names)
        self.refined = ConfusionMatrix(num_classes, IGNORE_INDEX, class_names)
        self.kept = ConfusionMatrix(num_classes, IGNORE_INDEX, class_names)
        # bins are the uint8 noise_prob values the per-image stats already counted
        self.detector = BinaryDetectionStats(noise_threshold, n_bins=256)
        self.n_images = 0

    def add(self, stats: dict) -> None:
        size = self.num_classes * (self.num_classes + 1)
        self.raw.add_counts(_dense(stats["raw_cm"], size))
        self.refined.add_counts(_dense(stats["refined_cm"], size))
        self.kept.add_counts(_dense(stats.get("kept_cm", []), size))
        self.detector.add_counts(*(int(stats[k]) for k in ("tp", "fp", "fn", "tn")),
                                 pos_hist=_dense(stats["pos_hist"], 256), neg_hist=_dense(stats["neg_hist"], 256))
        self.n_images += 1

    def to_dict(self) -> dict:
        raw, refined = self.raw.to_dict(), self.refined.to_dict()
        gain = None if raw["miou"] is None or refined["miou"] is None else refined["miou"] - raw["miou"]
        labelled = int(self.refined.counts.sum())
        kept = {**self.kept.to_dict(), "coverage": int(self.kept.counts.sum()) / labelled if labelled else None}
        return {
            "n_images": self.n_images,
            "raw": raw,
            "refined": refined,
            "miou_gain": gain,
            "kept": kept,
            "error_reference": "raw",
            "noise_detector": self.detector.to_dict(),
        }
