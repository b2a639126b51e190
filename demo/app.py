"""The Gradio app: one image (or a batch) in, the refined segmentation, noise mask, what the PRN
changed and the confidence out, all computed by ``prnseg.serve.Predictor`` on the exported model.

The model runs once per image; the opacity and noise-threshold sliders re-render from the cached
``Prediction`` (``noise_prob`` travels with it, so any threshold needs no second pass). Every
model call shares one queue slot (``concurrency_id="model"``) so one GPU is never oversubscribed.
"""

from __future__ import annotations

import atexit
import logging
import os
import shutil
import tempfile
import threading
import time
import uuid
import zipfile
from collections import OrderedDict
from pathlib import Path
from typing import Any

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import gradio as gr  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import PIL.Image  # noqa: E402

from prnseg.demo import EXAMPLES_DIR  # noqa: E402
from prnseg.demo import render  # noqa: E402
from prnseg.errors import PrnsegError  # noqa: E402
from prnseg.serve.image_io import (  # noqa: E402
    IMAGE_EXTENSIONS, atomic_write_bytes, encode_image, encode_palette_png, image_header_size, read_image,
)

log = logging.getLogger("prnseg.demo")

DEFAULT_MAX_PIXELS = 16_000_000
MAX_UPLOAD_SIZE = "100mb"
BATCH_MAX_FILES = 32
BATCH_DISPLAY_SIDE = 640
KEEP_DOWNLOADS_S = 3600
# Bytes read to find an image's size: a JPEG's EXIF and ICC segments come before its size.
HEADER_BYTES = 4 << 20
# What the server keeps per visitor between a model call and the slider re-renders.
SESSION_MAX_ITEMS = 32
SESSION_MAX_BYTES = 1 << 30
SESSION_MAX_AGE_S = 3600
READY_STATUS = "Upload an image or pick an example (a click runs it), then press **Segment**."
# An image whose area is below this share of the model's input is upscaled a lot: say so.
SMALL_IMAGE_SHARE = 1 / 16
ACCEPTED = ", ".join(e.lstrip(".").upper() for e in IMAGE_EXTENSIONS if e not in (".jpeg", ".tif"))

THEME = gr.themes.Soft(primary_hue="indigo", secondary_hue="fuchsia", neutral_hue="slate",
                       font=["ui-sans-serif", "system-ui", "sans-serif"],
                       font_mono=["ui-monospace", "monospace"])
CSS = """
.gradio-container {max-width: 1400px !important; margin: auto;}
#status {min-height: 3.5em;}
#segmentation .legend-item {font-size: 0.85rem;}
.street-gallery .thumbnail-item {aspect-ratio: 2 / 1 !important;}
footer {display: none !important;}
"""

TABLE_HEADERS = ["class", "pixel share %", "mean confidence", "noisy share %"]
BATCH_HEADERS = ["file", "size", "status", "noisy %", "relabelled %", "main classes"]


class DemoInputError(PrnsegError):
    """An upload the demo cannot use: wrong type, too large or undecodable (shown in the page)."""


def example_images() -> list[Path]:
    """The bundled synthetic target-domain examples (day, then night)."""
    return sorted(EXAMPLES_DIR.glob("*.jpg"), key=lambda p: (not p.name.startswith("day"), p.name))


def upload_size(path: str | os.PathLike, max_pixels: int) -> tuple[int, int]:
    """(height, width) of an upload from its header alone, or a one-line :class:`DemoInputError`
    naming the file: wrong type, damaged header, too many pixels."""
    p = Path(path)
    name = p.name
    if p.suffix.lower() not in IMAGE_EXTENSIONS:
        kind = f"'{p.suffix}'" if p.suffix else "without an extension"
        raise DemoInputError(f"{name}: wrong file type ({kind}); upload a {ACCEPTED} image")
    try:
        nbytes = p.stat().st_size
        with open(p, "rb") as f:
            head = f.read(HEADER_BYTES)
    except OSError as exc:
        raise DemoInputError(f"{name}: cannot read the upload ({exc.strerror}); upload it again") from None
    if nbytes > 8 * max_pixels + (1 << 20):
        raise DemoInputError(f"{name}: file too large ({nbytes / 1e6:.1f} MB for an image of at most "
                             f"{max_pixels / 1e6:.1f} MP); downscale it or start the demo with a larger --max-pixels")
    size = image_header_size(head)
    if size is None:
        raise DemoInputError(f"{name}: not a readable image (its header is damaged, or it is not really "
                             f"{p.suffix.lower()}); upload a valid {ACCEPTED} image")
    height, width = size
    if width * height > max_pixels:
        raise DemoInputError(f"{name}: image too large ({width} x {height} = {width * height / 1e6:.1f} MP; this "
                             f"demo accepts up to {max_pixels / 1e6:.1f} MP); downscale it or start the demo "
                             "with a larger --max-pixels")
    return size


