"""The training part: step time and peak memory of ``self_training`` vs ``prn``.

Each mode runs in its own ``prnseg train`` process, so that its peak memory is its own and not
the bench process's, which has held every model benchmarked before it.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

from prnseg.bench.settings import Settings

PEAK_FILE = "peak_memory.json"
# ``prnseg train`` in a child process that then records its own peak RSS. The kernel's VmHWM of
# the new process image is used, not the summary's ru_maxrss: a child started by vfork/exec
# inherits the spawning process's high-water mark in ru_maxrss (here: every model benchmarked).
TRAIN_ENTRY = "import sys; from prnseg.bench.training import train_entry; sys.exit(train_entry(sys.argv[1:]))"


def train_entry(argv: list[str]) -> int:
    """Run ``prnseg ARGV`` (a train command with ``--out DIR``), then write ``DIR/peak_memory.json``."""
    from prnseg.cli import main
    from prnseg.serve.image_io import atomic_write_bytes

    rc = main(argv)
    hwm = _proc_status_mb("VmHWM")
    if rc == 0 and hwm is not None:
        out = Path(argv[argv.index("--out") + 1])
        atomic_write_bytes(out / PEAK_FILE, json.dumps({"vm_hwm_mb": hwm}).encode())
    return rc


def _proc_status_mb(field_name: str) -> float | None:
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field_name + ":"):
                return int(line.split()[1]) / 1024
    return None


def bench_training(s: Settings, work: Path, log) -> dict:
    """Median step time and peak memory of ``self_training`` and ``prn``, each in its own
    ``prnseg train`` process on a tiny synthetic set (step time from its ``summary.json``)."""
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
        sets = [f"data.source.root={data / 'gta'}", f"data.target.root={data / 'cityscapes'}",
                f"data.val.root={data / 'cityscapes'}", f"data.source.size=[{h},{w}]",
                f"data.target.size=[{h},{w}]", f"data.val.size=[{h},{w}]", f"data.crop=[{crop},{crop}]",
                "data.workers=0", f"model.arch={s.train_arch}", f"uda.mode={mode}", f"train.iters={s.train_steps}",
                "train.eval_every=0", f"train.checkpoint_every={s.train_steps}", f"train.log_every={s.train_steps}",
                f"train.device={s.device}", "train.batch_size=2", "prn.start_iter=0"]
        if s.threads:
            sets.append(f"train.threads={s.threads}")
        argv = ["train", "--config", config, "--out", str(out), "--no-progress",
                *[a for kv in sets for a in ("--set", kv)]]
        proc = subprocess.run([sys.executable, "-c", TRAIN_ENTRY, *argv], capture_output=True, text=True)
        summary_path = out / "summary.json"
        if proc.returncode != 0 or not summary_path.is_file():
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
            result["modes"][mode] = {"status": "failed", "reason": tail[0][:300]}
            log(f"      training {mode} failed: {tail[0][:300]}")
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
