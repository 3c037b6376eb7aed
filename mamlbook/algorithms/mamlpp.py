"""MAML++ (Antoniou, Edwards & Storkey, "How to train your MAML", ICLR 2019), functionally.

The tested copy of chapter 8's MAML++.

Its parts (chapter 8, section 5, explains the first three):

- **Multi-step loss (MSL)**: Σ_j w_j L_query(θ_j) over every inner step j = 1..N, the weights annealed
  from uniform towards the last step over ``anneal_epochs`` (:func:`multi_step_loss_weights`).
- **Per-layer per-step learned inner learning rates (LSLR)**: α[name][j] (:func:`init_per_step_lrs`).
- **Derivative-order annealing (DA)**: first-order meta-gradients for the first
  ``first_order_epochs`` epochs, second-order after (:func:`use_first_order`).
- **Per-step BatchNorm weights and biases (BNWB)**: step j's own BN shifts/scales, not adapted: pass
  ``step_bn`` and θ without its BN entries (:mod:`mamlbook.mamlpp_bn`, which also says why per-step
  running statistics, BNRS, are not needed).
- **Cosine annealing of the meta-learning rate (CA)**: :func:`cosine_meta_lr_scheduler`.

The schedules follow the authors' code (AntreasAntoniou/HowToTrainYourMAMLPytorch,
``few_shot_learning_system.py``: ``get_per_step_loss_importance_vector``, ``forward`` and the
``CosineAnnealingLR`` built in ``__init__``). Tasks are looped over, one graph per task;
:func:`mamlpp_meta_backward` frees each task's graph before building the next.
"""
from __future__ import annotations

from functools import partial

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from ..errors import OptionError
from ..maml import LossFn, Params, backward_detached, backward_per_task, grads_of, mean_task_loss
from ..rnn import inner_loop_rnn_context
from .base import Algorithm
from .base import refuse_test_lr as _refuse_test_lr
from .mamlpp_bn import bn_at_step, check_step_bn, init_per_step_bn, without_bn

__all__ = ["MSL_MIN_NON_FINAL", "multi_step_loss_weights", "use_first_order", "init_per_step_lrs",
           "adapt_per_step", "mamlpp_task_loss", "mamlpp_meta_loss", "mamlpp_meta_backward",
           "cosine_meta_lr_scheduler", "MAMLPlusPlus"]

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
                   first_order: bool = False, step_bn: Params | None = None) -> list[Params]:
    """The inner loop with θ_{j+1} = θ_j − α[name][j]·∇L_support(θ_j); returns [θ_1, …, θ_N].

    With per-step BatchNorm (``step_bn``, {name: (N, C)}), step j's support pass uses the BN
    parameters ``step_bn[name][j]``, which are not updated, and trajectory entry j is
    {θ_{j+1}, BN of step j}: the parameters the authors' code evaluates the query set with
    after step j. ``params`` (and ``lrs``) must then leave the BN parameters out.
    """
    _check_lrs(params, lrs, inner_steps)
    if step_bn is not None:
        check_step_bn(model, params, step_bn, inner_steps)
    trajectory = []
    # Records every step and changes the frozen BN per step, so it keeps its own loop; the cuDNN
    # rule is maml.inner_loop's (an RNN on CUDA runs the inner loop on native kernels).
    with inner_loop_rnn_context(model, x_support.device, first_order):
        for j in range(inner_steps):
            bn_j = bn_at_step(step_bn, j)                               # {} without per-step BN
            loss = loss_fn(functional_call(model, {**params, **bn_j}, (x_support,)), y_support)
            grads = grads_of(loss, params, create_graph=not first_order)  # θ only: BN is not adapted
            params = {k: p - lrs[k][j] * g for (k, p), g in zip(params.items(), grads)}
            trajectory.append({**params, **bn_j})
    return trajectory


