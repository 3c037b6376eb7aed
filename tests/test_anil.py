"""ANIL: the inner loop adapts the head only; the body is meta-learned through the head's adaptation."""
import pytest
import torch
import torch.nn.functional as F
from sinusoid_fixtures import float64_setup

from mamlbook.algorithms.anil import (
    adapt_head,
    anil_meta_backward,
    anil_meta_loss,
    batched_adapt_head,
    split_head,
)
from mamlbook.conv import omniglot_conv4
from mamlbook.maml import adapt, meta_loss

ALPHA = 0.01
HEAD = "4."          # SinusoidMLP's last Linear: parameters "4.weight" and "4.bias"
BODY = ("0.weight", "0.bias", "2.weight", "2.bias")


def test_split_head_takes_every_parameter_whose_name_starts_with_the_prefix():
    _, params, _ = float64_setup()
    body, head = split_head(params, HEAD)
    assert list(head) == ["4.weight", "4.bias"]
    assert tuple(body) == BODY


@pytest.mark.parametrize("inner_steps", [1, 3])
def test_inner_loop_leaves_every_body_parameter_bit_identical_and_moves_the_head(inner_steps):
    model, params, (xs, ys, _, _) = float64_setup()
    before = {k: v.detach().clone() for k, v in params.items()}
    adapted = adapt_head(model, params, xs[0], ys[0], head=HEAD, inner_lr=0.1, inner_steps=inner_steps)
    assert list(adapted) == list(params)
    for name in BODY:
        assert adapted[name] is params[name]                      # the same tensor, not a copy
        assert torch.equal(adapted[name], before[name])
    assert not torch.equal(adapted["4.weight"], before["4.weight"])
    assert not torch.equal(adapted["4.bias"], before["4.bias"])


def test_batched_inner_loop_leaves_every_tasks_body_bit_identical():
    model, params, (xs, ys, _, _) = float64_setup(num_tasks=4)
    adapted = batched_adapt_head(model, params, xs, ys, head=HEAD, inner_lr=0.1, inner_steps=2)
    for name in BODY:
        for i in range(4):
            assert torch.equal(adapted[name][i], params[name])
    for i in range(4):                                           # each task's head is its own
        one = adapt_head(model, params, xs[i], ys[i], head=HEAD, inner_lr=0.1, inner_steps=2)
        torch.testing.assert_close(adapted["4.weight"][i], one["4.weight"], rtol=1e-12, atol=1e-14)


def test_one_head_step_is_minus_alpha_times_the_heads_support_gradient():
    model, params, (xs, ys, _, _) = float64_setup(num_tasks=1)
    loss = F.mse_loss(torch.func.functional_call(model, params, (xs[0],)), ys[0])
    g_w, g_b = torch.autograd.grad(loss, [params["4.weight"], params["4.bias"]])
    adapted = adapt_head(model, params, xs[0], ys[0], head=HEAD, inner_lr=ALPHA)
    torch.testing.assert_close(adapted["4.weight"], params["4.weight"] - ALPHA * g_w, rtol=0, atol=1e-15)
    torch.testing.assert_close(adapted["4.bias"], params["4.bias"] - ALPHA * g_b, rtol=0, atol=1e-15)


@pytest.mark.parametrize("first_order", [False, True])
def test_anil_with_every_parameter_in_the_head_is_maml(first_order):
    model, params, data = float64_setup()
    kw = dict(inner_lr=ALPHA, inner_steps=2, first_order=first_order, batched=False)
    g_anil = torch.autograd.grad(anil_meta_loss(model, params, *data, head="", **kw), list(params.values()))
    g_maml = torch.autograd.grad(meta_loss(model, params, *data, **kw), list(params.values()))
    for a, m in zip(g_anil, g_maml):
        torch.testing.assert_close(a, m, rtol=1e-12, atol=1e-15)
    one = adapt_head(model, params, data[0][0], data[1][0], head="", inner_lr=ALPHA, inner_steps=2)
    ref = adapt(model, params, data[0][0], data[1][0], inner_lr=ALPHA, inner_steps=2)
    for k in params:
        torch.testing.assert_close(one[k], ref[k], rtol=1e-12, atol=1e-15)


def anil_objective(model, params, data, direction, eps, inner_lr):
    """ANIL's exact outer loss at θ + eps·direction (values only; no graph kept)."""
    p = {k: (v.detach() + eps * direction[k]).requires_grad_() for k, v in params.items()}
    return anil_meta_loss(model, p, *data, head=HEAD, inner_lr=inner_lr, inner_steps=2,
                          first_order=True, batched=False).item()


