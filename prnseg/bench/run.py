"""``prnseg bench`` from start to end: plan the targets, measure each, time training, report.

One target failing to export is a failed row, not a failed run; only a bad ``--model`` stops it,
because then every row would fail the same way.
"""

from __future__ import annotations

import argparse
import gc
import shutil
import sys
from pathlib import Path

from prnseg.bench.errors import BenchError, failure_reason
from prnseg.bench.inference import bench_target
from prnseg.bench.machine import machine_info
from prnseg.bench.measure import render_images, write_e2e_images
from prnseg.bench.progress import Progress, plan_weights
from prnseg.bench.report import Results
from prnseg.bench.settings import Settings, settings_from_args
from prnseg.bench.targets import build_random_target, model_target
from prnseg.bench.training import bench_training
from prnseg.errors import PrnsegError

WORK_MARKER = ".prnseg-bench-work"


def run_bench(args: argparse.Namespace) -> int:
    """``prnseg bench``: the arguments' settings, measured by :func:`prnseg.api.bench`."""
    from prnseg import api

    api.bench(settings_from_args(args))
    return 0


def measure(s: Settings) -> Results:
    """Measure everything ``s`` asks for, writing the report as it goes."""
    import torch

    if s.threads:
        torch.set_num_threads(s.threads)
    targets = _plan_targets(s)
    work = _prepare_work(s.out)
    results = _start_results(s)
    progress = Progress(plan_weights(s, targets))
    try:
        for arch, hw in targets:
            _bench_one(arch, hw, s, work, results, progress)
        if s.train:
            with progress.step(f"training: self_training vs prn, {s.train_arch}, {s.train_steps} steps each"):
                results.training = bench_training(s, work, _log)
        results.complete = True
        results.save()
    finally:
        if not s.keep:
            shutil.rmtree(work, ignore_errors=True)
    return results


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _plan_targets(s: Settings) -> list[tuple[str, tuple[int, int]]]:
    """(arch, size) of every target; with ``--model``, checks the sizes and batches against it first."""
    if s.model is None:
        return [(a, hw) for a in s.archs for hw in s.sizes]
    from prnseg.model_spec import load_model_spec

    spec = load_model_spec(s.model)
    buckets = [(b.height, b.width) for b in spec.buckets]
    for hw in s.sizes:
        if hw not in buckets:
            raise BenchError(f"--sizes {hw[0]}x{hw[1]}: not a bucket of {s.model} (it has "
                             f"{', '.join(f'{h}x{w}' for h, w in buckets)}); re-export with --size")
    s.sizes = s.sizes or buckets
    if max(s.batches) > spec.max_batch:
        raise BenchError(f"--batch {max(s.batches)}: above {s.model}'s max_batch {spec.max_batch}; re-export "
                         "with --max-batch")
    if s.checkpoint is not None and not s.checkpoint.is_file():
        raise BenchError(f"--checkpoint {s.checkpoint}: file not found")
    return [(str(spec.raw.get("checkpoint", {}).get("arch", "model")), hw) for hw in s.sizes]


def _prepare_work(out: Path) -> Path:
    if out.exists() and not out.is_dir():
        raise BenchError(f"--out {out}: exists and is not a directory; choose another --out")
    work = out / "work"
    if work.exists():
        if not (work / WORK_MARKER).is_file():
            raise BenchError(f"{work}: exists and was not made by prnseg bench; choose another --out")
        shutil.rmtree(work)
    work.mkdir(parents=True)
    (work / WORK_MARKER).write_text("scratch space of prnseg bench; removed by the next run\n")
    return work


def _start_results(s: Settings) -> Results:
    """The report with the machine and the caveats known before anything runs, saved and announced."""
    results = Results(s, machine_info(s.device))
    notes = results.notes
    if s.model is None:
        notes.append("Encoders have random (untrained) weights, constant tensors (zero biases, unit norm weights) "
                     "jittered as a trained network's are: speed is what a trained model of the same architecture "
                     "gets; parity compares backends on the same random network.")
    la, cores = results.machine["load_average_start"], results.machine["cpu_cores_usable"]
    if la and cores and la[0] > 0.5 * cores:
        notes.append(f"The machine was busy when the run started (1-minute load average {la[0]} on {cores} "
                     "usable cores): CPU timings are slower than on an idle machine.")
    results.save()
    gpu = next((g["name"] for g in results.machine["gpus"] if s.on_cuda and f"cuda:{g['index']}" == s.device), None)
    _log(f"prnseg bench on {results.machine['cpu']} ({results.machine['cpu_cores_usable']} cores)"
         + (f" and {gpu}" if gpu else "") + f"; device {s.device}; writing {s.out / 'bench.json'}")
    if s.model is None:
        _log(f"models: {', '.join(s.archs)} with random weights at {', '.join(f'{h}x{w}' for h, w in s.sizes)}")
    return results


def _bench_one(arch: str, hw: tuple[int, int], s: Settings, work: Path, results: Results,
               progress: Progress) -> None:
    """Build or open one target and measure its rows; its scratch files go whatever happens."""
    import torch

    h, w = hw
    target = None
    try:
        if s.model is None:
            with progress.step(f"{arch} {h}x{w}: build (random weights) and prnseg export"):
                target = build_random_target(arch, hw, s, work, _log)
        else:
            target = model_target(s, hw, _log)
        results.exports.append(target.export_info)
        images = render_images(hw, s.images)
        e2e_dir = write_e2e_images(images, work / f"images_{h}x{w}")
        bench_target(target, s, images, e2e_dir, work, results, progress, _log)
    except Exception as exc:  # one model failing to export must not stop the others
        if s.model is not None and isinstance(exc, PrnsegError):
            raise
        _log(f"      {arch} {h}x{w} failed: {failure_reason(exc)}")
        results.inference.append({"model": f"{arch}_{h}x{w}", "arch": arch, "size": f"{h}x{w}",
                                  "batch": "-", "backend": "export", "precision": "-", "status": "failed",
                                  "reason": failure_reason(exc)})
    finally:
        if not s.keep:
            for p in work.glob(f"model_{arch}_{h}x{w}*"):
                shutil.rmtree(p, ignore_errors=True)
        target = None
        gc.collect()
        if s.on_cuda:
            torch.cuda.empty_cache()
    results.save()
