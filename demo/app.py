"""The Gradio app: one image (or a batch) in, the refined segmentation, noise mask, what the PRN
changed and the confidence out, all computed by ``prnseg.serve.Predictor`` on the exported model.

The model runs once per image; the opacity and noise-threshold sliders re-render from the cached
``Prediction`` (``noise_prob`` travels with it, so any threshold needs no second pass). Every
model call shares one queue slot (``concurrency_id="model"``) so one GPU is never oversubscribed.

This module is the entry (:func:`build_app`, :func:`launch`); the parts are
:mod:`~prnseg.demo.uploads` (what an upload may be), :mod:`~prnseg.demo.sessions` (what the server
keeps per visitor), :mod:`~prnseg.demo.core` (what the page does), :mod:`~prnseg.demo.text` (its
words), :mod:`~prnseg.demo.layout` (the components) and :mod:`~prnseg.demo.events` (their wiring).
"""

from __future__ import annotations

import os

from prnseg.demo import events, layout
from prnseg.demo._gr import gr
from prnseg.demo.core import (
    BATCH_DISPLAY_SIDE, BATCH_HEADERS, BATCH_MAX_FILES, KEEP_DOWNLOADS_S, TABLE_HEADERS, DemoCore,
)
from prnseg.demo.sessions import SESSION_MAX_AGE_S, SESSION_MAX_BYTES, SESSION_MAX_ITEMS, SessionStore, state_bytes
from prnseg.demo.text import READY_STATUS, SMALL_IMAGE_SHARE, explanation
from prnseg.demo.uploads import (
    ACCEPTED, DEFAULT_MAX_PIXELS, HEADER_BYTES, DemoInputError, example_images, read_upload, upload_path, upload_size,
)

__all__ = [
    "ACCEPTED", "BATCH_DISPLAY_SIDE", "BATCH_HEADERS", "BATCH_MAX_FILES", "CSS", "DEFAULT_MAX_PIXELS", "HEADER_BYTES",
    "KEEP_DOWNLOADS_S", "MAX_UPLOAD_SIZE", "READY_STATUS", "SESSION_MAX_AGE_S", "SESSION_MAX_BYTES",
    "SESSION_MAX_ITEMS", "SMALL_IMAGE_SHARE", "TABLE_HEADERS", "THEME", "DemoCore", "DemoInputError",
    "SessionStore", "build_app", "example_images", "explanation", "launch", "read_upload", "state_bytes",
    "upload_path", "upload_size",
]

MAX_UPLOAD_SIZE = "100mb"

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


def _load_predictor(model_dir, backend: str, device: str, precision: str, tta: bool, logit_adjustment):
    from prnseg.serve import Predictor

    return Predictor(model_dir, backend=backend, device=device, precision=precision, tta=tta,
                     logit_adjustment=logit_adjustment)


def build_app(predictor_or_model_dir, *, max_pixels: int = DEFAULT_MAX_PIXELS, backend: str = "auto",
              device: str = "auto", precision: str = "fp32", tta: bool = False, logit_adjustment: float | None = None,
              warm_up: bool = True, workdir: str | os.PathLike | None = None,
              sessions: SessionStore | None = None) -> gr.Blocks:
    """The demo as a ``gr.Blocks`` (not launched). Pass a ``Predictor`` or an exported model
    directory (``backend``/``device``/``precision``/``tta``/``logit_adjustment`` then choose the
    runtime, as ``Predictor``'s). Launch it with :func:`launch` so the theme and upload limit apply."""
    if isinstance(predictor_or_model_dir, (str, os.PathLike)):
        predictor = _load_predictor(predictor_or_model_dir, backend, device, precision, tta, logit_adjustment)
    else:
        predictor = predictor_or_model_dir
    core = DemoCore(predictor, max_pixels=max_pixels, workdir=workdir, sessions=sessions)
    if warm_up:
        core.warm_up()
    with gr.Blocks(title="prnseg demo", delete_cache=(3600, 3600)) as app:
        events.wire(core, layout.build_page(core))
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
