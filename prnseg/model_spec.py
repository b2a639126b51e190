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

import hashlib
import json
import math
import os
import re
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
    "label": "the written trainId per pixel: the PRN's refined label where its top probability reaches "
             "refine_min_confidence, else the segmenter's own",
    "raw_label": "the segmenter's own trainId per pixel, before refinement",
    "noise": "1 where the pixel's pseudo-label is predicted wrong (noise_prob >= noise_threshold), else 0",
    "noise_prob": "predicted probability that the pseudo-label is wrong, scaled to 0..255",
    "confidence": "max softmax probability of the distribution the label came from, scaled to 0..255",
}


#: Limits a model.json must keep: a bucket sizes every buffer a runtime allocates, so an absurd one
#: (100000 x 100000) is refused before anything is allocated.
MAX_MODEL_JSON_BYTES = 4 << 20
MAX_BUCKET_SIDE = 8192
MAX_BUCKET_PIXELS = 4096 * 4096
MAX_BATCH = 1024
MAX_CLASSES = 255  # labels are uint8 and 255 is ignore
_SHA256 = re.compile(r"[0-9a-f]{64}")
_UNSAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")


class ModelSpecError(PrnsegError):
    """A model directory or its model.json is missing, unreadable, incomplete or not ready."""


class ArtefactIntegrityError(ModelSpecError):
    """An artefact's bytes differ from the sha256 model.json records: the model is refused, never
    run with a fallback, since a model folder is code (ONNX graphs, native TensorRT plans)."""


def safe_name(name, fallback: str = "model") -> str:
    """``name`` as one harmless path component (cache folders, Triton model names): ASCII letters,
    digits, ``.``, ``_`` and ``-`` only, no leading dot, at most 64 characters."""
    cleaned = _UNSAFE_NAME.sub("_", str(name)).lstrip(".")[:64]
    return cleaned if cleaned.strip("_") else fallback


def verified_bytes(path: Path, sha256: str | None) -> bytes:
    """The file's bytes after checking them against ``sha256``; the caller parses these very bytes,
    so a file swapped after the check is never loaded."""
    if sha256 is None:
        raise ArtefactIntegrityError(f"{path}: model.json records no sha256 for it, so it cannot be verified; "
                                     "re-export the model")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ModelSpecError(f"{path}: cannot read it ({exc.strerror or exc}); re-export the model") from None
    got = hashlib.sha256(data).hexdigest()
    if got != sha256:
        raise ArtefactIntegrityError(f"{path}: sha256 {got[:16]}... differs from {sha256[:16]}... recorded in "
                                     "model.json (changed or damaged after export); re-export the model, and load "
                                     "only model folders you trust")
    return data


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
    # the teacher's mean class probability on its training target crops (prnseg label --tta's
    # logit adjustment); None for a model whose checkpoint recorded none
    class_prior: list[float] | None = None
    raw: dict[str, Any] = field(repr=False, default_factory=dict)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def has_prn(self) -> bool:
        """Whether the model was exported with a PRN (its ``prn`` artefact), whatever its noise source."""
        return "prn" in self.artefacts

    @property
    def pad_value(self) -> np.ndarray:
        """uint8 RGB of the mean colour: padding that normalises to (almost exactly) zero."""
        return np.clip(np.round(np.asarray(self.mean)), 0, 255).astype(np.uint8)

    def artefact_path(self, key: str) -> Path:
        """Path of artefact ``key`` (e.g. ``pseudolabeler``, ``pseudolabeler_fp16``), inside the model folder."""
        if key not in self.artefacts or key == "tensorrt":
            have = ", ".join(sorted(k for k in self.artefacts if k != "tensorrt")) or "none"
            raise ModelSpecError(f"{self.root / MODEL_JSON}: no artefact '{key}' (this export has: {have})")
        return self.entry_path(self.artefacts[key])

    def entry_path(self, entry: dict) -> Path:
        """Path of the file an artefact entry (an ONNX artefact or a TensorRT plan) names."""
        path = self.root / entry["file"]
        if not path.is_file():
            raise ModelSpecError(f"{path}: listed in model.json but missing; re-run prnseg export")
        return path

    def artefact_bytes(self, key: str) -> bytes:
        """Artefact ``key``'s bytes, verified against its recorded sha256 (load these, not the path)."""
        return verified_bytes(self.artefact_path(key), self.artefacts[key].get("sha256"))

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


