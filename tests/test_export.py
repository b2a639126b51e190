"""prnseg export: ONNX artefacts, model.json, the parity gate, errors, fp16, TensorRT and Triton."""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort

from prnseg.serve.model_spec import PSEUDOLABELER_OUTPUTS, load_model_spec


def test_exported_model_fixture_is_ready(exported_model):
    spec = load_model_spec(exported_model)
    assert spec.ready and [(b.height, b.width) for b in spec.buckets] == [(128, 256)]
    for key in ("segmenter", "prn", "pseudolabeler"):
        onnx.checker.check_model(str(spec.artefact_path(key)), full_check=True)
    parity = json.loads((exported_model / "parity.json").read_text())
    assert parity["passed"] and parity["summary"]["pseudolabeler"]["label_agreement"] >= 0.999
    sess = ort.InferenceSession(str(spec.artefact_path("pseudolabeler")), providers=["CPUExecutionProvider"])
    assert [o.name for o in sess.get_outputs()] == list(PSEUDOLABELER_OUTPUTS)
    out = sess.run(None, {"image": np.zeros((1, 128, 256, 3), np.uint8)})
    assert all(o.dtype == np.uint8 and o.shape == (1, 128, 256) for o in out)
