"""MAML's meta-gradient, checked against independent evidence (finite differences, explicit Hessians)."""
import pytest
import torch
import torch.nn.functional as F
from sinusoid_fixtures import flat, float64_setup
from torch import nn
from torch.func import functional_call

from mamlbook.functional import make_meta_grad
from mamlbook.maml import adapt, batched_adapt, meta_loss
from mamlbook.models import SinusoidMLP
from mamlbook.tasks import sample_sinusoid_tasks

ALPHA = 0.01  # the paper's sinusoid inner step size


def autograd_meta_grad(model, params, data, **kw):
    loss = meta_loss(model, params, *data, inner_lr=ALPHA, **kw)
    return flat(torch.autograd.grad(loss, list(params.values())))


def meta_objective(model, params, data, inner_steps, direction=None, eps=0.0):
    """The exact MAML objective's value at θ + eps·direction (no graph through the inner step)."""
    base = {k: v.detach() for k, v in params.items()}
    if direction is not None:
        base = {k: base[k] + eps * direction[k] for k in base}
    p = {k: v.clone().requires_grad_() for k, v in base.items()}
    return meta_loss(model, p, *data, inner_lr=ALPHA, inner_steps=inner_steps,
                     first_order=True, batched=False).item()


def finite_difference_meta_grad(model, params, data, inner_steps, eps=1e-6):
    """Central differences of the meta-objective, one coordinate at a time."""
    out = []
    for name, value in params.items():
        for j in range(value.numel()):
            e = {k: torch.zeros_like(v) for k, v in params.items()}
            e[name].view(-1)[j] = 1.0
            out.append((meta_objective(model, params, data, inner_steps, e, eps)
                        - meta_objective(model, params, data, inner_steps, e, -eps)) / (2 * eps))
    return torch.tensor(out, dtype=torch.float64)


@pytest.mark.parametrize("inner_steps", [1, 2])
def test_second_order_meta_gradient_matches_finite_differences(inner_steps):
    # Every coordinate of a narrow version of the paper's MLP (1-10-10-1, 141 parameters).
    model, params, data = float64_setup(hidden=10)
    g = autograd_meta_grad(model, params, data, inner_steps=inner_steps, batched=False)
    g_fd = finite_difference_meta_grad(model, params, data, inner_steps)
    rel = ((g - g_fd).norm() / g_fd.norm()).item()
    assert rel < 1e-6, f"relative error {rel:.2e}"


@pytest.mark.parametrize("inner_steps", [1, 2])
def test_paper_mlp_directional_derivatives_match_finite_differences(inner_steps):
    # The full 1-40-40-1 network: g·d against the central difference along random directions d.
    model, params, data = float64_setup()
    g = autograd_meta_grad(model, params, data, inner_steps=inner_steps, batched=False)
    gen = torch.Generator().manual_seed(7)
    for _ in range(3):
        d = {k: torch.randn(v.shape, generator=gen, dtype=torch.float64) for k, v in params.items()}
        eps = 1e-6
        fd = (meta_objective(model, params, data, inner_steps, d, eps)
              - meta_objective(model, params, data, inner_steps, d, -eps)) / (2 * eps)
        analytic = (g @ flat(d.values())).item()
        assert abs(analytic - fd) / abs(fd) < 1e-6


def test_first_order_meta_gradient_differs_measurably_from_second_order():
    model, params, data = float64_setup(hidden=10)
    g2 = autograd_meta_grad(model, params, data, batched=False)
    g1 = autograd_meta_grad(model, params, data, batched=False, first_order=True)
    g_fd = finite_difference_meta_grad(model, params, data, inner_steps=1)
    assert ((g1 - g_fd).norm() / g_fd.norm()).item() > 1e-4   # FOMAML misses the Hessian term
    assert ((g2 - g_fd).norm() / g_fd.norm()).item() < 1e-6


class TanhNet(nn.Module):
    """A tiny smooth model whose Hessian autograd can build explicitly."""

    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(1, 4)
        self.fc2 = nn.Linear(4, 1)

    def forward(self, x):
        return self.fc2(torch.tanh(self.fc1(x)))


def explicit_one_step_gradients():
    """(I − αH_s)∇L_q(θ') and ∇L_q(θ') from a flattened θ and an explicit Hessian."""
    torch.manual_seed(1)
    model = TanhNet().double()
    names = [k for k, _ in model.named_parameters()]
    shapes = [v.shape for _, v in model.named_parameters()]
    theta = torch.cat([v.detach().reshape(-1) for _, v in model.named_parameters()])
    b = sample_sinusoid_tasks(1, 5, generator=torch.Generator().manual_seed(1)).to(dtype=torch.float64)
    xs, ys, xq, yq = b.task(0)

    def unflatten(vec):
        out, i = {}, 0
        for n, s in zip(names, shapes):
            out[n] = vec[i:i + s.numel()].reshape(s)
            i += s.numel()
        return out

    def loss_at(vec, x, y):
        return F.mse_loss(functional_call(model, unflatten(vec), (x,)), y)

    alpha = 0.5  # large, so the Hessian term is far from negligible
    g_s = torch.autograd.functional.jacobian(lambda v: loss_at(v, xs, ys), theta)
    theta_prime = theta - alpha * g_s
    g_q = torch.autograd.functional.jacobian(lambda v: loss_at(v, xq, yq), theta_prime)
    H_s = torch.autograd.functional.hessian(lambda v: loss_at(v, xs, ys), theta)
    second = (torch.eye(theta.numel(), dtype=torch.float64) - alpha * H_s) @ g_q
    params = {n: p.requires_grad_() for n, p in unflatten(theta.clone()).items()}
    return model, params, (xs[None], ys[None], xq[None], yq[None]), alpha, second, g_q


