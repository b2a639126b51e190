"""Atomic checkpoints that load with ``torch.load(..., weights_only=True)``.

Everything stored is a tensor, a number, a string or a container of those (RNG states
included), so no pickle from a user's file is ever executed.
"""

from __future__ import annotations

import hashlib
import random
import re
from pathlib import Path

import numpy as np
import torch

from prnseg.atomic import atomic_writer
from prnseg.errors import PrnsegError

FORMAT_VERSION = 1


class CheckpointError(PrnsegError):
    pass


def save_checkpoint(state: dict, path: str | Path) -> None:
    """Write to a temporary file in the same folder, fsync, then rename: a crash at any moment
    leaves either the old checkpoint or the new one, never a truncated file."""
    with atomic_writer(path, fsync=True) as f:
        torch.save({"format_version": FORMAT_VERSION, **state}, f)


#: torch.load(weights_only=True) can be made to run code by a crafted file up to torch 2.5.1
#: (CVE-2025-32434): below this release no checkpoint is unpickled at all.
MIN_SAFE_TORCH = (2, 6)


def require_safe_torch(version: str | None = None) -> None:
    """Refuse to load checkpoints under a torch whose ``weights_only=True`` is not a safe boundary,
    whatever an installer picked."""
    version = torch.__version__ if version is None else version
    release = tuple(int(p) for p in re.findall(r"\d+", version.split("+")[0])[:2])
    if release < MIN_SAFE_TORCH:
        raise CheckpointError(f"torch {version}: its torch.load(weights_only=True) can run code from a crafted "
                              "checkpoint (CVE-2025-32434); pip install 'torch>=2.6'")


def load_checkpoint(path: str | Path, map_location="cpu") -> dict:
    require_safe_torch()
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # corrupt file or foreign pickle
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"{path}: not a readable prnseg checkpoint ({first[:200]})") from None
    if not isinstance(state, dict) or "student" not in state or "config" not in state:
        raise CheckpointError(f"{path}: not a prnseg checkpoint (no 'student' weights and 'config'); "
                              "pass a file written by `prnseg train`")
    return state


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def rng_state() -> dict:
    state = {"torch": torch.get_rng_state(), "python": list(_tuple_to_list(random.getstate())),
             "numpy": _np_state_to_dict(np.random.get_state())}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(_list_to_tuple(state["python"]))
    np.random.set_state(_dict_to_np_state(state["numpy"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _tuple_to_list(x):
    return [_tuple_to_list(v) for v in x] if isinstance(x, (tuple, list)) else x


def _list_to_tuple(x):
    return tuple(_list_to_tuple(v) for v in x) if isinstance(x, list) else x


def _np_state_to_dict(st) -> dict:
    return {"name": st[0], "keys": torch.from_numpy(np.asarray(st[1], dtype=np.int64)),
            "pos": int(st[2]), "has_gauss": int(st[3]), "cached": float(st[4])}


def _dict_to_np_state(d: dict):
    return (d["name"], d["keys"].numpy().astype(np.uint32), d["pos"], d["has_gauss"], d["cached"])
