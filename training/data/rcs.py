"""Rare Class Sampling (DAFormer): draw source images that contain rare classes more often.

Per-image class pixel counts are taken from the label files at their original resolution,
once, and cached as JSON beside the data (``<root>/.prnseg_rcs_stats.json``, keyed by the
label's path relative to the root). Each entry keeps the label file's size and id encoding, so
a changed or replaced label is recounted and a cache shared by several splits stays valid. If
the root is not writable the cache goes to ``$XDG_CACHE_HOME/prnseg/rcs/`` (default
``~/.cache/prnseg/rcs/``) and a warning says so.

Sampling: ``f_c = n_c / sum(n)``, ``P(c) = softmax((1 - f_c) / T)``; pick c, then uniformly one
image with more than ``min_pixels`` pixels of c; the source pipeline's crop is redrawn (up to
10 times) until it holds more than ``min_pixels * min_crop_ratio`` pixels of c.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from tqdm import tqdm

from prnseg.atomic import atomic_write_bytes
from prnseg.errors import ConfigError, DatasetError
from prnseg.labels import NUM_CLASSES

log = logging.getLogger("prnseg")

CACHE_NAME = ".prnseg_rcs_stats.json"
CACHE_VERSION = 1


def user_cache_path(root: Path) -> Path:
    """Fallback cache file for a read-only dataset root, one per absolute root path."""
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    digest = hashlib.sha1(str(root.resolve()).encode()).hexdigest()[:16]
    return base / "prnseg" / "rcs" / f"{root.name or 'root'}-{digest}.json"


def _read_cache(path: Path) -> dict:
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as e:
        log.warning("ignoring unreadable RCS statistics cache %s (%s); recomputing", path, e)
        return {}
    if not isinstance(doc, dict) or doc.get("version") != CACHE_VERSION \
            or not isinstance(doc.get("files"), dict):
        return {}
    return doc["files"]


def _entry_valid(entry, size: int, fmt: str, num_classes: int) -> bool:
    return (isinstance(entry, dict) and entry.get("size") == size
            and entry.get("format") == fmt and entry.get("num_classes") == num_classes
            and isinstance(entry.get("counts"), dict))


def class_pixel_counts(dataset, num_classes: int = NUM_CLASSES, progress: bool = True,
                       workers: int | None = None, cache: bool = True) -> np.ndarray:
    """(N, num_classes) int64 pixel counts per image of ``dataset`` (a labelled
    :class:`~prnseg.training.data.datasets.SegDataset`), from the cache where it is current."""
    if not dataset.has_labels:
        raise DatasetError(f"{dataset.root}: Rare Class Sampling needs the source labels; build "
                           "the source dataset with load_labels=True")
    root = Path(dataset.root)
    primary, fallback = root / CACHE_NAME, user_cache_path(root)
    cached: dict = {}
    if cache:
        cached = _read_cache(fallback)
        cached.update(_read_cache(primary))
    n = len(dataset)
    counts = np.zeros((n, num_classes), np.int64)
    names = [dataset.label_name(i) for i in range(n)]
    keys = []
    todo = []
    for i, name in enumerate(names):
        rec = dataset.records[i]
        key = (os.path.getsize(rec.label), rec.label_format)
        keys.append(key)
        entry = cached.get(name)
        if _entry_valid(entry, key[0], key[1], num_classes):
            for c, v in entry["counts"].items():
                counts[i, int(c)] = int(v)
        else:
            todo.append(i)
    if not todo:
        return counts

    def count(i: int) -> np.ndarray:
        return np.bincount(dataset.load_label(i).ravel(), minlength=256)[:num_classes]

    workers = workers or min(8, os.cpu_count() or 1)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        results = pool.map(count, todo)
        for i, row in tqdm(zip(todo, results), total=len(todo), disable=not progress,
                           desc=f"RCS class statistics ({root.name})", unit="label"):
            counts[i] = row
    if cache:
        for i in todo:
            cached[names[i]] = {"size": keys[i][0], "format": keys[i][1],
                                "num_classes": num_classes,
                                "counts": {str(c): int(v) for c, v in enumerate(counts[i]) if v}}
        data = json.dumps({"version": CACHE_VERSION, "files": cached}, sort_keys=True).encode()
        try:
            atomic_write_bytes(primary, data)
        except OSError as e:
            log.warning("cannot write %s (%s); caching RCS statistics in %s instead",
                        primary, e.strerror or e, fallback)
            try:
                atomic_write_bytes(fallback, data)
            except OSError as e2:
                log.warning("cannot write %s either (%s); RCS statistics are not cached",
                            fallback, e2.strerror or e2)
    return counts


def rcs_class_probs(total_counts: np.ndarray, temperature: float) -> np.ndarray:
    """DAFormer's ``P(c) = softmax((1 - f_c) / T)`` over the given class totals."""
    total = np.asarray(total_counts, dtype=np.float64)
    freq = total / total.sum()
    z = (1.0 - freq) / temperature
    e = np.exp(z - z.max())
    return e / e.sum()


