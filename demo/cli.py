"""``prnseg demo``: serve the Gradio demo for an exported model on this machine.

It binds to 127.0.0.1 unless told otherwise and never opens a public share link: the demo is
for looking at a model, not for publishing it.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from prnseg.demo import QUICKSTART_MODEL_DIR
from prnseg.errors import PrnsegError


class DemoError(PrnsegError):
    """The demo cannot start: no model, Gradio missing, or the port is taken."""


def add_demo_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", type=Path, default=None, metavar="MODEL_DIR",
                        help=f"exported model directory (prnseg export); default: {QUICKSTART_MODEL_DIR} "
                             "when prnseg quickstart has written it")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to bind (default 127.0.0.1: this machine only; 0.0.0.0 exposes it "
                             "to the network)")
    parser.add_argument("--port", type=int, default=7860, help="port (default 7860)")
    parser.add_argument("--backend", default="auto", choices=("auto", "onnxruntime", "tensorrt"),
                        help="runtime for the model (default auto: TensorRT engine if one fits, else ONNX Runtime)")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N (default auto)")
    parser.add_argument("--precision", default="fp32", choices=("fp32", "fp16"), help="default fp32")
    parser.add_argument("--max-pixels", type=int, default=None, metavar="N",
                        help="refuse uploads larger than N pixels (default 16000000)")


def resolve_model_dir(model: Path | None) -> Path:
    """``--model`` as given, else the quickstart's model, else a one-line error saying how to make one."""
    if model is not None:
        return model
    if (QUICKSTART_MODEL_DIR / "model.json").is_file():
        return QUICKSTART_MODEL_DIR
    raise DemoError(f"no model given and no quickstart model at ./{QUICKSTART_MODEL_DIR}; run prnseg quickstart, "
                    "or prnseg export CHECKPOINT --out DIR and then prnseg demo --model DIR")


def run_demo(args: argparse.Namespace) -> int:
    model_dir = resolve_model_dir(args.model)
    if not 0 < args.port < 65536:
        raise DemoError(f"--port {args.port} is not a valid port; use 1..65535 (default 7860)")
    try:
        from prnseg.demo import app as demo_app
    except ImportError as exc:
        raise DemoError(f"the demo needs Gradio ({exc}); install it with pip install 'prnseg[demo]'") from None
    max_pixels = args.max_pixels if args.max_pixels is not None else demo_app.DEFAULT_MAX_PIXELS
    if max_pixels <= 0:
        raise DemoError(f"--max-pixels {max_pixels} must be positive")
    app = demo_app.build_app(model_dir, max_pixels=max_pixels, backend=args.backend, device=args.device,
                             precision=args.precision)
    core = app.prnseg_core
    print(f"prnseg demo: model {model_dir} on {core.predictor.provider}", flush=True)
    try:
        demo_app.launch(app, host=args.host, port=args.port, prevent_thread_lock=True, quiet=True)
    except OSError as exc:
        reason = "the port is in use" if "empty port" in str(exc) else str(exc)
        raise DemoError(f"cannot serve on {args.host}:{args.port} ({reason}); pass a free --port or another --host") \
            from None
    print(f"prnseg demo: open {app.local_url}  (Ctrl+C to stop)", flush=True)
    try:
        app.block_thread()
    finally:
        app.close()
    print("prnseg demo: stopped", file=sys.stderr)
    return 0
