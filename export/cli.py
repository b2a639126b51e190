"""``prnseg export``: argument parsing, then :func:`prnseg.api.export`; torch is imported when it runs."""

from __future__ import annotations

import argparse
from pathlib import Path

from prnseg.export import (DEFAULT_CALIB_IMAGES, DEFAULT_MAX_BATCH, DEFAULT_NOISE_FROM, DEFAULT_OPSET, DEFAULT_WEIGHTS,
                           MIN_OPSET, NOISE_FROM, WEIGHTS)

# Where a dataset kind keeps its training images, for the printed next command.
TRAIN_IMAGES = {"cityscapes": "leftImg8bit/{split}", "darkzurich": "rgb_anon/{split}/night", "gta": "images",
                "synthia": "RGB", "folder": "images"}


def add_export_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("checkpoint", metavar="CHECKPOINT",
                   help="a checkpoint written by prnseg train (e.g. runs/x/last.pt)")
    p.add_argument("--out", required=True, metavar="DIR", help="the model directory to write")
    p.add_argument("--weights", choices=WEIGHTS, default=DEFAULT_WEIGHTS,
                   help="auto: the EMA teacher when the checkpoint has one (it makes the pseudo-labels), else the "
                        "student")
    p.add_argument("--size", dest="sizes", action="append", default=None, metavar="HxW",
                   help="an input size bucket, HEIGHTxWIDTH in multiples of 32, e.g. 256x512 (repeatable; default: "
                        "the config's val resize)")
    p.add_argument("--max-batch", type=int, default=DEFAULT_MAX_BATCH, metavar="N",
                   help="largest batch for TensorRT profiles and Triton (the ONNX batch is dynamic; "
                        "default %(default)s)")
    p.add_argument("--fp16", action="store_true",
                   help="also write pseudolabeler_fp16.onnx (LayerNorm, softmax, decode head kept fp32), gated too")
    p.add_argument("--tensorrt", action="store_true",
                   help="also build TensorRT engines, one profile per size (needs a GPU)")
    p.add_argument("--triton", action="store_true", help="also write a Triton model repository under DIR/triton")
    p.add_argument("--calib", default=None, metavar="DIR",
                   help="target-domain images for the parity gate (recursive; labels used when in the Cityscapes or "
                        "images/+labels/ layout; default: a few synthetic target-style scenes)")
    p.add_argument("--calib-images", type=int, default=DEFAULT_CALIB_IMAGES, metavar="N",
                   help="use at most N --calib images (0 = all; default %(default)s)")
    p.add_argument("--opset", type=int, default=DEFAULT_OPSET, metavar="N",
                   help=f"ONNX opset, >= {MIN_OPSET} (default %(default)s)")
    p.add_argument("--noise-from", choices=NOISE_FROM, default=DEFAULT_NOISE_FROM,
                   help="a PRN checkpoint's noise mask: 1 - the label's confidence (default; it ranks errors "
                        "better on the synthetic benchmark) or the PRN's noise head")
    p.add_argument("--overwrite", action="store_true", help="replace a ready model already in DIR")
    p.add_argument("--no-progress", action="store_true", help="do not print the steps")


def images_to_label(checkpoint: Path) -> Path | None:
    """The training run's target image folder (its source's for a source-only run), from the run's
    config.yaml, when it is on this machine: what ``prnseg label`` should label next."""
    import yaml

    try:
        data = (yaml.safe_load((checkpoint.parent / "config.yaml").read_text()) or {}).get("data", {})
    except (OSError, ValueError, AttributeError):
        return None
    for key in ("target", "source"):
        d = data.get(key) or {}
        sub = TRAIN_IMAGES.get(d.get("kind", ""))
        if d.get("root") and sub is not None:
            folder = Path(d["root"]) / sub.format(split=d.get("split") or "train")
            if folder.is_dir():
                return folder
    return None


def run_export(args: argparse.Namespace) -> int:
    from prnseg import api

    result = api.export(args.checkpoint, args.out, weights=args.weights, sizes=args.sizes, max_batch=args.max_batch,
                        fp16=args.fp16, tensorrt=args.tensorrt, triton=args.triton, calib=args.calib,
                        calib_images=args.calib_images, opset=args.opset, overwrite=args.overwrite,
                        noise_from=args.noise_from,
                        progress=not args.no_progress)
    out = result.model_dir
    images = images_to_label(result.checkpoint)
    labels = Path(out).parent / f"{Path(out).name}-labels"
    if images is not None:
        print(f"next: prnseg label {images} --model {out} --out {labels}")
    else:
        print(f"next: prnseg label IMAGES --model {out} --out {labels}   # IMAGES: a folder of target-domain images")
    return 0
