"""The exported-model contract: ``model.json`` and the geometry every runtime applies around it.

``prnseg export`` writes a model directory; everything that runs it (``Predictor``, ``prnseg
label``, the demo, a C++/ROS node) reads only ``model.json`` and the ONNX/plan files it names.
This module is that reader, torch-free, plus the one place that decides how an image of any
size is fitted into one of the exported size buckets and mapped back, so that every consumer
does it the same way.

Geometry: an image of h x w goes to the bucket whose aspect ratio is closest to its own; it is
resized keeping its aspect ratio to fit inside the bucket (bilinear), padded bottom/right with
the mean colour (zero after normalisation, as in training), run, and the outputs are cropped to
the resized region and resized back to h x w with nearest neighbour.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from prnseg.errors import PrnsegError

FORMAT = "prnseg-model"
FORMAT_VERSION = 1
MODEL_JSON = "model.json"

#: Outputs of ``pseudolabeler.onnx`` (all uint8, N x H x W at the input bucket size).
PSEUDOLABELER_OUTPUTS = {
    "label": "refined trainId per pixel (argmax of the PRN's refined logits)",
    "raw_label": "the segmenter's own trainId per pixel, before refinement",
    "noise": "1 where the pixel's pseudo-label is predicted wrong (noise_prob >= noise_threshold), else 0",
    "noise_prob": "predicted probability that the pseudo-label is wrong, scaled to 0..255",
    "confidence": "max softmax probability of the refined logits, scaled to 0..255",
}


class ModelSpecError(PrnsegError):
    """A model directory or its model.json is missing, unreadable, incomplete or not ready."""


@dataclass(frozen=True)
class Bucket:
    """One input size (multiples of the output stride) the exported graphs are built for."""

    height: int
    width: int

    @property
    def aspect(self) -> float:
        return self.width / self.height


@dataclass(frozen=True)
class Placement:
    """Where an image of ``src_hw`` sits inside ``bucket``: resized to ``resized_hw`` at the top left."""

    bucket: Bucket
    src_hw: tuple[int, int]
    resized_hw: tuple[int, int]


@dataclass
class ModelSpec:
    """Parsed ``model.json``. ``raw`` keeps the whole document for fields not modelled here."""

    root: Path
    name: str
    classes: list[str]
    palette: list[list[int]]
    ignore_index: int
    mean: list[float]
    std: list[float]
    buckets: list[Bucket]
    max_batch: int
    noise_threshold: float
    noise_source: str
    artefacts: dict[str, dict[str, Any]]
    ready: bool
    raw: dict[str, Any] = field(repr=False, default_factory=dict)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def pad_value(self) -> np.ndarray:
        """uint8 RGB of the mean colour: padding that normalises to (almost exactly) zero."""
        return np.clip(np.round(np.asarray(self.mean)), 0, 255).astype(np.uint8)

    def artefact_path(self, key: str) -> Path:
        """Absolute path of artefact ``key`` (e.g. ``pseudolabeler``, ``pseudolabeler_fp16``)."""
        if key not in self.artefacts:
            have = ", ".join(sorted(self.artefacts)) or "none"
            raise ModelSpecError(f"{self.root / MODEL_JSON}: no artefact '{key}' (this export has: {have})")
        path = self.root / self.artefacts[key]["file"]
        if not path.is_file():
            raise ModelSpecError(f"{path}: listed in model.json but missing; re-run prnseg export")
        return path

    def choose_bucket(self, height: int, width: int) -> Bucket:
        """The bucket whose aspect ratio is closest to the image's (log scale); ties go to the larger."""
        aspect = math.log(width / height)
        return min(self.buckets, key=lambda b: (abs(math.log(b.aspect) - aspect), -b.height * b.width))

    def place(self, height: int, width: int) -> Placement:
        return self.place_in(height, width, self.choose_bucket(height, width))

    @staticmethod
    def place_in(height: int, width: int, bucket: Bucket) -> Placement:
        """Placement in a given bucket (the export's parity gate checks every bucket)."""
        scale = min(bucket.height / height, bucket.width / width)
        rh = min(bucket.height, max(1, int(round(height * scale))))
        rw = min(bucket.width, max(1, int(round(width * scale))))
        return Placement(bucket, (height, width), (rh, rw))

    def fit(self, rgb: np.ndarray, placement: Placement | None = None) -> tuple[np.ndarray, Placement]:
        """H x W x 3 uint8 -> bucket-sized uint8 image (resized keeping aspect, mean-padded)."""
        if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
            raise ValueError(f"expected an H x W x 3 uint8 RGB image, got {rgb.dtype} array of shape {rgb.shape}")
        placement = placement or self.place(*rgb.shape[:2])
        b, (rh, rw) = placement.bucket, placement.resized_hw
        img = rgb if (rh, rw) == rgb.shape[:2] else cv2.resize(rgb, (rw, rh), interpolation=cv2.INTER_LINEAR)
        if (rh, rw) == (b.height, b.width):
            return np.ascontiguousarray(img), placement
        out = np.empty((b.height, b.width, 3), dtype=np.uint8)
        out[...] = self.pad_value
        out[:rh, :rw] = img
        return out, placement

    @staticmethod
    def unfit(plane: np.ndarray, placement: Placement) -> np.ndarray:
        """A bucket-sized H x W output plane -> the source image's size (crop, nearest resize)."""
        rh, rw = placement.resized_hw
        crop = plane[:rh, :rw]
        sh, sw = placement.src_hw
        if (rh, rw) == (sh, sw):
            return np.ascontiguousarray(crop)
        return cv2.resize(crop, (sw, sh), interpolation=cv2.INTER_NEAREST)


