"""Checks of paths and files that run before any heavy import, so a typo is reported in well
under a second instead of after torch has loaded. Each failure is one line naming the path and
the fix."""

from __future__ import annotations

import zipfile
from pathlib import Path

from prnseg.errors import PrnsegError


def check_checkpoint(path, option: str = "CHECKPOINT") -> Path:
    """``path`` is a file written by ``prnseg train`` (a PyTorch zip archive), not a model folder,
    a ``model.json`` or some other file."""
    p = Path(path)
    if p.is_dir():
        if (p / "model.json").is_file():
            raise PrnsegError(f"{p}: an exported model folder, not a training checkpoint; pass the .pt file "
                              "prnseg train wrote (e.g. runs/x/last.pt)")
        if (p / "last.pt").is_file():
            raise PrnsegError(f"{p}: a folder; pass the checkpoint inside it: {p / 'last.pt'}")
        raise PrnsegError(f"{p}: a folder, not a checkpoint; pass the .pt file prnseg train wrote "
                          "(e.g. runs/x/last.pt)")
    if not p.exists():
        raise PrnsegError(f"{p}: checkpoint not found ({option}); pass the .pt file prnseg train wrote "
                          "(e.g. runs/x/last.pt)")
    if p.name == "model.json" or p.suffix.lower() == ".onnx":
        raise PrnsegError(f"{p}: part of an exported model, not a training checkpoint; pass the .pt file "
                          "prnseg train wrote (e.g. runs/x/last.pt)")
    try:
        is_zip = zipfile.is_zipfile(p)
    except OSError as exc:
        raise PrnsegError(f"{p}: cannot read it ({exc.strerror}); check its permissions") from None
    if not is_zip:
        raise PrnsegError(f"{p}: not a checkpoint written by prnseg train (not a PyTorch .pt archive); pass "
                          "runs/x/last.pt or another file prnseg train wrote")
    return p


def check_model_dir(path, option: str = "--model") -> Path:
    """``path`` is a folder holding an exported ``model.json``."""
    p = Path(path)
    if p.is_file() and p.name == "model.json":
        p = p.parent
    if not p.exists():
        raise PrnsegError(f"{p}: model directory not found ({option}); make one with prnseg export CHECKPOINT "
                          f"--out {p}")
    if not (p / "model.json").is_file():
        hint = (" (a training checkpoint: export it first with prnseg export "
                f"{p} --out MODEL_DIR)") if p.is_file() else ""
        raise PrnsegError(f"{p}: no model.json here{hint}; pass a folder written by prnseg export ({option})")
    return p


def check_dir(path, option: str) -> Path:
    """``path`` is an existing folder."""
    p = Path(path)
    if not p.is_dir():
        what = "is a file, not a folder" if p.exists() else "folder not found"
        raise PrnsegError(f"{p}: {what} ({option}); pass an existing folder")
    return p
