"""prnseg export: ONNX artefacts, model.json, the parity gate, errors, fp16, TensorRT and Triton."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from conftest import run_cli, run_python_without_torch
from prnseg.model_spec import PSEUDOLABELER_OUTPUTS, ModelSpecError, load_model_spec

BUCKET = (128, 256)


def _session(path) -> ort.InferenceSession:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def _val_images(synth_root: Path) -> list[Path]:
    from prnseg.image_io import list_images

    return list_images(synth_root / "cityscapes" / "leftImg8bit" / "val")


def _parity(model_dir: Path) -> dict:
    return json.loads((model_dir / "parity.json").read_text())


def _no_staging_left(parent: Path) -> None:
    assert not [p.name for p in parent.iterdir() if ".export-" in p.name or ".old-" in p.name]


# --- the fixture export: contract, parity, graph structure -------------------------------------------------


def test_model_json_describes_a_ready_model(exported_model, prn_checkpoint):
    spec = load_model_spec(exported_model)
    doc = spec.raw
    assert spec.ready and doc["not_ready_reason"] is None
    assert [(b.height, b.width) for b in spec.buckets] == [BUCKET] and spec.max_batch == 4
    assert doc["input"]["name"] == "image" and doc["input"]["dtype"] == "uint8" and doc["input"]["layout"] == "NHWC"
    assert list(doc["outputs"]) == list(PSEUDOLABELER_OUTPUTS) and spec.num_classes == 19
    assert doc["noise"] == {"source": "confidence", "threshold": 0.032}   # the default --noise-from
    assert doc["opset"] == 17 and doc["precision"] == ["fp32", "fp16"]
    assert set(doc["producer"]) >= {"prnseg", "torch", "onnx", "onnxruntime", "transformers"}
    from prnseg.training.checkpoint import file_sha256

    assert doc["checkpoint"]["sha256"] == file_sha256(prn_checkpoint)
    assert doc["checkpoint"]["weights"] == "teacher" and doc["checkpoint"]["iteration"] == 2
    from prnseg.training.config import shipped_configs

    assert doc["checkpoint"]["config_shipped"] is (doc["checkpoint"]["config"] in shipped_configs())
    assert {n: d["kind"] for n, d in doc["checkpoint"]["data"].items()} == {"source": "gta", "target": "cityscapes"}
    for key in ("segmenter", "prn", "pseudolabeler", "pseudolabeler_fp16"):
        path = spec.artefact_path(key)
        assert doc["artefacts"][key]["sha256"] == file_sha256(path)
        onnx.checker.check_model(str(path), full_check=True)
        assert onnx.load(str(path)).opset_import[0].version == 17
    assert doc["parity"]["passed"] and doc["parity"]["summary"] == _parity(exported_model)["summary"]


def test_parity_fp32_and_fp16_pass_the_gate(exported_model):
    parity = _parity(exported_model)
    assert parity["passed"] and parity["failures"] == [] and parity["n_images"] >= 4
    fp32, fp16 = parity["summary"]["pseudolabeler"], parity["summary"]["pseudolabeler_fp16"]
    assert fp32["label_agreement"] >= 0.999 and fp32["noise_agreement"] >= 0.999
    assert fp16["label_agreement"] >= 0.99 and fp16["miou_delta"] <= 0.5
    assert fp32["miou_delta_basis"] == "ground truth"  # the default synthetic calibration has labels
    seg, prn = parity["summary"]["segmenter"], parity["summary"]["prn"]
    assert seg["max_abs_feature_diff"] < 1e-3 and seg["max_abs_logit_diff"] < 1e-3 * max(1.0, seg["max_abs_logit"])
    assert prn["max_abs_refined_logit_diff"] < 1e-3 and prn["max_abs_noise_logit_diff"] < 1e-3


def test_every_layernorm_is_one_node(exported_model, prn_checkpoint):
    from prnseg.export.onnx_export import count_layernorm_modules, op_counts
    from prnseg.training.loading import load_checkpoint_model

    segmentor = load_checkpoint_model(prn_checkpoint, "teacher").segmentor
    n_ln = count_layernorm_modules(segmentor)
    assert n_ln > 0
    for name in ("segmenter.onnx", "pseudolabeler.onnx", "pseudolabeler_fp16.onnx"):
        ops = op_counts(onnx.load(str(exported_model / name)))
        assert ops["LayerNormalization"] == n_ln, name
        assert ops.get("ReduceMean", 0) == 0 and ops.get("Pow", 0) == 0, f"{name}: a decomposed LayerNorm"
        assert ops.get("BatchNormalization", 0) == 0, f"{name}: BatchNorm not folded (traced in training mode?)"
    assert op_counts(onnx.load(str(exported_model / "prn.onnx"))).get("LayerNormalization", 0) == 0


def test_full_resolution_class_scores_are_channels_last(exported_model):
    """The C-channel maps are transposed at stride 4 and resized over axes 1-2, so argmax and
    max-softmax reduce over the innermost axis; no full-resolution NCHW class tensor remains."""
    graph = onnx.load(str(exported_model / "pseudolabeler.onnx")).graph
    producer = {out: node for node in graph.node for out in node.output}
    top = [n for n in graph.node if n.op_type == "Resize" and not n.name.startswith(("/segmentor", "/prn"))]
    channels_last = [n for n in top if producer[n.input[0]].op_type == "Transpose"]
    assert len(channels_last) == 2  # raw and refined logits; the 1-channel noise logit stays NCHW
    for node in channels_last:
        assert list(onnx.helper.get_attribute_value(producer[node.input[0]].attribute[0])) == [0, 2, 3, 1]
        assert list(node.input[1:3]) == ["", ""]  # roi and scales omitted: the output size is given
    for node in graph.node:
        if node.op_type == "ArgMax":
            assert onnx.helper.get_attribute_value(next(a for a in node.attribute if a.name == "axis")) == -1


def test_channels_last_upsampling_equals_the_nchw_formula():
    import torch.nn.functional as F

    from prnseg.export.graphs import UpsampleChannelsLast
    from prnseg.training.pseudo_labels import max_softmax

    logits = torch.randn(2, 19, 8, 16, generator=torch.Generator().manual_seed(0))
    image = torch.zeros(2, 32, 64, 3, dtype=torch.uint8)
    nhwc = UpsampleChannelsLast.apply(logits, image)
    nchw = F.interpolate(logits, size=(32, 64), mode="bilinear", align_corners=False)
    assert nhwc.shape == (2, 32, 64, 19) and torch.equal(nhwc, nchw.permute(0, 2, 3, 1))
    assert torch.equal(nhwc.argmax(-1), nchw.argmax(1))
    torch.testing.assert_close(max_softmax(nhwc, -1), torch.softmax(nchw, 1).amax(1))


def test_concat_convolutions_are_padded_to_blockable_channels(exported_model):
    from prnseg.export.graph_passes import CONV_CHANNEL_MULTIPLE

    for name in ("pseudolabeler.onnx", "prn.onnx"):
        graph = onnx.load(str(exported_model / name)).graph
        inits = {t.name: t for t in graph.initializer}
        producer = {out: node for node in graph.node for out in node.output}
        padded = 0
        for node in graph.node:
            grouped = any(a.name == "group" and a.i != 1 for a in node.attribute)
            if node.op_type == "Conv" and not grouped and producer.get(node.input[0]) is not None \
                    and producer[node.input[0]].op_type == "Concat":
                assert inits[node.input[1]].dims[1] % CONV_CHANNEL_MULTIPLE == 0, f"{name}: {node.name}"
                padded += any(producer[i].op_type == "Pad" for i in producer[node.input[0]].input if i in producer)
        assert padded == 1, name  # the PRN's first convolution (4 x 32 + 19 = 147 channels)


def test_channel_padding_keeps_every_output(tmp_path):
    """A Concat -> Conv graph of 3 + 4 channels gives the same values before and after the pass;
    a Concat also read by another node or also a graph output, and a weight shared by two
    convolutions, are left alone."""
    from onnx import TensorProto, helper, numpy_helper

    from prnseg.export.graph_passes import pad_concat_conv_channels

    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((5, 7, 3, 3)).astype(np.float32), "w")
    nodes = [helper.make_node("Concat", ["a", "b"], ["ab"], axis=1),
             helper.make_node("Conv", ["ab", "w"], ["y"], pads=[1, 1, 1, 1]),
             helper.make_node("Concat", ["a", "b"], ["ab2"], axis=1),
             helper.make_node("Conv", ["ab2", "w2"], ["z"]),
             helper.make_node("Relu", ["ab2"], ["r"]),
             helper.make_node("Concat", ["a", "b"], ["ab3"], axis=1),  # also a graph output
             helper.make_node("Conv", ["ab3", "w2b"], ["v"]),
             helper.make_node("Concat", ["a", "b"], ["ab4"], axis=1),
             helper.make_node("Conv", ["ab4", "w3"], ["s1"]),
             helper.make_node("Concat", ["b", "a"], ["ab5"], axis=1),
             helper.make_node("Conv", ["ab5", "w3"], ["s2"])]  # w3 shared by two convolutions
    w2, w2b, w3 = (numpy_helper.from_array(rng.standard_normal((2, 7, 1, 1)).astype(np.float32), name)
                   for name in ("w2", "w2b", "w3"))
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("a", TensorProto.FLOAT, ["N", 3, "H", "W"]),
                                           helper.make_tensor_value_info("b", TensorProto.FLOAT, ["N", 4, "H", "W"])],
                              [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["N", c, "H", "W"])
                               for n, c in (("y", 5), ("z", 2), ("r", 7), ("ab3", 7), ("v", 2), ("s1", 2), ("s2", 2))],
                              [w, w2, w2b, w3])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    feeds = {"a": rng.standard_normal((2, 3, 6, 9)).astype(np.float32),
             "b": rng.standard_normal((2, 4, 6, 9)).astype(np.float32)}
    before = _session_from(model).run(None, feeds)
    assert pad_concat_conv_channels(model) == 1
    onnx.checker.check_model(model, full_check=True)
    assert [t.dims for t in model.graph.initializer if t.name == "w"] == [[5, 8, 3, 3]]
    after = _session_from(model).run(None, feeds)
    for x, y in zip(before, after):
        np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-5)


def _session_from(model) -> ort.InferenceSession:
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


def test_fp16_graph_keeps_layernorm_softmax_and_head_in_fp32(exported_model):
    model = onnx.shape_inference.infer_shapes(onnx.load(str(exported_model / "pseudolabeler_fp16.onnx")))
    types = {v.name: v.type.tensor_type.elem_type for v in (*model.graph.value_info, *model.graph.input)}
    types.update({t.name: t.data_type for t in model.graph.initializer})
    fp16 = onnx.TensorProto.FLOAT16
    half_inits = [t for t in model.graph.initializer if t.data_type == fp16]
    assert half_inits and all(t.name.startswith("onnx::") or "encoder" in t.name for t in half_inits)
    for node in model.graph.node:
        if node.op_type in ("LayerNormalization", "Softmax") or not node.name.startswith("/segmentor/encoder/"):
            if node.op_type == "Cast":
                continue
            assert all(types.get(i) != fp16 for i in node.input if i), f"{node.name} ({node.op_type}) runs in fp16"
    encoder_matmuls = [n for n in model.graph.node
                       if n.op_type == "MatMul" and n.name.startswith("/segmentor/encoder/")]
    assert encoder_matmuls and all(types.get(n.input[0]) == fp16 for n in encoder_matmuls)
    sess = _session(exported_model / "pseudolabeler_fp16.onnx")  # ONNX Runtime's CPU EP runs it here
    assert sess.get_inputs()[0].type == "tensor(uint8)"
    assert all(o.type == "tensor(uint8)" for o in sess.get_outputs())


def test_dynamic_batch_gives_the_same_maps(exported_model, synth_root):
    from prnseg.image_io import read_image

    sess = _session(exported_model / "pseudolabeler.onnx")
    shape = sess.get_inputs()[0].shape
    assert isinstance(shape[0], str) and shape[3] == 3
    images = np.stack([read_image(p) for p in _val_images(synth_root)[:3]])
    assert images.shape[1:3] == BUCKET
    batch3 = sess.run(None, {"image": images})
    for i in range(3):
        single = sess.run(None, {"image": images[i:i + 1]})
        for name, a, b in zip(PSEUDOLABELER_OUTPUTS, batch3, single):
            assert a.shape == (3, *BUCKET) and b.shape == (1, *BUCKET) and a.dtype == np.uint8
            if name in ("noise_prob", "confidence"):  # batch-size-dependent kernels: float rounding only
                assert np.abs(a[i].astype(int) - b[0]).max() <= 1, name
            else:
                assert np.array_equal(a[i], b[0]), name


def test_labels_equal_the_pytorch_eval_pipeline_on_val_images(exported_model, prn_checkpoint, synth_root):
    """The fused graph reproduces training's own evaluation (run_networks) on the target val images."""
    from prnseg.image_io import read_image
    from prnseg.training.data.transforms import build_test_pipeline
    from prnseg.training.evaluate import image_pseudo_labels
    from prnseg.training.loading import load_checkpoint_model
    from prnseg.training.prn_step import PRNStep

    teacher, prn, cfg = load_checkpoint_model(prn_checkpoint, "teacher")
    pipeline = build_test_pipeline(size=cfg.data.val.size)
    spec = load_model_spec(exported_model)
    sess = _session(spec.artefact_path("pseudolabeler"))
    total = same_label = same_raw = 0
    for path in _val_images(synth_root):
        rgb = read_image(path)
        fitted, placement = spec.fit(rgb)
        label, raw = (spec.unfit(o[0], placement) for o in sess.run(["label", "raw_label"], {"image": fitted[None]}))
        _, written = image_pseudo_labels(teacher, prn, PRNStep.from_config(cfg), rgb, pipeline, torch.device("cpu"))
        total += label.size
        same_label += int((label == written.label.numpy()).sum())
        same_raw += int((raw == written.raw_label.numpy()).sum())
    assert total == 4 * BUCKET[0] * BUCKET[1]
    assert same_label / total >= 0.9999 and same_raw / total >= 0.9999


