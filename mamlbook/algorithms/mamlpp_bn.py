"""MAML++'s per-step BatchNorm (Antoniou, Edwards & Storkey, ICLR 2019, §4 "BNWB"/"BNRS").

Part of chapter 8's MAML++.

Plain MAML uses one set of BatchNorm shifts β (and scales γ, if the layer has them) at every
inner step, although the features they normalise drift as θ is adapted. MAML++ gives every
inner step j = 0..N−1 its own β_j (and γ_j), meta-learned in the outer loop and **not adapted
in the inner loop**. Here they live in their own name → tensor dict, ``step_bn``, with a
leading step dimension: ``step_bn[name]`` is (N, C) for a BN parameter of shape (C,).

Which step's BN is used where follows the authors' code (AntreasAntoniou/
HowToTrainYourMAMLPytorch: ``MetaBatchNormLayer`` uses ``weight[num_step]`` and
``bias[num_step]``; ``MAMLFewShotClassifier.forward`` runs the support pass of step
``num_step`` and the query pass right after that update with the same ``num_step``):

    support loss of step j:          L_support(θ_j, β_j)  →  θ_{j+1} = θ_j − α_j ∇_θ L_support
    query loss after step j (MSL):   L_query(θ_{j+1}, β_j)

so there are N rows, not N+1 (the same count as the per-step learning rates). The BN
parameters never enter the inner update: the authors' ``get_inner_loop_parameter_dict`` leaves
out every ``norm_layer`` parameter (``enable_inner_loop_optimizable_bn_params`` is false in
their MAML++ configs), so θ passed to the inner loop must not hold them (:func:`without_bn`).
Their MAML++ configs learn both β and γ per step (``learnable_bn_gamma``/``_beta`` true): build
the Conv4 with ``bn_scale=True`` to match; with the default shift-only BN, only β is per step.

**Per-step running statistics (BNRS) are not kept.** :class:`mamlbook.conv.BatchNorm`
always normalises with the statistics of the batch it sees (the official MAML choice:
transductive, support and query each normalised by their own statistics). Running statistics
matter only to a network that normalises with *stored* statistics at test time. The authors'
code collects per-step running means and variances but calls ``F.batch_norm(...,
training=True)`` at every step, in training and evaluation, so it normalises with batch
statistics too and never reads them: leaving them out changes no number.
"""
from __future__ import annotations

from torch import nn

from ..conv import BatchNorm
from ..maml import Params

__all__ = ["Params", "bn_param_names", "without_bn", "init_per_step_bn", "check_step_bn", "bn_at_step"]


def bn_param_names(model: nn.Module) -> list[str]:
    """Names of the shifts (and scales, if any) of every :class:`mamlbook.conv.BatchNorm`."""
    return [f"{prefix}.{n}" if prefix else n for prefix, module in model.named_modules()
            if isinstance(module, BatchNorm) for n, _ in module.named_parameters(recurse=False)]


def _bn_names_or_raise(model: nn.Module) -> list[str]:
    names = bn_param_names(model)
    if not names:
        raise ValueError("per-step BatchNorm needs a model with mamlbook.conv.BatchNorm layers "
                         "(batch statistics, vmap-safe); this model has none. PyTorch's "
                         "nn.BatchNorm*d is not supported here: build the network with "
                         "mamlbook.conv.BatchNorm.")
    return names


def without_bn(model: nn.Module, params: Params) -> Params:
    """θ without its BatchNorm entries: the parameters the inner loop adapts under per-step BN."""
    bn = set(bn_param_names(model))
    return {k: v for k, v in params.items() if k not in bn}


def init_per_step_bn(model: nn.Module, inner_steps: int, params: Params | None = None) -> Params:
    """BNWB: one copy of every BN shift/scale per inner step, {name: (inner_steps, C)}, leaves.

    Every row starts as the model's own BN parameter (or ``params[name]`` where given), so at
    initialisation per-step BN computes exactly what shared BN does (the authors' code also
    starts every step at β = 0, γ = 1).
    """
    if inner_steps < 1:
        raise ValueError(f"inner_steps must be ≥ 1, got {inner_steps}")
    start = {**dict(model.named_parameters()), **(params or {})}
    return {k: start[k].detach().unsqueeze(0).expand(inner_steps, *start[k].shape).clone().requires_grad_()
            for k in _bn_names_or_raise(model)}                                            # (N, C)


def check_step_bn(model: nn.Module, params: Params, step_bn: Params, inner_steps: int) -> None:
    """Raise a ValueError that says what to do if ``step_bn`` does not fit the model and N steps."""
    names = _bn_names_or_raise(model)
    fix = f"build it with init_per_step_bn(model, inner_steps={inner_steps})"
    if set(step_bn) != set(names):
        raise ValueError(f"step_bn needs exactly the model's BatchNorm parameters {names}, got "
                         f"{list(step_bn)}; {fix}")
    if adapted := [k for k in names if k in params]:
        raise ValueError(f"θ holds BatchNorm parameters {adapted}, but per-step BN parameters are "
                         "not adapted in the inner loop: pass without_bn(model, params) as θ (and "
                         "build the learning rates from it)")
    own = dict(model.named_parameters())
    for k in names:
        want = (inner_steps, *own[k].shape)
        if tuple(step_bn[k].shape) != want:
            raise ValueError(f"step_bn[{k!r}] has shape {tuple(step_bn[k].shape)}; per-step "
                             f"BatchNorm needs one row per inner step, {want}: {fix}")


def bn_at_step(step_bn: Params | None, step: int) -> Params:
    """The BN parameters of inner step ``step``, {name: (C,)}; {} without per-step BN."""
    return {} if step_bn is None else {k: v[step] for k, v in step_bn.items()}
