"""The transfer baselines (Chen et al. 2019, Tian et al. 2020): heads checked against independent solvers.

Independent evidence: the Baseline's and the linear probe's new heads are the optima that Newton's
method (explicit Hessians, float64) finds for the objectives as the papers' code states them; the
Baseline++ logits are s·cos computed by ``F.cosine_similarity``; fine-tuning is ``torch.optim.SGD``
on a copy of the network; a pretraining step is ``torch.optim.Adam`` on an ordinary classifier. Then
every learner trains, validates, resumes bit-identically and stops at its time budget through the
real command line, on a generated Omniglot in the real zip format.
"""
import copy
import json

import pytest
import torch
import torch.nn.functional as F
from cli_fixtures import (
    assert_resumes_bit_identical,
    assert_stops_at_budget,
    cli,
    differing_runs,
    metrics,
    omniglot,
    small_validation,
    train,
)
from torch import nn
from torch.func import grad, hessian

from mamlbook.algorithms import PRETRAINED, make_algorithm
from mamlbook.compare import compare, omniglot_problem
from mamlbook.conv import omniglot_conv4
from mamlbook.data import ClassImages
from mamlbook.errors import OptionError
from mamlbook.fewshot import FewShotConfig, load_splits
from mamlbook.models import SinusoidMLP
from mamlbook.problems import ClassBatches
from mamlbook.runs import load_checkpoint

F64 = torch.float64


def conv4_task(n_way=5, k_shot=2, queries=3, num_classes=10):
    """A float64 Conv4 (8 filters), ``num_classes`` for pretraining, and one random N-way K-shot task."""
    torch.manual_seed(0)
    model = omniglot_conv4(n_way, filters=8).double()
    x_s = torch.rand(n_way * k_shot, 1, 28, 28, dtype=F64)
    y_s = torch.arange(n_way).repeat_interleave(k_shot)
    x_q = torch.rand(n_way * queries, 1, 28, 28, dtype=F64)
    return model, x_s, y_s, x_q


def learner(name, model, **options):
    return make_algorithm(name, model, problem="classification", num_classes=10, **options)


@torch.no_grad()
def conv4_features(model, x):
    """The Conv4's features by its own modules: the four blocks, then the spatial mean (Conv4.forward)."""
    return model.features(x).mean(dim=(2, 3))


def newton_minimum(objective, size, pinv=False):
    """The minimiser of a smooth convex function of a flat float64 vector: Newton's method from 0.

    ``pinv``: the Hessian is singular along a direction the objective does not depend on (an unpenalised
    bias shifted by a constant): the pseudo-inverse's step never moves along it.
    """
    z = torch.zeros(size, dtype=F64)
    for _ in range(100):
        g = grad(objective)(z)
        if g.abs().max() < 1e-14:
            break
        h = hessian(objective)(z)
        d = torch.linalg.pinv(h) @ g if pinv else torch.linalg.solve(h, g)
        step = 1.0
        while objective(z - step * d) > objective(z) - 1e-4 * step * (g @ d) and step > 1e-12:
            step /= 2
        z = z - step * d
    assert grad(objective)(z).abs().max() < 1e-12
    return z


# ----------------------------------------------------------------------------- the new heads

def test_the_baseline_head_is_the_optimum_of_chens_weight_decayed_logistic_regression_by_newtons_method():
    model, x_s, y_s, x_q = conv4_task()
    head = learner("baseline", model).adapt(x_s, y_s)
    f, n, lam = conv4_features(model, x_s), 5, 1e-3         # [C]: weight_decay=0.001 on weight and bias
    d = f.shape[1]

    def objective(z):                                         # mean CE + (λ/2)(‖W‖² + ‖b‖²)
        w, b = z[:n * d].view(n, d), z[n * d:]
        return F.cross_entropy(f @ w.T + b, y_s) + 0.5 * lam * (z @ z)
    z = newton_minimum(objective, n * d + n)
    w, b = z[:n * d].view(n, d), z[n * d:]
    assert w.abs().max() > 1.0                                # a real fit, not a head left near 0
    torch.testing.assert_close(head.params["weight"], w, rtol=0, atol=1e-9)
    torch.testing.assert_close(head.params["bias"], b, rtol=0, atol=1e-9)
    torch.testing.assert_close(head(x_q), conv4_features(model, x_q) @ w.T + b, rtol=0, atol=1e-8)


