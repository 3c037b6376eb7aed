"""The learner interface every algorithm implements, and MAML / first-order MAML themselves (chapters 2, 3, 8).

Used as in :mod:`mamlbook.algorithms`, with ``MAML(model, problem=..., inner_lr=...)`` for
``make_algorithm("maml", ...)``. θ is a name → tensor dict (the model's own parameters, updated in place
by the meta-optimizer); meta-batches are (T, K|Q, ...). The options that cut across learners
(:class:`Algorithm`'s ``first_order`` to ``adapt_bn``) are implemented here once. A learner that cannot
honour an option refuses it with an :class:`~mamlbook.errors.OptionError` naming the option and the learner.
"""
from __future__ import annotations

import contextlib
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from ..amp import Amp, tf32_mode
from ..conv import batchnorm_params
from ..errors import OptionError
from ..evaluate import adaptation_curve
from ..fast import fused_mlp_step
from ..fast_tasks import task_threads_for
from ..functional import make_meta_grad
from ..maml import LossFn, Params, meta_backward, meta_loss, resolve_batched
from ..maml import adapt as maml_adapt

__all__ = ["PROBLEMS", "Predictor", "Algorithm", "AdaptedModel", "MAML", "FOMAML", "default_head",
           "make_meta_optimizer", "refuse_test_lr"]

PROBLEMS = {"regression": F.mse_loss, "classification": F.cross_entropy}
Predictor = Callable[[torch.Tensor], torch.Tensor]


def make_meta_optimizer(params, meta_lr: float = 1e-3) -> torch.optim.Optimizer:
    """Adam with the paper's meta step size β = 1e-3 (fused kernels where available).

    ``params`` is an ``nn.Module`` (Adam on its parameters θ) or a list of tensors (θ plus any
    meta-learned extras, e.g. Meta-SGD's inner learning rates).
    """
    if not meta_lr > 0:
        raise OptionError(f"meta_lr (β) must be positive, got {meta_lr}")
    params = list(params.parameters()) if isinstance(params, nn.Module) else list(params)
    try:
        return torch.optim.Adam(params, lr=meta_lr, fused=True)
    except RuntimeError:  # fused Adam needs floating-point params on a supported device
        return torch.optim.Adam(params, lr=meta_lr)


def refuse_test_lr(name: str, asked: float | None, trained: float | None) -> None:
    """Learners whose inner rates are meta-learned cannot adapt at another α: refuse one that differs."""
    if asked is not None and asked != trained:
        raise OptionError(f"--inner-lr is not available for {name}: its inner learning rates are "
                          "meta-learned; evaluate it with the rates it learned (drop --inner-lr)")


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
        params: θ (default ``dict(model.named_parameters())``): leaf tensors the optimizer updates.
        problem: "regression" (MSE) or "classification" (mean cross-entropy).
        inner_lr: α, the inner SGD step (mean-loss units; Omniglot's official 0.4 is 2.0 here).
        inner_steps: inner SGD steps in meta-training.
        test_steps: SGD steps at meta-test (default: ``inner_steps``).
        first_order: drop the second-order term (default: the class's, False but for FOMAML).
        grad_clip: clip every meta-gradient entry to ±grad_clip before the meta-optimizer's step.
        amp: mixed precision (bf16 autocast, or fp16 + GradScaler); CUDA only.
        tf32: allow TF32 convolutions/matmuls on CUDA (off by default: docs/classification.md says why).
        compile: ``torch.compile`` the outer step (MAML and first-order MAML only): for a ReLU MLP with MSE
            (no AMP), meta-gradient, clip and Adam in one graph (:func:`mamlbook.fast.fused_mlp_step`); else
            the meta-gradient, :func:`mamlbook.functional.make_meta_grad`. The path is in :attr:`path`.
        batched: True (vmap over tasks), False (loop) or "auto" (:func:`mamlbook.maml.resolve_batched`).
        adapt_bn: adapt BatchNorm's parameters in the inner loop (the book's default), or hold them at θ as
            the official code does (docs/classification.md; refused for a model without BatchNorm).
        loss_fn: replaces the problem's loss (e.g. for a custom regression loss).
    """

    name = "maml"
    first_order = False
    has_inner_loop = True
    supports = frozenset({"first_order", "grad_clip", "tf32", "batched", "adapt_bn"})   # beyond the defaults
    refusals: dict[str, str] = {}   # why it refuses an option not in ``supports`` (said in the error message)
    classification_only = ""        # a classifier only: why it has no meaning for regression
    # What outer_step trains on (Problem.sampler): "episodes", meta-batches of tasks (T, K|Q, ...); or
    # "classes", flat (x, global label) batches of the meta-train classes (the pretraining baselines).
    batches = "episodes"
    # The run record's path where it never depends on ``batched``/``compile`` (a learner that always loops
    # over tasks, or trains on flat batches); None: :attr:`path` works it out.
    fixed_path: str | None = None
    ranks = None   # the ranks sharing its meta-batch (mamlbook.distributed.distribute); None: one process

    def __init__(self, model: nn.Module, params: Params | None = None, *, problem: str,
                 inner_lr: float | None = None, inner_steps: int = 1, test_steps: int | None = None,
                 first_order: bool | None = None, grad_clip: float | None = None, amp: bool = False,
                 tf32: bool = False, compile: bool = False, batched: bool | str = "auto",
                 adapt_bn: bool = True, loss_fn: LossFn | None = None):
        if problem not in PROBLEMS:
            raise ValueError(f"problem must be one of {list(PROBLEMS)}, got {problem!r}")
        if self.classification_only and problem != "classification":
            raise OptionError(f"{self.name} {self.classification_only}; it has no meaning for {problem!r} "
                              "(use a classification preset, or another algorithm)")
        if self.has_inner_loop and not (inner_lr is not None and inner_lr > 0 and inner_steps >= 1):
            raise OptionError(f"{self.name} needs inner_lr (α) > 0 and inner_steps ≥ 1, "
                              f"got {inner_lr}, {inner_steps}")
        asked = {"first_order": first_order is not None and first_order != type(self).first_order,
                 "grad_clip": bool(grad_clip), "amp": amp, "tf32": tf32, "compile": compile,
                 "batched": batched != "auto", "adapt_bn": not adapt_bn}
        for option, on in asked.items():
            if on and option not in self.supports:
                flag = "no-adapt-bn" if option == "adapt_bn" else option.replace("_", "-")
                why = self.refusals.get(option, "this learner does not implement it")
                raise OptionError(f"{flag} is not available for {self.name}: {why}")
        if not adapt_bn and not batchnorm_params(model):
            raise OptionError(f"no-adapt-bn is not available for {self.name} on {type(model).__name__}: "
                              "the model has no BatchNorm parameters to hold out of the inner loop")
        self.model = model
        self.params = dict(model.named_parameters()) if params is None else params
        self.problem = problem
        self.loss_fn: LossFn = loss_fn or PROBLEMS[problem]
        self.inner_lr, self.inner_steps = inner_lr, inner_steps
        self.test_steps = inner_steps if test_steps is None else test_steps
        if first_order is not None:
            self.first_order = first_order
        self.grad_clip, self.tf32, self.batched, self.adapt_bn = grad_clip, tf32, batched, adapt_bn
        self.amp = Amp.create(amp, self.device)
        self._meta_grad = self._compiled_meta_grad() if compile else None

    @property
    def device(self) -> torch.device:
        return next((p.device for p in self.params.values()), torch.device("cpu"))

    def __repr__(self) -> str:
        return (f"{type(self).__name__}({self.problem}, inner_lr={self.inner_lr}, "
                f"inner_steps={self.inner_steps}, test_steps={self.test_steps}, first_order={self.first_order})")

    def options(self) -> dict:
        """The settings that define this learner's updates, for the run record."""
        return {"inner_lr": self.inner_lr, "inner_steps": self.inner_steps, "test_steps": self.test_steps,
                "first_order": self.first_order, "grad_clip": self.grad_clip, "amp": self.amp.describe(),
                "tf32": self.tf32, "compile": self._meta_grad is not None, "path": self.path, "adapt_bn": self.adapt_bn}

    @property
    def path(self) -> str:
        """How the outer step computes the meta-gradient (the run record's path: docs/benchmarks.md)."""
        if self.fixed_path is not None:
            return self.fixed_path
        if self._meta_grad is not None:
            return getattr(self._meta_grad, "path", "compiled-vmap")
        if self._task_threads() is not None:
            return self._task_threads().path
        return "vmap" if resolve_batched(self.model, self.batched, self.device) else "per-task-loop"

    def _task_threads(self):
        """MAML's per-task loop on all CPU cores (:mod:`mamlbook.fast_tasks`) where that is the default."""
        if not hasattr(self, "_threads"):
            own = (type(self)._backward is not Algorithm._backward          # learners with their own
                   or type(self).outer_step is not Algorithm.outer_step)    # meta-gradient or update
            self._threads = None if own else task_threads_for(self.model, self.batched, self.device)
        return self._threads

    @contextlib.contextmanager
    def on_this_thread(self):
        """Run the outer step on the calling thread only, e.g. under a memory probe: autograd's
        saved-tensor hooks are per thread, so worker threads' graphs would go unseen. Same numbers."""
        threads = self._task_threads()
        self._threads = None
        try:
            yield
        finally:
            self._threads = threads

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

    def state_dict(self) -> dict:
        """Everything a checkpoint needs to restore this learner: θ, meta-learned extras, the AMP scaler."""
        state = {"model": self.model.state_dict(), "extra": self.extra_state()}
        if self.amp.scaler is not None:
            state["scaler"] = self.amp.scaler.state_dict()
        return state

    def load_state_dict(self, state: dict) -> None:
        """Restore :meth:`state_dict` (θ in place, so optimizers keep pointing at the same tensors)."""
        self.model.load_state_dict(state["model"])
        self.load_extra_state(state["extra"])
        if self.amp.scaler is not None and "scaler" in state:
            self.amp.scaler.load_state_dict(state["scaler"])

    def make_optimizer(self, meta_lr: float = 1e-3) -> torch.optim.Optimizer | None:
        """Adam(β = ``meta_lr``) on :meth:`meta_parameters` (None for Reptile)."""
        return make_meta_optimizer(self.meta_parameters(), meta_lr)

    def outer_step(self, optimizer, x_s, y_s, x_q, y_q, iteration: int = 0,
                   progress: float = 0.0) -> float | None:
        """One meta-update on a meta-batch (T, K|Q, ...); returns the outer loss (None for Reptile).

        ``iteration`` drives MAML++'s schedules; ``progress`` (fraction of training done, in
        [0, 1)) drives Reptile's ε annealing. The meta-gradient is clipped to ±``grad_clip``
        (after unscaling, with fp16 AMP) before the optimizer's step. Across ``ranks`` (each holding
        T/N tasks) it is first averaged over the ranks: the gradient of the mean loss over all T.
        """
        fused = getattr(self._meta_grad, "step", None)   # one compiled call: meta-gradient, clip and Adam
        scaler = self.amp.scaler
        if fused is not None and self.ranks is None and scaler is None:
            loss = fused(optimizer, self.params, x_s, y_s, x_q, y_q)
            if loss is not None:                            # None: an optimizer it cannot fuse
                return float(loss)
        optimizer.zero_grad(set_to_none=True)
        with tf32_mode(self.tf32), self.amp.autocast():   # fp16: the scaler needs the whole loss before backward
            loss = (self._backward if scaler is None else self._loss)(x_s, y_s, x_q, y_q, iteration)
        if scaler is not None:
            scaler.scale(loss).backward()
        if self.ranks is not None:            # scaled grads with fp16: every rank's scaler then sees the same infs
            loss = self.ranks.average_gradients(self.meta_parameters(), loss)
        if scaler is not None:
            scaler.unscale_(optimizer)
        if self.grad_clip:
            torch.nn.utils.clip_grad_value_(self.meta_parameters(), self.grad_clip)
        if scaler is not None:
            scaler.step(optimizer)
            scaler.update()
        else:
            optimizer.step()
        return float(loss)

    def _maml_kwargs(self) -> dict:
        """MAML's inner-loop settings, as :mod:`mamlbook.maml`'s functions take them."""
        return dict(inner_lr=self.inner_lr, inner_steps=self.inner_steps, loss_fn=self.loss_fn,
                    first_order=self.first_order, adapt_bn=self.adapt_bn)

    def _loss(self, x_s, y_s, x_q, y_q, iteration):
        return meta_loss(self.model, self.params, x_s, y_s, x_q, y_q, batched=self.batched, **self._maml_kwargs())

    def _backward(self, x_s, y_s, x_q, y_q, iteration):
        if self._meta_grad is not None:       # one compiled torch.func graph for the whole meta-batch
            grads, loss = self._meta_grad({k: v.detach() for k, v in self.params.items()}, x_s, y_s, x_q, y_q)
            for name, p in self.params.items():
                p.grad = grads[name]
            return loss
        if self._task_threads() is not None:  # the per-task loop, tasks on all cores: the same numbers
            return self._threads.meta_backward(self.params, x_s, y_s, x_q, y_q, **self._maml_kwargs())
        return meta_backward(self.model, self.params, x_s, y_s, x_q, y_q, batched=self.batched,
                             **self._maml_kwargs())

    def _compiled_meta_grad(self):
        fused = fused_mlp_step(self.model, loss_fn=self.loss_fn, inner_lr=self.inner_lr,   # ReLU MLP + MSE
                               inner_steps=self.inner_steps, first_order=self.first_order,
                               grad_clip=self.grad_clip, amp=self.amp.enabled, device=self.device)
        if fused is not None and set(fused.names) == set(self.params):
            return fused
        return make_meta_grad(self.model, compile=True, **self._maml_kwargs())

    def adapt(self, x_s: torch.Tensor, y_s: torch.Tensor, steps: int | None = None,
              inner_lr: float | None = None) -> Predictor:
        """Adapt to one task's support set (K, ...) with ``steps`` (default ``test_steps``) steps.

        ``inner_lr`` replaces the training α at test time (learners with learned rates refuse it).
        Returns a function from query inputs (Q, ...) to predictions (Q, ...) or logits (Q, N).
        Meta-test adaptation needs no second-order graph: the adapted tensors are detached.
        """
        steps = self.test_steps if steps is None else steps
        theta = {k: v.detach().requires_grad_() for k, v in self.params.items()}
        with torch.enable_grad():
            adapted = self._adapt(theta, x_s, y_s, steps, inner_lr or self.inner_lr) if steps > 0 else theta
        return AdaptedModel(self.model, {k: v.detach() for k, v in adapted.items()})

    def _adapt(self, theta, x_s, y_s, steps, inner_lr):
        return maml_adapt(self.model, theta, x_s, y_s, inner_lr=inner_lr, inner_steps=steps,
                          loss_fn=self.loss_fn, first_order=True, adapt_bn=self.adapt_bn)

    def default_eval_steps(self) -> list[int]:
        """The adaptation steps a meta-test reports by default: the learner's own ``test_steps``."""
        return [self.test_steps]

    @torch.no_grad()
    def score_tasks(self, x_s, y_s, x_q, y_q, *, steps: list[int], metric, inner_lr: float | None = None):
        """Per-task ``metric`` (tasks, len(steps)) on tasks (T, K|Q, ...) after each number of ``steps``."""
        rows = [[metric(self.adapt(x_s[i], y_s[i], steps=s, inner_lr=inner_lr)(x_q[i]), y_q[i])
                 for s in steps] for i in range(x_s.shape[0])]
        return torch.tensor([[float(v) for v in row] for row in rows], dtype=torch.float64)


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
    supports = frozenset({"first_order", "grad_clip", "tf32", "batched", "amp", "compile", "adapt_bn"})

    def default_eval_steps(self) -> list[int]:
        """0, 1, …, max(10, test_steps): the official code's adaptation curve, cheap to record in one pass."""
        return list(range(max(10, self.test_steps) + 1))

    def score_tasks(self, x_s, y_s, x_q, y_q, *, steps, metric, inner_lr=None):
        """As :meth:`Algorithm.score_tasks`, by one incremental SGD curve (``evaluate.adaptation_curve``)."""
        curve = adaptation_curve(self.model, self.params, x_s, y_s, x_q, y_q, inner_lr=inner_lr or self.inner_lr,
                                 max_steps=max(steps), loss_fn=self.loss_fn, metric_fn=metric, adapt_bn=self.adapt_bn)
        return curve[:, list(steps)].double()                                  # (T, len(steps))


class FOMAML(MAML):
    """First-order MAML: :class:`MAML` with the inner gradients treated as constants."""

    name = "fomaml"
    first_order = True
