"""Every flag × every learner through the real command line: honoured (the result changes as it must) or refused.

Tiny runs (1 iteration, 3 meta-test tasks): the sinusoid preset for every learner but the classification-only
ones (protonet and the pretraining baselines), which run on a fake Omniglot in the real zip format, validated
on 10 tasks instead of 200. A run of each
(learner, flags) is made once per module and shared. A refusal is exit code 2 with one line on
stderr, ``error: ...``, naming the flag and the learner, and leaves nothing on disk.
``--resume`` is tested in tests/test_resume.py.
"""
import copy
import json
import re

import pytest
import torch
import torch.nn.functional as F
from cli_fixtures import (
    SINE,
    cached_runs,
    cli,
    differing_runs,
    learner_tensors,
    metrics,
    omniglot,
)
from torch import nn

from mamlbook.algorithms import ALGORITHMS, PRETRAINED
from mamlbook.algorithms import CLASSIFICATION_ONLY as CLASSIFIERS
from mamlbook.models import SinusoidMLP
from mamlbook.runs import load_checkpoint
from mamlbook.sinusoid import EVAL_SEED
from mamlbook.tasks import sample_sinusoid_tasks

CHANGES = "changes θ"          # accepted; θ after one iteration differs from the run without the flag
SAME = "same θ"                # accepted; θ bit-identical (the learner already does what the flag asks)
REFUSED = "refused"            # exit code 2, a message naming the flag and the learner, nothing written
HONOURED = "honoured"          # evaluate: the result reflects the flag

TRAIN_FLAGS = (("--first-order",), ("--inner-lr", "0.05"), ("--inner-steps", "2"),
               ("--meta-batch-size", "3"), ("--meta-lr", "0.01"))
# Where metrics.json records each flag's value (the value the learner used).
RECORDED = {"--first-order": ("learner", "first_order", True), "--inner-lr": ("learner", "inner_lr", 0.05),
            "--inner-steps": ("learner", "inner_steps", 2), "--meta-batch-size": ("config", "meta_batch_size", 3),
            "--meta-lr": ("config", "meta_lr", 0.01)}
#               --first-order  --inner-lr  --inner-steps  --meta-batch-size  --meta-lr
TRAIN = {
    "maml":     (CHANGES,       CHANGES,    CHANGES,       CHANGES,           CHANGES),
    "fomaml":   (SAME,          CHANGES,    CHANGES,       CHANGES,           CHANGES),   # first-order already
    "reptile":  (REFUSED,       CHANGES,    CHANGES,       CHANGES,           REFUSED),   # no meta-gradient, no Adam
    "anil":     (CHANGES,       CHANGES,    CHANGES,       CHANGES,           CHANGES),
    "metasgd":  (CHANGES,       CHANGES,    CHANGES,       CHANGES,           CHANGES),
    "mamlpp":   (CHANGES,       CHANGES,    CHANGES,       CHANGES,           CHANGES),
    "protonet": (REFUSED,       REFUSED,    REFUSED,       CHANGES,           CHANGES),   # no inner loop
    "imaml":    (CHANGES,       CHANGES,    CHANGES,       CHANGES,           CHANGES),   # first-order: no CG
    "truncated": (CHANGES,      CHANGES,    CHANGES,       CHANGES,           CHANGES),   # first-order: k = 0
    # supervised pretraining on flat batches of images: no inner loop, no meta-gradient, no tasks
    **{name: (REFUSED,         REFUSED,    REFUSED,       REFUSED,           CHANGES) for name in PRETRAINED},
}
EVAL_FLAGS = (("--steps", "2"), ("--inner-lr", "0.1"))
#               --steps    --inner-lr
EVALUATE = {
    "maml":     (HONOURED, HONOURED),
    "fomaml":   (HONOURED, HONOURED),
    "reptile":  (HONOURED, HONOURED),
    "anil":     (HONOURED, HONOURED),
    "metasgd":  (HONOURED, REFUSED),     # its inner rates are meta-learned
    "mamlpp":   (HONOURED, REFUSED),     # its inner rates are meta-learned
    "protonet": (REFUSED,  REFUSED),     # no inner loop
    "imaml":    (HONOURED, HONOURED),
    "truncated": (HONOURED, HONOURED),
    "baseline": (REFUSED,  REFUSED),     # the new head is fitted to convergence, not by steps at a rate
    "baselinepp": (REFUSED, REFUSED),
    "probe":    (REFUSED,  REFUSED),
    "finetune": (HONOURED, HONOURED),    # its SGD on the whole network
}
CLASSIFICATION_ONLY = (("--data", "."), ("--split", "small"), ("--val-every", "2"))
SINE_LEARNERS = [a for a in ALGORITHMS if a not in CLASSIFIERS]
ALSO_CALLED = {"protonet": "Prototypical Networks", "mamlpp": "MAML++", "metasgd": "Meta-SGD"}
MAML_CURVE = ("maml", "fomaml", "truncated")   # evaluated along MAML's incremental curve, 0..N steps


