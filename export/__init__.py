"""ONNX / TensorRT export of a trained checkpoint, with a parity gate (torch and onnx needed).

``export_model`` is imported lazily so ``prnseg --help`` and the CLI parser stay cheap.
"""

from __future__ import annotations

#: ``export_model``'s defaults, here (torch-free) so that ``prnseg export --help`` and the Python API
#: read the same values without importing torch.
WEIGHTS = ("auto", "teacher", "student")
DEFAULT_WEIGHTS = "auto"
DEFAULT_MAX_BATCH = 8
DEFAULT_CALIB_IMAGES = 8
MIN_OPSET = 17
DEFAULT_OPSET = 17
#: where a PRN model's noise output comes from: ``confidence`` (1 - the written label's confidence,
#: the default: it ranks pseudo-label errors better than the PRN's noise head on the synthetic
#: benchmark, AUROC 87 vs 81 with --tta, 86 vs 81 single pass) or ``prn`` (the PRN's noise head)
NOISE_FROM = ("confidence", "prn")
DEFAULT_NOISE_FROM = "confidence"


def __getattr__(name: str):
    if name in ("export_model", "ExportError", "ParityGateError", "parse_size"):
        from . import exporter

        return getattr(exporter, name)
    raise AttributeError(f"module 'prnseg.export' has no attribute {name!r}")


__all__ = ["export_model", "ExportError", "ParityGateError", "parse_size"]