class RareClassSampler:
    """Chooses source images by Rare Class Sampling.

    Classes absent from the labels are left out as in DAFormer; a class that never covers more
    than ``min_pixels`` pixels of any one image cannot be sampled either (DAFormer asserts
    instead) and is left out with a warning. ``classes`` and ``probs`` are the result;
    ``class_probs`` maps class -> probability.
    """

    def __init__(self, dataset, temperature: float = 0.01, min_pixels: int = 3000,
                 min_crop_ratio: float = 0.5, num_classes: int = NUM_CLASSES,
                 progress: bool = True, workers: int | None = None):
        if temperature <= 0:
            raise ValueError(f"RCS temperature must be > 0, got {temperature}")
        self.dataset = dataset
        self.temperature = float(temperature)
        self.min_pixels = int(min_pixels)
        self.min_crop_ratio = float(min_crop_ratio)
        self.counts = class_pixel_counts(dataset, num_classes, progress, workers)
        totals = self.counts.sum(axis=0)
        present = np.flatnonzero(totals > 0)
        files = {int(c): np.flatnonzero(self.counts[:, c] > self.min_pixels) for c in present}
        usable = np.array([c for c in present if len(files[int(c)])], dtype=np.int64)
        if len(usable) == 0:
            raise DatasetError(f"{dataset.root}: no label has more than min_pixels="
                               f"{self.min_pixels} pixels of any class; lower min_pixels")
        dropped = sorted(set(present.tolist()) - set(usable.tolist()))
        if dropped:
            log.warning("RCS: classes %s never exceed %d pixels in one image and are not "
                        "sampled", dropped, self.min_pixels)
        freq_probs = rcs_class_probs(totals[present], self.temperature)
        keep = np.isin(present, usable)
        self.classes = usable
        self.probs = freq_probs[keep] / freq_probs[keep].sum()
        self.files_with_class = {int(c): files[int(c)] for c in usable}

    def require_dataset(self, dataset, role: str) -> None:
        """ConfigError unless this sampler was built on ``dataset`` (the ``role`` it plays)."""
        if self.dataset is not dataset:
            raise ConfigError(f"the RareClassSampler was built on another dataset than the {role} {dataset.root}")

    @property
    def class_probs(self) -> dict[int, float]:
        return {int(c): float(p) for c, p in zip(self.classes, self.probs)}

    @property
    def min_crop_pixels(self) -> float:
        return self.min_pixels * self.min_crop_ratio

    def sample_class(self, rng: np.random.Generator) -> int:
        return int(self.classes[rng.choice(len(self.classes), p=self.probs)])

    def sample_with_class(self, rng: np.random.Generator) -> tuple[int, int]:
        """(dataset index, the rare class it was drawn for)."""
        c = self.sample_class(rng)
        files = self.files_with_class[c]
        return int(files[rng.integers(len(files))]), c

    def sample(self, rng: np.random.Generator) -> int:
        return self.sample_with_class(rng)[0]

    def load(self, i: int, c: int, rng: np.random.Generator) -> dict:
        """Image ``i`` drawn for class ``c``, transformed, its crop redrawn until it shows ``c``."""
        if self.min_crop_ratio > 0:
            return self.dataset.get(i, rng, require_class=c, min_class_pixels=self.min_crop_pixels)
        return self.dataset.get(i, rng)

    def get_item(self, rng: np.random.Generator) -> dict:
        """A transformed source item drawn by RCS, its crop redrawn until it shows the class."""
        i, c = self.sample_with_class(rng)
        return self.load(i, c, rng)
