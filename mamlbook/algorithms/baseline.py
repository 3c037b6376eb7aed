"""Baseline and Baseline++ (Chen, Liu, Kira, Wang & Huang, ICLR 2019): no meta-learning at all (chapter 10).

"A Closer Look at Few-shot Classification" (arXiv:1904.04232) asks whether meta-learning is needed:
train the network as an ordinary classifier over ALL C meta-train classes, then per test task keep
its body, throw its head away and fit a new head on the N·K support images.

Pretraining (what :func:`mamlbook.train.fit` runs; flat batches (x, global class label), no tasks):

    Baseline:    logits = W f_θ(x) + b                       W: (C, D), b: (C,)
    Baseline++:  logits = s · cos(w_c, f_θ(x)) = s · ŵ_c·f̂(x) ŵ = w/‖w‖, f̂ = f/‖f‖; s = 2 (C ≤ 200), else 10
    min over θ, W (, b) of the mean cross-entropy         Adam, β = 1e-3, batches of 16 images

Meta-test, per task (the body frozen: f_s = f_θ(x_support), (N·K, D)):

    Baseline:    (W*, b*) = argmin mean_s CE(W f_s + b, y_s) + (λ/2)(‖W‖² + ‖b‖²),   λ = 1e-3
    Baseline++:  W*       = argmin mean_s CE(s · cos(w_c, f_s), y_s),               s = 2 (N ≤ 200)

and the queries are classified by the new head. The Baseline's problem is strictly convex (one
solution); :func:`fit_linear_heads` finds it by Newton's method to a gradient of 1e-6 (float32) or
1e-12 (float64), and tests/test_baseline.py checks it against an explicit-Hessian Newton solve in
float64. Baseline++'s (not convex) is solved by L-BFGS from the class means.

Sources ([C] = wyharveychen/CloserLookFewShot, the authors' code) and this book's choices:

- Pretraining: Adam at PyTorch's default lr 1e-3 and batches of 16 images ([C] ``train.py``:
  ``torch.optim.Adam(model.parameters())``, ``SimpleDataManager(image_size, batch_size = 16)``;
  §4.1 of the paper: "Adam optimizer with initial learning rate 10^-3"). [C] trains 5 epochs on
  Omniglot and 400 on mini-ImageNet (``stop_epoch``) and keeps the last epoch; here the preset's
  iterations (or ``--time-budget``) decide, and validation on the meta-val split picks ``best.pt``,
  as for every learner in the book. The linear head's bias starts at 0 ([C] ``baselinetrain.py``).
- Baseline++'s scale: [C] ``backbone.py`` ``distLinear``: 2 for ≤ 200 outputs, 10 above ("in omniglot, a
  larger scale factor is required to handle >1000 output classes"). [C] also multiplies each class's
  cosine by a learnable norm g_c (``WeightNorm``, its issues #4 and #8); here the head is the plain
  scaled cosine the paper describes.
- The new head: [C] ``baselinefinetune.py`` fits it from a random start with SGD (lr 0.01, momentum 0.9,
  dampening 0.9, weight decay 1e-3, batches of 4) and stops after 100 epochs. This book minimises the
  same weight-decayed objective (λ = [C]'s 1e-3, on weight and bias as SGD's weight decay does) to its
  optimum instead: no batch-order randomness, and a head a test can check. Baseline++'s new head has
  no decay (the cosine ignores ‖w_c‖, the only thing decay would shrink) and starts at the class means
  of the normalised support features, so it is deterministic too.
- BatchNorm uses batch statistics (support and query each as one batch), as every learner here; [C]
  evaluates with running statistics (``model.eval()``). No data augmentation (none on Omniglot in [C]).

The head is the model's last ``nn.Linear`` (``classifier.`` for Conv4); the model's own head is not used.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from ..errors import OptionError
from ..maml import Params, backward_detached
from .base import Algorithm, default_head
from .imaml import conjugate_gradient
from .protonet import without_head

__all__ = ["CHEN_WEIGHT_DECAY", "chen_scale", "normalize", "cosine_logits", "fit_linear_heads",
           "fit_cosine_heads", "FittedHead", "Baseline", "BaselinePlusPlus"]

CHEN_WEIGHT_DECAY = 1e-3      # [C] baselinefinetune.py: SGD(..., weight_decay=0.001) for the new head


def chen_scale(num_classes: int) -> float:
    """Baseline++'s cosine scale s for ``num_classes`` outputs: 2 up to 200, else 10 ([C] distLinear)."""
    return 2.0 if num_classes <= 200 else 10.0


def normalize(features: torch.Tensor) -> torch.Tensor:
    """Each row divided by its L2 norm: (..., D) → (..., D) of norm 1."""
    return features / features.norm(dim=-1, keepdim=True)


