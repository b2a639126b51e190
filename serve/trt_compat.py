"""Can this machine load an exported TensorRT plan? (torch-free; ``tensorrt`` imported on use)

A plan is a pure serialized engine: it deserialises only under the TensorRT version that built
it and, by default, on GPUs of the same compute capability. ``prnseg export --tensorrt`` records
both in ``model.json`` (``artefacts.tensorrt[i].tensorrt_version`` / ``compute_capability``), so
a runtime can decide before touching the GPU and fall back to ONNX Runtime with a message that
says why and how to fix it.
"""

from __future__ import annotations

import ctypes
from pathlib import Path

from prnseg.errors import PrnsegError

_CUDA_ATTR_CC_MAJOR = 75  # cudaDevAttrComputeCapabilityMajor
_CUDA_ATTR_CC_MINOR = 76


class EngineIncompatibleError(PrnsegError):
    """A TensorRT plan cannot run here (no tensorrt, another TensorRT version or another GPU family)."""


def tensorrt_version() -> str | None:
    try:
        import tensorrt
    except ImportError:
        return None
    return str(tensorrt.__version__)


def cudart():
    """The CUDA runtime library, or None where it does not load."""
    for name in ("libcudart.so.13", "libcudart.so.12", "libcudart.so", "cudart64_12.dll"):
        try:
            return ctypes.CDLL(name)
        except OSError:
            continue
    return None


def cuda_compute_capability(device_index: int = 0) -> str | None:
    """``"major.minor"`` of a CUDA device through the CUDA runtime library, or None without one."""
    lib = cudart()
    if lib is None:
        return None
    major, minor = ctypes.c_int(), ctypes.c_int()
    if lib.cudaDeviceGetAttribute(ctypes.byref(major), _CUDA_ATTR_CC_MAJOR, int(device_index)) != 0:
        return None
    if lib.cudaDeviceGetAttribute(ctypes.byref(minor), _CUDA_ATTR_CC_MINOR, int(device_index)) != 0:
        return None
    return f"{major.value}.{minor.value}"


def _release(version: str) -> tuple[int, ...]:
    """'10.9.0.34' -> (10, 9, 0): the build number does not change the plan format."""
    parts = []
    for p in str(version).split(".")[:3]:
        digits = "".join(ch for ch in p if ch.isdigit())
        parts.append(int(digits) if digits else 0)
    return tuple(parts)


def check_engine_compatible(meta: dict, trt_version: str | None = "detect",
                            compute_capability: str | None = "detect", device_index: int = 0) -> str | None:
    """None when the plan described by ``meta`` (a ``model.json`` tensorrt entry) can load here,
    else a one-line reason ending with the fix. ``"detect"`` queries this machine."""
    name = meta.get("file", "the TensorRT plan")
    built_v = meta.get("tensorrt_version")
    built_cc = meta.get("compute_capability")
    have_v = tensorrt_version() if trt_version == "detect" else trt_version
    if have_v is None:
        return (f"{name}: tensorrt is not installed (pip install 'prnseg[tensorrt]' from NVIDIA's index), "
                "using ONNX Runtime")
    have_cc = cuda_compute_capability(device_index) if compute_capability == "detect" else compute_capability
    if have_cc is None:
        return f"{name}: no CUDA device visible, using ONNX Runtime"
    if built_v is None or built_cc is None:
        return f"{name}: model.json lacks its TensorRT version or compute capability; re-export with --tensorrt"
    same_version = _release(built_v) == _release(have_v)
    if not same_version and not (meta.get("version_compatible") and _release(have_v) >= _release(built_v)):
        return (f"{name} was built with TensorRT {built_v}, this machine has TensorRT {have_v}: plans load only "
                "under the version that built them; re-export with --tensorrt here (using ONNX Runtime meanwhile)")
    if str(built_cc) != str(have_cc):
        return (f"{name} was built for compute capability {built_cc}, this GPU is {have_cc}: re-export with "
                "--tensorrt on this GPU (using ONNX Runtime meanwhile)")
    return None


def load_engine(path: str | Path, meta: dict, device_index: int, data: bytes):
    """Deserialise a plan's ``data`` (read from ``path`` and verified against model.json's sha256 by
    the caller) after ``check_engine_compatible``; raises EngineIncompatibleError with the reason."""
    reason = check_engine_compatible(meta, device_index=device_index)
    if reason is not None:
        raise EngineIncompatibleError(reason)
    import tensorrt as trt

    path = Path(path)
    runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
    engine = runtime.deserialize_cuda_engine(data)
    if engine is None:
        raise EngineIncompatibleError(f"{path}: TensorRT {trt.__version__} could not deserialise the plan; "
                                      "re-export with --tensorrt on this machine")
    return engine