def read_upload(path: str | os.PathLike, max_pixels: int) -> np.ndarray:
    """An uploaded file -> RGB uint8, or a one-line :class:`DemoInputError` naming the file.

    The size comes from the header before any decode: an oversized image, or one whose header
    cannot be read, is refused without allocating it (no fallback decode).
    """
    upload_size(path, max_pixels)
    name = Path(path).name
    try:
        return read_image(path, max_pixels=max_pixels)
    except PrnsegError as exc:
        reason = getattr(exc, "reason", str(exc))
        raise DemoInputError(f"{name}: {reason}; upload a valid {ACCEPTED} image") from None
    except Exception as exc:  # a decoder failure on a file whose header looked fine
        raise DemoInputError(f"{name}: not a decodable image ({type(exc).__name__}); upload a valid {ACCEPTED} "
                             "image") from None


def upload_path(value) -> str | None:
    """The file behind an image input. The demo's events skip Gradio's preprocessing (which opens
    every image upload with PIL and answers a failure with a bare 'Error'), so the payload comes
    raw: a FileData dict, or a path; :func:`read_upload` then judges the file as the batch tab does."""
    if value is None or isinstance(value, str):
        return value or None
    path = value.get("path") if isinstance(value, dict) else getattr(value, "path", None)
    return str(path) if path else None


class SessionStore:
    """Per-visitor results kept between a model call and the slider re-renders, bounded in count,
    bytes and age: the oldest entries go first, and an evicted or expired one reads as None."""

    def __init__(self, max_items: int, max_bytes: int, max_age_s: float, clock=time.monotonic):
        self.max_items, self.max_bytes, self.max_age_s, self.clock = max_items, max_bytes, max_age_s, clock
        self._items: OrderedDict[str, tuple[float, int, Any]] = OrderedDict()
        self._lock = threading.Lock()
        self.nbytes = 0

    def __len__(self) -> int:
        return len(self._items)

    def put(self, key: str, value: Any, nbytes: int = 0) -> None:
        with self._lock:
            self._drop(key)
            self._items[key] = (self.clock(), int(nbytes), value)
            self.nbytes += int(nbytes)
            self._evict()

    def get(self, key: str | None) -> Any:
        with self._lock:
            self._evict()
            item = self._items.get(key) if key else None
            return None if item is None else item[2]

    def _drop(self, key: str) -> None:
        item = self._items.pop(key, None)
        if item is not None:
            self.nbytes -= item[1]

    def _evict(self) -> None:
        now = self.clock()
        while self._items:
            key, (born, nbytes, _) = next(iter(self._items.items()))
            if (len(self._items) > self.max_items or self.nbytes > self.max_bytes
                    or now - born > self.max_age_s):
                self._drop(key)
            else:
                break


