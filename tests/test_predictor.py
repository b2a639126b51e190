"""prnseg.serve.Predictor on a real exported model: geometry, batching, equality with the bare
ONNX Runtime session, input validation, backend/device choice, and importing without torch."""

import json
import logging
import shutil

import cv2
import numpy as np
import onnxruntime as ort
import pytest
from conftest import run_python_without_torch

from prnseg.errors import PrnsegError
from prnseg.model_spec import ModelSpecError
from prnseg.serve.predictor import (
    OUTPUT_NAMES,
    BackendError,
    Prediction,
    Predictor,
    cpu_throughput_config,
    noise_level,
    tensorrt_available,
)


@pytest.fixture(scope="module")
def predictor(exported_model):
    return Predictor(exported_model, backend="onnxruntime", device="cpu")


@pytest.fixture(scope="module")
def session(exported_model):
    return ort.InferenceSession(str(exported_model / "pseudolabeler.onnx"), providers=["CPUExecutionProvider"])


def _scene(seed, h, w):
    from prnseg.training.data.synthetic import render_scene

    return render_scene(seed, (w, h), "target")[0]


def _run(session, batch):
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(None, {"image": batch})))


def test_bucket_sized_images_equal_the_onnx_session_in_any_batching(predictor, session):
    # 6 images > max_batch 4: two batches of different sizes, same results as one session call each
    images = [_scene(s, 128, 256) for s in range(6)]
    preds = predictor.predict(images)
    ref = _run(session, np.stack(images))
    assert predictor.max_batch == 4
    for i, p in enumerate(preds):
        assert isinstance(p, Prediction)
        for name in OUTPUT_NAMES:
            plane = getattr(p, name)
            assert plane.dtype == np.uint8 and plane.shape == (128, 256)
            assert np.array_equal(plane, ref[name][i]), (i, name)
    # streams: concurrent batches give the same bytes
    streamed = Predictor(predictor.spec.root, backend="onnxruntime", device="cpu", streams=2, threads=1,
                         max_batch=2).predict(images)
    for a, b in zip(preds, streamed):
        assert all(np.array_equal(getattr(a, n), getattr(b, n)) for n in OUTPUT_NAMES)


def test_other_sizes_and_aspects_map_back_to_each_image(predictor, session):
    spec = predictor.spec
    sizes = [(256, 512), (64, 128), (300, 200), (77, 401), (128, 256)]
    images = [_scene(10 + k, h, w) for k, (h, w) in enumerate(sizes)]
    # one image per call, as the reference runs them: a batch of 1 may round one confidence
    # pixel differently from a batch of 4 (another GEMM kernel), which `prnseg label` avoids by
    # always running full batches
    preds = [predictor.predict([img])[0] for img in images]
    for img, p in zip(images, preds):
        assert all(getattr(p, n).shape == img.shape[:2] for n in OUTPUT_NAMES)
        fitted, placement = spec.fit(img)
        ref = _run(session, fitted[None])
        for name in OUTPUT_NAMES:  # fit -> run -> crop the resized region -> nearest resize back
            rh, rw = placement.resized_hw
            expect = cv2.resize(ref[name][0][:rh, :rw], (img.shape[1], img.shape[0]), interpolation=cv2.INTER_NEAREST)
            assert np.array_equal(getattr(p, name), expect), name
        assert p.label.max() < spec.num_classes and set(np.unique(p.noise)) <= {0, 1}
    # a 2x image is the bucket result upsampled exactly 2x
    big, small = preds[0], predictor.predict([cv2.resize(images[0], (256, 128), interpolation=cv2.INTER_LINEAR)])[0]
    assert np.array_equal(big.label[::2, ::2], small.label)


def test_noise_at_reproduces_the_graph_threshold_and_moves_with_it(predictor):
    p = predictor.predict([_scene(3, 128, 256)])[0]
    t = predictor.spec.noise_threshold
    assert t == pytest.approx(1 - 0.968)   # a PRN model's default noise: 1 - the label's confidence
    assert np.array_equal(p.noise_at(t), p.noise.astype(bool))
    assert np.array_equal(p.noise_at(0.7), p.noise_prob >= noise_level(0.7))
    assert p.noise_at(0.0).all() and p.noise_at(0.2).sum() >= p.noise_at(0.5).sum() >= p.noise_at(0.9).sum()
    assert (noise_level(0.5), noise_level(0.0), noise_level(1.0)) == (128, 0, 256)
    with pytest.raises(ValueError):
        noise_level(float("nan"))


