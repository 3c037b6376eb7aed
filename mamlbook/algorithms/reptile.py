"""Reptile (Nichol, Achiam & Schulman, 2018): move θ toward the parameters each task adapts to.

The tested copy of chapter 3's Reptile (and chapter 8's learner).

θ ← θ + ε · (1/T) Σ_i (φ_i − θ), φ_i = ``inner_steps`` of SGD from θ on task i's data (chapter 3,
section 3). The direction θ − mean_i φ_i is handed to any optimiser as if it were a gradient
(:func:`reptile_gradient`), or applied directly with step ε (:func:`reptile_step`). With one inner
step, θ − φ_i = α ∇L_i(θ): Reptile is then joint training on all tasks; with more steps it picks up
MAML-like terms (Nichol et al., §5).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..maml import LossFn, Params, adapt, batched_adapt, resolve_batched
from .base import Algorithm

__all__ = ["adapted_parameters", "reptile_gradient", "reptile_step", "Reptile"]


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
        inner_lr, inner_steps: the inner SGD that produces φ_i (several steps: with one, it is joint training).
    """
    phi = adapted_parameters(model, params, x, y, inner_lr=inner_lr, inner_steps=inner_steps,
                             loss_fn=loss_fn, batched=batched)
    return {k: v.detach() - phi[k].mean(dim=0) for k, v in params.items()}


@torch.no_grad()
def reptile_step(model: nn.Module, params: Params, x: torch.Tensor, y: torch.Tensor, *,
                 inner_lr: float, inner_steps: int, outer_lr: float, loss_fn: LossFn = F.mse_loss,
                 batched: bool | str = "auto", average=None) -> Params:
    """One Reptile meta-update in place: θ ← θ + ε·(mean_i φ_i − θ), ε = ``outer_lr``; returns the direction.

    ``average`` (a list of tensors → their means over ranks, :meth:`mamlbook.distributed.Ranks.average`)
    turns each rank's direction over its T/N tasks into the direction over all T tasks.
    """
    if not 0 < outer_lr <= 1:
        raise ValueError(f"outer_lr (ε) must be in (0, 1], got {outer_lr}")
    direction = reptile_gradient(model, params, x, y, inner_lr=inner_lr, inner_steps=inner_steps,
                                 loss_fn=loss_fn, batched=batched)
    if average is not None:
        direction = dict(zip(direction, average(list(direction.values()))))
    for k, p in params.items():
        p.sub_(outer_lr * direction[k])
    return direction


class Reptile(Algorithm):
    """Reptile with plain SGD inner steps (:func:`mamlbook.reptile.reptile_step`).

    Trains on each task's support and query points together (Reptile has no split). The outer
    step ε is annealed linearly from ``outer_lr`` to ``outer_lr_final`` over ``progress`` (the
    paper anneals it over its iterations: ``--meta-step 1 --meta-step-final 0`` on Omniglot).
    The paper's inner optimizer is Adam; this one is SGD at α, as :mod:`mamlbook.reptile`.
    """

    name = "reptile"
    supports = frozenset({"batched"})

    refusals = {"first_order": "Reptile is first-order by construction (no meta-gradient through the inner loop)",
                "grad_clip": "Reptile's outer update is an interpolation, not a gradient step",
                "adapt_bn": "its outer step moves θ toward the adapted parameters, so BatchNorm parameters held "
                            "at θ in its inner loop would never be trained",
                **dict.fromkeys(("amp", "tf32", "compile"), "Reptile has no meta-optimizer or meta-gradient for "
                                "it to act on")}

    def __init__(self, model, params, *, outer_lr: float = 1.0, outer_lr_final: float = 0.0, **kw):
        super().__init__(model, params, **kw)
        if not 0 < outer_lr <= 1 or not 0 <= outer_lr_final <= 1:
            raise ValueError(f"Reptile's ε must lie in (0, 1], got {outer_lr} → {outer_lr_final}")
        self.outer_lr, self.outer_lr_final = outer_lr, outer_lr_final

    def make_optimizer(self, meta_lr: float = 1e-3) -> None:
        return None

    def epsilon(self, progress: float) -> float:
        """ε after a fraction ``progress`` ∈ [0, 1) of training: linear from ε₀ to ε_final."""
        if not 0 <= progress < 1:
            raise ValueError(f"progress must be in [0, 1), got {progress}")
        return self.outer_lr + (self.outer_lr_final - self.outer_lr) * progress

    def outer_step(self, optimizer, x_s, y_s, x_q, y_q, iteration=0, progress=0.0):
        x, y = torch.cat([x_s, x_q], dim=1), torch.cat([y_s, y_q], dim=1)     # (T, K+Q, ...)
        reptile_step(self.model, self.params, x, y, inner_lr=self.inner_lr,
                     inner_steps=self.inner_steps, outer_lr=self.epsilon(progress), loss_fn=self.loss_fn,
                     batched=self.batched, average=None if self.ranks is None else self.ranks.average)
