"""Throughput of the fused ONNX Runtime pseudo-labeler vs PyTorch eager running the same pipeline.

Both sides run the identical per-batch pipeline on the same images, batch, bucket and thread
count: fit each image into the bucket (``ModelSpec.fit``: keep-ratio resize + mean padding),
run the network (PyTorch: the ``PseudoLabeler`` module that is also the parity reference; ONNX
Runtime: ``pseudolabeler.onnx`` exported from it), map every output plane back to the image's
size (``ModelSpec.unfit``). It prints images/s end to end and in the engine alone, their ratios,
and the share of time spent outside the engine (pre + post-processing). It also times the same
graph after onnxscript's optimizer, to decide whether exporting a simplified graph would pay.

Weights are random (speed does not depend on them); the images are synthetic target-style
scenes at 1.5x the bucket so the resize work is real.

    python bench/export_speed.py                       # the synthetic config's tiny model, 256x512
    python bench/export_speed.py --arch mit_b0 --size 512x1024 --batch 2 --json speed.json
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def _timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def run_pipeline(spec, images, batch, engine) -> dict:
    """One pass over ``images`` in batches: seconds in pre, engine, post."""
    pre = eng = post = 0.0
    for i in range(0, len(images), batch):
        chunk = images[i:i + batch]
        (fitted, placements), dt = _timed(lambda: tuple(zip(*(spec.fit(im) for im in chunk))))
        pre += dt
        x, dt = _timed(lambda: np.stack(fitted))
        pre += dt
        outs, dt = _timed(lambda: engine(x))
        eng += dt
        _, dt = _timed(lambda: [[spec.unfit(o[j], placements[j]) for o in outs] for j in range(len(chunk))])
        post += dt
    return {"pre": pre, "engine": eng, "post": post, "total": pre + eng + post}


def interleaved_runs(spec, images, batch, engines: dict, repeats: int) -> dict[str, list[dict]]:
    """``repeats`` rounds, each timing every engine once back to back: a slow spell of a shared
    machine then slows both sides of a round instead of whichever engine ran during it."""
    runs: dict[str, list[dict]] = {name: [] for name in engines}
    for _ in range(repeats):
        for name, engine in engines.items():
            runs[name].append(run_pipeline(spec, images, batch, engine))
    return runs


def median_of(runs: list[dict]) -> dict:
    return {k: statistics.median(r[k] for r in runs) for k in runs[0]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arch", default="tiny", help="tiny (the synthetic config's model) or mit_b0 .. mit_b5")
    ap.add_argument("--head", default="daformer")
    ap.add_argument("--size", default="256x512", help="bucket HxW (multiples of 32)")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--images", type=int, default=8, help="images per timed pass")
    ap.add_argument("--repeats", type=int, default=5,
                    help="timed rounds (each runs every engine once); medians are reported")
    ap.add_argument("--threads", type=int, default=0, help="intra-op threads for both runtimes (0 = all cores)")
    ap.add_argument("--no-prn", action="store_true", help="pseudo-labeler without the PRN (self_training export)")
    ap.add_argument("--json", default=None, metavar="FILE")
    args = ap.parse_args()

    import onnxruntime as ort

    from prnseg.export.exporter import parse_size
    from prnseg.export.graphs import PSEUDOLABELER_OUTPUT_ORDER, PseudoLabeler
    from prnseg.export.onnx_export import count_layernorm_modules, export_pseudolabeler
    from prnseg.model_spec import Bucket, ModelSpec
    from prnseg.training.data.synthetic import render_scene
    from prnseg.training.data.transforms import IMG_MEAN, IMG_STD
    from prnseg.training.models.factory import create_model, create_prn

    h, w = parse_size(args.size)
    threads = args.threads or torch.get_num_threads()
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    tiny = args.arch == "tiny"
    model = create_model(args.arch, args.head, head_channels=32 if tiny else None).eval()
    prn = None if args.no_prn else create_prn(model, channels=32 if tiny else 64).eval()
    labeler = PseudoLabeler(model, prn, IMG_MEAN, IMG_STD, 0.5).eval()
    spec = ModelSpec(root=Path("."), name="bench", classes=[str(i) for i in range(19)], palette=[[0, 0, 0]] * 19,
                     ignore_index=255, mean=list(IMG_MEAN), std=list(IMG_STD), buckets=[Bucket(h, w)],
                     max_batch=args.batch, noise_threshold=0.5, noise_source="prn", artefacts={}, ready=True)
    images = [render_scene(np.random.SeedSequence([1, i]), (w * 3 // 2, h * 3 // 2), "target")[0]
              for i in range(args.images)]

    tmp = Path(tempfile.mkdtemp(prefix="prnseg-bench-"))
    onnx_path = export_pseudolabeler(labeler, tmp / "pseudolabeler.onnx", (h, w), 17, count_layernorm_modules(model))
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    # no busy-waiting pool threads left spinning while the PyTorch side is timed
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    sess = ort.InferenceSession(str(onnx_path), sess_options=opts, providers=["CPUExecutionProvider"])

    def ort_engine(x):
        return sess.run(list(PSEUDOLABELER_OUTPUT_ORDER), {"image": x})

    def torch_engine(x):
        with torch.inference_mode():
            return [t.numpy() for t in labeler(torch.from_numpy(x))]

    variants = {"onnxruntime": ort_engine, "pytorch_eager": torch_engine}
    try:
        import onnx
        import onnxscript.optimizer

        optimized = onnxscript.optimizer.optimize(onnx.load(str(onnx_path)))
        onnx.save(optimized, str(tmp / "optimized.onnx"))
        sess_opt = ort.InferenceSession(str(tmp / "optimized.onnx"), sess_options=opts,
                                        providers=["CPUExecutionProvider"])
        variants["onnxruntime_onnxscript_optimized"] = lambda x: sess_opt.run(list(PSEUDOLABELER_OUTPUT_ORDER),
                                                                              {"image": x})
    except Exception as exc:  # the optimizer is an optional comparison, never the measured artefact
        print(f"(onnxscript optimizer skipped: {type(exc).__name__}: {str(exc)[:120]})")

    for engine in variants.values():  # warm-up: allocator arenas, lazy kernels
        run_pipeline(spec, images[: args.batch], args.batch, engine)
    runs = interleaved_runs(spec, images, args.batch, variants, args.repeats)
    results = {name: median_of(r) for name, r in runs.items()}
    round_ratios = [p["total"] / o["total"] for o, p in zip(runs["onnxruntime"], runs["pytorch_eager"])]

    n = len(images)
    ort_r, pt_r = results["onnxruntime"], results["pytorch_eager"]
    summary = {
        "arch": args.arch, "head": args.head, "prn": prn is not None, "bucket": [h, w], "batch": args.batch,
        "images": n, "threads": threads, "weights": "random", "cpu": platform.processor() or platform.machine(),
        "torch": torch.__version__, "onnxruntime": ort.__version__,
        "images_per_s": {k: n / r["total"] for k, r in results.items()},
        "engine_images_per_s": {k: n / r["engine"] for k, r in results.items()},
        "speedup_end_to_end": pt_r["total"] / ort_r["total"],
        "speedup_engine": pt_r["engine"] / ort_r["engine"],
        "speedup_per_round": [round(r, 3) for r in round_ratios],
        "speedup_median_of_rounds": statistics.median(round_ratios),
        "outside_engine_share": {k: (r["pre"] + r["post"]) / r["total"] for k, r in results.items()},
        "seconds": results,
    }
    if "onnxruntime_onnxscript_optimized" in results:
        summary["optimized_graph_speedup"] = ort_r["total"] / results["onnxruntime_onnxscript_optimized"]["total"]

    print(f"{args.arch}/{args.head}{' + PRN' if prn is not None else ''}, bucket {h}x{w}, batch {args.batch}, "
          f"{n} images, {threads} threads, random weights")
    for k, r in results.items():
        print(f"  {k:34s} {n / r['total']:7.2f} img/s end to end   {n / r['engine']:7.2f} img/s engine   "
              f"pre {1e3 * r['pre'] / n:6.1f} ms/img  post {1e3 * r['post'] / n:6.1f} ms/img  "
              f"outside engine {100 * summary['outside_engine_share'][k]:4.1f}%")
    print(f"ONNX Runtime vs PyTorch eager: {summary['speedup_end_to_end']:.2f}x end to end, "
          f"{summary['speedup_engine']:.2f}x engine only; median of back-to-back rounds "
          f"{summary['speedup_median_of_rounds']:.2f}x (rounds: {', '.join(f'{r:.2f}' for r in round_ratios)}; "
          "target >= 2x)")
    if "optimized_graph_speedup" in summary:
        print(f"onnxscript-optimized graph vs exported graph: {summary['optimized_graph_speedup']:.2f}x")
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