@pytest.mark.parametrize("bad,match", [
    (np.zeros((8, 8, 3), np.float32), "image 1: expected an H x W x 3 uint8"),
    (np.zeros((8, 8), np.uint8), "image 1: .*shape \\(8, 8\\)"),
    (np.zeros((8, 8, 4), np.uint8), "image 1: .*shape \\(8, 8, 4\\)"),
    (np.zeros((0, 8, 3), np.uint8), "image 1"),
    ("not an array", "image 1: expected an H x W x 3 uint8 RGB numpy array, got str"),
])
def test_bad_inputs_name_the_index_and_the_format(predictor, bad, match):
    with pytest.raises(ValueError, match=match):
        predictor.predict([np.zeros((8, 8, 3), np.uint8), bad])


def test_a_bare_array_instead_of_a_list_is_explained(predictor):
    with pytest.raises(ValueError, match="wrap a single image in a list"):
        predictor.predict(np.zeros((8, 8, 3), np.uint8))
    assert predictor.predict([]) == []


def test_backend_device_and_precision_errors(exported_model):
    with pytest.raises(BackendError, match="backend 'nope' unknown"):
        Predictor(exported_model, backend="nope")
    with pytest.raises(BackendError, match="device 'gpu' unknown"):
        Predictor(exported_model, device="gpu")
    fp16 = Predictor(exported_model, precision="fp16", device="cpu")
    assert "fp16" in fp16.provider and fp16.predict([_scene(1, 128, 256)])[0].label.shape == (128, 256)
    if not tensorrt_available():
        with pytest.raises(BackendError, match="tensorrt package is not installed"):
            Predictor(exported_model, backend="tensorrt", device="cpu")
    with pytest.raises(ModelSpecError, match="not found"):
        Predictor(exported_model / "nope")
    assert issubclass(BackendError, PrnsegError)


def test_auto_picks_onnxruntime_on_this_machine_and_reports_it(exported_model):
    p = Predictor(exported_model)
    assert p.backend == "onnxruntime"
    assert "ExecutionProvider" in p.provider and p.device in p.provider


def test_cuda_request_without_a_gpu_is_a_logged_fallback(exported_model, caplog):
    from prnseg.serve.predictor import cuda_driver_present

    if cuda_driver_present():
        pytest.skip("this machine has a GPU")
    with caplog.at_level(logging.WARNING, logger="prnseg.serve"):
        p = Predictor(exported_model, backend="onnxruntime", device="cuda:0")
    assert "CPUExecutionProvider" in p.provider and p.device == "cpu"
    assert any("running on the CPU" in r.getMessage() for r in caplog.records)
    assert p.predict([np.zeros((16, 32, 3), np.uint8)])[0].label.shape == (16, 32)


def test_missing_fp16_artefact_is_explained(exported_model, tmp_path):
    m = tmp_path / "model"
    shutil.copytree(exported_model, m)
    doc = json.loads((m / "model.json").read_text())
    doc["artefacts"].pop("pseudolabeler_fp16", None)
    (m / "model.json").write_text(json.dumps(doc))
    with pytest.raises(BackendError, match="no pseudolabeler_fp16.onnx; re-export with --fp16"):
        Predictor(m, precision="fp16", device="cpu")


def test_not_ready_model_is_refused(exported_model, tmp_path):
    bad = tmp_path / "model"
    shutil.copytree(exported_model, bad)
    doc = json.loads((bad / "model.json").read_text())
    doc["ready"], doc["not_ready_reason"] = False, "parity gate failed: label agreement 0.9"
    (bad / "model.json").write_text(json.dumps(doc))
    with pytest.raises(ModelSpecError, match="not ready: parity gate failed"):
        Predictor(bad)


def test_cpu_throughput_config():
    assert cpu_throughput_config(1) == (1, 1)
    assert cpu_throughput_config(2) == (2, 1)
    assert cpu_throughput_config(16) == (4, 4)


def test_serve_imports_and_runs_without_torch(exported_model):
    code = f"""
import numpy as np
import prnseg.serve
import prnseg.serve.predictor, prnseg.serve.pipeline, prnseg.serve.label_cli, prnseg.serve.label_metrics
import prnseg.serve.trt_runtime, prnseg.serve.ray_engine
from prnseg.serve import Predictor
p = Predictor({str(exported_model)!r}, device="cpu").predict([np.zeros((40, 60, 3), np.uint8)])[0]
assert p.label.shape == (40, 60)
from prnseg.serve.label_metrics import GTSummary
GTSummary(19, None, 0.5)
assert "torch" not in sys.modules, "torch was imported"
print("ok")
"""
    proc = run_python_without_torch(code)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "ok"
