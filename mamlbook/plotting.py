"""The book's figures: sinusoid tasks, fits before/after adaptation, learning curves,
MSE against gradient steps with 95% confidence bands, and a small results table.

Every chapter's figures.

Every function draws on an ``Axes`` (pass ``ax=`` to compose figures, or let it make a new
one) and returns what it drew on; none calls ``plt.show``, so notebooks decide when to
display and tests can inspect the artists.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
import torch
from matplotlib import ticker
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from torch import nn
from torch.func import functional_call

from .evaluate import EvalResult
from .maml import adapt
from .tasks import INPUT_RANGE, SinusoidBatch, sinusoid
from .train import History

__all__ = ["METHOD_COLORS", "TRUTH_COLOR", "predict", "plot_tasks", "plot_model", "adapted_params",
           "plot_adaptation", "plot_learning_curve", "plot_adaptation_curves", "plot_adaptation_curves_by_k",
           "format_ci", "markdown_table"]

# Colours as in the paper's figures (MAML green, pretrained blue, oracle red) where the
# method's name starts with one of these words; other methods take the default cycle.
METHOD_COLORS = {"maml": "tab:green", "pretrained": "tab:blue", "oracle": "tab:red"}
TRUTH_COLOR = "tab:red"


def _axes(ax: Axes | None) -> Axes:
    return plt.subplots(figsize=(6, 4))[1] if ax is None else ax


def _axes_and_grid(ax: Axes | None, x_range, num_points: int) -> tuple[Axes, torch.Tensor]:
    return _axes(ax), torch.linspace(x_range[0], x_range[1], num_points).unsqueeze(-1)   # x: (N, 1)


def _log_y(ax: Axes) -> None:
    """Log-scaled y axis labelled with plain numbers (0.5, 2, 3) rather than 2×10⁰."""
    ax.set_yscale("log")
    ax.yaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:g}"))
    ax.yaxis.set_minor_formatter(ticker.LogFormatter(labelOnlyBase=False, minor_thresholds=(2, 0.5)))


def _method_colors(names) -> list:
    """One distinct colour per name: the paper's colour where it is still free, else the next unused."""
    palette = [f"tab:{c}" for c in ("green", "blue", "red", "orange", "purple", "brown", "pink",
                                     "gray", "olive", "cyan")]
    colors = []
    for name in names:
        color = next((c for prefix, c in METHOD_COLORS.items() if name.lower().startswith(prefix)), None)
        if color is None or color in colors:
            color = next((c for c in palette if c not in colors and c not in METHOD_COLORS.values()),
                         next((c for c in palette if c not in colors), "black"))
        colors.append(color)
    return colors


@torch.no_grad()
def predict(model: nn.Module, x: torch.Tensor,
            params: Mapping[str, torch.Tensor] | None = None) -> torch.Tensor:
    """The model's output at ``x`` (N, 1), with its own weights or with ``params`` (e.g. adapted θ')."""
    x = x.to(next(model.parameters()).dtype)
    if params is None:
        return model(x)
    return functional_call(model, {k: v.detach() for k, v in params.items()}, (x,))


def plot_tasks(batch: SinusoidBatch, *, num: int | None = 5, ax: Axes | None = None,
               show_support: bool = True, x_range=INPUT_RANGE, num_points: int = 200,
               linestyle: str = "-", alpha: float = 0.9) -> Axes:
    """Draw the true curves of the first ``num`` tasks of ``batch``, each with its support points.

    One line per task (in order) and, with ``show_support``, one scatter of its K support points
    in the same colour.
    """
    ax, x = _axes_and_grid(ax, x_range, num_points)
    n = batch.num_tasks if num is None else min(num, batch.num_tasks)
    for i in range(n):
        y = sinusoid(x, batch.amplitude[i], batch.phase[i])
        (line,) = ax.plot(x[:, 0], y[:, 0], linestyle=linestyle, alpha=alpha,
                          label=f"A={batch.amplitude[i]:.2f}, φ={batch.phase[i]:.2f}")
        if show_support:
            ax.scatter(batch.x_support[i, :, 0], batch.y_support[i, :, 0], color=line.get_color(),
                       marker="^", s=30, zorder=3)
    ax.set(xlabel="x", ylabel="y")
    return ax


def plot_model(model: nn.Module, *, params: Mapping[str, torch.Tensor] | None = None,
               ax: Axes | None = None, x_range=INPUT_RANGE, num_points: int = 200,
               label: str = "model", **line_kw) -> Axes:
    """Draw one model's prediction over the input range (one line), e.g. on top of :func:`plot_tasks`."""
    ax, x = _axes_and_grid(ax, x_range, num_points)
    line_kw = {"color": "black", "linewidth": 2.5, **line_kw}
    ax.plot(x[:, 0], predict(model, x, params)[:, 0].float(), label=label, **line_kw)
    return ax


def adapted_params(model: nn.Module, x_support: torch.Tensor, y_support: torch.Tensor, *,
                   inner_lr: float, steps: Sequence[int] = (0, 1, 10),
                   params: Mapping[str, torch.Tensor] | None = None) -> dict[int, dict]:
    """θ after each number of plain SGD steps in ``steps`` on one task's support set (no meta-graph)."""
    theta = {k: v.detach() for k, v in (params or dict(model.named_parameters())).items()}
    dtype = next(iter(theta.values())).dtype
    x_support, y_support = x_support.to(dtype), y_support.to(dtype)
    out, done = {}, 0
    for target in sorted(set(steps)):
        if target > done:
            with torch.enable_grad():
                theta = {k: v.requires_grad_() for k, v in theta.items()}
                theta = adapt(model, theta, x_support, y_support, inner_lr=inner_lr,
                              inner_steps=target - done, first_order=True)
            theta = {k: v.detach() for k, v in theta.items()}
            done = target
        out[target] = theta
    return out


