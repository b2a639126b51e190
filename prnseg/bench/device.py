"""The one place ``prnseg bench`` turns ``--device`` into a PyTorch device string.

The bench has its own resolver, separate from the other modes'; it lives alone here so that
unifying it with theirs touches one file.
"""

from __future__ import annotations

from prnseg.bench.errors import BenchError


def resolve_device(spec: str) -> str:
    """``auto``, ``cpu``, ``cuda`` or ``cuda:N`` -> ``"cpu"`` or ``"cuda:N"``, checked against the GPUs
    PyTorch sees here (``auto``: the first one, else the CPU)."""
    import torch

    from prnseg.serve.predictor import BackendError, parse_device

    if str(spec).strip().lower() == "auto":
        return "cuda:0" if torch.cuda.is_available() else "cpu"
    try:
        kind, idx = parse_device(spec)
    except BackendError:
        raise BenchError(f"--device {spec!r}: use auto, cpu, cuda or cuda:N") from None
    if kind == "cpu":
        return "cpu"
    if not torch.cuda.is_available():
        raise BenchError(f"--device {spec}: no CUDA GPU is visible to PyTorch here; use --device cpu")
    if idx >= torch.cuda.device_count():
        raise BenchError(f"--device {spec}: only {torch.cuda.device_count()} CUDA device(s) here")
    return f"cuda:{idx}"
