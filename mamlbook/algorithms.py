"""One interface for the book's seven meta-learning algorithms, so they can be swapped and compared.

    algo = make_algorithm("anil", model, params, problem="classification", inner_lr=2.0)
    opt = algo.make_optimizer(meta_lr=1e-3)           # None for Reptile: its outer update is its own
    loss = algo.outer_step(opt, x_s, y_s, x_q, y_q, iteration=it, progress=t / budget)
    predict = algo.adapt(x_s[0], y_s[0])              # the task's adapted model; predict(x_q[0])

Every algorithm works on θ as a name → tensor dict (the model's own parameters, updated in
place by the meta-optimizer), on meta-batches (T, K|Q, ...), and on both of the book's problems:
the sinusoid MLP with MSE (``problem="regression"``) and Conv4 with cross-entropy
(``problem="classification"``). The update rules (α: inner step size, β: the meta-optimizer's,
Adam in every paper below except Reptile):

- ``maml``      θ' = θ − α∇L_s(θ) (``inner_steps`` times); θ ← θ − β∇_θ (1/T)Σ_i L_q_i(θ'_i),
                differentiating through the inner steps. Finn, Abbeel & Levine, ICML 2017.
- ``fomaml``    the same outer loss, with ∇L_s treated as a constant: the meta-gradient is
                ∇L_q(θ') evaluated at θ'. Finn et al. 2017, §5.2.
- ``reptile``   φ_i = k SGD steps from θ on all of task i's data; θ ← θ + ε·(1/T)Σ_i (φ_i − θ).
                No query loss, no meta-optimizer (:mod:`mamlbook.reptile`). Nichol, Achiam &
                Schulman, arXiv:1803.02999, 2018.
- ``anil``      only the head (the last ``nn.Linear``: Conv4's ``classifier.*``, the MLP's ``4.*``)
                adapts: θ_h' = θ_h − α∇_{θ_h}L_s; the outer loss updates body and head.
                Raghu, Raghu, Bengio & Vinyals, ICLR 2020.
- ``metasgd``   θ' = θ − α ⊙ ∇L_s(θ) with a meta-learned α shaped like θ; (θ, α) ← Adam on the
                MAML outer loss. Li, Zhou, Chen & Li, arXiv:1707.09835, 2017.
- ``mamlpp``    θ_{j+1} = θ_j − α_{l,j}∇L_s(θ_j) with a learned rate per layer l and step j; the outer
                loss Σ_j w_j L_q(θ_j) with annealed weights; first-order for the first epochs.
                Antoniou, Edwards & Storkey, ICLR 2019 (:mod:`mamlbook.mamlpp`).
- ``protonet``  no inner loop: c_n = mean of class n's support embeddings f_θ(x), logits
                −‖f_θ(x_q) − c_n‖²; θ ← Adam on the query cross-entropy. Snell, Swersky & Zemel,
                NeurIPS 2017. Classification only; the embedding is the model without its head.

Each algorithm's defaults are stated with its class; the comparison's per-problem settings and
their sources are in :mod:`mamlbook.compare`.
"""
from __future__ import annotations

import copy
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from .anil import adapt_head, anil_meta_backward
from .maml import LossFn, Params, adapt as maml_adapt, meta_backward
from .mamlpp import adapt_per_step, init_per_step_lrs, mamlpp_meta_loss, multi_step_loss_weights, use_first_order
from .mamlpp_bn import init_per_step_bn, without_bn
from .metasgd import init_inner_lrs, metasgd_adapt, metasgd_meta_backward
from .protonet import protonet_loss, task_logits
from .reptile import reptile_step
from .train import make_meta_optimizer

ALGORITHMS = ("maml", "fomaml", "reptile", "anil", "metasgd", "mamlpp", "protonet")
PROBLEMS = {"regression": F.mse_loss, "classification": F.cross_entropy}
Predictor = Callable[[torch.Tensor], torch.Tensor]