def test_bare_onnxruntime_reads_only_model_json(exported_model, synth_root, tmp_path):
    """A C++/ROS-style consumer: onnxruntime + OpenCV + model.json, no prnseg import at all."""
    script = tmp_path / "consumer.py"
    script.write_text(textwrap.dedent('''
        import json, sys
        from pathlib import Path
        import cv2, numpy as np, onnxruntime as ort

        model_dir, image_dir, out = map(Path, sys.argv[1:4])
        spec = json.loads((model_dir / "model.json").read_text())
        assert spec["ready"]
        inp = spec["input"]
        bucket = inp["buckets"][0]
        bh, bw = bucket["height"], bucket["width"]
        sess = ort.InferenceSession(str(model_dir / spec["artefacts"]["pseudolabeler"]["file"]),
                                    providers=["CPUExecutionProvider"])
        names = list(spec["outputs"])
        batch, sizes = [], []
        for path in sorted(image_dir.rglob("*.png")):
            bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
            rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
            h, w = rgb.shape[:2]
            s = min(bh / h, bw / w)
            rh, rw = min(bh, round(h * s)), min(bw, round(w * s))
            canvas = np.empty((bh, bw, 3), np.uint8)
            canvas[...] = np.round(inp["mean"]).astype(np.uint8)
            canvas[:rh, :rw] = cv2.resize(rgb, (rw, rh), interpolation=cv2.INTER_LINEAR)
            batch.append(canvas)
            sizes.append((rh, rw))
        outs = sess.run(names, {inp["name"]: np.stack(batch)})
        np.savez(out, **dict(zip(names, outs)))
        assert "prnseg" not in sys.modules and not any(m.startswith("prnseg.") for m in sys.modules)
        assert "torch" not in sys.modules
        print("consumer ok", len(batch), [o.shape for o in outs][0])
    '''))
    image_dir = synth_root / "cityscapes" / "leftImg8bit" / "val"
    out = tmp_path / "outs.npz"
    proc = subprocess.run([sys.executable, "-I", str(script), str(exported_model), str(image_dir), str(out)],
                          capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "consumer ok 4 (4, 128, 256)" in proc.stdout
    got = np.load(out)
    from prnseg.image_io import read_image

    spec = load_model_spec(exported_model)
    sess = _session(spec.artefact_path("pseudolabeler"))
    fitted = np.stack([spec.fit(read_image(p))[0] for p in _val_images(synth_root)])
    for name, ref in zip(PSEUDOLABELER_OUTPUTS, sess.run(None, {"image": fitted})):
        assert np.array_equal(got[name], ref), name
    assert set(np.unique(got["noise"])) <= {0, 1} and got["label"].max() < 19


# --- the CLI, fp16 and Triton -----------------------------------------------------------------------------


@pytest.mark.slow
def test_cli_export_round_trip_with_fp16_and_triton(prn_checkpoint, tmp_path):
    from prnseg.export.triton import parse_pbtxt

    out = tmp_path / "model"
    proc = run_cli("export", prn_checkpoint, "--out", out, "--size", "128x256", "--max-batch", "4", "--fp16",
                   "--triton")
    assert "next: prnseg label " in proc.stdout and f"--model {out} --out " in proc.stdout
    assert "pseudolabeler_fp16.onnx" in proc.stdout and "[1/6] segmenter.onnx" in proc.stderr
    spec = load_model_spec(out)
    assert spec.ready and set(spec.artefacts) == {"segmenter", "prn", "pseudolabeler", "pseudolabeler_fp16"}
    summary = _parity(out)["summary"]
    assert summary["pseudolabeler"]["label_agreement"] >= 0.999
    assert summary["pseudolabeler_fp16"]["label_agreement"] >= 0.99

    cfg = parse_pbtxt((out / "triton" / "model" / "config.pbtxt").read_text())
    assert cfg["name"] == "model" and cfg["platform"] == "onnxruntime_onnx" and cfg["max_batch_size"] == 4
    assert cfg["input"] == [{"name": "image", "data_type": "TYPE_UINT8", "dims": [128, 256, 3]}]
    assert [o["name"] for o in cfg["output"]] == list(PSEUDOLABELER_OUTPUTS)
    assert all(o["data_type"] == "TYPE_UINT8" and o["dims"] == [128, 256] for o in cfg["output"])
    assert cfg["dynamic_batching"] == {"preferred_batch_size": [2, 4], "max_queue_delay_microseconds": 100}
    assert (out / "triton" / "model" / "1" / "model.onnx").read_bytes() == (out / "pseudolabeler.onnx").read_bytes()
    _no_staging_left(tmp_path)


def test_triton_config_for_plans_and_several_buckets(tmp_path):
    from prnseg.export.triton import parse_pbtxt, write_triton_repository

    (tmp_path / "pseudolabeler.onnx").write_bytes(b"onnx")
    for h, w in ((256, 512), (512, 512)):
        (tmp_path / f"pseudolabeler_{h}x{w}_fp16.plan").write_bytes(b"plan%d" % h)
    doc = {"name": "cs model", "input": {"buckets": [{"height": 256, "width": 512}, {"height": 512, "width": 512}],
                                          "max_batch": 8},
           "artefacts": {"pseudolabeler": {"file": "pseudolabeler.onnx"},
                         "tensorrt": [{"file": "pseudolabeler_256x512_fp16.plan",
                                       "bucket": {"height": 256, "width": 512}, "max_batch": 8, "precision": "fp16"},
                                      {"file": "pseudolabeler_512x512_fp16.plan",
                                       "bucket": {"height": 512, "width": 512}, "max_batch": 8, "precision": "fp16"}]}}
    configs = write_triton_repository(tmp_path, doc)
    assert [c.parent.name for c in configs] == ["cs_model_256x512", "cs_model_512x512"]
    cfg = parse_pbtxt(configs[1].read_text())
    assert cfg["platform"] == "tensorrt_plan" and cfg["max_batch_size"] == 8
    assert cfg["input"][0]["dims"] == [512, 512, 3] and cfg["output"][0]["dims"] == [512, 512]
    assert cfg["dynamic_batching"]["preferred_batch_size"] == [4, 8]
    assert cfg["instance_group"] == [{"count": 1, "kind": "KIND_GPU"}]
    assert (configs[1].parent / "1" / "model.plan").read_bytes() == b"plan512"


@pytest.mark.parametrize("text", ['name: "x" max_batch_size:', 'input [ { name: "a" ]', "dims: [ 1, 2 } ", 'x: "a" @'])
def test_pbtxt_parser_is_strict(text):
    from prnseg.export.triton import TritonConfigError, parse_pbtxt

    with pytest.raises(TritonConfigError):
        parse_pbtxt(text)


# --- errors, atomicity and the gate -----------------------------------------------------------------------


def test_bad_checkpoints_and_sizes_are_one_line_errors(prn_checkpoint, tmp_path):
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(prn_checkpoint.read_bytes()[: 4096])
    proc = run_cli("export", corrupt, "--out", tmp_path / "m1", check=False)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1
    assert proc.stderr.startswith("prnseg export: error: ")
    assert "not a checkpoint written by prnseg train" in proc.stderr

    from prnseg.errors import PrnsegError
    from prnseg.export import export_model

    wrong = tmp_path / "wrong.pt"
    torch.save({"state_dict": {"w": torch.zeros(1)}}, wrong)
    cases = [
        (wrong, {}, "not a prnseg checkpoint"),
        (tmp_path / "missing.pt", {}, "checkpoint not found"),
        (prn_checkpoint, {"sizes": ["100x250"]}, "not a multiple of 32 (the network's output stride); use 128x256"),
        (prn_checkpoint, {"sizes": ["128by256"]}, "expected HEIGHTxWIDTH"),
        (prn_checkpoint, {"opset": 13}, "must be >= 17"),
    ]
    for ckpt, kwargs, message in cases:
        with pytest.raises(PrnsegError, match=message.replace("(", r"\(").replace(")", r"\)")):
            export_model(ckpt, tmp_path / "m2", progress=False, **kwargs)
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    with pytest.raises(PrnsegError, match="cannot write there"):
        export_model(prn_checkpoint, blocker / "model", progress=False)
    assert not (tmp_path / "m1").exists() and not (tmp_path / "m2").exists()
    _no_staging_left(tmp_path)


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("tensorrt") is not None, reason="tensorrt is installed here")
def test_tensorrt_missing_fails_before_writing_anything(prn_checkpoint, tmp_path):
    proc = run_cli("export", prn_checkpoint, "--out", tmp_path / "model", "--tensorrt", check=False)
    assert proc.returncode == 2
    assert ("error: tensorrt is not installed: pip install 'prnseg[tensorrt]' (needs NVIDIA's index) or drop "
            "--tensorrt") in proc.stderr
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_refuses_to_replace_a_ready_model_and_gate_failure_marks_not_ready(exported_model, prn_checkpoint,
                                                                          tmp_path, monkeypatch):
    import shutil

    from prnseg.export import ParityGateError, export_model
    from prnseg.export import parity
    from prnseg.errors import PrnsegError

    out = tmp_path / "model"
    shutil.copytree(exported_model, out)
    before = (out / "model.json").read_text()
    with pytest.raises(PrnsegError, match="already holds a ready exported model; pass --overwrite"):
        export_model(prn_checkpoint, out, sizes=["128x256"], progress=False)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(PrnsegError, match="is not an exported model"):
        export_model(prn_checkpoint, tmp_path / "other", overwrite=True, progress=False)

    # An impossible fp32 threshold: the real artefacts fail the gate. The ready model stays; the
    # rejected export lands next to it, marked not ready, and no runtime will load it.
    monkeypatch.setattr(parity, "FP32_LABEL_AGREEMENT_MIN", 1.01)
    with pytest.raises(ParityGateError, match=r"pseudolabeler label agreement \d+\.\d{3}% < 101\.0%") as info:
        export_model(prn_checkpoint, out, sizes=["128x256"], overwrite=True, progress=False)
    rejected = info.value.model_dir
    assert rejected == tmp_path / "model.rejected" and (out / "model.json").read_text() == before
    doc = json.loads((rejected / "model.json").read_text())
    assert doc["ready"] is False and "parity gate failed" in doc["not_ready_reason"]
    assert _parity(rejected)["passed"] is False
    with pytest.raises(ModelSpecError, match="model is not ready: parity gate failed"):
        load_model_spec(rejected)

    # Into a fresh directory the failed export is the model directory itself, not ready; CLI exit 2.
    proc_out = tmp_path / "fresh"
    with pytest.raises(ParityGateError):
        export_model(prn_checkpoint, proc_out, sizes=["128x256"], progress=False)
    assert load_model_spec(proc_out, require_ready=False).ready is False
    _no_staging_left(tmp_path)


