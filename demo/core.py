"""Everything the page does, without the page (:class:`DemoCore`): reads uploads, runs the
predictor, renders the views from the cached prediction and writes the downloads."""

from __future__ import annotations

import atexit
import logging
import os
import shutil
import tempfile
import time
import uuid
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from prnseg.atomic import atomic_write_bytes, atomic_writer
from prnseg.demo import render, text
from prnseg.demo._gr import gr
from prnseg.demo.sessions import SESSION_MAX_AGE_S, SESSION_MAX_BYTES, SESSION_MAX_ITEMS, SessionStore, state_bytes
from prnseg.demo.uploads import DEFAULT_MAX_PIXELS, DemoInputError, read_upload, upload_path, upload_size
from prnseg.errors import PrnsegError
from prnseg.image_io import encode_image, encode_palette_png

log = logging.getLogger("prnseg.demo")

BATCH_MAX_FILES = 32
BATCH_DISPLAY_SIDE = 640
KEEP_DOWNLOADS_S = 3600
TABLE_HEADERS = ["class", "pixel share %", "mean confidence", "noisy share %"]
BATCH_HEADERS = ["file", "size", "status", "noisy %", "relabelled %", "main classes"]


def _user_error(exc: Exception) -> gr.Error:
    log.warning("rejected input: %s", exc)
    return gr.Error(str(exc), print_exception=False, duration=None)


