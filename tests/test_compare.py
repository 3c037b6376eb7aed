"""The equal-wall-clock comparison: same budget, same start, same tasks, one table row per algorithm."""
import dataclasses
import math

import matplotlib
import pytest
import torch
from data_fixtures import SMALL1, needs_omniglot
from matplotlib.container import BarContainer

from mamlbook.compare import (
    CHAPTER8,
    SavedGraphPeak,
    compare,
    format_table,
    omniglot_problem,
    plot_comparison,
    sinusoid_problem,
    tasks_digest,
)
from mamlbook.sinusoid import eval_tasks

matplotlib.use("Agg")
BUDGET_S = 0.3
SLACK_S = 1.0          # one meta-step plus sampling on a busy 2-core machine: steps here take milliseconds


@pytest.fixture(scope="module")
def tiny_sinusoid():
    return sinusoid_problem(meta_batch_size=4, num_test_tasks=20)


@pytest.fixture(scope="module")
def sinusoid_rows(tiny_sinusoid):
    return compare(tiny_sinusoid, budget_s=BUDGET_S, seed=0, progress=False)


def test_regression_compares_every_chapter_8_algorithm_but_prototypical_networks(sinusoid_rows):
    assert [r.algorithm for r in sinusoid_rows] == [a for a in CHAPTER8 if a != "protonet"]


def test_every_algorithm_trains_for_the_same_budget_within_one_step(sinusoid_rows):
    for r in sinusoid_rows:
        assert r.budget_s == BUDGET_S
        assert BUDGET_S <= r.train_time_s <= BUDGET_S + SLACK_S, r
        assert r.iterations >= 1 and len(r.losses) == r.iterations
        assert 0 < r.ms_per_step <= 1e3 * r.train_time_s


def test_every_algorithm_is_tested_on_the_same_fixed_tasks(sinusoid_rows):
    t = eval_tasks(10, 20)                                 # drawn again here, independently
    expected = tasks_digest((t.x_support, t.y_support, t.x_query, t.y_query))
    assert {r.test_tasks for r in sinusoid_rows} == {expected}
    assert {r.num_test_tasks for r in sinusoid_rows} == {20}


def test_every_algorithm_starts_from_the_same_theta_and_the_same_task_stream(tiny_sinusoid):
    first_thetas, first_batches = [], []

    def make_model():
        model = tiny_sinusoid.make_model()
        first_thetas.append(tasks_digest([p for p in model.parameters()]))
        return model

    def sample(gen):
        batch = tiny_sinusoid.sample(gen)
        if len(first_batches) < len(first_thetas):         # the first meta-batch of each run
            first_batches.append(tasks_digest(batch))
        return batch

    probe = dataclasses.replace(tiny_sinusoid, make_model=make_model, sample=sample)
    compare(probe, ["maml", "reptile", "mamlpp"], budget_s=0.1, seed=3, progress=False)
    assert len(first_thetas) == len(first_batches) == 3
    assert len(set(first_thetas)) == 1 and len(set(first_batches)) == 1


def test_the_table_has_a_header_and_one_row_per_algorithm(sinusoid_rows):
    lines = format_table(sinusoid_rows).splitlines()
    assert lines[0].startswith("| algorithm | query MSE ± 95% CI | median | test steps |")
    assert [line.split(" | ")[0].removeprefix("| ") for line in lines[2:]] == [r.algorithm for r in sinusoid_rows]


def test_each_row_reports_its_mean_with_the_95_percent_ci_of_its_tasks(sinusoid_rows):
    for r in sinusoid_rows:
        assert r.mean > 0 and r.ci95 > 0 and r.median > 0      # MSEs of 20 different tasks


def test_the_figure_has_one_bar_per_algorithm_with_ci_error_bars(sinusoid_rows):
    fig = plot_comparison(sinusoid_rows)
    metric_ax, time_ax = fig.axes
    assert len(metric_ax.patches) == len(time_ax.patches) == len(sinusoid_rows)
    heights = [p.get_height() for p in metric_ax.patches]
    assert heights == pytest.approx([r.mean for r in sinusoid_rows])
    bars = next(c for c in metric_ax.containers if isinstance(c, BarContainer))
    segments = bars.errorbar.lines[2][0].get_segments()     # one vertical line per bar: mean ± ci
    assert [s[1][1] - s[0][1] for s in segments] == pytest.approx([2 * r.ci95 for r in sinusoid_rows])


def test_a_non_positive_budget_is_refused(tiny_sinusoid):
    with pytest.raises(ValueError, match="budget_s must be positive"):
        compare(tiny_sinusoid, budget_s=0)


def test_only_the_sinusoid_problem_can_be_named():
    with pytest.raises(ValueError, match="pass a Problem"):
        compare("omniglot", budget_s=1)


def test_saved_graph_peak_counts_each_storage_once_while_a_graph_holds_it():
    a = torch.ones(1000, requires_grad=True)                  # 4,000 bytes of float32
    with SavedGraphPeak() as graph:
        b = a.exp()                                           # exp saves its result b: 4,000 bytes
        c = b.sin()                                           # sin saves its input, the same b: still 4,000
        d = (a * a).sum()                                     # mul saves a (twice, one storage): 8,000
        (c.sum() + d).backward()                              # backward frees every saved tensor
    assert graph.peak == 8000 and graph.bytes == 0


@needs_omniglot
def test_omniglot_comparison_scores_accuracy_on_held_out_alphabets():
    from mamlbook.fewshot import FewShotConfig, load_splits
    splits = load_splits(FewShotConfig(split="small"), SMALL1.parent)
    problem = omniglot_problem(splits, meta_batch_size=2, num_test_tasks=10)
    rows = compare(problem, ["fomaml", "protonet"], budget_s=0.5, progress=False)
    assert [r.metric for r in rows] == ["query accuracy (%)"] * 2
    assert len({r.test_tasks for r in rows}) == 1
    for r in rows:
        assert 0 <= r.mean <= 100 and r.num_test_tasks == 10 and r.note == ""
    assert [r.test_steps for r in rows] == [10, 0]            # protonet has no inner loop


def test_a_task_whose_adaptation_diverges_counts_as_infinite_and_is_reported_not_hidden(monkeypatch):
    # Found in the full run of chapter 8: one NaN task made the mean and the median NaN.
    import mamlbook.compare as compare_module
    real = compare_module.evaluate

    def one_task_blows_up(algo, problem, test):
        values = real(algo, problem, test)
        values[0] = float("nan")
        return values
    monkeypatch.setattr(compare_module, "evaluate", one_task_blows_up)
    row = compare_module.compare(compare_module.sinusoid_problem(num_test_tasks=5), ["fomaml"], budget_s=0.2,
                                 progress=False)[0]
    assert row.diverged == 1 and row.mean == float("inf") and row.theta_finite
    assert math.isfinite(row.median)                      # 1 of 5 at +∞: the median is still a number
    assert "∞: diverged on 1 of 5 tasks" in compare_module.format_table([row])
