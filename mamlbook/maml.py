"""Functional MAML (Finn, Abbeel & Levine, ICML 2017) for any ``nn.Module``.

The tested copy of chapters 2–4: the inner loop, the meta-gradient, batching tasks.

The parameters θ live in a name → tensor dict and the model is run with
``torch.func.functional_call``, so the same code adapts an MLP, a CNN or an LSTM:
that is what *model-agnostic* means.

Inner loop (per task i, ``inner_steps`` times):   θ'_i = θ − α ∇_θ L_support_i(θ)
Outer loss (what the meta-optimizer minimises):  (1/T) Σ_i L_query_i(θ'_i)

Second-order MAML differentiates through the inner update, which needs
``torch.autograd.grad(..., create_graph=True)``; first-order MAML (``first_order=True``)
treats the inner gradient as a constant, dropping the Hessian term. ``adapt_bn=False`` holds the
BatchNorm parameters at θ in the inner loop, as the official code does (the outer step still learns them).
"""
from __future__ import annotations

from functools import partial
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, vmap

from .conv import batchnorm_params, has_batchnorm
from .rnn import has_rnn, inner_loop_rnn_context

__all__ = ["Params", "LossFn", "check_inner", "grads_of", "sgd_step", "adapt", "StepFn", "inner_loop",
           "expand_tasks", "batched_inner_loop", "resolve_batched", "batched_adapt", "batched_losses",
           "TaskLoss", "mean_task_loss", "backward_detached", "backward_per_task", "query_losses", "meta_loss",
           "task_query_loss", "meta_backward"]

Params = dict[str, torch.Tensor]
LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def check_inner(inner_lr: float, inner_steps: int) -> None:
    if not inner_lr > 0:
        raise ValueError(f"inner_lr (α) must be positive, got {inner_lr}")
    if inner_steps < 0:
        raise ValueError(f"inner_steps must be ≥ 0, got {inner_steps}")


def grads_of(loss: torch.Tensor, params: Params, create_graph: bool) -> list[torch.Tensor]:
    """∇ loss w.r.t. every tensor in ``params``; a parameter the loss never touches gets 0."""
    grads = torch.autograd.grad(loss, list(params.values()), create_graph=create_graph,
                                allow_unused=True)
    return [torch.zeros_like(p) if g is None else g for p, g in zip(params.values(), grads)]


def sgd_step(params: Params, grads: list[torch.Tensor], inner_lr: float) -> Params:
    """One inner SGD update θ' = θ − α·g, applied to every entry of the dict."""
    return {name: p - inner_lr * g for (name, p), g in zip(params.items(), grads)}


def adapt(model: nn.Module, params: Params, x_support: torch.Tensor, y_support: torch.Tensor, *,
          inner_lr: float, inner_steps: int = 1, loss_fn: LossFn = F.mse_loss,
          first_order: bool = False, adapt_bn: bool = True) -> Params:
    """Adapt θ to one task with ``inner_steps`` SGD steps on its support set (the inner loop).

    Args:
        model: any module; only its structure is used, the weights come from ``params``.
        params: θ as a name → tensor dict (e.g. ``dict(model.named_parameters())``).
        x_support, y_support: the task's K support examples, (K, ...) each.
        inner_lr: α, the inner-loop step size (0.01 for the paper's sinusoids).
        inner_steps: number of inner gradient steps (1 in the paper's sinusoid training).
        loss_fn: loss(prediction, target) → scalar, averaged over the support set.
        first_order: if True, the inner gradients are constants (first-order MAML).
        adapt_bn: if False, BatchNorm parameters stay at θ (:func:`inner_loop`).
    Returns:
        θ'_i as a new dict. With ``first_order=False`` it stays differentiable w.r.t. θ.
    """
    check_inner(inner_lr, inner_steps)
    return inner_loop(model, params, x_support, y_support, inner_steps=inner_steps, loss_fn=loss_fn,
                      first_order=first_order, adapt_bn=adapt_bn, step=lambda p, g, j: sgd_step(p, g, inner_lr))


StepFn = Callable[[Params, list, int], Params]   # (adapted params, their gradients, step j) → next params


