"""``prnseg label INPUT_DIR --model MODEL_DIR --out OUT_DIR``: batched, resumable folder pseudo-labelling
(argument parsing, then :func:`prnseg.api.label`)."""

from __future__ import annotations

import argparse
from pathlib import Path

from prnseg.defaults import default_of
from prnseg.serve.pipeline import EXIT_SOME_FAILED, OPTIONAL, LabelOptions


def _shard(text: str) -> tuple[int, int]:
    try:
        i, n = (int(v) for v in text.split("/"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected I/N (e.g. 0/4), got {text!r}") from None
    return i, n


def _save(text: str) -> tuple[str, ...]:
    parts = [p.strip() for p in text.split(",") if p.strip()]
    return () if parts in ([], ["none"]) else tuple(parts)


def _d(name: str):
    """The default of ``LabelOptions.name``: one source for the CLI, the Python API and the run."""
    return default_of(LabelOptions, name)


def add_label_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("input_dir", metavar="INPUT_DIR", help="folder of images (searched recursively: "
                   "jpg/png/webp/bmp/tif; grayscale, RGBA and 16-bit are converted)")
    p.add_argument("--model", required=True, metavar="MODEL_DIR", help="exported model folder (prnseg export)")
    p.add_argument("--out", required=True, metavar="OUT_DIR", help="output folder; a re-run resumes in it")
    p.add_argument("--batch", type=int, default=_d("batch"), metavar="N", help="images per inference batch "
                   "(default and upper limit: the model's max_batch)")
    p.add_argument("--workers", type=int, default=_d("workers"), metavar="K",
                   help="decode threads and encode/write threads, each (default: min(4, CPUs), here %(default)s)")
    p.add_argument("--streams", type=int, default=_d("streams"), metavar="S",
                   help="batches in flight at once (default: on a CPU min(4, CPUs), on a GPU 1)")
    p.add_argument("--threads", type=int, default=_d("threads"), metavar="T",
                   help="ONNX Runtime intra-op threads per stream (default: on a CPU, CPUs / streams)")
    p.add_argument("--ignore-noisy", action="store_true", help="write 255 (ignore) into labels/ where the noise "
                   "mask flags a pixel, so training skips it")
    p.add_argument("--noise-threshold", type=float, default=_d("noise_threshold"), metavar="T",
                   help="noise-mask threshold on the noise probability (default: the model's, from model.json; "
                        "with --tta 0.5)")
    p.add_argument("--tta", action="store_true", default=_d("tta"),
                   help="test-time augmentation: labels and noise mask from segmenter.onnx averaged over scales "
                        "0.75/1/1.25 and their mirrors (six passes; better labels and a better-ranked mask than one "
                        "pass on the synthetic benchmark; the PRN is not used)")
    p.add_argument("--logit-adjust", dest="logit_adjustment", type=float, default=_d("logit_adjustment"),
                   metavar="TAU", help="with --tta: take each label as argmax(log p - TAU log prior), prior the "
                        "teacher's target class distribution recorded at training (model.json class_prior), so rare "
                        "classes keep pixels the teacher nearly gives them (default 0.25; 0 = plain argmax)")
    p.add_argument("--save", type=_save, default=_d("save"), metavar="LIST",
                   help=f"extra outputs besides labels/ and noise/, comma-separated from {','.join(OPTIONAL)}, "
                        f"or none (default: {','.join(_d('save')) or 'none'})")
    p.add_argument("--gt", default=None, metavar="GT_DIR", help="ground-truth labels: report raw vs refined mIoU "
                   "and noise-mask precision/recall (Cityscapes layout or NAME.png trainIds at the same path)")
    p.add_argument("--shard", type=_shard, default=_d("shard"), metavar="I/N",
                   help="label only shard I of N (0-based; stable hash of the path), for parallel runs")
    p.add_argument("--max-failures", type=int, default=_d("max_failures"), metavar="N",
                   help="stop after N failed images (0: never stop; failures are logged; default %(default)s)")
    p.add_argument("--max-pixels", type=int, default=_d("max_pixels"), metavar="N",
                   help="refuse images of more than N pixels, read from the file header before any decode "
                        "(default %(default)s); a header that cannot be read is refused too")
    p.add_argument("--backend", choices=("auto", "onnxruntime", "tensorrt"), default=_d("backend"),
                   help="runtime: auto (TensorRT plans when they fit this GPU, else ONNX Runtime), onnxruntime "
                        "or tensorrt (default %(default)s)")
    p.add_argument("--device", default=_d("device"), help="auto, cpu, cuda or cuda:N (default %(default)s; auto: "
                   "a GPU when ONNX Runtime or TensorRT can use one)")
    p.add_argument("--precision", choices=("fp32", "fp16"), default=_d("precision"),
                   help="fp32 or fp16 (needs a model exported with --fp16; default %(default)s)")
    p.add_argument("--png-level", type=int, default=_d("png_level"), metavar="0-9", help="PNG compression level "
                   "of the grayscale outputs (default %(default)s: fast; labels are always small)")
    p.add_argument("--engine", choices=("local", "ray"), default=_d("engine"),
                   help="local threads, or a Ray Data cluster (RAY_ADDRESS, else a local Ray; default %(default)s)")
    p.add_argument("--suggest", type=int, default=None, metavar="K",
                   help="also write OUT/suggest/: the K images most worth hand-labelling (noise-mask mass weighted "
                        "towards rare classes, near-duplicates spread out), suggest.txt for "
                        "data.target_labeled.list and their labels as CVAT 'Segmentation mask 1.1' pre-annotations")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def run_label(args: argparse.Namespace) -> int:
    if args.suggest is not None and args.suggest < 1:
        from prnseg.serve.suggest import SuggestError

        raise SuggestError(f"--suggest {args.suggest}: give the number of images to suggest, at least 1")
    opts = LabelOptions(
        input_dir=Path(args.input_dir), out_dir=Path(args.out), model_dir=Path(args.model), batch=args.batch,
        workers=args.workers, ignore_noisy=args.ignore_noisy, noise_threshold=args.noise_threshold,
        save=args.save, gt_dir=Path(args.gt) if args.gt else None, shard=args.shard,
        max_failures=args.max_failures, backend=args.backend, device=args.device, precision=args.precision,
        threads=args.threads, streams=args.streams, png_level=args.png_level, progress=not args.no_progress,
        engine=args.engine, max_pixels=args.max_pixels, tta=args.tta,
        logit_adjustment=args.logit_adjustment)

    from prnseg import api

    report = api.label(opts, suggest=args.suggest)
    out, failed = opts.out_dir, report["counts"]["failed"]
    if args.suggest is not None:
        folder = Path(report["suggest"]["folder"])
        print(f"then: label them in CVAT (export 'Segmentation mask 1.1'), then: prnseg import-labels EXPORT.zip "
              f"--suggest {folder} --model {opts.model_dir}; or, where their labels already exist in the dataset's "
              f"layout, train with --set data.target_labeled.root=DATASET_ROOT "
              f"--set data.target_labeled.list={report['suggest']['list']} (paths in it are relative to "
              f"{opts.input_dir})")
        return EXIT_SOME_FAILED if failed else 0
    print(f"next: prnseg train --config {train_config(opts.model_dir)} --set uda.mode=source_only "
          f"--set data.source.kind=folder --set data.source.root={out} --out {out.parent / (out.name + '-train')}"
          f"   # trains on {out}: images/ -> INPUT_DIR, labels/, train.txt")
    return EXIT_SOME_FAILED if failed else 0


def train_config(model_dir: Path) -> str:
    """The shipped training config the model came from (export records it and whether it is
    shipped, so serve need not look into training), else one of its scale."""
    import json

    try:
        ckpt = json.loads((model_dir / "model.json").read_text()).get("checkpoint") or {}
    except (OSError, ValueError, AttributeError):
        ckpt = {}
    name = str(ckpt.get("config") or "")
    if name.isidentifier() and ckpt.get("config_shipped") is True:
        return name
    return "synthetic" if ckpt.get("arch") == "tiny" else "gta2cityscapes"
