"""`prnseg quickstart`: the whole chain as a user runs it, interrupted with Ctrl-C and resumed."""

import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import time

import pytest

from conftest import default_sigint
from prnseg.quickstart import make_plan


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_plan_with_labels_holds_two_adaptations_of_equal_length_in_the_same_budget():
    from prnseg.errors import PrnsegError
    from prnseg.quickstart import CPU_STEP_SECONDS, FIXED_SECONDS_CPU

    plan = make_plan(10, "cpu", labels=10)
    assert plan.labels == 10
    step = CPU_STEP_SECONDS
    train_s = (plan.source_only_iters * step["source_only"]
               + plan.prn_iters * (step["prn"] + step["prn_labels"]))
    assert train_s + FIXED_SECONDS_CPU == pytest.approx(600, rel=0.02)
    assert plan.prn_iters < make_plan(10, "cpu").prn_iters
    assert plan.source_only_iters == make_plan(10, "cpu").source_only_iters
    with pytest.raises(PrnsegError, match="choose K <= 200"):
        make_plan(10, "cpu", labels=201)


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


@pytest.fixture(scope="module")
def resumed_quickstart(tmp_path_factory):
    """``prnseg quickstart --tiny`` stopped with Ctrl-C during the adaptation, then run again:
    (its folder, the first run's (stdout, stderr, status), the second run's)."""
    out = tmp_path_factory.mktemp("quickstart") / "qs"
    proc = _start(out)
    ckpt = out / "runs" / "prn" / "last.pt"
    deadline = time.time() + 300
    while not ckpt.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    assert proc.poll() is None, proc.communicate()
    proc.send_signal(signal.SIGINT)
    first = (*proc.communicate(timeout=300), proc.returncode, (out / "report.json").exists())
    proc = _start(out)
    second = (*proc.communicate(timeout=1800), proc.returncode)
    return out, first, second


@pytest.mark.slow
def test_quickstart_interrupted_then_resumed(resumed_quickstart):
    out, (stdout, stderr, rc, reported), _ = resumed_quickstart
    assert rc == 130, stdout + stderr
    assert f"run the same command again to resume from here (prnseg quickstart --out {out} --tiny --device cpu)" \
        in stderr
    assert not reported           # the interrupted run wrote no report

    stdout, stderr, rc = resumed_quickstart[2]
    assert rc == 0, stdout + stderr
    assert "resuming the quickstart" in stdout
    # finished stages are skipped; the interrupted training continues from its checkpoint
    assert stdout.count("done already") >= 2
    assert "resuming at iteration" in stdout
    report = json.loads((out / "report.json").read_text())
    assert set(report["target_val_miou"]) == {"source_only", "adapted", "gain"}
    assert report["pseudo_labels_target_train"]["raw_miou"] is not None
    assert report["labelling_images_per_second"] > 0
    # the report line under the labels reads whether or not the mask keeps any pixel (the barely
    # trained --tiny model's confidence mask keeps none)
    kept = report["pseudo_labels_target_train"]["kept_miou"]
    assert ("mIoU there" in stdout) == (kept is not None) and "n/a on the" not in stdout
    assert json.loads((out / "model" / "model.json").read_text())["ready"] is True
    n_labels = sum(1 for _ in (out / "labels" / "labels").rglob("*.png"))
    assert n_labels == report["plan"]["n_target"]
    summary = json.loads((out / "runs" / "prn" / "summary.json").read_text())
    assert summary["step"] == report["plan"]["prn_iters"]


def next_commands(stdout: str) -> list[list[str]]:
    """The ``next:`` commands a run printed, as argument lists (comments dropped)."""
    return [shlex.split(line[len("next: "):].split("#")[0]) for line in stdout.splitlines()
            if line.startswith("next: ")]


def run_printed(cmd: list[str], *extra: str) -> subprocess.CompletedProcess:
    """Run a printed ``prnseg ...`` command (plus ``extra`` options that keep it small) to the end."""
    assert cmd[0] == "prnseg", cmd
    proc = subprocess.run([sys.executable, "-m", "prnseg", *cmd[1:], *extra], capture_output=True, text=True,
                          timeout=1200)
    assert proc.returncode == 0, f"{shlex.join(cmd)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
    return proc