def _require(doc: dict, key: str, path: Path):
    if key not in doc:
        raise ModelSpecError(f"{path}: missing field '{key}'; it was not written by prnseg export, or by an "
                             "incompatible version (re-export the checkpoint)")
    return doc[key]


def load_model_spec(model_dir: str | os.PathLike, require_ready: bool = True) -> ModelSpec:
    """Read and validate ``MODEL_DIR/model.json``; errors name the file and the fix."""
    root = Path(model_dir)
    path = root / MODEL_JSON
    if not root.is_dir():
        raise ModelSpecError(f"{root}: model directory not found; make one with "
                             f"prnseg export CHECKPOINT --out {root}")
    if not path.is_file():
        raise ModelSpecError(f"{path}: not found; {root} is not an exported model "
                             f"(make one with prnseg export CHECKPOINT --out {root})")
    try:
        doc = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelSpecError(f"{path}: unreadable ({exc}); re-run prnseg export") from None
    found = doc.get("format") if isinstance(doc, dict) else type(doc).__name__
    if found != FORMAT:
        raise ModelSpecError(f"{path}: not a prnseg model description (format {found!r}, expected {FORMAT!r})")
    version = _require(doc, "format_version", path)
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise ModelSpecError(f"{path}: format_version {version} is newer than this prnseg understands "
                             f"({FORMAT_VERSION}); upgrade prnseg")
    ready = bool(doc.get("ready", False))
    if require_ready and not ready:
        reason = doc.get("not_ready_reason") or "its export did not finish or failed the parity gate"
        raise ModelSpecError(f"{path}: model is not ready: {reason} (see parity.json; re-export)")
    classes = list(_require(doc, "classes", path))
    palette = [list(map(int, c)) for c in _require(doc, "palette", path)]
    inp = _require(doc, "input", path)
    buckets = [Bucket(int(b["height"]), int(b["width"])) for b in _require(inp, "buckets", path)]
    if not buckets:
        raise ModelSpecError(f"{path}: input.buckets is empty; re-export with --size HxW")
    noise = doc.get("noise", {})
    return ModelSpec(
        root=root,
        name=str(doc.get("name", root.name)),
        classes=classes,
        palette=palette,
        ignore_index=int(doc.get("ignore_index", 255)),
        mean=[float(v) for v in _require(inp, "mean", path)],
        std=[float(v) for v in _require(inp, "std", path)],
        buckets=buckets,
        max_batch=int(inp.get("max_batch", 1)),
        noise_threshold=float(noise.get("threshold", 0.5)),
        noise_source=str(noise.get("source", "prn")),
        artefacts=dict(_require(doc, "artefacts", path)),
        ready=ready,
        raw=doc,
    )
