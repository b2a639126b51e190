"""One image's outputs of ``prnseg label``: encode the planes, write them atomically, and return
the image's manifest fields.

The writer is built from the options and the model spec alone, so the local engine and every Ray
worker build the same writer and write the same bytes.
"""

from __future__ import annotations

import numpy as np

from prnseg.atomic import atomic_write_bytes, fsync_dir
from prnseg.errors import PrnsegError
from prnseg.image_io import encode_gray_png, encode_image, encode_palette_png, read_trainids
from prnseg.model_spec import ModelSpec
from prnseg.serve.label_options import ALWAYS, LabelOptions, failure_reason
from prnseg.serve.label_plan import Item


class OutputWriter:
    """Encodes and atomically writes one image's outputs and returns its manifest fields."""

    def __init__(self, opts: LabelOptions, spec: ModelSpec):
        self.out = opts.out_dir
        self.save = opts.save
        self.ignore_noisy = opts.ignore_noisy
        self.threshold = opts.noise_threshold
        self.use_graph_noise = opts.noise_threshold is None or abs(opts.noise_threshold - spec.noise_threshold) < 1e-12
        self.level = int(opts.png_level)
        self.colors = np.zeros((256, 3), np.uint8)  # the model's palette as a full PLTE; ignore (255) is black
        self.colors[: len(spec.palette)] = np.asarray(spec.palette, np.uint8)
        self.num_classes = spec.num_classes
        self.gt_dir = opts.gt_dir
        self.temp_tag = opts.temp_tag

    def _gray(self, arr: np.ndarray) -> bytes:
        return encode_gray_png(arr, self.level)

    def write(self, item: Item, pred) -> dict:
        """Write every output of ``item`` (a ``Prediction``); the caller journals the result."""
        noise = pred.noise.astype(bool) if self.use_graph_noise else pred.noise_at(self.threshold)
        label = np.where(noise, np.uint8(255), pred.label) if self.ignore_noisy else pred.label
        blobs = {"labels": lambda: encode_palette_png(label, self.colors, self.level),
                 "noise": lambda: self._gray(noise.astype(np.uint8) * np.uint8(255)),
                 "confidence": lambda: self._gray(pred.confidence),
                 "color": lambda: encode_image(self.colors[label], png_level=self.level),
                 "raw": lambda: encode_palette_png(pred.raw_label, self.colors, self.level),
                 "noise_prob": lambda: self._gray(pred.noise_prob)}
        folders = set()
        for sub in ALWAYS + self.save:
            path = self.out / sub / f"{item.key}.png"
            atomic_write_bytes(path, blobs[sub](), fsync=True, temp_tag=self.temp_tag)
            folders.add(path.parent)
        for folder in folders:  # the renames durable too, before the caller journals the image
            fsync_dir(folder)
        n = label.size
        hist = np.bincount(pred.label.ravel(), minlength=256)[: self.num_classes]
        rec = {
            "noisy_fraction": round(float(np.count_nonzero(noise)) / n, 6),
            "flip_fraction": round(float(np.count_nonzero(pred.label != pred.raw_label)) / n, 6),
            "mean_confidence": round(float(pred.confidence.mean()) / 255.0, 6),
            "class_hist": [int(v) for v in hist],
        }
        if self.gt_dir is not None:
            rec["gt"] = self._gt_stats(item, pred, noise)
        return rec

    def _gt_stats(self, item: Item, pred, noise) -> dict | None:
        from prnseg.serve.label_metrics import image_stats

        if item.gt is None:
            return None
        try:
            gt = read_trainids(self.gt_dir / item.gt.file, item.gt.fmt)  # as prnseg eval reads it
            stats = image_stats(gt, pred.raw_label, pred.label, noise, pred.noise_prob, self.num_classes)
        except (PrnsegError, ValueError) as exc:
            return {"file": item.gt.file, "error": failure_reason(exc)}
        return {"file": item.gt.file, **stats}
