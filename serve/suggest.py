"""The labelling queue (``prnseg label --suggest K``): which images of a labelled folder a person
should hand-label first, with the model's labels as editable pre-annotations.

An image is worth a person's time when the model is unsure of it, and more so when what it is unsure
of is a rare class: each image scores the noise-mask mass over its pixels, each pixel weighted by
the rarity of its label across the whole folder. K near-duplicates (consecutive video frames) teach
little more than one, so images are taken greedily, each one's score discounted by its similarity
to those already taken (cosine similarity of coarse class-layout descriptors).

Written to ``OUT/suggest/``:
- ``suggest.txt``: the chosen images, ranked, one path relative to INPUT_DIR a line; this is the
  file ``data.target_labeled.list`` reads as it is;
- ``ranking.json``: every candidate's score, rank and the similarity discount it got;
- ``images/``: copies of the chosen images, to upload as a CVAT task;
- ``cvat_segmentation_mask.zip``: the refined labels of those images in CVAT's "Segmentation mask
  1.1" import format (``labelmap.txt``, ``ImageSets/Segmentation/default.txt``,
  ``SegmentationClass/`` colour masks; ignored pixels are the declared ``background`` colour,
  since CVAT refuses an undeclared one).
"""

from __future__ import annotations

import io
import json
import shutil
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from prnseg.atomic import atomic_write_bytes
from prnseg.errors import PrnsegError
from prnseg.image_io import encode_image, read_label, read_trainids
from prnseg.labels import IGNORE_INDEX
from prnseg.serve.label_plan import output_key

SUGGEST_DIR = "suggest"
CVAT_ZIP = "cvat_segmentation_mask.zip"
#: the colour CVAT's labelmap declares for unlabelled pixels (no Cityscapes class uses black)
BACKGROUND = (0, 0, 0)
#: rows x columns of the class-layout descriptor two images are compared by
GRID = (4, 8)


class SuggestError(PrnsegError):
    pass


@dataclass
class Candidate:
    path: str  # relative to INPUT_DIR, as the manifest records it
    key: str  # the output name under labels/, noise/, ...
    score: float = 0.0
    descriptor: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32), repr=False)
    discount: float = 0.0


def class_weights(hists: np.ndarray) -> np.ndarray:
    """Per-class weight (median frequency / frequency) ** 0.5, capped at 10: a class seen 100x less
    often than the median weighs 10x; an absent class weighs the cap (it is rare by definition)."""
    freq = hists.sum(0).astype(np.float64)
    freq = freq / max(freq.sum(), 1.0)
    present = freq[freq > 0]
    med = float(np.median(present)) if present.size else 1.0
    with np.errstate(divide="ignore"):
        w = np.sqrt(med / freq)
    return np.minimum(np.where(np.isfinite(w), w, 10.0), 10.0)


def image_score(label: np.ndarray, noise: np.ndarray, weights: np.ndarray) -> float:
    """Mean over pixels of noise (0..1) times the rarity weight of the pixel's label; pixels with
    no label (255) count at weight 1."""
    w = np.ones(256, np.float64)
    w[: len(weights)] = weights
    return float((noise.astype(np.float64) * w[label]).mean())


