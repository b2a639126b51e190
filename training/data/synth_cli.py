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
                        help="generator version: 4 (default, the calibrated benchmark), or 3 or 2 (reproduce the "
                             "numbers measured on them)")
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
    from prnseg import api

    info = api.synth(args.out, source=args.source, target=args.target, val=args.val, size=(h, w), seed=args.seed,
                     night=args.night, gap=args.gap, version=args.version, preview=args.preview,
                     workers=args.workers, overwrite=args.overwrite, progress=True)
    nxt = NEXT_COMMAND_NIGHT if info["night"] else NEXT_COMMAND
    print(f"next: {nxt.format(out=info['out'])}")
    return 0
