"""``prnseg bench`` options and the ``Settings`` they resolve to, defaults chosen per device.

Everything a run measures is decided here, before any model is built, so that a bad argument is
a one-line error and not a failure minutes into the run.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

from prnseg import sizes
from prnseg.bench.errors import BenchError
from prnseg.bench.measure import AUTO_MIN_SECONDS
from prnseg.checks import check_checkpoint, check_model_dir
from prnseg.devices import resolve_device

DEFAULT_ARCHS = ("mit_b0", "mit_b5")
# The Cityscapes test scale on every device. On a 2-core CPU the default run takes ~5.5 min when
# the machine is idle (MiT-B5 + DAFormer head: ~3.5 s per image, ~2 min to export) and more when
# the cores are shared; --sizes 256x512 takes ~2.5 min.
DEFAULT_SIZE_CUDA = "512x1024"
DEFAULT_SIZE_CPU = "512x1024"
QUICK = {"arch": ["tiny"], "sizes": ["128x256"], "images": 2, "iters": 2, "train_steps": 3, "train_crop": 128}
BACKENDS = ("pytorch", "onnxruntime", "tensorrt")


def add_bench_arguments(p: argparse.ArgumentParser) -> None:
    src = p.add_mutually_exclusive_group()
    src.add_argument("--model", default=None, metavar="MODEL_DIR",
                     help="benchmark this exported model (prnseg export) as it is, instead of random-weight encoders")
    src.add_argument("--arch", nargs="+", default=None, metavar="ARCH",
                     help="encoders to build with random weights: tiny, mit_b0 .. mit_b5 "
                          f"(default: {' '.join(DEFAULT_ARCHS)})")
    p.add_argument("--checkpoint", default=None, metavar="CKPT",
                   help="with --model: the checkpoint it was exported from, for the PyTorch rows and a PyTorch "
                        "parity reference (without it, parity is measured against ONNX Runtime fp32)")
    p.add_argument("--sizes", nargs="+", default=None, metavar="HxW",
                   help=f"input sizes, HEIGHTxWIDTH in multiples of 32 (default {DEFAULT_SIZE_CPU}, the Cityscapes "
                        "test scale; with --model: its buckets)")
    p.add_argument("--batch", nargs="+", type=int, default=[1], metavar="N", help="batch sizes (default 1)")
    p.add_argument("--iters", type=int, default=0, metavar="N",
                   help=f"timed iterations per row (default 0 = auto: at least 3 and one pass over the images, "
                        f"more while a row has run under {AUTO_MIN_SECONDS:g} s)")
    p.add_argument("--warmup", type=int, default=None, metavar="N",
                   help="untimed iterations before each row (default 1 on a CPU, 3 on a GPU)")
    p.add_argument("--images", type=int, default=None, metavar="N",
                   help="synthetic target-style scenes per size: the engine rows cycle through them, parity is "
                        "measured on all of them, the end-to-end run labels them as PNG files (default 4 on a CPU, "
                        "32 on a GPU)")
    p.add_argument("--backends", nargs="+", choices=BACKENDS, default=list(BACKENDS), metavar="NAME",
                   help=f"which backends to measure, from {', '.join(BACKENDS)} (default: all)")
    p.add_argument("--no-fp16", dest="fp16", action="store_false", help="measure fp32 only")
    p.add_argument("--train", action=argparse.BooleanOptionalAction, default=True,
                   help="also time training steps of self_training vs prn and their peak memory (default: on)")
    p.add_argument("--train-arch", default=None, metavar="ARCH",
                   help="encoder for the training part (default: tiny on a CPU, mit_b5 on a GPU)")
    p.add_argument("--train-crop", type=int, default=None, metavar="PX",
                   help="training crop size (default 256 on a CPU, 512 on a GPU; batch 2+2 as in DAFormer)")
    p.add_argument("--train-steps", type=int, default=None, metavar="N",
                   help="training steps per mode, >= 3; the median step time is reported, so the first (warm-up) "
                        "step does not count (default 6)")
    p.add_argument("--device", default="auto", help="auto (a CUDA GPU when there is one), cpu, cuda or cuda:N")
    p.add_argument("--threads", type=int, default=None, metavar="T",
                   help="CPU threads for PyTorch and ONNX Runtime (default: the libraries' choice)")
    p.add_argument("--out", default="runs/bench", metavar="DIR", help="where bench.json and bench.md go "
                   "(default runs/bench)")
    p.add_argument("--keep", action="store_true", help="keep the exported models, images and label outputs in "
                   "OUT/work (default: removed at the end)")
    p.add_argument("--quick", action="store_true",
                   help="a seconds-long smoke run: tiny encoder, 128x256, 2 images, 2 iterations, 3 training steps")


@dataclass
class Settings:
    device: str  # "cpu" or "cuda:i"
    archs: list[str]
    sizes: list[tuple[int, int]]
    batches: list[int]
    iters: int
    warmup: int
    images: int
    backends: list[str]
    fp16: bool
    train: bool
    train_arch: str
    train_crop: int
    train_steps: int
    threads: int | None
    out: Path
    keep: bool
    quick: bool
    model: Path | None = None
    checkpoint: Path | None = None

    @property
    def on_cuda(self) -> bool:
        return self.device.startswith("cuda")


def parse_hw(text: str) -> tuple[int, int]:
    return sizes.parse_hw(text, "--sizes", 32, error=BenchError)


def settings_from_args(args: argparse.Namespace) -> Settings:
    for text in args.sizes or []:
        parse_hw(text)
    if args.model:
        check_model_dir(args.model)
    if args.checkpoint:
        check_checkpoint(args.checkpoint, "--checkpoint")
    from prnseg.training.models.factory import ENCODERS

    device = str(resolve_device(args.device, error=BenchError))    # cpu or cuda:N
    cuda = device.startswith("cuda")
    archs = list(args.arch or (QUICK["arch"] if args.quick else DEFAULT_ARCHS))
    for a in archs:
        if a not in ENCODERS:
            raise BenchError(f"--arch {a}: unknown encoder; choose from {', '.join(ENCODERS)}")
    train_arch = args.train_arch or ("tiny" if args.quick or not cuda else "mit_b5")
    if train_arch not in ENCODERS:
        raise BenchError(f"--train-arch {train_arch}: unknown encoder; choose from {', '.join(ENCODERS)}")
    default_sizes = QUICK["sizes"] if args.quick else [DEFAULT_SIZE_CUDA if cuda else DEFAULT_SIZE_CPU]
    sizes = [parse_hw(s) for s in (args.sizes or ([] if args.model else default_sizes))]
    train_steps = args.train_steps or (QUICK["train_steps"] if args.quick else 6)
    for name, value, low in (("--batch", min(args.batch), 1), ("--iters", args.iters, 0),
                             ("--train-steps", train_steps, 3)):
        if value < low:
            raise BenchError(f"{name} must be >= {low}, got {value}")
    if args.images is not None and args.images < 1:
        raise BenchError(f"--images must be >= 1, got {args.images}")
    if args.warmup is not None and args.warmup < 0:
        raise BenchError(f"--warmup must be >= 0, got {args.warmup}")
    if args.threads is not None and args.threads < 1:
        raise BenchError(f"--threads must be >= 1, got {args.threads}")
    if args.checkpoint and not args.model:
        raise BenchError("--checkpoint goes with --model (the checkpoint that model was exported from)")
    crop = args.train_crop or (QUICK["train_crop"] if args.quick else (512 if cuda else 256))
    if crop < 32 or crop % 32:
        raise BenchError(f"--train-crop {crop}: must be a positive multiple of 32")
    return Settings(
        device=device, archs=archs, sizes=sizes, batches=list(dict.fromkeys(args.batch)),
        iters=args.iters or (QUICK["iters"] if args.quick else 0),
        warmup=args.warmup if args.warmup is not None else (3 if cuda else 1),
        images=args.images or (QUICK["images"] if args.quick else (32 if cuda else 4)),
        backends=list(dict.fromkeys(args.backends)), fp16=args.fp16, train=args.train, train_arch=train_arch,
        train_crop=crop, train_steps=train_steps,
        threads=args.threads, out=Path(args.out), keep=args.keep, quick=args.quick,
        model=Path(args.model) if args.model else None,
        checkpoint=Path(args.checkpoint) if args.checkpoint else None)
