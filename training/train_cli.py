"""``prnseg train`` and ``prnseg eval``: argument parsing, then :func:`prnseg.api.train` /
:func:`prnseg.api.evaluate`; torch is imported when they run."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_train_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", required=True, metavar="CONFIG",
                   help="a YAML file or a shipped config: synthetic, gta2cityscapes, synthia2cityscapes, "
                        "cityscapes2darkzurich")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key, e.g. --set train.iters=2000 --set uda.mode=self_training (repeatable)")
    p.add_argument("--out", default=None, metavar="DIR", help="output folder (default: runs/<config name>)")
    p.add_argument("--resume", action="store_true", help="continue from DIR/last.pt with the same config")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (logs still go to DIR/metrics.csv)")


def next_commands(cfg, ckpt: Path) -> list[str]:
    """Commands that run as printed after a training run: eval where a labelled val set is known,
    then export."""
    lines = []
    val = cfg.data.val.root or cfg.data.target.root
    if val and Path(val).is_dir():
        lines.append(f"prnseg eval {ckpt} --data {val}")
    lines.append(f"prnseg export {ckpt} --out {ckpt.parent / 'model'}")
    return lines


def run_train(args: argparse.Namespace) -> int:
    from prnseg import api
    from prnseg.training.config import load_config

    cfg = load_config(args.config, args.overrides)
    result = api.train(cfg, args.out, resume=args.resume, progress=not args.no_progress)
    if result.is_main:
        for line in next_commands(result.config, result.checkpoint):
            print(f"next: {line}")
    return 0


def add_eval_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("checkpoint", metavar="CHECKPOINT",
                   help="a checkpoint written by prnseg train (e.g. runs/x/last.pt)")
    p.add_argument("--data", required=True, metavar="ROOT", help="root of the labelled dataset to evaluate on")
    p.add_argument("--kind", default=None, help="dataset layout (default: the checkpoint's val dataset kind)")
    p.add_argument("--split", default="val", metavar="SPLIT",
                   help="split to score: train, val (default) or all (every image of a folder or GTA5 layout)")
    p.add_argument("--weights", choices=("student", "teacher"), default="student",
                   help="which network to score (the reference evaluates the student)")
    p.add_argument("--classes", default="all", help="class subset for mIoU: all, synthia16, synthia13")
    p.add_argument("--max-images", type=int, default=0, help="evaluate only the first N images (0 = all)")
    p.add_argument("--device", default="auto", help="auto (CUDA when available), cpu, cuda or cuda:N")
    p.add_argument("--json", default=None, metavar="FILE", help="also write the metrics as JSON")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--refine-sweep", default="", metavar="T1,T2,...",
                   help="also score the written pseudo-labels at these prn.refine_min_confidence values "
                        "(PRN checkpoints; e.g. 0,0.5,0.9,1.01)")


def run_eval(args: argparse.Namespace) -> int:
    from prnseg import api

    api.evaluate(args.checkpoint, args.data, kind=args.kind, split=args.split, weights=args.weights,
                 classes=args.classes, max_images=args.max_images, device=args.device,
                 refine_sweep=args.refine_sweep, json_path=args.json, progress=not args.no_progress)
    return 0
