"""The one pseudo-label rule: the trainer, evaluation and the exported graph write the same labels."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from prnseg.training.pseudo_labels import written_labels


def _logits(seed: int, shape=(2, 19, 6, 10)) -> torch.Tensor:
    return 3 * torch.randn(shape, generator=torch.Generator().manual_seed(seed))


def test_rule_replaces_only_where_the_prn_is_confident_enough():
    raw, ref = _logits(0), _logits(1)
    p_raw, p_ref = torch.softmax(raw, 1), torch.softmax(ref, 1)
    for t in (0.0, 0.5, 0.9):
        label, conf, replaced = written_labels(raw, ref, t)
        take = (p_ref.amax(1) >= t) & (p_ref.argmax(1) != p_raw.argmax(1))
        assert torch.equal(replaced, take)
        assert torch.equal(label, torch.where(take, p_ref.argmax(1), p_raw.argmax(1)))
        torch.testing.assert_close(conf, torch.where(take, p_ref.amax(1), p_raw.amax(1)))
    assert torch.equal(written_labels(raw, ref, 0.0)[0], ref.argmax(1))           # 0: the PRN's argmax
    assert torch.equal(written_labels(raw, ref, 1.01)[0], raw.argmax(1))          # > 1: the teacher's
    label, conf, replaced = written_labels(raw, None, 0.0)
    assert torch.equal(label, raw.argmax(1)) and not replaced.any()
    assert 0 < written_labels(raw, ref, 0.9)[2].float().mean() < written_labels(raw, ref, 0.5)[2].float().mean()


def test_rule_on_channels_last_equals_channels_first():
    raw, ref = _logits(2), _logits(3)
    a = written_labels(raw, ref, 0.7, dim=1)
    b = written_labels(raw.permute(0, 2, 3, 1), ref.permute(0, 2, 3, 1), 0.7, dim=-1)
    for x, y in zip(a, b):
        torch.testing.assert_close(x, y)


@pytest.mark.parametrize("t", [0.0, 0.6, 1.01])
def test_exported_graph_writes_the_rule_labels(t):
    """The PyTorch module that becomes pseudolabeler.onnx (and the parity gate's reference)."""
    from prnseg.export.graphs import PseudoLabeler
    from prnseg.training.models.factory import create_model, create_prn

    torch.manual_seed(0)
    seg = create_model("tiny", head="daformer").eval()
    prn = create_prn(seg).eval()
    with torch.no_grad():                       # a PRN that changes labels (its residual head starts at zero)
        prn.refine_head.weight.normal_(0, 2.0)
    image = torch.from_numpy(np.random.default_rng(0).integers(0, 255, (1, 64, 96, 3), dtype=np.uint8))
    graph = PseudoLabeler(seg, prn, (123.7, 116.3, 103.5), (58.4, 57.1, 57.4), 0.5, refine_min_confidence=t).eval()
    with torch.no_grad():
        label, raw_label, *_ = graph(image)
        out = seg((image.permute(0, 3, 1, 2).float() - graph.mean) * graph.inv_std)
        refined, _ = prn(list(out.features), out.logits)
    up = lambda z: torch.nn.functional.interpolate(z, size=(64, 96), mode="bilinear", align_corners=False)  # noqa: E731
    expected, _, replaced = written_labels(up(out.logits), up(refined), t)
    assert torch.equal(label.long(), expected)
    assert torch.equal(raw_label.long(), up(out.logits).argmax(1))
    if t == 0.0:
        assert replaced.any()
    if t > 1:
        assert torch.equal(label, raw_label)
