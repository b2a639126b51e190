"""prnseg bench: one real --quick run (export, PyTorch, ONNX Runtime, prnseg label, training steps),
the same on an exported model, argument errors, and the parity / timing helpers."""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest

from conftest import run_cli
from prnseg.bench import make_batches, parity, timed_runs

HAS_TENSORRT = importlib.util.find_spec("tensorrt") is not None


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench") / "out"
    proc = run_cli("bench", "--quick", "--keep", "--out", out)
    return out, json.loads((out / "bench.json").read_text()), (out / "bench.md").read_text(), proc


def _rows(doc, **match):
    return [r for r in doc["inference"] if all(r.get(k) == v for k, v in match.items())]


@pytest.mark.slow
def test_quick_run_states_the_machine(quick):
    _, doc, md, _ = quick
    assert doc["format"] == "prnseg-bench" and doc["complete"] is True
    m = doc["machine"]
    assert m["cpu"] and m["cpu_cores_usable"] >= 1 and m["ram_gb"] > 0 and m["device"] == "cpu"
    assert m["versions"]["torch"] and m["versions"]["onnxruntime"] and m["versions"]["tensorrt"]
    assert doc["settings"]["weights"].startswith("random")
    assert "Machine:" in md and m["cpu"] in md and "GPU: none" in md


@pytest.mark.slow
def test_quick_run_measures_every_backend_with_parity(quick):
    out, doc, md, proc = quick
    torch32 = _rows(doc, backend="pytorch", precision="fp32")
    assert len(torch32) == 1 and torch32[0]["status"] == "ok" and torch32[0]["is_reference"]
    assert torch32[0]["parity"]["label_agreement_pct"] == 100.0
    for prec, floor in (("fp32", 99.9), ("fp16", 99.0)):
        (row,) = _rows(doc, backend="onnxruntime", precision=prec)
        assert row["status"] == "ok", row
        e = row["engine"]
        assert e["iters"] >= 2 and 0 < e["latency_ms_median"] <= e["latency_ms_p90"]
        assert e["images_per_s"] == pytest.approx(1000 * e["iters"] / (e["iters"] * e["latency_ms_median"]), rel=1.0)
        p = row["parity"]
        assert p["reference"] == "pytorch fp32" and p["pixels"] == 2 * 128 * 256
        assert floor <= p["label_agreement_pct"] <= 100 and p["noise_agreement_pct"] >= floor - 1
        e2e = row["end_to_end"]
        assert e2e["images"] == 2 and e2e["failed"] == 0 and e2e["images_per_s"] > 0
        assert "CPUExecutionProvider" in row["runs_on"]
    (trt,) = _rows(doc, backend="tensorrt")
    if not HAS_TENSORRT:
        assert trt["status"] == "not installed" and "engine" not in trt
        assert "| tensorrt |" in md and "not installed" in md
    assert "skipped" in _rows(doc, backend="pytorch", precision="bf16/fp16 autocast")[0]["status"]
    for backend in ("pytorch", "onnxruntime", "tensorrt"):
        assert f"| {backend} |" in md
    assert "parity reference" in md
    assert "tiny_128x256 b1 onnxruntime fp32: engine" in proc.stdout
    assert "[1/" in proc.stderr and "done in" in proc.stderr


@pytest.mark.slow
def test_quick_run_times_training_modes(quick):
    out, doc, md, _ = quick
    t = doc["training"]
    assert t["status"] == "ok" and t["arch"] == "tiny" and t["steps"] == 3
    st, prn = t["modes"]["self_training"], t["modes"]["prn"]
    for m in (st, prn):
        assert m["median_step_s"] > 0 and m["peak_memory_mb"] > 50 and m["steps_timed"] == 3
    assert t["step_time_ratio"] == pytest.approx(prn["median_step_s"] / st["median_step_s"], rel=1e-2)
    assert "peak RSS" in t["memory_kind"] and "Step-time ratio prn / self_training" in md
    # the training process's own high-water mark, not the (large) bench process's it was spawned from
    peak = json.loads((out / "work" / "train_prn" / "peak_memory.json").read_text())["vm_hwm_mb"]
    assert prn["peak_memory_mb"] == pytest.approx(peak, abs=0.1)


@pytest.mark.slow
def test_bench_on_an_exported_model(quick, tmp_path):
    work = quick[0] / "work"
    model = work / "model_tiny_128x256"
    assert (model / "model.json").is_file() and (work / "images_128x256").is_dir()
    out = tmp_path / "b"
    run_cli("bench", "--model", model, "--no-train", "--iters", "2", "--images", "2", "--out", out)
    doc = json.loads((out / "bench.json").read_text())
    assert doc["settings"]["model"] == str(model) and doc["settings"]["sizes"] == ["128x256"]
    (pt,) = _rows(doc, backend="pytorch", precision="fp32")
    assert pt["status"] == "skipped" and "--checkpoint" in pt["reason"]
    (ref,) = _rows(doc, backend="onnxruntime", precision="fp32")
    assert ref["status"] == "ok" and ref["is_reference"] and ref["parity"]["label_agreement_pct"] == 100.0
    (fp16,) = _rows(doc, backend="onnxruntime", precision="fp16")
    assert fp16["status"] == "ok" and fp16["parity"]["reference"] == "onnxruntime fp32"
    assert doc["training"] == {} and not (out / "work").exists()


@pytest.mark.parametrize("args, message", [
    (["--sizes", "100x200"], "multiple of 32"),
    (["--model", "does/not/exist"], "model directory not found"),
    pytest.param(["--arch", "resnet50"], "unknown encoder", marks=pytest.mark.slow),  # loads torch: ~6 s
])
def test_bad_arguments_are_one_line_errors(tmp_path, args, message):
    proc = run_cli("bench", *args, "--out", tmp_path / "o", check=False)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("prnseg bench: error:") and message in lines[0]
    assert not (tmp_path / "o" / "bench.json").exists()


def test_parity_counts_agreement_and_max_differences():
    ref = {k: np.zeros((1, 4, 5), np.uint8) for k in ("label", "raw_label", "noise", "noise_prob", "confidence")}
    out = {k: v.copy() for k, v in ref.items()}
    out["label"][0, 0, :2] = 3  # 2 of 20 pixels differ
    out["noise"][0, 1, 0] = 1
    out["confidence"][0, 2, 2] = 250
    p = parity([out, ref], [ref, ref])
    assert p["pixels"] == 40 and p["label_agreement_pct"] == 95.0 and p["raw_label_agreement_pct"] == 100.0
    assert p["noise_agreement_pct"] == 97.5 and p["confidence_max_diff"] == 250 and p["noise_prob_max_diff"] == 0


def test_timed_runs_cover_every_batch_and_exclude_warmup():
    images = [np.full((2, 2, 3), i, np.uint8) for i in range(5)]
    batches = make_batches(images, 2)
    assert [b[:, 0, 0, 0].tolist() for b in batches] == [[0, 1], [2, 3], [4, 0]]
    seen = []

    def run(batch):
        seen.append(int(batch[0, 0, 0, 0]))
        return {"first": int(batch[0, 0, 0, 0])}

    times, first = timed_runs(run, batches, warmup=2, iters=4)
    assert len(times) == 4 and seen == [0, 2, 0, 2, 4, 0]
    assert [o["first"] for o in first] == [0, 2, 4]
    times, first = timed_runs(run, batches, warmup=0, iters=1)  # never fewer calls than batches
    assert len(times) == 3 and len(first) == 3
