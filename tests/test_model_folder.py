"""A model folder is code: model.json is schema-checked, artefact paths stay inside the folder, the
name never reaches a path unsanitised and every artefact's sha256 is checked before it is loaded."""

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import run_cli

from prnseg.model_spec import ArtefactIntegrityError, ModelSpecError, load_model_spec, safe_name
from prnseg.serve.predictor import Predictor, _OrtRunner


def copy_model(exported_model: Path, dest: Path, edit=None) -> Path:
    shutil.copytree(exported_model, dest)
    if edit is not None:
        doc = json.loads((dest / "model.json").read_text())
        edit(doc)
        (dest / "model.json").write_text(json.dumps(doc))
    return dest


def one_line_error(proc) -> str:
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    return lines[0]


def test_artefact_paths_must_stay_inside_the_model_folder(exported_model, tmp_path):
    outside = tmp_path / "elsewhere" / "evil.onnx"
    outside.parent.mkdir()
    shutil.copyfile(exported_model / "pseudolabeler.onnx", outside)

    def point_to(file):
        def edit(doc):
            doc["artefacts"]["pseudolabeler"]["file"] = file
        return edit

    for i, file in enumerate((str(outside), "../elsewhere/evil.onnx", "sub/../../elsewhere/evil.onnx")):
        m = copy_model(exported_model, tmp_path / f"m{i}", point_to(file))
        with pytest.raises(ModelSpecError, match=r"artefacts\.pseudolabeler\.file' is .*inside the model folder"):
            Predictor(m, device="cpu")
    # a link inside the folder that leads out of it is refused as well
    m = copy_model(exported_model, tmp_path / "linked", point_to("link.onnx"))
    (m / "link.onnx").symlink_to(outside)
    with pytest.raises(ModelSpecError, match="resolves outside the model folder"):
        load_model_spec(m)
    m = copy_model(exported_model, tmp_path / "plan", lambda d: d["artefacts"].__setitem__("tensorrt", [
        {"file": "../x.plan", "sha256": "0" * 64, "bucket": {"height": 128, "width": 256}, "precision": "fp16"}]))
    with pytest.raises(ModelSpecError, match=r"artefacts\.tensorrt\[0\]\.file' is '\.\./x\.plan'"):
        load_model_spec(m)
    proc = run_cli("label", tmp_path, "--model", tmp_path / "m0", "--out", tmp_path / "out", check=False)
    assert "inside the model folder" in one_line_error(proc)


def test_model_name_is_sanitised_before_it_reaches_a_cache_path(exported_model, tmp_path, monkeypatch):
    assert safe_name("../../x/y") == "_.._x_y" and safe_name("..") == "model" and safe_name("cs model") == "cs_model"
    m = copy_model(exported_model, tmp_path / "model", lambda d: d.__setitem__("name", "../../../escaped/\x00x"))
    spec = load_model_spec(m)
    assert "/" not in spec.name and not spec.name.startswith(".") and "\x00" not in spec.name
    cache_home = tmp_path / "cache"
    monkeypatch.setenv("XDG_CACHE_HOME", str(cache_home))
    options = _OrtRunner._trt_ep_options(spec, 0, "fp32")  # creates the TensorRT-EP engine cache folder
    cache = Path(options["trt_engine_cache_path"])
    assert cache.is_dir() and cache.resolve().parent == (cache_home / "prnseg" / "trt_ep").resolve()
    assert not (tmp_path / "escaped").exists()


