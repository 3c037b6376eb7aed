"""Reptile's update, checked on a hand-computed case."""
import pytest
import torch
from torch import nn

from mamlbook.algorithms.reptile import reptile_gradient, reptile_step
from mamlbook.models import SinusoidMLP
from mamlbook.tasks import sample_sinusoid_tasks


def hand_case():
    """y = w·x with w = 1 and MSE; two tasks of two points each (all numbers worked out by hand)."""
    model = nn.Linear(1, 1, bias=False).double()
    with torch.no_grad():
        model.weight.fill_(1.0)
    x = torch.tensor([[[1.0], [2.0]], [[1.0], [-1.0]]], dtype=torch.float64)   # (T=2, N=2, 1)
    y = torch.tensor([[[3.0], [4.0]], [[0.0], [2.0]]], dtype=torch.float64)
    return model, dict(model.named_parameters()), x, y


@pytest.mark.parametrize("batched", [False, True])
def test_reptile_step_moves_theta_toward_the_average_of_adapted_parameters_by_hand(batched):
    # ∇_w mean((w·x − y)²) = 2·mean(x·(w·x − y)) at w = 1:
    #   task 1: 2·mean([1·(1−3), 2·(2−4)]) = −6  → φ1 = 1 − 0.1·(−6) = 1.6
    #   task 2: 2·mean([1·(1−0), −1·(−1−2)]) = 4 → φ2 = 1 − 0.1·4 = 0.6
    # mean φ = 1.1, direction θ − mean φ = −0.1, θ ← 1 − 0.5·(−0.1) = 1.05
    model, params, x, y = hand_case()
    direction = reptile_step(model, params, x, y, inner_lr=0.1, inner_steps=1, outer_lr=0.5,
                             batched=batched)
    torch.testing.assert_close(direction["weight"], torch.tensor([[-0.1]], dtype=torch.float64))
    torch.testing.assert_close(model.weight.detach(), torch.tensor([[1.05]], dtype=torch.float64))


def test_reptile_with_two_inner_steps_by_hand():
    # task 1, second step from w = 1.6: 2·mean([1·(1.6−3), 2·(3.2−4)]) = −3 → φ1 = 1.9
    # task 2, second step from w = 0.6: 2·mean([1·0.6, −1·(−0.6−2)]) = 3.2 → φ2 = 0.28
    # direction = 1 − (1.9 + 0.28)/2 = −0.09
    model, params, x, y = hand_case()
    d = reptile_gradient(model, params, x, y, inner_lr=0.1, inner_steps=2)
    torch.testing.assert_close(d["weight"], torch.tensor([[-0.09]], dtype=torch.float64))


def test_reptile_with_one_inner_step_is_alpha_times_the_joint_training_gradient():
    torch.manual_seed(0)
    model = SinusoidMLP().double()
    params = dict(model.named_parameters())
    b = sample_sinusoid_tasks(4, 10, generator=torch.Generator().manual_seed(0)).to(dtype=torch.float64)
    d = reptile_gradient(model, params, b.x_support, b.y_support, inner_lr=0.01, inner_steps=1)
    joint = sum(torch.nn.functional.mse_loss(model(b.x_support[i]), b.y_support[i]) for i in range(4)) / 4
    grads = torch.autograd.grad(joint, list(params.values()))
    for (name, _), g in zip(params.items(), grads):
        torch.testing.assert_close(d[name], 0.01 * g, rtol=1e-10, atol=1e-14)


def test_reptile_outer_step_size_outside_zero_one_is_refused():
    model, params, x, y = hand_case()
    with pytest.raises(ValueError, match="outer_lr"):
        reptile_step(model, params, x, y, inner_lr=0.1, inner_steps=1, outer_lr=1.5)
