"""`prnseg quickstart`: the whole chain as a user runs it, interrupted with Ctrl-C and resumed."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from conftest import default_sigint
from prnseg.quickstart import make_plan


def test_plan_fits_the_budget_and_rejects_tiny_budgets():
    from prnseg.errors import PrnsegError
    from prnseg.quickstart import CPU_STEP_SECONDS, FIXED_SECONDS_CPU

    plan = make_plan(10, "cpu")
    train_s = plan.source_only_iters * CPU_STEP_SECONDS["source_only"] + plan.prn_iters * CPU_STEP_SECONDS["prn"]
    assert train_s + FIXED_SECONDS_CPU == pytest.approx(600, rel=0.02)
    assert make_plan(20, "cpu").prn_iters > plan.prn_iters
    assert make_plan(10, "cuda").prn_iters > plan.prn_iters
    with pytest.raises(PrnsegError, match="too small"):
        make_plan(1, "cpu")


def _start(out):
    return subprocess.Popen([sys.executable, "-m", "prnseg", "quickstart", "--tiny", "--out", str(out),
                             "--no-progress", "--device", "cpu"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=default_sigint)


def test_quickstart_interrupted_then_resumed(tmp_path):
    out = tmp_path / "qs"
    proc = _start(out)
    ckpt = out / "runs" / "prn" / "last.pt"
    deadline = time.time() + 300
    while not ckpt.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    assert proc.poll() is None, proc.communicate()
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stdout + stderr
    assert "run the same command again to resume" in stderr
    assert not (out / "report.json").exists()

    proc = _start(out)
    stdout, stderr = proc.communicate(timeout=600)
    assert proc.returncode == 0, stdout + stderr
    assert "resuming the quickstart" in stdout
    # finished stages are skipped; the interrupted training continues from its checkpoint
    assert stdout.count("done already") >= 2
    assert "resuming at iteration" in stdout
    report = json.loads((out / "report.json").read_text())
    assert set(report["target_val_miou"]) == {"source_only", "adapted", "gain"}
    assert report["pseudo_labels_target_train"]["raw_miou"] is not None
    assert report["labelling_images_per_second"] > 0
    assert json.loads((out / "model" / "model.json").read_text())["ready"] is True
    n_labels = sum(1 for _ in (out / "labels" / "labels").rglob("*.png"))
    assert n_labels == report["plan"]["n_target"]
    assert "next:" in stdout and "prnseg demo --model" in stdout
    summary = json.loads((out / "runs" / "prn" / "summary.json").read_text())
    assert summary["step"] == report["plan"]["prn_iters"]


def test_quickstart_refuses_a_foreign_folder(tmp_path):
    (tmp_path / "x.txt").write_text("mine")
    proc = subprocess.run([sys.executable, "-m", "prnseg", "quickstart", "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=120, env={**os.environ})
    assert proc.returncode == 2
    assert "not a quickstart folder" in proc.stderr
