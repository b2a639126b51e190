"""Datasets, transforms, UDA pairing and Rare Class Sampling.

Names are imported lazily: ``prnseg.training.data.synthetic`` (the benchmark generator) is
torch-free and must stay importable without pulling torch in through this package.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "ACDCDataset": "datasets",
    "CityscapesDataset": "datasets",
    "DarkZurichDataset": "datasets",
    "DATASETS": "datasets",
    "FolderDataset": "datasets",
    "GTA5Dataset": "datasets",
    "SegDataset": "datasets",
    "SynthiaDataset": "datasets",
    "build_dataset": "datasets",
    "read_trainids": "datasets",
    "Compose": "transforms",
    "Normalize": "transforms",
    "Pad": "transforms",
    "RandomCrop": "transforms",
    "RandomFlip": "transforms",
    "Resize": "transforms",
    "build_test_pipeline": "transforms",
    "build_train_pipeline": "transforms",
    "RareClassSampler": "rcs",
    "class_pixel_counts": "rcs",
    "rcs_class_probs": "rcs",
    "ResumableSampler": "uda",
    "UDADataset": "uda",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