def default_head(model: nn.Module) -> str:
    """The name prefix of the model's last ``nn.Linear`` ("classifier." for Conv4, "4." for the MLP)."""
    linears = [name for name, m in model.named_modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ValueError(f"{type(model).__name__} has no nn.Linear layer to use as the head; pass head=")
    return linears[-1] + "."


class Algorithm:
    """The common interface. Subclasses set ``name`` and override what differs from MAML.

    Args:
        model: the network; its weights come from ``params`` (``functional_call``).
        params: θ, e.g. ``dict(model.named_parameters())``: leaf tensors the optimizer updates.
        problem: "regression" (MSE) or "classification" (mean cross-entropy).
        inner_lr: α, the inner SGD step (mean-loss units; Omniglot's official 0.4 is 2.0 here).
        inner_steps: inner SGD steps in meta-training.
        test_steps: SGD steps at meta-test (default: ``inner_steps``).
    """

    name = "maml"
    first_order = False
    has_inner_loop = True

    def __init__(self, model: nn.Module, params: Params, *, problem: str, inner_lr: float | None = None,
                 inner_steps: int = 1, test_steps: int | None = None):
        if problem not in PROBLEMS:
            raise ValueError(f"problem must be one of {list(PROBLEMS)}, got {problem!r}")
        if self.has_inner_loop and not (inner_lr is not None and inner_lr > 0 and inner_steps >= 1):
            raise ValueError(f"{self.name} needs inner_lr (α) > 0 and inner_steps ≥ 1, "
                             f"got {inner_lr}, {inner_steps}")
        self.model, self.params, self.problem = model, params, problem
        self.loss_fn: LossFn = PROBLEMS[problem]
        self.inner_lr, self.inner_steps = inner_lr, inner_steps
        self.test_steps = inner_steps if test_steps is None else test_steps

    def __repr__(self) -> str:
        return (f"{type(self).__name__}({self.problem}, inner_lr={self.inner_lr}, "
                f"inner_steps={self.inner_steps}, test_steps={self.test_steps})")

    def meta_parameters(self) -> list[torch.Tensor]:
        """Everything the outer loop learns: θ, plus any meta-learned inner learning rates."""
        return list(self.params.values())

    def extra_state(self) -> dict[str, Params]:
        """Meta-learned tensors besides θ, by group (for checkpoints): none for MAML."""
        return {}

    def load_extra_state(self, state: dict[str, Params]) -> None:
        """Copy :meth:`extra_state` tensors saved earlier into this algorithm's own, in place."""
        mine = self.extra_state()
        if set(state) != set(mine) or any(set(state[g]) != set(mine[g]) for g in mine):
            raise ValueError(f"saved {self.name} state has groups {sorted(state)}, expected {sorted(mine)}")
        with torch.no_grad():
            for group, tensors in state.items():
                for name, value in tensors.items():
                    mine[group][name].copy_(value)

    def make_optimizer(self, meta_lr: float = 1e-3) -> torch.optim.Optimizer | None:
        """Adam(β = ``meta_lr``) on :meth:`meta_parameters` (None for Reptile)."""
        return make_meta_optimizer(self.meta_parameters(), meta_lr)

    def outer_step(self, optimizer, x_s, y_s, x_q, y_q, iteration: int = 0,
                   progress: float = 0.0) -> float | None:
        """One meta-update on a meta-batch (T, K|Q, ...); returns the outer loss (None for Reptile).

        ``iteration`` drives MAML++'s schedules; ``progress`` (fraction of the budget used, in
        [0, 1)) drives Reptile's ε annealing.
        """
        optimizer.zero_grad(set_to_none=True)
        loss = self._backward(x_s, y_s, x_q, y_q, iteration)
        optimizer.step()
        return float(loss)

    def _backward(self, x_s, y_s, x_q, y_q, iteration):
        return meta_backward(self.model, self.params, x_s, y_s, x_q, y_q, inner_lr=self.inner_lr,
                             inner_steps=self.inner_steps, loss_fn=self.loss_fn,
                             first_order=self.first_order)

    def adapt(self, x_s: torch.Tensor, y_s: torch.Tensor, steps: int | None = None) -> Predictor:
        """Adapt to one task's support set (K, ...) with ``steps`` (default ``test_steps``) steps.

        Returns a function from query inputs (Q, ...) to predictions (Q, ...) or logits (Q, N).
        Meta-test adaptation needs no second-order graph: the adapted tensors are detached.
        """
        steps = self.test_steps if steps is None else steps
        theta = {k: v.detach().requires_grad_() for k, v in self.params.items()}
        with torch.enable_grad():
            adapted = self._adapt(theta, x_s, y_s, steps) if steps > 0 else theta
        return AdaptedModel(self.model, {k: v.detach() for k, v in adapted.items()})

    def _adapt(self, theta, x_s, y_s, steps):
        return maml_adapt(self.model, theta, x_s, y_s, inner_lr=self.inner_lr, inner_steps=steps,
                          loss_fn=self.loss_fn, first_order=True)


class AdaptedModel:
    """A task's adapted model: ``model`` run with the adapted parameters θ' (``.params``), no graph."""

    def __init__(self, model: nn.Module, params: Params):
        self.model, self.params = model, params

    @torch.no_grad()
    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return functional_call(self.model, self.params, (x,))


class MAML(Algorithm):
    """Second-order MAML. Paper: α = 0.01, 1 step (sinusoids); 5-way Omniglot α = 0.4 official = 2.0 here, 1 step."""

    name = "maml"


class FOMAML(Algorithm):
    """First-order MAML: :class:`MAML` with the inner gradients treated as constants."""

    name = "fomaml"
    first_order = True


class Reptile(Algorithm):
    """Reptile with plain SGD inner steps (:func:`mamlbook.reptile.reptile_step`).

    Trains on each task's support and query points together (Reptile has no split). The outer
    step ε is annealed linearly from ``outer_lr`` to ``outer_lr_final`` over ``progress`` (the
    paper anneals it over its iterations: ``--meta-step 1 --meta-step-final 0`` on Omniglot).
    The paper's inner optimizer is Adam; this one is SGD at α, as :mod:`mamlbook.reptile`.
    """

    name = "reptile"

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
                     inner_steps=self.inner_steps, outer_lr=self.epsilon(progress), loss_fn=self.loss_fn)
        return None