# --- TensorRT: the torch-free parts here, engine builds where tensorrt and a GPU exist -------------------


def test_tensorrt_profiles_names_and_metadata():
    from prnseg.export.tensorrt import engine_metadata, engine_source, plan_name, profile_shapes

    assert profile_shapes((256, 512), 8) == {"min": (1, 256, 512, 3), "opt": (8, 256, 512, 3), "max": (8, 256, 512, 3)}
    with pytest.raises(ValueError):
        profile_shapes((256, 512), 0)
    assert plan_name((256, 512), "fp16") == "pseudolabeler_256x512_fp16.plan"
    assert plan_name((256, 512), "fp32") == "pseudolabeler_256x512.plan"
    assert engine_source(True, 10) == "pseudolabeler" and engine_source(True, 11) == "pseudolabeler_fp16"
    assert engine_source(False, 11) == "pseudolabeler"
    meta = engine_metadata("p.plan", (256, 512), 8, "fp16", "10.9.0.34", "9.0", "H100", "pseudolabeler.onnx", False,
                           b"plan bytes")
    assert meta["bucket"] == {"height": 256, "width": 512} and (meta["min_batch"], meta["max_batch"]) == (1, 8)
    assert meta["sha256"] == hashlib.sha256(b"plan bytes").hexdigest() and meta["bytes"] == 10
    assert meta["tensorrt_version"] == "10.9.0.34" and meta["compute_capability"] == "9.0"


