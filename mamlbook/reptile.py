"""Reptile (Nichol, Achiam & Schulman, 2018): move θ toward the parameters each task adapts to.

For every task i of a meta-batch, run ``inner_steps`` of SGD from θ on the task's data to get
φ_i, then update

    θ ← θ + ε · (1/T) Σ_i (φ_i − θ)

— θ moves toward the **average of the task-adapted parameters** (with ε = 1 it *becomes* that
average). No second derivatives and no query set: the direction θ − mean_i φ_i is handed to
any optimiser as if it were a gradient (:func:`reptile_gradient`), or applied directly with
step ε (:func:`reptile_step`). With one inner step, θ − φ_i = α ∇L_i(θ): Reptile is then
joint training on all tasks; with more steps it picks up MAML-like terms (Nichol et al., §5).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .maml import LossFn, Params, adapt, batched_adapt, resolve_batched


def adapted_parameters(model: nn.Module, params: Params, x: torch.Tensor, y: torch.Tensor, *,
                       inner_lr: float, inner_steps: int, loss_fn: LossFn = F.mse_loss,
                       batched: bool | str = "auto") -> Params:
    """φ_i for every task, detached: a dict of (T, *shape) tensors. ``x``/``y`` are (T, N, ...)."""
    params = {k: v.detach().requires_grad_() for k, v in params.items()}
    with torch.enable_grad():
        if resolve_batched(model, batched, x.device):
            phi = batched_adapt(model, params, x, y, inner_lr=inner_lr, inner_steps=inner_steps,
                                loss_fn=loss_fn, first_order=True)
            return {k: v.detach() for k, v in phi.items()}
        per_task = [adapt(model, params, x[i], y[i], inner_lr=inner_lr, inner_steps=inner_steps,
                          loss_fn=loss_fn, first_order=True) for i in range(x.shape[0])]
    return {k: torch.stack([phi[k].detach() for phi in per_task]) for k in params}


def reptile_gradient(model: nn.Module, params: Params, x: torch.Tensor, y: torch.Tensor, *,
                     inner_lr: float, inner_steps: int, loss_fn: LossFn = F.mse_loss,
                     batched: bool | str = "auto") -> Params:
    """Reptile's update direction θ − (1/T) Σ_i φ_i, to be used like a gradient (descend it).

    Args:
        x, y: each task's training data, (T, N, ...) — Reptile has no support/query split, so
            pass all of a task's examples (e.g. support and query concatenated).
        inner_lr, inner_steps: the inner SGD that produces φ_i (Reptile needs several steps:
            with one, it reduces to joint training).
    """
    phi = adapted_parameters(model, params, x, y, inner_lr=inner_lr, inner_steps=inner_steps,
                             loss_fn=loss_fn, batched=batched)
    return {k: v.detach() - phi[k].mean(dim=0) for k, v in params.items()}


@torch.no_grad()
def reptile_step(model: nn.Module, params: Params, x: torch.Tensor, y: torch.Tensor, *,
                 inner_lr: float, inner_steps: int, outer_lr: float, loss_fn: LossFn = F.mse_loss,
                 batched: bool | str = "auto") -> Params:
    """One Reptile meta-update in place: θ ← θ + ε·(mean_i φ_i − θ), ε = ``outer_lr``; returns the direction."""
    if not 0 < outer_lr <= 1:
        raise ValueError(f"outer_lr (ε) must be in (0, 1], got {outer_lr}")
    direction = reptile_gradient(model, params, x, y, inner_lr=inner_lr, inner_steps=inner_steps,
                                 loss_fn=loss_fn, batched=batched)
    for k, p in params.items():
        p.sub_(outer_lr * direction[k])
    return direction
