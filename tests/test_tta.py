"""Test-time augmentation (training/tta.py): mirrors and scales are undone before averaging."""

from __future__ import annotations

import torch

from prnseg.training.tta import tta_probabilities


def _pixelwise(x: torch.Tensor) -> torch.Tensor:
    """A 1x1 'segmenter' at stride 4: class 0 where the red channel is high, class 1 elsewhere."""
    z = torch.stack([x[:, 0] * 4.0, -x[:, 0] * 4.0], 1)
    return torch.nn.functional.avg_pool2d(z, 4)


def test_the_mirrored_and_scaled_views_are_mapped_back_to_the_image():
    x = torch.zeros(2, 3, 72, 100)           # neither side a multiple of 32: each view is padded, then cropped
    x[0, 0, :, :37] = 1.0                    # left third red: a mirror not undone would put it on the right
    x[0, 0, :, 37:] = -1.0
    x[1, 0] = 1.0
    p = tta_probabilities(_pixelwise, x)
    assert p.shape == (2, 2, 72, 100)
    assert torch.allclose(p.sum(1), torch.ones(2, 72, 100), atol=1e-5)
    label = p.argmax(1)
    assert (label[0, :, :30] == 0).all() and (label[0, :, 45:] == 1).all() and (label[1] == 0).all()


def test_one_scale_is_the_mirror_average_and_more_scales_change_it():
    torch.manual_seed(0)
    x = torch.randn(1, 3, 64, 96)
    single = tta_probabilities(_pixelwise, x, scales=(1.0,))
    direct = torch.softmax(torch.nn.functional.interpolate(_pixelwise(x), size=(64, 96), mode="bilinear",
                                                           align_corners=False), 1)
    # a pixelwise model is mirror-equivariant up to the stride-4 pooling grid: close, not equal
    assert (single - direct).abs().mean() < 0.1
    assert not torch.allclose(tta_probabilities(_pixelwise, x), single)
