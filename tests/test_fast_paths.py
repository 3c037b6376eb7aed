"""Every fast path gives the plain loop's meta-gradient (float64), and the training loop says which it took."""
import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mamlbook.algorithms import make_algorithm
from mamlbook.conv import omniglot_conv4
from mamlbook.fast import FusedMLPStep, fused_mlp_step, mlp_layers, mlp_meta_grad
from mamlbook.fast_tasks import TaskThreads, task_threads_for, usable_cores
from mamlbook.maml import meta_backward, meta_loss
from mamlbook.models import SinusoidMLP
from mamlbook.tasks import sample_sinusoid_tasks


def mlp_case(sizes=(1, 40, 40, 1), tasks=5, k=10, q=7, seed=0):
    """A float64 ReLU MLP of the given widths and (T, K|Q, ·) regression data."""
    torch.manual_seed(seed)
    layers = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers += [nn.Linear(a, b)] + ([nn.ReLU()] if i < len(sizes) - 2 else [])
    model = nn.Sequential(*layers).double()
    g = torch.Generator().manual_seed(seed + 1)
    data = (torch.randn(tasks, k, sizes[0], generator=g, dtype=torch.float64),
            torch.randn(tasks, k, sizes[-1], generator=g, dtype=torch.float64),
            torch.randn(tasks, q, sizes[0], generator=g, dtype=torch.float64),
            torch.randn(tasks, q, sizes[-1], generator=g, dtype=torch.float64))
    return model, data


def plain_meta_grad(model, data, **kw):
    """The plain per-task loop's meta-gradient (meta_backward, batched=False) and loss."""
    params = dict(model.named_parameters())
    for p in params.values():
        p.grad = None
    loss = meta_backward(model, params, *data, batched=False, **kw)
    return {k: p.grad.clone() for k, p in params.items()}, loss


def hand_meta_grad(model, data, **kw):
    names = mlp_layers(model)
    params = {k: v.detach() for k, v in model.named_parameters()}
    gws, gbs, loss = mlp_meta_grad([params[w] for w, _ in names], [params[b] for _, b in names], *data, **kw)
    grads = {}
    for (w, b), gw, gb in zip(names, gws, gbs):
        grads[w], grads[b] = gw, gb
    return grads, loss