class ANIL(Algorithm):
    """ANIL: the inner loop (training and test) adapts the head only; ``head`` defaults to the last Linear."""

    name = "anil"

    def __init__(self, model, params, *, head: str | None = None, **kw):
        super().__init__(model, params, **kw)
        self.head = head or default_head(model)

    def _backward(self, x_s, y_s, x_q, y_q, iteration):
        return anil_meta_backward(self.model, self.params, x_s, y_s, x_q, y_q, head=self.head,
                                  inner_lr=self.inner_lr, inner_steps=self.inner_steps,
                                  loss_fn=self.loss_fn)

    def _adapt(self, theta, x_s, y_s, steps):
        return adapt_head(self.model, theta, x_s, y_s, head=self.head, inner_lr=self.inner_lr,
                          inner_steps=steps, loss_fn=self.loss_fn, first_order=True)


class MetaSGD(Algorithm):
    """Meta-SGD: α has θ's shape and is meta-learned with θ, initialised to ``inner_lr`` everywhere.

    (Li et al. draw α at random; filling it with MAML's α makes the first step MAML's.)
    """

    name = "metasgd"

    def __init__(self, model, params, **kw):
        super().__init__(model, params, **kw)
        self.inner_lrs = init_inner_lrs(params, self.inner_lr)

    def meta_parameters(self):
        return list(self.params.values()) + list(self.inner_lrs.values())

    def extra_state(self):
        return {"inner_lrs": self.inner_lrs}

    def _backward(self, x_s, y_s, x_q, y_q, iteration):
        return metasgd_meta_backward(self.model, self.params, self.inner_lrs, x_s, y_s, x_q, y_q,
                                     inner_steps=self.inner_steps, loss_fn=self.loss_fn)

    def _adapt(self, theta, x_s, y_s, steps):
        lrs = {k: v.detach() for k, v in self.inner_lrs.items()}
        return metasgd_adapt(self.model, theta, lrs, x_s, y_s, inner_steps=steps, loss_fn=self.loss_fn,
                             first_order=True)


class MAMLPlusPlus(Algorithm):
    """MAML++'s multi-step loss, per-layer per-step learned rates and derivative-order annealing.

    Defaults from the authors' Omniglot configuration (HowToTrainYourMAMLPytorch,
    ``experiment_config/omniglot_maml++-omniglot_1_8_0.1_64_5_0.json``): 5 inner steps at train
    and test, ``multi_step_loss_num_epochs`` 10 of ``total_iter_per_epoch`` 500 iterations,
    ``first_order_to_second_order_epoch`` −1 (second order from the start: ``first_order_epochs=0``).
    ``per_step_bn=True`` adds MAML++'s per-step BatchNorm (:mod:`mamlbook.mamlpp_bn`: one learned
    BN shift/scale per inner step, not adapted in the inner loop; models with
    :class:`mamlbook.conv.BatchNorm` only). Off by default, and off in chapter 8's comparison.
    The cosine schedule of β is not used here.
    """

    name = "mamlpp"

    def __init__(self, model, params, *, inner_steps: int = 5, anneal_epochs: int = 10,
                 iterations_per_epoch: int = 500, first_order_epochs: int = 0, per_step_bn: bool = False,
                 **kw):
        super().__init__(model, params, inner_steps=inner_steps, **kw)
        if self.test_steps > inner_steps:
            raise ValueError(f"MAML++ learns one rate per step: test_steps ({self.test_steps}) "
                             f"cannot exceed inner_steps ({inner_steps})")
        self.anneal_epochs, self.iterations_per_epoch = anneal_epochs, iterations_per_epoch
        self.first_order_epochs = first_order_epochs
        # With per-step BN, θ's own BN entries are replaced by (N, C) per-step rows, and the
        # inner loop adapts (and has learned rates for) the rest of θ only.
        self.step_bn = init_per_step_bn(model, inner_steps, params) if per_step_bn else None
        self.inner_params = without_bn(model, params) if per_step_bn else params
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
        loss = mamlpp_meta_loss(self.model, self.inner_params, self.lrs, x_s, y_s, x_q, y_q,
                                loss_weights=weights, loss_fn=self.loss_fn,
                                first_order=use_first_order(epoch, self.first_order_epochs),
                                step_bn=self.step_bn)
        loss.backward()
        return loss.detach()

    def _adapt(self, theta, x_s, y_s, steps):
        if steps > self.inner_steps:
            raise ValueError(f"MAML++ has learned rates for {self.inner_steps} steps, not {steps}")
        lrs = {k: v.detach()[:steps] for k, v in self.lrs.items()}
        step_bn = None
        if self.step_bn is not None:
            theta = without_bn(self.model, theta)
            step_bn = {k: v.detach()[:steps] for k, v in self.step_bn.items()}
        return adapt_per_step(self.model, theta, lrs, x_s, y_s, inner_steps=steps,
                              loss_fn=self.loss_fn, first_order=True, step_bn=step_bn)[-1]


