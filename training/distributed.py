"""Minimal DDP plumbing for ``torchrun``: ranks from the environment, one process per device."""

from __future__ import annotations

import os
from contextlib import nullcontext

import torch
import torch.distributed as dist

from prnseg.devices import resolve_device
from prnseg.errors import ConfigError


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


def is_main() -> bool:
    return rank() == 0


def select_device(spec: str = "auto") -> torch.device:
    """``auto`` and ``cuda``: this rank's GPU when CUDA is available (``auto``: else the CPU);
    ``cuda:N`` that GPU. Anything but ``auto`` is checked by :func:`prnseg.devices.resolve_device`
    (a one-line error for a device that is not here). A CUDA device always carries its index:
    ``torch.cuda.set_device`` refuses a bare ``cuda``."""
    if str(spec).strip().lower() != "auto":
        device = resolve_device(spec, error=ConfigError)
        if device.kind == "cpu":
            return torch.device("cpu")
        return torch.device("cuda", device.index if ":" in str(spec) else local_rank())
    if torch.cuda.is_available():
        return torch.device("cuda", local_rank())
    return torch.device("cpu")


def init_distributed(device: torch.device) -> bool:
    """Join the process group when launched by torchrun; NCCL on CUDA, gloo on CPU."""
    if world_size() <= 1 or dist.is_initialized():
        return dist.is_initialized()
    backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(backend=backend)
    return True


def unwrap(module):
    return module.module if hasattr(module, "module") and isinstance(
        module, torch.nn.parallel.DistributedDataParallel) else module


def no_sync(module):
    """Skip the gradient all-reduce for all but the last backward of a step."""
    if isinstance(module, torch.nn.parallel.DistributedDataParallel):
        return module.no_sync()
    return nullcontext()


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def all_reduce_sum_(tensor: torch.Tensor) -> torch.Tensor:
    if dist.is_initialized():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor
