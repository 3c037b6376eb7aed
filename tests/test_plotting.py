"""The book's plotting helpers draw exactly the data they are given."""
import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from matplotlib.collections import PolyCollection  # noqa: E402

from mamlbook.evaluate import EvalResult  # noqa: E402
from mamlbook.models import SinusoidMLP  # noqa: E402
from mamlbook.plotting import (  # noqa: E402
    adapted_params,
    format_ci,
    markdown_table,
    plot_adaptation,
    plot_adaptation_curves,
    plot_adaptation_curves_by_k,
    plot_learning_curve,
    plot_model,
    plot_tasks,
)
from mamlbook.tasks import sample_sinusoid_tasks, sinusoid  # noqa: E402
from mamlbook.train import History  # noqa: E402


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def _result(mean, ci):
    return EvalResult(steps=list(range(len(mean))), mean=list(mean), ci95=list(ci), num_tasks=600)


def test_adaptation_curves_draw_one_line_per_method_with_its_means():
    maml = _result([3.0, 0.8, 0.5], [0.2, 0.1, 0.05])
    pre = _result([3.0, 2.9, 2.7], [0.3, 0.3, 0.3])
    ax = plot_adaptation_curves({"MAML": maml, "pretrained": pre})
    assert [line.get_label() for line in ax.lines] == ["MAML", "pretrained"]
    np.testing.assert_allclose(ax.lines[0].get_ydata(), maml.mean)
    np.testing.assert_allclose(ax.lines[1].get_ydata(), pre.mean)
    np.testing.assert_array_equal(ax.lines[0].get_xdata(), [0, 1, 2])


def test_adaptation_curves_shade_the_95_percent_interval():
    maml = _result([3.0, 0.8], [0.2, 0.1])
    ax = plot_adaptation_curves({"MAML": maml})
    bands = [c for c in ax.collections if isinstance(c, PolyCollection)]
    assert len(bands) == 1
    ys = bands[0].get_paths()[0].vertices[:, 1]
    assert ys.min() == pytest.approx(0.8 - 0.1) and ys.max() == pytest.approx(3.0 + 0.2)


def test_a_method_given_as_mean_and_ci_is_a_flat_line_over_the_steps():
    ax = plot_adaptation_curves({"MAML": _result([3.0, 0.8, 0.5], [0.1] * 3), "oracle": (0.05, 0.01)})
    oracle = ax.lines[1]
    np.testing.assert_array_equal(oracle.get_xdata(), [0, 1, 2])
    np.testing.assert_allclose(oracle.get_ydata(), [0.05, 0.05, 0.05])


def test_one_panel_per_k_in_the_given_order():
    res = {"MAML": _result([1.0, 0.5], [0.1, 0.1])}
    fig = plot_adaptation_curves_by_k({5: res, 10: res, 20: res})
    titles = [ax.get_title() for ax in fig.axes]
    assert titles == ["K-shot regression, K=5", "K-shot regression, K=10", "K-shot regression, K=20"]


def test_plot_tasks_draws_each_true_curve_and_its_support_points():
    batch = sample_sinusoid_tasks(4, 10, generator=torch.Generator().manual_seed(0))
    ax = plot_tasks(batch, num=3)
    assert len(ax.lines) == 3 and len(ax.collections) == 3
    x = ax.lines[1].get_xdata()
    np.testing.assert_allclose(ax.lines[1].get_ydata(),
                               sinusoid(torch.tensor(x), batch.amplitude[1], batch.phase[1]).numpy(),
                               rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(ax.collections[1].get_offsets(),
                               torch.cat([batch.x_support[1], batch.y_support[1]], dim=1).numpy())


def test_plot_model_draws_the_models_prediction():
    torch.manual_seed(0)
    model = SinusoidMLP()
    ax = plot_model(model, num_points=50)
    x = torch.tensor(ax.lines[0].get_xdata(), dtype=torch.float32).unsqueeze(-1)
    with torch.no_grad():
        expected = model(x)[:, 0].numpy()
    np.testing.assert_allclose(ax.lines[0].get_ydata(), expected, rtol=1e-6)


def test_adapted_params_after_zero_steps_are_the_initial_weights_and_one_step_is_sgd():
    torch.manual_seed(0)
    model = SinusoidMLP()
    batch = sample_sinusoid_tasks(1, 10, generator=torch.Generator().manual_seed(1))
    xs, ys, _, _ = batch.task(0)
    thetas = adapted_params(model, xs, ys, inner_lr=0.01, steps=(0, 1))
    for name, p in model.named_parameters():
        assert torch.equal(thetas[0][name], p.detach())
    loss = torch.nn.functional.mse_loss(model(xs), ys)
    grads = torch.autograd.grad(loss, list(model.parameters()))
    for (name, p), g in zip(model.named_parameters(), grads):
        torch.testing.assert_close(thetas[1][name], p.detach() - 0.01 * g)


def test_plot_adaptation_draws_truth_then_one_prediction_per_step_count():
    torch.manual_seed(0)
    model = SinusoidMLP()
    batch = sample_sinusoid_tasks(2, 5, generator=torch.Generator().manual_seed(2))
    ax = plot_adaptation(model, batch, 1, inner_lr=0.01, steps=(0, 1, 10))
    labels = [line.get_label() for line in ax.lines]
    assert labels == ["ground truth", "pre-update", "1 grad step", "10 grad steps"]
    with torch.no_grad():
        before = model(torch.tensor(ax.lines[1].get_xdata(), dtype=torch.float32)[:, None])[:, 0]
    np.testing.assert_allclose(ax.lines[1].get_ydata(), before.numpy(), rtol=1e-6)
    np.testing.assert_allclose(ax.collections[0].get_offsets(),
                               torch.cat([batch.x_support[1], batch.y_support[1]], dim=1).numpy())


def test_learning_curve_plots_the_windowed_mean_of_the_loss():
    hist = History(iteration=list(range(1, 7)), loss=[6.0, 4.0, 3.0, 1.0, 2.0, 0.0])
    ax = plot_learning_curve({"MAML": hist}, window=2, logy=False)
    np.testing.assert_array_equal(ax.lines[0].get_xdata(), [2, 4, 6])
    np.testing.assert_allclose(ax.lines[0].get_ydata(), [5.0, 2.0, 1.0])


def test_format_ci_and_markdown_table():
    assert format_ci(0.7712, 0.1149) == "0.77 ± 0.11"
    table = markdown_table(["K", "MSE"], [[5, "1.13 ± 0.18"]])
    assert table == "| K | MSE |\n|---|---|\n| 5 | 1.13 ± 0.18 |"


def test_markdown_table_rejects_a_row_of_the_wrong_length():
    with pytest.raises(ValueError, match="2 cells"):
        markdown_table(["K", "MSE"], [[5]])


def test_every_method_gets_its_own_colour_and_maml_is_green_as_in_the_paper():
    res = _result([1.0, 0.5], [0.1, 0.1])
    ax = plot_adaptation_curves({"MAML": res, "pretrained, step=0.01": res,
                                 "pretrained, step=0.02": res, "zero": (1.0, 0.1), "oracle": (0.1, 0.0)})
    colors = [line.get_color() for line in ax.lines]
    assert len(set(colors)) == 5
    assert colors[0] == "tab:green" and colors[1] == "tab:blue" and colors[4] == "tab:red"
