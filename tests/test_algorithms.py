"""The algorithm registry: each method checked on a known case, and all of them on both problems."""
import pytest
import torch
import torch.nn.functional as F
from sinusoid_fixtures import float64_setup
from torch import nn
from torch.func import functional_call

from mamlbook.algorithms import (
    ALGORITHMS,
    CLASSIFICATION_ONLY,
    PRETRAINED,
    AdaptedModel,
    default_head,
    make_algorithm,
)
from mamlbook.conv import omniglot_conv4

ALPHA = 0.01


def theta_after_one_step(name, model, params, data, **options):
    """θ after one outer step of ``name`` with plain SGD (lr 1) on θ only: rates stay fixed."""
    algo = make_algorithm(name, model, params, problem="regression", inner_lr=ALPHA, **options)
    algo.outer_step(torch.optim.SGD(list(params.values()), lr=1.0), *data)
    return {k: v.detach().clone() for k, v in params.items()}


def clone(params):
    return {k: v.detach().clone().requires_grad_() for k, v in params.items()}


# ----------------------------------------------------------------------------- the registry

def test_the_registry_names_thirteen_algorithms():
    assert ALGORITHMS == ("maml", "fomaml", "reptile", "anil", "metasgd", "mamlpp", "protonet", "imaml",
                          "truncated", "baseline", "baselinepp", "probe", "finetune")
    assert PRETRAINED == ("baseline", "baselinepp", "probe", "finetune")


def test_an_unknown_name_is_refused_with_the_list_of_choices():
    model, params, _ = float64_setup()
    with pytest.raises(ValueError, match="unknown algorithm 'mamI'; choose one of maml, fomaml, reptile, "
                                         "anil, metasgd, mamlpp, protonet, imaml, truncated, baseline, "
                                         "baselinepp, probe, finetune"):
        make_algorithm("mamI", model, params, problem="regression", inner_lr=ALPHA)


def test_prototypical_networks_refuse_regression():
    model, params, _ = float64_setup()
    with pytest.raises(ValueError, match="no meaning for 'regression'"):
        make_algorithm("protonet", model, params, problem="regression")


def test_an_algorithm_with_an_inner_loop_needs_its_step_size():
    model, params, _ = float64_setup()
    with pytest.raises(ValueError, match="maml needs inner_lr"):
        make_algorithm("maml", model, params, problem="regression")


def test_the_default_head_is_the_last_linear_layer():
    model, _, _ = float64_setup()
    assert default_head(model) == "4."
    assert default_head(omniglot_conv4(5)) == "classifier."


def test_meta_sgd_and_mamlpp_meta_learn_one_rate_tensor_per_parameter_tensor():
    model, params, _ = float64_setup()
    count = {name: len(make_algorithm(name, model, params, problem="regression", inner_lr=ALPHA)
                       .meta_parameters()) for name in ("maml", "metasgd", "mamlpp")}
    assert count == {"maml": 6, "metasgd": 12, "mamlpp": 12}


def test_the_recorded_path_of_a_learner_that_always_loops_or_pretrains_is_its_own_not_vmap():
    model, params, _ = float64_setup()             # an MLP on a CPU: "batched=auto" would resolve to vmap
    paths = {name: make_algorithm(name, model, params, problem="regression", inner_lr=ALPHA).path
             for name in ("maml", "mamlpp", "imaml")}
    assert paths == {"maml": "vmap", "mamlpp": "per-task-loop", "imaml": "per-task-loop"}
    conv = omniglot_conv4(5, filters=8)
    assert make_algorithm("protonet", conv, problem="classification").path == "per-task-loop"
    for name in PRETRAINED:
        assert make_algorithm(name, conv, problem="classification", num_classes=10).path == "flat-batch", name
    with pytest.raises(ValueError, match="batched is not available for mamlpp: its multi-step loss runs task by"):
        make_algorithm("mamlpp", model, params, problem="regression", inner_lr=ALPHA, batched=True)


# ----------------------------------------------------------------------------- known cases

def test_fomaml_meta_gradient_is_the_query_gradient_at_the_adapted_parameters():
    model, params, data = float64_setup()
    xs, ys, xq, yq = data
    expected = {k: torch.zeros_like(v) for k, v in params.items()}
    for i in range(xs.shape[0]):                           # by hand: θ' = θ − α∇L_s(θ), then ∇L_q(θ')
        g = torch.autograd.grad(F.mse_loss(functional_call(model, params, (xs[i],)), ys[i]),
                                list(params.values()))
        theta_prime = {k: (v - ALPHA * gk).detach().requires_grad_() for (k, v), gk in zip(params.items(), g)}
        gq = torch.autograd.grad(F.mse_loss(functional_call(model, theta_prime, (xq[i],)), yq[i]),
                                 list(theta_prime.values()))
        for k, gk in zip(params, gq):
            expected[k] += gk / xs.shape[0]
    before = {k: v.detach().clone() for k, v in params.items()}
    after = theta_after_one_step("fomaml", model, params, data)
    for k in params:                                       # SGD with lr 1: θ − θ_new is the gradient
        torch.testing.assert_close(before[k] - after[k], expected[k], rtol=1e-10, atol=1e-13)


