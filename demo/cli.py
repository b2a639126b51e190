"""``prnseg demo``: serve the Gradio demo for an exported model on this machine.

It binds to 127.0.0.1 unless told otherwise and never opens a public share link: the demo is
for looking at a model, not for publishing it.
"""

from __future__ import annotations

import argparse
import shutil
import signal
import sys
from pathlib import Path

from prnseg.checks import check_model_dir
from prnseg.defaults import default_of
from prnseg.demo import QUICKSTART_MODEL_DIR
from prnseg.demo.uploads import DEFAULT_MAX_PIXELS
from prnseg.errors import PrnsegError
from prnseg.serve.predictor import BACKENDS, PRECISIONS, Predictor
from prnseg.serve.tta import DEFAULT_LOGIT_ADJUSTMENT


class DemoError(PrnsegError):
    """The demo cannot start: no model, Gradio missing, or the port is taken."""


def add_demo_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", type=Path, default=None, metavar="MODEL_DIR",
                        help=f"exported model directory (prnseg export); default: {QUICKSTART_MODEL_DIR} "
                             "when prnseg quickstart has written it")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to bind (default 127.0.0.1: this machine only; another address, e.g. "
                             "0.0.0.0, exposes it to the network: add --auth)")
    parser.add_argument("--auth", default=None, metavar="USER:PASS",
                        help="require this user name and password (a login page in front of the demo)")
    parser.add_argument("--port", type=int, default=7860, help="port (default 7860)")
    parser.add_argument("--backend", default=default_of(Predictor, "backend"), choices=BACKENDS,
                        help="runtime for the model (default %(default)s; auto: TensorRT engine if one fits, else "
                             "ONNX Runtime)")
    parser.add_argument("--device", default=default_of(Predictor, "device"),
                        help="auto | cpu | cuda | cuda:N (default %(default)s)")
    parser.add_argument("--precision", default=default_of(Predictor, "precision"), choices=PRECISIONS,
                        help="default %(default)s")
    parser.add_argument("--max-pixels", type=int, default=DEFAULT_MAX_PIXELS, metavar="N",
                        help="refuse uploads larger than N pixels (default %(default)s)")
    parser.add_argument("--tta", action="store_true",
                        help="show the labels prnseg label --tta writes: the teacher averaged over 3 scales and their "
                             "mirrors, logit-adjusted by the model's class prior (six passes per image; ONNX Runtime, "
                             "fp32)")
    parser.add_argument("--logit-adjust", dest="logit_adjustment", type=float, default=None, metavar="TAU",
                        help=f"with --tta: the logit adjustment's tau (default {DEFAULT_LOGIT_ADJUSTMENT:g}; 0 = the "
                             "plain averaged argmax)")


def resolve_model_dir(model: Path | None) -> Path:
    """``--model`` as given, else the quickstart's model, else a one-line error saying how to make one."""
    if model is not None:
        return check_model_dir(model)
    if (QUICKSTART_MODEL_DIR / "model.json").is_file():
        return QUICKSTART_MODEL_DIR
    raise DemoError(f"no model given and no quickstart model at ./{QUICKSTART_MODEL_DIR}; run prnseg quickstart, "
                    "or prnseg export CHECKPOINT --out DIR and then prnseg demo --model DIR")


def is_local(host: str) -> bool:
    """True for a loopback address (127.0.0.0/8, ::1, localhost): this machine only."""
    import ipaddress

    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def parse_auth(text: str | None) -> tuple[str, str] | None:
    """``USER:PASS`` -> (user, password); both must be non-empty."""
    if text is None:
        return None
    user, sep, password = text.partition(":")
    if not sep or not user or not password:
        raise DemoError("--auth: expected USER:PASS with a non-empty user name and password, e.g. --auth me:s3cret")
    return user, password


def _stop_on_sigterm() -> None:
    """SIGTERM (a service manager, docker stop, kill) stops the demo as Ctrl+C does: the server
    closes and the downloads folder is removed."""
    def stop(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)


def run_demo(args: argparse.Namespace) -> int:
    model_dir = resolve_model_dir(args.model)
    if not 0 < args.port < 65536:
        raise DemoError(f"--port {args.port} is not a valid port; use 1..65535 (default 7860)")
    auth = parse_auth(args.auth)
    if not is_local(args.host):
        print(f"prnseg demo: warning: --host {args.host} exposes the demo (and the model) to the network"
              + ("; anyone who can reach it can upload images" if auth is None else ", behind --auth")
              + ("; add --auth USER:PASS to require a login" if auth is None else ""), file=sys.stderr, flush=True)
    try:
        from prnseg.demo import app as demo_app
    except ImportError as exc:
        raise DemoError(f"the demo needs Gradio ({exc}); install it with pip install 'prnseg[demo]'") from None
    if args.max_pixels <= 0:
        raise DemoError(f"--max-pixels {args.max_pixels} must be positive")
    if args.logit_adjustment is not None and not args.tta:
        raise DemoError("--logit-adjust adjusts the test-time augmented labels; add --tta (or drop it)")
    if args.logit_adjustment is not None and args.logit_adjustment < 0:
        raise DemoError(f"--logit-adjust must be >= 0, got {args.logit_adjustment}")
    app = demo_app.build_app(model_dir, max_pixels=args.max_pixels, backend=args.backend, device=args.device,
                             precision=args.precision, tta=args.tta, logit_adjustment=args.logit_adjustment)
    core = app.prnseg_core
    print(f"prnseg demo: model {model_dir} on {core.predictor.provider}", flush=True)
    try:
        demo_app.launch(app, host=args.host, port=args.port, prevent_thread_lock=True, quiet=True, auth=auth)
    except OSError as exc:
        reason = "the port is in use" if "empty port" in str(exc) else str(exc)
        raise DemoError(f"cannot serve on {args.host}:{args.port} ({reason}); pass a free --port or another --host") \
            from None
    _stop_on_sigterm()
    try:
        print(f"prnseg demo: open {app.local_url}  (Ctrl+C to stop)", flush=True)
        app.block_thread()
    except KeyboardInterrupt:
        pass    # Ctrl+C (or SIGTERM) before Gradio's own wait loop took over: the same clean stop
    finally:
        app.close()
        shutil.rmtree(core.workdir, ignore_errors=True)
    print("prnseg demo: stopped", file=sys.stderr)
    return 0