def test_a_changed_artefact_refuses_the_model(exported_model, tmp_path):
    m = copy_model(exported_model, tmp_path / "model")
    onnx_file = m / "pseudolabeler.onnx"
    data = bytearray(onnx_file.read_bytes())
    data[len(data) // 2] ^= 0x01  # one bit in the weights: ONNX Runtime would load it and run it
    onnx_file.write_bytes(bytes(data))
    with pytest.raises(ArtefactIntegrityError, match=r"pseudolabeler\.onnx: sha256 .* differs from .* recorded"):
        Predictor(m, device="cpu")
    proc = run_cli("label", tmp_path, "--model", m, "--out", tmp_path / "out", check=False)
    assert "differs from" in one_line_error(proc) and "load only model folders you trust" in proc.stderr

    unrecorded = copy_model(exported_model, tmp_path / "nohash",
                            lambda d: d["artefacts"]["pseudolabeler"].pop("sha256"))
    with pytest.raises(ModelSpecError, match=r"'artefacts\.pseudolabeler\.sha256' is missing"):
        load_model_spec(unrecorded)
    # the untouched model still loads and runs
    assert Predictor(exported_model, device="cpu").predict([np.zeros((8, 8, 3), np.uint8)])[0].label.shape == (8, 8)


def test_a_tensorrt_plan_is_verified_before_tensorrt_sees_it(exported_model, tmp_path):
    from prnseg.model_spec import Bucket
    from prnseg.serve.trt_runtime import TensorRTRunner

    plan = b"a serialized engine is native code" * 100
    entry = {"file": "pseudolabeler_128x256_fp16.plan", "sha256": hashlib.sha256(plan).hexdigest(),
             "bucket": {"height": 128, "width": 256}, "precision": "fp16", "max_batch": 4}
    m = copy_model(exported_model, tmp_path / "model", lambda d: d["artefacts"].__setitem__(
        "tensorrt", [entry, {**entry, "file": "unhashed_128x256.plan", "sha256": None, "precision": "fp32"}]))
    (m / entry["file"]).write_bytes(plan[:-1] + b"!")
    (m / "unhashed_128x256.plan").write_bytes(plan)
    spec = load_model_spec(m)
    with pytest.raises(ArtefactIntegrityError, match=r"_fp16\.plan: sha256 .* differs"):
        TensorRTRunner(spec, {Bucket(128, 256): spec.artefacts["tensorrt"][0]})
    with pytest.raises(ArtefactIntegrityError, match="records no sha256"):
        TensorRTRunner(spec, {Bucket(128, 256): spec.artefacts["tensorrt"][1]})
    # --backend auto offers TensorRT only the plans model.json can vouch for
    p = Predictor(m, backend="onnxruntime", device="cpu")
    assert [e["file"] for e in p._tensorrt_plans().values()] == [entry["file"]]


@pytest.mark.parametrize("edit, message", [
    (lambda d: d["input"]["buckets"][0].__setitem__("height", 0),
     r"'input\.buckets\[0\]\.height' is 0, expected an integer in 32\.\.8192"),
    (lambda d: d["input"].__setitem__("buckets", [{"height": 100000, "width": 100000}]),
     r"'input\.buckets\[0\]\.height' is 100000"),
    (lambda d: d["input"].__setitem__("buckets", [{"height": 8192, "width": 8192}]),
     r"is 8192x8192, more than the 16777216 pixels"),
    (lambda d: d["input"]["buckets"][0].__setitem__("width", 100), r"is 128x100, expected multiples of 32"),
    (lambda d: d["artefacts"]["pseudolabeler"].__setitem__("file", None),
     r"'artefacts\.pseudolabeler\.file' is null, expected a string"),
    (lambda d: d["artefacts"]["pseudolabeler"].__setitem__("sha256", "abc"), r"expected 64 lowercase hex digits"),
    (lambda d: d["artefacts"].__setitem__("tensorrt", {"file": "x.plan"}), r"expected a list of plans"),
    (lambda d: d["input"].__setitem__("max_batch", 0), r"'input\.max_batch' is 0"),
    (lambda d: d["input"].__setitem__("std", [1, 0, 1]), r"'input\.std\[1\]' is 0"),
    (lambda d: d["input"].__setitem__("mean", [1, 2]), r"'input\.mean' is \[1, 2\], expected 3 numbers"),
    (lambda d: d.__setitem__("classes", "road"), r"'classes' is 'road', expected a list"),
    (lambda d: d.__setitem__("palette", [[0, 0, 300]] * 19), r"'palette\[0\]' is \[0, 0, 300\]"),
    (lambda d: d.__setitem__("noise", {"threshold": "high"}), r"'noise\.threshold' is 'high'"),
    (lambda d: d.__setitem__("ready", "yes"), r"'ready' is 'yes', expected true or false"),
    (lambda d: d.pop("input"), r"'input' is missing"),
    (lambda d: d.__setitem__("class_prior", [0.5, 0.5]), r"'class_prior' is \[0\.5, 0\.5\], expected 19 numbers"),
    (lambda d: d.__setitem__("class_prior", [-1.0] * 19), r"'class_prior\[0\]' is -1\.0, expected a number"),
])
def test_malformed_model_json_is_a_one_line_error(exported_model, tmp_path, edit, message):
    m = copy_model(exported_model, tmp_path / "model", edit)
    with pytest.raises(ModelSpecError, match=message) as err:
        load_model_spec(m)
    assert "\n" not in str(err.value) and str(m / "model.json") in str(err.value)
    assert "re-export the model" in str(err.value) or "re-export with" in str(err.value)


def test_malformed_model_json_through_the_cli(exported_model, tmp_path):
    m = copy_model(exported_model, tmp_path / "model", lambda d: d["input"].__setitem__(
        "buckets", [{"height": 100000, "width": 100000}]))
    (tmp_path / "in").mkdir()
    proc = run_cli("label", tmp_path / "in", "--model", m, "--out", tmp_path / "out", check=False)
    assert "input.buckets[0].height' is 100000" in one_line_error(proc)