def test_meta_sgd_with_fixed_equal_rates_is_maml_in_float64():
    model, params, data = float64_setup()
    maml = theta_after_one_step("maml", model, clone(params), data)
    metasgd = theta_after_one_step("metasgd", model, clone(params), data)
    assert not torch.equal(maml["0.weight"], params["0.weight"])          # the step did something
    for k in params:
        torch.testing.assert_close(metasgd[k], maml[k], rtol=1e-13, atol=1e-15)


def test_mamlpp_with_one_step_uniform_weights_and_fixed_rates_is_maml_in_float64():
    model, params, data = float64_setup()
    maml = theta_after_one_step("maml", model, clone(params), data)
    mamlpp = theta_after_one_step("mamlpp", model, clone(params), data, inner_steps=1)
    assert not torch.equal(maml["0.weight"], params["0.weight"])
    for k in params:
        torch.testing.assert_close(mamlpp[k], maml[k], rtol=1e-13, atol=1e-15)


def test_anil_inner_loop_leaves_the_body_bit_identical_and_moves_the_head():
    model, params, (xs, ys, _, _) = float64_setup()
    adapted = make_algorithm("anil", model, params, problem="regression", inner_lr=ALPHA).adapt(xs[0], ys[0])
    assert isinstance(adapted, AdaptedModel)
    for k, v in params.items():
        assert torch.equal(adapted.params[k], v) == (not k.startswith("4.")), k


def test_anil_on_conv4_adapts_the_classifier_only():
    torch.manual_seed(0)
    model = omniglot_conv4(5, filters=8)
    x, y = torch.rand(5, 1, 28, 28), torch.arange(5)
    adapted = make_algorithm("anil", model, problem="classification", inner_lr=2.0).adapt(x, y, steps=2)
    changed = {k for k, v in model.named_parameters() if not torch.equal(adapted.params[k], v)}
    assert changed == {"classifier.weight", "classifier.bias"}


def hand_linear_case():
    """y = w·x, w = 1; two tasks, each one support and one query point (Reptile uses both)."""
    model = nn.Linear(1, 1, bias=False).double()
    with torch.no_grad():
        model.weight.fill_(1.0)
    x = torch.tensor([[[1.0], [2.0]], [[1.0], [-1.0]]], dtype=torch.float64)   # (T=2, 2 points, 1)
    y = torch.tensor([[[3.0], [4.0]], [[0.0], [2.0]]], dtype=torch.float64)
    return model, (x[:, :1], y[:, :1], x[:, 1:], y[:, 1:])


@pytest.mark.parametrize("progress, expected", [(0.0, 1.05), (0.5, 1.025)])
def test_reptile_update_is_theta_plus_epsilon_times_mean_adapted_minus_theta_by_hand(progress, expected):
    # One SGD step at α = 0.1 on both points of each task (∇_w mean((w·x − y)²) at w = 1):
    #   task 1: 2·mean([1·(1−3), 2·(2−4)]) = −6 → φ1 = 1.6;  task 2: 2·mean([1·1, −1·(−3)]) = 4 → φ2 = 0.6.
    # θ̃ = mean φ = 1.1; ε = 0.5 annealed linearly to 0: 0.5 at the start, 0.25 halfway.
    # θ + ε(θ̃ − θ) = 1 + 0.5·0.1 = 1.05, or 1 + 0.25·0.1 = 1.025.
    model, data = hand_linear_case()
    algo = make_algorithm("reptile", model, problem="regression", inner_lr=0.1, inner_steps=1,
                          outer_lr=0.5, outer_lr_final=0.0)
    assert algo.make_optimizer() is None                  # Reptile's outer update is its own
    assert algo.outer_step(None, *data, progress=progress) is None
    torch.testing.assert_close(model.weight.detach(), torch.tensor([[expected]], dtype=torch.float64))


def test_protonet_predicts_minus_squared_distance_to_each_class_mean_by_hand():
    # Embedding: the identity (the model without its head). Support: class 0 at (0,0) and (2,0), so
    # c0 = (1,0); class 1 at (0,2) and (0,4), so c1 = (0,3).
    # Query (1,1): ‖·−c0‖² = 0 + 1 = 1, ‖·−c1‖² = 1 + 4 = 5. Query (0,2.5): 1 + 6.25 = 7.25, 0 + 0.25 = 0.25.
    body = nn.Linear(2, 2, bias=False).double()
    with torch.no_grad():
        body.weight.copy_(torch.eye(2))
    model = nn.Sequential(body, nn.Linear(2, 2)).double()
    x_s = torch.tensor([[0.0, 0.0], [2.0, 0.0], [0.0, 2.0], [0.0, 4.0]], dtype=torch.float64)
    y_s = torch.tensor([0, 0, 1, 1])
    algo = make_algorithm("protonet", model, problem="classification")
    logits = algo.adapt(x_s, y_s)(torch.tensor([[1.0, 1.0], [0.0, 2.5]], dtype=torch.float64))
    torch.testing.assert_close(logits, torch.tensor([[-1.0, -5.0], [-7.25, -0.25]], dtype=torch.float64))
    assert [p is body.weight for p in algo.meta_parameters()] == [True]   # the head is not used