def inner_loop(model: nn.Module, params: Params, x_support: torch.Tensor, y_support: torch.Tensor, *,
               inner_steps: int, step: StepFn, loss_fn: LossFn = F.mse_loss, first_order: bool = False,
               frozen: Params | None = None, adapt_bn: bool = True) -> Params:
    """The inner loop that MAML, Meta-SGD and ANIL share: what differs is ``step`` and ``frozen``.

    ``inner_steps`` times: the support loss of the model run with ``{**frozen, **params}``, its
    gradient w.r.t. ``params`` only (kept differentiable unless ``first_order``), then
    ``params = step(params, grads, j)``. ``frozen`` entries (e.g. ANIL's body) are used, never
    updated; ``adapt_bn=False`` makes the model's BatchNorm entries of ``params`` frozen too (the official
    code's inner loop). Returns the adapted ``params``, in their order.

    An LSTM/GRU on CUDA: cuDNN's RNN backward has no derivative, so second-order MAML runs the
    loop on PyTorch's native RNN kernels (:mod:`mamlbook.rnn`); a no-op everywhere else.
    """
    theta, (params, frozen) = params, _hold_bn(model, params, frozen, adapt_bn)
    with inner_loop_rnn_context(model, x_support.device, first_order):
        for j in range(inner_steps):
            loss = loss_fn(functional_call(model, {**frozen, **params}, (x_support,)), y_support)
            params = step(params, grads_of(loss, params, create_graph=not first_order), j)
    return params if adapt_bn else {**theta, **params}   # held entries back in θ's order


def _hold_bn(model: nn.Module, params: Params, frozen: Params | None, adapt_bn: bool) -> tuple[Params, Params]:
    """(entries to adapt, frozen entries): ``adapt_bn=False`` moves BatchNorm's from the first to the second."""
    if adapt_bn:                                   # the default: nothing to move, no copies on the hot path
        return params, frozen or {}
    held = batchnorm_params(model)
    return ({k: v for k, v in params.items() if k not in held},
            {**(frozen or {}), **{k: v for k, v in params.items() if k in held}})


def expand_tasks(params: Params, num_tasks: int) -> Params:
    """One copy of θ per task, (T, *shape) each, as views: no memory is copied."""
    return {k: v.unsqueeze(0).expand(num_tasks, *v.shape) for k, v in params.items()}


def batched_inner_loop(model: nn.Module, params: Params, x_support: torch.Tensor, y_support: torch.Tensor, *,
                       inner_steps: int, step: StepFn, loss_fn: LossFn = F.mse_loss,
                       first_order: bool = False, frozen: Params | None = None, adapt_bn: bool = True) -> Params:
    """:func:`inner_loop` for T tasks at once under ``vmap``: ``params``/``frozen`` are (T, *shape).

    Task i's loss depends only on copy i, so the gradient of the *summed* support losses w.r.t.
    the copies is every task's own gradient, in one backward pass.
    """
    theta, (params, frozen) = params, _hold_bn(model, params, frozen, adapt_bn)
    for j in range(inner_steps):
        losses = batched_losses(model, {**frozen, **params}, x_support, y_support, loss_fn)  # (T,)
        params = step(params, grads_of(losses.sum(), params, create_graph=not first_order), j)
    return params if adapt_bn else {**theta, **params}   # held entries back in θ's order


def resolve_batched(model: nn.Module, batched: bool | str,
                    device: torch.device | str | None = None) -> bool:
    """Choose the batched (vmap) or looped path over the tasks of a meta-batch.

    ``"auto"`` loops over tasks for models with ``nn.LSTM``/``nn.GRU``/``nn.RNN`` layers (vmap
    cannot batch them), batches on a GPU, and on a CPU batches models without BatchNorm (MLPs: 5–7×
    faster than the loop) but loops over conv + BatchNorm models (why ``vmap`` is slower there:
    ``docs/benchmarks.md``). Both paths give the same numbers; the tests check it in float64.

    Args:
        batched: True (vmap), False (loop) or "auto".
        device: where the computation runs; by default, the device of the model's parameters.
    """
    if batched == "auto":
        if has_rnn(model):  # vmap has no batching rule for nn.LSTM/GRU/RNN: loop over tasks
            return False
        if device is None:
            device = next((p.device for p in model.parameters()), "cpu")
        return torch.device(device).type != "cpu" or not has_batchnorm(model)
    if not isinstance(batched, bool):
        raise ValueError(f"batched must be True, False or 'auto', got {batched!r}")
    return batched


