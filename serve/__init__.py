"""Torch-free runtime: label sets, image I/O and inference on exported models.

Nothing in this package may import torch: robots install ``pip install prnseg`` (numpy,
OpenCV, ONNX Runtime) and nothing else. ``Predictor`` and ``Prediction`` load on first use, so
importing the label sets does not import ONNX Runtime.
"""

from prnseg.labels import (
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

_LAZY = {"Predictor": "prnseg.serve.predictor", "Prediction": "prnseg.serve.predictor"}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'prnseg.serve' has no attribute {name!r}")


__all__ = [
    "Prediction",
    "Predictor",
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
