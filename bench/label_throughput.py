"""``prnseg label`` throughput against the bare Predictor on the same images, backend and batch.

The pipeline reads real files from disk, decodes and fits them, runs the model and encodes and
writes every output with its manifest line; the bare Predictor gets the same images already
decoded as arrays and writes nothing. The ratio says how much the decode/encode/write stages cost
the model: target >= 0.9 on CPU ONNX Runtime (the threads share the cores with inference). Runs
alternate back to back, so a busy machine slows both sides of each pair alike.

    python bench/label_throughput.py [--model MODEL_DIR | --arch mit_b0] [--images 200] [--size 128x256]
                                     [--batch 4] [--workers 2] [--threads T] [--repeats 3] [--device cpu]
                                     [--save confidence] [--out-root DIR] [--json FILE]

Without --model a model (--arch: default MiT-B0, the smallest real SegFormer encoder; ``tiny`` is
the synthetic config's test-sized one) is trained for 2 iterations on a small synthetic benchmark
and exported at 128x256 (needs the [train] extra; its speed, not its accuracy, matters here).

On a CPU the decode and write stages take cores from inference, so the script also measures what
they cost per image on this machine (PNG decode, and file creation on the output file system,
which ``--out-root`` picks) next to the inference CPU time: a model much faster than a real
encoder, or a file system with slow file creation, caps the ratio whatever the pipeline does.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np


def _built_model(work: Path, arch: str) -> Path:
    from prnseg import api

    root = work / "synth"
    api.synth(root, source=6, target=4, val=2, size=(128, 256), seed=0, workers=1, progress=False, overwrite=True,
              verbose=False)
    cfg = api.load_config("synthetic", {
        "data.source.root": root / "gta", "data.target.root": root / "cityscapes", "data.source.size": [128, 256],
        "data.target.size": [128, 256], "data.val.size": [128, 256], "data.crop": [128, 128], "data.workers": 0,
        "train.iters": 2, "train.eval_every": 0, "prn.start_iter": 1, "model.arch": arch})
    run = api.train(cfg, work / "run", progress=False, verbose=False)
    return api.export(run.checkpoint, work / "model", sizes=["128x256"], max_batch=8, progress=False,
                      verbose=False).model_dir


def _images(folder: Path, n: int, hw: tuple[int, int]) -> list[np.ndarray]:
    """n distinct street scenes (a few rendered, the rest flipped/shifted/brightened variants) saved as PNG."""
    from prnseg.training.data.synthetic import render_scene

    h, w = hw
    base = [render_scene(s, (w, h), "target")[0] for s in range(min(n, 16))]
    out = []
    for i in range(n):
        img = base[i % len(base)]
        k = i // len(base)
        img = np.roll(img[:, ::-1] if k % 2 else img, 7 * k, axis=1)
        img = np.clip(img.astype(np.int16) + (k % 5) * 6 - 12, 0, 255).astype(np.uint8)
        out.append(np.ascontiguousarray(img))
        sub = folder / f"seq{i % 4}"
        sub.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(sub / f"frame_{i:05d}.png"), img[:, :, ::-1])
    return out


def _stage_costs(files: list[Path], out_root: Path, bare_rate: float, threads: int) -> dict:
    """CPU milliseconds per image of the stages that share the cores with inference, each timed
    alone on this machine: PNG decode of the inputs and file creation (temp file, write, rename)
    on the output file system, next to the inference CPU time the bare Predictor spends."""
    from prnseg.atomic import atomic_write_bytes
    from prnseg.image_io import read_image

    def cpu_ms(fn, n: int) -> float:
        t0 = time.thread_time()
        for i in range(n):
            fn(i)
        return 1e3 * (time.thread_time() - t0) / n

    probe = Path(tempfile.mkdtemp(prefix="create-probe-", dir=out_root))
    try:
        n = min(len(files), 100)
        decode = cpu_ms(lambda i: read_image(files[i]), n)
        create = cpu_ms(lambda i: atomic_write_bytes(probe / f"{i:05d}.png", bytes(3000)), 200)
    finally:
        shutil.rmtree(probe, ignore_errors=True)
    return {"inference_cpu_ms": round(1e3 * threads / bare_rate, 2), "decode_ms": round(decode, 3),
            "file_create_ms": round(create, 3)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None)
    ap.add_argument("--arch", default="mit_b0", help="without --model: the encoder to build (mit_b0 .. mit_b5, tiny)")
    ap.add_argument("--images", type=int, default=200)
    ap.add_argument("--size", default=None, help="HxW of the images (default: the model's first bucket)")
    ap.add_argument("--batch", type=int, default=None)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--threads", type=int, default=None, help="ONNX Runtime intra-op threads per stream (both runs)")
    ap.add_argument("--streams", type=int, default=None, help="batches in flight (both runs; default as prnseg label)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--backend", default="onnxruntime")
    ap.add_argument("--save", default="confidence")
    ap.add_argument("--out-root", default=None,
                    help="folder on the file system the pipeline writes to (default: the temporary work folder)")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()

    from prnseg.serve.pipeline import LabelOptions, engine_threads, label_folder
    from prnseg.serve.predictor import Predictor

    work = Path(tempfile.mkdtemp(prefix="prnseg-label-bench-"))
    out_root = Path(tempfile.mkdtemp(prefix="prnseg-label-out-", dir=args.out_root)) if args.out_root else work
    try:
        model = Path(args.model) if args.model else _built_model(work, args.arch)
        from prnseg.model_spec import load_model_spec
        from prnseg.sizes import parse_hw

        bucket = load_model_spec(model).buckets[0]
        hw = parse_hw(args.size, "--size") if args.size else (bucket.height, bucket.width)
        folder = work / "images"
        arrays = _images(folder, args.images, hw)
        save = tuple(s for s in args.save.split(",") if s and s != "none")

        opts = LabelOptions(folder, work / "out", model, batch=args.batch, workers=args.workers, save=save,
                            backend=args.backend, device=args.device, threads=args.threads, streams=args.streams,
                            progress=False)
        config = engine_threads(opts)
        # The same Predictor settings the pipeline uses, fed pre-decoded arrays all at once (its
        # streams run concurrently) -- and ONNX Runtime's defaults (one stream, batch by batch) for context.
        bare = Predictor(model, backend=args.backend, device=args.device, max_batch=args.batch, **config)
        plain = Predictor(model, backend=args.backend, device=args.device, max_batch=args.batch)
        batch = bare.max_batch
        bare.predict(arrays[: 4 * batch])
        plain.predict(arrays[: 2 * batch])
        rates = {"bare": [], "ort_default": [], "pipeline": []}
        reports = []
        for r in range(args.repeats):
            t0 = time.perf_counter()
            bare.predict(arrays)
            rates["bare"].append(len(arrays) / (time.perf_counter() - t0))
            t0 = time.perf_counter()
            for s in range(0, len(arrays), batch):
                plain.predict(arrays[s:s + batch])
            rates["ort_default"].append(len(arrays) / (time.perf_counter() - t0))
            # label_folder loads its own Predictor, as prnseg label does. A fresh output folder per
            # run; the old ones are deleted only after the last run, as the file system's clean-up
            # of a deleted tree slows the file creations of the next run.
            report = label_folder(dataclasses.replace(opts, out_dir=out_root / f"out{r}"))
            reports.append(report["run"])
            rates["pipeline"].append(len(arrays) / report["run"]["wall_s"])
        best = {k: max(v) for k, v in rates.items()}
        baseline = best["bare"]
        result = {
            "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs",
            "provider": bare.provider, "images": len(arrays), "size": list(hw), "batch": batch,
            "workers": args.workers, "streams": config["streams"], "threads": config["threads"], "save": list(save),
            "images_per_s": {k: [round(x, 2) for x in v] for k, v in rates.items()},
            "best": {k: round(v, 2) for k, v in best.items()},
            "ratio_pipeline_vs_bare": round(best["pipeline"] / baseline, 3),
            "ratio_median_of_pairs": round(float(np.median([q / b for q, b in zip(rates["pipeline"],
                                                                                 rates["bare"])])), 3),
            "pipeline_stage_s": reports[-1].get("stage_s"),
        }
        n_files = len(opts.subdirs)
        costs = _stage_costs(sorted(folder.rglob("*.png")), out_root, baseline, config["streams"] * config["threads"])
        overhead = costs["decode_ms"] + n_files * costs["file_create_ms"]
        result["stage_cost_ms"] = {**costs, "files_per_image": n_files,
                                   "cpu_bound_ratio": round(costs["inference_cpu_ms"]
                                                            / (costs["inference_cpu_ms"] + overhead), 3)}
        print(f"{result['provider']}, {len(arrays)} images of {hw[0]}x{hw[1]}, batch {batch}, streams "
              f"{config['streams']} x {config['threads']} threads, workers {args.workers}")
        for k, v in rates.items():
            print(f"  {k:<13} best {best[k]:7.1f} images/s   runs: {', '.join(f'{x:.1f}' for x in v)}")
        print(f"ratio pipeline / bare Predictor: best/best {result['ratio_pipeline_vs_bare']:.3f}, median of "
              f"back-to-back pairs {result['ratio_median_of_pairs']:.3f} (target >= 0.9)")
        c = result["stage_cost_ms"]
        print(f"CPU per image on this machine: inference {c['inference_cpu_ms']:.2f} ms, PNG decode "
              f"{c['decode_ms']:.2f} ms, {n_files} output files x {c['file_create_ms']:.3f} ms creation on "
              f"{out_root}'s file system; decode + creation alone allow a ratio of at most about "
              f"{c['cpu_bound_ratio']:.2f} when every core runs inference")
        if args.json:
            Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
        return 0
    finally:
        shutil.rmtree(work, ignore_errors=True)
        if out_root != work:
            shutil.rmtree(out_root, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
