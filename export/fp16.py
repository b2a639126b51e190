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

from .onnx_export import OnnxExportError, op_counts

FP16_SCOPE = "/segmentor/encoder/"
FP32_OPS = ("LayerNormalization", "Softmax")


def fp16_block_list(model: onnx.ModelProto) -> list[str]:
    """Names of the nodes that stay fp32: everything outside the encoder scope."""
    names = [n.name for n in model.graph.node]
    if not any(n.startswith(FP16_SCOPE) for n in names):
        raise OnnxExportError(f"no node under {FP16_SCOPE}: the exporter's node naming changed; cannot choose the "
                              "fp16 region")
    return [n for n in names if not n.startswith(FP16_SCOPE)]


def convert_pseudolabeler_fp16(src: Path, dst: Path, layernorms: int) -> Path:
    from onnxconverter_common import float16

    model = onnx.load(str(src))
    with warnings.catch_warnings():  # one warning per tiny weight clamped to fp16's smallest normal
        warnings.simplefilter("ignore")
        converted = float16.convert_float_to_float16(
            model, keep_io_types=True, node_block_list=fp16_block_list(model),
            op_block_list=list(float16.DEFAULT_OP_BLOCK_LIST) + list(FP32_OPS))
    onnx.save(converted, str(dst))
    try:
        onnx.checker.check_model(str(dst), full_check=True)
    except onnx.checker.ValidationError as exc:
        first = str(exc).strip().splitlines()[0]
        raise OnnxExportError(f"{dst.name}: fails onnx.checker after fp16 conversion ({first[:200]})") from None
    found = op_counts(converted).get("LayerNormalization", 0)
    if found != layernorms:
        raise OnnxExportError(f"{dst.name}: {found} LayerNormalization nodes after fp16 conversion, expected {layernorms}")
    return dst
