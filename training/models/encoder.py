"""MiT (Mix Transformer) encoders B0-B5 built on ``transformers.SegformerModel``.

The encoder code is Hugging Face's Apache-2.0 implementation; NVIDIA's MiT code is under a
non-commercial licence, so it is deliberately not used. Weights load from a local Hugging
Face-format directory (``save_pretrained`` layout) or a hub id such as ``nvidia/mit-b5``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from transformers import SegformerConfig, SegformerModel

from prnseg.errors import ConfigError

MIT_STRIDES: tuple[int, ...] = (4, 8, 16, 32)
OUTPUT_STRIDE = 32


@dataclass(frozen=True)
class MiTSpec:
    """Architecture of one MiT variant (the SegFormer paper's table)."""

    hidden_sizes: tuple[int, ...]
    depths: tuple[int, ...]
    num_attention_heads: tuple[int, ...] = (1, 2, 5, 8)
    sr_ratios: tuple[int, ...] = (8, 4, 2, 1)
    mlp_ratios: tuple[int, ...] = (4, 4, 4, 4)
    daformer_head_channels: int = 256
    segformer_head_channels: int = 256
    hub_id: str | None = None


_WIDE = (64, 128, 320, 512)
MIT_SPECS: dict[str, MiTSpec] = {
    "mit_b0": MiTSpec((32, 64, 160, 256), (2, 2, 2, 2), hub_id="nvidia/mit-b0"),
    "mit_b1": MiTSpec(_WIDE, (2, 2, 2, 2), hub_id="nvidia/mit-b1"),
    "mit_b2": MiTSpec(_WIDE, (3, 4, 6, 3), segformer_head_channels=768, hub_id="nvidia/mit-b2"),
    "mit_b3": MiTSpec(_WIDE, (3, 4, 18, 3), segformer_head_channels=768, hub_id="nvidia/mit-b3"),
    "mit_b4": MiTSpec(_WIDE, (3, 8, 27, 3), segformer_head_channels=768, hub_id="nvidia/mit-b4"),
    "mit_b5": MiTSpec(_WIDE, (3, 6, 40, 3), segformer_head_channels=768, hub_id="nvidia/mit-b5"),
    # For tests and CPU runs on synthetic data: same topology, a fraction of the width/depth.
    "tiny": MiTSpec(
        (16, 32, 64, 128), (1, 1, 1, 1), num_attention_heads=(1, 1, 2, 4),
        daformer_head_channels=32, segformer_head_channels=64,
    ),
}

_ARCH_FIELDS = ("hidden_sizes", "depths", "num_attention_heads", "sr_ratios", "mlp_ratios")
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


def mit_config(arch: str, drop_path_rate: float = 0.1, layer_norm_eps: float = 1e-6) -> SegformerConfig:
    """The ``SegformerConfig`` of a variant; unknown names raise ConfigError listing the known ones."""
    spec = get_spec(arch)
    return SegformerConfig(
        num_encoder_blocks=4,
        hidden_sizes=list(spec.hidden_sizes),
        depths=list(spec.depths),
        num_attention_heads=list(spec.num_attention_heads),
        sr_ratios=list(spec.sr_ratios),
        mlp_ratios=list(spec.mlp_ratios),
        patch_sizes=[7, 3, 3, 3],
        strides=[4, 2, 2, 2],
        drop_path_rate=drop_path_rate,
        layer_norm_eps=layer_norm_eps,
        reshape_last_stage=True,
    )


def get_spec(arch: str) -> MiTSpec:
    try:
        return MIT_SPECS[arch]
    except KeyError:
        raise ConfigError(f"unknown encoder {arch!r}; choose one of {', '.join(MIT_SPECS)}") from None


def apply_mit_norm_eps(model: nn.Module, eps: float) -> None:
    """Give the block and stage LayerNorms MiT's eps (1e-6).

    transformers builds every LayerNorm with the default 1e-5 and ignores
    ``config.layer_norm_eps``; the original MiT (which the ImageNet weights were trained with)
    uses 1e-6 in the transformer blocks and after each stage, and 1e-5 in the patch embedding
    and the key/value reduction, so those two keep the default.
    """
    for name, module in model.named_modules():
        if isinstance(module, nn.LayerNorm) and "patch_embeddings" not in name and ".attention." not in name:
            module.eps = eps


def _describe(config: SegformerConfig) -> str:
    return ", ".join(f"{f}={list(getattr(config, f))}" for f in _ARCH_FIELDS)


def _matches(config: SegformerConfig, spec: MiTSpec) -> bool:
    return all(tuple(getattr(config, f)) == tuple(getattr(spec, f)) for f in _ARCH_FIELDS)


def load_pretrained_mit(pretrained: str | Path, arch: str, drop_path_rate: float = 0.1) -> SegformerModel:
    """Load MiT weights and check that they are the variant asked for.

    A checkpoint of another variant, a missing directory or a checkpoint that lacks encoder
    weights raises ConfigError: silently training from partly random weights is the classic
    "mIoU 26" failure of UDA reproductions.
    """
    spec = get_spec(arch)
    source = str(pretrained)
    local = Path(source).expanduser()
    if local.exists():
        if not (local / "config.json").is_file():
            raise ConfigError(f"pretrained encoder {source}: no config.json (expected a save_pretrained directory)")
        source = str(local)
    elif not _HUB_ID.match(source):
        raise ConfigError(f"pretrained encoder {source}: directory not found")
    try:
        config = SegformerConfig.from_pretrained(source)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"pretrained encoder {source}: cannot read its config ({exc})") from exc
    if not _matches(config, spec):
        guess = next((name for name, s in MIT_SPECS.items() if _matches(config, s)), None)
        looks = f" (looks like {guess})" if guess else ""
        raise ConfigError(
            f"pretrained encoder {source} has {_describe(config)}{looks}, but arch {arch!r} needs "
            f"{', '.join(f'{f}={list(getattr(spec, f))}' for f in _ARCH_FIELDS)}"
        )
    config.drop_path_rate = drop_path_rate
    config.reshape_last_stage = True
    try:
        model, info = SegformerModel.from_pretrained(source, config=config, output_loading_info=True)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"pretrained encoder {source}: cannot load its weights ({exc})") from exc
    missing = list(info.get("missing_keys", []))
    if missing:
        raise ConfigError(
            f"pretrained encoder {source} lacks {len(missing)} encoder weights (e.g. {missing[0]}); "
            "is it a SegFormer/MiT checkpoint?"
        )
    return model


class MiTEncoder(nn.Module):
    """MiT encoder returning the four feature maps at strides 4, 8, 16 and 32.

    ``pretrained``: a local Hugging Face-format directory or a hub id; ``None`` initialises
    randomly (tests, synthetic data).
    """

    def __init__(self, arch: str = "mit_b5", pretrained: str | Path | None = None, drop_path_rate: float = 0.1):
        super().__init__()
        spec = get_spec(arch)
        self.arch = arch
        if pretrained is None:
            self.model = SegformerModel(mit_config(arch, drop_path_rate))
        else:
            self.model = load_pretrained_mit(pretrained, arch, drop_path_rate)
        apply_mit_norm_eps(self.model, self.model.config.layer_norm_eps)
        self.out_channels: list[int] = list(spec.hidden_sizes)
        self.strides: list[int] = list(MIT_STRIDES)
        self.output_stride = OUTPUT_STRIDE

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        out = self.model(pixel_values=x, output_hidden_states=True, return_dict=True)
        return list(out.hidden_states)
