"""ANIL — Almost No Inner Loop (Raghu, Raghu, Bengio & Vinyals, ICLR 2020): adapt only the head.

The tested copy of chapter 8's ANIL.

Split θ into a body θ_b (the feature extractor) and a head θ_h (the last layer, e.g. Conv4's
``classifier.*``). The inner loop adapts the head alone,

    θ_h' = θ_h − α ∇_{θ_h} L_support(θ_b, θ_h)          (θ_b is not touched)

and the outer loss is (1/T) Σ_i L_query_i(θ_b, θ_h'_i), minimised over *both* θ_b and θ_h. The body
is therefore meta-learned in the outer loop only — but its meta-gradient still flows through the
head's adaptation (θ_h' depends on θ_b through ∇_{θ_h} L_support), unless ``first_order=True``.
Raghu et al. show this matches MAML's accuracy on Omniglot and mini-ImageNet: MAML's inner loop
mostly re-uses features rather than changing them.

Same functional core as :mod:`mamlbook.maml`: θ is a name → tensor dict run through
``torch.func.functional_call``; the head is every entry whose name starts with ``head`` (a
prefix or a tuple of prefixes). With the head = every parameter, ANIL *is* MAML (the tests
check it in float64).

This version re-runs the whole network at every inner step, which keeps it model-agnostic;
the paper's speed-up (features computed once per task) needs the body and head as separate
modules.
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
    check_inner,
    expand_tasks,
    inner_loop,
    mean_task_loss,
    query_losses,
    sgd_step,
)
from .base import Algorithm, default_head

__all__ = ["HeadSpec", "split_head", "adapt_head", "batched_adapt_head", "anil_meta_loss", "anil_meta_backward",
           "ANIL"]

HeadSpec = str | tuple[str, ...]


def split_head(params: Params, head: HeadSpec) -> tuple[Params, Params]:
    """(body, head): ``params`` split by name; the head is every name starting with ``head``.

    Raises:
        ValueError: no parameter name starts with ``head`` (the message lists the names).
    """
    prefixes = (head,) if isinstance(head, str) else tuple(head)
    head_params = {k: v for k, v in params.items() if k.startswith(prefixes)}
    if not head_params:
        raise ValueError(f"no parameter name starts with {prefixes}; the names are {list(params)}. "
                         "Pass the head's prefix, e.g. head='classifier.' for Conv4 or '4.' "
                         "for SinusoidMLP's last layer.")
    return {k: v for k, v in params.items() if k not in head_params}, head_params


def adapt_head(model: nn.Module, params: Params, x_support: torch.Tensor, y_support: torch.Tensor, *,
               head: HeadSpec, inner_lr: float, inner_steps: int = 1, loss_fn: LossFn = F.mse_loss,
               first_order: bool = False) -> Params:
    """ANIL's inner loop: ``inner_steps`` SGD steps on the head only; returns the full θ' dict.

    Body entries of the result are the very tensors of ``params`` (not copies), so the body is
    left bit-identical. Arguments as :func:`mamlbook.maml.adapt`, plus ``head``, the prefix (or
    tuple of prefixes) of the head's parameter names.
    """
    check_inner(inner_lr, inner_steps)
    body, head_params = split_head(params, head)
    head_params = inner_loop(model, head_params, x_support, y_support, inner_steps=inner_steps,
                             loss_fn=loss_fn, first_order=first_order, frozen=body,
                             step=lambda p, g, j: sgd_step(p, g, inner_lr))
    return {k: head_params[k] if k in head_params else body[k] for k in params}  # θ's key order


def batched_adapt_head(model: nn.Module, params: Params, x_support: torch.Tensor,
                       y_support: torch.Tensor, *, head: HeadSpec, inner_lr: float,
                       inner_steps: int = 1, loss_fn: LossFn = F.mse_loss,
                       first_order: bool = False) -> Params:
    """:func:`adapt_head` for T tasks at once under vmap; every entry of the result is (T, *shape).

    The body is expanded to T copies (a view, no memory copied) that no inner step changes.
    """
    check_inner(inner_lr, inner_steps)
    body, head_params = split_head(expand_tasks(params, x_support.shape[0]), head)
    head_params = batched_inner_loop(model, head_params, x_support, y_support, inner_steps=inner_steps,
                                     loss_fn=loss_fn, first_order=first_order, frozen=body,
                                     step=lambda p, g, j: sgd_step(p, g, inner_lr))
    return {k: head_params[k] if k in head_params else body[k] for k in params}


def _anil_losses(model, params, batched, device, **kw):
    """:func:`~mamlbook.maml.query_losses` for ANIL's outer loss."""
    return query_losses(model, partial(adapt_head, model, params, **kw),
                        partial(batched_adapt_head, model, params, **kw), kw["loss_fn"], batched, device)