def mamlpp_task_loss(model: nn.Module, params: Params, lrs: Params, x_support: torch.Tensor,
                     y_support: torch.Tensor, x_query: torch.Tensor, y_query: torch.Tensor, *,
                     loss_weights: torch.Tensor, loss_fn: LossFn = F.mse_loss,
                     first_order: bool = False, step_bn: Params | None = None) -> torch.Tensor:
    """One task's multi-step loss Σ_j w_j L_query(θ_j), N = len(``loss_weights``) inner steps.

    A zero weight skips that step's query forward pass (the authors' code computes only the
    last step's once the multi-step loss is switched off). ``step_bn``: see :func:`adapt_per_step`.
    """
    inner_steps = loss_weights.numel()
    trajectory = adapt_per_step(model, params, lrs, x_support, y_support, inner_steps=inner_steps,
                                loss_fn=loss_fn, first_order=first_order, step_bn=step_bn)
    total = 0.0
    for w, theta_j in zip(loss_weights.tolist(), trajectory):
        if w != 0.0:
            total = total + w * loss_fn(functional_call(model, theta_j, (x_query,)), y_query)
    return total


def mamlpp_meta_loss(model: nn.Module, params: Params, lrs: Params, x_support: torch.Tensor,
                     y_support: torch.Tensor, x_query: torch.Tensor, y_query: torch.Tensor, *,
                     loss_weights: torch.Tensor, loss_fn: LossFn = F.mse_loss,
                     first_order: bool = False, step_bn: Params | None = None) -> torch.Tensor:
    """(1/T) Σ_i Σ_j w_j L_query_i(θ_{i,j}) over a meta-batch (T, K|Q, ...); looped over tasks."""
    task_loss = partial(mamlpp_task_loss, model, params, lrs, loss_weights=loss_weights, loss_fn=loss_fn,
                        first_order=first_order, step_bn=step_bn)
    return mean_task_loss(task_loss, x_support, y_support, x_query, y_query)


def mamlpp_meta_backward(model: nn.Module, params: Params, lrs: Params, x_support: torch.Tensor,
                         y_support: torch.Tensor, x_query: torch.Tensor, y_query: torch.Tensor, *,
                         loss_weights: torch.Tensor, loss_fn: LossFn = F.mse_loss,
                         first_order: bool = False, step_bn: Params | None = None) -> torch.Tensor:
    """Accumulate the gradient of :func:`mamlpp_meta_loss` into the leaves' ``.grad``; return the loss.

    The same gradient as ``mamlpp_meta_loss(...).backward()``, one task's graph at a time
    (:func:`mamlbook.maml.backward_per_task`). The returned loss is detached.
    """
    leaves = [*params.values(), *lrs.values(), *(step_bn or {}).values()]
    if not any(t.requires_grad for t in leaves):
        raise ValueError("mamlpp_meta_backward needs θ, the learning rates or step_bn with "
                         "requires_grad=True")
    task_loss = partial(mamlpp_task_loss, model, params, lrs, loss_weights=loss_weights, loss_fn=loss_fn,
                        first_order=first_order, step_bn=step_bn)
    return backward_per_task(task_loss, x_support, y_support, x_query, y_query)


def cosine_meta_lr_scheduler(optimizer: torch.optim.Optimizer, total_epochs: int,
                             min_lr: float = 1e-5) -> torch.optim.lr_scheduler.CosineAnnealingLR:
    """CA: the meta-learning rate follows a half cosine from its initial value to ``min_lr``.

    As the authors' code: ``CosineAnnealingLR(T_max=total_epochs, eta_min=min_learning_rate)``
    (1e-5 in their configs), indexed by epoch: call ``.step()`` once at the end of every epoch,
    so epoch e trains with η_min + (η_0 − η_min)·(1 + cos(π·e/total_epochs))/2.
    """
    if total_epochs < 1:
        raise ValueError(f"total_epochs must be ≥ 1, got {total_epochs}")
    return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total_epochs, eta_min=min_lr)


