"""Prototypical Networks (Snell, Swersky & Zemel, NeurIPS 2017): the metric-learning baseline.

The tested copy of chapter 8's Prototypical Networks.

No inner loop: a class's prototype c_n is the mean embedding f_θ(x) of its support examples, a
query's logits are −‖f_θ(x_q) − c_n‖² (chapter 8, section 7, gives the equations), and the loss is
their cross-entropy, averaged over the query set and over the T tasks.

Labels are 0..N−1 *within each task* (as the episode sampler produces them); every class must
have at least one support example. Choices, stated once:

- **Squared** Euclidean distance, which the paper found better than cosine distance; it is
  computed as Σ (a − b)² rather than ‖a‖² − 2a·b + ‖b‖², which cancels badly in float32.
- **Support and query are embedded in one forward pass per task**, as the authors' code does
  (jakesnell/prototypical-networks, ``protonets/models/few_shot.py``, concatenates them before
  the encoder): with batch-statistics BatchNorm, a task's support and query images share
  their statistics.

The embedding network is any ``nn.Module`` returning (N, D), run with ``functional_call`` on a
params dict like the rest of the package.
"""
from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from ..errors import OptionError
from ..maml import Params, backward_detached, mean_task_loss
from .base import Algorithm, Predictor, default_head

__all__ = ["prototypes", "proto_logits", "task_logits", "protonet_loss", "protonet_accuracy", "ProtoNet",
           "without_head"]


def prototypes(emb_support: torch.Tensor, y_support: torch.Tensor, n_way: int | None = None) -> torch.Tensor:
    """Mean support embedding of each class: (S, D) embeddings, (S,) labels 0..N−1 → (N, D).

    Raises:
        ValueError: a label is outside 0..N−1, or a class has no support example.
    """
    n_way = int(y_support.max()) + 1 if n_way is None else n_way
    if y_support.min() < 0 or y_support.max() >= n_way:
        raise ValueError(f"support labels must be 0..{n_way - 1} within each task, "
                         f"got {sorted(set(y_support.tolist()))}")
    counts = torch.bincount(y_support, minlength=n_way)                          # (N,)
    if (counts == 0).any():
        raise ValueError(f"classes {torch.nonzero(counts == 0).flatten().tolist()} have no support "
                         f"example; every class 0..{n_way - 1} needs at least one")
    sums = emb_support.new_zeros(n_way, emb_support.shape[1]).index_add(0, y_support, emb_support)
    return sums / counts.unsqueeze(1).to(emb_support.dtype)                      # (N, D)


def proto_logits(emb_query: torch.Tensor, protos: torch.Tensor) -> torch.Tensor:
    """−‖f(x_q) − c_n‖²: (Q, D) query embeddings and (N, D) prototypes → (Q, N) logits."""
    diff = emb_query.unsqueeze(1) - protos.unsqueeze(0)                          # (Q, N, D)
    return -(diff * diff).sum(dim=-1)


def task_logits(model: nn.Module, params: Params, x_support: torch.Tensor, y_support: torch.Tensor,
                x_query: torch.Tensor, n_way: int | None = None) -> torch.Tensor:
    """One task's (Q, N) query logits; support and query are embedded in one forward pass."""
    emb = functional_call(model, params, (torch.cat([x_support, x_query]),))    # (S+Q, D)
    if emb.dim() != 2:
        raise ValueError(f"the embedding network must return (batch, D), got shape {tuple(emb.shape)}")
    emb_support, emb_query = emb[:x_support.shape[0]], emb[x_support.shape[0]:]
    return proto_logits(emb_query, prototypes(emb_support, y_support, n_way))


def protonet_loss(model: nn.Module, params: Params, x_support: torch.Tensor, y_support: torch.Tensor,
                  x_query: torch.Tensor, y_query: torch.Tensor, n_way: int | None = None) -> torch.Tensor:
    """Mean query cross-entropy over T tasks: tensors (T, S, ...), (T, S), (T, Q, ...), (T, Q).

    ``n_way`` defaults to 1 + the largest support label of each task.
    """
    def task_loss(xs, ys, xq, yq):
        return F.cross_entropy(task_logits(model, params, xs, ys, xq, n_way), yq)
    return mean_task_loss(task_loss, x_support, y_support, x_query, y_query)


@torch.no_grad()
def protonet_accuracy(model: nn.Module, params: Params, x_support: torch.Tensor,
                      y_support: torch.Tensor, x_query: torch.Tensor, y_query: torch.Tensor,
                      n_way: int | None = None) -> torch.Tensor:
    """Per-task query accuracy (T,) as fractions: a query is right if its nearest prototype is its class."""
    return torch.stack([
        (task_logits(model, params, x_support[i], y_support[i], x_query[i], n_way).argmax(1)
         == y_query[i]).double().mean() for i in range(x_support.shape[0])])


class ProtoNet(Algorithm):
    """Prototypical Networks on the model without its head (Conv4 → its 64-d features).

    No inner loop and no α: ``inner_lr``/``inner_steps`` are ignored. Support and query share one
    forward pass (:func:`task_logits`) at training and at test, so BatchNorm sees the same batches in both.
    """

    name = "protonet"
    has_inner_loop = False
    supports = frozenset({"grad_clip", "tf32"})
    fixed_path = "per-task-loop"     # protonet_loss: one task's logits at a time

    refusals = dict.fromkeys(("first_order", "batched", "adapt_bn"), "Prototypical Networks have no inner loop")
    classification_only = "classifies by the nearest class prototype"

    def __init__(self, model, params, *, head: str | None = None, **kw):
        super().__init__(model, params, **kw)
        self.inner_lr, self.inner_steps, self.test_steps = None, 0, 0
        self.head = head or default_head(model)
        self.embedder = without_head(model, self.head)
        self.body = {k: v for k, v in self.params.items() if not k.startswith(self.head)}

    def meta_parameters(self):
        return list(self.body.values())

    def _backward(self, x_s, y_s, x_q, y_q, iteration):
        return backward_detached(protonet_loss(self.embedder, self.body, x_s, y_s, x_q, y_q))

    def adapt(self, x_s, y_s, steps=None, inner_lr=None) -> Predictor:
        """The task's prototypes; the predictor returns logits −‖f(x) − c_n‖² for queries x."""
        if steps or inner_lr:
            raise OptionError("Prototypical Networks have no inner loop: --steps and --inner-lr do not apply")
        body = {k: v.detach() for k, v in self.body.items()}

        @torch.no_grad()
        def predict(x_q):
            return task_logits(self.embedder, body, x_s, y_s, x_q)
        return predict


def without_head(model: nn.Module, head: str) -> nn.Module:
    """A copy of ``model`` whose module named ``head`` (without the dot) is ``nn.Identity``."""
    clone = copy.deepcopy(model)
    *path, last = head.rstrip(".").split(".")
    parent = clone.get_submodule(".".join(path)) if path else clone
    setattr(parent, last, nn.Identity())
    return clone
