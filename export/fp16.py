"""fp16 pseudo-labeler: the MiT encoder in fp16, everything numerically delicate in fp32.

Kept in fp32: every ``LayerNormalization`` and ``Softmax`` (fp16 LayerNorm after attention
overflows: the SegFormer "wrong masks in fp16" failure), the input normalisation, the decode
head (boundary flips come from an fp16 classifier), the PRN (it mixes softmax probabilities with
features) and the final upsample/softmax/argmax/threshold region. uint8 I/O is unchanged.
The fp16 region is selected by node name: the exporter scopes encoder nodes under
``/segmentor/encoder/``.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import onnx

from .onnx_export import OnnxExportError, check_onnx, op_counts

FP16_SCOPE = "/segmentor/encoder/"
FP32_OPS = ("LayerNormalization", "Softmax")


def fp16_block_list(model: onnx.ModelProto) -> list[str]:
    """Names of the nodes that stay fp32: everything outside the encoder scope."""
    names = [n.name for n in model.graph.node]
    if not any(n.startswith(FP16_SCOPE) for n in names):
        raise OnnxExportError(f"no node under {FP16_SCOPE}: the exporter's node naming changed; cannot choose the "
                              "fp16 region")
    return [n for n in names if not n.startswith(FP16_SCOPE)]


def unshare_initializers(model: onnx.ModelProto, fp32_nodes: set[str]) -> int:
    """Give fp32 nodes their own copy of every initializer they share with fp16 nodes.

    The exporter merges identical tensors (zero biases, unit LayerNorm weights of a fresh model)
    into one initializer; converted to fp16 for the encoder, the fp32 consumers would then read an
    fp16 tensor and the graph no longer type-checks. Returns the number of copies made.
    """
    inits = {t.name: t for t in model.graph.initializer}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in model.graph.node:
        for name in node.input:
            if name in inits:
                consumers.setdefault(name, []).append(node)
    copies = 0
    for name, nodes in consumers.items():
        fp32 = [n for n in nodes if n.name in fp32_nodes]
        if not fp32 or len(fp32) == len(nodes):
            continue
        copy = onnx.TensorProto()
        copy.CopyFrom(inits[name])
        copy.name = f"{name}__fp32"
        model.graph.initializer.append(copy)
        for node in fp32:
            for i, inp in enumerate(node.input):
                if inp == name:
                    node.input[i] = copy.name
        copies += 1
    return copies


def convert_pseudolabeler_fp16(src: Path, dst: Path, layernorms: int) -> Path:
    from onnxconverter_common import float16

    model = onnx.load(str(src))
    block = fp16_block_list(model)
    unshare_initializers(model, set(block))
    with warnings.catch_warnings():  # one warning per tiny weight clamped to fp16's smallest normal
        warnings.simplefilter("ignore")
        converted = float16.convert_float_to_float16(
            model, keep_io_types=True, node_block_list=block,
            op_block_list=list(float16.DEFAULT_OP_BLOCK_LIST) + list(FP32_OPS))
    onnx.save(converted, str(dst))
    check_onnx(dst, " after fp16 conversion")
    found = op_counts(converted).get("LayerNormalization", 0)
    if found != layernorms:
        raise OnnxExportError(f"{dst.name}: {found} LayerNormalization nodes after fp16 conversion, "
                              f"expected {layernorms}")
    return dst
