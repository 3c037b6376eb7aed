"""MAML++'s multi-step loss, per-layer per-step learning rates and derivative-order annealing."""
import pytest
import torch

from mamlbook.maml import meta_loss
from mamlbook.mamlpp import (adapt_per_step, init_per_step_lrs, mamlpp_meta_loss, multi_step_loss_weights,
                             use_first_order)

from sinusoid_fixtures import float64_setup

ALPHA = 0.01


def test_multi_step_loss_weights_start_uniform():
    assert multi_step_loss_weights(5, epoch=0, anneal_epochs=15).tolist() == [0.2] * 5


def test_multi_step_loss_weights_by_hand_during_and_at_the_end_of_annealing():
    # N = 5, E = 15: decay = 1/75 per epoch. Epoch 3: non-final 0.2 − 3/75 = 0.16, last 0.2 + 12/75 = 0.36.
    torch.testing.assert_close(multi_step_loss_weights(5, 3, 15),
                               torch.tensor([0.16, 0.16, 0.16, 0.16, 0.36], dtype=torch.float64))
    # N = 5, E = 100, epoch 99: non-final floor 0.03/5 = 0.006, last capped at 1 − 4·0.006 = 0.976.
    torch.testing.assert_close(multi_step_loss_weights(5, 99, 100),
                               torch.tensor([0.006, 0.006, 0.006, 0.006, 0.976], dtype=torch.float64))
    # From epoch E on the multi-step loss is off: only the last step counts.
    assert multi_step_loss_weights(5, 100, 100).tolist() == [0.0, 0.0, 0.0, 0.0, 1.0]


@pytest.mark.parametrize("inner_steps", [1, 2, 5])
def test_multi_step_loss_weights_sum_to_one_at_every_epoch(inner_steps):
    for epoch in range(0, 25):
        w = multi_step_loss_weights(inner_steps, epoch, anneal_epochs=20)
        assert w.sum().item() == pytest.approx(1.0, abs=1e-15)
        assert (w >= 0).all()


def test_derivative_order_annealing_is_first_order_for_the_first_epochs_only():
    assert [use_first_order(e, first_order_epochs=3) for e in range(5)] == [True, True, True, False, False]


def test_a_step_rate_acts_on_its_own_step_and_layer_only():
    model, params, (xs, ys, _, _) = float64_setup(num_tasks=1)
    lrs = init_per_step_lrs(params, inner_steps=3, inner_lr=0.1)
    with torch.no_grad():
        lrs["2.weight"][1] = 0.0                                   # layer 2.weight frozen at step 2
    theta = adapt_per_step(model, params, lrs, xs[0], ys[0], inner_steps=3)
    assert torch.equal(theta[1]["2.weight"], theta[0]["2.weight"])  # step 2 left it bit-identical
    assert not torch.equal(theta[1]["0.weight"], theta[0]["0.weight"])
    assert not torch.equal(theta[2]["2.weight"], theta[1]["2.weight"])


@pytest.mark.parametrize("first_order", [False, True])
def test_last_step_loss_with_fixed_equal_rates_is_maml(first_order):
    model, params, data = float64_setup()
    lrs = {k: torch.full((3,), ALPHA, dtype=torch.float64) for k in params}
    w = multi_step_loss_weights(3, epoch=10, anneal_epochs=10)     # (0, 0, 1)
    ours = mamlpp_meta_loss(model, params, lrs, *data, loss_weights=w, first_order=first_order)
    maml = meta_loss(model, params, *data, inner_lr=ALPHA, inner_steps=3, first_order=first_order,
                     batched=False)
    torch.testing.assert_close(ours, maml, rtol=1e-14, atol=0)
    for a, m in zip(torch.autograd.grad(ours, list(params.values())),
                    torch.autograd.grad(maml, list(params.values()))):
        torch.testing.assert_close(a, m, rtol=1e-12, atol=1e-15)


def test_multi_step_loss_is_the_weighted_sum_of_maml_losses_after_1_to_n_steps():
    model, params, data = float64_setup()
    lrs = {k: torch.full((3,), ALPHA, dtype=torch.float64) for k in params}
    w = multi_step_loss_weights(3, epoch=2, anneal_epochs=10)
    ours = mamlpp_meta_loss(model, params, lrs, *data, loss_weights=w)
    expected = sum(w[j].item() * meta_loss(model, params, *data, inner_lr=ALPHA, inner_steps=j + 1,
                                           batched=False) for j in range(3))
    torch.testing.assert_close(ours, expected, rtol=1e-13, atol=0)


def outer_value(model, params, lrs, data, w):
    p = {k: v.detach().clone().requires_grad_() for k, v in params.items()}
    return mamlpp_meta_loss(model, p, {k: v.detach() for k, v in lrs.items()}, *data, loss_weights=w,
                            first_order=True).item()


def test_meta_gradient_wrt_every_per_step_rate_matches_central_finite_differences():
    model, params, data = float64_setup(hidden=10)
    lrs = init_per_step_lrs(params, inner_steps=2, inner_lr=0.2)
    with torch.no_grad():
        for j, v in enumerate(lrs.values()):
            v.mul_(1.0 + 0.1 * j)                                  # distinct rates per layer
    w = multi_step_loss_weights(2, epoch=1, anneal_epochs=4)
    loss = mamlpp_meta_loss(model, params, lrs, *data, loss_weights=w)
    g = torch.cat([t.flatten() for t in torch.autograd.grad(loss, list(lrs.values()))])
    fd, eps = [], 1e-6
    for name in lrs:
        for j in range(2):
            plus = {k: v.detach().clone() for k, v in lrs.items()}
            minus = {k: v.detach().clone() for k, v in lrs.items()}
            plus[name][j] += eps
            minus[name][j] -= eps
            fd.append((outer_value(model, params, plus, data, w)
                       - outer_value(model, params, minus, data, w)) / (2 * eps))
    fd = torch.tensor(fd, dtype=torch.float64)
    assert ((g - fd).norm() / fd.norm()).item() < 1e-6


def test_rates_without_one_entry_per_step_are_refused():
    model, params, (xs, ys, _, _) = float64_setup(num_tasks=1)
    lrs = init_per_step_lrs(params, inner_steps=2)
    with pytest.raises(ValueError, match=r"one rate per inner step, \(3,\)"):
        adapt_per_step(model, params, lrs, xs[0], ys[0], inner_steps=3)