def matrix(table, flags):
    return [pytest.param(learner, flag, expect, id=f"{learner}{flag[0]}")
            for learner, row in table.items() for flag, expect in zip(flags, row)]


@pytest.fixture(scope="module")
def run(tmp_path_factory, fake_omniglot):
    """run(learner, *flags, iterations=1) → (Result, out folder): each distinct run is made once; the
    pretraining baselines draw no meta-batches, and the classification-only learners run on the fake Omniglot."""
    def preset_for(learner):
        if learner not in CLASSIFIERS:
            return SINE
        return omniglot(fake_omniglot, meta_batch_size=None if learner in PRETRAINED else 2)
    return cached_runs(tmp_path_factory, preset_for)


@pytest.fixture(scope="module")
def evaluation(tmp_path_factory, run, fake_omniglot):
    """evaluation(learner, *flags) → (Result, eval.json or None): ``evaluate`` on the 1-iteration checkpoint."""
    done = {}

    def evaluation(learner, *flags):
        if (learner, flags) not in done:
            _, out = run(learner)
            path = tmp_path_factory.mktemp("eval") / "eval.json"
            data = ["--data", fake_omniglot] if learner in CLASSIFIERS else []
            result = cli("evaluate", "--checkpoint", out / "checkpoint.pt", "--tasks", 3, "--json", path, *data, *flags)
            done[(learner, flags)] = result, (json.loads(path.read_text()) if path.is_file() else None)
        return done[(learner, flags)]
    return evaluation


def assert_refused(result, flag, learner):
    assert result.code == 2
    assert result.err.startswith("error: ") and result.err.count("\n") == 1, result.err
    name = flag.lstrip("-")       # "--inner-lr: not available for ...", or the learner's "first-order is not available"
    assert re.search(rf"--{name}\b|(^error: |, ){name} is not available", result.err), result.err
    assert learner in result.err or ALSO_CALLED.get(learner, learner) in result.err, result.err


def test_the_tables_cover_every_learner():
    assert set(TRAIN) == set(EVALUATE) == set(ALGORITHMS)


# ------------------------------------------------------------------------------------------- train


@pytest.mark.parametrize("learner,flag,expect", matrix(TRAIN, TRAIN_FLAGS))
def test_train_flag_is_honoured_or_refused(run, learner, flag, expect):
    base, base_out = run(learner)
    result, out = run(learner, *flag)
    if expect == REFUSED:
        assert_refused(result, flag[0], learner)
        assert list(out.iterdir()) == []
        return
    assert base.code == 0 and result.code == 0, result.err
    section, key, value = RECORDED[flag[0]]
    assert metrics(out)[section][key] == value
    changed = differing_runs(base_out, out)
    assert bool(changed) == (expect == CHANGES), changed


def test_maml_with_first_order_is_fomaml_bit_for_bit(run):
    maml, maml_out = run("maml", "--first-order", iterations=3)
    fomaml, fomaml_out = run("fomaml", iterations=3)
    assert maml.code == fomaml.code == 0
    assert differing_runs(maml_out, fomaml_out) == []


@pytest.mark.parametrize("learner", ["maml", "fomaml", "anil", "metasgd", "mamlpp", "truncated"])
def test_the_first_meta_loss_is_the_query_loss_after_the_recorded_inner_steps(run, learner):
    # Independent evidence that the α and steps in metrics.json are the ones used: the loss of
    # iteration 1 (at the initial θ, seed 0) recomputed with torch.optim.SGD on copies of the MLP.
    result, out = run(learner, "--inner-lr", "0.05", "--inner-steps", "2")
    assert result.code == 0, result.err
    recorded = metrics(out)["learner"]
    assert (recorded["inner_lr"], recorded["inner_steps"]) == (0.05, 2)
    torch.manual_seed(0)
    theta0 = SinusoidMLP()
    b = sample_sinusoid_tasks(25, 10, generator=torch.Generator().manual_seed(0))   # the first meta-batch
    losses = []
    for i in range(25):
        model = copy.deepcopy(theta0)
        adapted = list(_last_linear(model).parameters()) if learner == "anil" else list(model.parameters())
        opt = torch.optim.SGD(adapted, lr=0.05)
        per_step = []
        for _ in range(2):
            opt.zero_grad()
            F.mse_loss(model(b.x_support[i]), b.y_support[i]).backward()
            opt.step()
            with torch.no_grad():
                per_step.append(F.mse_loss(model(b.x_query[i]), b.y_query[i]).item())
        # MAML++'s multi-step loss weighs every step's query loss, uniformly at epoch 0.
        losses.append(sum(per_step) / 2 if learner == "mamlpp" else per_step[-1])
    first = load_checkpoint(out / "checkpoint.pt")["losses"][0].item()
    assert first == pytest.approx(sum(losses) / 25, rel=1e-5)