class _Fields:
    """Typed reads of model.json's fields against its schema; every failure is one line naming
    the file, the field and the fix, never a traceback or an allocation sized by a bad value."""

    def __init__(self, path: Path):
        self.path = path

    def fail(self, key: str, problem: str):
        raise ModelSpecError(f"{self.path}: field '{key}' {problem}; re-export the model with prnseg export "
                             "(or correct model.json)")

    def get(self, doc: dict, key: str, where: str = "", default=..., kind=None):
        name = f"{where}.{key}" if where else key
        if key not in doc:
            if default is ...:
                self.fail(name, "is missing (not written by prnseg export, or by an incompatible version)")
            return default
        value = doc[key]
        if kind is not None and (not isinstance(value, kind) or isinstance(value, bool) and kind is not bool):
            want = {dict: "an object", list: "a list", str: "a string", bool: "true or false"}.get(kind, "a value")
            self.fail(name, f"is {_short(value)}, expected {want}")
        return value

    def integer(self, doc: dict, key: str, where: str, lo: int, hi: int, default=...) -> int:
        name = f"{where}.{key}" if where else key
        value = self.get(doc, key, where, default)
        if isinstance(value, bool) or not isinstance(value, int):
            self.fail(name, f"is {_short(value)}, expected an integer in {lo}..{hi}")
        if not lo <= value <= hi:
            self.fail(name, f"is {value}, expected an integer in {lo}..{hi}")
        return value

    def number(self, value, name: str, lo: float, hi: float) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
                or not lo <= value <= hi:
            self.fail(name, f"is {_short(value)}, expected a number in [{lo}, {hi}]")
        return float(value)

    def bucket(self, value, name: str) -> Bucket:
        if isinstance(value, list) and len(value) == 2:
            value = {"height": value[0], "width": value[1]}
        if not isinstance(value, dict):
            self.fail(name, f"is {_short(value)}, expected {{\"height\": H, \"width\": W}}")
        h = self.integer(value, "height", name, 32, MAX_BUCKET_SIDE)
        w = self.integer(value, "width", name, 32, MAX_BUCKET_SIDE)
        if h % 32 or w % 32:
            self.fail(name, f"is {h}x{w}, expected multiples of 32")
        if h * w > MAX_BUCKET_PIXELS:
            self.fail(name, f"is {h}x{w}, more than the {MAX_BUCKET_PIXELS} pixels a bucket may have")
        return Bucket(h, w)

    def artefact_file(self, entry: dict, name: str, root: Path) -> str:
        """The entry's ``file``: a relative path that resolves (symbolic links followed) inside ``root``."""
        file = self.get(entry, "file", name, kind=str)
        parts = file.replace("\\", "/").split("/")
        if not file or os.path.isabs(file) or file.startswith(("/", "\\")) or ".." in parts or ":" in parts[0]:
            self.fail(f"{name}.file", f"is {_short(file)}, expected a file name inside the model folder")
        if not (root / file).resolve().is_relative_to(root.resolve()):
            self.fail(f"{name}.file", f"is {_short(file)}, which resolves outside the model folder")
        return file

    def sha256(self, entry: dict, name: str, required: bool) -> None:
        value = self.get(entry, "sha256", name, default=None if not required else ...)
        if value is not None and not (isinstance(value, str) and _SHA256.fullmatch(value)):
            self.fail(f"{name}.sha256", f"is {_short(value)}, expected 64 lowercase hex digits")


def _short(value) -> str:
    text = json.dumps(value) if not isinstance(value, str) else repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _artefacts(f: _Fields, doc: dict, root: Path) -> dict[str, dict[str, Any]]:
    """``artefacts``: ONNX entries need a file inside the folder and a sha256; TensorRT plan entries
    need a file inside the folder, a bucket and a precision (a plan without a sha256 is never
    deserialised: ``Predictor`` skips it)."""
    arts = f.get(doc, "artefacts", kind=dict)
    for key, entry in arts.items():
        name = f"artefacts.{key}"
        if key == "tensorrt":
            if not isinstance(entry, list):
                f.fail(name, f"is {_short(entry)}, expected a list of plans")
            for i, plan in enumerate(entry):
                where = f"{name}[{i}]"
                if not isinstance(plan, dict):
                    f.fail(where, f"is {_short(plan)}, expected an object")
                f.artefact_file(plan, where, root)
                f.sha256(plan, where, required=False)
                f.bucket(f.get(plan, "bucket", where), f"{where}.bucket")
                if f.get(plan, "precision", where, "fp16") not in ("fp16", "fp32"):
                    f.fail(f"{where}.precision", f"is {_short(plan['precision'])}, expected fp16 or fp32")
                if plan.get("max_batch") is not None:
                    f.integer(plan, "max_batch", where, 1, MAX_BATCH)
            continue
        if not isinstance(entry, dict):
            f.fail(name, f"is {_short(entry)}, expected an object with file and sha256")
        f.artefact_file(entry, name, root)
        f.sha256(entry, name, required=True)
    return dict(arts)


def _class_prior(f: _Fields, doc: dict, num_classes: int) -> list[float] | None:
    """``class_prior``: null (absent) or one probability per class."""
    prior = f.get(doc, "class_prior", default=None)
    if prior is None:
        return None
    if not isinstance(prior, list) or len(prior) != num_classes:
        f.fail("class_prior", f"is {_short(prior)}, expected {num_classes} numbers (one per class) or null")
    return [f.number(v, f"class_prior[{i}]", 0.0, 1.0) for i, v in enumerate(prior)]


