"""MAML++: multi-step loss, per-layer per-step learning rates, derivative-order annealing,
per-step BatchNorm and the cosine meta-learning rate."""
import pytest
import torch
import torch.nn.functional as F
from sinusoid_fixtures import flat, float64_setup
from torch.func import functional_call

from mamlbook.algorithms.mamlpp import (
    adapt_per_step,
    cosine_meta_lr_scheduler,
    init_per_step_lrs,
    mamlpp_meta_backward,
    mamlpp_meta_loss,
    mamlpp_task_loss,
    multi_step_loss_weights,
    use_first_order,
)
from mamlbook.algorithms.mamlpp_bn import bn_at_step, bn_param_names, init_per_step_bn, without_bn
from mamlbook.conv import Conv4
from mamlbook.maml import meta_loss

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


# --- Per-step BatchNorm (BNWB) on a tiny Conv4: 12×12 → 6 → 3 → 2 → 1, 3 filters, 3-way 2-shot ---

def conv_setup(bn_scale=True, num_tasks=2, seed=0):
    """(model, θ as float64 leaves with non-trivial BN values, (xs, ys, xq, yq)) for 3-way 2-shot."""
    torch.manual_seed(seed)
    model = Conv4(1, 3, filters=3, pool=False, flatten=False, feature_size=3, bn_scale=bn_scale).double()
    with torch.no_grad():                    # BN starts at β = 0, γ = 1: move it off that point
        for name in bn_param_names(model):
            model.get_parameter(name).add_(0.3 * torch.randn(3, dtype=torch.float64))
    params = {k: v.detach().clone().requires_grad_() for k, v in model.named_parameters()}
    gen = torch.Generator().manual_seed(seed)
    xs, xq = (torch.randn(num_tasks, 6, 1, 12, 12, dtype=torch.float64, generator=gen) for _ in "sq")
    ys = yq = torch.arange(3).repeat(2).expand(num_tasks, 6)
    return model, params, (xs, ys, xq, yq)


def test_init_per_step_bn_gives_every_step_a_copy_of_the_bn_shifts_and_scales():
    model, params, _ = conv_setup(bn_scale=True)
    step_bn = init_per_step_bn(model, inner_steps=4, params=params)
    assert list(step_bn) == [f"features.{i}.1.{p}" for i in range(4) for p in ("weight", "bias")]
    for name, rows in step_bn.items():
        assert rows.shape == (4, 3) and rows.is_leaf and rows.requires_grad
        assert all(torch.equal(rows[j], params[name]) for j in range(4))
    assert list(without_bn(model, params)) == [k for k in params if k not in step_bn]
    assert list(init_per_step_bn(conv_setup(bn_scale=False)[0], inner_steps=2)) == \
        [f"features.{i}.1.bias" for i in range(4)]


@pytest.mark.parametrize("first_order", [False, True])
def test_per_step_bn_with_equal_rows_is_mamlpp_with_shared_bn_that_the_inner_loop_leaves_alone(first_order):
    model, params, data = conv_setup()
    w = multi_step_loss_weights(3, epoch=1, anneal_epochs=5)
    step_bn = init_per_step_bn(model, inner_steps=3, params=params)       # every row = θ's BN
    theta = without_bn(model, params)
    lrs = {k: torch.full((3,), 0.1 * (1 + i % 3), dtype=torch.float64) for i, k in enumerate(theta)}
    ours = mamlpp_meta_loss(model, theta, lrs, *data, loss_weights=w, loss_fn=F.cross_entropy,
                            first_order=first_order, step_bn=step_bn)
    # Shared path: θ with its BN entries, each with inner learning rate 0 (β − 0·g = β exactly).
    shared_lrs = {k: lrs.get(k, torch.zeros(3, dtype=torch.float64)) for k in params}
    shared = mamlpp_meta_loss(model, params, shared_lrs, *data, loss_weights=w, loss_fn=F.cross_entropy,
                              first_order=first_order)
    assert torch.equal(ours, shared)
    g_ours = torch.autograd.grad(ours, [*theta.values(), *step_bn.values()])
    g_shared = dict(zip(params, torch.autograd.grad(shared, list(params.values()))))
    for k, g in zip(theta, g_ours):
        torch.testing.assert_close(g, g_shared[k], rtol=1e-12, atol=1e-15)
    for k, g in zip(step_bn, g_ours[len(theta):]):                        # shared β's gradient is
        torch.testing.assert_close(g.sum(0), g_shared[k], rtol=1e-12, atol=1e-15)  # the sum over steps


