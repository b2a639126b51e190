"""Pseudo-label refinement network (PRN).

Reads the teacher's multi-level encoder features and its decoder logits and predicts (a) refined
logits as a residual on the input logits and (b) a per-pixel noise logit: the probability that
the teacher's label at that pixel is wrong.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .decoders import ConvBNReLU, embed_to_first_level


#: What the noise head's logit starts from: "none" (its own output alone, the method) or
#: "max_softmax" (logit(1 - the input's top probability) plus a zero-initialised residual)
NOISE_PRIORS = ("none", "max_softmax")


class PRN(nn.Module):
    """Light decoder over (features, softmax(logits)) with a residual-logit head and a noise head.

    The residual head's last layer starts at zero, so an untrained PRN returns the input logits
    unchanged: refinement starts from the teacher's labels instead of from noise. Features are
    not detached here; the caller passes the teacher's (already detached) features.
    """

    def __init__(self, feature_channels: Sequence[int], num_classes: int = 19, channels: int = 64,
                 num_blocks: int = 2, use_features: bool = True, noise_prior: str = "none"):
        super().__init__()
        if num_blocks < 1:
            raise ValueError(f"PRN needs num_blocks >= 1, got {num_blocks}")
        self.feature_channels = list(feature_channels)
        self.num_classes = num_classes
        self.channels = channels
        self.embed = nn.ModuleList(nn.Conv2d(c, channels, 1) for c in self.feature_channels) if use_features else None
        in_ch = (channels * len(self.feature_channels) if use_features else 0) + num_classes
        self.blocks = nn.Sequential(
            *(ConvBNReLU(in_ch if i == 0 else channels, channels, 3) for i in range(num_blocks))
        )
        self.refine_head = nn.Conv2d(channels, num_classes, 1)
        nn.init.zeros_(self.refine_head.weight)
        nn.init.zeros_(self.refine_head.bias)
        self.noise_head = nn.Conv2d(channels, 1, 1)
        if noise_prior not in NOISE_PRIORS:
            raise ValueError(f"PRN noise_prior must be one of {', '.join(NOISE_PRIORS)}, got {noise_prior!r}")
        self.noise_prior = noise_prior
        if noise_prior == "max_softmax":
            # the noise logit starts as logit(1 - max softmax): an untrained head ranks errors exactly
            # as the teacher's confidence does, and training moves it only where its signal says so
            nn.init.zeros_(self.noise_head.weight)
            nn.init.zeros_(self.noise_head.bias)
            self.prior_scale = nn.Parameter(torch.ones(1))

    def forward(self, features: Sequence[torch.Tensor], logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return (refined logits B x C x H4 x W4, noise logit B x 1 x H4 x W4) at the stride-4 feature size.

        ``logits`` at another resolution are resized (bilinear) to the first feature map's size.
        With ``use_features=False`` the features only give that size: the PRN reads the class
        probabilities alone, which look alike in both domains where encoder features do not.
        """
        if len(features) != len(self.feature_channels):
            raise ValueError(f"PRN expects {len(self.feature_channels)} feature maps, got {len(features)}")
        if logits.shape[1] != self.num_classes:
            raise ValueError(f"PRN expects {self.num_classes}-class logits, got {logits.shape[1]} channels")
        size = features[0].shape[-2:]
        if logits.shape[-2:] != size:
            logits = F.interpolate(logits, size=size, mode="bilinear", align_corners=False)
        levels = [] if self.embed is None else embed_to_first_level(features, self.embed)
        probs = torch.softmax(logits.float(), dim=1).to((levels or features)[0].dtype)
        h = self.blocks(torch.cat([*levels, probs], dim=1))
        refined = logits + self.refine_head(h).to(logits.dtype)
        noise = self.noise_head(h)
        if self.noise_prior == "max_softmax":
            top = probs.float().amax(dim=1, keepdim=True).clamp(1e-6, 1 - 1e-6)
            noise = noise + (self.prior_scale * (torch.log1p(-top) - torch.log(top))).to(noise.dtype)
        return refined, noise
