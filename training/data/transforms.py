"""DAFormer/mmseg-style data transforms on numpy arrays.

A sample is a dict with ``img`` (RGB, H x W x 3, uint8 until :class:`Normalize` makes it
float32) and ``gt`` (trainIds, H x W uint8, or ``None`` when labels are not loaded, as for
UDA target images). Every transform is ``t(sample, rng) -> sample`` with an explicit
``numpy.random.Generator``: the same seed gives the same augmentation in any process or
DataLoader worker, which is what makes a resumed training run exact. Transforms never modify
their input arrays, so a pipeline can be re-run on the same raw sample (Rare Class Sampling
retries crops that way). This module is torch-free; datasets convert to tensors.
"""

from __future__ import annotations

from typing import Callable, Iterable, Sequence

import cv2
import numpy as np

from prnseg.labels import IGNORE_INDEX

IMG_MEAN = (123.675, 116.28, 103.53)
IMG_STD = (58.395, 57.12, 57.375)

Sample = dict
Transform = Callable[[Sample, np.random.Generator], Sample]


def _pair(value: int | Sequence[int], what: str) -> tuple[int, int]:
    if isinstance(value, (int, np.integer)):
        return int(value), int(value)
    if len(value) != 2:
        raise ValueError(f"{what} must be an int or a pair, got {value!r}")
    a, b = (int(v) for v in value)
    if a <= 0 or b <= 0:
        raise ValueError(f"{what} must be positive, got {value!r}")
    return a, b


def rescale_size(w: int, h: int, scale: tuple[int, int]) -> tuple[int, int]:
    """mmcv ``rescale_size``: the largest (w, h) with the same aspect ratio whose long edge is
    <= max(scale) and short edge <= min(scale) (it upsamples too)."""
    factor = min(max(scale) / max(h, w), min(scale) / min(h, w))
    return int(w * factor + 0.5), int(h * factor + 0.5)


class Resize:
    """Resize image (bilinear) and label (nearest) like mmseg's ``Resize(img_scale=scale)``.

    ``scale`` is (W, H). With ``keep_ratio`` the image is rescaled to fit (see
    :func:`rescale_size`); otherwise it is resized to exactly (W, H).
    """

    def __init__(self, scale: Sequence[int], keep_ratio: bool = True):
        self.scale = _pair(scale, "Resize scale")
        self.keep_ratio = keep_ratio

    def target_size(self, w: int, h: int) -> tuple[int, int]:
        return rescale_size(w, h, self.scale) if self.keep_ratio else self.scale

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        img = sample["img"]
        h, w = img.shape[:2]
        nw, nh = self.target_size(w, h)
        out = dict(sample)
        if (nw, nh) != (w, h):
            out["img"] = cv2.resize(img, (nw, nh), interpolation=cv2.INTER_LINEAR)
            if sample.get("gt") is not None:
                out["gt"] = cv2.resize(sample["gt"], (nw, nh), interpolation=cv2.INTER_NEAREST)
        return out

    def __repr__(self) -> str:
        return f"Resize(scale={self.scale}, keep_ratio={self.keep_ratio})"


class RandomCrop:
    """mmseg ``RandomCrop``: a random (h, w) window; with a label and ``cat_max_ratio < 1`` the
    window is redrawn up to 10 times until it holds more than one class and no class covers
    ``cat_max_ratio`` or more of its valid pixels (the last draw is kept otherwise). Without a
    label (UDA target images) a single window is drawn: target labels are never read."""

    def __init__(self, size: int | Sequence[int], cat_max_ratio: float = 0.75,
                 ignore_index: int = IGNORE_INDEX, max_tries: int = 10):
        self.size = _pair(size, "RandomCrop size")
        self.cat_max_ratio = float(cat_max_ratio)
        self.ignore_index = ignore_index
        self.max_tries = max_tries

    def _bbox(self, h: int, w: int, rng: np.random.Generator) -> tuple[int, int, int, int]:
        ch, cw = self.size
        oy = int(rng.integers(0, max(h - ch, 0) + 1))
        ox = int(rng.integers(0, max(w - cw, 0) + 1))
        return oy, min(oy + ch, h), ox, min(ox + cw, w)

    def _balanced(self, crop: np.ndarray) -> bool:
        labels, counts = np.unique(crop, return_counts=True)
        counts = counts[labels != self.ignore_index]
        return len(counts) > 1 and counts.max() / counts.sum() < self.cat_max_ratio

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        img, gt = sample["img"], sample.get("gt")
        h, w = img.shape[:2]
        y0, y1, x0, x1 = self._bbox(h, w, rng)
        if gt is not None and self.cat_max_ratio < 1.0:
            for _ in range(self.max_tries):
                if self._balanced(gt[y0:y1, x0:x1]):
                    break
                y0, y1, x0, x1 = self._bbox(h, w, rng)
        out = dict(sample)
        out["img"] = img[y0:y1, x0:x1]
        if gt is not None:
            out["gt"] = gt[y0:y1, x0:x1]
        return out

    def __repr__(self) -> str:
        return f"RandomCrop(size={self.size}, cat_max_ratio={self.cat_max_ratio})"