class DemoCore:
    """Everything the page does, without the page: reads uploads, runs the predictor, renders
    the views and writes the downloads (atomically, into a private temporary folder)."""

    def __init__(self, predictor, max_pixels: int = DEFAULT_MAX_PIXELS, workdir: str | os.PathLike | None = None,
                 sessions: SessionStore | None = None):
        self.predictor = predictor
        self.spec = predictor.spec
        self.classes = list(self.spec.classes)
        self.palette = [list(c) for c in self.spec.palette]
        self.max_pixels = int(max_pixels)
        # Where the labels come from: "tta" (the teacher averaged over scales and mirrors, prnseg label
        # --tta), "prn" (model.json label_source prn_refined) or "teacher" (segmenter: the PRN only flags noise)
        self.tta = bool(getattr(predictor, "tta", False))
        refined = self.spec.raw.get("label_source", "prn_refined") == "prn_refined"
        self.label_source = "tta" if self.tta else "prn" if refined else "teacher"
        self.refines = self.label_source != "teacher"   # the labels can differ from the single pass: a changes view
        self.has_prn = self.spec.has_prn
        self.noise_from_prn = not self.tta and self.spec.noise_source == "prn"
        self.noise_threshold = float(getattr(predictor, "noise_threshold", self.spec.noise_threshold))
        self.logit_adjustment = float(getattr(predictor, "logit_adjustment", 0.0) or 0.0)
        if workdir is None:
            workdir = tempfile.mkdtemp(prefix="prnseg-demo-")
            atexit.register(shutil.rmtree, workdir, True)
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.sessions = sessions if sessions is not None else SessionStore(SESSION_MAX_ITEMS, SESSION_MAX_BYTES,
                                                                           SESSION_MAX_AGE_S)
        self.errors = SessionStore(4 * SESSION_MAX_ITEMS, 1 << 20, SESSION_MAX_AGE_S)

    @property
    def label_title(self) -> str:
        if self.label_source == "tta":
            adjusted = f", rare classes logit-adjusted (tau {self.logit_adjustment:g})" if self.logit_adjustment else ""
            return f"Segmentation (the teacher averaged over 3 scales and their mirrors{adjusted})"
        return ("Refined segmentation (the PRN's labels)" if self.refines
                else "Segmentation (the teacher's labels; this model does not refine them)")

    @property
    def changes_title(self) -> str:
        """The name of the view that shows where the written labels differ from the single pass."""
        return "TTA changes" if self.tta else "PRN changes"

    # -- model ---------------------------------------------------------------------------------
    def warm_up(self) -> None:
        """Run one blank image so session creation and kernel selection are not billed to the
        first visitor's inference time."""
        b = self.spec.buckets[0]
        self.predictor.predict([np.zeros((b.height, b.width, 3), dtype=np.uint8)])

    def _predict(self, images: list[np.ndarray]) -> tuple[list[Any], float]:
        start = time.perf_counter()
        try:
            preds = list(self.predictor.predict(images))
        except PrnsegError as exc:
            raise _user_error(exc) from None
        except Exception as exc:
            log.exception("inference failed")
            raise gr.Error(f"inference failed ({type(exc).__name__}: {exc}); see the server log",
                           print_exception=False, duration=None) from None
        return preds, time.perf_counter() - start

    # -- files ---------------------------------------------------------------------------------
    def _request_dir(self) -> Path:
        """A fresh folder per request (concurrent visitors never share a file); folders older than
        an hour are removed, Gradio has copied what it serves by then."""
        now = time.time()
        for old in self.workdir.iterdir():
            try:
                if now - old.stat().st_mtime > KEEP_DOWNLOADS_S:
                    shutil.rmtree(old, ignore_errors=True)
            except FileNotFoundError:
                pass
        d = self.workdir / uuid.uuid4().hex
        d.mkdir()
        return d

    def _write_label(self, folder: Path, stem: str, label: np.ndarray) -> str:
        path = folder / f"{stem}_label.png"
        atomic_write_bytes(path, encode_palette_png(label, self.palette))
        return str(path)

    def _write_noise(self, folder: Path, stem: str, noisy: np.ndarray, threshold: float) -> str:
        path = folder / f"{stem}_noise_t{threshold:.2f}.png"
        atomic_write_bytes(path, encode_image(noisy.astype(np.uint8) * 255, ".png"))
        return str(path)

    # -- single image --------------------------------------------------------------------------
    def check_upload(self, image) -> str:
        """Judge an upload as soon as it arrives: the status line says what is wrong (and a toast
        that stays until closed), or that it is ready."""
        image_path = upload_path(image)
        if not image_path:
            return text.READY_STATUS
        try:
            h, w = upload_size(image_path, self.max_pixels)
        except DemoInputError as exc:
            log.warning("rejected upload: %s", exc)
            gr.Warning(str(exc), duration=None)
            return f"**Not usable:** {exc}"
        return (f"**{Path(image_path).name}** ({w} × {h} px) is ready: press **Segment**."
                + text.small_image_note(self.spec, h, w))

    def segment(self, image, opacity: float, threshold: float, request: gr.Request = None):
        """Run the model on one upload (a path or Gradio's FileData); returns the views, the table,
        the status, both downloads and the key of the cached result the sliders re-render from."""
        session = getattr(request, "session_hash", None) or "local"
        image_path = upload_path(image)
        try:
            if not image_path:
                raise DemoInputError("No image: upload one or pick an example first.")
            rgb = read_upload(image_path, self.max_pixels)
            (pred,), seconds = self._predict([rgb])
        except (DemoInputError, gr.Error) as exc:
            message = exc.message if isinstance(exc, gr.Error) else str(exc)
            self.errors.put(session, message, len(message))
            log.warning("rejected input: %s", message)
            raise gr.Error(message, print_exception=False, duration=None) from None
        stem = Path(image_path).stem
        dhw = render.display_size(*rgb.shape[:2])
        state = {"name": Path(image_path).name, "stem": stem, "size": rgb.shape[:2], "seconds": seconds,
                 "pred": pred, "rgb": render.resize_image(rgb, dhw),
                 "label": render.resize_plane(pred.label, dhw),
                 "raw": render.resize_plane(pred.raw_label, dhw),
                 "confidence": render.resize_plane(pred.confidence, dhw),
                 "dir": self._request_dir()}
        key = f"{session}/{uuid.uuid4().hex}"
        self.sessions.put(key, state, state_bytes(state))
        label_file = self._write_label(state["dir"], stem, pred.label)
        return (*self.render(key, opacity, threshold), label_file, key)

    def failed(self, request: gr.Request = None):
        """After a rejected input: empty views, the reason kept in the status line, no downloads."""
        session = getattr(request, "session_hash", None) or "local"
        message = self.errors.get(session) or "the input was rejected"
        return [None] * 6 + [f"**Not segmented:** {message}", gr.update(value=None, visible=False),
                             gr.update(value=None, visible=False), None]

    def render(self, key: str | None, opacity: float, threshold: float):
        """The views of a cached prediction at this opacity and noise threshold (no model call)."""
        state = self.sessions.get(key)
        if not state:
            message = ("This result is no longer kept on the server; press **Segment** again." if key
                       else "Press **Segment** first; the sliders re-render its result.")
            return (None,) * 6 + (message, None)
        pred, rgb = state["pred"], state["rgb"]
        threshold = float(np.clip(threshold, 0.0, 1.0))
        noisy = np.asarray(pred.noise_at(threshold), dtype=bool)
        noisy_disp = render.resize_plane(noisy.astype(np.uint8), rgb.shape[:2]).astype(bool)
        label, raw = state["label"], state["raw"]
        annotated = (rgb, render.class_masks(label, self.classes, opacity))
        compare = (render.colour_overlay(rgb, raw, self.palette, opacity),
                   render.colour_overlay(rgb, label, self.palette, opacity))
        rows = render.class_rows(pred.label, pred.confidence, noisy, self.classes)
        table = pd.DataFrame({TABLE_HEADERS[0]: [r.name for r in rows],
                              TABLE_HEADERS[1]: [round(100 * r.pixel_share, 2) for r in rows],
                              TABLE_HEADERS[2]: [round(r.mean_confidence, 3) for r in rows],
                              TABLE_HEADERS[3]: [round(100 * r.noisy_share, 2) for r in rows]})
        noise_file = self._write_noise(state["dir"], state["stem"], noisy, threshold)
        return (annotated, render.noise_overlay(rgb, noisy_disp, opacity), compare,
                render.difference_view(rgb, raw, label, self.palette), render.confidence_heatmap(state["confidence"]),
                table, text.result_status(self, state, noisy, threshold), noise_file)

    # -- batch ---------------------------------------------------------------------------------
    def segment_batch(self, file_lists: list[list[str] | None]):
        """``batch=True`` handler: each element is one request's list of files. All images of all
        queued requests go through the predictor together; a bad file becomes a row in its
        request's table and the rest carry on."""
        jobs: list[tuple[int, int, str, np.ndarray]] = []
        rows: list[list[list[Any]]] = [[] for _ in file_lists]
        failures = [0] * len(file_lists)
        for r, files in enumerate(file_lists):
            files = list(files or [])
            if len(files) > BATCH_MAX_FILES:
                rows[r].append([f"{len(files)} files", "", f"error: at most {BATCH_MAX_FILES} files per batch; "
                                "split them, or use prnseg label for folders", "", "", ""])
                failures[r] += len(files)
                continue
            for path in files:
                try:
                    jobs.append((r, len(rows[r]), path, read_upload(path, self.max_pixels)))
                    rows[r].append([])
                except DemoInputError as exc:
                    log.warning("batch: %s", exc)
                    rows[r].append([Path(path).name, "", f"error: {exc}", "", "", ""])
                    failures[r] += 1
        preds, seconds = self._predict_each([j[3] for j in jobs])
        overlays: list[list] = [[] for _ in file_lists]
        noises: list[list] = [[] for _ in file_lists]
        archives: list[list[tuple[str, bytes]]] = [[] for _ in file_lists]
        used: list[set[str]] = [set() for _ in file_lists]
        for (r, row, path, rgb), pred in zip(jobs, preds):
            name = Path(path).name
            if isinstance(pred, Exception):
                rows[r][row] = [name, f"{rgb.shape[1]} x {rgb.shape[0]}", f"error: {name}: {pred}", "", "", ""]
                failures[r] += 1
                continue
            stem = Path(path).stem
            while stem in used[r]:
                stem += "_"
            used[r].add(stem)
            noisy = np.asarray(pred.noise_at(self.noise_threshold), dtype=bool)
            dhw = render.display_size(*rgb.shape[:2], max_side=BATCH_DISPLAY_SIDE)
            small = render.resize_image(rgb, dhw)
            overlays[r].append((render.colour_overlay(small, render.resize_plane(pred.label, dhw), self.palette, 0.55),
                                name))
            noises[r].append((render.noise_overlay(small, render.resize_plane(noisy.astype(np.uint8), dhw) > 0, 0.8),
                              name))
            top = render.class_rows(pred.label, pred.confidence, noisy, self.classes)[:3]
            rows[r][row] = [name, f"{rgb.shape[1]} x {rgb.shape[0]}", "ok", round(100 * float(noisy.mean()), 2),
                            round(100 * float(np.mean(pred.label != pred.raw_label)), 2),
                            ", ".join(f"{t.name} {100 * t.pixel_share:.0f}%" for t in top)]
            archives[r].append((f"labels/{stem}.png", encode_palette_png(pred.label, self.palette)))
            archives[r].append((f"noise/{stem}.png", encode_image(noisy.astype(np.uint8) * 255, ".png")))
        per_image = seconds / max(1, len(jobs)) * 1000
        n_run = sum(not isinstance(p, Exception) for p in preds)
        statuses, zips = [], []
        for r in range(len(file_lists)):
            statuses.append(text.batch_status(self, len(overlays[r]), failures[r], per_image, n_run))
            zips.append(self._write_zip(archives[r]) if archives[r] else None)
        return overlays, noises, rows, statuses, zips

    def _predict_each(self, images: list[np.ndarray]) -> tuple[list[Any], float]:
        """Predictions for a batch; when the batch fails, each image alone, so one image's failure
        is that image's row (its exception in the list) and the others still run."""
        if not images:
            return [], 0.0
        start = time.perf_counter()
        try:
            return list(self.predictor.predict(images)), time.perf_counter() - start
        except Exception:
            log.exception("batch inference failed; running its images one by one")
        preds: list[Any] = []
        for img in images:
            try:
                preds.append(self.predictor.predict([img])[0])
            except Exception as exc:
                log.warning("batch: inference failed on one image: %s", exc)
                preds.append(DemoInputError(f"inference failed ({type(exc).__name__}: {exc})"))
        return preds, time.perf_counter() - start

    def _write_zip(self, members: list[tuple[str, bytes]]) -> str:
        path = self._request_dir() / "prnseg_batch_labels.zip"
        with atomic_writer(path) as f, zipfile.ZipFile(f, "w", compression=zipfile.ZIP_STORED) as zf:
            for name, data in members:
                zf.writestr(name, data)
        return str(path)