# ----------------------------------------------------------------------------- every algorithm runs

def changed(before, tensors):
    return [not torch.equal(b, t.detach()) for b, t in zip(before, tensors)]


@pytest.mark.parametrize("name", [a for a in ALGORITHMS if a not in CLASSIFICATION_ONLY])
def test_one_outer_step_on_sinusoids_changes_the_meta_parameters(name):
    model, params, data = float64_setup()
    algo = make_algorithm(name, model, params, problem="regression", inner_lr=ALPHA, inner_steps=2,
                          **({"outer_lr": 0.5} if name == "reptile" else {}))
    before = [p.detach().clone() for p in algo.meta_parameters()]
    loss = algo.outer_step(algo.make_optimizer(1e-3), *data)
    assert loss is None if name == "reptile" else loss > 0
    assert all(changed(before, algo.meta_parameters())), name   # the MLP has no zero-gradient entry
    assert algo.adapt(data[0][0], data[1][0])(data[2][0]).shape == data[3][0].shape


@pytest.mark.parametrize("name", ALGORITHMS)
def test_one_outer_step_on_conv4_changes_the_classifier_or_embedding(name):
    torch.manual_seed(0)
    model = omniglot_conv4(5, filters=8)
    x_s, x_q = torch.rand(2, 5, 1, 28, 28), torch.rand(2, 5, 1, 28, 28)
    y = torch.arange(5).repeat(2, 1)                                        # (T=2, N·K=5)
    if name in PRETRAINED:            # an ordinary classifier over 10 classes, flat batch (x, global label)
        algo = make_algorithm(name, model, problem="classification", num_classes=10)
        batch = (torch.cat([x_s[0], x_q[0]]), torch.arange(10))
    else:
        algo = make_algorithm(name, model, problem="classification",
                              inner_lr=None if name == "protonet" else 0.4, inner_steps=1,
                              **({"outer_lr": 0.5} if name == "reptile" else {}))
        batch = (x_s, y, x_q, y)
    first_conv = model.features[0][0].weight
    before = first_conv.detach().clone()
    algo.outer_step(algo.make_optimizer(1e-3), *batch)
    assert not torch.equal(first_conv.detach(), before), name              # the first conv layer learns
    assert algo.adapt(x_s[0], y[0])(x_q[0]).shape == (5, 5)                # (queries, classes)


def _conv4_episode():
    torch.manual_seed(0)
    model = omniglot_conv4(5, filters=8).double()
    x_s, x_q = torch.rand(2, 5, 1, 28, 28, dtype=torch.float64), torch.rand(2, 5, 1, 28, 28, dtype=torch.float64)
    return model, x_s, torch.arange(5).repeat(2, 1), x_q


def test_mamlpp_per_step_bn_starts_as_the_shared_bn_run_and_then_learns_its_own_rows():
    model, x_s, y, x_q = _conv4_episode()
    kw = dict(problem="classification", inner_lr=0.4, inner_steps=2)
    shared = make_algorithm("mamlpp", model, clone(dict(model.named_parameters())), **kw)
    per_step = make_algorithm("mamlpp", model, clone(dict(model.named_parameters())), per_step_bn=True, **kw)
    bn = [k for k in per_step.step_bn]
    assert bn and all(per_step.step_bn[k].shape[0] == 2 for k in bn)          # one row per inner step
    assert not set(bn) & set(per_step.inner_params)                          # BN is not adapted
    # every row equals θ's BN at the start, so with the shared run's BN inner rates at 0 (per-step
    # BN is never adapted) the first outer loss is the shared-BN one
    with torch.no_grad():
        for k in bn:
            shared.lrs[k].zero_()
    a = shared.outer_step(shared.make_optimizer(1e-3), x_s, y, x_q, y)
    b = per_step.outer_step(per_step.make_optimizer(1e-3), x_s, y, x_q, y)
    assert a == pytest.approx(b, rel=1e-12)
    rows = per_step.step_bn[bn[0]].detach()
    assert not torch.equal(rows[0], rows[1])                                  # each step's row moved its own way
    assert set(per_step.extra_state()) == {"lrs", "step_bn"}


def test_mamlpp_per_step_bn_needs_a_model_with_the_books_batchnorm():
    model, params, _ = float64_setup()                                        # the sinusoid MLP: no BN
    with pytest.raises(ValueError):
        make_algorithm("mamlpp", model, params, problem="regression", inner_lr=0.01, per_step_bn=True)


def test_mamlpp_per_step_bn_adapts_with_its_rows_and_predicts_logits():
    model, x_s, y, x_q = _conv4_episode()
    algo = make_algorithm("mamlpp", model, problem="classification", inner_lr=0.4, inner_steps=2,
                          per_step_bn=True)
    assert algo.adapt(x_s[0], y[0])(x_q[0]).shape == (5, 5)