class ProtoNet(Algorithm):
    """Prototypical Networks on the model without its head (Conv4 → its 64-d features).

    No inner loop and no α: ``inner_lr``/``inner_steps`` are ignored. Support and query are
    embedded in one forward pass (as :mod:`mamlbook.protonet`, after the authors' code), at
    training and at test, so batch-statistics BatchNorm sees the same batches in both.
    """

    name = "protonet"
    has_inner_loop = False

    def __init__(self, model, params, *, problem: str, head: str | None = None, **kw):
        if problem != "classification":
            raise ValueError("Prototypical Networks classify by the nearest class prototype; they have "
                             f"no meaning for {problem!r} (use problem='classification', or another "
                             f"algorithm: {', '.join(a for a in ALGORITHMS if a != 'protonet')})")
        super().__init__(model, params, problem=problem, **kw)
        self.inner_lr, self.inner_steps, self.test_steps = None, 0, 0
        self.head = head or default_head(model)
        self.embedder = _without(model, self.head)
        self.body = {k: v for k, v in params.items() if not k.startswith(self.head)}

    def meta_parameters(self):
        return list(self.body.values())

    def _backward(self, x_s, y_s, x_q, y_q, iteration):
        loss = protonet_loss(self.embedder, self.body, x_s, y_s, x_q, y_q)
        loss.backward()
        return loss.detach()

    def adapt(self, x_s, y_s, steps=None) -> Predictor:
        """The task's prototypes; the predictor returns logits −‖f(x) − c_n‖² for queries x."""
        body = {k: v.detach() for k, v in self.body.items()}

        @torch.no_grad()
        def predict(x_q):
            return task_logits(self.embedder, body, x_s, y_s, x_q)
        return predict


def _without(model: nn.Module, head: str) -> nn.Module:
    """A copy of ``model`` whose module named ``head`` (without the dot) is ``nn.Identity``."""
    clone = copy.deepcopy(model)
    *path, last = head.rstrip(".").split(".")
    parent = clone.get_submodule(".".join(path)) if path else clone
    setattr(parent, last, nn.Identity())
    return clone


_CLASSES = {"maml": MAML, "fomaml": FOMAML, "reptile": Reptile, "anil": ANIL, "metasgd": MetaSGD,
            "mamlpp": MAMLPlusPlus, "protonet": ProtoNet}


def make_algorithm(name: str, model: nn.Module, params: Params | None = None, *, problem: str,
                   inner_lr: float | None = None, **options) -> Algorithm:
    """The algorithm called ``name`` (one of :data:`ALGORITHMS`) on ``model``.

    Args:
        params: θ (default: ``dict(model.named_parameters())``).
        problem: "regression" or "classification".
        inner_lr: α (required except for "protonet").
        options: ``inner_steps``, ``test_steps`` and each algorithm's own (Reptile: ``outer_lr``,
            ``outer_lr_final``; ANIL/ProtoNet: ``head``; MAML++: ``anneal_epochs``,
            ``iterations_per_epoch``, ``first_order_epochs``).
    Raises:
        ValueError: an unknown name (the message lists the choices), or protonet for regression.
    """
    if name not in _CLASSES:
        raise ValueError(f"unknown algorithm {name!r}; choose one of {', '.join(ALGORITHMS)}")
    params = dict(model.named_parameters()) if params is None else params
    return _CLASSES[name](model, params, problem=problem, inner_lr=inner_lr, **options)
