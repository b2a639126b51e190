"""A training checkpoint -> ready networks: the one loader that evaluation, export and warm starts use.

As timm's ``create_model(checkpoint_path=...)``: the checkpoint's own config builds the model
(no ImageNet weights fetched: the checkpoint's overwrite them), its weights are loaded, and a
mismatch is one line naming the file. The file itself is read by
:func:`~prnseg.training.checkpoint.load_checkpoint` (``torch.load(..., weights_only=True)``).
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import torch
from torch import nn

from prnseg.training.checkpoint import CheckpointError, load_checkpoint
from prnseg.training.config import Config, config_from_dict
from prnseg.training.models.factory import create_model_from_config, create_prn_from_config

#: ``auto`` takes the EMA teacher where the checkpoint has one (it made the pseudo-labels), else the student.
WEIGHTS = ("auto", "teacher", "student")


class LoadedModel(NamedTuple):
    segmentor: nn.Module
    prn: nn.Module | None
    config: Config


def checkpoint_weights(state: dict, weights: str = "auto") -> str:
    """``teacher`` or ``student``: which segmentor weights of ``state`` a ``weights`` choice means."""
    if weights not in WEIGHTS:
        raise CheckpointError(f"--weights {weights!r}: choose one of {', '.join(WEIGHTS)}")
    if weights == "auto":
        return "teacher" if "teacher" in state else "student"
    return weights


def _load_weights(module: nn.Module, state_dict: dict, path, what: str) -> None:
    try:
        module.load_state_dict(state_dict)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0]
        raise CheckpointError(f"{path}: {what}: {first[:160]}") from None


def load_checkpoint_model(path: str | Path, weights: str = "auto", device="cpu", *,
                          state: dict | None = None) -> LoadedModel:
    """(segmentor, PRN or None, config) of a ``prnseg train`` checkpoint, in eval mode on ``device``.

    ``weights``: one of :data:`WEIGHTS`. ``state``: the checkpoint already read with
    :func:`load_checkpoint`, so a caller that needs both weight sets, or the step, reads the file
    once. A ``prn``-mode checkpoint always comes with its PRN.
    """
    device = torch.device(device)
    if state is None:
        state = load_checkpoint(path, map_location=device)
    cfg = config_from_dict(state["config"])
    which = checkpoint_weights(state, weights)
    if which == "teacher" and "teacher" not in state:
        raise CheckpointError(f"{path}: holds no EMA teacher (mode {cfg.uda.mode}); use --weights student")
    model = create_model_from_config(cfg.model, pretrained=False).to(device)
    _load_weights(model, state["teacher"]["model"] if which == "teacher" else state["student"], path,
                  f"weights do not fit the model its config describes ({cfg.model.arch}/{cfg.model.head})")
    prn = None
    if cfg.uda.mode == "prn":
        if "prn" not in state:
            raise CheckpointError(f"{path}: a prn-mode checkpoint without PRN weights; re-save it with prnseg train")
        prn = create_prn_from_config(model, cfg.prn).to(device)
        _load_weights(prn, state["prn"], path, "PRN weights do not fit its config")
        prn.eval()
    return LoadedModel(model.eval(), prn, cfg)
