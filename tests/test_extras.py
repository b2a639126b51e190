"""A capability whose pip extra is missing ends in one line naming the extra, not a traceback:
checked up front by each command, and caught where an import deeper down fails."""

import subprocess
import sys

import pytest

from conftest import run_cli
from prnseg import api, cli
from prnseg.extras import EXTRAS, MissingExtraError, missing_extra, require

# a sitecustomize that makes the named modules absent in every interpreter of the run, children
# of multiprocessing's spawn included (they read the same environment)
HIDE = """
import importlib.abc, sys
class _Absent(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        top = name.split(".")[0]
        if top in {hidden!r}:
            raise ModuleNotFoundError(f"No module named {{top!r}}", name=top)
sys.meta_path.insert(0, _Absent())
"""


def _env_without(tmp_path, *modules):
    import os

    site = tmp_path / "hide"
    site.mkdir(exist_ok=True)
    (site / "sitecustomize.py").write_text(HIDE.format(hidden=set(modules)))
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])}


def test_train_without_transformers_names_the_train_extra_and_writes_nothing(tmp_path):
    env = _env_without(tmp_path, "transformers")
    out = tmp_path / "run"
    proc = run_cli("train", "--config", "synthetic", "--set", f"data.source.root={tmp_path}", "--set",
                   "uda.mode=source_only", "--out", out, check=False, env=env)
    assert proc.returncode == 2
    assert proc.stderr.strip() == ("prnseg train: error: training needs transformers, which is not installed: "
                                   "pip install 'prnseg[train]'")
    assert not out.exists()


def test_quickstart_without_torch_says_torch_comes_first(tmp_path):
    env = _env_without(tmp_path, "torch", "onnx")
    proc = run_cli("quickstart", "--tiny", "--out", tmp_path / "qs", check=False, env=env)
    assert proc.returncode == 2
    assert proc.stderr.strip() == (
        "prnseg quickstart: error: the quickstart (it trains, then exports) needs torch, onnx, which are not "
        "installed: pip install 'prnseg[export]' (install torch first, the build for your machine: see the "
        "README's Install)")


def test_mistakes_in_the_inputs_still_come_first(tmp_path):
    env = _env_without(tmp_path, "transformers")
    proc = run_cli("train", "--config", "synthetic", "--set", f"data.source.root={tmp_path}/nowhere", check=False,
                   env=env)
    assert proc.returncode == 2 and "folder not found (data.source.root)" in proc.stderr


def test_require_and_the_import_error_fallback(monkeypatch):
    require("train", "x")     # installed here
    monkeypatch.setitem(EXTRAS, "train", ("torch", "not_a_module_here"))
    with pytest.raises(MissingExtraError, match=r"^x needs not_a_module_here, which is not installed: "
                                                r"pip install 'prnseg\[train\]'$"):
        require("train", "x")
    err = missing_extra(ModuleNotFoundError("No module named 'onnx.helper'", name="onnx.helper"), "this command")
    assert str(err) == "this command needs onnx, which is not installed: pip install 'prnseg[export]'"
    assert missing_extra(ModuleNotFoundError("No module named 'foo'", name="foo"), "x") is None
    assert missing_extra(ValueError("onnx"), "x") is None


def test_cli_turns_a_deeper_missing_import_into_one_line_and_lets_other_bugs_through(monkeypatch, capsys):
    import prnseg.training.train_cli as train_cli

    def fails(args, name):
        raise ModuleNotFoundError(f"No module named {name!r}", name=name)

    monkeypatch.setattr(train_cli, "run_train", lambda args: fails(args, "gradio"))
    assert cli.main(["train", "--config", "synthetic"]) == 2
    assert capsys.readouterr().err.strip() == ("prnseg train: error: this command needs gradio, which is not "
                                               "installed: pip install 'prnseg[demo]'")
    monkeypatch.setattr(train_cli, "run_train", lambda args: fails(args, "no_such_thing"))
    with pytest.raises(ModuleNotFoundError):
        cli.main(["train", "--config", "synthetic"])


class _Conn:
    def send(self, message):
        self.message = message

    def close(self):
        pass


def _needs_onnx():
    import onnx_is_not_here  # noqa: F401


def test_an_isolated_run_reports_a_missing_extra_in_one_line(monkeypatch):
    monkeypatch.setitem(sys.modules, "onnx_is_not_here", None)     # import raises ModuleNotFoundError
    conn = _Conn()
    monkeypatch.setattr("prnseg.extras.MODULE_EXTRA", {"onnx_is_not_here": "export"})
    api._isolated_main(conn, _needs_onnx, (), {}, None)
    assert conn.message == ("error", "prnseg.api._needs_onnx needs onnx_is_not_here, which is not installed: "
                                     "pip install 'prnseg[export]'")


def test_bench_script_child_runs_name_the_extra(tmp_path):
    """bench/adaptation.py trains in spawned children: their missing extra reaches the parent as one line."""
    env = _env_without(tmp_path, "transformers")
    code = ("from prnseg import api\n"
            "cfg = api.override(api.load_config('synthetic'), {'data.source.root': %r, 'uda.mode': 'source_only'})\n"
            "try:\n    api.run_isolated('train', cfg, %r)\n"
            "except api.IsolatedRunError as e:\n    print('ISOLATED:', e)\n") % (str(tmp_path), str(tmp_path / "r"))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert "ISOLATED: training needs transformers, which is not installed: pip install 'prnseg[train]'" \
        in proc.stdout, proc.stderr
