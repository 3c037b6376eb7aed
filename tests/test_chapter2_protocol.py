"""Chapter 2's protocol: one K = 10 model tested at K = 5, 10, 20, baselines tuned per step count, paired tests.

The step-size cases are worked by hand on a one-weight model f(x) = w·x, started at w = 0, with one
support point (1, 1) and one query point (1, 0.5). Plain SGD on the support loss (w − 1)² gives
w_s = 1 − (1 − 2a)^s after s steps at step size a, and the query MSE is (w_s − 0.5)²:

    a      1 step   2 steps   3 steps
    0.10   0.0900   0.0196    0.000144
    0.15   0.0400   0.0001    0.0246
    0.25   0        0.0625    0.1406

so the best step size is 0.25 for one step, 0.15 for two and 0.10 for three.
"""
import json
from pathlib import Path

import pytest
import torch
from torch import nn

from mamlbook.sinusoid import PAPER_TEST_K, paper_protocol, task_curves, tune_step_sizes, tuned_curves
from mamlbook.tasks import SinusoidBatch

ROOT = Path(__file__).resolve().parents[1]
CANDIDATES = (0.10, 0.15, 0.25)


def one_weight(dtype=torch.float64):
    model = nn.Linear(1, 1, bias=False).to(dtype)
    with torch.no_grad():
        model.weight.zero_()
    return model


def one_task(dtype=torch.float64):
    t = lambda v: torch.tensor([[[v]]], dtype=dtype)       # (1 task, 1 point, 1)
    return SinusoidBatch(t(1.0), t(1.0), t(1.0), t(0.5), torch.ones(1, dtype=dtype), torch.zeros(1, dtype=dtype))


def test_the_step_size_is_tuned_for_each_step_count():
    tuned = tune_step_sizes(one_weight(), 1, [1, 2, 3], candidates=CANDIDATES, tasks=one_task())
    assert tuned == {1: 0.25, 2: 0.15, 3: 0.10}


def test_tuned_curves_take_each_step_count_from_its_own_step_size():
    curve = tuned_curves(one_weight(), 1, {1: 0.25, 2: 0.15, 3: 0.10}, tasks=one_task())
    expected = torch.tensor([[0.25, 0.0, 0.0001, 0.000144]], dtype=torch.float64)
    torch.testing.assert_close(curve, expected, rtol=1e-9, atol=1e-12)


def test_tuned_curves_need_a_step_size_for_every_step_count():
    with pytest.raises(ValueError, match=r"no step size for \[2\] steps"):
        tuned_curves(one_weight(), 1, {1: 0.25, 3: 0.10}, tasks=one_task())


def test_a_diverged_candidate_is_never_chosen():
    # a = 1e20 in float32: w_1 = 2e20, its squared error 2e40 overflows to inf
    tasks = one_task(torch.float32)
    assert tune_step_sizes(one_weight(torch.float32), 1, [1], candidates=(1e20, 0.10), tasks=tasks) == {1: 0.10}
    with pytest.raises(ValueError, match="every candidate step size diverged after 1 steps"):
        tune_step_sizes(one_weight(torch.float32), 1, [1], candidates=(1e20,), tasks=tasks)


def test_a_task_whose_adaptation_overflows_is_recorded_as_inf_not_nan():
    # w_1 = 2e39 → inf in float32; the next step computes inf − inf = NaN, which would make the median NaN
    curve = task_curves(one_weight(torch.float32), 1, 1e39, max_steps=3, tasks=one_task(torch.float32))
    assert curve[0, 0].item() == 0.25
    assert torch.isinf(curve[0, 1:]).all() and not torch.isnan(curve).any()


@pytest.fixture(scope="module")
def tiny_run():
    return paper_protocol(iterations=20, baseline_iterations=20, num_tasks=30, progress=False)


def test_the_protocol_trains_one_k10_model_and_tests_it_at_k_5_10_20(tiny_run):
    assert PAPER_TEST_K == (5, 10, 20)
    assert tiny_run["config"]["k_shot"] == 10 and tiny_run["k_test"] == [5, 10, 20]
    assert list(tiny_run["results"]) == ["K=5", "K=10", "K=20"]
    for res in tiny_run["results"].values():
        assert res["maml"]["inner_lr"] == 0.01
        assert len(res["maml"]["mean"]) == len(res["pretrained"]["mean"]) == 11
        assert list(res["pretrained"]["step_sizes"]) == [str(s) for s in range(1, 11)]


def test_the_paired_difference_is_the_difference_of_the_means(tiny_run):
    # the mean of per-task differences equals the difference of the means: an identity, not an estimate
    # (up to float32 rounding of the per-task values, ~1e-7 of an MSE of a few units)
    for res in tiny_run["results"].values():
        for d, m, p in zip(res["maml_minus_pretrained"]["mean"], res["maml"]["mean"], res["pretrained"]["mean"]):
            assert d == pytest.approx(m - p, abs=1e-5)


def test_the_committed_full_run_used_the_papers_protocol():
    run = json.loads((ROOT / "results/chapter02/full_run.json").read_text(encoding="utf-8"))
    assert run["config"] | {"seed": 0} == {"k_shot": 10, "meta_batch_size": 25, "inner_lr": 0.01, "inner_steps": 1,
                                           "meta_lr": 0.001, "iterations": 70_000, "first_order": False,
                                           "seed": 0, "init": "pytorch"}
    assert run["baseline_iterations"] == 70_000 and run["num_tasks"] == 600 and run["k_test"] == [5, 10, 20]
    assert run["machine"]["cpu_threads"] == 1 and run["wall_time_s"]["total"] > run["wall_time_s"]["maml"] > 0
