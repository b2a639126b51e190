"""The measurements every inference row shares: its inputs, timed calls and parity.

Kept free of torch and of any backend: a row hands in a ``run(batch) -> outputs`` callable, so
PyTorch, ONNX Runtime and TensorRT are timed and compared by the same code.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np

AUTO_MIN_SECONDS = 2.0
AUTO_MAX_ITERS = 200


def timed_runs(run, batches: list[np.ndarray], warmup: int, iters: int) -> tuple[list[float], list[dict]]:
    """(seconds per timed call, outputs of the first pass over ``batches``).

    ``iters=0`` is auto: at least 3 calls and one pass over the batches, continued while the
    row has run under ``AUTO_MIN_SECONDS`` (up to ``AUTO_MAX_ITERS``).
    """
    for i in range(warmup):
        run(batches[i % len(batches)])
    need = max(iters or 3, len(batches))
    times, first = [], []
    while len(times) < need or (not iters and sum(times) < AUTO_MIN_SECONDS and len(times) < AUTO_MAX_ITERS):
        b = batches[len(times) % len(batches)]
        t0 = time.perf_counter()
        out = run(b)
        times.append(time.perf_counter() - t0)
        if len(first) < len(batches):
            first.append(out)
    return times, first


def latency_stats(times: list[float], batch: int) -> dict:
    t = np.asarray(times)
    return {"latency_ms_median": round(float(np.median(t)) * 1e3, 3),
            "latency_ms_p90": round(float(np.percentile(t, 90)) * 1e3, 3),
            "images_per_s": round(batch * len(t) / float(t.sum()), 3), "iters": len(t)}


def parity(outputs: list[dict], reference: list[dict]) -> dict:
    """Agreement of a backend's uint8 outputs with the reference's on the same batches."""
    n = same_label = same_raw = same_noise = 0
    conf_max = prob_max = 0
    for out, ref in zip(outputs, reference):
        n += ref["label"].size
        same_label += int(np.count_nonzero(out["label"] == ref["label"]))
        same_raw += int(np.count_nonzero(out["raw_label"] == ref["raw_label"]))
        same_noise += int(np.count_nonzero(out["noise"] == ref["noise"]))
        conf_max = max(conf_max, int(np.abs(out["confidence"].astype(np.int16) - ref["confidence"]).max()))
        prob_max = max(prob_max, int(np.abs(out["noise_prob"].astype(np.int16) - ref["noise_prob"]).max()))
    return {"label_agreement_pct": round(100.0 * same_label / max(n, 1), 4),
            "raw_label_agreement_pct": round(100.0 * same_raw / max(n, 1), 4),
            "noise_agreement_pct": round(100.0 * same_noise / max(n, 1), 4),
            "confidence_max_diff": conf_max, "noise_prob_max_diff": prob_max, "pixels": n}


def render_images(hw: tuple[int, int], n: int, seed: int = 0) -> list[np.ndarray]:
    """``n`` synthetic target-style street scenes, RGB uint8 at exactly ``hw`` (H, W)."""
    from prnseg.training.data.synthetic import render_scene

    h, w = hw
    return [render_scene(np.random.SeedSequence([seed, 7, i]), (w, h), "target")[0] for i in range(n)]


def make_batches(images: list[np.ndarray], batch: int) -> list[np.ndarray]:
    """Batches of ``batch`` images covering every image at least once (the last wraps around)."""
    k = math.ceil(len(images) / batch)
    return [np.stack([images[(j * batch + i) % len(images)] for i in range(batch)]) for j in range(k)]


def write_e2e_images(images: list[np.ndarray], folder: Path) -> Path:
    """The scenes as PNG files at twice the bucket size (a camera frame the pipeline scales down,
    as Cityscapes' 2048x1024 into a 1024x512 bucket)."""
    import cv2

    from prnseg.image_io import write_image

    folder.mkdir(parents=True, exist_ok=True)
    for i, rgb in enumerate(images):
        big = cv2.resize(rgb, (rgb.shape[1] * 2, rgb.shape[0] * 2), interpolation=cv2.INTER_LINEAR)
        write_image(folder / f"frame_{i:04d}.png", big)
    return folder
