"""Meta-SGD (Li, Zhou, Chen & Li, 2017): learn a learning rate for every parameter coordinate.

The tested copy of chapter 8's Meta-SGD.

MAML's inner step uses one scalar α for every parameter. Meta-SGD replaces it by a tensor α of
θ's shape, applied elementwise, and meta-learns it with θ:

    θ' = θ − α ⊙ ∇_θ L_support(θ)              (α: a dict of tensors shaped like θ)
    min_{θ, α}  (1/T) Σ_i L_query_i(θ'_i)

α is neither clipped nor kept positive: the paper lets the outer loop choose each rate's sign
and size, so α also learns the update *direction*. The paper adapts with one inner step; more are
allowed here (the same α at every step). With α filled with one value and held fixed, Meta-SGD is
MAML with that ``inner_lr`` (the tests check it in float64).

Same functional core as :mod:`mamlbook.maml`: θ and α are name → tensor dicts with the same keys.
"""
from __future__ import annotations

from functools import partial

import torch
import torch.nn.functional as F
from torch import nn

from ..maml import (
    LossFn,
    Params,
    backward_per_task,
    batched_inner_loop,
    expand_tasks,
    inner_loop,
    mean_task_loss,
    query_losses,
)
from .base import Algorithm
from .base import refuse_test_lr as _refuse_test_lr

__all__ = ["init_inner_lrs", "metasgd_step", "metasgd_adapt", "batched_metasgd_adapt",
           "metasgd_meta_loss", "metasgd_meta_backward", "MetaSGD"]


def init_inner_lrs(params: Params, inner_lr: float = 0.01, *, low: float | None = None,
                   high: float | None = None, generator: torch.Generator | None = None) -> Params:
    """α as a dict of leaf tensors shaped like θ (``requires_grad=True``), ready for an optimizer.

    Filled with ``inner_lr``, or drawn uniformly from [``low``, ``high``) when both are given
    (the range some reimplementations use for Li et al.'s random initialisation is [0.005, 0.1];
    not checked against the paper here).
    """
    if (low is None) != (high is None):
        raise ValueError("give both low and high for a uniform initialisation, or neither")

    def start(p):
        if low is None:
            return torch.full_like(p, inner_lr)
        return (low + (high - low) * torch.rand(p.shape, generator=generator, dtype=p.dtype)).to(p.device)
    return {k: start(p).detach().requires_grad_() for k, p in params.items()}


def _check_lrs(params: Params, inner_lrs: Params) -> None:
    if list(inner_lrs) != list(params):
        missing = sorted(set(params) - set(inner_lrs))
        extra = sorted(set(inner_lrs) - set(params))
        raise ValueError(f"inner_lrs must have θ's keys in θ's order (missing {missing}, extra {extra}); "
                         "build it with init_inner_lrs(params).")
    for k, p in params.items():
        if inner_lrs[k].shape != p.shape:
            raise ValueError(f"inner_lrs[{k!r}] has shape {tuple(inner_lrs[k].shape)}, "
                             f"θ's has {tuple(p.shape)}")


def metasgd_step(params: Params, grads: list[torch.Tensor], inner_lrs: Params) -> Params:
    """One Meta-SGD update θ' = θ − α ⊙ g, elementwise (α broadcasts over a leading task axis)."""
    return {name: p - inner_lrs[name] * g for (name, p), g in zip(params.items(), grads)}


def metasgd_adapt(model: nn.Module, params: Params, inner_lrs: Params, x_support: torch.Tensor,
                  y_support: torch.Tensor, *, inner_steps: int = 1, loss_fn: LossFn = F.mse_loss,
                  first_order: bool = False, adapt_bn: bool = True) -> Params:
    """Adapt θ to one task with ``inner_steps`` Meta-SGD steps; differentiable w.r.t. θ and α.

    With ``first_order=True`` the inner gradients are constants; α still gets a meta-gradient
    (θ' = θ − α ⊙ g is linear in α). ``adapt_bn=False`` holds BatchNorm at θ (their α go unused).
    """
    _check_lrs(params, inner_lrs)
    if inner_steps < 0:
        raise ValueError(f"inner_steps must be ≥ 0, got {inner_steps}")
    return inner_loop(model, params, x_support, y_support, inner_steps=inner_steps, loss_fn=loss_fn,
                      first_order=first_order, adapt_bn=adapt_bn, step=lambda p, g, j: metasgd_step(p, g, inner_lrs))


