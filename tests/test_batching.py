"""Batched (vmap) and looped meta-batches give the same meta-gradients, also through BatchNorm.

Independent evidence on the conv + BatchNorm model: the conv biases feed batch-statistics BN,
which removes any per-channel shift, so their meta-gradient must be exactly zero; and the
meta-gradient matches finite differences of the meta-objective along random directions.
"""
import pytest
import torch
import torch.nn.functional as F

from mamlbook.conv import omniglot_conv4
from mamlbook.evaluate import adaptation_curve
from mamlbook.functional import make_meta_grad
from mamlbook.maml import meta_backward, meta_loss, resolve_batched
from mamlbook.models import SinusoidMLP

ALPHA = 0.4  # the paper's Omniglot inner step size: large, so second-order terms matter


def conv_setup(num_tasks=2, seed=0):
    """A narrow Omniglot Conv4 (4 filters) in float64 and a 5-way 1-shot meta-batch of 12×12 images.

    12 → 6 → 3 → 2 → 1 through the four stride-2 convolutions."""
    torch.manual_seed(seed)
    model = omniglot_conv4(n_way=5, filters=4).double()
    params = {k: v.detach().clone().requires_grad_() for k, v in model.named_parameters()}
    g = torch.Generator().manual_seed(seed)
    xs = torch.randn(num_tasks, 5, 1, 12, 12, generator=g, dtype=torch.float64)
    xq = torch.randn(num_tasks, 5, 1, 12, 12, generator=g, dtype=torch.float64)
    ys = torch.arange(5).repeat(num_tasks, 1)
    yq = torch.randint(0, 5, (num_tasks, 5), generator=g)
    return model, params, (xs, ys, xq, yq)


def meta_grads(model, params, data, **kw):
    loss = meta_loss(model, params, *data, inner_lr=ALPHA, loss_fn=F.cross_entropy, **kw)
    return dict(zip(params, torch.autograd.grad(loss, list(params.values()))))


def conv_biases(grads):
    return torch.cat([g for k, g in grads.items() if k.startswith("features") and k.endswith("0.bias")])


@pytest.mark.parametrize("first_order", [False, True], ids=["second", "first"])
def test_vmap_and_loop_meta_gradients_agree_through_batchnorm_in_float64(first_order):
    model, params, data = conv_setup()
    loop = meta_grads(model, params, data, batched=False, first_order=first_order)
    vmap = meta_grads(model, params, data, batched=True, first_order=first_order)
    for k in params:
        torch.testing.assert_close(vmap[k], loop[k], rtol=1e-10, atol=1e-12)


def test_conv_bias_meta_gradient_is_zero_on_every_path():
    model, params, data = conv_setup()
    paths = {"loop": meta_grads(model, params, data, batched=False),
             "vmap": meta_grads(model, params, data, batched=True)}
    fn = make_meta_grad(model, inner_lr=ALPHA, loss_fn=F.cross_entropy)
    paths["torch.func"], _ = fn({k: v.detach() for k, v in params.items()}, *data)
    for name, grads in paths.items():
        assert conv_biases(grads).abs().max() < 1e-13, name
        assert grads["features.1.0.weight"].abs().max() > 1e-6, name


def test_conv_meta_gradient_matches_finite_differences_along_random_directions():
    model, params, data = conv_setup(num_tasks=2)
    g = meta_grads(model, params, data, batched=True)

    def objective(direction, eps):
        p = {k: (v.detach() + eps * direction[k]).requires_grad_() for k, v in params.items()}
        return meta_loss(model, p, *data, inner_lr=ALPHA, loss_fn=F.cross_entropy, batched=False).item()

    # The inner gradient jumps where a ReLU switches, so with α = 0.4 the meta-objective has
    # small discontinuities: a step of 1e-7 stays clear of them for these seeds (1e-5 does not).
    gen = torch.Generator().manual_seed(3)
    for _ in range(2):
        d = {k: torch.randn(v.shape, generator=gen, dtype=torch.float64) for k, v in params.items()}
        fd = (objective(d, 1e-7) - objective(d, -1e-7)) / 2e-7
        analytic = sum((g[k] * d[k]).sum() for k in params).item()
        assert abs(analytic - fd) < 1e-6 * max(1.0, abs(fd)), (analytic, fd)


@pytest.mark.parametrize("batched", [False, True])
def test_meta_backward_accumulates_the_same_gradient_as_meta_loss_backward(batched):
    model, params, data = conv_setup()
    expected = meta_grads(model, params, data, batched=False)
    loss = meta_backward(model, params, *data, inner_lr=ALPHA, loss_fn=F.cross_entropy, batched=batched)
    for k, p in params.items():
        torch.testing.assert_close(p.grad, expected[k], rtol=1e-10, atol=1e-12)
    ref = meta_loss(model, params, *data, inner_lr=ALPHA, loss_fn=F.cross_entropy, batched=False)
    torch.testing.assert_close(loss, ref.detach(), rtol=1e-12, atol=0)
    assert not loss.requires_grad


def test_auto_batches_mlps_everywhere_and_conv_batchnorm_models_only_off_the_cpu():
    mlp, conv = SinusoidMLP(), omniglot_conv4()
    assert resolve_batched(mlp, "auto", "cpu") is True
    assert resolve_batched(conv, "auto", "cpu") is False
    assert resolve_batched(conv, "auto", "cuda") is True
    assert resolve_batched(conv, True) is True and resolve_batched(mlp, False) is False
    with pytest.raises(ValueError, match="batched"):
        resolve_batched(mlp, "yes")


def test_batched_evaluation_matches_the_loop_on_a_batchnorm_model():
    model, params, (xs, ys, xq, yq) = conv_setup()
    kw = dict(inner_lr=ALPHA, max_steps=2, loss_fn=F.cross_entropy)
    loop = adaptation_curve(model, params, xs, ys, xq, yq, batched=False, **kw)
    vmap = adaptation_curve(model, params, xs, ys, xq, yq, batched=True, **kw)
    assert loop.shape == (2, 3)
    torch.testing.assert_close(vmap, loop, rtol=1e-10, atol=1e-12)
