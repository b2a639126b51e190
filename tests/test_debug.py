"""PRNSEG_DEBUG=1: the traceback behind the CLI's one-line error, from a real subprocess."""

import os

from conftest import run_cli


def test_prnseg_debug_prints_the_traceback_behind_the_one_line_error(tmp_path):
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "model.json").write_text("{")  # unreadable: the JSON error is the hidden cause
    (tmp_path / "in").mkdir()
    args = ("label", tmp_path / "in", "--model", tmp_path / "model", "--out", tmp_path / "out")
    env = {k: v for k, v in os.environ.items() if k != "PRNSEG_DEBUG"}
    plain = run_cli(*args, check=False, env=env, timeout=120)
    assert plain.returncode == 2
    [line] = plain.stderr.splitlines()
    assert line.startswith("prnseg label: error: ") and "model.json: unreadable" in line
    for off in ("0", ""):
        assert run_cli(*args, check=False, env={**env, "PRNSEG_DEBUG": off}, timeout=120).stderr == plain.stderr
    debug = run_cli(*args, check=False, env={**env, "PRNSEG_DEBUG": "1"}, timeout=120)
    assert debug.returncode == 2 and debug.stdout == plain.stdout
    err = debug.stderr.splitlines()
    assert err[-1] == line  # the one-line error stays the last line
    assert err[0] == "Traceback (most recent call last):"
    text = debug.stderr
    assert "json.decoder.JSONDecodeError" in text  # the cause ``raise ... from None`` hid
    assert "load_model_spec" in text and "prnseg.model_spec.ModelSpecError: " in text