def test_the_probe_is_tians_l2_normalised_logistic_regression_with_c_1_by_newtons_method():
    # scikit-learn's objective, as [R] calls it: ½‖W‖² + C Σ_s CE_s, C = 1, the intercept not penalised.
    model, x_s, y_s, x_q = conv4_task()
    head = learner("probe", model).adapt(x_s, y_s)
    f = conv4_features(model, x_s)
    f = f / torch.sqrt((f * f).sum(1, keepdim=True))
    n, d = 5, f.shape[1]

    def objective(z):
        w, b = z[:n * d].view(n, d), z[n * d:]
        return 0.5 * (w * w).sum() + 1.0 * F.cross_entropy(f @ w.T + b, y_s, reduction="sum")
    z = newton_minimum(objective, n * d + n, pinv=True)
    w, b = z[:n * d].view(n, d), z[n * d:]
    torch.testing.assert_close(head.params["weight"], w, rtol=0, atol=1e-9)
    torch.testing.assert_close(head.params["bias"], b, rtol=0, atol=1e-9)   # both sum to 0
    fq = conv4_features(model, x_q)
    torch.testing.assert_close(head(x_q), fq / fq.norm(dim=1, keepdim=True) @ w.T + b, rtol=0, atol=1e-8)


def test_baseline_pp_logits_are_two_times_the_cosine_and_its_head_a_stationary_point():
    model, x_s, y_s, x_q = conv4_task()
    head = learner("baselinepp", model).adapt(x_s, y_s)
    w = head.params["weight"]                                                    # (5, D), no bias
    cos = F.cosine_similarity(conv4_features(model, x_q)[:, None, :], w[None, :, :], dim=-1)   # (Q, 5)
    torch.testing.assert_close(head(x_q), 2.0 * cos, rtol=0, atol=1e-12)        # s = 2 for ≤ 200 classes
    w = w.clone().requires_grad_()
    f_s = conv4_features(model, x_s)
    loss = F.cross_entropy(2.0 * F.cosine_similarity(f_s[:, None, :], w[None], dim=-1), y_s)
    (g,) = torch.autograd.grad(loss, [w])
    assert g.abs().max() < 1e-8


@pytest.mark.parametrize("num_classes,scale", [(200, 2.0), (201, 10.0)])
def test_baseline_pp_pretrains_with_chens_scale_for_its_number_of_classes(num_classes, scale):
    model, x_s, _, _ = conv4_task()
    algo = make_algorithm("baselinepp", model, problem="classification", num_classes=num_classes)
    w = algo.pretrain_head["weight"].detach()
    expected = scale * F.cosine_similarity(conv4_features(model, x_s)[:, None, :], w[None], dim=-1)
    torch.testing.assert_close(algo.pretrain_logits(x_s).detach(), expected, rtol=0, atol=1e-12)


def test_finetune_is_sgd_on_the_whole_network_from_the_baseline_head():
    model, x_s, y_s, x_q = conv4_task()
    lp = learner("baseline", model).adapt(x_s, y_s).params
    adapted = learner("finetune", model).adapt(x_s, y_s, steps=3, inner_lr=0.1)
    by_hand = copy.deepcopy(model)
    with torch.no_grad():
        by_hand.classifier.weight.copy_(lp["weight"])
        by_hand.classifier.bias.copy_(lp["bias"])
    opt = torch.optim.SGD(by_hand.parameters(), lr=0.1)
    for _ in range(3):
        opt.zero_grad()
        F.cross_entropy(by_hand(x_s), y_s).backward()
        opt.step()
    for name, p in by_hand.named_parameters():
        torch.testing.assert_close(adapted.params[name], p.detach(), rtol=0, atol=1e-12)
    assert not torch.equal(adapted.params["features.0.0.weight"], model.features[0][0].weight)  # body moved
    torch.testing.assert_close(adapted(x_q), by_hand(x_q).detach(), rtol=0, atol=1e-12)


