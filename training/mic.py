"""Masked image consistency (MIC, Hoyer et al. 2023), as its ``MaskingConsistencyModule``.

The student sees the target image with ~70 % of its blocks blacked out (after its own colour
jitter and blur: MIC's ``separatetrgaug``) and must still predict the pseudo-labels the teacher
made from the *whole* image, weighted by the same confidence weight (``mask_pseudo_threshold =
'same'``). To do so it has to use the context of what is visible, which is what adapts a
model's features to the target domain's context relations. The module owns its mask, its view
and its loss; the trainer only calls :meth:`MaskingConsistency.loss`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .augment import _rand, color_jitter, gaussian_blur
from .losses import seg_ce_loss


def block_mask(shape: tuple[int, int, int], block_size: int, mask_ratio: float,
               generator: torch.Generator | None = None, device=None) -> torch.Tensor:
    """B x 1 x H x W float mask of square blocks: a block is kept (1) with probability
    ``1 - mask_ratio``, as MIC's ``BlockMaskGenerator`` (keep where U > ratio), upsampled by
    nearest neighbour; a partial last block row/column is cut at the image border."""
    b, h, w = shape
    gh, gw = -(-h // block_size), -(-w // block_size)
    keep = (_rand((b, 1, gh, gw), generator, torch.device("cpu")) > mask_ratio).float()
    keep = F.interpolate(keep, scale_factor=block_size, mode="nearest")[..., :h, :w]
    return keep.to(device) if device is not None else keep


class MaskingConsistency:
    """``uda.mic``: the masked target view and its pseudo-label loss."""

    def __init__(self, block_size: int = 64, mask_ratio: float = 0.7, jitter_strength: float = 0.2,
                 jitter_apply_prob: float = 0.8, blur_apply_prob: float = 0.5, ce_reduction: str = "all_pixels"):
        if block_size < 1:
            raise ValueError(f"uda.mic.block_size must be >= 1, got {block_size}")
        if not 0.0 <= mask_ratio < 1.0:
            raise ValueError(f"uda.mic.mask_ratio must be in [0, 1), got {mask_ratio}")
        self.block_size = int(block_size)
        self.mask_ratio = float(mask_ratio)
        self.jitter_strength = jitter_strength
        self.jitter_apply_prob = jitter_apply_prob
        self.blur_apply_prob = blur_apply_prob
        self.ce_reduction = ce_reduction

    def masked_view(self, target_img: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """The student's input: the normalised target batch jittered, blurred, then block-masked
        (masked pixels become 0, the dataset mean, as MIC multiplies the normalised image)."""
        img = color_jitter(target_img, self.jitter_strength, self.jitter_apply_prob, generator=generator)
        img = gaussian_blur(img, self.blur_apply_prob, generator=generator)
        b, _, h, w = img.shape
        return img * block_mask((b, h, w), self.block_size, self.mask_ratio, generator, img.device).to(img.dtype)

    def loss(self, student, target_img: torch.Tensor, pseudo_label: torch.Tensor, pseudo_weight: torch.Tensor,
             generator: torch.Generator | None = None) -> torch.Tensor:
        """Weighted CE of the student on the masked view against the full-image pseudo-labels."""
        out = student(self.masked_view(target_img, generator))
        return seg_ce_loss(out.logits, pseudo_label, weight=pseudo_weight, reduction_mode=self.ce_reduction)
