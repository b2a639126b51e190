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
import time
import uuid
import zipfile
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
    IMAGE_EXTENSIONS, atomic_write_bytes, encode_image, encode_palette_png, read_image,
)

log = logging.getLogger("prnseg.demo")

DEFAULT_MAX_PIXELS = 16_000_000
MAX_UPLOAD_SIZE = "100mb"
BATCH_MAX_FILES = 32
BATCH_DISPLAY_SIDE = 640
KEEP_DOWNLOADS_S = 3600
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


def read_upload(path: str | os.PathLike, max_pixels: int) -> np.ndarray:
    """An uploaded file -> RGB uint8, or a one-line :class:`DemoInputError` naming the file.

    The size is read from the header before decoding, so an oversized image is refused without
    allocating it.
    """
    p = Path(path)
    name = p.name
    if p.suffix.lower() not in IMAGE_EXTENSIONS:
        kind = f"'{p.suffix}'" if p.suffix else "without an extension"
        raise DemoInputError(f"{name}: wrong file type ({kind}); upload a {ACCEPTED} image")
    try:
        with PIL.Image.open(p) as im:
            width, height = im.size
    except PIL.Image.DecompressionBombError:
        raise DemoInputError(f"{name}: image too large to open safely; downscale it") from None
    except (OSError, ValueError, SyntaxError):
        width = height = None
    if width is not None and width * height > max_pixels:
        raise DemoInputError(f"{name}: image too large ({width} x {height} = {width * height / 1e6:.1f} MP; this "
                             f"demo accepts up to {max_pixels / 1e6:.1f} MP); downscale it or start the demo "
                             "with a larger --max-pixels")
    try:
        rgb = read_image(p)
    except PrnsegError as exc:
        reason = getattr(exc, "reason", str(exc))
        raise DemoInputError(f"{name}: {reason}; upload a valid {ACCEPTED} image") from None
    if rgb.shape[0] * rgb.shape[1] > max_pixels:
        raise DemoInputError(f"{name}: image too large ({rgb.shape[1]} x {rgb.shape[0]}; this demo accepts up to "
                             f"{max_pixels / 1e6:.1f} MP); downscale it or start the demo with a larger --max-pixels")
    return rgb


def readable_upload_errors(component: gr.Image) -> gr.Image:
    """Make an image input turn an undecodable or wrong-type upload into a readable message in the
    page instead of a bare 'Error' (Gradio opens every upload with PIL before the handler runs).

    Wraps the instance's ``preprocess``: a ``gr.Image`` subclass would make Gradio write a ``.pyi``
    stub next to this module on import, which fails in a read-only install.
    """
    original = component.preprocess

    def preprocess(payload):
        try:
            return original(payload)
        except gr.Error:
            raise
        except Exception as exc:  # any decoder failure is a user-input problem here
            name = getattr(payload, "orig_name", None) or Path(getattr(payload, "path", "") or "upload").name
            suffix = Path(name).suffix.lower()
            if isinstance(exc, PIL.Image.DecompressionBombError):
                message = f"{name}: image too large to open safely ({exc}); downscale it"
            elif suffix not in IMAGE_EXTENSIONS:
                message = f"{name}: wrong file type ('{suffix or 'no extension'}'); upload a {ACCEPTED} image"
            else:
                message = f"{name}: not a readable image (corrupt or not really {suffix}); upload a valid {ACCEPTED} image"
            log.warning("rejected upload: %s (%s)", message, exc)
            raise gr.Error(message, print_exception=False) from None

    component.preprocess = preprocess
    return component


def _user_error(exc: Exception) -> gr.Error:
    log.warning("rejected input: %s", exc)
    return gr.Error(str(exc), print_exception=False)


