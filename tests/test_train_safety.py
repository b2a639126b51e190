"""Training loses nothing to a diverging run or a resume: every step's losses are checked before
any checkpoint is written, config values are range-checked, a resume logs each step once."""

import csv
import math
import shutil
import signal

import pytest
import torch
from conftest import run_cli, tiny_train_args

from prnseg.errors import ConfigError
from prnseg.training.config import load_config


@pytest.mark.parametrize("override, message", [
    ("train.checkpoint_every=0", "'train.checkpoint_every' = 0; must be >= 1"),
    ("train.iters=-5", "'train.iters' = -5; must be >= 1"),
    ("uda.ema_alpha=5", "'uda.ema_alpha' = 5.0; must be in [0, 1]"),
    ("optim.lr=.nan", "'optim.lr' = nan; must be > 0"),
    ("train.log_every=0", "'train.log_every' = 0; must be >= 1"),
    ("prn.noise_threshold=1.5", "'prn.noise_threshold' = 1.5; must be in [0, 1]"),
    ("data.crop=[0,128]", "'data.crop' = [0, 128]; must be 2 integers >= 1"),
    ("prn.eps_low=0.5", "'prn.eps_low' = 0.5 > 'prn.eps_high' = 0.2"),
    ("uda.pseudo_margins=[64,64,0,0]", "leaves no pixel of the 128x128 'data.crop' for the target loss"),
])
def test_config_values_are_range_checked(override, message):
    with pytest.raises(ConfigError) as err:
        load_config("synthetic", [override])
    assert message in str(err.value) and "\n" not in str(err.value)


def test_out_of_range_values_are_one_line_cli_errors(tmp_path):
    for override in ("train.checkpoint_every=0", "train.iters=-5", "uda.ema_alpha=5"):
        proc = run_cli("train", "--config", "synthetic", "--set", override, "--out", tmp_path / "run", check=False)
        key = override.split("=")[0]
        assert proc.returncode == 2, (override, proc.stderr)
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and f"'{key}'" in lines[0], proc.stderr
    assert not (tmp_path / "run" / "last.pt").exists()


@pytest.mark.slow
def test_a_non_finite_loss_stops_the_run_and_keeps_the_last_good_checkpoint(synth_root, tmp_path):
    out = tmp_path / "run"
    # an absurd learning rate: iteration 1 is computed from sane weights, iteration 2 from overflowed ones;
    # losses are logged only every 100 steps, checkpoints written every step
    args = tiny_train_args(synth_root, out, "self_training", iters=6,
                           extra=("optim.lr=1e30", "optim.warmup_iters=0", "train.log_every=100"))
    proc = run_cli(*args, check=False)
    assert proc.returncode == 2, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if "error" in ln or "Traceback" in ln]
    assert len(lines) == 1 and lines[0].startswith("prnseg train: error: loss '"), proc.stderr
    assert "is nan at iteration" in lines[0] or "is inf at iteration" in lines[0]
    bad_step = int(lines[0].split("at iteration ")[1].split(",")[0])
    assert bad_step >= 2 and f"{out / 'last.pt'} keeps the last good checkpoint" in lines[0]
    state = torch.load(out / "last.pt", map_location="cpu", weights_only=True)
    assert state["step"] == bad_step - 1
    for name in ("student", "teacher"):
        assert all(torch.isfinite(t).all() for _, t in tensors(state[name]) if t.is_floating_point()), name


def tensors(tree, key=""):
    """(key path, tensor) for every tensor in a checkpoint's nested dicts."""
    if isinstance(tree, torch.Tensor):
        yield key, tree
    elif isinstance(tree, dict):
        for k, v in tree.items():
            yield from tensors(v, f"{key}.{k}")


@pytest.mark.slow
def test_resume_logs_each_step_once(synth_root, tmp_path):
    out = tmp_path / "run"
    run_cli(*tiny_train_args(synth_root, out, "source_only", iters=2))
    shutil.copyfile(out / "last.pt", tmp_path / "step2.pt")
    run_cli(*tiny_train_args(synth_root, out, "source_only", iters=4), "--resume")
    # a crash after steps 3 and 4 were logged but before their checkpoint reached the disk
    shutil.copyfile(tmp_path / "step2.pt", out / "last.pt")
    with open(out / "metrics.csv", "a") as f:
        f.write("5,0.1,torn")  # and a line cut short by the kill
    run_cli(*tiny_train_args(synth_root, out, "source_only", iters=4), "--resume")
    with open(out / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["step"]) for r in rows] == [1, 2, 3, 4]
    assert all(math.isfinite(float(r["source"])) for r in rows)


# Run `prnseg train` with torch.save replaced by one that, on its KILL_AT-th call, writes half of
# the checkpoint's bytes into the open temporary file and then SIGKILLs its own process: the kill
# lands inside a checkpoint write every time, not wherever a timer happens to fall.
_KILL_INSIDE_SAVE = """
import io, os, signal, sys
import torch
KILL_AT = int(sys.argv[1])
real_save, calls = torch.save, [0]
def save(obj, f, *args, **kwargs):
    calls[0] += 1
    if calls[0] == KILL_AT:
        buf = io.BytesIO()
        real_save(obj, buf, *args, **kwargs)
        f.write(buf.getvalue()[: len(buf.getvalue()) // 2])
        f.flush()
        os.fsync(f.fileno())
        os.kill(os.getpid(), signal.SIGKILL)
    return real_save(obj, f, *args, **kwargs)
torch.save = save
from prnseg.cli import main
sys.exit(main(sys.argv[2:]))
"""


@pytest.mark.slow
def test_a_kill_inside_a_checkpoint_write_keeps_the_previous_one_and_resumes_exactly(synth_root, tmp_path):
    import subprocess
    import sys

    from prnseg.training.checkpoint import load_checkpoint

    killed, straight = tmp_path / "killed", tmp_path / "straight"
    args = tiny_train_args(synth_root, killed, "self_training", iters=4, extra=("train.threads=1",))
    proc = subprocess.run([sys.executable, "-c", _KILL_INSIDE_SAVE, "3", *args], capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    torn = list(killed.glob(".last.pt.*.tmp"))
    assert len(torn) == 1 and torn[0].stat().st_size > 0, "the kill did not land inside a checkpoint write"
    with pytest.raises(Exception):  # the torn temporary file is not a checkpoint ...
        torch.load(torn[0], map_location="cpu", weights_only=True)
    assert load_checkpoint(killed / "last.pt")["step"] == 2  # ... and last.pt is still iteration 2's, whole

    run_cli(*args, "--resume")
    assert not list(killed.glob("*.tmp")) and not list(killed.glob(".*.tmp")), "the torn write was left behind"
    run_cli(*tiny_train_args(synth_root, straight, "self_training", iters=4, extra=("train.threads=1",)))
    a, b = (load_checkpoint(d / "last.pt") for d in (straight, killed))
    assert a["step"] == b["step"] == 4
    for name in ("student", "teacher"):
        ta, tb = dict(tensors(a[name], name)), dict(tensors(b[name], name))
        assert ta.keys() == tb.keys() and all(torch.equal(ta[k], tb[k]) for k in ta), f"{name} differs after resume"
