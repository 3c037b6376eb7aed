"""``adapt_bn=False`` / ``--no-adapt-bn``: the official code's inner loop, which leaves BatchNorm's β at θ.

The evidence is independent of the package's inner loop: a hand-written ``torch.optim.SGD`` on a copy of
the model whose optimizer holds every parameter but BatchNorm's, and central finite differences of that
function in float64. The command line is checked on a fake Omniglot (the sinusoid MLP has no BatchNorm):
every learner honours the flag or refuses it (exit code 2, one line naming the flag and the learner).
"""
import copy
import json

import pytest
import torch
import torch.nn.functional as F
from cli_fixtures import (
    cached_runs,
    cli,
    differing_runs,
    metrics,
    omniglot,
    train,
)

from mamlbook.algorithms import ALGORITHMS, PRETRAINED, make_algorithm
from mamlbook.conv import BatchNorm, Conv4
from mamlbook.evaluate import adaptation_curve
from mamlbook.functional import make_meta_grad
from mamlbook.maml import adapt, batched_adapt

ALPHA, STEPS = 0.5, 2


def tiny_conv4(seed=0):
    """A float64 Conv4 on 8×8 images: 2 filters, 3 classes (155 parameters, 8 of them BatchNorm's β and γ)."""
    torch.manual_seed(seed)
    model = Conv4(1, 3, filters=2, pool=False, flatten=False, feature_size=2, bn_scale=True).double()
    for m in model.modules():          # β ≠ 0, γ ≠ 1: a wrong treatment of either shows in the numbers
        if isinstance(m, BatchNorm):
            torch.nn.init.normal_(m.bias, 0.0, 0.5)
            torch.nn.init.normal_(m.weight, 1.0, 0.5)
    return model


def tasks(seed=1):
    """2 tasks of 3-way 2-shot support and 2-shot query sets, (T, N, 1, 8, 8)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(2, 12, 1, 8, 8, generator=g, dtype=torch.float64)
    y = torch.tensor([0, 1, 2] * 4).repeat(2, 1)
    return x[:, :6], y[:, :6], x[:, 6:], y[:, 6:]


def is_bn(model, name):
    module = model.get_submodule(name.rsplit(".", 1)[0])
    return isinstance(module, BatchNorm)


def sgd_without_bn(model, x_s, y_s, steps=STEPS):
    """A copy of ``model`` after ``steps`` of torch.optim.SGD on every parameter but BatchNorm's."""
    model = copy.deepcopy(model)
    opt = torch.optim.SGD([p for n, p in model.named_parameters() if not is_bn(model, n)], lr=ALPHA)
    for _ in range(steps):
        opt.zero_grad()
        F.cross_entropy(model(x_s), y_s).backward()
        opt.step()
    return model


def official_meta_loss(model, x_s, y_s, x_q, y_q):
    """(1/T) Σ_i L_query_i(θ'_i), θ'_i: SGD on every parameter but BatchNorm's (no graph: for differences)."""
    return sum(F.cross_entropy(sgd_without_bn(model, x_s[i], y_s[i])(x_q[i]), y_q[i]).item()
               for i in range(x_s.shape[0])) / x_s.shape[0]


def meta_gradient(learner, x_s, y_s, x_q, y_q):
    """The learner's meta-gradient, read from ``.grad`` after an outer step that does not move θ (SGD, lr 0)."""
    learner.outer_step(torch.optim.SGD(learner.meta_parameters(), lr=0.0), x_s, y_s, x_q, y_q)
    return {k: v.grad.clone() for k, v in learner.params.items()}


# ------------------------------------------------------------------------------------- the inner loop


@pytest.mark.parametrize("batched", [False, True], ids=["one-task", "vmap"])
def test_held_bn_entries_are_theta_and_the_rest_moved(batched):
    model, (x_s, y_s, _, _) = tiny_conv4(), tasks()
    theta = dict(model.named_parameters())
    kw = dict(inner_lr=ALPHA, inner_steps=3, loss_fn=F.cross_entropy, adapt_bn=False)
    adapted = batched_adapt(model, theta, x_s, y_s, **kw) if batched else adapt(model, theta, x_s[0], y_s[0], **kw)
    for name, value in theta.items():
        value = value.expand_as(adapted[name]) if batched else value
        if is_bn(model, name):
            assert torch.equal(adapted[name], value), name
        elif not name.endswith("0.bias"):    # a conv bias before batch-statistics BN has a zero gradient
            assert not torch.allclose(adapted[name], value), name


def test_held_bn_adaptation_is_sgd_on_every_other_parameter():
    model, (x_s, y_s, _, _) = tiny_conv4(), tasks()
    adapted = adapt(model, dict(model.named_parameters()), x_s[0], y_s[0], inner_lr=ALPHA, inner_steps=STEPS,
                    loss_fn=F.cross_entropy, adapt_bn=False)
    for name, value in sgd_without_bn(model, x_s[0], y_s[0]).named_parameters():
        torch.testing.assert_close(adapted[name], value, rtol=1e-12, atol=1e-12)


# -------------------------------------------------------------------------------- the meta-gradient


