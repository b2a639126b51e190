"""Build segmentors and PRNs by name (registries in the style of timm / segmentation_models.pytorch)."""

from __future__ import annotations

from pathlib import Path

from prnseg.errors import ConfigError

from .decoders import DAFormerHead, SegFormerMLPHead
from .encoder import MIT_SPECS, MiTEncoder, MiTSpec
from .prn import PRN
from .segmentor import Segmentor

ENCODERS: dict[str, MiTSpec] = MIT_SPECS
HEADS: dict[str, type] = {"daformer": DAFormerHead, "segformer": SegFormerMLPHead}


def default_head_channels(arch: str, head: str) -> int:
    """The reference width of ``head`` on ``arch``: DAFormer 256; SegFormer 256 (B0/B1) or 768 (B2-B5)."""
    spec = ENCODERS[arch]
    return spec.daformer_head_channels if head == "daformer" else spec.segformer_head_channels


def create_model(arch: str = "mit_b5", head: str = "daformer", num_classes: int = 19,
                 pretrained: str | Path | None = None, head_channels: int | None = None,
                 drop_path_rate: float = 0.1) -> Segmentor:
    """A Segmentor from registry names.

    ``pretrained``: a local Hugging Face-format MiT directory or hub id (encoder weights only;
    the head starts random). ``head_channels=None`` takes the reference width for the pair
    (see ``default_head_channels``; ``tiny`` uses 32 for DAFormer and 64 for SegFormer so CPU
    runs stay fast: the dilated depthwise ASPP dominates a CPU step).
    """
    if arch not in ENCODERS:
        raise ConfigError(f"unknown encoder {arch!r}; choose one of {', '.join(ENCODERS)}")
    if head not in HEADS:
        raise ConfigError(f"unknown decode head {head!r}; choose one of {', '.join(HEADS)}")
    if head_channels is None:
        head_channels = default_head_channels(arch, head)
    encoder = MiTEncoder(arch, pretrained=pretrained, drop_path_rate=drop_path_rate)
    decoder = HEADS[head](encoder.out_channels, num_classes=num_classes, channels=head_channels)
    return Segmentor(encoder, decoder)


def create_model_from_config(model_cfg, pretrained: bool = True) -> Segmentor:
    """A Segmentor from a config's ``model`` section; ``pretrained=False`` skips loading ImageNet
    weights (a checkpoint's own weights are loaded next anyway)."""
    return create_model(arch=model_cfg.arch, head=model_cfg.head, num_classes=model_cfg.num_classes,
                        pretrained=(model_cfg.pretrained or None) if pretrained else None,
                        head_channels=model_cfg.head_channels or None, drop_path_rate=model_cfg.drop_path_rate)


def create_prn(segmentor: Segmentor, channels: int = 64, num_blocks: int = 2, use_features: bool = True,
               noise_prior: str = "none") -> PRN:
    """A PRN sized for ``segmentor``'s encoder channels and class count."""
    return PRN(segmentor.encoder.out_channels, num_classes=segmentor.num_classes, channels=channels,
               num_blocks=num_blocks, use_features=use_features, noise_prior=noise_prior)


def create_prn_from_config(segmentor: Segmentor, prn_cfg) -> PRN:
    """The PRN a config's ``prn`` section describes (what training, eval and export must all build)."""
    return create_prn(segmentor, channels=prn_cfg.channels, num_blocks=prn_cfg.num_blocks,
                      use_features=prn_cfg.use_features, noise_prior=prn_cfg.noise_prior)
