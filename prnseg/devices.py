"""The one device resolver: ``--device`` (``auto``, ``cpu``, ``cuda``, ``cuda:N``) -> a :class:`Device`,
checked against the GPUs the runtime that will use it can see.

Torch-free: the PyTorch probe (:func:`torch_gpu_count`, the default) imports torch only when it is
called, i.e. when a torch part (train, eval, quickstart, bench) asks; ``prnseg.serve`` passes its own
ONNX Runtime probe. The messages are one-liners for :class:`~prnseg.errors.PrnsegError`; a caller
that owns another error class passes it as ``error`` (the message stays the same).
"""

from __future__ import annotations

import re
from typing import Callable, NamedTuple

from prnseg.errors import PrnsegError

CHOICES = "auto, cpu, cuda or cuda:N"


class DeviceError(PrnsegError):
    """A device that is not auto, cpu, cuda or cuda:N, or a GPU that is not here."""


class Device(NamedTuple):
    """Where to run: ``kind`` is ``"cpu"`` or ``"cuda"``; ``index`` the CUDA ordinal (0 on the CPU).
    Unpacks as ``kind, index``; ``str()`` is PyTorch's spelling (``cpu``, ``cuda:N``)."""

    kind: str
    index: int = 0

    def __str__(self) -> str:
        return "cpu" if self.kind == "cpu" else f"cuda:{self.index}"

    @property
    def short(self) -> str:
        """``cpu``, ``cuda`` for the first GPU, else ``cuda:N`` (the form the user most often types)."""
        return "cuda" if (self.kind, self.index) == ("cuda", 0) else str(self)


def torch_gpu_count() -> int:
    """The CUDA devices PyTorch sees here (0 without CUDA); imports torch."""
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def parse_device(spec: str, *, error: type[Exception] = DeviceError) -> Device:
    """``cpu``, ``cuda`` or ``cuda:N`` (any case, surrounding blanks ignored) -> :class:`Device`; the
    syntax only, no GPU is asked about. Anything else (``auto`` included) raises ``error``."""
    text = str(spec).strip().lower()
    m = re.fullmatch(r"(cpu|cuda)(?::(\d+))?", text)
    if not m or (m.group(1) == "cpu" and m.group(2)):
        raise error(f"--device {text!r}: use {CHOICES}")
    return Device(m.group(1), int(m.group(2) or 0))


def resolve_device(spec: str | None, *, gpu_count: Callable[[], int] = torch_gpu_count, runtime: str = "PyTorch",
                   check: bool = True, error: type[Exception] = DeviceError) -> Device:
    """``spec`` (None = ``auto``) -> :class:`Device`.

    ``auto``: the first GPU when ``gpu_count()`` > 0, else the CPU. ``cuda[:N]``: with ``check``, a
    one-line ``error`` when ``runtime`` sees no GPU or fewer than N + 1 (without it, the runtime
    decides later, e.g. ONNX Runtime falls back to its CPU provider with a warning).
    """
    text = str(spec if spec is not None else "auto").strip().lower()
    if text == "auto":
        return Device("cuda", 0) if gpu_count() > 0 else Device("cpu")
    device = parse_device(text, error=error)
    if device.kind == "cpu" or not check:
        return device
    n = gpu_count()
    if n == 0:
        raise error(f"--device {text}: {runtime} sees no CUDA GPU on this machine; use --device cpu (or auto)")
    if device.index >= n:
        raise error(f"--device {text}: this machine has {n} CUDA device(s); use cuda:0..cuda:{n - 1}")
    return device
