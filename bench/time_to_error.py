"""How long a trivial mistake takes to be reported: each command is run as a user would
(``python -m prnseg ...`` in a fresh process) and timed from start to its one-line error.

    python bench/time_to_error.py [--repeat 3]

Prints one row per mistake: the median wall time, the exit status and the message.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MISTAKES = [
    ("missing checkpoint (eval)", ["eval", "{tmp}/runs/x/last.pt", "--data", "{tmp}"]),
    ("missing checkpoint (export)", ["export", "{tmp}/runs/x/last.pt", "--out", "{tmp}/model"]),
    ("missing checkpoint (train.init_from)", ["train", "--config", "synthetic", "--set", "data.source.root={tmp}",
                                              "--set", "uda.mode=source_only",
                                              "--set", "train.init_from={tmp}/runs/x/last.pt"]),
    ("model.json given as checkpoint", ["eval", "{tmp}/exported/model.json", "--data", "{tmp}"]),
    ("missing model folder (label)", ["label", "{tmp}", "--model", "{tmp}/models/nowhere", "--out", "{tmp}/labels"]),
    ("missing model folder (demo)", ["demo", "--model", "{tmp}/models/nowhere"]),
    ("missing model folder (bench)", ["bench", "--model", "{tmp}/models/nowhere"]),
    ("bad --size (export)", ["export", "{tmp}/runs/x/last.pt", "--out", "{tmp}/model", "--size", "512x1000"]),
    ("bad --size (synth)", ["synth", "{tmp}/synth", "--size", "256by512"]),
    ("bad --sizes (bench)", ["bench", "--sizes", "100x200"]),
]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=3, help="runs per mistake; the median is reported (default 3)")
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "exported").mkdir()
        (Path(tmp) / "exported" / "model.json").write_text("{}")
        for name, argv in MISTAKES:
            argv = [a.format(tmp=tmp) for a in argv]
            times, proc = [], None
            for _ in range(max(1, args.repeat)):
                t0 = time.perf_counter()
                proc = subprocess.run([sys.executable, "-m", "prnseg", *argv], capture_output=True, text=True,
                                      cwd=tmp)
                times.append(time.perf_counter() - t0)
            message = proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else "(no message)"
            rows.append((name, statistics.median(times), proc.returncode, message.replace(tmp, "TMP")))
    width = max(len(r[0]) for r in rows)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"{os.cpu_count()} CPUs, 1-minute load average {load:.1f}; median of {args.repeat} runs each")
    print(f"{'mistake':<{width}}  seconds  status  message")
    for name, seconds, rc, message in rows:
        print(f"{name:<{width}}  {seconds:7.2f}  {rc:6d}  {message}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
