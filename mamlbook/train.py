"""Meta-training (MAML's outer loop) and the joint-training baseline, with progress bars."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from .functional import make_meta_grad
from .maml import LossFn, meta_backward

# A task source returns one meta-batch: (x_support, y_support, x_query, y_query), (T, K|Q, ...) each.
BatchFn = Callable[[], tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]]


@dataclass
class History:
    """What a training run recorded: the loss at every iteration and any periodic evaluations."""

    iteration: list[int] = field(default_factory=list)
    loss: list[float] = field(default_factory=list)
    eval_iteration: list[int] = field(default_factory=list)
    eval: list[object] = field(default_factory=list)
    wall_time_s: float = 0.0

    def smoothed(self, window: int = 100) -> tuple[list[int], list[float]]:
        """The loss averaged over consecutive windows, for plotting."""
        its, vals = [], []
        for start in range(0, len(self.loss), window):
            chunk = self.loss[start:start + window]
            its.append(self.iteration[start + len(chunk) - 1])
            vals.append(sum(chunk) / len(chunk))
        return its, vals


def make_meta_optimizer(model, meta_lr: float = 1e-3) -> torch.optim.Optimizer:
    """Adam with the paper's meta step size β = 1e-3 (fused kernels where available).

    ``model`` is an ``nn.Module`` (Adam on its parameters θ) or a list of tensors (θ plus any
    meta-learned extras, e.g. Meta-SGD's inner learning rates).
    """
    if not meta_lr > 0:
        raise ValueError(f"meta_lr (β) must be positive, got {meta_lr}")
    params = list(model.parameters()) if isinstance(model, nn.Module) else list(model)
    try:
        return torch.optim.Adam(params, lr=meta_lr, fused=True)
    except RuntimeError:  # fused Adam needs floating-point params on a supported device
        return torch.optim.Adam(params, lr=meta_lr)


def meta_train(model: nn.Module, sample_batch: BatchFn, *, iterations: int, inner_lr: float,
               inner_steps: int = 1, meta_lr: float = 1e-3, loss_fn: LossFn = F.mse_loss,
               first_order: bool = False, batched: bool | str = "auto",
               optimizer: torch.optim.Optimizer | None = None, start_iteration: int = 0,
               eval_fn: Callable[[], object] | None = None, eval_every: int = 0,
               on_iteration: Callable[[int], None] | None = None, compile: bool = False,
               progress: bool = True, desc: str = "meta-train") -> History:
    """Meta-train ``model`` in place with MAML; returns a :class:`History`.

    Each iteration samples a meta-batch, computes the outer loss (1/T) Σ L_query(θ'_i)
    and takes one Adam step on θ (meta_lr = 1e-3, as in the paper and its code).

    Args:
        sample_batch: returns (x_support, y_support, x_query, y_query) for T tasks.
        iterations: the iteration to stop at (70,000 for the paper's sinusoids).
        optimizer: pass one to resume; by default Adam(model.parameters(), lr=meta_lr).
        start_iteration: where a resumed run picks up.
        eval_fn / eval_every: called every ``eval_every`` iterations, result kept in history.
        on_iteration: called with the finished iteration count (e.g. to save checkpoints).
        compile: compute the meta-gradient with :func:`mamlbook.functional.make_meta_grad`
            under ``torch.compile`` (same numbers; a one-off compile, then much faster steps).
    """
    if iterations < start_iteration:
        raise ValueError(f"iterations ({iterations}) is before start_iteration ({start_iteration})")
    if optimizer is None:
        optimizer = make_meta_optimizer(model, meta_lr)
    params = dict(model.named_parameters())
    meta_grad = (make_meta_grad(model, inner_lr=inner_lr, inner_steps=inner_steps, loss_fn=loss_fn,
                                first_order=first_order, compile=True) if compile else None)
    history = History()
    start = time.perf_counter()
    bar = tqdm(range(start_iteration, iterations), desc=desc, disable=not progress,
               initial=start_iteration, total=iterations, mininterval=0.5)
    for it in bar:
        xs, ys, xq, yq = sample_batch()
        optimizer.zero_grad(set_to_none=True)
        if meta_grad is None:
            # One backward per task on the looped path: only one task's graph is held at a time.
            loss = meta_backward(model, params, xs, ys, xq, yq, inner_lr=inner_lr,
                                 inner_steps=inner_steps, loss_fn=loss_fn, first_order=first_order,
                                 batched=batched)
        else:
            grads, loss = meta_grad({k: v.detach() for k, v in params.items()}, xs, ys, xq, yq)
            for name, p in params.items():
                p.grad = grads[name]
        optimizer.step()
        history.iteration.append(it + 1)
        history.loss.append(loss.item())
        if (it + 1) % 200 == 0:
            bar.set_postfix(loss=f"{sum(history.loss[-200:]) / 200:.3f}", refresh=False)
        if eval_fn is not None and eval_every and (it + 1) % eval_every == 0:
            history.eval_iteration.append(it + 1)
            history.eval.append(eval_fn())
        if on_iteration is not None:
            on_iteration(it + 1)
    history.wall_time_s = time.perf_counter() - start
    return history


def pretrain(model: nn.Module, sample_batch: BatchFn, *, iterations: int, lr: float = 1e-3,
             loss_fn: LossFn = F.mse_loss, progress: bool = True,
             desc: str = "pretrain") -> History:
    """The *pretrained* baseline: one network trained on all tasks jointly, no inner loop.

    Each iteration fits the support points of a fresh meta-batch with Adam (as the
    official code's ``pretrain_op`` does). It learns the best single answer for all tasks
    at once: for the paper's sinusoids (phase in [0, π]) that is the mean task
    E[A·sin(x − φ)] = −(2·E[A]/π)·cos x ≈ −1.62·cos x (chapter 1 derives it).
    """
    optimizer = make_meta_optimizer(model, lr)
    history = History()
    start = time.perf_counter()
    for it in tqdm(range(iterations), desc=desc, disable=not progress, mininterval=0.5):
        xs, ys, _, _ = sample_batch()
        loss = loss_fn(model(xs.flatten(0, 1)), ys.flatten(0, 1))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        history.iteration.append(it + 1)
        history.loss.append(loss.item())
    history.wall_time_s = time.perf_counter() - start
    return history
