"""Test-time augmentation of a segmenter: its class probabilities averaged over scales and mirrors.

The field's standard way to make better pseudo-labels offline (DAFormer and MIC evaluate and
pseudo-label with it at paper scale), and, on benchmark version 3, a better ranking of the
teacher's errors than its single-pass max-softmax (``bench/noise_signals.py``,
``scale_flip_softmax``). Here it is also what the PRN can learn to reproduce in one pass
(``prn.refine_signal`` / ``prn.noise_signal`` ``target_tta``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

#: Scales (each with its mirror) of the shipped augmentation: a stride-4 model on CPU-sized crops
#: gains little from larger sets, and every scale costs one more pass per mirror.
TTA_SCALES = (0.75, 1.0, 1.25)


@torch.no_grad()
def tta_probabilities(logits_fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor,
                      scales: Sequence[float] = TTA_SCALES, multiple: int = 32) -> torch.Tensor:
    """Class probabilities of ``logits_fn`` (images -> logits at any stride) for the normalised
    images ``x`` (B x 3 x H x W), averaged over ``scales`` and each scale's mirror, at H x W.

    Each scaled image is padded bottom/right to a ``multiple`` of the model's stride (as the
    evaluation pads) and its logits cropped back before they are resized to H x W.
    """
    h, w = x.shape[-2:]
    total = None
    for sc in scales:
        xs = x if sc == 1.0 else F.interpolate(x, scale_factor=sc, mode="bilinear", align_corners=False)
        hs, ws = xs.shape[-2:]
        for mirror in (False, True):
            inp = F.pad(xs.flip(-1) if mirror else xs, (0, -ws % multiple, 0, -hs % multiple))
            z = F.interpolate(logits_fn(inp).float(), size=inp.shape[-2:], mode="bilinear",
                              align_corners=False)[..., :hs, :ws]
            z = z.flip(-1) if mirror else z
            p = torch.softmax(F.interpolate(z, size=(h, w), mode="bilinear", align_corners=False), 1)
            total = p if total is None else total + p
    return total / (2 * len(scales))