def test_finetune_with_no_steps_is_the_baseline():
    model, x_s, y_s, x_q = conv4_task()
    torch.testing.assert_close(learner("finetune", model).adapt(x_s, y_s, steps=0)(x_q),
                               learner("baseline", model).adapt(x_s, y_s)(x_q), rtol=0, atol=1e-12)


# ----------------------------------------------------------------------------- pretraining

def test_a_pretraining_step_is_one_adam_step_of_an_ordinary_classifier_over_all_classes():
    model, _, _, _ = conv4_task()
    algo = learner("baseline", model)
    x, y = torch.rand(16, 1, 28, 28, dtype=F64), torch.randint(10, (16,))     # global labels 0..9
    by_hand = copy.deepcopy(model)
    by_hand.classifier = nn.Linear(8, 10).double()
    with torch.no_grad():
        by_hand.classifier.weight.copy_(algo.pretrain_head["weight"])
        by_hand.classifier.bias.copy_(algo.pretrain_head["bias"])
    assert torch.equal(algo.pretrain_head["bias"].detach(), torch.zeros(10, dtype=F64))   # [C]: bias 0
    opt = torch.optim.Adam(by_hand.parameters(), lr=1e-3)
    loss = F.cross_entropy(by_hand(x), y)
    loss.backward()
    opt.step()
    assert algo.outer_step(algo.make_optimizer(1e-3), x, y) == pytest.approx(loss.item(), rel=1e-12)
    for name, p in by_hand.named_parameters():
        mine = algo.pretrain_head[name.split(".")[1]] if name.startswith("classifier.") else algo.params[name]
        torch.testing.assert_close(mine.detach(), p.detach(), rtol=1e-10, atol=1e-12)


def test_the_flat_sampler_draws_real_images_with_their_global_class_labels():
    gen = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (3, 4, 5, 5, 1), dtype=torch.uint8, generator=gen)
    split = ClassImages(images, torch.tensor([4, 2, 3]), ["a", "b", "c"])      # classes b, c are padded
    x, y = ClassBatches(split).sample(200, torch.Generator().manual_seed(1))
    assert x.shape == (200, 1, 5, 5) and x.dtype == torch.float32 and set(y.tolist()) == {0, 1, 2}
    for image, label in zip(x, y.tolist()):
        real = images[label, :split.counts[label]].permute(0, 3, 1, 2).float() / 255   # its class's images
        assert any(torch.equal(image, r) for r in real)
    again, labels = ClassBatches(split).sample(200, torch.Generator().manual_seed(1))
    assert torch.equal(again, x) and torch.equal(labels, y)                  # the generator decides


def test_an_episodic_meta_batch_is_refused_with_a_message():
    model, x_s, y_s, _ = conv4_task()
    algo = learner("baseline", model)
    with pytest.raises(OptionError, match="flat batches .* problem.sampler"):
        algo.outer_step(algo.make_optimizer(), x_s[None], y_s[None], x_s[None], y_s[None])


@pytest.mark.parametrize("name", PRETRAINED)
def test_regression_is_refused_with_a_message(name):
    with pytest.raises(OptionError, match=f"{name} pretrains a classifier .* no meaning for 'regression'"):
        make_algorithm(name, SinusoidMLP(), problem="regression", num_classes=10)


def test_a_baseline_checkpoint_loads_into_the_probe_and_finetune_not_into_baseline_pp():
    model, _, _, _ = conv4_task()
    state = learner("baseline", model).state_dict()
    for name in ("probe", "finetune"):
        learner(name, copy.deepcopy(model)).load_state_dict(state)
    with pytest.raises(ValueError):
        learner("baselinepp", copy.deepcopy(model)).load_state_dict(state)


