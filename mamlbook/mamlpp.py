"""Three of MAML++'s fixes (Antoniou, Edwards & Storkey, "How to train your MAML", ICLR 2019).

- **Multi-step loss (MSL)**: the outer loss is Σ_j w_j L_query(θ_j) over *every* inner step
  j = 1..N instead of the last one only; the weights start uniform (1/N) and are annealed
  towards the last step over ``anneal_epochs`` (:func:`multi_step_loss_weights`), after which
  only the last step's loss is used.
- **Per-layer per-step learned inner learning rates (LSLR)**: each parameter tensor ("layer")
  has its own learning rate for each inner step, α[name][j], meta-learned with θ
  (:func:`init_per_step_lrs`).
- **Derivative-order annealing (DA)**: first-order meta-gradients for the first
  ``first_order_epochs`` epochs, second-order after (:func:`use_first_order`).

The schedules follow the authors' code (AntreasAntoniou/HowToTrainYourMAMLPytorch,
``few_shot_learning_system.py``: ``get_per_step_loss_importance_vector`` and ``forward``).
Not here yet: per-step BatchNorm (separate BN shifts/scales, and running statistics, for every
inner step) and cosine annealing of the meta-optimizer's learning rate.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from .maml import LossFn, Params, _grads

MSL_MIN_NON_FINAL = 0.03  # × 1/N: the floor of every non-final step's weight in the authors' code


def multi_step_loss_weights(inner_steps: int, epoch: int, anneal_epochs: int) -> torch.Tensor:
    """The MSL weights (N,) at ``epoch``: uniform at epoch 0, annealed linearly towards the last step.

    Each non-final weight falls by 1/(N·E) per epoch (E = ``anneal_epochs``) to a floor of
    0.03/N while the last one rises by (N−1)/(N·E), capped at 1 − (N−1)·0.03/N: the weights
    always sum to 1. From epoch E on, the authors' code stops using the multi-step loss, so
    the weights are (0, …, 0, 1). Returned in float64.
    """
    if inner_steps < 1:
        raise ValueError(f"the multi-step loss needs inner_steps ≥ 1, got {inner_steps}")
    if anneal_epochs < 1:
        raise ValueError(f"anneal_epochs must be ≥ 1, got {anneal_epochs}")
    n = inner_steps
    if epoch >= anneal_epochs:
        return torch.nn.functional.one_hot(torch.tensor(n - 1), n).double()
    decay = 1.0 / n / anneal_epochs
    floor = MSL_MIN_NON_FINAL / n
    w = torch.full((n,), 1.0 / n, dtype=torch.float64)
    w[:-1] = torch.clamp(w[:-1] - epoch * decay, min=floor)
    w[-1] = min(1.0 / n + epoch * (n - 1) * decay, 1.0 - (n - 1) * floor)
    return w


def use_first_order(epoch: int, first_order_epochs: int) -> bool:
    """Derivative-order annealing: first-order for epochs 0..``first_order_epochs``−1, then second-order.

    (The authors' ``first_order_to_second_order_epoch`` is ``first_order_epochs − 1``: their code
    goes second-order when ``epoch > first_order_to_second_order_epoch``.)
    """
    return epoch < first_order_epochs


def init_per_step_lrs(params: Params, inner_steps: int, inner_lr: float = 0.01) -> Params:
    """LSLR: one learning rate per parameter tensor per inner step, {name: (inner_steps,)}, leaves."""
    if inner_steps < 1:
        raise ValueError(f"inner_steps must be ≥ 1, got {inner_steps}")
    return {k: torch.full((inner_steps,), float(inner_lr), dtype=p.dtype, device=p.device,
                          requires_grad=True) for k, p in params.items()}


def _check_lrs(params: Params, lrs: Params, inner_steps: int) -> None:
    if list(lrs) != list(params):
        raise ValueError("per-step learning rates need θ's keys in θ's order; build them with "
                         f"init_per_step_lrs(params, inner_steps) (θ: {list(params)}, lrs: {list(lrs)})")
    for k, a in lrs.items():
        if a.shape != (inner_steps,):
            raise ValueError(f"lrs[{k!r}] has shape {tuple(a.shape)}; it needs one rate per inner "
                             f"step, ({inner_steps},)")


def adapt_per_step(model: nn.Module, params: Params, lrs: Params, x_support: torch.Tensor,
                   y_support: torch.Tensor, *, inner_steps: int, loss_fn: LossFn = F.mse_loss,
                   first_order: bool = False) -> list[Params]:
    """The inner loop with θ_{j+1} = θ_j − α[name][j]·∇L_support(θ_j); returns [θ_1, …, θ_N]."""
    _check_lrs(params, lrs, inner_steps)
    trajectory = []
    for j in range(inner_steps):
        loss = loss_fn(functional_call(model, params, (x_support,)), y_support)
        grads = _grads(loss, params, create_graph=not first_order)
        params = {k: p - lrs[k][j] * g for (k, p), g in zip(params.items(), grads)}
        trajectory.append(params)
    return trajectory


def mamlpp_task_loss(model: nn.Module, params: Params, lrs: Params, x_support: torch.Tensor,
                     y_support: torch.Tensor, x_query: torch.Tensor, y_query: torch.Tensor, *,
                     loss_weights: torch.Tensor, loss_fn: LossFn = F.mse_loss,
                     first_order: bool = False) -> torch.Tensor:
    """One task's multi-step loss Σ_j w_j L_query(θ_j), N = len(``loss_weights``) inner steps.

    A zero weight skips that step's query forward pass (the authors' code computes only the
    last step's once the multi-step loss is switched off).
    """
    inner_steps = loss_weights.numel()
    trajectory = adapt_per_step(model, params, lrs, x_support, y_support, inner_steps=inner_steps,
                                loss_fn=loss_fn, first_order=first_order)
    total = 0.0
    for w, theta_j in zip(loss_weights.tolist(), trajectory):
        if w != 0.0:
            total = total + w * loss_fn(functional_call(model, theta_j, (x_query,)), y_query)
    return total


def mamlpp_meta_loss(model: nn.Module, params: Params, lrs: Params, x_support: torch.Tensor,
                     y_support: torch.Tensor, x_query: torch.Tensor, y_query: torch.Tensor, *,
                     loss_weights: torch.Tensor, loss_fn: LossFn = F.mse_loss,
                     first_order: bool = False) -> torch.Tensor:
    """(1/T) Σ_i Σ_j w_j L_query_i(θ_{i,j}) over a meta-batch (T, K|Q, ...); looped over tasks."""
    total = 0.0
    for i in range(x_support.shape[0]):
        total = total + mamlpp_task_loss(model, params, lrs, x_support[i], y_support[i], x_query[i],
                                         y_query[i], loss_weights=loss_weights, loss_fn=loss_fn,
                                         first_order=first_order)
    return total / x_support.shape[0]
