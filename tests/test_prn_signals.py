"""The PRN's training signals (training/prn_step.py) on hand-made tensors: which chunk each head
learns from and what its target is."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from prnseg.training.losses import noise_bce_loss, seg_ce_loss
from prnseg.training.prn_step import PRNBatch, PRNStep
from prnseg.training.tta import tta_probabilities

H, W = 32, 32   # image size; the maps below are at stride 4 (8 x 8)


class _RecordingPRN(torch.nn.Module):
    """Refined logits = the input logits times a learnable scale; noise logit = a learnable bias.
    Records the batch size of every call, so a test sees which chunks were run."""

    def __init__(self):
        super().__init__()
        self.scale = torch.nn.Parameter(torch.tensor(1.5))
        self.bias = torch.nn.Parameter(torch.tensor(-0.3))
        self.calls = []

    def forward(self, features, logits):
        self.calls.append(logits.shape[0])
        return logits * self.scale, torch.zeros_like(logits[:, :1]) + self.bias


def _teacher(x: torch.Tensor) -> torch.Tensor:
    """A 2-class pixelwise teacher at stride 4: class 0 where the red channel is positive."""
    return F.avg_pool2d(torch.stack([x[:, 0] * 3.0, -x[:, 0] * 3.0], 1), 4)


def _batches():
    x_t = torch.zeros(2, 3, H, W)
    x_t[:, 0, :, :16] = 1.0
    x_t[:, 0, :, 16:] = -1.0
    feats = [torch.zeros(2, 4, 8, 8)]
    # the single-pass logits the PRN reads claim class 1 on the top half: there they disagree with
    # the augmented teacher, which says class 0 on the left and class 1 on the right everywhere
    z_t = _teacher(x_t).clone()
    z_t[:, 0, :4], z_t[:, 1, :4] = -2.0, 2.0
    g = torch.Generator().manual_seed(0)
    source = PRNBatch(feats, torch.randn(2, 2, 8, 8, generator=g), torch.randint(0, 2, (2, H, W), generator=g))
    return source, PRNBatch(feats, z_t), x_t


def _up(t):
    return F.interpolate(t, size=(H, W), mode="bilinear", align_corners=False)


def test_target_tta_teaches_both_heads_the_augmented_label_on_the_target_alone():
    source, target, x_t = _batches()
    prn = _RecordingPRN()
    step = PRNStep(refine_signal="target_tta", noise_signal="target_tta", noise_pos_weight=1.0,
                   ce_reduction="valid_pixels")
    out = step.losses(prn, source, target=target, target_images=x_t, teacher=_teacher)
    assert prn.calls == [2]                  # the source chunk is not run: no head learns from it
    tta = tta_probabilities(_teacher, x_t).argmax(1)
    assert (tta[:, :, :14] == 0).all() and (tta[:, :, 18:] == 1).all()
    want_ref = seg_ce_loss(target.logits * 1.5, tta, reduction_mode="valid_pixels")
    wrong = _up(target.logits).argmax(1) != tta
    assert wrong[:, :12, :12].all() and not wrong[:, 20:].any() and not wrong[:, :, 20:].any()  # the top left only
    want_noise = noise_bce_loss(torch.full((2, H, W), -0.3), wrong, torch.ones_like(wrong), 1.0)
    assert out.terms["prn_ref"].item() == pytest.approx(want_ref.item(), rel=1e-5)
    assert out.terms["prn_noise"].item() == pytest.approx(want_noise.item(), rel=1e-5)
    out.loss.backward()
    assert prn.bias.grad > 0                 # about 1/8 of the pixels noisy, fewer than sigmoid(-0.3): push it down
    assert out.target is not None            # the target outputs are handed back for the pseudo-labels


def test_a_target_noise_signal_keeps_the_source_refine_head():
    source, target, x_t = _batches()
    prn = _RecordingPRN()
    step = PRNStep(refine_signal="source_fft", noise_signal="target_tta", noise_pos_weight=1.0,
                   ce_reduction="valid_pixels")
    out = step.losses(prn, source, target=target, target_images=x_t, teacher=_teacher)
    assert prn.calls == [4]                  # source and target in one forward
    want_ref = seg_ce_loss(source.logits * 1.5, source.labels, reduction_mode="valid_pixels")
    assert out.terms["prn_ref"].item() == pytest.approx(want_ref.item(), rel=1e-5)
    default = PRNStep(noise_pos_weight=1.0, ce_reduction="valid_pixels").losses(_RecordingPRN(), source)
    assert default.target is None and default.terms["prn_ref"].item() == pytest.approx(want_ref.item(), rel=1e-5)


def test_a_target_signal_without_the_target_or_an_unknown_signal_is_refused():
    source, _, _ = _batches()
    with pytest.raises(ValueError, match="need target, target_images and teacher"):
        PRNStep(refine_signal="target_tta").losses(_RecordingPRN(), source)
    with pytest.raises(ValueError, match="prn.refine_signal must be one of source_fft, target_tta"):
        PRNStep(refine_signal="fft")
