"""``prnseg label INPUT_DIR --model MODEL_DIR --out OUT_DIR``: batched, resumable folder pseudo-labelling."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from prnseg.serve.pipeline import (DEFAULT_MAX_PIXELS, DEFAULT_SAVE, EXIT_SOME_FAILED, OPTIONAL, LabelOptions,
                                   label_folder)


def _shard(text: str) -> tuple[int, int]:
    try:
        i, n = (int(v) for v in text.split("/"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected I/N (e.g. 0/4), got {text!r}") from None
    return i, n


def _save(text: str) -> tuple[str, ...]:
    parts = [p.strip() for p in text.split(",") if p.strip()]
    return () if parts in ([], ["none"]) else tuple(parts)


def add_label_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("input_dir", metavar="INPUT_DIR", help="folder of images (searched recursively: "
                   "jpg/png/webp/bmp/tif; grayscale, RGBA and 16-bit are converted)")
    p.add_argument("--model", required=True, metavar="MODEL_DIR", help="exported model folder (prnseg export)")
    p.add_argument("--out", required=True, metavar="OUT_DIR", help="output folder; a re-run resumes in it")
    p.add_argument("--batch", type=int, default=None, metavar="N", help="images per inference batch "
                   "(default and upper limit: the model's max_batch)")
    p.add_argument("--workers", type=int, default=min(4, os.cpu_count() or 1), metavar="K",
                   help="decode threads and encode/write threads, each (default: min(4, CPUs))")
    p.add_argument("--streams", type=int, default=None, metavar="S",
                   help="batches in flight at once (default: on a CPU min(4, CPUs), on a GPU 1)")
    p.add_argument("--threads", type=int, default=None, metavar="T",
                   help="ONNX Runtime intra-op threads per stream (default: on a CPU, CPUs / streams)")
    p.add_argument("--ignore-noisy", action="store_true", help="write 255 (ignore) into labels/ where the noise "
                   "mask flags a pixel, so training skips it")
    p.add_argument("--noise-threshold", type=float, default=None, metavar="T",
                   help="noise-mask threshold on the noise probability (default: the model's, from model.json)")
    p.add_argument("--save", type=_save, default=DEFAULT_SAVE, metavar="LIST",
                   help=f"extra outputs besides labels/ and noise/, comma-separated from {','.join(OPTIONAL)}, "
                        f"or none (default: {','.join(DEFAULT_SAVE)})")
    p.add_argument("--gt", default=None, metavar="GT_DIR", help="ground-truth labels: report raw vs refined mIoU "
                   "and noise-mask precision/recall (Cityscapes layout or NAME.png trainIds at the same path)")
    p.add_argument("--shard", type=_shard, default=None, metavar="I/N",
                   help="label only shard I of N (0-based; stable hash of the path), for parallel runs")
    p.add_argument("--max-failures", type=int, default=0, metavar="N",
                   help="stop after N failed images (default 0: never stop; failures are logged)")
    p.add_argument("--max-pixels", type=int, default=DEFAULT_MAX_PIXELS, metavar="N",
                   help="refuse images of more than N pixels, read from the file header before any decode "
                        f"(default {DEFAULT_MAX_PIXELS}); a header that cannot be read is refused too")
    p.add_argument("--backend", choices=("auto", "onnxruntime", "tensorrt"), default="auto",
                   help="runtime: auto (TensorRT plans when they fit this GPU, else ONNX Runtime), onnxruntime "
                        "or tensorrt (default auto)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default auto: a GPU when ONNX "
                   "Runtime or TensorRT can use one)")
    p.add_argument("--precision", choices=("fp32", "fp16"), default="fp32",
                   help="fp32 (default) or fp16 (needs a model exported with --fp16)")
    p.add_argument("--png-level", type=int, default=1, metavar="0-9", help="PNG compression level of the "
                   "grayscale outputs (default 1: fast; labels are always small)")
    p.add_argument("--engine", choices=("local", "ray"), default="local",
                   help="local threads, or a Ray Data cluster (RAY_ADDRESS, else a local Ray)")
    p.add_argument("--suggest", type=int, default=None, metavar="K",
                   help="also write OUT/suggest/: the K images most worth hand-labelling (noise-mask mass weighted "
                        "towards rare classes, near-duplicates spread out), suggest.txt for "
                        "data.target_labeled.list and their labels as CVAT 'Segmentation mask 1.1' pre-annotations")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def _pct(v) -> str:
    return "n/a" if v is None else f"{100 * v:.1f}"


def run_label(args: argparse.Namespace) -> int:
    if args.suggest is not None and args.suggest < 1:
        from prnseg.serve.suggest import SuggestError

        raise SuggestError(f"--suggest {args.suggest}: give the number of images to suggest, at least 1")
    opts = LabelOptions(
        input_dir=Path(args.input_dir), out_dir=Path(args.out), model_dir=Path(args.model), batch=args.batch,
        workers=args.workers, ignore_noisy=args.ignore_noisy, noise_threshold=args.noise_threshold,
        save=args.save, gt_dir=Path(args.gt) if args.gt else None, shard=args.shard,
        max_failures=args.max_failures, backend=args.backend, device=args.device, precision=args.precision,
        threads=args.threads, streams=args.streams, png_level=args.png_level, progress=not args.no_progress, engine=args.engine,
        max_pixels=args.max_pixels)

    def log(msg: str) -> None:
        print(msg, file=sys.stderr)

    report = label_folder(opts, log=log)
    out, tag = opts.out_dir, opts.tag
    c, run = report["counts"], report["run"]
    rate = f", {run['images_per_s']:.1f} images/s" if run.get("images_per_s") and c["labelled_this_run"] else ""
    where = f" on {run['provider']}" if run.get("provider") else ""
    print(f"labelled {c['labelled_this_run']} images, {c['failed_this_run']} failed, {c['skipped_finished']} "
          f"already done{rate}{where}")
    print(f"{c['ok']}/{c['listed']} images labelled in {out} ({', '.join(report['outputs'])}); "
          f"manifest {out / f'manifest{tag}.jsonl'}, report {out / f'report{tag}.json'}")
    if c["failed"]:
        print(f"{c['failed']} failed images: see {out / f'failures{tag}.jsonl'}")
    gt = report.get("gt")
    if gt:
        nd = gt["noise_detector"]
        print(f"pseudo-labels on {gt['n_images']} labelled images: raw mIoU {_pct(gt['raw']['miou'])} -> refined "
              f"{_pct(gt['refined']['miou'])}; noise mask precision {_pct(nd['precision'])} recall "
              f"{_pct(nd['recall'])}" + (f" ({gt['n_missing']} without ground truth)" if gt["n_missing"] else ""))
    if c["remaining"] or c["failed"]:
        print("re-run the same command to resume (finished images are skipped, failed ones retried)")
    if args.suggest is not None:
        _suggest(args.suggest, opts)
        return EXIT_SOME_FAILED if c["failed"] else 0
    print(f"next: prnseg train --config {train_config(opts.model_dir)} --set uda.mode=source_only "
          f"--set data.source.kind=folder --set data.source.root={out} --out {out.parent / (out.name + '-train')}"
          f"   # trains on {out}: images/ -> INPUT_DIR, labels/, train.txt")
    return EXIT_SOME_FAILED if c["failed"] else 0


def _suggest(k: int, opts: LabelOptions) -> None:
    from prnseg.serve.model_spec import load_model_spec
    from prnseg.serve.suggest import finished_records, write_suggestions

    spec = load_model_spec(opts.model_dir)
    s = write_suggestions(opts.out_dir, opts.input_dir, finished_records(opts.out_dir), list(spec.classes),
                          spec.palette, k)
    print(f"suggest: the {s['chosen']} images most worth labelling, ranked, in {s['list']}; copies in "
          f"{opts.out_dir / 'suggest' / 'images'}, pre-annotations {s['cvat']} (CVAT: create a task from "
          f"the copies, then Actions > Upload annotations > Segmentation mask 1.1)")
    print(f"then: label them and train with --set data.target_labeled.root=DATASET_ROOT "
          f"--set data.target_labeled.list={s['list']} (paths in it are relative to {opts.input_dir})")


def train_config(model_dir: Path) -> str:
    """The shipped training config the model came from (export records it), else one of its scale."""
    import importlib.util
    import json

    try:
        ckpt = json.loads((model_dir / "model.json").read_text()).get("checkpoint") or {}
    except (OSError, ValueError, AttributeError):
        ckpt = {}
    name = str(ckpt.get("config") or "")
    configs = importlib.util.find_spec("prnseg.training.configs")
    folder = Path(configs.origin).parent if configs and configs.origin else None
    if name.isidentifier() and folder is not None and (folder / f"{name}.yaml").is_file():
        return name
    return "synthetic" if ckpt.get("arch") == "tiny" else "gta2cityscapes"
