"""What the numbers were measured on: CPU, cores, RAM, GPUs, load and library versions.

A timing means little without the machine and how busy it was, so every report carries these.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import platform
from pathlib import Path

import numpy as np

from prnseg import __version__


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def _ram_gb() -> float | None:
    with contextlib.suppress(ValueError, OSError, AttributeError):
        return round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    return None


def _version(module: str) -> str | None:
    if importlib.util.find_spec(module) is None:
        return None
    try:
        mod = __import__(module)
    except Exception as exc:  # a broken install is worth reporting, not crashing on
        return f"import failed: {type(exc).__name__}"
    return str(getattr(mod, "__version__", "unknown"))


def machine_info(device: str) -> dict:
    """CPU, cores, RAM, GPU and the versions of everything that runs a row."""
    import onnxruntime as ort
    import torch

    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    info = {
        "cpu": _cpu_model(), "cpu_cores_logical": os.cpu_count(), "cpu_cores_usable": usable, "ram_gb": _ram_gb(),
        "os": platform.platform(), "python": platform.python_version(),
        "gpus": [], "device": device,
        "versions": {"prnseg": __version__, "torch": torch.__version__, "onnxruntime": ort.__version__,
                     "onnx": _version("onnx"), "transformers": _version("transformers"),
                     "tensorrt": _version("tensorrt") or "not installed", "numpy": np.__version__,
                     "torch_cuda": torch.version.cuda},
        "onnxruntime_providers": ort.get_available_providers(),
        "load_average_start": load_average(),
    }
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            prop = torch.cuda.get_device_properties(i)
            info["gpus"].append({"index": i, "name": prop.name, "memory_gb": round(prop.total_memory / 2**30, 1),
                                 "compute_capability": f"{prop.major}.{prop.minor}"})
    return info


def load_average() -> list[float] | None:
    with contextlib.suppress(OSError, AttributeError):
        return [round(v, 2) for v in os.getloadavg()]
    return None