# ----------------------------------------------------------------- the hand-written MLP meta-gradient
@pytest.mark.parametrize("sizes", [(1, 40, 40, 1), (3, 8, 2), (2, 6, 5, 4, 3)])
@pytest.mark.parametrize("inner_steps", [1, 2, 3])
@pytest.mark.parametrize("first_order", [False, True])
def test_hand_written_mlp_meta_gradient_equals_the_plain_loop_in_float64(sizes, inner_steps, first_order):
    model, data = mlp_case(sizes)
    kw = dict(inner_lr=0.1, inner_steps=inner_steps, first_order=first_order)
    want, want_loss = plain_meta_grad(model, data, **kw)
    got, got_loss = hand_meta_grad(model, data, **kw)
    assert set(got) == set(want)
    for k in want:
        torch.testing.assert_close(got[k], want[k], rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(got_loss, want_loss, rtol=1e-12, atol=0)


def test_hand_written_meta_gradient_matches_finite_differences_of_the_meta_loss():
    # Independent evidence: the directional derivative of meta_loss (evaluated, not differentiated).
    model, data = mlp_case((1, 8, 8, 1), tasks=3, k=5, q=5)
    kw = dict(inner_lr=0.3, inner_steps=2)
    grads, _ = hand_meta_grad(model, data, **kw)
    params = {k: v.detach() for k, v in model.named_parameters()}
    direction = {k: torch.randn_like(v) for k, v in params.items()}

    def at(eps):
        p = {k: (v + eps * direction[k]).requires_grad_() for k, v in params.items()}
        return meta_loss(model, p, *data, batched=False, **kw).item()
    eps = 1e-6
    fd = (at(eps) - at(-eps)) / (2 * eps)
    analytic = sum((grads[k] * direction[k]).sum() for k in params).item()
    assert analytic == pytest.approx(fd, rel=1e-7)


def test_mlp_layers_accepts_only_plain_relu_mlps():
    assert mlp_layers(SinusoidMLP()) == [("0.weight", "0.bias"), ("2.weight", "2.bias"), ("4.weight", "4.bias")]
    assert mlp_layers(nn.Sequential(nn.Linear(1, 4), nn.Tanh(), nn.Linear(4, 1))) is None
    assert mlp_layers(nn.Sequential(nn.Linear(1, 4), nn.ReLU())) is None              # ends in a ReLU
    assert mlp_layers(nn.Sequential(nn.Linear(1, 4, bias=False), nn.ReLU(), nn.Linear(4, 1))) is None
    assert mlp_layers(omniglot_conv4(5)) is None


# ----------------------------------------------------------------- the fused step: meta-gradient + Adam
def adam_reference(model, data, steps, lr=1e-3, **kw):
    """meta_backward then torch.optim.Adam (the plain, unfused route), ``steps`` times on the same data."""
    opt = torch.optim.Adam(model.parameters(), lr=lr, foreach=False)
    params = dict(model.named_parameters())
    for _ in range(steps):
        opt.zero_grad()
        meta_backward(model, params, *data, batched=False, **kw)
        opt.step()
    return opt


@pytest.mark.parametrize("grad_clip", [None, 0.05])
def test_fused_step_equals_meta_backward_then_torch_adam_in_float64(grad_clip):
    model, data = mlp_case()
    ref_model = copy.deepcopy(model)
    kw = dict(inner_lr=0.01, inner_steps=1, first_order=False)
    fused = FusedMLPStep(mlp_layers(model), grad_clip=grad_clip, compile=False, **kw)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    params = dict(model.named_parameters())
    for _ in range(3):
        assert fused.step(opt, params, *data) is not None
    ref_opt = torch.optim.Adam(ref_model.parameters(), lr=1e-3, foreach=False)
    ref_params = dict(ref_model.named_parameters())
    for _ in range(3):
        ref_opt.zero_grad()
        meta_backward(ref_model, ref_params, *data, batched=False, **kw)
        if grad_clip:
            nn.utils.clip_grad_value_(ref_model.parameters(), grad_clip)
        ref_opt.step()
    for (k, p), q in zip(model.named_parameters(), ref_model.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-12, atol=1e-14, msg=k)
    mine, ref = opt.state_dict()["state"], ref_opt.state_dict()["state"]
    for i in ref:
        assert float(mine[i]["step"]) == float(ref[i]["step"]) == 3.0
        torch.testing.assert_close(mine[i]["exp_avg"], ref[i]["exp_avg"], rtol=1e-12, atol=1e-15)
        torch.testing.assert_close(mine[i]["exp_avg_sq"], ref[i]["exp_avg_sq"], rtol=1e-12, atol=1e-18)


def test_fused_step_keeps_parameters_and_optimizer_state_usable_after_binding():
    # θ and Adam's moments become views of flat buffers: same Parameter objects, state_dict round trips,
    # and a state loaded from outside (resume) is picked up, not overwritten.
    model, data = mlp_case()
    kw = dict(inner_lr=0.01, inner_steps=1, first_order=False)
    fused = FusedMLPStep(mlp_layers(model), compile=False, **kw)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    before = list(model.parameters())
    params = dict(model.named_parameters())
    fused.step(opt, params, *data)
    assert list(model.parameters()) == before and all(a is b for a, b in zip(model.parameters(), before))
    saved_model, saved_opt = copy.deepcopy(model.state_dict()), copy.deepcopy(opt.state_dict())
    fused.step(opt, params, *data)
    after_two = [p.detach().clone() for p in model.parameters()]
    model.load_state_dict(saved_model)                      # back to step 1, as a resume would
    opt.load_state_dict(saved_opt)
    fused.step(opt, params, *data)
    for p, q in zip(model.parameters(), after_two):
        torch.testing.assert_close(p.detach(), q, rtol=0, atol=0)
    assert all(float(s["step"]) == 2.0 for s in opt.state_dict()["state"].values())


def test_fused_step_declines_an_optimizer_it_cannot_fuse():
    model, data = mlp_case()
    fused = FusedMLPStep(mlp_layers(model), inner_lr=0.01, inner_steps=1, first_order=False, compile=False)
    params = dict(model.named_parameters())
    assert fused.step(torch.optim.SGD(model.parameters(), lr=0.1), params, *data) is None
    assert fused.step(torch.optim.Adam(model.parameters(), weight_decay=1e-4), params, *data) is None
    assert fused.step(torch.optim.Adam(list(model.parameters())[:2]), params, *data) is None


# ----------------------------------------------------------------- the learner picks and reports its path
@pytest.fixture
def one_intra_op_thread():
    """PyTorch at one intra-op thread (the CLI's default), restored afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_maml_learner_takes_the_fused_path_for_an_mlp_and_says_so():
    learner = make_algorithm("maml", SinusoidMLP(), problem="regression", inner_lr=0.01, compile=True)
    assert learner.path == "fused-mlp" and learner.options()["path"] == "fused-mlp"
    conv = make_algorithm("maml", omniglot_conv4(5), problem="classification", inner_lr=2.0, compile=True)
    assert conv.path == "compiled-vmap"
    plain = make_algorithm("maml", SinusoidMLP(), problem="regression", inner_lr=0.01)
    assert plain.path == "vmap" and plain.options()["path"] == "vmap"
    looped = make_algorithm("maml", omniglot_conv4(5), problem="classification", inner_lr=2.0, batched=False)
    assert looped.path == "per-task-loop"


@pytest.mark.skipif(usable_cores() < 2, reason="task threads need two usable cores")
def test_conv_maml_on_a_cpu_runs_its_tasks_on_all_cores_by_default(one_intra_op_thread):
    learner = make_algorithm("maml", omniglot_conv4(5), problem="classification", inner_lr=2.0)
    assert learner.path == "task-threads" and learner.options()["path"] == "task-threads"
    assert make_algorithm("anil", omniglot_conv4(5), problem="classification", inner_lr=2.0).path != "task-threads"
    torch.set_num_threads(2)                  # PyTorch already uses the cores: the plain loop
    assert make_algorithm("maml", omniglot_conv4(5), problem="classification", inner_lr=2.0).path == "per-task-loop"


def test_task_threads_are_offered_only_for_the_looped_conv_path_on_a_cpu(one_intra_op_thread):
    conv = omniglot_conv4(5)
    assert task_threads_for(conv, False, torch.device("cpu")) is None             # the plain loop, asked for
    assert task_threads_for(conv, True, torch.device("cpu")) is None              # vmap, asked for
    assert task_threads_for(SinusoidMLP(), "auto", torch.device("cpu")) is None   # the MLP batches with vmap
    assert task_threads_for(conv, "auto", torch.device("cuda")) is None
    model_with_buffer = omniglot_conv4(5)
    model_with_buffer.register_buffer("counter", torch.zeros(1))
    assert task_threads_for(model_with_buffer, "auto", torch.device("cpu")) is None


# ----------------------------------------------------------------- the per-task loop on worker threads
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("first_order", [False, True])
def test_task_threads_give_the_plain_loops_meta_gradient_bit_for_bit(dtype, first_order, one_intra_op_thread):
    torch.manual_seed(0)
    model = omniglot_conv4(5, filters=8).to(dtype)
    g = torch.Generator().manual_seed(1)
    data = (torch.randn(5, 5, 1, 28, 28, generator=g, dtype=dtype), torch.randint(0, 5, (5, 5), generator=g),
            torch.randn(5, 10, 1, 28, 28, generator=g, dtype=dtype), torch.randint(0, 5, (5, 10), generator=g))
    kw = dict(inner_lr=0.4, inner_steps=2, loss_fn=F.cross_entropy, first_order=first_order)
    want, want_loss = plain_meta_grad(model, data, **kw)
    for p in model.parameters():
        p.grad = None
    threads = TaskThreads(model, workers=2)
    try:
        loss = threads.meta_backward(dict(model.named_parameters()), *data, **kw)
    finally:
        threads.close()
    for k, p in model.named_parameters():
        assert torch.equal(p.grad, want[k]), k                     # same operations in the same order
    assert torch.equal(loss, want_loss)
    if dtype == torch.float64:                 # independent evidence: a conv bias before batch-stat BN has
        assert model.get_parameter("features.0.0.bias").grad.abs().max() < 1e-14   # zero gradient


def test_fused_mlp_step_is_offered_only_for_relu_mlps_with_the_mse_loss():
    kw = dict(inner_lr=0.01, inner_steps=1, first_order=False, compile=False)
    assert fused_mlp_step(SinusoidMLP(), loss_fn=F.mse_loss, **kw) is not None
    assert fused_mlp_step(SinusoidMLP(), loss_fn=F.l1_loss, **kw) is None
    assert fused_mlp_step(omniglot_conv4(5), loss_fn=F.mse_loss, **kw) is None


def test_compiled_fused_training_matches_the_plain_route_on_the_paper_sinusoids():
    # The CLI's default path for `--preset sinusoid`, compiled (float32): five outer steps on the
    # same tasks leave θ where meta_backward + torch.optim.Adam leave it, to float32 rounding.
    pytest.importorskip("torch._inductor")
    if fused_mlp_step(SinusoidMLP(), loss_fn=F.mse_loss, inner_lr=0.01, inner_steps=1, first_order=False) is None:
        pytest.skip("no C++ compiler: torch.compile cannot build CPU kernels here")
    torch.manual_seed(0)
    model = SinusoidMLP()
    ref = copy.deepcopy(model)
    batches = [sample_sinusoid_tasks(25, 10, generator=torch.Generator().manual_seed(i)) for i in range(5)]
    learner = make_algorithm("maml", model, problem="regression", inner_lr=0.01, compile=True)
    opt = learner.make_optimizer(1e-3)
    losses = [learner.outer_step(opt, b.x_support, b.y_support, b.x_query, b.y_query) for b in batches]
    ref_opt = torch.optim.Adam(ref.parameters(), lr=1e-3)
    ref_losses = []
    for b in batches:
        ref_opt.zero_grad()
        ref_losses.append(meta_backward(ref, dict(ref.named_parameters()), b.x_support, b.y_support,
                                        b.x_query, b.y_query, inner_lr=0.01, batched=False).item())
        ref_opt.step()
    assert learner.path == "fused-mlp"
    assert losses == pytest.approx(ref_losses, rel=1e-5)
    for p, q in zip(model.parameters(), ref.parameters()):
        torch.testing.assert_close(p.detach(), q.detach(), rtol=1e-5, atol=1e-6)
