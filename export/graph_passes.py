"""Exact rewrites of an exported ONNX graph that make ONNX Runtime's CPU kernels faster.

Each pass leaves every output value the same (up to float summation order) and is checked by
the parity gate like the rest of the export.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

#: ONNX Runtime's blocked-layout (NCHWc) convolutions need input channels in multiples of 8.
CONV_CHANNEL_MULTIPLE = 8


def pad_concat_conv_channels(model: onnx.ModelProto, multiple: int = CONV_CHANNEL_MULTIPLE) -> int:
    """Zero-pad the channels of every Conv that reads a channel Concat, up to ``multiple``.

    The PRN's first convolution reads the concatenated feature levels and the C class
    probabilities (4 x 32 + 19 = 147 channels for the tiny model): a count ONNX Runtime cannot
    block, so it ran that convolution in plain NCHW at 14 % of the fused graph's time. A Pad
    appends zero channels to the Concat's last input and the weight gets matching zero input
    channels, so the sum is unchanged. Only a Concat read by that Conv alone (and not a graph
    output), and a weight initializer used by it alone, are rewritten. Returns the number of convolutions padded.
    """
    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    producer = {out: node for node in graph.node for out in node.output}
    consumers: dict[str, int] = {}  # readers of each tensor; a graph output counts as one
    for name in [i for node in graph.node for i in node.input] + [o.name for o in graph.output]:
        consumers[name] = consumers.get(name, 0) + 1
    inserts = []
    for node in graph.node:
        if node.op_type != "Conv" or len(node.input) < 2 or node.input[1] not in inits:
            continue
        if any(a.name == "group" and a.i != 1 for a in node.attribute):
            continue
        cat = producer.get(node.input[0])
        if cat is None or cat.op_type != "Concat" or [a.i for a in cat.attribute if a.name == "axis"] != [1]:
            continue
        if consumers.get(node.input[0], 0) != 1 or consumers.get(node.input[1], 0) != 1:
            continue
        weight = numpy_helper.to_array(inits[node.input[1]])
        pad = (-weight.shape[1]) % multiple
        if pad == 0:
            continue
        prefix = f"{node.name or node.output[0]}/channel_pad"  # per Conv: two may pad one tensor
        pads, padded = f"{prefix}/pads", f"{prefix}/output"
        graph.initializer.append(numpy_helper.from_array(np.array([0, 0, 0, 0, 0, pad, 0, 0], np.int64), pads))
        inserts.append((cat, helper.make_node("Pad", [cat.input[-1], pads], [padded], name=prefix)))
        cat.input[-1] = padded
        zeros = np.zeros((weight.shape[0], pad, *weight.shape[2:]), weight.dtype)
        inits[node.input[1]].CopyFrom(numpy_helper.from_array(np.concatenate([weight, zeros], axis=1),
                                                              node.input[1]))
    for cat, pad_node in inserts:  # each Pad right before its Concat keeps the order topological
        nodes = list(graph.node)
        graph.node.insert(nodes.index(cat), pad_node)
    return len(inserts)