def by_mode(cmds: list[list[str]]) -> dict[str, list[str]]:
    modes = [c[1] for c in cmds]
    assert len(set(modes)) == len(modes), modes
    return {c[1]: c for c in cmds}


@pytest.mark.slow
def test_every_printed_next_command_runs(resumed_quickstart):
    """Each ``next:`` command of the quickstart runs as printed, and so do the ones that label,
    train and export print in turn (training shortened to 2 iterations, the demo stopped with
    Ctrl-C once it serves)."""
    out, _, (stdout, stderr, rc) = resumed_quickstart
    assert rc == 0, stdout + stderr
    printed = next_commands(stdout)
    augmented = [c for c in printed if "--tta" in c]
    assert len(augmented) == 1
    tta = run_printed(augmented[0], "--no-progress")
    assert "test-time augmentation" in tta.stdout and "raw mIoU" in tta.stdout
    first = by_mode([c for c in printed if "--tta" not in c])
    assert set(first) == {"demo", "label", "train"}

    port = free_port()
    demo = subprocess.Popen([sys.executable, "-m", "prnseg", *first["demo"][1:], "--port", str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, preexec_fn=default_sigint)
    try:
        lines = []
        for line in demo.stdout:
            lines.append(line)
            if "prnseg demo: open" in line:
                break
        assert f"http://127.0.0.1:{port}/" in "".join(lines), "".join(lines)
        demo.send_signal(signal.SIGINT)
        assert demo.wait(timeout=60) == 0, "".join(lines) + demo.stdout.read()
    finally:
        if demo.poll() is None:
            demo.kill()
            demo.wait()

    short = ("--set", "train.iters=2", "--no-progress")
    label = by_mode(next_commands(run_printed(first["label"], "--no-progress").stdout))
    assert set(label) == {"train"}
    trained = by_mode(next_commands(run_printed(label["train"], *short).stdout))
    assert set(trained) == {"export"}  # trained on pseudo-labels only: no labelled val set to evaluate on
    exported = by_mode(next_commands(run_printed(trained["export"], "--no-progress").stdout))
    assert set(exported) == {"label"}
    relabelled = run_printed(exported["label"], "--no-progress")
    assert "labelled" in relabelled.stdout

    longer = by_mode(next_commands(run_printed(first["train"], *short).stdout))
    assert set(longer) == {"eval", "export"}
    evaluated = run_printed(longer["eval"], "--no-progress")
    assert "mIoU" in evaluated.stdout
    run_printed(longer["export"], "--no-progress")


def _quickstart(*args, env=None, timeout=120):
    return subprocess.run([sys.executable, "-m", "prnseg", "quickstart", *map(str, args)], capture_output=True,
                          text=True, timeout=timeout, env={**os.environ, "CUDA_VISIBLE_DEVICES": "", **(env or {})})


@pytest.mark.slow
def test_a_device_that_is_not_there_is_refused_before_anything_is_written(tmp_path):
    out = tmp_path / "qs"
    for device, message in (("cuda", "--device cuda: PyTorch sees no CUDA GPU on this machine; use --device cpu "
                                     "(or auto)"),
                            ("tpu", "--device 'tpu': use auto, cpu, cuda or cuda:N")):
        proc = _quickstart("--out", out, "--device", device)
        assert proc.returncode == 2
        assert proc.stderr.strip() == f"prnseg quickstart: error: {message}"
        assert not out.exists()


@pytest.mark.slow
def test_a_plan_made_for_another_device_or_size_is_not_reused(tmp_path):
    from dataclasses import asdict

    from prnseg.quickstart import tiny_plan

    out = tmp_path / "qs"
    out.mkdir()
    (out / "quickstart.json").write_text(json.dumps(asdict(make_plan(10, "cuda"))))
    for args, why in ((["--device", "cpu"], "planned for cuda, this run would use cpu"),
                      ([], "planned for cuda, this run would use cpu"),
                      (["--device", "cpu", "--tiny"], "planned for cuda, this run would use cpu")):
        proc = _quickstart("--out", out, *args)
        assert proc.returncode == 2, proc.stdout + proc.stderr
        assert proc.stderr.strip() == (f"prnseg quickstart: error: {out / 'quickstart.json'}: {why}; pass --restart "
                                       f"to plan again (this discards the run in {out}), or repeat the original "
                                       "options to resume")
    (out / "quickstart.json").write_text(json.dumps(asdict(tiny_plan("cpu"))))
    before = (out / "quickstart.json").read_text()
    for args, why in ((["--device", "cpu"], "planned as --tiny"),
                      (["--budget-minutes", "5"], "planned as --tiny"),
                      (["--tiny", "--device", "cpu", "--labels", "3"], "planned without --labels")):
        proc = _quickstart("--out", out, *args)
        assert proc.returncode == 2 and why in proc.stderr, proc.stderr
    assert sorted(p.name for p in out.iterdir()) == ["quickstart.json"]
    assert before == (out / "quickstart.json").read_text()


def test_quickstart_refuses_a_foreign_folder(tmp_path):
    (tmp_path / "x.txt").write_text("mine")
    proc = subprocess.run([sys.executable, "-m", "prnseg", "quickstart", "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=120, env={**os.environ})
    assert proc.returncode == 2
    assert "not a quickstart folder" in proc.stderr


@pytest.mark.slow
def test_quickstart_with_labels_runs_the_few_label_loop(tmp_path):
    """``--labels 3``: the labelling stage suggests 3 images, a second adaptation reads exactly
    those 3 ground-truth labels, and the report gives the gain; its export command runs."""
    out = tmp_path / "qs"
    proc = _quickstart("--tiny", "--labels", "3", "--out", out, "--device", "cpu", "--no-progress", timeout=1200)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "[7/8] adapt again with the 3 suggested images labelled" in proc.stdout
    assert "[8/8] report" in proc.stdout
    assert "with 3 labels" in proc.stdout
    listed = (out / "labels" / "suggest" / "suggest.txt").read_text().splitlines()
    assert len(listed) == 3
    cfg = (out / "runs" / "prn_labels" / "config.yaml").read_text()
    assert str(out / "labels" / "suggest" / "suggest.txt") in cfg
    report = json.loads((out / "report.json").read_text())
    few = report["few_labels"]
    assert few["k"] == 3 and few["list"] == str(out / "labels" / "suggest" / "suggest.txt")
    evaluated = json.loads((out / "runs" / "prn_labels" / "eval.json").read_text())
    assert few["target_val_miou"]["with_labels"] == evaluated["miou"]
    assert few["target_val_miou"]["gain"] == pytest.approx(evaluated["miou"] - report["target_val_miou"]["adapted"])
    summary = json.loads((out / "runs" / "prn_labels" / "summary.json").read_text())
    assert summary["step"] == report["plan"]["prn_iters"]
    cmds = by_mode([c for c in next_commands(proc.stdout) if "--tta" not in c])
    assert set(cmds) == {"demo", "label", "train", "export"}
    run_printed(cmds["export"], "--no-progress")
    assert json.loads((out / "model-labels" / "model.json").read_text())["ready"] is True

    again = _quickstart("--tiny", "--labels", "3", "--out", out, "--device", "cpu", "--no-progress", timeout=600)
    assert again.returncode == 0, again.stdout + again.stderr
    assert again.stdout.count("done already") >= 4   # nothing trains twice
    assert "with 3 labels" in again.stdout
    refused = _quickstart("--tiny", "--labels", "11", "--out", tmp_path / "qs11", "--device", "cpu")
    assert refused.returncode == 2
    assert "--labels 11: --tiny's target train split has 10 images; choose K <= 10" in refused.stderr
    assert not (tmp_path / "qs11").exists()