def descriptor(label: np.ndarray, num_classes: int) -> np.ndarray:
    """Class shares in each cell of a coarse grid, L2-normalised: two frames of one street come out
    alike, a street and a square do not."""
    h, w = label.shape
    gh, gw = GRID
    parts = []
    for i in range(gh):
        for j in range(gw):
            cell = label[i * h // gh:(i + 1) * h // gh, j * w // gw:(j + 1) * w // gw]
            parts.append(np.bincount(cell.ravel(), minlength=256)[:num_classes])
    v = np.concatenate(parts).astype(np.float32)
    n = float(np.linalg.norm(v))
    return v / n if n else v


def choose(cands: list[Candidate], k: int) -> list[Candidate]:
    """Greedy: take the best score discounted by (1 - the largest cosine similarity to any image
    already taken); ties go to the path order, so the queue is deterministic."""
    left = sorted(cands, key=lambda c: c.path)
    taken: list[Candidate] = []
    sims = np.zeros(len(left))
    while left and len(taken) < k:
        gains = [c.score * (1.0 - s) for c, s in zip(left, sims)]
        i = int(np.argmax(gains))
        best = left.pop(i)
        best.discount = float(sims[i])
        sims = np.delete(sims, i)
        taken.append(best)
        if left:
            sims = np.maximum(sims, np.array([float(best.descriptor @ c.descriptor) for c in left]))
    return taken


def _load(out_dir: Path, c: Candidate, num_classes: int, has_prob: bool, has_raw: bool):
    label = read_trainids(out_dir / "labels" / f"{c.key}.png")
    if has_raw:  # labels/ may hold 255 where the mask flagged a pixel (--ignore-noisy): raw knows its class
        raw = read_trainids(out_dir / "raw" / f"{c.key}.png")
        label = np.where(label == IGNORE_INDEX, raw, label)
    sub = "noise_prob" if has_prob else "noise"
    noise = read_label(out_dir / sub / f"{c.key}.png").astype(np.float32) / 255.0
    if noise.shape != label.shape:
        raise SuggestError(f"{out_dir / sub / (c.key + '.png')}: {noise.shape[1]}x{noise.shape[0]} does not match "
                           f"its label's {label.shape[1]}x{label.shape[0]}; re-run prnseg label into a fresh --out")
    return label, noise


def rank(out_dir: Path, records: dict[str, dict], num_classes: int, k: int) -> tuple[list[Candidate], list[Candidate]]:
    """(chosen, all candidates) from a finished run's manifest records (path -> ok record)."""
    if not records:
        raise SuggestError(f"{out_dir}: no labelled image to choose from; --suggest needs a run that labelled some")
    hists = np.array([r.get("class_hist") or [0] * num_classes for r in records.values()], np.int64)
    weights = class_weights(hists)
    has_prob = (out_dir / "noise_prob").is_dir()
    has_raw = (out_dir / "raw").is_dir()
    cands = []
    for path in sorted(records):
        c = Candidate(path=path, key=output_key(path))
        label, noise = _load(out_dir, c, num_classes, has_prob, has_raw)
        c.score = image_score(label, noise, weights)
        c.descriptor = descriptor(label, num_classes)
        cands.append(c)
    return choose(cands, k), cands


def _cvat_zip(out_dir: Path, chosen: list[Candidate], classes: list[str], palette: list[list[int]]) -> bytes:
    lut = np.zeros((256, 3), np.uint8)
    lut[:] = BACKGROUND
    lut[: len(classes)] = np.asarray(palette[: len(classes)], np.uint8)
    labelmap = "# label:color_rgb:parts:actions\n" + f"background:{','.join(map(str, BACKGROUND))}::\n" + "".join(
        f"{name}:{','.join(str(int(v)) for v in palette[i])}::\n" for i, name in enumerate(classes))
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("labelmap.txt", labelmap)
        z.writestr("ImageSets/Segmentation/default.txt", "".join(f"{c.key}\n" for c in chosen))
        for c in chosen:
            label = read_trainids(out_dir / "labels" / f"{c.key}.png")
            z.writestr(f"SegmentationClass/{c.key}.png", encode_image(lut[label]))  # RGB in, as CVAT reads it
    return buf.getvalue()


def write_suggestions(out_dir: Path, input_dir: Path, records: dict[str, dict], classes: list[str],
                      palette: list[list[int]], k: int) -> dict:
    """Rank the run's images and write ``OUT/suggest/`` (see the module docstring); returns the
    summary that ``report.json`` keeps under ``suggest``."""
    if k < 1:
        raise SuggestError(f"--suggest {k}: give the number of images to suggest, at least 1")
    chosen, cands = rank(out_dir, records, len(classes), k)
    folder = out_dir / SUGGEST_DIR
    if (folder / "images").is_dir():  # a previous queue's copies; the new queue replaces it whole
        shutil.rmtree(folder / "images")
    for c in chosen:
        atomic_write_bytes(folder / "images" / c.path, (input_dir / c.path).read_bytes())
    atomic_write_bytes(folder / CVAT_ZIP, _cvat_zip(out_dir, chosen, classes, palette))
    order = {c.path: i + 1 for i, c in enumerate(chosen)}
    ranking = {"k": k, "chosen": [c.path for c in chosen],
               "candidates": [{"path": c.path, "score": round(c.score, 6), "rank": order.get(c.path),
                               "similarity_discount": round(c.discount, 4) if c.path in order else None}
                              for c in sorted(cands, key=lambda c: -c.score)]}
    atomic_write_bytes(folder / "ranking.json", (json.dumps(ranking, indent=1) + "\n").encode())
    atomic_write_bytes(folder / "suggest.txt", "".join(f"{c.path}\n" for c in chosen).encode("utf-8"))
    return {"k": k, "chosen": len(chosen), "folder": str(folder), "list": str(folder / "suggest.txt"),
            "cvat": str(folder / CVAT_ZIP)}
