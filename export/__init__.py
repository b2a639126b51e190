"""ONNX / TensorRT export of a trained checkpoint, with a parity gate (torch and onnx needed).

``export_model`` is imported lazily so ``prnseg --help`` and the CLI parser stay cheap.
"""

from __future__ import annotations


def __getattr__(name: str):
    if name in ("export_model", "ExportError", "ParityGateError", "parse_size"):
        from . import exporter

        return getattr(exporter, name)
    raise AttributeError(f"module 'prnseg.export' has no attribute {name!r}")


__all__ = ["export_model", "ExportError", "ParityGateError", "parse_size"]
