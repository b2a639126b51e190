"""Segmentation models: MiT encoders, DAFormer / SegFormer heads, the segmentor and the PRN."""

from .decoders import DAFormerHead, SegFormerMLPHead
from .encoder import MIT_SPECS, MiTEncoder, MiTSpec, apply_mit_norm_eps, load_pretrained_mit, mit_config
from .factory import ENCODERS, HEADS, create_model, create_prn, create_prn_from_config, default_head_channels
from .prn import PRN
from .segmentor import Segmentor, SegOutput, pad_to_multiple, padded_size

__all__ = [
    "DAFormerHead", "SegFormerMLPHead", "MIT_SPECS", "MiTEncoder", "MiTSpec", "apply_mit_norm_eps",
    "load_pretrained_mit", "mit_config", "ENCODERS", "HEADS", "create_model", "create_prn", "create_prn_from_config",
    "default_head_channels", "PRN", "Segmentor", "SegOutput", "pad_to_multiple", "padded_size",
]
