"""``prnseg train`` and ``prnseg eval``: argument parsing only; torch is imported when they run."""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from prnseg.checks import check_checkpoint, check_dir
from prnseg.errors import PrnsegError


def add_train_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", required=True, metavar="CONFIG",
                   help="a YAML file or a shipped config: synthetic, gta2cityscapes, synthia2cityscapes, "
                        "cityscapes2darkzurich")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key, e.g. --set train.iters=2000 --set uda.mode=self_training (repeatable)")
    p.add_argument("--out", default=None, metavar="DIR", help="output folder (default: runs/<config name>)")
    p.add_argument("--resume", action="store_true", help="continue from DIR/last.pt with the same config")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (logs still go to DIR/metrics.csv)")


def check_train_inputs(cfg, out: Path, resume: bool) -> None:
    """The paths a run needs, checked before torch loads: data roots, ``train.init_from``, and the
    checkpoint ``--resume`` continues from."""
    roots = [("source", cfg.data.source.root)]
    if cfg.uda.mode != "source_only":
        roots.append(("target", cfg.data.target.root))
    for key, root in roots:
        if not root:
            raise PrnsegError(f"config key 'data.{key}.root' is empty; pass --set data.{key}.root=DIR")
        check_dir(root, f"data.{key}.root")
    if cfg.train.init_from and not resume:
        check_checkpoint(cfg.train.init_from, "train.init_from")
    if resume:
        if not (out / "last.pt").is_file():
            raise PrnsegError(f"{out / 'last.pt'}: nothing to resume from; run without --resume to start")
        check_checkpoint(out / "last.pt", "--resume")


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
    from prnseg.training.config import load_config

    cfg = load_config(args.config, args.overrides)
    out = Path(args.out or Path("runs") / cfg.name)
    check_train_inputs(cfg, out, args.resume)
    created = not out.exists()
    try:
        ckpt = _train(cfg, out, args)
    except BaseException:
        # a run that failed before its first checkpoint leaves no folder behind
        if created and out.is_dir() and not (out / "last.pt").exists():
            shutil.rmtree(out, ignore_errors=True)
        raise
    from prnseg.training import distributed as dist_utils

    if dist_utils.is_main():
        print(f"checkpoint: {ckpt}")
        for line in next_commands(cfg, ckpt):
            print(f"next: {line}")
    return 0


def _train(cfg, out: Path, args: argparse.Namespace) -> Path:
    from prnseg.training import distributed as dist_utils
    from prnseg.training.trainer import UDATrainer

    trainer = UDATrainer(cfg, out, resume=args.resume, progress=not args.no_progress)
    if dist_utils.is_main():
        where = (f"resuming at iteration {trainer.step}" if args.resume
                 else f"student from {cfg.train.init_from}" if cfg.train.init_from
                 else f"encoder from {cfg.model.pretrained}" if cfg.model.pretrained else "from scratch")
        print(f"training '{cfg.name}' ({cfg.uda.mode}, {cfg.model.arch}/{cfg.model.head}) on {trainer.device}, "
              f"{cfg.train.iters} iterations, {where}; writing {out}")
    return trainer.fit()


def add_eval_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("checkpoint", metavar="CHECKPOINT", help="a checkpoint written by prnseg train (e.g. runs/x/last.pt)")
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


def _parse_sweep(text: str) -> list[float]:
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise PrnsegError(f"--refine-sweep {text!r}: expected comma-separated numbers, e.g. 0,0.5,0.9") from None
    if any(v < 0 for v in values):
        raise PrnsegError(f"--refine-sweep {text!r}: confidences must be >= 0")
    return values


def run_eval(args: argparse.Namespace) -> int:
    check_checkpoint(args.checkpoint)
    check_dir(args.data, "--data")
    if args.max_images < 0:
        raise PrnsegError(f"--max-images must be >= 0, got {args.max_images}")
    sweep = _parse_sweep(args.refine_sweep)
    from prnseg.serve.image_io import atomic_write_bytes
    from prnseg.training.evaluate import evaluate_checkpoint, format_metrics

    metrics = evaluate_checkpoint(args.checkpoint, args.data, kind=args.kind, split=args.split,
                                  weights=args.weights, classes=args.classes, max_images=args.max_images,
                                  device=args.device, progress=not args.no_progress, sweep=sweep)
    print(format_metrics(metrics))
    if args.json:
        atomic_write_bytes(args.json, (json.dumps(metrics, indent=2) + "\n").encode())
        print(f"wrote {args.json}")
    return 0
