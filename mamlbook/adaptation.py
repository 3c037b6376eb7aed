"""What test-time adaptation changes, what non-mutually-exclusive tasks teach, and what a meta-step costs (chapter 10).

Chapter 10 asks whether meta-learning is needed. Its measurements, one function each: how much
adaptation changes a network's body (:func:`linear_cka`, linear centred kernel alignment: Kornblith,
Norouzi, Lee & Hinton, ICML 2019; Raghu, Raghu, Bengio & Vinyals, ICLR 2020, ask the same with CCA;
:func:`layer_features`, :func:`relative_change`), non-mutually-exclusive tasks (:func:`grouped_tasks`:
Yin, Tucker, Zhou, Levine & Finn, ICLR 2020, "Meta-Learning without Memorization") and the cost of the
meta-gradient against inner steps (:func:`meta_step_cost`).
"""
from __future__ import annotations

import statistics
import time
from typing import Sequence

import torch
from torch import nn
from torch.func import functional_call

from .compare import SavedGraphPeak
from .data import ClassImages, Episodes
from .maml import Params

__all__ = ["linear_cka", "layer_features", "relative_change", "grouped_tasks", "meta_step_cost"]


def linear_cka(x: torch.Tensor, y: torch.Tensor) -> float:
    """Linear CKA between two representations of the same n inputs: x (n, ...), y (n, ...) → a number in [0, 1].

    With X, Y the features flattened to (n, p) and (n, q) and each column centred,

        CKA(X, Y) = ‖Yᵀ X‖²_F / (‖Xᵀ X‖_F · ‖Yᵀ Y‖_F) = ⟨K, L⟩ / (‖K‖_F ‖L‖_F),   K = X Xᵀ, L = Y Yᵀ,

    computed with the n × n Gram matrices K and L (cheap when p, q ≫ n) in float64. It is 1 when Y is
    an orthogonal transform of X times a scale, and unchanged by either; 0 when the centred
    representations are orthogonal.

    Raises:
        ValueError: different numbers of inputs, or a representation that is the same for every input.
    """
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"linear_cka compares two representations of the same inputs: got {x.shape[0]} "
                         f"and {y.shape[0]} rows")
    x, y = (t.detach().reshape(t.shape[0], -1).double() for t in (x, y))
    x, y = x - x.mean(dim=0), y - y.mean(dim=0)                     # centre every feature over the inputs
    k, l_ = x @ x.T, y @ y.T                                         # (n, n) Gram matrices
    norm = k.norm() * l_.norm()
    if norm == 0:
        raise ValueError("linear_cka is undefined for a representation that is the same for every input")
    return float((k * l_).sum() / norm)


@torch.no_grad()
def layer_features(model: nn.Module, params: Params, x: torch.Tensor, layers: Sequence[str]
                   ) -> dict[str, torch.Tensor]:
    """{layer: its output (B, D), flattened} for inputs x (B, ...) with the model run on ``params``.

    ``layers`` are submodule names (``model.get_submodule``), e.g. ``"features.0"`` for Conv4's first
    block. One forward pass: batch-statistics BatchNorm sees the whole batch, as in adaptation.
    """
    out, hooks = {}, []
    for name in layers:
        def keep(module, inputs, output, name=name):
            out[name] = output.detach().reshape(output.shape[0], -1)
        hooks.append(model.get_submodule(name).register_forward_hook(keep))
    try:
        functional_call(model, {k: v.detach() for k, v in params.items()}, (x,))
    finally:
        for h in hooks:
            h.remove()
    return {name: out[name] for name in layers}


def relative_change(before: Params, after: Params) -> dict[str, float]:
    """{name: ‖after − before‖ / ‖before‖} for every tensor of ``before`` (Frobenius norms)."""
    return {k: float((after[k].detach() - v.detach()).norm() / v.detach().norm()) for k, v in before.items()}


