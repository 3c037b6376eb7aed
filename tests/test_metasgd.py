"""Meta-SGD: per-coordinate learned inner learning rates, checked against MAML and finite differences."""
import pytest
import torch
import torch.nn.functional as F
from sinusoid_fixtures import float64_setup
from torch.func import functional_call

from mamlbook.algorithms.metasgd import (
    init_inner_lrs,
    metasgd_adapt,
    metasgd_meta_backward,
    metasgd_meta_loss,
)
from mamlbook.maml import meta_loss

ALPHA = 0.01


def test_init_inner_lrs_gives_leaf_tensors_shaped_like_theta():
    _, params, _ = float64_setup()
    lrs = init_inner_lrs(params, 0.01)
    assert list(lrs) == list(params)
    for k in params:
        assert lrs[k].shape == params[k].shape and lrs[k].dtype == torch.float64
        assert lrs[k].is_leaf and lrs[k].requires_grad
        assert torch.all(lrs[k] == 0.01)
    rand = init_inner_lrs(params, low=0.005, high=0.1, generator=torch.Generator().manual_seed(0))
    values = torch.cat([v.detach().flatten() for v in rand.values()])
    assert values.min() >= 0.005 and values.max() < 0.1 and values.std() > 0


def test_one_inner_step_multiplies_the_gradient_coordinatewise_by_alpha():
    model, params, (xs, ys, _, _) = float64_setup(num_tasks=1)
    gen = torch.Generator().manual_seed(1)
    lrs = {k: torch.rand(v.shape, generator=gen, dtype=torch.float64) for k, v in params.items()}
    loss = F.mse_loss(functional_call(model, params, (xs[0],)), ys[0])
    grads = torch.autograd.grad(loss, list(params.values()))
    adapted = metasgd_adapt(model, params, lrs, xs[0], ys[0])
    for (k, p), g in zip(params.items(), grads):
        torch.testing.assert_close(adapted[k], p - lrs[k] * g, rtol=0, atol=1e-15)


def test_a_zero_rate_freezes_exactly_that_coordinate_in_the_inner_loop():
    model, params, (xs, ys, _, _) = float64_setup(num_tasks=1)
    lrs = init_inner_lrs(params, 0.1)
    with torch.no_grad():
        lrs["2.weight"][3, 5] = 0.0
    adapted = metasgd_adapt(model, params, lrs, xs[0], ys[0], inner_steps=3)
    assert adapted["2.weight"][3, 5] == params["2.weight"][3, 5]
    assert (adapted["2.weight"] != params["2.weight"]).sum() > 1


@pytest.mark.parametrize("first_order", [False, True])
@pytest.mark.parametrize("batched", [False, True])
def test_fixed_equal_rates_give_maml_and_its_meta_gradient(first_order, batched):
    model, params, data = float64_setup()
    lrs = {k: torch.full_like(v, ALPHA) for k, v in params.items()}    # fixed: no grad
    kw = dict(inner_steps=2, first_order=first_order, batched=batched)
    loss_sgd = metasgd_meta_loss(model, params, lrs, *data, **kw)
    loss_maml = meta_loss(model, params, *data, inner_lr=ALPHA, **kw)
    torch.testing.assert_close(loss_sgd, loss_maml, rtol=1e-14, atol=0)
    for a, m in zip(torch.autograd.grad(loss_sgd, list(params.values())),
                    torch.autograd.grad(loss_maml, list(params.values()))):
        torch.testing.assert_close(a, m, rtol=1e-12, atol=1e-15)


def outer_value(model, params, lrs, data, inner_steps):
    """Meta-SGD's exact outer loss (values only)."""
    p = {k: v.detach().clone().requires_grad_() for k, v in params.items()}
    return metasgd_meta_loss(model, p, {k: v.detach() for k, v in lrs.items()}, *data,
                             inner_steps=inner_steps, first_order=True, batched=False).item()