def state_bytes(state: dict) -> int:
    """Bytes held by a cached result's arrays (the prediction's planes and the display copies)."""
    arrays = [v for v in state.values() if isinstance(v, np.ndarray)]
    pred = state.get("pred")
    arrays += [v for v in vars(pred).values() if isinstance(v, np.ndarray)] if pred is not None else []
    return sum(a.nbytes for a in arrays)


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
        # "prn_refined": the labels are the PRN's; "segmenter": the teacher's, the PRN only flags noise
        self.refines = self.spec.raw.get("label_source", "prn_refined") == "prn_refined"
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
        return ("Refined segmentation (the PRN's labels)" if self.refines
                else "Segmentation (the teacher's labels; this model does not refine them)")

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
            return READY_STATUS
        try:
            h, w = upload_size(image_path, self.max_pixels)
        except DemoInputError as exc:
            log.warning("rejected upload: %s", exc)
            gr.Warning(str(exc), duration=None)
            return f"**Not usable:** {exc}"
        return f"**{Path(image_path).name}** ({w} × {h} px) is ready: press **Segment**." + self.small_image_note(h, w)

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
                table, self.status(state, noisy, threshold), noise_file)

    def small_image_note(self, height: int, width: int) -> str:
        """A warning for an image far below the model's input size, else ''."""
        b = self.spec.place(height, width).bucket
        if height * width >= SMALL_IMAGE_SHARE * b.height * b.width:
            return ""
        return (f"  \n⚠ This image is far smaller than the model's input ({b.height} × {b.width} px): it is "
                f"upscaled {min(b.height / height, b.width / width):.0f}×, so the result says little about it.")

    def status(self, state: dict, noisy: np.ndarray, threshold: float) -> str:
        pred = state["pred"]
        h, w = state["size"]
        if self.refines:
            labels = f"the PRN relabelled **{float(np.mean(pred.label != pred.raw_label)) * 100:.2f} %** of the pixels"
        else:
            labels = "labels are the teacher's (this model does not refine them)"
        source = ("the PRN's noise head" if self.spec.noise_source == "prn"
                  else "1 − confidence (this model has no PRN)")
        lo, hi = render.confidence_range(pred.confidence)
        return (f"**{state['name']}** · {w} × {h} px · inference **{state['seconds'] * 1000:.1f} ms** "
                f"on {self.predictor.provider}  \n"
                f"{labels[0].upper() + labels[1:]} · **{100 * float(noisy.mean()):.2f} %** flagged "
                f"noisy at threshold {threshold:.2f} (model default {self.spec.noise_threshold:.2f}; "
                f"noise from {source}) · confidence {lo:.2f}–{hi:.2f}" + self.small_image_note(h, w))

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
            noisy = np.asarray(pred.noise_at(self.spec.noise_threshold), dtype=bool)
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
            n_ok = len(overlays[r])
            if not n_ok and not failures[r]:
                statuses.append("No images: add one or more files above.")
            else:
                statuses.append(f"**{n_ok}** image(s) segmented, **{failures[r]}** rejected · "
                                f"{per_image:.1f} ms per image ({n_run} image(s) in this model call) on "
                                f"{self.predictor.provider} · noise threshold {self.spec.noise_threshold:.2f}")
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
        tmp = path.with_name(f".{path.name}.tmp")
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED) as zf:
            for name, data in members:
                zf.writestr(name, data)
        os.replace(tmp, path)
        return str(path)


def _load_predictor(model_dir, backend: str, device: str, precision: str):
    from prnseg.serve import Predictor

    return Predictor(model_dir, backend=backend, device=device, precision=precision)


def _model_line(core: DemoCore) -> str:
    spec = core.spec
    ckpt = spec.raw.get("checkpoint") or {}
    parts = [f"**model** `{spec.name}`"]
    if ckpt.get("arch") or ckpt.get("config"):
        parts.append(f"{ckpt.get('arch', '?')} / {ckpt.get('config', '?')}")
    if ckpt.get("iteration") is not None:
        parts.append(f"iteration {ckpt['iteration']}")
    parts.append(f"{len(spec.classes)} classes")
    parts.append("buckets " + ", ".join(f"{b.height}×{b.width}" for b in spec.buckets))
    parts.append("noise mask from the PRN" if spec.noise_source == "prn" else "no PRN: noise = low confidence")
    parts.append(f"runs on {core.predictor.provider}")
    return " · ".join(parts)


