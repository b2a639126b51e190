"""Encoder + decode head, with the shape contract, padding helpers and optimizer parameter groups."""

from __future__ import annotations

from collections.abc import Iterable
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

_NORM_TYPES = (nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm)


class SegOutput(NamedTuple):
    """``logits`` at stride 4; ``features``: the 4 encoder maps; ``decoder_features``: fused, stride 4."""

    logits: torch.Tensor
    features: list[torch.Tensor]
    decoder_features: torch.Tensor


def padded_size(height: int, width: int, multiple: int = 32) -> tuple[int, int]:
    """The smallest size >= (height, width) whose sides are multiples of ``multiple``."""
    return height + (-height) % multiple, width + (-width) % multiple


def pad_to_multiple(x: torch.Tensor, multiple: int = 32,
                    value: float = 0.0) -> tuple[torch.Tensor, tuple[int, int, int, int]]:
    """Pad the bottom and right of a ... x H x W tensor to multiples of ``multiple``.

    Returns the padded tensor and the pad in ``F.pad`` order (left, right, top, bottom). With
    normalised images ``value=0`` is the dataset mean colour.
    """
    h, w = x.shape[-2:]
    ph, pw = padded_size(h, w, multiple)
    pad = (0, pw - w, 0, ph - h)
    if pad[1] or pad[3]:
        x = F.pad(x, pad, value=value)
    return x, pad


class Segmentor(nn.Module):
    """A semantic segmentor: ``encoder`` (multi-level features) + ``decode_head`` (logits at 1/4)."""

    def __init__(self, encoder: nn.Module, decoder: nn.Module):
        super().__init__()
        self.encoder = encoder
        self.decode_head = decoder
        self.output_stride: int = getattr(encoder, "output_stride", 32)
        self.num_classes: int = decoder.num_classes

    def check_input_shape(self, x: torch.Tensor) -> None:
        """Raise ValueError unless x is B x C x H x W with H, W multiples of the output stride."""
        if x.dim() != 4:
            raise ValueError(f"expected a B x C x H x W image batch, got shape {tuple(x.shape)}")
        _, c, h, w = x.shape
        s = self.output_stride
        if h % s or w % s:
            ph, pw = padded_size(h, w, s)
            raise ValueError(
                f"input {c}x{h}x{w} is not a multiple of {s}; pad to {ph}x{pw} "
                "(pad_to_multiple or Segmentor.inference do it)"
            )

    def forward(self, x: torch.Tensor) -> SegOutput:
        if not torch.jit.is_tracing():
            self.check_input_shape(x)
        features = self.encoder(x)
        fused = self.decode_head.forward_features(features)
        return SegOutput(self.decode_head.classify(fused), features, fused)

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """Logits upsampled (bilinear, align_corners=False) to the input size."""
        logits = self(x).logits
        return F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=False)

    def inference(self, x: torch.Tensor) -> torch.Tensor:
        """Whole-image logits for any input size: pad to the output stride, predict, crop back."""
        h, w = x.shape[-2:]
        padded, _ = pad_to_multiple(x, self.output_stride)
        return self.predict(padded)[..., :h, :w]

    def param_groups(self, lr: float, head_lr_mult: float = 10.0, weight_decay: float = 0.01,
                     extra_heads: Iterable[nn.Module] = ()) -> list[dict]:
        """AdamW parameter groups in DAFormer's scheme.

        Encoder at ``lr``; decode head and ``extra_heads`` (the PRN, a projection head) at
        ``lr * head_lr_mult``; parameters of norm layers (LayerNorm, BatchNorm, GroupNorm) get no
        weight decay. DAFormer's ``custom_keys`` select norms by the substring "norm", which
        misses its head's BatchNorms (named ``bn``); here norms are found by type everywhere.
        Each group carries ``lr_mult`` so a scheduler can rescale it from a base lr.
        """
        modules = [self] + [m for m in extra_heads if m is not self]
        encoder_ids = {id(p) for p in self.encoder.parameters()}
        norm_ids: set[int] = set()
        for module in modules:
            for m in module.modules():
                if isinstance(m, _NORM_TYPES):
                    norm_ids.update(id(p) for p in m.parameters(recurse=False))
        groups = {
            name: {"name": name, "params": [], "lr": lr * mult, "lr_mult": mult, "weight_decay": wd}
            for name, mult, wd in (
                ("backbone", 1.0, weight_decay),
                ("backbone_no_decay", 1.0, 0.0),
                ("head", float(head_lr_mult), weight_decay),
                ("head_no_decay", float(head_lr_mult), 0.0),
            )
        }
        seen: set[int] = set()
        for module in modules:
            for p in module.parameters():
                if not p.requires_grad or id(p) in seen:
                    continue
                seen.add(id(p))
                name = "backbone" if id(p) in encoder_ids else "head"
                if id(p) in norm_ids:
                    name += "_no_decay"
                groups[name]["params"].append(p)
        return [g for g in groups.values() if g["params"]]