def test_reptiles_first_update_uses_the_recorded_inner_lr_and_steps(run):
    # θ₁ = θ₀ + ε·(mean_i φ_i − θ₀), φ_i: 2 SGD steps at α = 0.05 on task i's 20 points, by hand.
    result, out = run("reptile", "--inner-lr", "0.05", "--inner-steps", "2")
    assert result.code == 0, result.err
    m = metrics(out)
    assert (m["learner"]["inner_lr"], m["learner"]["inner_steps"]) == (0.05, 2)
    torch.manual_seed(0)
    theta0 = SinusoidMLP()
    b = sample_sinusoid_tasks(25, 10, generator=torch.Generator().manual_seed(0))
    phis = []
    for i in range(25):
        model = copy.deepcopy(theta0)
        opt = torch.optim.SGD(model.parameters(), lr=0.05)
        x, y = torch.cat([b.x_support[i], b.x_query[i]]), torch.cat([b.y_support[i], b.y_query[i]])
        for _ in range(2):
            opt.zero_grad()
            F.mse_loss(model(x), y).backward()
            opt.step()
        phis.append(model.state_dict())
    eps = m["options"]["outer_lr"]                          # ε at the start of the annealing
    theta1 = load_checkpoint(out / "checkpoint.pt")["learner"]["model"]
    for name, value in theta0.state_dict().items():
        expected = value + eps * (torch.stack([phi[name] for phi in phis]).mean(0) - value)
        torch.testing.assert_close(theta1[name], expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("learner", ["metasgd", "mamlpp"])
def test_learned_inner_rates_start_at_the_given_inner_lr(run, learner):
    # After one Adam step of β = 1e-3 every learned rate is within β of its start, α = 0.05.
    result, out = run(learner, "--inner-lr", "0.05")
    assert result.code == 0, result.err
    rates = torch.cat([t.flatten() for name, t in learner_tensors(out / "checkpoint.pt").items()
                       if name.startswith("extra.")])
    assert rates.numel() > 0
    assert ((rates - 0.05).abs() <= 1e-3 * (1 + 1e-5)).all()
    assert not torch.all(rates == 0.05)                          # and they were meta-trained


@pytest.mark.parametrize("flags,steps", [((), 5), (("--inner-steps", "2"), 2)])
def test_mamlpp_is_tested_with_the_steps_it_learned_rates_for(run, flags, steps):
    m = metrics(run("mamlpp", *flags)[1])
    assert m["learner"]["inner_steps"] == m["learner"]["test_steps"] == steps
    assert m["eval"]["K=10"]["steps"] == [steps]


@pytest.mark.parametrize("learner", ALGORITHMS)
def test_time_budget_stops_the_run_early(run, learner):
    result, out = run(learner, "--time-budget", "0.5", iterations=200000)
    assert result.code == 0, result.err
    m = metrics(out)
    assert m["stopped_by_budget"] is True
    assert 1 <= m["iterations_done"] < 200000
    assert load_checkpoint(out / "checkpoint.pt")["iteration"] == m["iterations_done"]    # --resume continues


@pytest.mark.parametrize("learner", ALGORITHMS)
def test_device_cpu_runs_on_the_cpu(run, learner):
    result, out = run(learner)                                      # cli_fixtures.TINY passes --device cpu
    assert result.code == 0, result.err
    assert metrics(out)["machine"]["device"] == "cpu"


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA: --device cuda is not refused")
@pytest.mark.parametrize("learner", ALGORITHMS)
def test_device_cuda_without_a_gpu_is_refused(run, learner):
    result, out = run(learner, "--device", "cuda")
    assert result.code == 2
    assert result.err.startswith("error: --device cuda") and "use --device cpu" in result.err
    assert list(out.iterdir()) == []


@pytest.mark.parametrize("learner", [a
                                     for a in ALGORITHMS])
def test_amp_on_a_cpu_is_refused(run, learner):
    result, out = run(learner, "--amp")
    if learner in ("maml", "fomaml"):          # they support AMP, on CUDA: the reason is the CPU
        assert result.code == 2 and result.err.startswith("error: --amp") and "CUDA" in result.err
    else:
        assert_refused(result, "--amp", learner)
    assert list(out.iterdir()) == []


@pytest.mark.parametrize("flag", CLASSIFICATION_ONLY, ids=[f[0] for f in CLASSIFICATION_ONLY])
@pytest.mark.parametrize("learner", SINE_LEARNERS)
def test_classification_only_flags_are_refused_on_sinusoids(run, learner, flag):
    result, out = run(learner, *flag)
    assert result.code == 2
    assert result.err.startswith(f"error: {flag[0]}") and "sinusoid" in result.err
    assert list(out.iterdir()) == []


# ---------------------------------------------------------------------------------------- evaluate


@pytest.mark.parametrize("learner", ALGORITHMS)
def test_evaluate_without_flags_reproduces_the_runs_own_test_numbers(run, evaluation, learner):
    result, ev = evaluation(learner)
    assert result.code == 0, result.err
    assert ev["eval"] == metrics(run(learner)[1])["eval"]


@pytest.mark.parametrize("learner,flag,expect", matrix(EVALUATE, EVAL_FLAGS))
def test_evaluate_flag_is_honoured_or_refused(evaluation, learner, flag, expect):
    result, ev = evaluation(learner, *flag)
    if expect == REFUSED:
        assert_refused(result, flag[0], learner)
        assert ev is None
        return
    assert result.code == 0, result.err
    default = evaluation(learner)[1]
    for protocol, r in ev["eval"].items():
        d = default["eval"][protocol]
        if learner == "finetune":      # accuracy on 3 tasks is too coarse to show it (α = 0.1 is its default):
            assert r["steps"] == ([2] if flag[0] == "--steps" else [10])   # tests/test_baseline.py checks the
            assert ev["inner_lr"] == 0.1                                   # adaptation they set by hand
            continue
        if flag[0] == "--steps":       # MAML's curve: 0..N steps; the others: N steps only
            assert r["steps"] == ([0, 1, 2] if learner in MAML_CURVE else [2])
            assert r["mean"][-1] != d["mean"][d["steps"].index(d["test_steps"])]
        else:                          # the same steps, other numbers after ≥ 1 step (0 steps: α plays no part)
            assert ev["inner_lr"] == 0.1 and r["steps"] == d["steps"]
            assert all((m == dm) == (s == 0) for s, m, dm in zip(r["steps"], r["mean"], d["mean"]))


def test_evaluate_more_steps_than_mamlpp_has_learned_rates_for_is_refused(evaluation):
    result, ev = evaluation("mamlpp", "--steps", "7")
    assert_refused(result, "--steps", "mamlpp")
    assert ev is None


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA: --device cuda is not refused")
def test_evaluate_on_cuda_without_a_gpu_is_refused(evaluation):
    result, ev = evaluation("maml", "--device", "cuda")
    assert result.code == 2 and result.err.startswith("error: --device cuda")
    assert ev is None


def test_evaluate_refuses_data_on_a_sinusoid_checkpoint(evaluation):
    result, ev = evaluation("maml", "--data", ".")
    assert result.code == 2 and result.err.startswith("error: --data")
    assert ev is None


def _last_linear(model: nn.Module) -> nn.Linear:
    return [m for m in model.modules() if isinstance(m, nn.Linear)][-1]


@pytest.mark.parametrize("learner", ["maml", "fomaml", "reptile", "anil", "truncated"])
def test_evaluate_adapts_with_sgd_at_the_given_steps_and_rate(run, evaluation, learner):
    # Independent evidence: the meta-test numbers recomputed with torch.optim.SGD on copies of the
    # checkpoint's MLP, on the fixed test tasks (seed EVAL_SEED); ANIL adapts its last layer only.
    result, ev = evaluation(learner, "--steps", "2", "--inner-lr", "0.1")
    assert result.code == 0, result.err
    trained = SinusoidMLP()
    trained.load_state_dict(load_checkpoint(run(learner)[1] / "checkpoint.pt")["learner"]["model"])
    b = sample_sinusoid_tasks(3, 10, generator=torch.Generator().manual_seed(EVAL_SEED))
    mse = []
    for i in range(3):
        model = copy.deepcopy(trained)
        opt = torch.optim.SGD(_last_linear(model).parameters() if learner == "anil" else model.parameters(), lr=0.1)
        for _ in range(2):
            opt.zero_grad()
            F.mse_loss(model(b.x_support[i]), b.y_support[i]).backward()
            opt.step()
        with torch.no_grad():
            mse.append(F.mse_loss(model(b.x_query[i]), b.y_query[i]).item())
    assert ev["inner_lr"] == 0.1
    assert ev["eval"]["K=10"]["mean"][-1] == pytest.approx(sum(mse) / 3, rel=1e-5)
