"""Meta-test evaluation: adapt to new tasks for 0..max_steps steps and report mean ± 95% CI.

The tested copy of chapter 2's (and chapter 6's) meta-test.

The protocol follows the official code (cbfinn/maml ``main.py``, ``test``): 600 new tasks,
each adapted with plain SGD at the training α, the query loss recorded after every step,
and the 95% confidence interval of the mean computed as 1.96·std/√n (NumPy's std, ddof=0).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from .maml import (
    LossFn,
    Params,
    batched_inner_loop,
    batched_losses,
    check_inner,
    expand_tasks,
    inner_loop,
    resolve_batched,
    sgd_step,
)

__all__ = ["NUM_TEST_TASKS", "EvalResult", "mean_ci95", "summarize", "adaptation_curve"]

NUM_TEST_TASKS = 600  # as in the official code's NUM_TEST_POINTS


@dataclass
class EvalResult:
    """Mean and 95% CI of the query loss (or accuracy) after each number of inner steps."""

    steps: list[int]
    mean: list[float]
    ci95: list[float]
    num_tasks: int
    median: list[float] | None = None   # robust to the rare task whose adaptation diverges

    def at(self, step: int) -> tuple[float, float]:
        """(mean, ci95) after ``step`` inner steps."""
        i = self.steps.index(step)
        return self.mean[i], self.ci95[i]

    def __str__(self) -> str:
        med = self.median or [float("nan")] * len(self.steps)
        rows = [f"{'steps':>5}  {'mean':>9}  {'± 95% CI':>9}  {'median':>9}"]
        rows += [f"{s:>5}  {m:>9.4f}  {c:>9.4f}  {d:>9.4f}"
                 for s, m, c, d in zip(self.steps, self.mean, self.ci95, med)]
        return f"{self.num_tasks} tasks\n" + "\n".join(rows)


def mean_ci95(values: torch.Tensor) -> tuple[float, float]:
    """Mean and 1.96·std/√n of a 1-D tensor of per-task values (population std, as NumPy's default)."""
    values = values.detach().double().flatten()
    n = values.numel()
    if n == 0:
        raise ValueError("mean_ci95 needs at least one value")
    std = values.std(unbiased=False).item() if n > 1 else 0.0
    return values.mean().item(), 1.96 * std / math.sqrt(n)


def summarize(per_task: torch.Tensor) -> EvalResult:
    """Turn a (tasks, steps+1) table of per-task values into an :class:`EvalResult`."""
    stats = [mean_ci95(per_task[:, s]) for s in range(per_task.shape[1])]
    median = per_task.detach().double().median(dim=0).values.tolist()
    return EvalResult(steps=list(range(per_task.shape[1])), mean=[m for m, _ in stats],
                      ci95=[c for _, c in stats], num_tasks=per_task.shape[0], median=median)


def adaptation_curve(model: nn.Module, params: Params, x_support: torch.Tensor,
                     y_support: torch.Tensor, x_query: torch.Tensor, y_query: torch.Tensor, *,
                     inner_lr: float, max_steps: int = 10, loss_fn: LossFn = F.mse_loss,
                     metric_fn: LossFn | None = None, batched: bool | str = "auto",
                     adapt_bn: bool = True) -> torch.Tensor:
    """Per-task query metric after 0, 1, …, ``max_steps`` first-order SGD steps; shape (T, max_steps+1).

    Meta-test adaptation needs no second-order graph, so gradients are taken without
    ``create_graph``. ``metric_fn`` (default: ``loss_fn``) is what gets recorded, e.g. accuracy.
    ``adapt_bn=False`` leaves the BatchNorm parameters at θ (:func:`mamlbook.maml.inner_loop`).
    """
    check_inner(inner_lr, max_steps)
    metric_fn = metric_fn or loss_fn
    params = {k: v.detach() for k, v in params.items()}
    num_tasks = x_support.shape[0]
    use_vmap = resolve_batched(model, batched)
    inner = batched_inner_loop if use_vmap else inner_loop

    def sgd(p, xs, ys):       # one first-order SGD step (BatchNorm held unless adapt_bn), as new leaves
        with torch.enable_grad():
            p = inner(model, p, xs, ys, inner_steps=1, loss_fn=loss_fn, first_order=True, adapt_bn=adapt_bn,
                      step=lambda q, g, j: sgd_step(q, g, inner_lr))
        return {k: v.detach().requires_grad_() for k, v in p.items()}

    def curve(p, query_metric, xs, ys) -> torch.Tensor:   # the two paths differ in how they score the query
        values = []
        for step in range(max_steps + 1):
            with torch.no_grad():
                values.append(query_metric(p))
            if step < max_steps:
                p = sgd(p, xs, ys)
        return torch.stack(values, dim=-1)
    if use_vmap:
        task_params = {k: v.clone().requires_grad_() for k, v in expand_tasks(params, num_tasks).items()}
        return curve(task_params, lambda p: batched_losses(model, p, x_query, y_query, metric_fn),
                     x_support, y_support)  # (T, max_steps+1)
    return torch.stack([curve({k: v.clone().requires_grad_() for k, v in params.items()},
                              lambda p: metric_fn(functional_call(model, p, (x_query[i],)), y_query[i]),
                              x_support[i], y_support[i])
                        for i in range(num_tasks)])  # (T, max_steps+1)