def test_engine_compatibility_check_explains_the_fallback():
    from prnseg.serve.trt_compat import check_engine_compatible

    meta = {"file": "pseudolabeler_256x512_fp16.plan", "tensorrt_version": "10.9.0.34", "compute_capability": "9.0"}
    assert check_engine_compatible(meta, "10.9.0.40", "9.0") is None
    reason = check_engine_compatible(meta, "10.13.0.35", "9.0")
    assert "built with TensorRT 10.9.0.34, this machine has TensorRT 10.13.0.35" in reason
    assert "re-export with --tensorrt here" in reason
    assert "compute capability 9.0, this GPU is 8.6" in check_engine_compatible(meta, "10.9.0.34", "8.6")
    assert "tensorrt is not installed" in check_engine_compatible(meta, None, "9.0")
    assert "no CUDA device" in check_engine_compatible(meta, "10.9.0.34", None)
    assert check_engine_compatible({**meta, "version_compatible": True}, "11.0.0.1", "9.0") is None


def test_tensorrt_engines_build_and_agree(prn_checkpoint, tmp_path):
    pytest.importorskip("tensorrt", reason="tensorrt is not importable here; pip install 'prnseg[tensorrt]' needs "
                                           "NVIDIA's index and a GPU")
    if not torch.cuda.is_available():
        pytest.skip("TensorRT engines need a CUDA GPU")
    from prnseg.export import export_model
    from prnseg.export.triton import parse_pbtxt
    from prnseg.serve.trt_compat import check_engine_compatible, load_engine

    out = export_model(prn_checkpoint, tmp_path / "model", sizes=["128x256"], max_batch=4, fp16=True,
                       tensorrt=True, triton=True, progress=False)
    spec = load_model_spec(out)
    (entry,) = spec.artefacts["tensorrt"]
    assert entry["bucket"] == {"height": 128, "width": 256} and entry["max_batch"] == 4
    assert check_engine_compatible(entry) is None
    from prnseg.training.checkpoint import file_sha256

    assert entry["sha256"] == file_sha256(out / entry["file"])
    engine = load_engine(out / entry["file"], entry, 0, (out / entry["file"]).read_bytes())
    names = {engine.get_tensor_name(i) for i in range(engine.num_io_tensors)}
    assert names == {"image", *PSEUDOLABELER_OUTPUTS}
    assert tuple(engine.get_tensor_profile_shape("image", 0)[2]) == (4, 128, 256, 3)
    summary = _parity(out)["summary"]
    assert summary["tensorrt_fp16"]["label_agreement"] >= 0.99
    cfg = parse_pbtxt((out / "triton" / "model" / "config.pbtxt").read_text())
    assert cfg["platform"] == "tensorrt_plan" and cfg["max_batch_size"] == 4
    assert (out / "triton" / "model" / "1" / "model.plan").read_bytes() == (out / entry["file"]).read_bytes()