def test_bn_layers_see_step_js_own_parameters_in_the_support_pass_of_step_j_and_the_query_pass_after_it():
    model, params, (xs, ys, xq, yq) = conv_setup()
    step_bn = init_per_step_bn(model, inner_steps=3, params=params)
    with torch.no_grad():
        for rows in step_bn.values():
            rows += torch.randn_like(rows)                                  # three different rows
    theta = without_bn(model, params)
    bn_layer = model.features[2][1]
    seen = []                                      # the shift the layer really normalises with
    handle = bn_layer.register_forward_pre_hook(lambda m, _: seen.append(m.bias))
    try:
        mamlpp_task_loss(model, theta, init_per_step_lrs(theta, 3, 0.1), xs[0], ys[0], xq[0], yq[0],
                         loss_weights=multi_step_loss_weights(3, 0, 5), loss_fn=F.cross_entropy,
                         step_bn=step_bn)
    finally:
        handle.remove()
    rows = step_bn["features.2.1.bias"]
    # support passes of steps 0, 1, 2, then the query passes after steps 0, 1, 2: never adapted
    assert len(seen) == 6
    assert all(torch.equal(s, rows[j]) for s, j in zip(seen, [0, 1, 2, 0, 1, 2]))


def test_changing_step_js_bn_shift_changes_step_j_and_what_follows_but_nothing_before_it():
    model, params, (xs, ys, _, _) = conv_setup()
    theta = without_bn(model, params)
    lrs = init_per_step_lrs(theta, 3, inner_lr=0.1)
    step_bn = init_per_step_bn(model, inner_steps=3, params=params)
    moved = {k: v.detach().clone() for k, v in step_bn.items()}
    with torch.no_grad():
        moved["features.1.1.bias"][1] += 0.5                                # step j = 1 only

    def run(bn):
        traj = adapt_per_step(model, theta, lrs, xs[0], ys[0], inner_steps=3, loss_fn=F.cross_entropy,
                              step_bn=bn)
        thetas = [theta] + [without_bn(model, t) for t in traj]             # θ_0 … θ_3
        support = [F.cross_entropy(functional_call(model, {**thetas[j], **bn_at_step(bn, j)}, (xs[0],)),
                                   ys[0]) for j in range(3)]
        return thetas, support

    (th_a, sup_a), (th_b, sup_b) = run(step_bn), run(moved)
    assert torch.equal(sup_a[0], sup_b[0])                                  # step 0: untouched
    assert all(torch.equal(th_a[1][k], th_b[1][k]) for k in theta)          # θ_1: bit-identical
    assert not torch.equal(sup_a[1], sup_b[1])                              # step 1's support loss
    for j in (2, 3):                                                        # and what follows from it
        assert not torch.equal(th_a[j]["features.0.0.weight"], th_b[j]["features.0.0.weight"])


def per_step_bn_value(model, theta, lrs, step_bn, data, w):
    return mamlpp_meta_loss(model, {k: v.detach().requires_grad_() for k, v in theta.items()}, lrs,
                            *data, loss_weights=w, loss_fn=F.cross_entropy, first_order=True,
                            step_bn=step_bn).item()


def test_meta_gradient_wrt_per_step_bn_matches_central_finite_differences_and_is_second_order():
    model, params, data = conv_setup(bn_scale=True)
    theta = without_bn(model, params)
    lrs = {k: v.detach() for k, v in init_per_step_lrs(theta, 2, inner_lr=0.3).items()}
    step_bn = init_per_step_bn(model, inner_steps=2, params=params)
    with torch.no_grad():
        for rows in step_bn.values():
            rows += 0.2 * torch.randn_like(rows)
    w = multi_step_loss_weights(2, epoch=1, anneal_epochs=4)               # both steps' query losses
    loss = mamlpp_meta_loss(model, theta, lrs, *data, loss_weights=w, loss_fn=F.cross_entropy,
                            step_bn=step_bn)
    g = flat(torch.autograd.grad(loss, list(step_bn.values())))
    fd, eps = [], 1e-6
    for name in step_bn:
        for idx in range(step_bn[name].numel()):
            plus = {k: v.detach().clone() for k, v in step_bn.items()}
            minus = {k: v.detach().clone() for k, v in step_bn.items()}
            plus[name].view(-1)[idx] += eps
            minus[name].view(-1)[idx] -= eps
            fd.append((per_step_bn_value(model, theta, lrs, plus, data, w)
                       - per_step_bn_value(model, theta, lrs, minus, data, w)) / (2 * eps))
    fd = torch.tensor(fd, dtype=torch.float64)
    assert ((g - fd).norm() / fd.norm()).item() < 1e-6
    first = mamlpp_meta_loss(model, theta, lrs, *data, loss_weights=w, loss_fn=F.cross_entropy,
                             first_order=True, step_bn=step_bn)
    g_first = flat(torch.autograd.grad(first, list(step_bn.values())))
    assert ((g_first - fd).norm() / fd.norm()).item() > 1e-3               # the check has teeth


