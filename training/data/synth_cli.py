"""``prnseg synth OUT``: write the synthetic domain-shift benchmark.

Kept free of heavy imports at module level (the CLI imports every mode to build its help); the
generator (numpy + OpenCV) is imported when the mode runs.
"""

from __future__ import annotations

import argparse
import os
import sys

from prnseg.sizes import parse_hw

# The shipped training configs that read this benchmark (training/configs/synthetic*.yaml).
NEXT_COMMAND = ("prnseg train --config synthetic --set data.source.root={out}/gta "
                "--set data.target.root={out}/cityscapes")
NEXT_COMMAND_NIGHT = ("prnseg train --config synthetic_night --set data.source.root={out}/gta "
                      "--set data.target.root={out}/dark_zurich")


def _default_workers() -> int:
    return max(1, min(2, os.cpu_count() or 1))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("out", metavar="OUT", help="output folder (created; must be new or empty)")
    parser.add_argument("--source", type=int, default=500, metavar="N",
                        help="source images, GTA5 layout with Cityscapes labelIds (default 500)")
    parser.add_argument("--target", type=int, default=500, metavar="N",
                        help="target train images; their labels are only for measuring pseudo-labels (default 500)")
    parser.add_argument("--val", type=int, default=100, metavar="N", help="target val images (default 100)")
    parser.add_argument("--size", default="256x512", metavar="HxW",
                        help="image size, HEIGHTxWIDTH as everywhere in prnseg (default 256x512)")
    parser.add_argument("--seed", type=int, default=0, help="random seed; same seed, same bytes (default 0)")
    parser.add_argument("--night", action="store_true",
                        help="target is a night domain in the Dark Zurich layout instead of Cityscapes")
    parser.add_argument("--gap", type=float, default=1.0,
                        help="strength of the appearance gap, 0 (none) .. 2 (default 1.0, calibrated)")
    parser.add_argument("--version", type=int, default=None, metavar="V",
                        help="generator version: 3 (default, the calibrated benchmark) or 2 (reproduces the "
                             "numbers measured on it)")
    parser.add_argument("--preview", default=None, metavar="SHEET.png",
                        help="also write a contact sheet of source and target images with their labels")
    parser.add_argument("--workers", type=int, default=_default_workers(), metavar="K",
                        help="render processes (default min(2, CPUs)); the files do not depend on it")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace a previous benchmark in OUT (a folder holding synth.json)")


def parse_size(text: str) -> tuple[int, int]:
    """'256x512' -> (256, 512), HEIGHTxWIDTH; anything else is a one-line ConfigError."""
    return parse_hw(text, "--size")


def run(args: argparse.Namespace) -> int:
    h, w = parse_size(args.size)
    if h > w:
        print(f"prnseg synth: note: --size {h}x{w} is HEIGHTxWIDTH: portrait images {w} wide and {h} high "
              f"(street scenes are usually wider: --size {w}x{h})", file=sys.stderr)
    from prnseg.training.data.synthetic import SYNTH_VERSION, write_benchmark

    info = write_benchmark(args.out, args.source, args.target, args.val, size=(w, h), seed=args.seed,
                           night=args.night, preview=args.preview, workers=args.workers,
                           progress=True, gap=args.gap, overwrite=args.overwrite,
                           version=SYNTH_VERSION if args.version is None else args.version)
    c = info["counts"]
    w, h = info["size"]
    tname = "Dark Zurich night" if info["night"] else "Cityscapes"
    print(f"wrote the synthetic benchmark to {info['out']} ({h}x{w} HxW, seed {info['seed']}, gap {info['gap']:g}, "
          f"generator version {info['version']})")
    print(f"  source  {info['layouts']['source']}  GTA5 layout: {c['source']} images + labelIds "
          f"({info['classes_present']['source/train']}/19 classes)")
    tkey = "night" if info["night"] else "target"
    print(f"  target  {info['layouts']['target']}  {tname} layout: train {c['target']} "
          f"(labels only to score pseudo-labels), val {c['val']} with labels "
          f"({info['classes_present'][f'{tkey}/train']}/19 classes)")
    if info["preview"]:
        print(f"  preview {info['preview']}")
    print(f"  {info['images']} images, {info['files']} files in {info['seconds']:.1f} s "
          f"({info['images_per_second']:.1f} images/s, {info['workers']} worker(s))")
    nxt = NEXT_COMMAND_NIGHT if info["night"] else NEXT_COMMAND
    print(f"next: {nxt.format(out=info['out'])}")
    return 0