# ----------------------------------------------------------------------------- the command line

def command(data, name, *flags):
    return [*omniglot(data, meta_batch_size=None), "--algorithm", name, *flags]


@pytest.mark.parametrize("name", PRETRAINED)
def test_a_crashed_run_resumes_bit_identical_and_evaluate_reproduces_it(fake_omniglot, tmp_path, monkeypatch,
                                                                         name):
    small_validation(monkeypatch)
    flags = command(fake_omniglot, name, "--iterations", "3", "--val-every", "1", "--checkpoint-every", "1")
    whole, crashed = assert_resumes_bit_identical(tmp_path, monkeypatch, *flags)   # checkpoint.pt and meta-test
    assert crashed["resumed_from"] == 1 and [v["iteration"] for v in crashed["val"]] == [1, 2, 3]
    assert differing_runs(tmp_path / "whole", tmp_path / "crashed", "best.pt") == []
    assert torch.equal(load_checkpoint(tmp_path / "whole" / "checkpoint.pt")["losses"],
                       load_checkpoint(tmp_path / "crashed" / "checkpoint.pt")["losses"])
    assert whole["val"] == crashed["val"]
    # 4 alphabets × 3 characters × 4 rotations of small1 (Early_Aramaic is meta-val): 48 pretraining classes
    assert whole["options"]["num_classes"] == whole["learner"]["num_classes"] == 48
    assert whole["learner"]["batch_size"] == 16
    ev = cli("evaluate", "--checkpoint", tmp_path / "whole" / "best.pt", "--tasks", 3, "--data", fake_omniglot,
             "--json", tmp_path / "e.json")
    assert ev.code == 0, ev.err
    assert metrics(tmp_path / "whole")["eval"] == json.loads((tmp_path / "e.json").read_text())["eval"]


@pytest.mark.parametrize("name", PRETRAINED)
def test_the_time_budget_stops_pretraining_and_resume_continues(fake_omniglot, tmp_path, monkeypatch, name):
    small_validation(monkeypatch)
    done = assert_stops_at_budget(tmp_path, *command(fake_omniglot, name), budget="0.3")
    more = train(tmp_path, *command(fake_omniglot, name, "--iterations", str(done + 2), "--resume"))
    assert more.code == 0, more.err
    assert metrics(tmp_path)["iterations_done"] == done + 2 and metrics(tmp_path)["resumed_from"] == done


@pytest.mark.parametrize("flag", [("--inner-lr", "0.1"), ("--inner-steps", "2"), ("--meta-batch-size", "2"),
                                  ("--first-order",)], ids=lambda f: f[0])
def test_flags_without_meaning_for_pretraining_are_refused_and_nothing_is_written(fake_omniglot, tmp_path,
                                                                                  flag):
    result = train(tmp_path, *command(fake_omniglot, "baseline", "--iterations", "1", *flag))
    assert result.code == 2 and result.err.startswith("error: ") and "baseline" in result.err
    assert flag[0].lstrip("-") in result.err
    assert list(tmp_path.iterdir()) == []


def test_the_equal_budget_race_pretrains_on_flat_batches_of_the_meta_train_classes(fake_omniglot):
    problem = omniglot_problem(load_splits(FewShotConfig(split="small"), fake_omniglot), num_test_tasks=5)
    (row,) = compare(problem, ["baseline"], budget_s=0.3, progress=False)
    assert row.iterations >= 1 and row.num_test_tasks == 5 and 0.0 <= row.mean <= 100.0


def test_the_sinusoid_preset_is_refused(tmp_path):
    result = train(tmp_path, "--preset", "sinusoid", "--algorithm", "probe", "--iterations", "1")
    assert result.code == 2 and "no meaning for 'regression'" in result.err