def test_body_meta_gradient_is_nonzero_and_matches_finite_differences():
    # The body's meta-gradient flows through θ_h' = θ_h − α∇_{θ_h}L_s(θ_b, θ_h): a central
    # difference of the true ANIL objective along body-only directions must agree with it.
    model, params, data = float64_setup(hidden=10)
    inner_lr = 0.3                                             # large: the second-order term matters
    loss = anil_meta_loss(model, params, *data, head=HEAD, inner_lr=inner_lr, inner_steps=2, batched=False)
    grads = dict(zip(params, torch.autograd.grad(loss, list(params.values()))))
    for name in BODY:
        assert grads[name].abs().sum() > 0
    gen = torch.Generator().manual_seed(3)
    for _ in range(3):
        d = {k: (torch.randn(v.shape, generator=gen, dtype=torch.float64) if k in BODY
                 else torch.zeros_like(v)) for k, v in params.items()}
        eps = 1e-6
        fd = (anil_objective(model, params, data, d, eps, inner_lr)
              - anil_objective(model, params, data, d, -eps, inner_lr)) / (2 * eps)
        analytic = sum((grads[k] * d[k]).sum() for k in BODY).item()
        assert abs(analytic - fd) / abs(fd) < 1e-6


def test_first_order_anil_misses_the_body_term_that_flows_through_the_head_update():
    model, params, data = float64_setup(hidden=10)
    kw = dict(head=HEAD, inner_lr=0.3, inner_steps=2, batched=False)
    g2 = torch.autograd.grad(anil_meta_loss(model, params, *data, **kw), params["0.weight"])[0]
    g1 = torch.autograd.grad(anil_meta_loss(model, params, *data, first_order=True, **kw),
                             params["0.weight"])[0]
    assert ((g2 - g1).norm() / g2.norm()).item() > 1e-4


@pytest.mark.parametrize("first_order", [False, True])
def test_batched_and_looped_meta_gradients_agree_in_float64(first_order):
    model, params, data = float64_setup(num_tasks=4)
    kw = dict(head=HEAD, inner_lr=ALPHA, inner_steps=2, first_order=first_order)
    g_loop = torch.autograd.grad(anil_meta_loss(model, params, *data, batched=False, **kw), list(params.values()))
    g_vmap = torch.autograd.grad(anil_meta_loss(model, params, *data, batched=True, **kw), list(params.values()))
    for a, b in zip(g_vmap, g_loop):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-13)


def test_meta_backward_accumulates_the_gradient_of_meta_loss():
    model, params, data = float64_setup()
    kw = dict(head=HEAD, inner_lr=ALPHA, inner_steps=1)
    expected = torch.autograd.grad(anil_meta_loss(model, params, *data, batched=False, **kw), list(params.values()))
    loss = anil_meta_backward(model, params, *data, batched=False, **kw)
    assert not loss.requires_grad
    for p, g in zip(params.values(), expected):
        torch.testing.assert_close(p.grad, g, rtol=1e-12, atol=1e-15)


def test_conv4_classifier_head_adapts_and_the_features_stay_bit_identical():
    torch.manual_seed(0)
    model = omniglot_conv4(n_way=3, filters=4).double()
    params = dict(model.named_parameters())
    before = {k: v.detach().clone() for k, v in params.items()}
    xs = torch.randn(6, 1, 28, 28, dtype=torch.float64)
    ys = torch.tensor([0, 0, 1, 1, 2, 2])
    adapted = adapt_head(model, params, xs, ys, head="classifier.", inner_lr=0.5, inner_steps=2,
                         loss_fn=F.cross_entropy)
    for name in params:
        if name.startswith("classifier."):
            assert not torch.equal(adapted[name], before[name])
        else:
            assert torch.equal(adapted[name], before[name])
    loss = anil_meta_loss(model, params, xs[None], ys[None], xs[None], ys[None], head="classifier.",
                          inner_lr=0.5, loss_fn=F.cross_entropy, batched=False)
    loss.backward()
    assert params["features.0.0.weight"].grad.abs().sum() > 0
    # a conv bias before batch-statistics BN has meta-gradient 0 (up to float64 rounding)
    assert params["features.0.0.bias"].grad.abs().max() < 1e-12


def test_a_head_prefix_that_matches_nothing_is_refused_with_the_parameter_names():
    model, params, (xs, ys, _, _) = float64_setup(num_tasks=1)
    with pytest.raises(ValueError, match="classifier.*4.weight"):
        adapt_head(model, params, xs[0], ys[0], head="classifier.", inner_lr=ALPHA)
