"""Helpers of the scripts in bench/ that decide what a benchmark run measures."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

from prnseg.training.data.synthetic import SYNTH_VERSION

ROOT = Path(__file__).resolve().parents[1]


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"bench_{name}", ROOT / "bench" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_adaptation_rewrites_a_benchmark_of_another_generator_version(tmp_path, capsys):
    adaptation = _load("adaptation")
    root = tmp_path / "data"
    args = ["--source", "2", "--target", "2", "--val", "1", "--size", "64x32", "--seed", "1"]
    adaptation.ensure_benchmark(root, args)
    marker = root / "synth.json"
    meta = json.loads(marker.read_text())
    assert meta["version"] == SYNTH_VERSION and meta["complete"]
    first = marker.stat().st_mtime_ns

    adaptation.ensure_benchmark(root, args)            # current and complete: reused as it is
    assert marker.stat().st_mtime_ns == first

    marker.write_text(json.dumps({**meta, "version": SYNTH_VERSION - 1}))
    adaptation.ensure_benchmark(root, args)
    assert json.loads(marker.read_text())["version"] == SYNTH_VERSION
    assert "writing it again" in capsys.readouterr().out