@pytest.mark.parametrize("batched", ["auto", True], ids=["per-task", "vmap"])
def test_meta_gradient_matches_central_differences_of_the_official_inner_loop(batched):
    model, batch = tiny_conv4(), tasks()
    learner = make_algorithm("maml", model, problem="classification", inner_lr=ALPHA, inner_steps=STEPS,
                             adapt_bn=False, batched=batched)
    grads = meta_gradient(learner, *batch)
    eps = 1e-6

    def loss_at(p, j, shift):          # the official meta-loss with θ's entry j of p moved by ``shift``
        with torch.no_grad():
            p.view(-1)[j] += shift
        loss = official_meta_loss(model, *batch)
        with torch.no_grad():
            p.view(-1)[j] -= shift
        return loss
    for name, p in model.named_parameters():
        fd = [(loss_at(p, j, eps) - loss_at(p, j, -eps)) / (2 * eps) for j in range(p.numel())]
        torch.testing.assert_close(grads[name], torch.tensor(fd, dtype=p.dtype).view_as(p), rtol=1e-6, atol=1e-8,
                                   msg=name)


def test_holding_bn_changes_the_meta_gradient():
    batch = tasks()
    grads = {adapt_bn: meta_gradient(make_algorithm("maml", tiny_conv4(), problem="classification",
                                                    inner_lr=ALPHA, inner_steps=STEPS, adapt_bn=adapt_bn), *batch)
             for adapt_bn in (True, False)}
    model = tiny_conv4()
    differ = {k for k in grads[True] if not torch.allclose(grads[True][k], grads[False][k], rtol=1e-3, atol=1e-10)}
    assert {k for k, _ in model.named_parameters() if is_bn(model, k)} | {"classifier.weight"} <= differ


