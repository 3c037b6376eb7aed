"""Prototypical Networks: prototypes, distances and the episode loss on hand-computed cases."""
import math

import pytest
import torch
from torch import nn

from mamlbook.algorithms.protonet import (
    proto_logits,
    protonet_accuracy,
    protonet_loss,
    prototypes,
    task_logits,
)


class Identity(nn.Module):
    """An 'embedding network' that returns its input, so embeddings can be written by hand."""

    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.ones(()))

    def forward(self, x):
        return self.scale * x


def test_prototypes_and_logits_of_a_hand_computed_two_way_case():
    # Class 0 support: (0,0), (2,0) → c0 = (1,0).  Class 1 support: (0,4) → c1 = (0,4).
    # Query (1,1): ‖(0,1)‖² = 1 to c0, ‖(1,−3)‖² = 10 to c1 → logits (−1, −10).
    # Query (0,3): ‖(−1,3)‖² = 10 to c0, ‖(0,−1)‖² = 1 to c1 → logits (−10, −1).
    emb_s = torch.tensor([[0.0, 0.0], [0.0, 4.0], [2.0, 0.0]], dtype=torch.float64)
    y_s = torch.tensor([0, 1, 0])
    emb_q = torch.tensor([[1.0, 1.0], [0.0, 3.0]], dtype=torch.float64)
    protos = prototypes(emb_s, y_s)
    assert torch.equal(protos, torch.tensor([[1.0, 0.0], [0.0, 4.0]], dtype=torch.float64))
    assert torch.equal(proto_logits(emb_q, protos), torch.tensor([[-1.0, -10.0], [-10.0, -1.0]],
                                                                 dtype=torch.float64))


def test_episode_loss_of_the_hand_computed_case():
    # Both queries are 9 closer to their own prototype: loss = −log(e⁰ / (e⁰ + e⁻⁹)) = log(1 + e⁻⁹).
    model = Identity().double()
    xs = torch.tensor([[[0.0, 0.0], [0.0, 4.0], [2.0, 0.0]]], dtype=torch.float64)
    ys = torch.tensor([[0, 1, 0]])
    xq = torch.tensor([[[1.0, 1.0], [0.0, 3.0]]], dtype=torch.float64)
    yq = torch.tensor([[0, 1]])
    params = dict(model.named_parameters())
    loss = protonet_loss(model, params, xs, ys, xq, yq)
    assert loss.item() == pytest.approx(math.log1p(math.exp(-9.0)), rel=1e-14)
    assert protonet_accuracy(model, params, xs, ys, xq, yq).tolist() == [1.0]
    # d/ds of the loss with embeddings s·x: distances scale by s², so dL/ds = −18·e⁻⁹/(1+e⁻⁹) at s = 1
    (g,) = torch.autograd.grad(loss, [params["scale"]])
    assert g.item() == pytest.approx(-18 * math.exp(-9) / (1 + math.exp(-9)), rel=1e-12)


def test_logits_do_not_depend_on_the_order_of_the_support_set():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 4)).double()
    params = dict(model.named_parameters())
    xs = torch.randn(15, 6, dtype=torch.float64)
    ys = torch.arange(5).repeat_interleave(3)                    # 5-way 3-shot
    xq = torch.randn(10, 6, dtype=torch.float64)
    perm = torch.randperm(15)
    a = task_logits(model, params, xs, ys, xq)
    b = task_logits(model, params, xs[perm], ys[perm], xq)
    torch.testing.assert_close(a, b, rtol=1e-13, atol=1e-13)


def test_relabelling_the_classes_permutes_the_logit_columns_the_same_way():
    torch.manual_seed(1)
    model = nn.Linear(3, 5).double()
    params = dict(model.named_parameters())
    xs = torch.randn(6, 3, dtype=torch.float64)
    ys = torch.tensor([0, 1, 2, 0, 1, 2])
    xq = torch.randn(4, 3, dtype=torch.float64)
    relabel = torch.tensor([2, 0, 1])                            # class n becomes relabel[n]
    a = task_logits(model, params, xs, ys, xq)
    b = task_logits(model, params, xs, relabel[ys], xq)
    torch.testing.assert_close(b[:, relabel], a, rtol=0, atol=0)


def test_each_task_of_a_meta_batch_uses_its_own_labels_0_to_n_minus_1():
    # Two tasks with the same images but opposite labels: each task's loss is computed with its
    # own prototypes, so both equal the single-task loss.
    model = Identity().double()
    params = dict(model.named_parameters())
    xs = torch.tensor([[[0.0], [4.0]], [[0.0], [4.0]]], dtype=torch.float64)   # (T=2, S=2, D=1)
    ys = torch.tensor([[0, 1], [1, 0]])
    xq = torch.tensor([[[1.0]], [[1.0]]], dtype=torch.float64)
    yq = torch.tensor([[0], [1]])                                # the query is near x = 0 in both
    # logits: −1 to the prototype at 0, −9 to the one at 4 → loss = log(1 + e⁻⁸) per task
    loss = protonet_loss(model, params, xs, ys, xq, yq)
    assert loss.item() == pytest.approx(math.log1p(math.exp(-8.0)), rel=1e-14)
    assert protonet_accuracy(model, params, xs, ys, xq, yq).tolist() == [1.0, 1.0]


def test_a_class_without_support_examples_is_refused():
    emb = torch.zeros(4, 2)
    with pytest.raises(ValueError, match=r"classes \[1\] have no support"):
        prototypes(emb, torch.tensor([0, 0, 2, 2]))
    with pytest.raises(ValueError, match="labels must be 0..1"):
        prototypes(emb, torch.tensor([0, 1, 2, 1]), n_way=2)


def test_protonet_gradient_matches_finite_differences_in_float64():
    torch.manual_seed(2)
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 3)).double()
    params = {k: v.detach().clone().requires_grad_() for k, v in model.named_parameters()}
    xs = torch.randn(2, 6, 3, dtype=torch.float64)
    ys = torch.tensor([0, 0, 1, 1, 2, 2]).repeat(2, 1)
    xq = torch.randn(2, 5, 3, dtype=torch.float64)
    yq = torch.randint(0, 3, (2, 5), generator=torch.Generator().manual_seed(0))
    g = torch.autograd.grad(protonet_loss(model, params, xs, ys, xq, yq), list(params.values()))
    d = {k: torch.randn(v.shape, dtype=torch.float64) for k, v in params.items()}
    eps = 1e-6

    def at(s):
        return protonet_loss(model, {k: v.detach() + s * d[k] for k, v in params.items()},
                             xs, ys, xq, yq).item()

    fd = (at(eps) - at(-eps)) / (2 * eps)
    analytic = sum((gi * d[k]).sum() for gi, k in zip(g, params)).item()
    assert abs(analytic - fd) / abs(fd) < 1e-7