def test_second_order_equals_explicit_hessian_formula():
    model, params, data, alpha, second, _ = explicit_one_step_gradients()
    loss = meta_loss(model, params, *data, inner_lr=alpha, batched=False)
    g = flat(torch.autograd.grad(loss, list(params.values())))
    torch.testing.assert_close(g, second, rtol=1e-10, atol=1e-12)


def test_first_order_equals_query_gradient_at_adapted_parameters():
    model, params, data, alpha, _, g_q = explicit_one_step_gradients()
    loss = meta_loss(model, params, *data, inner_lr=alpha, batched=False, first_order=True)
    g = flat(torch.autograd.grad(loss, list(params.values())))
    torch.testing.assert_close(g, g_q, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("first_order", [False, True])
@pytest.mark.parametrize("inner_steps", [1, 3])
def test_batched_and_looped_meta_gradients_agree_in_float64(first_order, inner_steps):
    model, params, data = float64_setup(num_tasks=5)
    kw = dict(inner_steps=inner_steps, first_order=first_order)
    g_loop = autograd_meta_grad(model, params, data, batched=False, **kw)
    g_vmap = autograd_meta_grad(model, params, data, batched=True, **kw)
    torch.testing.assert_close(g_vmap, g_loop, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("first_order", [False, True])
def test_torch_func_meta_gradient_matches_autograd(first_order):
    model, params, data = float64_setup(num_tasks=4)
    expected = autograd_meta_grad(model, params, data, batched=False, inner_steps=2,
                                  first_order=first_order)
    meta_grad = make_meta_grad(model, inner_lr=ALPHA, inner_steps=2, first_order=first_order)
    grads, _ = meta_grad({k: v.detach() for k, v in params.items()}, *data)
    torch.testing.assert_close(flat(grads.values()), expected, rtol=1e-10, atol=1e-12)


def test_batched_adapt_gives_each_task_its_own_adapted_parameters():
    model, params, data = float64_setup(num_tasks=3)
    xs, ys, _, _ = data
    per_task = batched_adapt(model, params, xs, ys, inner_lr=ALPHA, inner_steps=2)
    for i in range(3):
        one = adapt(model, params, xs[i], ys[i], inner_lr=ALPHA, inner_steps=2)
        for name in params:
            torch.testing.assert_close(per_task[name][i], one[name], rtol=1e-12, atol=1e-14)


def test_parameter_the_loss_never_uses_is_allowed_and_gets_no_meta_gradient():
    class WithUnused(nn.Module):
        def __init__(self):
            super().__init__()
            self.net = SinusoidMLP()
            self.unused = nn.Parameter(torch.ones(3))

        def forward(self, x):
            return self.net(x)

    model = WithUnused().double()
    params = dict(model.named_parameters())
    _, _, data = float64_setup()
    for batched in (False, True):
        model.zero_grad(set_to_none=True)
        meta_loss(model, params, *data, inner_lr=ALPHA, batched=batched).backward()
        assert params["unused"].grad is None or not params["unused"].grad.any()
        assert params["net.0.weight"].grad.abs().sum() > 0


def test_inner_step_moves_parameters_by_minus_alpha_times_gradient():
    model, params, data = float64_setup(num_tasks=1)
    xs, ys = data[0][0], data[1][0]
    loss = F.mse_loss(functional_call(model, params, (xs,)), ys)
    grads = torch.autograd.grad(loss, list(params.values()))
    adapted = adapt(model, params, xs, ys, inner_lr=ALPHA, inner_steps=1)
    for (name, p), g in zip(params.items(), grads):
        torch.testing.assert_close(adapted[name], p - ALPHA * g, rtol=0, atol=1e-15)


def test_zero_inner_steps_leave_parameters_unchanged():
    model, params, data = float64_setup(num_tasks=1)
    adapted = adapt(model, params, data[0][0], data[1][0], inner_lr=ALPHA, inner_steps=0)
    assert all(adapted[k] is params[k] for k in params)


@pytest.mark.parametrize("bad_lr", [0.0, -0.01])
def test_non_positive_inner_learning_rate_is_refused(bad_lr):
    model, params, data = float64_setup(num_tasks=1)
    with pytest.raises(ValueError, match="inner_lr"):
        adapt(model, params, data[0][0], data[1][0], inner_lr=bad_lr)