@pytest.mark.parametrize("inner_steps", [1, 2])
def test_meta_gradient_wrt_every_rate_matches_central_finite_differences(inner_steps):
    # All 46 rates of a 1-5-5-1 MLP, perturbed one at a time.
    model, params, data = float64_setup(hidden=5)
    lrs = init_inner_lrs(params, low=0.05, high=0.5, generator=torch.Generator().manual_seed(2))
    loss = metasgd_meta_loss(model, params, lrs, *data, inner_steps=inner_steps, batched=False)
    g = torch.cat([t.flatten() for t in torch.autograd.grad(loss, list(lrs.values()))])
    fd, eps = [], 1e-6
    for name, value in lrs.items():
        for j in range(value.numel()):
            plus = {k: v.detach().clone() for k, v in lrs.items()}
            minus = {k: v.detach().clone() for k, v in lrs.items()}
            plus[name].view(-1)[j] += eps
            minus[name].view(-1)[j] -= eps
            fd.append((outer_value(model, params, plus, data, inner_steps)
                       - outer_value(model, params, minus, data, inner_steps)) / (2 * eps))
    fd = torch.tensor(fd, dtype=torch.float64)
    assert ((g - fd).norm() / fd.norm()).item() < 1e-6


def test_meta_gradient_wrt_theta_matches_a_finite_difference_along_random_directions():
    model, params, data = float64_setup(hidden=10)
    lrs = init_inner_lrs(params, low=0.05, high=0.5, generator=torch.Generator().manual_seed(2))
    loss = metasgd_meta_loss(model, params, lrs, *data, inner_steps=2, batched=False)
    g = torch.autograd.grad(loss, list(params.values()))
    gen = torch.Generator().manual_seed(7)
    for _ in range(3):
        d = {k: torch.randn(v.shape, generator=gen, dtype=torch.float64) for k, v in params.items()}
        eps = 1e-6
        fd = (outer_value(model, {k: v.detach() + eps * d[k] for k, v in params.items()}, lrs, data, 2)
              - outer_value(model, {k: v.detach() - eps * d[k] for k, v in params.items()}, lrs, data, 2)) / (2 * eps)
        analytic = sum((gi * d[k]).sum() for gi, k in zip(g, params)).item()
        assert abs(analytic - fd) / abs(fd) < 1e-6


@pytest.mark.parametrize("first_order", [False, True])
def test_batched_and_looped_meta_gradients_agree_for_theta_and_alpha(first_order):
    model, params, data = float64_setup(num_tasks=4)
    lrs = init_inner_lrs(params, low=0.005, high=0.1, generator=torch.Generator().manual_seed(0))
    leaves = list(params.values()) + list(lrs.values())
    kw = dict(inner_steps=2, first_order=first_order)
    g_loop = torch.autograd.grad(metasgd_meta_loss(model, params, lrs, *data, batched=False, **kw), leaves)
    g_vmap = torch.autograd.grad(metasgd_meta_loss(model, params, lrs, *data, batched=True, **kw), leaves)
    for a, b in zip(g_vmap, g_loop):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-13)


def test_meta_backward_fills_the_grad_of_theta_and_of_alpha():
    model, params, data = float64_setup()
    lrs = init_inner_lrs(params, 0.01)
    leaves = list(params.values()) + list(lrs.values())
    expected = torch.autograd.grad(metasgd_meta_loss(model, params, lrs, *data, batched=False), leaves)
    metasgd_meta_backward(model, params, lrs, *data, batched=False)
    for leaf, g in zip(leaves, expected):
        torch.testing.assert_close(leaf.grad, g, rtol=1e-12, atol=1e-15)


def test_rates_that_do_not_match_theta_are_refused():
    model, params, (xs, ys, _, _) = float64_setup(num_tasks=1)
    lrs = init_inner_lrs(params)
    del lrs["4.bias"]
    with pytest.raises(ValueError, match="missing.*4.bias"):
        metasgd_adapt(model, params, lrs, xs[0], ys[0])
    lrs = init_inner_lrs(params)
    lrs["4.bias"] = torch.zeros(2, dtype=torch.float64)
    with pytest.raises(ValueError, match="shape"):
        metasgd_adapt(model, params, lrs, xs[0], ys[0])