class DemoCore:
    """Everything the page does, without the page: reads uploads, runs the predictor, renders
    the views and writes the downloads (atomically, into a private temporary folder)."""

    def __init__(self, predictor, max_pixels: int = DEFAULT_MAX_PIXELS, workdir: str | os.PathLike | None = None):
        self.predictor = predictor
        self.spec = predictor.spec
        self.classes = list(self.spec.classes)
        self.palette = [list(c) for c in self.spec.palette]
        self.max_pixels = int(max_pixels)
        if workdir is None:
            workdir = tempfile.mkdtemp(prefix="prnseg-demo-")
            atexit.register(shutil.rmtree, workdir, True)
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)

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
                           print_exception=False) from None
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
    def segment(self, image_path: str | None, opacity: float, threshold: float):
        """Run the model on one upload; returns the views, the table, the status, both downloads
        and the state that the sliders re-render from."""
        if not image_path:
            raise gr.Error("No image: upload one or pick an example first.", print_exception=False)
        try:
            rgb = read_upload(image_path, self.max_pixels)
        except DemoInputError as exc:
            raise _user_error(exc) from None
        (pred,), seconds = self._predict([rgb])
        stem = Path(image_path).stem
        dhw = render.display_size(*rgb.shape[:2])
        state = {"name": Path(image_path).name, "stem": stem, "size": rgb.shape[:2], "seconds": seconds,
                 "pred": pred, "rgb": render.resize_image(rgb, dhw),
                 "label": render.resize_plane(pred.label, dhw),
                 "raw": render.resize_plane(pred.raw_label, dhw),
                 "confidence": render.resize_plane(pred.confidence, dhw),
                 "dir": self._request_dir()}
        label_file = self._write_label(state["dir"], stem, pred.label)
        return (*self.render(state, opacity, threshold), label_file, state)

    def render(self, state: dict | None, opacity: float, threshold: float):
        """The views of a cached prediction at this opacity and noise threshold (no model call)."""
        if not state:
            return (None,) * 6 + ("Press **Segment** first; the sliders re-render its result.", None)
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

    def status(self, state: dict, noisy: np.ndarray, threshold: float) -> str:
        pred = state["pred"]
        h, w = state["size"]
        changed = float(np.mean(pred.label != pred.raw_label)) * 100
        source = ("the PRN's noise head" if self.spec.noise_source == "prn"
                  else "1 − confidence (this model has no PRN)")
        return (f"**{state['name']}** · {w} × {h} px · inference **{state['seconds'] * 1000:.1f} ms** "
                f"on {self.predictor.provider}  \n"
                f"PRN relabelled **{changed:.2f} %** of the pixels · **{100 * float(noisy.mean()):.2f} %** flagged "
                f"noisy at threshold {threshold:.2f} (model default {self.spec.noise_threshold:.2f}; "
                f"noise from {source})")

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
        preds, seconds = self._predict([j[3] for j in jobs]) if jobs else ([], 0.0)
        overlays: list[list] = [[] for _ in file_lists]
        noises: list[list] = [[] for _ in file_lists]
        archives: list[list[tuple[str, bytes]]] = [[] for _ in file_lists]
        used: list[set[str]] = [set() for _ in file_lists]
        for (r, row, path, rgb), pred in zip(jobs, preds):
            name = Path(path).name
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
        statuses, zips = [], []
        for r in range(len(file_lists)):
            n_ok = len(overlays[r])
            if not n_ok and not failures[r]:
                statuses.append("No images: add one or more files above.")
            else:
                statuses.append(f"**{n_ok}** image(s) segmented, **{failures[r]}** rejected · "
                                f"{per_image:.1f} ms per image ({len(jobs)} image(s) in this model call) on "
                                f"{self.predictor.provider} · noise threshold {self.spec.noise_threshold:.2f}")
            zips.append(self._write_zip(archives[r]) if archives[r] else None)
        return overlays, noises, rows, statuses, zips

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