@pytest.mark.parametrize("learner,options", [("metasgd", {}), ("truncated", {"backprop_steps": STEPS})])
def test_other_learners_hold_bn_as_maml_does(learner, options):
    # Meta-SGD with every α = inner_lr (its start) and truncated MAML through all steps are MAML.
    batch = tasks()
    grads = [meta_gradient(make_algorithm(name, tiny_conv4(), problem="classification", inner_lr=ALPHA,
                                          inner_steps=STEPS, adapt_bn=False, **kw), *batch)
             for name, kw in (("maml", {}), (learner, options))]
    for name in grads[0]:
        torch.testing.assert_close(grads[1][name], grads[0][name], rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("trained,evaluated", [(False, True), (True, False)])
def test_a_metasgd_checkpoint_adapts_bn_as_evaluation_asks(trained, evaluated):
    # evaluate --adapt-bn/--no-adapt-bn loads the learned rates into a learner built with the other setting.
    (x_s, y_s, x_q, y_q), model = tasks(), tiny_conv4()
    first = make_algorithm("metasgd", tiny_conv4(), problem="classification", inner_lr=ALPHA, inner_steps=STEPS,
                           adapt_bn=trained)
    first.outer_step(first.make_optimizer(1e-3), x_s, y_s, x_q, y_q)
    second = make_algorithm("metasgd", model, problem="classification", inner_lr=ALPHA, inner_steps=STEPS,
                            adapt_bn=evaluated)
    second.load_state_dict(first.state_dict())
    adapted = second.adapt(x_s[0], y_s[0], steps=2).params
    held = [torch.equal(adapted[k], second.params[k]) for k, _ in model.named_parameters() if is_bn(model, k)]
    assert held and all(held) == (not evaluated) and any(held) == (not evaluated)


def test_the_functional_meta_gradient_holds_bn_too():
    # make_meta_grad: the learner's compile=True path (here uncompiled), against MAML's checked one.
    model, batch = tiny_conv4(), tasks()
    expected = meta_gradient(make_algorithm("maml", tiny_conv4(), problem="classification", inner_lr=ALPHA,
                                            inner_steps=STEPS, adapt_bn=False), *batch)
    grads, _ = make_meta_grad(model, inner_lr=ALPHA, inner_steps=STEPS, loss_fn=F.cross_entropy,
                              adapt_bn=False)({k: v.detach() for k, v in model.named_parameters()}, *batch)
    for name, value in expected.items():
        torch.testing.assert_close(grads[name], value, rtol=1e-10, atol=1e-12)


def test_the_outer_step_still_trains_bn():
    model = tiny_conv4()
    learner = make_algorithm("maml", model, problem="classification", inner_lr=ALPHA, inner_steps=STEPS,
                             adapt_bn=False)
    before = {k: v.detach().clone() for k, v in model.named_parameters() if is_bn(model, k)}
    learner.outer_step(learner.make_optimizer(1e-3), *tasks())
    for name, value in before.items():
        assert learner.params[name].grad.abs().min() > 0, name
        assert not torch.equal(learner.params[name], value), name


@pytest.mark.parametrize("batched", [False, True], ids=["learner", "vmap"])
def test_meta_test_adaptation_holds_bn_too(batched):
    # MAML's meta-test curve (evaluate.adaptation_curve) against SGD without BatchNorm, step by step.
    model, (x_s, y_s, x_q, y_q) = tiny_conv4(), tasks()
    learner = make_algorithm("maml", model, problem="classification", inner_lr=ALPHA, adapt_bn=False)
    if batched:     # the learner's path on a GPU
        curve = adaptation_curve(model, learner.params, x_s, y_s, x_q, y_q, inner_lr=ALPHA, max_steps=2,
                                 loss_fn=F.cross_entropy, batched=True, adapt_bn=False)
    else:
        curve = learner.score_tasks(x_s, y_s, x_q, y_q, steps=[0, 1, 2], metric=F.cross_entropy)
    expected = [[F.cross_entropy(sgd_without_bn(model, x_s[i], y_s[i], steps=s)(x_q[i]), y_q[i]).item()
                 for s in range(3)] for i in range(2)]
    torch.testing.assert_close(curve, torch.tensor(expected, dtype=torch.float64), rtol=1e-10, atol=1e-12)
    adapted = learner.adapt(x_s[0], y_s[0], steps=2).params
    assert all(torch.equal(adapted[k], v) for k, v in model.named_parameters() if is_bn(model, k))


# ------------------------------------------------------------------------------------ the command line

HONOURED, SAME, REFUSED = "changes θ", "same θ", "refused"
ADAPT_BN = {"maml": HONOURED, "fomaml": HONOURED, "metasgd": HONOURED, "truncated": HONOURED,
            "anil": SAME,                    # its inner loop adapts the head only: β is held at θ already
            "reptile": REFUSED,              # its outer step moves θ toward the adapted β: held, never trained
            "mamlpp": REFUSED, "imaml": REFUSED, "protonet": REFUSED,
            **{name: REFUSED for name in PRETRAINED}}
ALSO_CALLED = {"protonet": "Prototypical Networks", "mamlpp": "MAML++"}


@pytest.fixture(scope="module")
def run(tmp_path_factory, fake_omniglot):
    """run(learner, *flags, iterations=1, out=None) → (Result, out folder) on the fake Omniglot."""
    return cached_runs(tmp_path_factory,
                       lambda learner: omniglot(fake_omniglot, meta_batch_size=None if learner in PRETRAINED else 2))


def test_the_table_covers_every_learner():
    assert set(ADAPT_BN) == set(ALGORITHMS)


@pytest.mark.parametrize("learner", ALGORITHMS)
def test_no_adapt_bn_is_honoured_or_refused(run, learner):
    result, out = run(learner, "--no-adapt-bn")
    if ADAPT_BN[learner] == REFUSED:
        assert result.code == 2
        assert result.err.startswith("error: no-adapt-bn is not available for ") and result.err.count("\n") == 1
        assert learner in result.err or ALSO_CALLED.get(learner, "?") in result.err, result.err
        assert list(out.iterdir()) == []
        return
    base, base_out = run(learner)
    assert base.code == 0 and result.code == 0, result.err
    assert (metrics(base_out)["learner"]["adapt_bn"], metrics(out)["learner"]["adapt_bn"]) == (True, False)
    assert metrics(out)["options"]["adapt_bn"] is False
    changed = differing_runs(base_out, out)
    assert bool(changed) == (ADAPT_BN[learner] == HONOURED), changed


def test_no_adapt_bn_on_a_model_without_batchnorm_is_refused(tmp_path):
    result = train(tmp_path, "--preset", "sinusoid", "--iterations", 1, "--no-adapt-bn")
    assert result.code == 2
    assert result.err.startswith("error: no-adapt-bn is not available for maml on SinusoidMLP")
    assert list(tmp_path.iterdir()) == []


def test_resume_keeps_no_adapt_bn(run, tmp_path):
    whole = run("maml", "--no-adapt-bn", iterations=2)[1]
    assert run("maml", "--no-adapt-bn", out=tmp_path)[0].code == 0
    dropped = run("maml", "--resume", iterations=2, out=tmp_path)[0]            # without the flag: refused
    assert dropped.code == 2 and "options.adapt_bn" in dropped.err, dropped.err
    resumed = run("maml", "--no-adapt-bn", "--resume", iterations=2, out=tmp_path)[0]
    assert resumed.code == 0, resumed.err
    assert metrics(tmp_path)["learner"]["adapt_bn"] is False and metrics(tmp_path)["resumed_from"] == 1
    assert differing_runs(whole, tmp_path) == []


@pytest.mark.parametrize("flags,adapt_bn", [((), False), (("--adapt-bn",), True)])
def test_evaluate_uses_the_trained_setting_unless_told(run, fake_omniglot, tmp_path, flags, adapt_bn):
    out = run("maml", "--no-adapt-bn")[1]
    path = tmp_path / "eval.json"
    result = cli("evaluate", "--checkpoint", out / "checkpoint.pt", "--tasks", 3, "--json", path,
                 "--data", fake_omniglot, *flags)
    assert result.code == 0, result.err
    ev = json.loads(path.read_text())
    assert ev["adapt_bn"] is adapt_bn
    assert (ev["eval"] == metrics(out)["eval"]) == (not adapt_bn)