def explanation(core: DemoCore) -> str:
    """The "what am I looking at" panel, worded for what this model writes."""
    if core.refines:
        labels = ("**Segmentation**: the class of every pixel, as the PRN (pseudo-label refinement network) "
                  "refined the teacher's prediction. **PRN changes** shows the pixels where it changed the "
                  "teacher's class.")
    else:
        labels = ("**Segmentation**: the class of every pixel, as the adapted model (the EMA teacher) predicts "
                  "it. This model does not refine its labels (it was trained with `prn.use_refined_labels=false`), "
                  "so there is no PRN-changes view: the PRN only flags noisy pixels.")
    noise = ("the PRN's estimate that a pixel's label is wrong" if core.spec.noise_source == "prn"
             else "1 − the model's confidence (this model has no PRN)")
    return (
        "This model was adapted from labelled synthetic or game images (the *source*) to a new domain without its "
        "labels (the *target*, e.g. real streets or night): it labels target images so that they can train a "
        "model. Not every label is right, so it also marks the ones to distrust.\n\n"
        f"- {labels}\n"
        f"- **Noise mask**: the pixels flagged as probably mislabelled (magenta), from {noise}; the *noise "
        "threshold* slider moves the cut-off without running the model again. A training run ignores these "
        "pixels.\n"
        "- **Confidence**: the top class probability per pixel, contrast-stretched to the range in this image "
        "(the scale under it gives the values).\n\n"
        "What to look at: pick an example below (it runs at once) or upload a street image, then compare the "
        "noise mask with the segmentation: flags should sit on object borders, small and rare classes and "
        "regions the model gets wrong. Images far smaller than the model's input "
        f"({' or '.join(f'{b.height} × {b.width}' for b in core.spec.buckets)} px) say little.")