def grouped_tasks(split: ClassImages, groups: torch.Tensor, *, k_shot: int, k_query: int, num_tasks: int,
                  generator: torch.Generator, shuffle_labels: bool) -> Episodes:
    """``num_tasks`` N-way tasks drawn from a fixed pool of classes split into N groups.

    Task t takes one class from each group, uniformly (``groups`` (N, M) holds class indices of
    ``split``), and K + Q distinct images of each. Without ``shuffle_labels`` the class from group n is
    always labelled n: every class keeps one label in every task, so the tasks are not mutually
    exclusive and one network can solve them all without looking at the support set (Yin et al.
    2020). With ``shuffle_labels`` each task permutes the labels at random (the support and the query
    of a task share the permutation), as ordinary episodes do.

    Returns:
        :class:`~mamlbook.data.Episodes`: x (T, N·K|N·Q, C, H, W) float32 in [0, 1], labels (T, N·K|N·Q)
        sorted by class (n repeated K times), and ``classes`` (T, N): the class behind label n.
    """
    n_way, per_group = groups.shape
    if k_shot < 1 or k_query < 0 or num_tasks < 1:
        raise ValueError(f"need k_shot ≥ 1, k_query ≥ 0, num_tasks ≥ 1; got {k_shot}, {k_query}, {num_tasks}")
    if int(split.counts[groups.flatten()].min()) < k_shot + k_query:
        raise ValueError(f"a class of the pool has fewer than K + Q = {k_shot + k_query} images")
    pick = torch.randint(per_group, (num_tasks, n_way), generator=generator)          # (T, N)
    classes = groups.cpu()[torch.arange(n_way)[None, :], pick]                         # (T, N): group n's class
    if shuffle_labels:
        order = torch.rand(num_tasks, n_way, generator=generator).argsort(dim=1)       # a permutation per task
        classes = classes.gather(1, order)                                             # label j ← group order[j]
    per_class = split.images.shape[1]
    keys = torch.rand(num_tasks, n_way, per_class, generator=generator)
    keys = keys.masked_fill(torch.arange(per_class)[None, None, :] >= split.counts.cpu()[classes][..., None], -1.0)
    within = keys.topk(k_shot + k_query, dim=2).indices                                # (T, N, K+Q) distinct
    dev = split.images.device
    x = split.images[classes[:, :, None].to(dev), within.to(dev)]                    # (T, N, K+Q, H, W, C) uint8
    t, n, s, h, w, c = x.shape
    x = x.permute(0, 1, 2, 5, 3, 4).to(torch.float32).div_(255.0)                   # (T, N, K+Q, C, H, W)
    labels = torch.arange(n_way, device=dev)
    return Episodes(x[:, :, :k_shot].reshape(t, n * k_shot, c, h, w),
                    labels.repeat_interleave(k_shot).expand(t, -1).contiguous(),
                    x[:, :, k_shot:].reshape(t, n * k_query, c, h, w),
                    labels.repeat_interleave(k_query).expand(t, -1).contiguous(), classes.to(dev))


def meta_step_cost(learner, batch: Sequence[torch.Tensor], *, repeats: int = 3, meta_lr: float = 1e-3
                   ) -> dict[str, float]:
    """The cost of ``learner``'s outer step on ``batch``: {"ms": median time, "graph_mib": autograd's peak}.

    One untimed step under :class:`~mamlbook.compare.SavedGraphPeak` measures the most memory the
    step's autograd graphs hold for backward (the same measure as :func:`mamlbook.compare.compare`'s
    ``graph_peak_mb``, in MiB); then ``repeats`` timed steps give the median milliseconds. The steps
    update the learner's θ (with Adam at ``meta_lr``): measure on a copy you do not need.

    Raises:
        ValueError: a learner that computes its tasks on worker threads (``learner.path ==
            "task-threads"``, :mod:`mamlbook.fast_tasks`): autograd's saved-tensor hooks see only the
            calling thread's graphs, so its memory would read 0. Build it with ``batched=False``.
    """
    if repeats < 1:
        raise ValueError(f"repeats must be ≥ 1, got {repeats}")
    if getattr(learner, "path", None) == "task-threads":
        raise ValueError("meta_step_cost measures the calling thread's autograd graphs, but this learner computes "
                         "its tasks on worker threads (mamlbook.fast_tasks): build it with batched=False")
    optimizer = learner.make_optimizer(meta_lr)
    sync = torch.cuda.synchronize if learner.device.type == "cuda" else (lambda: None)
    with SavedGraphPeak() as graph:
        learner.outer_step(optimizer, *batch)
    times = []
    for _ in range(repeats):
        sync()
        start = time.perf_counter()
        learner.outer_step(optimizer, *batch)
        sync()
        times.append(time.perf_counter() - start)
    return {"ms": 1e3 * statistics.median(times), "graph_mib": graph.peak / 2**20}
