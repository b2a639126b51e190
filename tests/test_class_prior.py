"""Logit adjustment of pseudo-labels by the teacher's running target class marginal, on hand-made tensors."""

import pytest
import torch

from prnseg.training.class_prior import TargetClassMarginal, adjust_probabilities


def _probs(*columns):
    """B=1 x C x 1 x N probabilities, one column per pixel."""
    return torch.tensor(columns, dtype=torch.float32).T.reshape(1, len(columns[0]), 1, len(columns))


def test_tau_zero_leaves_the_probabilities_alone():
    p = _probs([0.6, 0.3, 0.1], [0.2, 0.2, 0.6])
    assert adjust_probabilities(p, torch.tensor([0.8, 0.1, 0.1]), 0.0) is p


def test_a_rare_class_wins_where_the_teacher_nearly_prefers_it():
    prior = torch.tensor([0.9, 0.05, 0.05])
    p = _probs([0.55, 0.45, 0.0], [0.9, 0.1, 0.0])
    q = adjust_probabilities(p, prior, 0.25)
    # pixel 0: 0.55 * 0.9^-0.25 = 0.565 < 0.45 * 0.05^-0.25 = 0.952; pixel 1 stays with the frequent class
    assert q.argmax(1).flatten().tolist() == [1, 0]
    assert torch.allclose(q.sum(1), torch.ones(1, 1, 2))
    w = prior.pow(-0.25)
    expected = p[0, :, 0, 0] * w / (p[0, :, 0, 0] * w).sum()
    assert torch.allclose(q[0, :, 0, 0], expected)


def test_the_marginal_is_a_running_mean_of_the_batches():
    m = TargetClassMarginal(3, momentum=0.75)
    with pytest.raises(RuntimeError, match="before any update"):
        m.adjust(_probs([1.0, 0.0, 0.0]), 0.5)
    m.update(_probs([1.0, 0.0, 0.0], [0.0, 1.0, 0.0]))           # batch mean (0.5, 0.5, 0)
    assert torch.allclose(m.marginal, torch.tensor([0.5, 0.5, 0.0], dtype=torch.float64))
    m.update(_probs([0.0, 0.0, 1.0]))                             # 0.75 * old + 0.25 * (0, 0, 1)
    assert torch.allclose(m.marginal, torch.tensor([0.375, 0.375, 0.25], dtype=torch.float64))
    with pytest.raises(ValueError, match="3-class"):
        m.update(torch.ones(1, 4, 1, 1) / 4)


def test_the_state_round_trips():
    m = TargetClassMarginal(3, momentum=0.9)
    m.update(_probs([0.2, 0.3, 0.5]))
    n = TargetClassMarginal(3, momentum=0.9)
    n.load_state_dict(m.state_dict())
    assert torch.equal(n.marginal, m.marginal)
    empty = TargetClassMarginal(3)
    empty.load_state_dict(TargetClassMarginal(3).state_dict())
    assert empty.marginal is None


def test_momentum_out_of_range_is_refused():
    with pytest.raises(ValueError, match="momentum"):
        TargetClassMarginal(3, momentum=1.0)