@pytest.mark.slow
def test_checkpoint_without_prn_uses_the_confidence_noise_source(prn_checkpoint, synth_root, tmp_path):
    """A self_training checkpoint (no PRN): label = raw_label, noise = 1 - max softmax >= 1 - pseudo_threshold."""
    from prnseg.export import export_model
    from prnseg.image_io import read_image

    state = torch.load(prn_checkpoint, map_location="cpu", weights_only=True)
    state["config"]["uda"]["mode"] = "self_training"
    del state["prn"]
    ckpt = tmp_path / "self_training.pt"
    torch.save(state, ckpt)
    out = export_model(ckpt, tmp_path / "model", weights="student", sizes=["128x256"], progress=False)
    spec = load_model_spec(out)
    assert "prn" not in spec.artefacts and (out / "prn.onnx").exists() is False
    assert spec.noise_source == "confidence" and spec.noise_threshold == pytest.approx(1 - 0.968)
    assert spec.raw["checkpoint"]["weights"] == "student"
    assert _parity(out)["summary"]["pseudolabeler"]["label_agreement"] >= 0.999
    images = np.stack([read_image(p) for p in _val_images(synth_root)])
    o = dict(zip(PSEUDOLABELER_OUTPUTS, _session(spec.artefact_path("pseudolabeler")).run(None, {"image": images})))
    assert np.array_equal(o["label"], o["raw_label"])
    assert np.abs(o["noise_prob"].astype(int) - (255 - o["confidence"].astype(int))).max() <= 1


