"""Truncated backpropagation: MAML differentiating through its last k inner steps only (chapter 10).

MAML's inner loop φ_0 = θ, φ_{j+1} = φ_j − α ∇L_s(φ_j) (n steps) has the meta-gradient

    dL_q(φ_n)/dθ = (I − αH_0) ··· (I − αH_{n−1}) ∇L_q(φ_n),        H_j = ∇²L_s(φ_j)

whose backward pass keeps all n second-order steps in memory. Truncated to the last k steps, the
first n − k inner gradients are treated as constants, so those steps contribute the identity
(first-order MAML's approximation, for them only):

    g_k = (I − αH_{n−k}) ··· (I − αH_{n−1}) ∇L_q(φ_n)

k = n is second-order MAML, k = 0 is first-order MAML (``first_order=True`` means k = 0); memory
grows with k, not n. The idea is truncated back-propagation for bilevel optimisation (Shaban, Cheng,
Hatch & Boots, AISTATS 2019, "K-RMD"); there the earlier steps are dropped altogether, which for MAML
(θ enters only through φ_0) would leave no gradient, hence the identity. The default k = 1 and
the per-problem settings are this book's choices (:data:`mamlbook.compare.SETTINGS`).
Meta-test adaptation is MAML's: plain SGD, no graph.
"""
from __future__ import annotations

from functools import partial

import torch
from torch import nn

from ..errors import OptionError
from ..maml import (
    LossFn,
    Params,
    adapt,
    backward_per_task,
    batched_adapt,
    batched_inner_loop,
    mean_task_loss,
    query_losses,
    sgd_step,
)
from .base import MAML

__all__ = ["truncated_adapt", "batched_truncated_adapt", "TruncatedMAML"]


def truncated_adapt(model: nn.Module, params: Params, x_support: torch.Tensor, y_support: torch.Tensor, *,
                    inner_lr: float, inner_steps: int, backprop_steps: int, loss_fn: LossFn,
                    adapt_bn: bool = True) -> Params:
    """θ' after ``inner_steps`` SGD steps, differentiable through the last ``backprop_steps`` of them only."""
    k = min(backprop_steps, inner_steps)
    phi = adapt(model, params, x_support, y_support, inner_lr=inner_lr, inner_steps=inner_steps - k,
                loss_fn=loss_fn, first_order=True, adapt_bn=adapt_bn)                  # dφ_{n−k}/dθ = I
    return adapt(model, phi, x_support, y_support, inner_lr=inner_lr, inner_steps=k, loss_fn=loss_fn,
                 adapt_bn=adapt_bn)


def batched_truncated_adapt(model: nn.Module, params: Params, x_support: torch.Tensor,
                            y_support: torch.Tensor, *, inner_lr: float, inner_steps: int,
                            backprop_steps: int, loss_fn: LossFn, adapt_bn: bool = True) -> Params:
    """:func:`truncated_adapt` for T tasks at once under vmap; every entry of the result is (T, *shape)."""
    k = min(backprop_steps, inner_steps)
    phi = batched_adapt(model, params, x_support, y_support, inner_lr=inner_lr, inner_steps=inner_steps - k,
                        loss_fn=loss_fn, first_order=True, adapt_bn=adapt_bn)        # dφ_{n−k}/dθ = I
    return batched_inner_loop(model, phi, x_support, y_support, inner_steps=k, loss_fn=loss_fn,
                              adapt_bn=adapt_bn, step=lambda p, g, j: sgd_step(p, g, inner_lr))


class TruncatedMAML(MAML):
    """MAML whose meta-gradient flows through the last ``backprop_steps`` (k) inner steps only."""

    name = "truncated"
    supports = frozenset({"first_order", "grad_clip", "tf32", "batched", "adapt_bn"})

    def __init__(self, model: nn.Module, params: Params | None = None, *, backprop_steps: int = 1, **kw):
        super().__init__(model, params, **kw)
        if backprop_steps < 0:
            raise OptionError(f"truncated needs backprop_steps (k) ≥ 0, got {backprop_steps}")
        self.backprop_steps = backprop_steps

    @property
    def k(self) -> int:
        """The steps the meta-gradient flows through: min(k, inner_steps), 0 with ``first_order``."""
        return 0 if self.first_order else min(self.backprop_steps, self.inner_steps)

    def __repr__(self) -> str:
        return f"{super().__repr__()[:-1]}, backprop_steps={self.k})"

    def options(self) -> dict:
        return {**super().options(), "backprop_steps": self.k}

    def _losses(self, device):
        kw = dict(inner_lr=self.inner_lr, inner_steps=self.inner_steps, backprop_steps=self.k,
                  loss_fn=self.loss_fn, adapt_bn=self.adapt_bn)
        return query_losses(self.model, partial(truncated_adapt, self.model, self.params, **kw),
                            partial(batched_truncated_adapt, self.model, self.params, **kw), self.loss_fn,
                            self.batched, device)

    def _loss(self, x_s, y_s, x_q, y_q, iteration):
        task_loss, batched_loss = self._losses(x_s.device)
        return mean_task_loss(task_loss, x_s, y_s, x_q, y_q, batched_loss=batched_loss)

    def _backward(self, x_s, y_s, x_q, y_q, iteration):
        task_loss, batched_loss = self._losses(x_s.device)
        return backward_per_task(task_loss, x_s, y_s, x_q, y_q, batched_loss=batched_loss)