def batched_metasgd_adapt(model: nn.Module, params: Params, inner_lrs: Params, x_support: torch.Tensor,
                          y_support: torch.Tensor, *, inner_steps: int = 1,
                          loss_fn: LossFn = F.mse_loss, first_order: bool = False, adapt_bn: bool = True) -> Params:
    """:func:`metasgd_adapt` for T tasks at once; returns per-task θ', each (T, *shape)."""
    _check_lrs(params, inner_lrs)
    return batched_inner_loop(model, expand_tasks(params, x_support.shape[0]), x_support, y_support,
                              inner_steps=inner_steps, loss_fn=loss_fn, first_order=first_order, adapt_bn=adapt_bn,
                              step=lambda p, g, j: metasgd_step(p, g, inner_lrs))  # α: (*shape)


def _metasgd_losses(model, params, inner_lrs, batched, device, **kw):
    """:func:`~mamlbook.maml.query_losses` for Meta-SGD's outer loss."""
    return query_losses(model, partial(metasgd_adapt, model, params, inner_lrs, **kw),
                        partial(batched_metasgd_adapt, model, params, inner_lrs, **kw), kw["loss_fn"], batched, device)


def metasgd_meta_loss(model: nn.Module, params: Params, inner_lrs: Params, x_support: torch.Tensor,
                      y_support: torch.Tensor, x_query: torch.Tensor, y_query: torch.Tensor, *,
                      inner_steps: int = 1, loss_fn: LossFn = F.mse_loss, first_order: bool = False,
                      batched: bool | str = "auto", adapt_bn: bool = True) -> torch.Tensor:
    """Meta-SGD's outer loss (1/T) Σ_i L_query_i(θ'_i); ``.backward()`` fills θ's and α's ``.grad``.

    Tensors are (T, K, ...) for support and (T, Q, ...) for query; ``batched`` as in
    :func:`mamlbook.maml.meta_loss`.
    """
    task_loss, batched_loss = _metasgd_losses(model, params, inner_lrs, batched, x_support.device,
                                              inner_steps=inner_steps, loss_fn=loss_fn, first_order=first_order,
                                              adapt_bn=adapt_bn)
    return mean_task_loss(task_loss, x_support, y_support, x_query, y_query, batched_loss=batched_loss)


def metasgd_meta_backward(model: nn.Module, params: Params, inner_lrs: Params, x_support: torch.Tensor,
                          y_support: torch.Tensor, x_query: torch.Tensor, y_query: torch.Tensor, *,
                          inner_steps: int = 1, loss_fn: LossFn = F.mse_loss,
                          first_order: bool = False, batched: bool | str = "auto",
                          adapt_bn: bool = True) -> torch.Tensor:
    """Accumulate the meta-gradient for θ and α into their ``.grad``; return the loss (detached)."""
    task_loss, batched_loss = _metasgd_losses(model, params, inner_lrs, batched, x_support.device,
                                              inner_steps=inner_steps, loss_fn=loss_fn, first_order=first_order,
                                              adapt_bn=adapt_bn)
    return backward_per_task(task_loss, x_support, y_support, x_query, y_query, batched_loss=batched_loss)


class MetaSGD(Algorithm):
    """Meta-SGD: α has θ's shape and is meta-learned with θ, initialised to ``inner_lr`` everywhere.

    (Li et al. draw α at random; filling it with MAML's α makes the first step MAML's.)
    """

    name = "metasgd"

    def __init__(self, model, params, **kw):
        super().__init__(model, params, **kw)
        self.inner_lrs = init_inner_lrs(self.params, self.inner_lr)

    def meta_parameters(self):
        return list(self.params.values()) + list(self.inner_lrs.values())

    def extra_state(self):
        return {"inner_lrs": self.inner_lrs}

    def _backward(self, x_s, y_s, x_q, y_q, iteration):
        return metasgd_meta_backward(self.model, self.params, self.inner_lrs, x_s, y_s, x_q, y_q,
                                     inner_steps=self.inner_steps, loss_fn=self.loss_fn,
                                     first_order=self.first_order, batched=self.batched, adapt_bn=self.adapt_bn)

    def _adapt(self, theta, x_s, y_s, steps, inner_lr):
        _refuse_test_lr(self.name, inner_lr, self.inner_lr)
        lrs = {k: v.detach() for k, v in self.inner_lrs.items()}
        return metasgd_adapt(self.model, theta, lrs, x_s, y_s, inner_steps=steps, loss_fn=self.loss_fn,
                             first_order=True, adapt_bn=self.adapt_bn)