def test_calibration_folders_find_their_labels(synth_root, tmp_path, prn_checkpoint, exported_model):
    from prnseg.export.graphs import PseudoLabeler
    from prnseg.export.parity import load_calibration, run_parity
    from prnseg.image_io import read_image, write_image
    from prnseg.training.data.transforms import IMG_MEAN, IMG_STD
    from prnseg.training.loading import load_checkpoint_model

    images, desc = load_calibration(synth_root / "cityscapes", max_images=0)
    assert len(images) == 12 and all(c.gt is not None and c.gt.shape == c.rgb.shape[:2] for c in images)
    assert not any("gtFine" in c.name for c in images) and "with labels" in desc
    assert len(load_calibration(synth_root / "cityscapes", max_images=5)[0]) == 5

    folder = tmp_path / "calib"
    for i, p in enumerate(_val_images(synth_root)[:2]):
        write_image(folder / "images" / "a" / f"{i}.png", read_image(p))
    label = (synth_root / "cityscapes" / "gtFine" / "val").rglob("*_gtFine_labelTrainIds.png").__next__()
    (folder / "labels" / "a").mkdir(parents=True)
    (folder / "labels" / "a" / "0.png").write_bytes(label.read_bytes())
    images, _ = load_calibration(folder, max_images=0)
    assert [c.name for c in images] == ["images/a/0.png"]  # labelled images only once some have labels

    unlabelled = tmp_path / "plain"
    for i, p in enumerate(_val_images(synth_root)[:2]):
        write_image(unlabelled / f"{i}.jpg", read_image(p))
    images, desc = load_calibration(unlabelled, max_images=0)
    assert len(images) == 2 and all(c.gt is None for c in images) and "without labels" in desc
    segmentor, prn, cfg = load_checkpoint_model(prn_checkpoint, "teacher")
    reference = PseudoLabeler(segmentor, prn, IMG_MEAN, IMG_STD, 0.5,
                              refine_min_confidence=cfg.prn.refine_min_confidence).eval()
    spec = load_model_spec(exported_model)
    report = run_parity(reference, spec, {"pseudolabeler": spec.artefact_path("pseudolabeler")}, images, desc)
    m = report["summary"]["pseudolabeler"]
    assert report["passed"] and m["miou_delta_basis"] == "pytorch labels" and m["label_agreement"] >= 0.999
    assert m["miou_delta"] == pytest.approx(100 - m["miou_vs_reference"])


