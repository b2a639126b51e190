"""The ``prnseg`` command: one grammar, ``prnseg MODE [POSITIONAL] [--option value ...]``.

Each mode lives in the part of the package that implements it and exposes
``add_<mode>_arguments`` and ``run_<mode>`` (or plain ``add_arguments`` and ``run``); this module
only dispatches, importing a mode's module when that mode runs, so
``prnseg --help`` and the torch-free modes never pay for torch.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from prnseg import __version__
from prnseg.errors import PrnsegError, debug_enabled, print_debug_traceback
from prnseg.extras import missing_extra

# mode -> (module implementing it, one-line help). A mode is listed only once it works.
MODES: dict[str, tuple[str, str]] = {
    "quickstart": ("prnseg.quickstart", "start here: the main job end to end on the synthetic benchmark (synth, adapt, "
                                        "export, label, report)"),
    "synth": ("prnseg.training.data.synth_cli",
              "write the synthetic domain-shift benchmark (GTA5 + Cityscapes layouts)"),
    "train": ("prnseg.training.train_cli", "adapt a segmenter: source_only, self_training or prn (the full method)"),
    "eval": ("prnseg.training.train_cli",
             "score a checkpoint on a labelled split (mIoU, per-class IoU, pseudo-label quality)"),
    "export": ("prnseg.export.cli", "export a checkpoint to ONNX (+ fp16, TensorRT, Triton) with a parity gate"),
    "label": ("prnseg.serve.label_cli",
              "pseudo-label a folder of images: refined labels, noise masks, confidence (resumable)"),
    "import-labels": ("prnseg.serve.import_labels_cli",
                      "turn a CVAT 'Segmentation mask 1.1' export into trainId label PNGs beside their images"),
    "demo": ("prnseg.demo.cli", "serve the Gradio web demo of an exported model on localhost"),
    "bench": ("prnseg.bench",
              "measure every inference backend (speed, parity) and the training step cost on this machine"),
}


def _entry(mode: str, pattern: str, fallback: str):
    module = importlib.import_module(MODES[mode][0])
    return getattr(module, pattern.format(mode), None) or getattr(module, fallback)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="prnseg",
        description="Domain-adaptive semantic segmentation with pseudo-label self-refinement.",
    )
    parser.add_argument("--version", action="version", version=f"prnseg {__version__}")
    sub = parser.add_subparsers(dest="mode", metavar="MODE")
    for name, (module, help_text) in MODES.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        _entry(name, "add_{}_arguments", "add_arguments")(p)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.mode is None:
        parser.print_help()
        return 2
    run = _entry(args.mode, "run_{}", "run")
    try:
        return int(run(args) or 0)
    except (PrnsegError, ModuleNotFoundError) as exc:
        error = missing_extra(exc, "this command") if isinstance(exc, ModuleNotFoundError) else exc
        if error is None:   # not an extra's module: a bug, with its traceback
            raise
        if debug_enabled():  # PRNSEG_DEBUG=1: the traceback behind the one-line error
            print_debug_traceback(exc)
        print(f"prnseg {args.mode}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"prnseg {args.mode}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
