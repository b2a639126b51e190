"""The training part: step time and peak memory of ``self_training`` vs ``prn``.

Each mode is a :func:`prnseg.api.train` call in its own fresh interpreter
(:func:`prnseg.api.run_isolated`), so that its peak memory is its own and not the bench
process's, which has held every model benchmarked before it.
"""

from __future__ import annotations

import contextlib
import json
import shutil
from pathlib import Path

from prnseg.bench.settings import Settings
from prnseg.errors import PrnsegError

PEAK_FILE = "peak_memory.json"


def train_and_record_peak(config, out: Path) -> None:
    """In the child: :func:`prnseg.api.train`, then ``OUT/peak_memory.json`` with this process's own
    peak RSS. The kernel's VmHWM of the new process image is used, not the summary's ru_maxrss: a
    child started by vfork/exec inherits the spawning process's high-water mark in ru_maxrss (here:
    every model benchmarked)."""
    from prnseg import api
    from prnseg.atomic import atomic_write_bytes

    api.train(config, out, progress=False)
    hwm = _proc_status_mb("VmHWM")
    if hwm is not None:
        atomic_write_bytes(Path(out) / PEAK_FILE, json.dumps({"vm_hwm_mb": hwm}).encode())


def _proc_status_mb(field_name: str) -> float | None:
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field_name + ":"):
                return int(line.split()[1]) / 1024
    return None


def bench_training(s: Settings, work: Path, log) -> dict:
    """Median step time and peak memory of ``self_training`` and ``prn``, each trained in its own
    process on a tiny synthetic set (step time from its ``summary.json``)."""
    from prnseg import api
    from prnseg.training.data.synthetic import write_benchmark

    crop = s.train_crop
    w, h = 2 * crop, crop
    data = work / "train_data"
    write_benchmark(data, n_source=4, n_target=4, n_val=1, size=(w, h), seed=0, workers=1, progress=False,
                    overwrite=True)
    # the paper recipe (DAFormer + PRN, RCS, pseudo-label margins) for real encoders; the CPU-sized one for tiny
    config = "synthetic" if s.train_arch == "tiny" else "gta2cityscapes"
    result = {"status": "ok", "arch": s.train_arch, "config": config, "crop": crop, "batch": "2+2",
              "steps": s.train_steps, "device": s.device, "modes": {}}
    for mode in ("self_training", "prn"):
        out = work / f"train_{mode}"
        cfg = api.load_config(config, {
            "data.source.root": data / "gta", "data.target.root": data / "cityscapes",
            "data.val.root": data / "cityscapes", "data.source.size": [h, w], "data.target.size": [h, w],
            "data.val.size": [h, w], "data.crop": [crop, crop], "data.workers": 0, "model.arch": s.train_arch,
            "uda.mode": mode, "train.iters": s.train_steps, "train.eval_every": 0,
            "train.checkpoint_every": s.train_steps, "train.log_every": s.train_steps, "train.device": s.device,
            "train.batch_size": 2, "prn.start_iter": 0, **({"train.threads": s.threads} if s.threads else {})})
        summary_path = out / "summary.json"
        try:  # its output goes to a log next to the run (removed with the work folder)
            api.run_isolated(train_and_record_peak, cfg, out, output_file=work / f"train_{mode}.log")
            reason = None if summary_path.is_file() else f"{summary_path}: not written"
        except PrnsegError as exc:
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if reason is not None:
            result["modes"][mode] = {"status": "failed", "reason": reason[:300]}
            log(f"      training {mode} failed: {reason[:300]}")
            continue
        summ = json.loads(summary_path.read_text())
        hwm = json.loads((out / PEAK_FILE).read_text()) if (out / PEAK_FILE).is_file() else {}
        if summ.get("peak_cuda_allocated_mb") is not None:
            peak, kind = summ["peak_cuda_allocated_mb"], "CUDA max_memory_allocated of the run"
        elif hwm.get("vm_hwm_mb"):
            peak, kind = hwm["vm_hwm_mb"], "peak RSS of the training process (Linux VmHWM)"
        else:
            peak, kind = summ.get("peak_rss_mb"), "peak RSS of the training process (ru_maxrss)"
        result["modes"][mode] = {"status": "ok", "median_step_s": summ.get("median_step_seconds"),
                                 "steps_timed": summ.get("steps_timed"), "peak_memory_mb": round(peak, 1)}
        result["amp"] = summ.get("amp")
        result["memory_kind"] = kind
        if not s.keep:
            shutil.rmtree(out, ignore_errors=True)
    modes = result["modes"]
    if all(m.get("status") == "ok" for m in modes.values()):
        st, prn = modes["self_training"], modes["prn"]
        result["step_time_ratio"] = round(prn["median_step_s"] / st["median_step_s"], 3)
        result["memory_ratio"] = round(prn["peak_memory_mb"] / st["peak_memory_mb"], 3)
    else:
        result["status"] = "failed"
        result["reason"] = "; ".join(f"{k}: {m['reason']}" for k, m in modes.items() if m.get("status") != "ok")
    return result