def test_engine_compatibility_check_runs_without_torch():
    """serve/trt_compat.py is what a robot runs: no torch, and here no tensorrt either."""
    code = ("from prnseg.serve.trt_compat import check_engine_compatible as c;"
            "print(c({'file': 'p.plan', 'tensorrt_version': '10.9.0', 'compute_capability': '9.0'}, '10.8.0', '9.0'))")
    proc = run_python_without_torch(code, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("p.plan was built with TensorRT 10.9.0, this machine has TensorRT 10.8.0")


@pytest.mark.slow
def test_a_prn_model_takes_its_noise_from_confidence_by_default_and_from_the_prn_on_request(
        prn_checkpoint, exported_model, synth_root, tmp_path):
    """--noise-from confidence (default): the PRN's labels, noise = 1 - their confidence cut at
    1 - uda.pseudo_threshold; --noise-from prn: the same labels, the PRN's noise head at its threshold."""
    from prnseg.export import ExportError, export_model
    from prnseg.image_io import read_image

    images = np.stack([read_image(p) for p in _val_images(synth_root)])
    spec = load_model_spec(exported_model)
    assert spec.noise_source == "confidence" and spec.noise_threshold == pytest.approx(1 - 0.968)
    assert "prn" in spec.artefacts and spec.raw["label_source"] == "prn_refined"
    conf = dict(zip(PSEUDOLABELER_OUTPUTS, _session(spec.artefact_path("pseudolabeler")).run(None, {"image": images})))
    assert np.abs(conf["noise_prob"].astype(int) - (255 - conf["confidence"].astype(int))).max() <= 1
    from_u8 = (255 - conf["confidence"].astype(int)) >= 0.032 * 255
    assert (from_u8 == conf["noise"].astype(bool)).mean() > 0.999
    prn_spec = load_model_spec(export_model(prn_checkpoint, tmp_path / "prn", sizes=["128x256"], progress=False,
                                            noise_from="prn"))
    assert prn_spec.noise_source == "prn" and prn_spec.noise_threshold == 0.5
    session = _session(prn_spec.artefact_path("pseudolabeler"))
    prn = dict(zip(PSEUDOLABELER_OUTPUTS, session.run(None, {"image": images})))
    assert np.array_equal(prn["label"], conf["label"]) and np.array_equal(prn["confidence"], conf["confidence"])
    assert not np.array_equal(prn["noise_prob"], conf["noise_prob"])
    with pytest.raises(ExportError, match="^--noise-from 'head': use confidence or prn$"):
        export_model(prn_checkpoint, tmp_path / "bad", noise_from="head", progress=False)
    assert not (tmp_path / "bad").exists()


@pytest.mark.slow
def test_noise_mask_only_run_exports_the_labels_it_trained_on(prn_checkpoint, synth_root, tmp_path):
    """prn.use_refined_labels=false: label = raw_label (with its confidence), noise still from the PRN."""
    from prnseg.export import export_model
    from prnseg.image_io import read_image

    state = torch.load(prn_checkpoint, map_location="cpu", weights_only=True)
    state["config"]["prn"]["use_refined_labels"] = False
    ckpt = tmp_path / "mask_only.pt"
    torch.save(state, ckpt)
    out = export_model(ckpt, tmp_path / "model", sizes=["128x256"], progress=False, noise_from="prn")
    spec = load_model_spec(out)
    assert spec.noise_source == "prn" and spec.raw["label_source"] == "segmenter"
    assert "prn" in spec.artefacts
    images = np.stack([read_image(p) for p in _val_images(synth_root)])
    o = dict(zip(PSEUDOLABELER_OUTPUTS, _session(spec.artefact_path("pseudolabeler")).run(None, {"image": images})))
    assert np.array_equal(o["label"], o["raw_label"])
    full = dict(zip(PSEUDOLABELER_OUTPUTS, _session(
        load_model_spec(export_model(prn_checkpoint, tmp_path / "full", sizes=["128x256"], progress=False,
                                     noise_from="prn"))
        .artefact_path("pseudolabeler")).run(None, {"image": images})))
    assert np.array_equal(o["noise_prob"], full["noise_prob"])


@pytest.mark.slow
def test_fp16_conversion_of_a_fresh_model_with_shared_initializers(prn_checkpoint, tmp_path):
    """A fresh model's identical tensors (zero biases, unit norm weights) are merged into shared
    initializers by the exporter; the fp16 conversion must still give a valid graph that runs."""
    from prnseg.export import export_model
    from prnseg.export.fp16 import convert_pseudolabeler_fp16, fp16_block_list, unshare_initializers
    from prnseg.export.onnx_export import op_counts

    state = torch.load(prn_checkpoint, map_location="cpu", weights_only=True)
    for key, t in state["teacher"]["model"].items():
        if key.endswith(".bias") and t.is_floating_point():
            state["teacher"]["model"][key] = torch.zeros_like(t)
    ckpt = tmp_path / "fresh.pt"
    torch.save(state, ckpt)
    out = export_model(ckpt, tmp_path / "model", sizes=["128x256"], progress=False)
    fp32 = onnx.load(str(out / "pseudolabeler.onnx"))
    assert unshare_initializers(fp32, set(fp16_block_list(fp32))) > 0  # the case exists in this graph
    dst = convert_pseudolabeler_fp16(out / "pseudolabeler.onnx", tmp_path / "fp16.onnx",
                                     op_counts(fp32).get("LayerNormalization", 0))
    image = np.zeros((1, 128, 256, 3), np.uint8)
    outs = _session(dst).run(None, {"image": image})
    assert [o.dtype for o in outs] == [np.uint8] * 5
