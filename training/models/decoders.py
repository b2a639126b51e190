"""Decode heads on the four MiT feature maps: DAFormer (ASPP context fusion) and SegFormer (all-MLP).

Both split into ``forward_features`` (fused decoder features at stride 4, which a contrastive
projection head reuses) and ``classify`` (dropout + 1x1 classifier).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn



def embed_to_first_level(feats: Sequence[torch.Tensor], embeds: Sequence[nn.Module]) -> list[torch.Tensor]:
    """Embed each level with its own module and resize all to the first (stride-4) level's size."""
    size = feats[0].shape[-2:]
    out = []
    for level, (x, embed) in enumerate(zip(feats, embeds)):
        y = embed(x)
        if level > 0:
            y = F.interpolate(y, size=size, mode="bilinear", align_corners=False)
        out.append(y)
    return out

class ConvBNReLU(nn.Sequential):
    """Conv (no bias, BN follows) + BatchNorm + ReLU, mmcv's ConvModule default."""

    def __init__(self, in_ch: int, out_ch: int, kernel_size: int = 1, dilation: int = 1, groups: int = 1):
        padding = dilation * (kernel_size // 2)
        super().__init__(
            nn.Conv2d(in_ch, out_ch, kernel_size, padding=padding, dilation=dilation, groups=groups, bias=False),
            nn.BatchNorm2d(out_ch),
            nn.ReLU(inplace=True),
        )


class DepthwiseSeparableConvBNReLU(nn.Sequential):
    """Depthwise 3x3 dilated conv + BN + ReLU, then pointwise 1x1 + BN + ReLU."""

    def __init__(self, in_ch: int, out_ch: int, dilation: int):
        super().__init__(
            ConvBNReLU(in_ch, in_ch, 3, dilation=dilation, groups=in_ch),
            ConvBNReLU(in_ch, out_ch, 1),
        )


class MLPEmbed(nn.Module):
    """Per-pixel Linear (no norm, no activation) on a B x C x H x W map."""

    def __init__(self, in_ch: int, out_ch: int):
        super().__init__()
        self.proj = nn.Linear(in_ch, out_ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        y = self.proj(x.flatten(2).transpose(1, 2))
        return y.transpose(1, 2).reshape(b, -1, h, w)


class SepASPP(nn.Module):
    """DAFormer's context fusion: parallel 1x1 and depthwise-separable dilated branches, 3x3 bottleneck."""

    def __init__(self, in_ch: int, channels: int, dilations: Sequence[int] = (1, 6, 12, 18)):
        super().__init__()
        self.branches = nn.ModuleList(
            ConvBNReLU(in_ch, channels, 1) if d == 1 else DepthwiseSeparableConvBNReLU(in_ch, channels, d)
            for d in dilations
        )
        self.bottleneck = ConvBNReLU(len(dilations) * channels, channels, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bottleneck(torch.cat([branch(x) for branch in self.branches], dim=1))


class _DecodeHead(nn.Module):
    """Shared front end (embed, upsample, concat), a head-specific ``fuse`` module, the classifier."""

    reverse_levels = False

    def __init__(self, in_channels: Sequence[int], num_classes: int, channels: int, embed_dims: int,
                 dropout: float, fuse: nn.Module):
        super().__init__()
        self.in_channels = list(in_channels)
        self.num_classes = num_classes
        self.channels = channels
        self.embed = nn.ModuleList(MLPEmbed(c, embed_dims) for c in self.in_channels)
        self.fuse = fuse
        self.dropout = nn.Dropout2d(dropout)
        self.classifier = nn.Conv2d(channels, num_classes, 1)
        nn.init.normal_(self.classifier.weight, std=0.01)
        nn.init.zeros_(self.classifier.bias)

    def _embed_levels(self, feats: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        if len(feats) != len(self.embed):
            raise ValueError(f"decode head expects {len(self.embed)} feature maps, got {len(feats)}")
        return embed_to_first_level(feats, self.embed)

    def forward_features(self, feats: Sequence[torch.Tensor]) -> torch.Tensor:
        """Fused decoder features, B x channels x H/4 x W/4."""
        levels = self._embed_levels(feats)
        if self.reverse_levels:
            levels = levels[::-1]
        return self.fuse(torch.cat(levels, dim=1))

    def classify(self, fused: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.dropout(fused))

    def forward(self, feats: Sequence[torch.Tensor]) -> torch.Tensor:
        return self.classify(self.forward_features(feats))


class DAFormerHead(_DecodeHead):
    """DAFormer decoder: Linear embed per level, upsample to 1/4, concat, separable ASPP fusion."""

    def __init__(self, in_channels: Sequence[int], num_classes: int = 19, channels: int = 256,
                 embed_dims: int | None = None, dilations: Sequence[int] = (1, 6, 12, 18), dropout: float = 0.1):
        embed_dims = channels if embed_dims is None else embed_dims
        fuse = SepASPP(embed_dims * len(in_channels), channels, dilations)
        super().__init__(in_channels, num_classes, channels, embed_dims, dropout, fuse)


class SegFormerMLPHead(_DecodeHead):
    """SegFormer's all-MLP decoder: Linear per level, upsample, concat [c4,c3,c2,c1], 1x1 fusion."""

    reverse_levels = True

    def __init__(self, in_channels: Sequence[int], num_classes: int = 19, channels: int = 256,
                 dropout: float = 0.1):
        fuse = ConvBNReLU(channels * len(in_channels), channels, 1)
        super().__init__(in_channels, num_classes, channels, channels, dropout, fuse)