def batched_adapt(model: nn.Module, params: Params, x_support: torch.Tensor,
                  y_support: torch.Tensor, *, inner_lr: float, inner_steps: int = 1,
                  loss_fn: LossFn = F.mse_loss, first_order: bool = False, adapt_bn: bool = True) -> Params:
    """:func:`adapt` for T tasks at once; returns per-task parameters, each (T, *shape).

    :func:`batched_inner_loop` on θ's per-task copies (:func:`expand_tasks`, no memory is copied);
    ``x_support``/``y_support`` are (T, K, ...).
    """
    check_inner(inner_lr, inner_steps)
    return batched_inner_loop(model, expand_tasks(params, x_support.shape[0]), x_support, y_support,
                              inner_steps=inner_steps, loss_fn=loss_fn, first_order=first_order,
                              adapt_bn=adapt_bn, step=lambda p, g, j: sgd_step(p, g, inner_lr))


def batched_losses(model: nn.Module, task_params: Params, x: torch.Tensor, y: torch.Tensor,
                   loss_fn: LossFn = F.mse_loss) -> torch.Tensor:
    """Per-task losses (T,) of per-task parameters (T, *shape) on per-task data (T, N, ...)."""
    def one_task(p, xi, yi):
        return loss_fn(functional_call(model, p, (xi,)), yi)
    return vmap(one_task)(task_params, x, y)


TaskLoss = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def mean_task_loss(task_loss: TaskLoss, x_support: torch.Tensor, y_support: torch.Tensor,
                   x_query: torch.Tensor, y_query: torch.Tensor, *,
                   batched_loss: TaskLoss | None = None) -> torch.Tensor:
    """(1/T) Σ_i task_loss(task i): every learner's outer loss, looped or (``batched_loss``) vmapped.

    ``task_loss`` maps one task's (K, ...) support and (Q, ...) query tensors to its query loss
    after adaptation; ``batched_loss`` maps the whole (T, ...) meta-batch to the (T,) losses.
    """
    if batched_loss is not None:
        return batched_loss(x_support, y_support, x_query, y_query).mean()
    total = 0.0
    for i in range(x_support.shape[0]):
        total = total + task_loss(x_support[i], y_support[i], x_query[i], y_query[i])
    return total / x_support.shape[0]


def backward_detached(loss: torch.Tensor) -> torch.Tensor:
    """``loss.backward()``, then ``loss`` detached: what a learner's outer step reports."""
    loss.backward()
    return loss.detach()


def backward_per_task(task_loss: TaskLoss, x_support: torch.Tensor, y_support: torch.Tensor,
                      x_query: torch.Tensor, y_query: torch.Tensor, *,
                      batched_loss: TaskLoss | None = None) -> torch.Tensor:
    """Accumulate the gradient of :func:`mean_task_loss` into the leaves' ``.grad``; return it detached.

    On the looped path each task's graph is differentiated and freed before the next task's is
    built, so peak memory is one task's graph instead of the meta-batch's (W2 on a CPU: 65 MB instead of
    496 MB, docs/benchmarks.md); the batched path builds one graph for all tasks.
    """
    if batched_loss is not None:
        return backward_detached(batched_loss(x_support, y_support, x_query, y_query).mean())
    num_tasks, total = x_support.shape[0], None
    for i in range(num_tasks):
        loss = task_loss(x_support[i], y_support[i], x_query[i], y_query[i]) / num_tasks
        loss.backward()   # frees task i's graph now
        total = loss.detach() if total is None else total + loss.detach()
    return total