class RandomFlip:
    """Horizontal flip of image and label together with probability ``prob`` (contiguous
    copies: OpenCV rejects the negative strides of a flipped view)."""

    def __init__(self, prob: float = 0.5):
        if not 0.0 <= prob <= 1.0:
            raise ValueError(f"RandomFlip prob must be in [0, 1], got {prob}")
        self.prob = float(prob)

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        if rng.random() >= self.prob:
            return sample
        out = dict(sample)
        out["img"] = np.ascontiguousarray(sample["img"][:, ::-1])
        if sample.get("gt") is not None:
            out["gt"] = np.ascontiguousarray(sample["gt"][:, ::-1])
        return out

    def __repr__(self) -> str:
        return f"RandomFlip(prob={self.prob})"


class Pad:
    """Pad bottom/right to at least ``size`` = (h, w), as mmseg does after a crop smaller images
    could not fill; label padding is the ignore index so it adds no loss."""

    def __init__(self, size: int | Sequence[int], pad_val: float = 0,
                 label_pad_val: int = IGNORE_INDEX):
        self.size = _pair(size, "Pad size")
        self.pad_val = pad_val
        self.label_pad_val = label_pad_val

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        img = sample["img"]
        h, w = img.shape[:2]
        ph, pw = max(self.size[0] - h, 0), max(self.size[1] - w, 0)
        if ph == 0 and pw == 0:
            return sample
        out = dict(sample)
        out["img"] = np.pad(img, ((0, ph), (0, pw)) + ((0, 0),) * (img.ndim - 2),
                            constant_values=self.pad_val)
        if sample.get("gt") is not None:
            out["gt"] = np.pad(sample["gt"], ((0, ph), (0, pw)),
                               constant_values=self.label_pad_val)
        return out

    def __repr__(self) -> str:
        return f"Pad(size={self.size}, pad_val={self.pad_val}, label_pad_val={self.label_pad_val})"


class Normalize:
    """uint8 RGB -> float32 ``(img - mean) / std`` (H x W x 3); ImageNet statistics in RGB
    order by default, as the reference configs (``to_rgb=True``) use."""

    def __init__(self, mean: Sequence[float] = IMG_MEAN, std: Sequence[float] = IMG_STD):
        self.mean = np.asarray(mean, dtype=np.float32)
        self.std = np.asarray(std, dtype=np.float32)

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        out = dict(sample)
        out["img"] = (sample["img"].astype(np.float32) - self.mean) / self.std
        return out

    def __repr__(self) -> str:
        return f"Normalize(mean={self.mean.tolist()}, std={self.std.tolist()})"


class Compose:
    """Apply transforms in order, threading one generator through them."""

    def __init__(self, transforms: Iterable[Transform]):
        self.transforms = list(transforms)

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        for t in self.transforms:
            sample = t(sample, rng)
        return sample

    def __repr__(self) -> str:
        return "Compose([" + ", ".join(repr(t) for t in self.transforms) + "])"


def build_train_pipeline(size: Sequence[int] | None = (512, 1024),
                         crop: int | Sequence[int] | None = (512, 512),
                         cat_max_ratio: float = 0.75, flip_prob: float = 0.5,
                         mean: Sequence[float] = IMG_MEAN,
                         std: Sequence[float] = IMG_STD) -> Compose:
    """DAFormer's training pipeline: Resize(keep ratio) -> RandomCrop -> RandomFlip ->
    Normalize -> Pad(crop, label 255). ``size`` (the keep-ratio resize bound) and ``crop`` are
    (H, W)."""
    ts: list[Transform] = []
    if size is not None:
        ts.append(Resize(_pair(size, "size")[::-1], keep_ratio=True))
    if crop is not None:
        ts.append(RandomCrop(crop, cat_max_ratio=cat_max_ratio))
    if flip_prob > 0:
        ts.append(RandomFlip(flip_prob))
    ts.append(Normalize(mean, std))
    if crop is not None:
        ts.append(Pad(crop, pad_val=0, label_pad_val=IGNORE_INDEX))
    return Compose(ts)


def build_test_pipeline(size: Sequence[int] | None = (512, 1024),
                        mean: Sequence[float] = IMG_MEAN,
                        std: Sequence[float] = IMG_STD) -> Compose:
    """Single-scale test pipeline: Resize(keep ratio, bound ``size`` = (H, W)) -> Normalize (no
    flip, no crop)."""
    ts: list[Transform] = [Resize(_pair(size, "size")[::-1], keep_ratio=True)] if size is not None else []
    ts.append(Normalize(mean, std))
    return Compose(ts)