def build_app(predictor_or_model_dir, *, max_pixels: int = DEFAULT_MAX_PIXELS, backend: str = "auto",
              device: str = "auto", precision: str = "fp32", warm_up: bool = True,
              workdir: str | os.PathLike | None = None, sessions: SessionStore | None = None) -> gr.Blocks:
    """The demo as a ``gr.Blocks`` (not launched). Pass a ``Predictor`` or an exported model
    directory (``backend``/``device``/``precision`` then choose the runtime). Launch it with
    :func:`launch` so the theme and upload limit apply."""
    if isinstance(predictor_or_model_dir, (str, os.PathLike)):
        predictor = _load_predictor(predictor_or_model_dir, backend, device, precision)
    else:
        predictor = predictor_or_model_dir
    core = DemoCore(predictor, max_pixels=max_pixels, workdir=workdir, sessions=sessions)
    if warm_up:
        core.warm_up()
    spec = core.spec
    colour_map = {name: render.hex_colour(c) for name, c in zip(spec.classes, spec.palette)}
    examples = [[str(p)] for p in example_images()]

    with gr.Blocks(title="prnseg demo", delete_cache=(3600, 3600)) as app:
        gr.Markdown("## prnseg · domain-adapted segmentation with pseudo-label refinement\n" + _model_line(core))
        with gr.Accordion("What am I looking at?", open=True, elem_id="explain"):
            gr.Markdown(explanation(core))
        with gr.Tabs():
            with gr.Tab("Single image", id="single"):
                state = gr.State(None, time_to_live=SESSION_MAX_AGE_S)
                with gr.Row(equal_height=False):
                    with gr.Column(scale=2, min_width=320):
                        image_in = gr.Image(type="filepath", image_mode=None, sources=["upload", "clipboard"],
                                            label="Target-domain image", height=280, elem_id="input-image")
                        run_btn = gr.Button("Segment", variant="primary", elem_id="run")
                        example_box = None
                        if examples:
                            example_box = gr.Examples(examples, inputs=[image_in], examples_per_page=len(examples),
                                                      label="Examples: synthetic target-domain scenes (day and "
                                                            "night); a click runs one", elem_id="examples")
                        label_file = gr.File(label="Label PNG (palette PNG: pixel values are trainIds)",
                                             interactive=False, height=110, elem_id="label-file", visible=False)
                        noise_file = gr.File(label="Noise PNG at the current threshold (255 = noisy)",
                                             interactive=False, height=110, elem_id="noise-file", visible=False)
                    with gr.Column(scale=3, min_width=480):
                        with gr.Tabs():
                            with gr.Tab("Segmentation"):
                                annotated = gr.AnnotatedImage(label=core.label_title + " · hover a class to "
                                                              "highlight it", color_map=colour_map, format="png",
                                                              height=400, elem_id="segmentation")
                            with gr.Tab("Noise mask"):
                                noise_img = gr.Image(label="Pixels flagged noisy (magenta)", format="png",
                                                     interactive=False, height=400, elem_id="noise")
                            with gr.Tab("PRN changes", visible=core.refines, elem_id="prn-changes"):
                                compare = gr.ImageSlider(label="Teacher's raw labels (left) vs refined (right)",
                                                         format="png", interactive=False, max_height=300)
                                diff_img = gr.Image(label="Pixels the PRN relabelled, in their refined class colour",
                                                    format="png", interactive=False, height=300, elem_id="diff")
                            with gr.Tab("Confidence"):
                                conf_img = gr.Image(label="Confidence of the label (max softmax), auto-contrast: "
                                                          "the scale below gives the values",
                                                    format="png", interactive=False, height=400,
                                                    elem_id="confidence")
                        with gr.Row():
                            opacity = gr.Slider(0.0, 1.0, value=0.55, step=0.05, label="Overlay opacity",
                                                info="of the class colours and the noise tint")
                            threshold = gr.Slider(0.0, 1.0, value=round(spec.noise_threshold, 2), step=0.01,
                                                  label="Noise threshold",
                                                  info="pixels whose noise probability is at least this are flagged")
                        status = gr.Markdown(READY_STATUS, elem_id="status")
                table = gr.Dataframe(headers=TABLE_HEADERS, datatype=["str", "number", "number", "number"],
                                     label="Per class (largest first; noisy share at the current threshold)",
                                     interactive=False, max_height=320, elem_id="class-table")
            with gr.Tab("Batch", id="batch"):
                with gr.Row(equal_height=False):
                    with gr.Column(scale=1, min_width=300):
                        batch_in = gr.File(file_count="multiple", label="Images",
                                           elem_id="batch-files")
                        batch_btn = gr.Button("Segment all", variant="primary", elem_id="run-batch")
                        batch_status = gr.Markdown(f"Up to {BATCH_MAX_FILES} images ({ACCEPTED}) per run; they "
                                                   f"go through the model {spec.max_batch} at a time.")
                        batch_zip = gr.File(label="Label and noise PNGs (zip)", interactive=False)
                    with gr.Column(scale=3):
                        gallery = gr.Gallery(label=core.label_title, columns=2, height="auto", format="png",
                                             object_fit="contain", elem_id="batch-gallery",
                                             elem_classes=["street-gallery"])
                        noise_gallery = gr.Gallery(label="Noise mask (magenta)", columns=2, height="auto", format="png",
                                                   object_fit="contain", elem_classes=["street-gallery"])
                        batch_table = gr.Dataframe(headers=BATCH_HEADERS, label="Per image", interactive=False)

        views = [annotated, noise_img, compare, diff_img, conf_img, table, status, noise_file]
        outputs = [*views, label_file, state]
        image_in.upload(core.check_upload, [image_in], [status], api_visibility="private", concurrency_limit=None,
                        preprocess=False)
        run = run_btn.click(core.segment, [image_in, opacity, threshold], outputs, preprocess=False,
                            api_name="segment", concurrency_id="model", concurrency_limit=1)
        runs = [run]
        if example_box is not None:
            runs.append(example_box.load_input_event.then(core.segment, [image_in, opacity, threshold], outputs,
                                                          preprocess=False, api_visibility="private",
                                                          concurrency_id="model", concurrency_limit=1))
        for event in runs:  # the download boxes show only with a result
            event.success(lambda: [gr.update(visible=True)] * 2, None, [label_file, noise_file],
                          api_visibility="private", queue=False)
            event.failure(core.failed, None, outputs, api_visibility="private", queue=False)
        for slider in (opacity, threshold):
            slider.release(core.render, [state, opacity, threshold], views, api_visibility="private",
                           concurrency_id="render", concurrency_limit=2, trigger_mode="always_last")
        batch_btn.click(core.segment_batch, [batch_in], [gallery, noise_gallery, batch_table, batch_status, batch_zip],
                        api_name="segment_batch", batch=True, max_batch_size=max(1, spec.max_batch),
                        concurrency_id="model", concurrency_limit=1)
        app.queue(default_concurrency_limit=1, max_size=64)
    app.prnseg_core = core
    return app


def launch(app: gr.Blocks, *, host: str = "127.0.0.1", port: int | None = 7860, prevent_thread_lock: bool = False,
           quiet: bool = False, auth: tuple[str, str] | None = None):
    """Start the server (never a public share link) with the demo's theme and upload limit;
    ``auth`` = (user, password) puts a login page in front of it."""
    return app.launch(server_name=host, server_port=port, share=False, prevent_thread_lock=prevent_thread_lock,
                      quiet=quiet, show_error=False, theme=THEME, css=CSS, max_file_size=MAX_UPLOAD_SIZE,
                      inbrowser=False, auth=auth)