def load_model_spec(model_dir: str | os.PathLike, require_ready: bool = True) -> ModelSpec:
    """Read ``MODEL_DIR/model.json`` and check it against the schema; errors name the file, the
    field and the fix. Artefact paths must stay inside the folder; their bytes are verified
    against the recorded sha256 when a runtime loads them (:meth:`ModelSpec.artefact_bytes`)."""
    root = Path(model_dir)
    path = root / MODEL_JSON
    if not root.is_dir():
        raise ModelSpecError(f"{root}: model directory not found; make one with "
                             f"prnseg export CHECKPOINT --out {root}")
    if not path.is_file():
        raise ModelSpecError(f"{path}: not found; {root} is not an exported model "
                             f"(make one with prnseg export CHECKPOINT --out {root})")
    try:
        if path.stat().st_size > MAX_MODEL_JSON_BYTES:
            raise ModelSpecError(f"{path}: {path.stat().st_size} bytes, more than a model description can need "
                                 f"({MAX_MODEL_JSON_BYTES}); re-run prnseg export")
        doc = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise ModelSpecError(f"{path}: unreadable ({exc}); re-run prnseg export") from None
    found = doc.get("format") if isinstance(doc, dict) else type(doc).__name__
    if found != FORMAT:
        raise ModelSpecError(f"{path}: not a prnseg model description (format {found!r}, expected {FORMAT!r})")
    f = _Fields(path)
    version = f.get(doc, "format_version")
    if isinstance(version, int) and not isinstance(version, bool) and version > FORMAT_VERSION:
        raise ModelSpecError(f"{path}: format_version {version} is newer than this prnseg understands "
                             f"({FORMAT_VERSION}); upgrade prnseg")
    f.integer(doc, "format_version", "", 1, FORMAT_VERSION)
    ready = f.get(doc, "ready", default=False, kind=bool)
    if require_ready and not ready:
        reason = doc.get("not_ready_reason") or "its export did not finish or failed the parity gate"
        raise ModelSpecError(f"{path}: model is not ready: {' '.join(str(reason).split())[:300]} (see parity.json; "
                             "re-export)")
    classes = f.get(doc, "classes", kind=list)
    if not 1 <= len(classes) <= MAX_CLASSES or not all(isinstance(c, str) for c in classes):
        f.fail("classes", f"is {_short(classes)}, expected 1..{MAX_CLASSES} class names")
    palette = f.get(doc, "palette", kind=list)
    if not len(classes) <= len(palette) <= 256:
        f.fail("palette", f"has {len(palette)} colours, expected {len(classes)}..256 (one per class)")
    for i, c in enumerate(palette):
        if not (isinstance(c, list) and len(c) == 3 and all(isinstance(v, int) and not isinstance(v, bool)
                                                                and 0 <= v <= 255 for v in c)):
            f.fail(f"palette[{i}]", f"is {_short(c)}, expected [R, G, B] in 0..255")
    inp = f.get(doc, "input", kind=dict)
    stats = {}
    for key, lo in (("mean", 0.0), ("std", 1e-6)):
        values = f.get(inp, key, "input", kind=list)
        if len(values) != 3:
            f.fail(f"input.{key}", f"is {_short(values)}, expected 3 numbers (R, G, B)")
        stats[key] = [f.number(v, f"input.{key}[{i}]", lo, 255.0) for i, v in enumerate(values)]
    raw_buckets = f.get(inp, "buckets", "input", kind=list)
    if not raw_buckets:
        raise ModelSpecError(f"{path}: input.buckets is empty; re-export with --size HxW")
    buckets = [f.bucket(b, f"input.buckets[{i}]") for i, b in enumerate(raw_buckets)]
    max_batch = f.integer(inp, "max_batch", "input", 1, MAX_BATCH, default=1)
    noise = f.get(doc, "noise", default={}, kind=dict)
    threshold = f.number(noise.get("threshold", 0.5), "noise.threshold", 0.0, 1.0)
    noise_source = f.get(noise, "source", "noise", "prn", kind=str)
    name = f.get(doc, "name", default=root.resolve().name, kind=str)
    return ModelSpec(
        root=root,
        name=safe_name(name),
        classes=list(classes),
        palette=[list(c) for c in palette],
        ignore_index=f.integer(doc, "ignore_index", "", 0, 255, default=255),
        mean=stats["mean"],
        std=stats["std"],
        buckets=buckets,
        max_batch=max_batch,
        noise_threshold=threshold,
        noise_source=noise_source,
        artefacts=_artefacts(f, doc, root),
        ready=ready,
        class_prior=_class_prior(f, doc, len(classes)),
        raw=doc,
    )
