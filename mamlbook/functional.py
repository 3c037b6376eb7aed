"""The whole meta-gradient as one pure ``torch.func`` function, optionally ``torch.compile``-d.

The tested copy of chapter 4's torch.func meta-gradient.

``grad(outer)`` where ``outer(θ) = mean_i L_query_i(θ − α ∇L_support_i(θ))`` and the
tasks are mapped with ``vmap``: no Python loop over tasks and no autograd tape, so
``torch.compile`` can fuse the whole second-order computation (``compile=True``; the learner's
path "compiled-vmap"). For a plain ReLU MLP with the MSE loss (the paper's sinusoids) the
learners use :mod:`mamlbook.fast` instead, the same meta-gradient written out by hand and fused
with Adam: fewer, fatter kernels (docs/benchmarks.md, issue 15).
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad, grad_and_value, vmap

from .conv import batchnorm_params, has_native_batchnorm, reference_batch_norm
from .maml import LossFn, Params, check_inner

__all__ = ["make_meta_grad"]


def make_meta_grad(model: nn.Module, *, inner_lr: float, inner_steps: int = 1,
                   loss_fn: LossFn = F.mse_loss, first_order: bool = False,
                   compile: bool = False, adapt_bn: bool = True) -> Callable[..., tuple[Params, torch.Tensor]]:
    """Build f(params, x_support, y_support, x_query, y_query) → (meta-gradient dict, meta-loss).

    ``params`` must be plain tensors (e.g. ``{k: v.detach() for k, v in ...}``); inputs are
    (T, K|Q, ...). With ``first_order=True`` the inner gradients are detached (FOMAML); with
    ``adapt_bn=False`` the inner steps leave the BatchNorm parameters at θ.
    Models with batch-statistics BatchNorm must use :class:`mamlbook.conv.BatchNorm`: the
    native ``nn.BatchNorm*d`` is refused (its meta-gradient under this transform is wrong).
    """
    check_inner(inner_lr, inner_steps)
    if has_native_batchnorm(model):
        raise ValueError(
            "make_meta_grad cannot differentiate PyTorch's nn.BatchNorm*d correctly: torch.func's "
            "grad of vmap through the native batch-norm kernel gives wrong second-order "
            "meta-gradients (torch 2.14; chapter 4). Use mamlbook.conv.BatchNorm (batch statistics, "
            "vmap-safe) in the model, or mamlbook.maml.meta_loss.")

    held = set() if adapt_bn else batchnorm_params(model)

    def support_loss(p, x, y):
        return loss_fn(functional_call(model, p, (x,)), y)

    def task_loss(p, xs, ys, xq, yq):
        for _ in range(inner_steps):
            g = grad(support_loss)(p, xs, ys)
            if first_order:
                g = {k: v.detach() for k, v in g.items()}
            p = {k: p[k] if k in held else p[k] - inner_lr * g[k] for k in p}
        return support_loss(p, xq, yq)

    def outer(p, xs, ys, xq, yq):
        return vmap(task_loss, in_dims=(None, 0, 0, 0, 0))(p, xs, ys, xq, yq).mean()

    fn = torch.compile(grad_and_value(outer)) if compile else grad_and_value(outer)

    def meta_grad(*args):
        with reference_batch_norm():      # every BatchNorm here runs under vmap: no probe needed
            return fn(*args)
    return meta_grad
