"""Writing the benchmark to disk in the real dataset layouts: GTA5 for the source; Cityscapes,
or Dark Zurich for the night domain, for the target; and ``synth.json`` describing the run.

The files are the layouts' own (names, folders, label encodings), so the datasets' loaders read
the benchmark exactly as they read the real data.
"""

from __future__ import annotations

import json
import multiprocessing
import shutil
import time
from pathlib import Path

import cv2
import numpy as np

from prnseg.atomic import atomic_write_bytes
from prnseg.errors import ConfigError
from prnseg.image_io import encode_image, write_image
from prnseg.labels import CITYSCAPES_CLASSES, NUM_CLASSES, trainid_to_labelid

from .classes import VOID
from .layout import SYNTH_VERSION, domain_style, geometry
from .paths import benchmark_paths
from .preview import write_preview
from .render import check_size, image_seed, render_scene

SYNTH_FORMAT = "prnseg-synthetic"


def _job(task) -> tuple[str, str, np.ndarray]:
    """Render and write one image and its labels; returns its per-class pixel counts."""
    out, domain, split, n, index, seed, size, gap, version = task
    rgb, lab = render_scene(image_seed(seed, domain, split, index), size, domain, gap, version)
    root = Path(out)
    paths = benchmark_paths(domain, split, n, index)
    write_image(root / paths["image"], rgb)
    atomic_write_bytes(root / paths["labelIds"], encode_image(trainid_to_labelid(lab)))
    if "labelTrainIds" in paths:
        atomic_write_bytes(root / paths["labelTrainIds"], encode_image(lab))
    hist = np.bincount(lab.ravel(), minlength=256)
    counts = np.append(hist[:NUM_CLASSES], hist[VOID]).astype(np.int64)
    return domain, split, counts


def _init_worker() -> None:
    """One OpenCV thread per worker process: the processes already use every core."""
    cv2.setNumThreads(1)


def _prepare_out(out: Path, overwrite: bool) -> None:
    """Create ``out``, or with ``overwrite`` clear a previous benchmark; never touch a foreign folder."""
    if out.exists() and not out.is_dir():
        raise ConfigError(f"{out}: exists and is not a directory; expected a new or empty output folder")
    if out.is_dir() and any(out.iterdir()):
        marker = out / "synth.json"
        if not overwrite:
            raise ConfigError(f"{out}: folder is not empty; expected a new or empty folder "
                              f"(pass --overwrite to replace a previous synthetic benchmark)")
        if not marker.is_file():
            raise ConfigError(f"{out}: not empty and has no synth.json; refusing to overwrite a folder "
                              f"that was not written by 'prnseg synth'")
        try:
            previous = json.loads(marker.read_text())
        except (OSError, ValueError) as exc:
            raise ConfigError(f"{marker}: unreadable ({exc}); expected the JSON written by 'prnseg synth'") from None
        if not isinstance(previous, dict) or previous.get("format") != SYNTH_FORMAT:
            raise ConfigError(f"{marker}: not a 'prnseg synth' description; refusing to overwrite {out}")
        marker.unlink()
        for name in ("gta", "cityscapes", "dark_zurich"):
            if (out / name).is_dir():
                shutil.rmtree(out / name)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"{out}: cannot create the output folder ({exc.strerror})") from None


def _describe(seed, counts, size, night, gap, complete, class_pixels=None, version=SYNTH_VERSION) -> bytes:
    """The bytes of ``synth.json``: what was written where, in which encodings, and how complete."""
    target = "dark_zurich" if night else "cityscapes"
    doc = {
        "format": SYNTH_FORMAT, "version": int(version), "seed": int(seed),
        "counts": counts, "size": list(size), "night": bool(night), "gap": float(gap),
        "layouts": {"source": "gta", "target": target},
        "source": {"images": "gta/images", "labels": "gta/labels", "encoding": "cityscapes labelIds"},
        "target": ({"images": "dark_zurich/rgb_anon/{split}/night", "labels": "dark_zurich/gt/{split}/night",
                    "encoding": "*_gt_labelTrainIds.png and *_gt_labelIds.png"} if night else
                   {"images": "cityscapes/leftImg8bit/{split}", "labels": "cityscapes/gtFine/{split}",
                    "encoding": "*_gtFine_labelTrainIds.png and *_gtFine_labelIds.png"}),
        "classes": list(CITYSCAPES_CLASSES), "complete": bool(complete),
    }
    if class_pixels is not None:
        doc["class_pixels"] = class_pixels
    return (json.dumps(doc, indent=2) + "\n").encode()




