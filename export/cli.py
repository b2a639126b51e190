"""``prnseg export``: argument parsing and the summary it prints; torch is imported when it runs."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from prnseg.checks import check_checkpoint, check_dir
from prnseg.errors import PrnsegError
from prnseg.sizes import parse_hw

STRIDE = 32
# Where a dataset kind keeps its training images, for the printed next command.
TRAIN_IMAGES = {"cityscapes": "leftImg8bit/{split}", "darkzurich": "rgb_anon/{split}/night", "gta": "images",
                "synthia": "RGB", "folder": "images"}


def add_export_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("checkpoint", metavar="CHECKPOINT", help="a checkpoint written by prnseg train (e.g. runs/x/last.pt)")
    p.add_argument("--out", required=True, metavar="DIR", help="the model directory to write")
    p.add_argument("--weights", choices=("auto", "teacher", "student"), default="auto",
                   help="auto: the EMA teacher when the checkpoint has one (it makes the pseudo-labels), else the student")
    p.add_argument("--size", dest="sizes", action="append", default=None, metavar="HxW",
                   help="an input size bucket, HEIGHTxWIDTH in multiples of 32, e.g. 256x512 (repeatable; default: "
                        "the config's val resize)")
    p.add_argument("--max-batch", type=int, default=8, metavar="N",
                   help="largest batch for TensorRT profiles and Triton (the ONNX batch is dynamic)")
    p.add_argument("--fp16", action="store_true",
                   help="also write pseudolabeler_fp16.onnx (LayerNorm, softmax, decode head kept fp32), gated too")
    p.add_argument("--tensorrt", action="store_true", help="also build TensorRT engines, one profile per size (needs a GPU)")
    p.add_argument("--triton", action="store_true", help="also write a Triton model repository under DIR/triton")
    p.add_argument("--calib", default=None, metavar="DIR",
                   help="target-domain images for the parity gate (recursive; labels used when in the Cityscapes or "
                        "images/+labels/ layout; default: a few synthetic target-style scenes)")
    p.add_argument("--calib-images", type=int, default=8, metavar="N", help="use at most N --calib images (0 = all)")
    p.add_argument("--opset", type=int, default=17, metavar="N", help="ONNX opset, >= 17 (default 17)")
    p.add_argument("--overwrite", action="store_true", help="replace a ready model already in DIR")
    p.add_argument("--no-progress", action="store_true", help="do not print the steps")


def _pct(v: float) -> str:
    return f"{100 * v:.3f}%"


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
    for s in args.sizes or []:
        parse_hw(s, "--size", STRIDE, error=PrnsegError)
    checkpoint = check_checkpoint(args.checkpoint)
    if args.calib:
        check_dir(args.calib, "--calib")
    if args.max_batch < 1:
        raise PrnsegError(f"--max-batch {args.max_batch}: must be >= 1")
    from prnseg.export.exporter import export_model

    out = export_model(args.checkpoint, args.out, weights=args.weights, sizes=args.sizes, max_batch=args.max_batch,
                       fp16=args.fp16, tensorrt=args.tensorrt, triton=args.triton, calib_dir=args.calib,
                       progress=not args.no_progress, opset=args.opset, overwrite=args.overwrite,
                       calib_images=args.calib_images)
    doc = json.loads((Path(out) / "model.json").read_text())
    print(f"exported {args.checkpoint} ({doc['checkpoint']['weights']} weights, iteration "
          f"{doc['checkpoint']['iteration']}) to {out}")
    for f in sorted(p for p in Path(out).rglob("*") if p.is_file()):
        print(f"  {f.relative_to(out)}  ({f.stat().st_size / 1e6:.2f} MB)")
    for name, m in doc["parity"]["summary"].items():
        if "label_agreement" in m:
            print(f"parity {name}: label agreement {_pct(m['label_agreement'])}, noise agreement "
                  f"{_pct(m['noise_agreement'])}, mIoU delta {m['miou_delta']:.3f} ({m['miou_delta_basis']})")
    buckets = ", ".join(f"{b['height']}x{b['width']}" for b in doc["input"]["buckets"])
    print(f"ready: buckets {buckets} (HxW), batch 1..{doc['input']['max_batch']}, outputs "
          f"{', '.join(doc['outputs'])}")
    images = images_to_label(checkpoint)
    labels = Path(out).parent / f"{Path(out).name}-labels"
    if images is not None:
        print(f"next: prnseg label {images} --model {out} --out {labels}")
    else:
        print(f"next: prnseg label IMAGES --model {out} --out {labels}   # IMAGES: a folder of target-domain images")
    return 0