def anil_meta_loss(model: nn.Module, params: Params, x_support: torch.Tensor, y_support: torch.Tensor,
                   x_query: torch.Tensor, y_query: torch.Tensor, *, head: HeadSpec, inner_lr: float,
                   inner_steps: int = 1, loss_fn: LossFn = F.mse_loss, first_order: bool = False,
                   batched: bool | str = "auto") -> torch.Tensor:
    """ANIL's outer loss (1/T) Σ_i L_query_i(θ_b, θ_h'_i); ``.backward()`` gives θ_b's and θ_h's meta-gradients.

    Tensors are (T, K, ...) for support and (T, Q, ...) for query; ``batched`` as in
    :func:`mamlbook.maml.meta_loss`.
    """
    task_loss, batched_loss = _anil_losses(model, params, batched, x_support.device, head=head, inner_lr=inner_lr,
                                           inner_steps=inner_steps, loss_fn=loss_fn, first_order=first_order)
    return mean_task_loss(task_loss, x_support, y_support, x_query, y_query, batched_loss=batched_loss)


def anil_meta_backward(model: nn.Module, params: Params, x_support: torch.Tensor,
                       y_support: torch.Tensor, x_query: torch.Tensor, y_query: torch.Tensor, *,
                       head: HeadSpec, inner_lr: float, inner_steps: int = 1,
                       loss_fn: LossFn = F.mse_loss, first_order: bool = False,
                       batched: bool | str = "auto") -> torch.Tensor:
    """Accumulate ANIL's meta-gradient into ``p.grad``; return the loss (detached), one task's graph at a time."""
    task_loss, batched_loss = _anil_losses(model, params, batched, x_support.device, head=head, inner_lr=inner_lr,
                                           inner_steps=inner_steps, loss_fn=loss_fn, first_order=first_order)
    return backward_per_task(task_loss, x_support, y_support, x_query, y_query, batched_loss=batched_loss)


class ANIL(Algorithm):
    """ANIL: the inner loop (training and test) adapts the head only; ``head`` defaults to the last Linear.

    ``adapt_bn=False`` changes nothing: a head without BatchNorm already leaves it at θ in the inner loop.
    """

    name = "anil"

    def __init__(self, model, params, *, head: str | None = None, **kw):
        super().__init__(model, params, **kw)
        self.head = head or default_head(model)

    def _backward(self, x_s, y_s, x_q, y_q, iteration):
        return anil_meta_backward(self.model, self.params, x_s, y_s, x_q, y_q, head=self.head,
                                  inner_lr=self.inner_lr, inner_steps=self.inner_steps,
                                  loss_fn=self.loss_fn, first_order=self.first_order, batched=self.batched)

    def _adapt(self, theta, x_s, y_s, steps, inner_lr):
        return adapt_head(self.model, theta, x_s, y_s, head=self.head, inner_lr=inner_lr,
                          inner_steps=steps, loss_fn=self.loss_fn, first_order=True)