def query_losses(model: nn.Module, adapt_one: Callable, adapt_batched: Callable, loss_fn: LossFn,
                 batched: bool | str, device) -> tuple[TaskLoss, TaskLoss | None]:
    """(one task's query loss after ``adapt_one(x_s, y_s)``, the meta-batch's (T,) losses after
    ``adapt_batched(x_s, y_s)`` or None where ``batched`` resolves to the loop): a learner's outer loss."""
    def task_loss(xs, ys, xq, yq):
        return loss_fn(functional_call(model, adapt_one(xs, ys), (xq,)), yq)

    def batched_loss(xs, ys, xq, yq):
        return batched_losses(model, adapt_batched(xs, ys), xq, yq, loss_fn)
    return task_loss, (batched_loss if resolve_batched(model, batched, device) else None)


def _maml_losses(model, params, batched, device, **kw):
    """:func:`query_losses` for MAML's outer loss; ``kw``: :func:`adapt`'s options."""
    return query_losses(model, partial(adapt, model, params, **kw), partial(batched_adapt, model, params, **kw),
                        kw["loss_fn"], batched, device)


def meta_loss(model: nn.Module, params: Params, x_support: torch.Tensor, y_support: torch.Tensor,
              x_query: torch.Tensor, y_query: torch.Tensor, *, inner_lr: float,
              inner_steps: int = 1, loss_fn: LossFn = F.mse_loss, first_order: bool = False,
              batched: bool | str = "auto", adapt_bn: bool = True) -> torch.Tensor:
    """The MAML outer loss (1/T) Σ_i L_query_i(θ'_i) over a meta-batch of T tasks.

    Tensors are (T, K, ...) for support and (T, Q, ...) for query. Calling ``.backward()``
    on the result gives the meta-gradient (second-order unless ``first_order=True``).

    Args:
        batched: True runs all tasks at once with vmap, False loops over tasks (one
            graph per task), "auto" picks (see :func:`resolve_batched`: both give the same numbers).
        adapt_bn: if False, the inner loop holds BatchNorm parameters at θ (:func:`inner_loop`).
    """
    task_loss, batched_loss = _maml_losses(model, params, batched, x_support.device, inner_lr=inner_lr,
                                           inner_steps=inner_steps, loss_fn=loss_fn, first_order=first_order,
                                           adapt_bn=adapt_bn)
    return mean_task_loss(task_loss, x_support, y_support, x_query, y_query, batched_loss=batched_loss)


def task_query_loss(model: nn.Module, params: Params, x_support: torch.Tensor,
                    y_support: torch.Tensor, x_query: torch.Tensor, y_query: torch.Tensor, *,
                    inner_lr: float, inner_steps: int = 1, loss_fn: LossFn = F.mse_loss,
                    first_order: bool = False, adapt_bn: bool = True) -> torch.Tensor:
    """One task's L_query(θ'), θ' adapted on its support set: the summand of :func:`meta_loss`."""
    adapted = adapt(model, params, x_support, y_support, inner_lr=inner_lr,
                    inner_steps=inner_steps, loss_fn=loss_fn, first_order=first_order, adapt_bn=adapt_bn)
    return loss_fn(functional_call(model, adapted, (x_query,)), y_query)


def meta_backward(model: nn.Module, params: Params, x_support: torch.Tensor,
                  y_support: torch.Tensor, x_query: torch.Tensor, y_query: torch.Tensor, *,
                  inner_lr: float, inner_steps: int = 1, loss_fn: LossFn = F.mse_loss,
                  first_order: bool = False, batched: bool | str = "auto", adapt_bn: bool = True) -> torch.Tensor:
    """Accumulate the meta-gradient of :func:`meta_loss` into ``p.grad``; return the loss (detached).

    The same gradient as ``meta_loss(...).backward()``, with less memory on the looped path
    (:func:`backward_per_task`).
    """
    if not any(v.requires_grad for v in params.values()):
        raise ValueError("meta_backward needs parameters with requires_grad=True")
    task_loss, batched_loss = _maml_losses(model, params, batched, x_support.device, inner_lr=inner_lr,
                                           inner_steps=inner_steps, loss_fn=loss_fn, first_order=first_order,
                                           adapt_bn=adapt_bn)
    return backward_per_task(task_loss, x_support, y_support, x_query, y_query, batched_loss=batched_loss)
