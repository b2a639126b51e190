"""Torch-free runtime: label sets, image I/O and (later) inference on exported models.

Nothing in this package may import torch: robots install ``pip install prnseg`` (numpy,
OpenCV, ONNX Runtime) and nothing else.
"""

from prnseg.serve.labels import (
    CITYSCAPES_CLASSES,
    CITYSCAPES_PALETTE,
    IGNORE_INDEX,
    LABELID_TO_TRAINID,
    NUM_CLASSES,
    SYNTHIA_13_CLASSES,
    SYNTHIA_16_CLASSES,
    SYNTHIA_TO_TRAINID,
    colorize,
    labelid_to_trainid,
    synthia_to_trainid,
    trainid_to_labelid,
)

__all__ = [
    "CITYSCAPES_CLASSES",
    "CITYSCAPES_PALETTE",
    "IGNORE_INDEX",
    "LABELID_TO_TRAINID",
    "NUM_CLASSES",
    "SYNTHIA_13_CLASSES",
    "SYNTHIA_16_CLASSES",
    "SYNTHIA_TO_TRAINID",
    "colorize",
    "labelid_to_trainid",
    "synthia_to_trainid",
    "trainid_to_labelid",
]
