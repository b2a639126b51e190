"""``prnseg train`` and ``prnseg eval``: argument parsing only; torch is imported when they run."""

from __future__ import annotations

import argparse
import json
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


def run_train(args: argparse.Namespace) -> int:
    from prnseg.training import distributed as dist_utils
    from prnseg.training.config import load_config
    from prnseg.training.trainer import UDATrainer

    cfg = load_config(args.config, args.overrides)
    out = Path(args.out or Path("runs") / cfg.name)
    trainer = UDATrainer(cfg, out, resume=args.resume, progress=not args.no_progress)
    if dist_utils.is_main():
        where = (f"resuming at iteration {trainer.step}" if args.resume
                 else f"student from {cfg.train.init_from}" if cfg.train.init_from
                 else f"encoder from {cfg.model.pretrained}" if cfg.model.pretrained else "from scratch")
        print(f"training '{cfg.name}' ({cfg.uda.mode}, {cfg.model.arch}/{cfg.model.head}) on {trainer.device}, "
              f"{cfg.train.iters} iterations, {where}; writing {out}")
    ckpt = trainer.fit()
    if dist_utils.is_main():
        print(f"checkpoint: {ckpt}")
        print(f"next: prnseg eval {ckpt} --data {cfg.data.val.root or cfg.data.target.root}")
    return 0


def add_eval_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("checkpoint", metavar="CHECKPOINT", help="a checkpoint written by prnseg train (e.g. runs/x/last.pt)")
    p.add_argument("--data", required=True, metavar="ROOT", help="root of the labelled dataset to evaluate on")
    p.add_argument("--kind", default=None, help="dataset layout (default: the checkpoint's val dataset kind)")
    p.add_argument("--split", default="val",
                   help="split to score: train, val (default) or all (every image of a folder or GTA5 layout)")
    p.add_argument("--weights", choices=("student", "teacher"), default="student",
                   help="which network to score (the reference evaluates the student)")
    p.add_argument("--classes", default="all", help="class subset for mIoU: all, synthia16, synthia13")
    p.add_argument("--max-images", type=int, default=0, help="evaluate only the first N images (0 = all)")
    p.add_argument("--device", default="auto", help="auto (CUDA when available), cpu, cuda or cuda:N")
    p.add_argument("--json", default=None, metavar="FILE", help="also write the metrics as JSON")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def run_eval(args: argparse.Namespace) -> int:
    from prnseg.serve.image_io import atomic_write_bytes
    from prnseg.training.evaluate import evaluate_checkpoint, format_metrics

    metrics = evaluate_checkpoint(args.checkpoint, args.data, kind=args.kind, split=args.split,
                                  weights=args.weights, classes=args.classes, max_images=args.max_images,
                                  device=args.device, progress=not args.no_progress)
    print(format_metrics(metrics))
    if args.json:
        atomic_write_bytes(args.json, (json.dumps(metrics, indent=2) + "\n").encode())
        print(f"wrote {args.json}")
    return 0