def test_conv_bias_before_per_step_bn_gets_exactly_zero_meta_gradient():
    model, params, data = conv_setup()
    theta = without_bn(model, params)
    step_bn = init_per_step_bn(model, inner_steps=2, params=params)
    loss = mamlpp_meta_loss(model, theta, init_per_step_lrs(theta, 2, 0.3), *data,
                            loss_weights=multi_step_loss_weights(2, 0, 4), loss_fn=F.cross_entropy,
                            step_bn=step_bn)
    grads = dict(zip(theta, torch.autograd.grad(loss, list(theta.values()))))
    for i in range(4):
        assert grads[f"features.{i}.0.bias"].abs().max() < 1e-13   # rounding only
        assert grads[f"features.{i}.0.weight"].abs().max() > 1e-6


def test_meta_backward_accumulates_the_meta_loss_gradient_task_by_task():
    model, params, data = conv_setup(num_tasks=3)
    theta = without_bn(model, params)
    lrs = init_per_step_lrs(theta, 2, inner_lr=0.3)
    step_bn = init_per_step_bn(model, inner_steps=2, params=params)
    kw = dict(loss_weights=multi_step_loss_weights(2, 1, 4), loss_fn=F.cross_entropy, step_bn=step_bn)
    leaves = [*theta.values(), *lrs.values(), *step_bn.values()]
    loss = mamlpp_meta_loss(model, theta, lrs, *data, **kw)
    expected = torch.autograd.grad(loss, leaves)
    returned = mamlpp_meta_backward(model, theta, lrs, *data, **kw)
    torch.testing.assert_close(returned, loss.detach(), rtol=1e-14, atol=0)
    for leaf, e in zip(leaves, expected):
        torch.testing.assert_close(leaf.grad, e, rtol=1e-12, atol=1e-15)


def test_per_step_bn_with_the_wrong_number_of_steps_is_refused_with_the_fix():
    model, params, (xs, ys, _, _) = conv_setup(bn_scale=False)
    theta = without_bn(model, params)
    step_bn = init_per_step_bn(model, inner_steps=2, params=params)
    with pytest.raises(ValueError, match=r"one row per inner step, \(3, 3\): build it with "
                                         r"init_per_step_bn\(model, inner_steps=3\)"):
        adapt_per_step(model, theta, init_per_step_lrs(theta, 3), xs[0], ys[0], inner_steps=3,
                       loss_fn=F.cross_entropy, step_bn=step_bn)


def test_per_step_bn_refuses_a_theta_that_would_adapt_the_bn_parameters():
    model, params, (xs, ys, _, _) = conv_setup(bn_scale=False)
    step_bn = init_per_step_bn(model, inner_steps=2, params=params)
    with pytest.raises(ValueError, match=r"pass without_bn\(model, params\) as θ"):
        adapt_per_step(model, params, init_per_step_lrs(params, 2), xs[0], ys[0], inner_steps=2,
                       loss_fn=F.cross_entropy, step_bn=step_bn)


def test_per_step_bn_refuses_a_model_without_mamlbook_batchnorm():
    model, params, _ = float64_setup(num_tasks=1)
    with pytest.raises(ValueError, match="mamlbook.conv.BatchNorm"):
        init_per_step_bn(model, inner_steps=2)


def test_cosine_meta_lr_goes_from_meta_lr_to_min_lr_along_a_half_cosine():
    opt = torch.optim.Adam([torch.zeros(1, requires_grad=True)], lr=1e-3)
    sched = cosine_meta_lr_scheduler(opt, total_epochs=4, min_lr=1e-5)
    lrs = []
    for _ in range(5):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    # η_e = 1e-5 + (1e-3 − 1e-5)·(1 + cos(π e / 4))/2, e = 0..4
    half = 0.99e-3 / 2
    expected = [1e-3, 1e-5 + half * (1 + 2 ** -0.5), 1e-5 + half, 1e-5 + half * (1 - 2 ** -0.5), 1e-5]
    assert lrs == pytest.approx(expected, rel=1e-12)
