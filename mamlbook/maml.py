"""Functional MAML (Finn, Abbeel & Levine, ICML 2017) for any ``nn.Module``.

The parameters θ live in a name → tensor dict and the model is run with
``torch.func.functional_call``, so the same code adapts an MLP, a CNN or an LSTM:
that is what *model-agnostic* means.

Inner loop (per task i, ``inner_steps`` times):   θ'_i = θ − α ∇_θ L_support_i(θ)
Outer loss (what the meta-optimizer minimises):  (1/T) Σ_i L_query_i(θ'_i)

Second-order MAML differentiates through the inner update, which needs
``torch.autograd.grad(..., create_graph=True)``; first-order MAML (``first_order=True``)
treats the inner gradient as a constant, dropping the Hessian term.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, vmap

Params = dict[str, torch.Tensor]
LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def _check_inner(inner_lr: float, inner_steps: int) -> None:
    if not inner_lr > 0:
        raise ValueError(f"inner_lr (α) must be positive, got {inner_lr}")
    if inner_steps < 0:
        raise ValueError(f"inner_steps must be ≥ 0, got {inner_steps}")


def _grads(loss: torch.Tensor, params: Params, create_graph: bool) -> list[torch.Tensor]:
    """∇ loss w.r.t. every tensor in ``params``; a parameter the loss never touches gets 0."""
    grads = torch.autograd.grad(loss, list(params.values()), create_graph=create_graph,
                                allow_unused=True)
    return [torch.zeros_like(p) if g is None else g for p, g in zip(params.values(), grads)]


def sgd_step(params: Params, grads: list[torch.Tensor], inner_lr: float) -> Params:
    """One inner SGD update θ' = θ − α·g, applied to every entry of the dict."""
    return {name: p - inner_lr * g for (name, p), g in zip(params.items(), grads)}


def adapt(model: nn.Module, params: Params, x_support: torch.Tensor, y_support: torch.Tensor, *,
          inner_lr: float, inner_steps: int = 1, loss_fn: LossFn = F.mse_loss,
          first_order: bool = False) -> Params:
    """Adapt θ to one task with ``inner_steps`` SGD steps on its support set (the inner loop).

    Args:
        model: any module; only its structure is used, the weights come from ``params``.
        params: θ as a name → tensor dict (e.g. ``dict(model.named_parameters())``).
        x_support, y_support: the task's K support examples, (K, ...) each.
        inner_lr: α, the inner-loop step size (0.01 for the paper's sinusoids).
        inner_steps: number of inner gradient steps (1 in the paper's sinusoid training).
        loss_fn: loss(prediction, target) → scalar, averaged over the support set.
        first_order: if True, the inner gradients are constants (first-order MAML).
    Returns:
        θ'_i as a new dict. With ``first_order=False`` it stays differentiable w.r.t. θ.
    """
    _check_inner(inner_lr, inner_steps)
    for _ in range(inner_steps):
        loss = loss_fn(functional_call(model, params, (x_support,)), y_support)
        params = sgd_step(params, _grads(loss, params, create_graph=not first_order), inner_lr)
    return params


def _has_batchnorm(model: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


def resolve_batched(model: nn.Module, batched: bool | str) -> bool:
    """Choose the batched (vmap) or looped path; ``"auto"`` batches unless the model has BatchNorm.

    BatchNorm is kept on the per-task loop: the second-order meta-gradient through
    ``nn.BatchNorm2d`` under ``vmap`` is wrong in torch 2.14 (see the meta-gradient chapter).
    """
    if batched == "auto":
        return not _has_batchnorm(model)
    if not isinstance(batched, bool):
        raise ValueError(f"batched must be True, False or 'auto', got {batched!r}")
    return batched


def batched_adapt(model: nn.Module, params: Params, x_support: torch.Tensor,
                  y_support: torch.Tensor, *, inner_lr: float, inner_steps: int = 1,
                  loss_fn: LossFn = F.mse_loss, first_order: bool = False) -> Params:
    """:func:`adapt` for T tasks at once; returns per-task parameters, each (T, *shape).

    θ is expanded to one copy per task (no memory is copied); the forward pass runs all
    tasks together under ``torch.func.vmap``; and since task i's loss depends only on copy
    i, the gradient of the *summed* support loss w.r.t. the copies is each task's own
    gradient. ``x_support``/``y_support`` are (T, K, ...).
    """
    _check_inner(inner_lr, inner_steps)
    num_tasks = x_support.shape[0]
    task_params = {k: v.unsqueeze(0).expand(num_tasks, *v.shape) for k, v in params.items()}
    for _ in range(inner_steps):
        losses = batched_losses(model, task_params, x_support, y_support, loss_fn)  # (T,)
        grads = _grads(losses.sum(), task_params, create_graph=not first_order)
        task_params = sgd_step(task_params, grads, inner_lr)
    return task_params


def batched_losses(model: nn.Module, task_params: Params, x: torch.Tensor, y: torch.Tensor,
                   loss_fn: LossFn = F.mse_loss) -> torch.Tensor:
    """Per-task losses (T,) of per-task parameters (T, *shape) on per-task data (T, N, ...)."""
    def one_task(p, xi, yi):
        return loss_fn(functional_call(model, p, (xi,)), yi)
    return vmap(one_task)(task_params, x, y)


def meta_loss(model: nn.Module, params: Params, x_support: torch.Tensor, y_support: torch.Tensor,
              x_query: torch.Tensor, y_query: torch.Tensor, *, inner_lr: float,
              inner_steps: int = 1, loss_fn: LossFn = F.mse_loss, first_order: bool = False,
              batched: bool | str = "auto") -> torch.Tensor:
    """The MAML outer loss (1/T) Σ_i L_query_i(θ'_i) over a meta-batch of T tasks.

    Tensors are (T, K, ...) for support and (T, Q, ...) for query. Calling ``.backward()``
    on the result gives the meta-gradient (second-order unless ``first_order=True``).

    Args:
        batched: True runs all tasks at once with vmap, False loops over tasks (one
            graph per task), "auto" picks (see :func:`resolve_batched`). Both give the
            same numbers; the tests check it in float64.
    """
    if resolve_batched(model, batched):
        task_params = batched_adapt(model, params, x_support, y_support, inner_lr=inner_lr,
                                    inner_steps=inner_steps, loss_fn=loss_fn,
                                    first_order=first_order)
        return batched_losses(model, task_params, x_query, y_query, loss_fn).mean()
    total = 0.0
    for i in range(x_support.shape[0]):
        adapted = adapt(model, params, x_support[i], y_support[i], inner_lr=inner_lr,
                        inner_steps=inner_steps, loss_fn=loss_fn, first_order=first_order)
        total = total + loss_fn(functional_call(model, adapted, (x_query[i],)), y_query[i])
    return total / x_support.shape[0]