class MAMLPlusPlus(Algorithm):
    """MAML++'s multi-step loss, per-layer per-step learned rates and derivative-order annealing.

    Defaults from the authors' Omniglot configuration (HowToTrainYourMAMLPytorch,
    ``experiment_config/omniglot_maml++-omniglot_1_8_0.1_64_5_0.json``): 5 inner steps at train
    and test, ``multi_step_loss_num_epochs`` 10 of ``total_iter_per_epoch`` 500 iterations,
    ``first_order_to_second_order_epoch`` −1 (second order from the start: ``first_order_epochs=0``).
    ``per_step_bn=True`` adds MAML++'s per-step BatchNorm (:mod:`mamlbook.mamlpp_bn`; models with
    :class:`mamlbook.conv.BatchNorm` only): off by default and in chapter 8's comparison. The cosine
    schedule of β is not used here.
    """

    name = "mamlpp"
    supports = frozenset({"first_order", "grad_clip", "tf32"})
    fixed_path = "per-task-loop"

    refusals = {"adapt_bn": "not implemented for MAML++; its per_step_bn=True keeps BatchNorm out of the inner "
                            "loop (one learned β per step)",
                "batched": "its multi-step loss runs task by task (one trajectory of query losses per task)"}

    def __init__(self, model, params, *, inner_steps: int = 5, anneal_epochs: int = 10,
                 iterations_per_epoch: int = 500, first_order_epochs: int = 0, per_step_bn: bool = False,
                 **kw):
        super().__init__(model, params, inner_steps=inner_steps, **kw)
        if self.test_steps > inner_steps:
            raise OptionError(f"MAML++ learns one rate per step: test_steps ({self.test_steps}) "
                             f"cannot exceed inner_steps ({inner_steps})")
        self.anneal_epochs, self.iterations_per_epoch = anneal_epochs, iterations_per_epoch
        self.first_order_epochs = first_order_epochs
        # With per-step BN, θ's own BN entries are replaced by (N, C) per-step rows, and the
        # inner loop adapts (and has learned rates for) the rest of θ only.
        self.step_bn = init_per_step_bn(model, inner_steps, self.params) if per_step_bn else None
        self.inner_params = without_bn(model, self.params) if per_step_bn else self.params
        self.lrs = init_per_step_lrs(self.inner_params, inner_steps, self.inner_lr)

    def meta_parameters(self):
        return [*self.inner_params.values(), *self.lrs.values(), *(self.step_bn or {}).values()]

    def extra_state(self):
        return {"lrs": self.lrs, **({"step_bn": self.step_bn} if self.step_bn is not None else {})}

    def epoch(self, iteration: int) -> int:
        return iteration // self.iterations_per_epoch

    def _backward(self, x_s, y_s, x_q, y_q, iteration):
        epoch = self.epoch(iteration)
        weights = multi_step_loss_weights(self.inner_steps, epoch, self.anneal_epochs)
        first_order = self.first_order or use_first_order(epoch, self.first_order_epochs)
        return backward_detached(mamlpp_meta_loss(self.model, self.inner_params, self.lrs, x_s, y_s, x_q, y_q,
                                                  loss_weights=weights, first_order=first_order,
                                                  loss_fn=self.loss_fn, step_bn=self.step_bn))

    def _adapt(self, theta, x_s, y_s, steps, inner_lr):
        _refuse_test_lr(self.name, inner_lr, self.inner_lr)
        if steps > self.inner_steps:
            raise OptionError(f"--steps {steps} is not available for mamlpp: MAML++ has learned rates for "
                              f"{self.inner_steps} steps, not {steps}")
        lrs = {k: v.detach()[:steps] for k, v in self.lrs.items()}
        step_bn = None
        if self.step_bn is not None:
            theta = without_bn(self.model, theta)
            step_bn = {k: v.detach()[:steps] for k, v in self.step_bn.items()}
        return adapt_per_step(self.model, theta, lrs, x_s, y_s, inner_steps=steps,
                              loss_fn=self.loss_fn, first_order=True, step_bn=step_bn)[-1]
