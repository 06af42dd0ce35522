"""lib.losses: focal loss against cross-entropy and hand-computed values."""
import math

import pytest
import torch
from torch.nn import functional as F

from lib import losses


def test_focal_loss_at_gamma_zero_is_cross_entropy():
    torch.manual_seed(0)
    logits, target = torch.randn(32, 100) * 3, torch.randint(0, 100, (32,))
    assert torch.allclose(losses.FocalLoss(gamma=0)(logits, target), F.cross_entropy(logits, target))
    weight = torch.rand(100) + 0.5
    assert torch.allclose(losses.FocalLoss(gamma=0, alpha=weight, reduction="sum")(logits, target),
                          F.cross_entropy(logits, target, weight=weight, reduction="sum"))


def test_focal_loss_matches_a_hand_computed_value():
    # sample 1: two equal logits, p_t = 1/2: (1 - 1/2)^2 * ln 2
    # sample 2: logits (ln 3, 0) with target 0, p_t = 3/4: (1/4)^2 * ln(4/3)
    logits = torch.tensor([[0.0, 0.0], [math.log(3.0), 0.0]])
    target = torch.tensor([1, 0])
    per_sample = losses.FocalLoss(gamma=2, reduction="none")(logits, target)
    assert per_sample.tolist() == pytest.approx([0.25 * math.log(2), 0.0625 * math.log(4 / 3)], rel=1e-6)
    assert losses.FocalLoss(gamma=2)(logits, target).item() == pytest.approx(
        (0.25 * math.log(2) + 0.0625 * math.log(4 / 3)) / 2, rel=1e-6)
    # the focal factor shrinks the easy sample far more than the hard one
    ce = F.cross_entropy(logits, target, reduction="none")
    assert (per_sample / ce)[1] < (per_sample / ce)[0]


def test_focal_loss_alpha_scalar_and_per_class():
    logits = torch.tensor([[0.0, 0.0], [math.log(3.0), 0.0]])
    target = torch.tensor([1, 0])
    plain = losses.FocalLoss(gamma=2, reduction="none")(logits, target)
    assert torch.allclose(losses.FocalLoss(gamma=2, alpha=0.25, reduction="none")(logits, target), 0.25 * plain)
    per_class = losses.FocalLoss(gamma=2, alpha=[0.1, 0.9], reduction="none")(logits, target)
    assert torch.allclose(per_class, torch.tensor([0.9, 0.1]) * plain)
    assert losses.FocalLoss(gamma=2, alpha=torch.tensor([0.1, 0.9]))(logits, target).item() == pytest.approx(
        per_class.mean().item())
    with pytest.raises(ValueError, match="one weight per class"):
        losses.FocalLoss(alpha=[1.0, 2.0, 3.0])(logits, target)
    with pytest.raises(ValueError, match="gamma"):
        losses.FocalLoss(gamma=-1)
    with pytest.raises(ValueError, match="reduction"):
        losses.FocalLoss(reduction="avg")


def test_focal_loss_gradient_is_finite_for_confident_predictions():
    logits = torch.tensor([[30.0, -30.0], [0.0, 0.0]], requires_grad=True)
    losses.FocalLoss(gamma=2)(logits, torch.tensor([0, 1])).backward()
    assert torch.isfinite(logits.grad).all()
