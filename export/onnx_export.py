"""torch -> ONNX for the three graphs, with the checks every artefact must pass.

The TorchScript-based exporter (``dynamo=False``) is used: on transformers' Segformer it emits
one ``LayerNormalization`` per ``nn.LayerNorm`` at opset 17, keeps batch, height and width
dynamic, and takes under a second for the tiny model; the dynamo exporter is ~10x slower here,
bumps the opset to 18 and leaves ``RandomUniformLike`` nodes (drop-path) in the graph.
"""

from __future__ import annotations

import warnings
from collections import Counter
from pathlib import Path

import onnx
import torch
from torch import nn

from prnseg import __version__
from prnseg.errors import PrnsegError

from .graph_passes import pad_concat_conv_channels
from .graphs import PRN_INPUTS, PRN_OUTPUTS, PSEUDOLABELER_OUTPUT_ORDER, SEGMENTER_OUTPUTS

DUMMY_BATCH = 2


class OnnxExportError(PrnsegError):
    """An exported graph failed a structural check (checker, LayerNorm fusion)."""


def check_onnx(path: Path, after: str = "") -> None:
    """``onnx.checker`` full check; a failure is one line naming the file (and the step)."""
    try:
        onnx.checker.check_model(str(path), full_check=True)
    except onnx.checker.ValidationError as exc:
        first = str(exc).strip().splitlines()[0]
        raise OnnxExportError(f"{Path(path).name}: fails onnx.checker{after} ({first[:200]})") from None


def count_layernorm_modules(module: nn.Module) -> int:
    return sum(isinstance(m, nn.LayerNorm) for m in module.modules())


def op_counts(model: onnx.ModelProto) -> Counter:
    return Counter(n.op_type for n in model.graph.node)


def _export(module: nn.Module, args: tuple, path: Path, input_names, output_names, dynamic_axes, opset: int,
            layernorms: int | None) -> Path:
    # A fresh wrapper module is in training mode and the exporter restores that mode afterwards,
    # recursively: the wrapped networks would come back with BatchNorm updating its statistics.
    module.eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with torch.no_grad():
            torch.onnx.export(module, args, str(path), input_names=list(input_names),
                              output_names=list(output_names), dynamic_axes=dynamic_axes, opset_version=opset,
                              do_constant_folding=True, dynamo=False)
    model = onnx.load(str(path))
    model.producer_name, model.producer_version = "prnseg", __version__
    pad_concat_conv_channels(model)
    onnx.save(model, str(path))
    check_onnx(path)
    if layernorms is not None:
        found = op_counts(model).get("LayerNormalization", 0)
        if found != layernorms:
            raise OnnxExportError(f"{path.name}: {found} LayerNormalization nodes for {layernorms} nn.LayerNorm "
                                  "modules; a decomposed LayerNorm overflows in fp16 (use opset >= 17)")
    return path


def _nchw_axes(names, h: str = "H", w: str = "W") -> dict:
    return {n: {0: "N", 2: f"{h}_{n}", 3: f"{w}_{n}"} for n in names}


def export_segmenter(graph: nn.Module, path: Path, hw: tuple[int, int], opset: int, layernorms: int) -> Path:
    x = torch.randn(DUMMY_BATCH, 3, *hw)
    axes = {"image": {0: "N", 2: "H", 3: "W"}, **_nchw_axes(SEGMENTER_OUTPUTS)}
    return _export(graph, (x,), path, ["image"], SEGMENTER_OUTPUTS, axes, opset, layernorms)


def export_prn(graph: nn.Module, segmentor: nn.Module, path: Path, hw: tuple[int, int], opset: int) -> Path:
    with torch.no_grad():
        out = segmentor.eval()(torch.randn(DUMMY_BATCH, 3, *hw))
    args = (*out.features, out.logits)
    axes = _nchw_axes(PRN_INPUTS)
    axes.update({n: {0: "N", 2: "H_feat0", 3: "W_feat0"} for n in PRN_OUTPUTS})
    return _export(graph, args, path, PRN_INPUTS, PRN_OUTPUTS, axes, opset, 0)


def export_pseudolabeler(graph: nn.Module, path: Path, hw: tuple[int, int], opset: int, layernorms: int) -> Path:
    x = torch.randint(0, 256, (DUMMY_BATCH, *hw, 3), dtype=torch.uint8)
    axes = {"image": {0: "N", 1: "H", 2: "W"}, **{n: {0: "N", 1: "H", 2: "W"} for n in PSEUDOLABELER_OUTPUT_ORDER}}
    return _export(graph, (x,), path, ["image"], PSEUDOLABELER_OUTPUT_ORDER, axes, opset, layernorms)