def write_benchmark(out, n_source: int, n_target: int, n_val: int, size: tuple[int, int] = (512, 256),
                    seed: int = 0, night: bool = False, preview=None, workers: int = 1,
                    progress: bool = True, gap: float = 1.0, overwrite: bool = False,
                    version: int = SYNTH_VERSION) -> dict:
    """Write the synthetic benchmark under ``out`` and return a summary.

    Source images go to the GTA5 layout, target train/val to the Cityscapes layout (Dark Zurich
    with ``night``); ``synth.json`` describes the run (written first with ``complete: false``,
    rewritten at the end). ``workers`` > 1 renders in that many spawned processes (so a calling
    script needs the usual ``if __name__ == "__main__":`` guard); the files do not depend on it.
    Returns a dict with the output folder, counts, files written, per-split class pixel counts,
    seconds and images per second.
    """
    out = Path(out)
    w, h = check_size(size)
    _check_request(n_source, n_target, n_val, workers, night, gap, version, preview)
    _prepare_out(out, overwrite)
    counts = {"source": int(n_source), "target": int(n_target), "val": int(n_val)}
    atomic_write_bytes(out / "synth.json", _describe(seed, counts, (w, h), night, gap, complete=False,
                                                     version=version))

    tdom = "night" if night else "target"
    plan = [("source", "train", n_source), (tdom, "train", n_target), (tdom, "val", n_val)]
    tasks = [(str(out), d, split, n, i, int(seed), (w, h), float(gap), int(version))
             for d, split, n in plan for i in range(n)]
    totals = {f"{d}/{split}": np.zeros(NUM_CLASSES + 1, np.int64) for d, split, _ in plan}
    t0 = time.perf_counter()
    _render_all(tasks, totals, out, workers, progress)
    seconds = time.perf_counter() - t0

    class_pixels = {k: {"classes": v[:NUM_CLASSES].tolist(), "void": int(v[NUM_CLASSES])} for k, v in totals.items()}
    atomic_write_bytes(out / "synth.json", _describe(seed, counts, (w, h), night, gap, True, class_pixels,
                                                     version))
    if preview is not None:
        write_preview(out, preview)
    n_files = n_source * 2 + (n_target + n_val) * 3
    present = {k: int(np.count_nonzero(v[:NUM_CLASSES])) for k, v in totals.items()}
    return {
        "out": str(out), "counts": counts, "size": [w, h], "seed": int(seed), "night": bool(night),
        "gap": float(gap), "version": int(version), "files": n_files + 1, "images": len(tasks), "seconds": seconds,
        "images_per_second": len(tasks) / seconds if seconds > 0 else float("inf"),
        "workers": int(workers), "classes_present": present, "class_pixels": class_pixels,
        "layouts": {"source": str(out / "gta"), "target": str(out / ("dark_zurich" if night else "cityscapes"))},
        "preview": None if preview is None else str(preview),
    }


def _check_request(n_source, n_target, n_val, workers, night, gap, version, preview) -> None:
    """Refuse bad arguments before anything is written."""
    for name, n, lo in (("source", n_source, 1), ("target", n_target, 1), ("val", n_val, 0)):
        if int(n) != n or n < lo:
            raise ConfigError(f"number of {name} images must be an integer >= {lo}, got {n}")
    if int(workers) != workers or workers < 1:
        raise ConfigError(f"workers must be an integer >= 1, got {workers}")
    domain_style("night" if night else "target", gap)
    geometry(version)
    if preview is not None and Path(preview).suffix.lower() not in (".png", ".jpg", ".jpeg"):
        raise ConfigError(f"{preview}: preview must be a .png or .jpg file")


def _render_all(tasks: list, totals: dict[str, np.ndarray], out: Path, workers: int, progress: bool) -> None:
    """Render and write every task, in this process or a spawned pool, adding up class pixels."""
    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(total=len(tasks), unit="img", desc="synth", disable=None)
    try:
        if workers == 1:
            results = map(_job, tasks)
            pool = None
        else:
            pool = multiprocessing.get_context("spawn").Pool(min(workers, len(tasks)), initializer=_init_worker)
            results = pool.imap_unordered(_job, tasks, chunksize=max(1, min(8, len(tasks) // (4 * workers))))
        try:
            for d, split, c in results:
                totals[f"{d}/{split}"] += c
                if bar is not None:
                    bar.update(1)
        except OSError as exc:
            where = exc.filename or out
            raise ConfigError(f"{where}: cannot write the benchmark ({exc.strerror or exc})") from None
        finally:
            if pool is not None:
                pool.terminate()
                pool.join()
    finally:
        if bar is not None:
            bar.close()
