"""Masked image consistency: the block mask, the masked view, and a real training run with it."""

from __future__ import annotations

import csv

import pytest
import torch

from conftest import run_cli, tiny_train_args
from prnseg.training.mic import MaskingConsistency, block_mask


def test_block_mask_keeps_whole_blocks_at_one_minus_the_ratio():
    g = torch.Generator().manual_seed(0)
    m = block_mask((64, 70, 100), block_size=16, mask_ratio=0.7, generator=g)
    assert m.shape == (64, 1, 70, 100) and set(m.unique().tolist()) <= {0.0, 1.0}
    blocks = m[:, :, :64, :96].reshape(64, 1, 4, 16, 6, 16)
    assert torch.equal(blocks.amin((3, 5)), blocks.amax((3, 5)))      # constant inside each block
    assert abs(m[:, :, :64, :96].mean().item() - 0.3) < 0.03            # ~30 % of the image stays visible


def test_masked_view_is_zero_where_masked_and_the_loss_reaches_the_student():
    from prnseg.training.models.factory import create_model

    torch.manual_seed(0)
    student = create_model("tiny", head="daformer")
    x = torch.randn(2, 3, 64, 64)
    mic = MaskingConsistency(block_size=16, mask_ratio=0.7, jitter_apply_prob=0.0, blur_apply_prob=0.0)
    view = mic.masked_view(x, torch.Generator().manual_seed(1))
    visible = view != 0
    assert 0.05 < visible.float().mean() < 0.6
    assert torch.equal(view[visible], x[visible])                       # no jitter/blur here: unchanged where kept
    label = torch.randint(0, 19, (2, 64, 64))
    loss = mic.loss(student, x, label, torch.ones(2, 64, 64), torch.Generator().manual_seed(1))
    loss.backward()
    assert loss.item() > 0 and student.decode_head.classifier.weight.grad.abs().sum() > 0


@pytest.mark.slow
def test_training_with_mic_logs_its_loss(synth_root, tmp_path):
    out = tmp_path / "mic"
    run_cli(*tiny_train_args(synth_root, out, mode="self_training", iters=2,
                             extra=["uda.mic.enabled=true", "uda.mic.block_size=16", "uda.pseudo_threshold=0"]))
    rows = list(csv.DictReader(open(out / "metrics.csv")))
    assert rows and all(float(r["mic"]) > 0 for r in rows)