def cosine_logits(features: torch.Tensor, weight: torch.Tensor, scale: float) -> torch.Tensor:
    """s · cos(w_c, f): features (..., B, D) and class vectors (..., N, D) → logits (..., B, N)."""
    return scale * normalize(features) @ normalize(weight).transpose(-1, -2)


def _tolerance(dtype: torch.dtype) -> float:
    """The gradient a head fit stops at: 1e-12 in float64, 1e-6 in float32 (near their rounding floors)."""
    return 1e-12 if dtype == torch.float64 else 1e-6


def _mean_ce(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Σ over tasks of each task's mean cross-entropy: logits (T, S, N), labels (T, S)."""
    t, s, n = logits.shape
    return F.cross_entropy(logits.reshape(t * s, n), labels.reshape(-1), reduction="sum") / s


def fit_linear_heads(features: torch.Tensor, labels: torch.Tensor, n_way: int, *, weight_decay: float,
                     bias_decay: float | None = None, max_iter: int = 100,
                     tol: float | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Multinomial logistic regression per task, to its optimum: (W (T, N, D), b (T, N)).

    Task t's head minimises mean_s CE(W f_s + b, y_s) + (weight_decay/2)‖W‖² + (bias_decay/2)‖b‖²
    (``bias_decay`` defaults to ``weight_decay``) over its features (T, S, D) and labels (T, S) in
    0..N−1. The tasks are independent, so one solver run on the sum of their objectives solves all
    of them: Newton's method from W = 0, b = 0 (the Hessian applied by hand, each Newton system
    solved by conjugate gradient, the step halved until the objective decreases), at most
    ``max_iter`` Newton steps, until every gradient entry is within ``tol`` of 0. With
    ``bias_decay=0`` the optimal b is unique only up to a constant; starting from 0 gives the one
    whose entries sum to 0 (every gradient of b does).
    """
    bias_decay = weight_decay if bias_decay is None else bias_decay
    tol = tol or _tolerance(features.dtype)
    f = features.detach()
    t, s, d = f.shape
    onehot = F.one_hot(labels, n_way).to(f.dtype)                                    # (T, S, N)
    w, b = f.new_zeros(t, n_way, d), f.new_zeros(t, n_way)

    def objective(w, b):
        logits = f @ w.transpose(1, 2) + b[:, None, :]                               # (T, S, N)
        return (_mean_ce(logits, labels) + 0.5 * weight_decay * (w * w).sum()
                + 0.5 * bias_decay * (b * b).sum())
    value = objective(w, b)
    for _ in range(max_iter):
        p = torch.softmax(f @ w.transpose(1, 2) + b[:, None, :], dim=-1)            # (T, S, N)
        r = (p - onehot) / s
        grad = torch.cat([(r.transpose(1, 2) @ f + weight_decay * w).flatten(),
                          (r.sum(1) + bias_decay * b).flatten()])
        if grad.abs().max() <= tol:
            break

        def hessian_times(v, p=p):                                # H v for v = (V (T, N, D), c (T, N)), flat
            vw, vb = v[:w.numel()].view_as(w), v[w.numel():].view_as(b)
            dz = f @ vw.transpose(1, 2) + vb[:, None, :]                             # (T, S, N)
            dp = p * (dz - (p * dz).sum(-1, keepdim=True))                           # d softmax
            return torch.cat([(dp.transpose(1, 2) @ f / s + weight_decay * vw).flatten(),
                              (dp.sum(1) / s + bias_decay * vb).flatten()])
        rtol = min(0.1, float(grad.abs().max()) ** 0.5)          # solve more exactly as the optimum nears
        step = conjugate_gradient(hessian_times, -grad, min(grad.numel(), 500), rtol=rtol)
        for _ in range(40):                                       # backtrack: halve until the objective drops
            w_next, b_next = w + step[:w.numel()].view_as(w), b + step[w.numel():].view_as(b)
            next_value = objective(w_next, b_next)
            if next_value < value:
                break
            step = step / 2
        else:
            break                                                 # rounding noise: nothing left to gain
        w, b, value = w_next, b_next, next_value
    return w, b


def fit_cosine_heads(features: torch.Tensor, labels: torch.Tensor, n_way: int, *, scale: float,
                     max_iter: int = 1000, tol: float | None = None) -> torch.Tensor:
    """Baseline++'s new heads: class vectors W (T, N, D) minimising mean_s CE(s · cos(w_c, f_s), y_s).

    Starts at each class's mean normalised support feature, then L-BFGS (strong-Wolfe line search) until
    every gradient entry is within ``tol`` of 0, a step no longer moves anything, or after ``max_iter``
    iterations. Features (T, S, D), labels (T, S).
    """
    f = features.detach()
    onehot = F.one_hot(labels, n_way).to(f.dtype)                                    # (T, S, N)
    w = (onehot.transpose(1, 2) @ normalize(f) / onehot.sum(1).clamp(min=1)[..., None]).requires_grad_()  # (T, N, D)
    opt = torch.optim.LBFGS([w], lr=1.0, max_iter=max_iter, max_eval=2 * max_iter,
                            tolerance_grad=tol or _tolerance(f.dtype), tolerance_change=0.0, history_size=50,
                            line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = _mean_ce(cosine_logits(f, w, scale), labels)
        loss.backward()
        return loss
    with torch.enable_grad():
        opt.step(closure)
    return w.detach()


class FittedHead:
    """One task's classifier: the frozen body's features, then the head fitted on its support set.

    ``params`` holds that head ("weight" (N, D), and "bias" (N,) for a linear head); calling the
    object on query images (Q, ...) returns their logits (Q, N).
    """

    def __init__(self, learner: "Baseline", params: Params):
        self.learner, self.params = learner, params

    @torch.no_grad()
    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        heads = {k: v.unsqueeze(0) for k, v in self.params.items()}
        return self.learner.head_logits(heads, self.learner.features(x).unsqueeze(0))[0]


class Baseline(Algorithm):
    """Chen et al.'s Baseline: a linear classifier over all meta-train classes, a new linear head per task.

    Args:
        num_classes: C, the meta-train classes (``Problem.num_classes``); the pretraining head's size.
        batch_size: images per pretraining step (16, [C]).
        weight_decay: λ of the new head's objective (1e-3, [C]).
        head: the model's head prefix (default: its last ``nn.Linear``), replaced by the learner's own.
        max_iter: the iteration cap of a head fit (Newton steps; L-BFGS iterations for Baseline++).
    """

    name = "baseline"
    batches = "classes"
    has_inner_loop = False
    supports = frozenset({"grad_clip", "tf32"})
    fixed_path = "flat-batch"        # ordinary classification: one batch of images, no tasks
    cosine = False
    refusals = dict.fromkeys(("first_order", "batched", "adapt_bn"), "it pretrains an ordinary classifier on flat "
                             "batches of images: no tasks, no meta-gradient")
    classification_only = "pretrains a classifier over the meta-train classes"

    def __init__(self, model: nn.Module, params: Params | None = None, *, num_classes: int | None = None,
                 batch_size: int = 16, weight_decay: float = CHEN_WEIGHT_DECAY, head: str | None = None,
                 max_iter: int = 1000, **kw):
        self._check_inner_options(kw)
        super().__init__(model, params, **kw)
        if not (num_classes and num_classes >= 2):
            raise OptionError(f"{self.name} needs num_classes ≥ 2, the number of meta-train classes its "
                              f"pretraining head covers (Problem.num_classes), got {num_classes}")
        if batch_size < 1 or max_iter < 1 or weight_decay < 0:
            raise OptionError(f"{self.name} needs batch_size ≥ 1, max_iter ≥ 1 and weight_decay ≥ 0, got "
                              f"{batch_size}, {max_iter}, {weight_decay}")
        self.inner_lr, self.inner_steps, self.test_steps = None, 0, 0
        self.num_classes, self.batch_size, self.weight_decay = num_classes, batch_size, weight_decay
        self.max_iter = max_iter
        self.head = head or default_head(model)
        self.embedder = without_head(model, self.head)
        self.body = {k: v for k, v in self.params.items() if not k.startswith(self.head)}
        first = next(iter(self.body.values()))
        layer = nn.Linear(model.get_submodule(self.head.rstrip(".")).in_features, num_classes,
                          bias=not self.cosine)                       # PyTorch's init, global RNG
        if layer.bias is not None:
            nn.init.zeros_(layer.bias)                                # [C]: bias.data.fill_(0)
        self.pretrain_head = {k: v.detach().to(first).requires_grad_() for k, v in layer.named_parameters()}
        self.pretrain_scale = chen_scale(num_classes)

    def _check_inner_options(self, kw: dict) -> None:
        given = [k for k in ("inner_lr", "inner_steps", "test_steps") if kw.pop(k, None) is not None]
        if given:
            raise OptionError(f"{', '.join(given)} not available for {self.name}: it has no inner loop (its "
                              "new head is fitted to convergence, not by steps at a learning rate)")

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(classification, {self.num_classes} pretraining classes, "
                f"batch_size={self.batch_size})")

    def options(self) -> dict:
        return {**super().options(), "num_classes": self.num_classes, "batch_size": self.batch_size,
                "weight_decay": self.weight_decay, "max_iter": self.max_iter}

    def meta_parameters(self) -> list[torch.Tensor]:
        return list(self.body.values()) + list(self.pretrain_head.values())

    def extra_state(self) -> dict[str, Params]:
        return {"pretrain_head": self.pretrain_head}

    # ------------------------------------------------------------------------- pretraining

    def pretrain_logits(self, x: torch.Tensor) -> torch.Tensor:
        """Logits (B, C) over all meta-train classes for images (B, ...)."""
        f = functional_call(self.embedder, self.body, (x,))                          # (B, D)
        if self.cosine:
            return cosine_logits(f, self.pretrain_head["weight"], self.pretrain_scale)
        return f @ self.pretrain_head["weight"].T + self.pretrain_head["bias"]

    def outer_step(self, optimizer, *batch, iteration: int = 0, progress: float = 0.0) -> float:
        """One Adam step of ordinary classification on a flat batch (x (B, ...), global labels y (B,))."""
        if len(batch) != 2:
            raise OptionError(f"{self.name} trains on flat batches (x, global class label) of the meta-train "
                              f"classes, got {len(batch)} tensors: draw them with problem.sampler(learner)")
        return super().outer_step(optimizer, *batch, None, None, iteration=iteration, progress=progress)

    def _loss(self, x, y, x_q, y_q, iteration):
        return F.cross_entropy(self.pretrain_logits(x), y)

    def _backward(self, x, y, x_q, y_q, iteration):
        return backward_detached(self._loss(x, y, x_q, y_q, iteration))

    # ------------------------------------------------------------------------- meta-test

    @torch.no_grad()
    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The frozen body's features (B, D) of images (B, ...): one batch, one set of BN statistics."""
        return functional_call(self.embedder, {k: v.detach() for k, v in self.body.items()}, (x,))

    def fit_heads(self, f_s: torch.Tensor, y_s: torch.Tensor, n_way: int) -> Params:
        """New heads for T tasks from their support features (T, S, D) and labels (T, S)."""
        w, b = fit_linear_heads(f_s, y_s, n_way, weight_decay=self.weight_decay, max_iter=self.max_iter)
        return {"weight": w, "bias": b}

    def head_logits(self, heads: Params, f_q: torch.Tensor) -> torch.Tensor:
        """Logits (T, Q, N) of query features (T, Q, D) under per-task heads."""
        return f_q @ heads["weight"].transpose(1, 2) + heads["bias"][:, None, :]

    def _check_test(self, steps, inner_lr) -> None:
        if any(steps) or inner_lr is not None:
            raise OptionError(f"--steps and --inner-lr are not available for {self.name}: its new head is "
                              "fitted to convergence, not by a number of steps at a learning rate")

    def adapt(self, x_s: torch.Tensor, y_s: torch.Tensor, steps: int | None = None,
              inner_lr: float | None = None) -> FittedHead:
        """The task's classifier: a new head fitted on the frozen body's support features."""
        self._check_test([steps or 0], inner_lr)
        heads = self.fit_heads(self.features(x_s).unsqueeze(0), y_s.unsqueeze(0), int(y_s.max()) + 1)
        return FittedHead(self, {k: v[0] for k, v in heads.items()})

    @torch.no_grad()
    def score_tasks(self, x_s, y_s, x_q, y_q, *, steps, metric, inner_lr=None):
        """Per-task ``metric`` (T, len(steps)); the T tasks' heads are fitted together (summed objectives)."""
        self._check_test(steps, inner_lr)
        f_s = torch.stack([self.features(x) for x in x_s])                            # (T, S, D)
        f_q = torch.stack([self.features(x) for x in x_q])                            # (T, Q, D)
        logits = self.head_logits(self.fit_heads(f_s, y_s, int(y_s.max()) + 1), f_q)  # (T, Q, N)
        rows = [[float(metric(logits[i], y_q[i]))] * len(steps) for i in range(x_s.shape[0])]
        return torch.tensor(rows, dtype=torch.float64)


class BaselinePlusPlus(Baseline):
    """Baseline++: the same, with scaled-cosine heads (s = 2 for ≤ 200 classes, 10 above; [C] distLinear)."""

    name = "baselinepp"
    cosine = True

    def __init__(self, model: nn.Module, params: Params | None = None, *, weight_decay: float | None = None,
                 **kw):
        if weight_decay is not None:
            raise OptionError("weight_decay is not available for baselinepp: the cosine ignores ‖w_c‖, the "
                              "only thing weight decay would shrink")
        super().__init__(model, params, **kw)

    def options(self) -> dict:
        return {**super().options(), "weight_decay": 0.0, "pretrain_scale": self.pretrain_scale}

    def fit_heads(self, f_s, y_s, n_way):
        return {"weight": fit_cosine_heads(f_s, y_s, n_way, scale=chen_scale(n_way), max_iter=self.max_iter)}

    def head_logits(self, heads, f_q):
        return cosine_logits(f_q, heads["weight"], chen_scale(heads["weight"].shape[1]))