def build_app(predictor_or_model_dir, *, max_pixels: int = DEFAULT_MAX_PIXELS, backend: str = "auto",
              device: str = "auto", precision: str = "fp32", warm_up: bool = True,
              workdir: str | os.PathLike | None = None) -> gr.Blocks:
    """The demo as a ``gr.Blocks`` (not launched). Pass a ``Predictor`` or an exported model
    directory (``backend``/``device``/``precision`` then choose the runtime). Launch it with
    :func:`launch` so the theme and upload limit apply."""
    if isinstance(predictor_or_model_dir, (str, os.PathLike)):
        predictor = _load_predictor(predictor_or_model_dir, backend, device, precision)
    else:
        predictor = predictor_or_model_dir
    core = DemoCore(predictor, max_pixels=max_pixels, workdir=workdir)
    if warm_up:
        core.warm_up()
    spec = core.spec
    colour_map = {name: render.hex_colour(c) for name, c in zip(spec.classes, spec.palette)}
    examples = [[str(p)] for p in example_images()]

    with gr.Blocks(title="prnseg demo", delete_cache=(3600, 3600)) as app:
        gr.Markdown("## prnseg · domain-adapted segmentation with pseudo-label refinement\n" + _model_line(core))
        with gr.Tabs():
            with gr.Tab("Single image", id="single"):
                state = gr.State(None, time_to_live=KEEP_DOWNLOADS_S)
                with gr.Row(equal_height=False):
                    with gr.Column(scale=2, min_width=320):
                        image_in = readable_upload_errors(gr.Image(
                            type="filepath", image_mode=None, sources=["upload", "clipboard"],
                            label="Target-domain image", height=280, elem_id="input-image"))
                        run_btn = gr.Button("Segment", variant="primary", elem_id="run")
                        if examples:
                            gr.Examples(examples, inputs=[image_in], examples_per_page=len(examples),
                                        label="Examples: synthetic target-domain scenes (day and night)")
                        label_file = gr.File(label="Label PNG (palette PNG: pixel values are trainIds)",
                                             interactive=False, height=110, elem_id="label-file")
                        noise_file = gr.File(label="Noise PNG at the current threshold (255 = noisy)",
                                             interactive=False, height=110, elem_id="noise-file")
                    with gr.Column(scale=3, min_width=480):
                        with gr.Tabs():
                            with gr.Tab("Segmentation"):
                                annotated = gr.AnnotatedImage(label="Refined segmentation (hover a class to highlight it)",
                                                              color_map=colour_map, format="png", height=400,
                                                              elem_id="segmentation")
                            with gr.Tab("Noise mask"):
                                noise_img = gr.Image(label="Pixels flagged noisy (magenta)", format="png",
                                                     interactive=False, height=400, elem_id="noise")
                            with gr.Tab("PRN changes"):
                                compare = gr.ImageSlider(label="Teacher's raw labels (left) vs refined (right)",
                                                         format="png", interactive=False, max_height=300)
                                diff_img = gr.Image(label="Pixels the PRN relabelled, in their refined class colour",
                                                    format="png", interactive=False, height=300, elem_id="diff")
                            with gr.Tab("Confidence"):
                                conf_img = gr.Image(label="Confidence of the refined label (max softmax)",
                                                    format="png", interactive=False, height=400,
                                                    elem_id="confidence")
                        with gr.Row():
                            opacity = gr.Slider(0.0, 1.0, value=0.55, step=0.05, label="Overlay opacity",
                                                info="of the class colours and the noise tint")
                            threshold = gr.Slider(0.0, 1.0, value=round(spec.noise_threshold, 2), step=0.01,
                                                  label="Noise threshold",
                                                  info="pixels whose noise probability is at least this are flagged")
                        status = gr.Markdown("Upload an image or pick an example, then press **Segment**.",
                                             elem_id="status")
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
                        gallery = gr.Gallery(label="Refined segmentation", columns=2, height="auto", format="png",
                                             object_fit="contain", elem_id="batch-gallery",
                                             elem_classes=["street-gallery"])
                        noise_gallery = gr.Gallery(label="Noise mask (magenta)", columns=2, height="auto", format="png",
                                                   object_fit="contain", elem_classes=["street-gallery"])
                        batch_table = gr.Dataframe(headers=BATCH_HEADERS, label="Per image", interactive=False)

        views = [annotated, noise_img, compare, diff_img, conf_img, table, status, noise_file]
        run = run_btn.click(core.segment, [image_in, opacity, threshold], [*views, label_file, state],
                            api_name="segment", concurrency_id="model", concurrency_limit=1)
        run.failure(lambda: [None] * 6 + ["No result: the input was rejected (see the message).", None, None, None],
                    None, [*views, label_file, state], api_visibility="private", queue=False)
        for slider in (opacity, threshold):
            slider.release(core.render, [state, opacity, threshold], views, api_visibility="private", concurrency_id="render", concurrency_limit=2,
                           trigger_mode="always_last")
        batch_btn.click(core.segment_batch, [batch_in], [gallery, noise_gallery, batch_table, batch_status, batch_zip],
                        api_name="segment_batch", batch=True, max_batch_size=max(1, spec.max_batch),
                        concurrency_id="model", concurrency_limit=1)
        app.queue(default_concurrency_limit=1, max_size=64)
    app.prnseg_core = core
    return app


def launch(app: gr.Blocks, *, host: str = "127.0.0.1", port: int | None = 7860, prevent_thread_lock: bool = False,
           quiet: bool = False):
    """Start the server (never a public share link) with the demo's theme and upload limit."""
    return app.launch(server_name=host, server_port=port, share=False, prevent_thread_lock=prevent_thread_lock,
                      quiet=quiet, show_error=False, theme=THEME, css=CSS, max_file_size=MAX_UPLOAD_SIZE,
                      inbrowser=False)