def plot_adaptation(model: nn.Module, batch: SinusoidBatch, i: int = 0, *, inner_lr: float,
                    steps: Sequence[int] = (0, 1, 10),
                    params: Mapping[str, torch.Tensor] | None = None, ax: Axes | None = None,
                    color: str = "tab:green", x_range=INPUT_RANGE, num_points: int = 200,
                    title: str | None = None) -> Axes:
    """Task ``i`` of ``batch``: the truth, its K support points, and the model after each step count.

    Draws, in order: the ground truth (red), then one dotted line per entry of ``steps``
    (lighter = fewer steps), plus the support points ("used for grad"), as in the paper's Figure 2.
    """
    ax, x = _axes_and_grid(ax, x_range, num_points)
    xs, ys, _, _ = batch.task(i)
    ax.plot(x[:, 0], sinusoid(x, batch.amplitude[i], batch.phase[i])[:, 0], color=TRUTH_COLOR,
            linewidth=2, label="ground truth")
    thetas = adapted_params(model, xs, ys, inner_lr=inner_lr, steps=steps, params=params)  # keys sorted
    for j, s in enumerate(thetas):
        shade = 0.35 + 0.65 * (j + 1) / len(thetas)
        label = "pre-update" if s == 0 else f"{s} grad step{'s' if s > 1 else ''}"
        ax.plot(x[:, 0], predict(model, x, thetas[s])[:, 0].float(), linestyle=":", linewidth=2,
                color=color, alpha=shade, label=label)
    ax.scatter(xs[:, 0], ys[:, 0], marker="^", color="tab:purple", s=40, zorder=3, label="used for grad")
    if title:
        ax.set_title(title)
    return ax


def plot_learning_curve(histories: History | Mapping[str, History], *, window: int = 100,
                        ax: Axes | None = None, logy: bool = True,
                        ylabel: str = "training loss (query MSE)") -> Axes:
    """The training loss averaged over ``window`` iterations; one line per run (a dict gives labels)."""
    ax = _axes(ax)
    runs = {"": histories} if isinstance(histories, History) else dict(histories)
    for (name, hist), color in zip(runs.items(), _method_colors(runs)):
        its, vals = hist.smoothed(window)
        ax.plot(its, vals, label=name or None, color=color)
    if logy:
        _log_y(ax)
    ax.set(xlabel="iteration", ylabel=f"{ylabel}, mean of {window}")
    if len(runs) > 1 or "" not in runs:
        ax.legend()
    return ax


def plot_adaptation_curves(results: Mapping[str, EvalResult | tuple[float, float]], *,
                           ax: Axes | None = None, title: str | None = None,
                           band: bool = True, logy: bool = False) -> Axes:
    """MSE against number of gradient steps, one line per method, with a shaded 95% CI band.

    Args:
        results: method name → :class:`EvalResult`, or → (mean, ci95) for a method that does
            not adapt (the oracle), drawn as a flat line over the other methods' steps.
    """
    ax = _axes(ax)
    steps = next((r.steps for r in results.values() if isinstance(r, EvalResult)), list(range(11)))
    for (name, result), color in zip(results.items(), _method_colors(results)):
        flat = not isinstance(result, EvalResult)
        if flat:   # a constant, e.g. the oracle's (mean, ci95): drawn flat over the steps
            mean, ci = result
            xs, mean, ci = list(steps), [float(mean)] * len(steps), [float(ci)] * len(steps)
        else:
            xs, mean, ci = list(result.steps), list(result.mean), list(result.ci95)
        (line,) = ax.plot(xs, mean, marker=None if flat else "o", markersize=3, label=name,
                          color=color, linestyle=":" if flat else "-")
        if band:
            ax.fill_between(xs, [m - c for m, c in zip(mean, ci)], [m + c for m, c in zip(mean, ci)],
                            color=line.get_color(), alpha=0.2, linewidth=0)
    if logy:
        _log_y(ax)
    ax.set(xlabel="number of gradient steps", ylabel="mean squared error")
    if title:
        ax.set_title(title)
    ax.legend()
    return ax


def plot_adaptation_curves_by_k(results_by_k: Mapping[int, Mapping[str, EvalResult | tuple]], *,
                                sharey: bool = True, band: bool = True,
                                panel_size=(4.5, 3.6)) -> Figure:
    """One :func:`plot_adaptation_curves` panel per K, titled "K-shot regression, K=…"."""
    ks = list(results_by_k)
    fig, axes = plt.subplots(1, len(ks), figsize=(panel_size[0] * len(ks), panel_size[1]),
                             sharey=sharey, squeeze=False)
    for ax, k in zip(axes[0], ks):
        plot_adaptation_curves(results_by_k[k], ax=ax, title=f"K-shot regression, K={k}", band=band)
    fig.tight_layout()
    return fig


def format_ci(mean: float, ci95: float, digits: int = 2) -> str:
    """"mean ± ci" with ``digits`` decimals, as papers print it."""
    return f"{mean:.{digits}f} ± {ci95:.{digits}f}"


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A Markdown table (render it with ``IPython.display.Markdown``; it also reads well as text)."""
    if any(len(r) != len(header) for r in rows):
        raise ValueError(f"every row needs {len(header)} cells (one per header entry)")
    lines = ["| " + " | ".join(str(h) for h in header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)
