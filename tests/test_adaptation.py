"""mamlbook.adaptation (chapter 10): CKA, layer features, non-mutually-exclusive tasks, the cost of a meta-step."""
import math

import pytest
import torch
from torch import nn

from mamlbook.adaptation import grouped_tasks, layer_features, linear_cka, meta_step_cost, relative_change
from mamlbook.algorithms import make_algorithm
from mamlbook.conv import omniglot_conv4
from mamlbook.data import ClassImages


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


# --- linear CKA ----------------------------------------------------------------------------------

def test_cka_of_a_hand_worked_case():
    # X centred: (−1, 0, 1); Y = (0, 0, 3) centred: (−1, −1, 2).
    # K = xxᵀ, L = yyᵀ: ⟨K, L⟩ = (xᵀy)² = 3² = 9; ‖K‖ = ‖x‖² = 2; ‖L‖ = ‖y‖² = 6 → 9 / 12.
    x = torch.tensor([[0.0], [1.0], [2.0]])
    y = torch.tensor([[0.0], [0.0], [3.0]])
    assert linear_cka(x, y) == pytest.approx(0.75, abs=1e-15)


def test_cka_equals_the_feature_space_formula():
    x = torch.randn(30, 7, generator=gen(1), dtype=torch.float64)
    y = torch.randn(30, 4, generator=gen(2), dtype=torch.float64)
    xc, yc = x - x.mean(0), y - y.mean(0)
    expected = (yc.T @ xc).norm() ** 2 / ((xc.T @ xc).norm() * (yc.T @ yc).norm())
    assert linear_cka(x, y) == pytest.approx(float(expected), rel=1e-12)


def test_cka_is_one_under_rotation_scaling_and_shift():
    x = torch.randn(40, 6, generator=gen(3), dtype=torch.float64)
    q, _ = torch.linalg.qr(torch.randn(6, 6, generator=gen(4), dtype=torch.float64))
    assert linear_cka(x, 3.5 * x @ q + 2.0) == pytest.approx(1.0, abs=1e-12)


def test_cka_is_symmetric_and_flattens_feature_maps():
    x = torch.randn(10, 2, 3, 3, generator=gen(5))
    y = torch.randn(10, 5, generator=gen(6))
    assert linear_cka(x, y) == pytest.approx(linear_cka(y, x.flatten(1)), rel=1e-12)
    assert 0.0 <= linear_cka(x, y) <= 1.0


def test_cka_refuses_mismatched_or_constant_inputs():
    with pytest.raises(ValueError, match="same inputs"):
        linear_cka(torch.randn(5, 2), torch.randn(6, 2))
    with pytest.raises(ValueError, match="same for every input"):
        linear_cka(torch.ones(5, 2), torch.randn(5, 2))


# --- layer features and relative change ----------------------------------------------------------

def test_layer_features_are_the_blocks_outputs_under_the_given_parameters():
    torch.manual_seed(0)
    net = omniglot_conv4(5, filters=8)
    params = {k: v.detach() * 1.5 for k, v in net.named_parameters()}      # not the module's own values
    x = torch.rand(6, 1, 28, 28, generator=gen(7))
    feats = layer_features(net, params, x, ["features.1", "features.3"])
    with torch.no_grad():                                                 # the same network, by hand
        for p, v in zip(net.parameters(), params.values()):
            p.copy_(v)
        h1 = net.features[1](net.features[0](x))
        h3 = net.features[3](net.features[2](h1))
    torch.testing.assert_close(feats["features.1"], h1.flatten(1))
    torch.testing.assert_close(feats["features.3"], h3.flatten(1))
    assert not net.features[0]._forward_hooks                             # hooks removed


def test_relative_change_by_hand():
    before = {"w": torch.tensor([3.0, 4.0]), "b": torch.tensor([1.0])}
    after = {"w": torch.tensor([3.0, 4.5]), "b": torch.tensor([1.0])}
    assert relative_change(before, after) == {"w": pytest.approx(0.1), "b": 0.0}


# --- non-mutually-exclusive tasks ----------------------------------------------------------------

def tiny_split(classes=12, per_class=6):
    """Every image of class c is filled with the value c (and its index within the class in pixel 0)."""
    images = torch.zeros(classes, per_class, 4, 4, 1, dtype=torch.uint8)
    for c in range(classes):
        images[c] = 10 * c
        images[c, :, 0, 0, 0] = torch.arange(per_class)
    return ClassImages(images, torch.full((classes,), per_class), [f"a/c{c}" for c in range(classes)])


GROUPS = torch.tensor([[0, 3, 6], [1, 4, 7], [2, 5, 8]])                  # 3-way, 3 classes per group


def class_of(x):
    """The class each image (…, 1, 4, 4) shows: its fill value / 10."""
    return (x[..., 0, 1, 1] * 255 / 10).round().long()


def test_fixed_labels_give_each_class_the_same_label_in_every_task():
    ep = grouped_tasks(tiny_split(), GROUPS, k_shot=2, k_query=3, num_tasks=50, generator=gen(), shuffle_labels=False)
    assert ep.x_support.shape == (50, 6, 1, 4, 4) and ep.x_query.shape == (50, 9, 1, 4, 4)
    group_of = {int(c): g for g in range(3) for c in GROUPS[g]}
    assert all(group_of[int(c)] == n for row in ep.classes for n, c in enumerate(row))
    assert torch.equal(class_of(ep.x_support), ep.classes.repeat_interleave(2, dim=1))   # labels sorted by class
    assert torch.equal(class_of(ep.x_query), ep.classes.repeat_interleave(3, dim=1))
    assert torch.equal(ep.y_support[0], torch.tensor([0, 0, 1, 1, 2, 2]))
    assert len(set(ep.classes[:, 0].tolist())) == 3                       # group 0's classes all appear


def test_shuffled_labels_permute_the_groups_per_task():
    ep = grouped_tasks(tiny_split(), GROUPS, k_shot=1, k_query=1, num_tasks=200, generator=gen(1), shuffle_labels=True)
    group_of = {int(c): g for g in range(3) for c in GROUPS[g]}
    orders = {tuple(group_of[int(c)] for c in row) for row in ep.classes}
    assert all(sorted(o) == [0, 1, 2] for o in orders) and len(orders) == 6     # every permutation occurs
    assert torch.equal(class_of(ep.x_query), ep.classes)                  # query shares the task's labels


def test_images_of_a_class_are_distinct_within_a_task():
    ep = grouped_tasks(tiny_split(), GROUPS, k_shot=2, k_query=4, num_tasks=20, generator=gen(2), shuffle_labels=True)
    index = (torch.cat([ep.x_support.view(20, 3, 2, 16), ep.x_query.view(20, 3, 4, 16)], 2)[..., 0] * 255).round()
    assert all(len(set(row.tolist())) == 6 for task in index for row in task)


def test_grouped_tasks_refuse_classes_that_are_too_small():
    with pytest.raises(ValueError, match="fewer than K \\+ Q = 7"):
        grouped_tasks(tiny_split(), GROUPS, k_shot=2, k_query=5, num_tasks=1, generator=gen(), shuffle_labels=False)


# --- the cost of a meta-step ---------------------------------------------------------------------

def sine_batch(tasks=4, k=5):
    g = gen(3)
    x = torch.rand(tasks, 2 * k, 1, generator=g) * 10 - 5
    y = torch.sin(x)
    return x[:, :k], y[:, :k], x[:, k:], y[:, k:]


def learner(name, steps, **kw):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(1, 16), nn.Tanh(), nn.Linear(16, 1))
    return make_algorithm(name, net, problem="regression", inner_lr=0.01, inner_steps=steps, **kw)


def test_second_order_graphs_grow_with_the_inner_steps_and_first_order_ones_less():
    cost = {(n, s): meta_step_cost(learner(n, s, batched=False), sine_batch(), repeats=1)["graph_mib"]
            for n in ("maml", "fomaml") for s in (1, 4)}
    assert cost["maml", 4] > cost["maml", 1] > 0
    assert cost["fomaml", 1] < cost["maml", 1] and cost["fomaml", 4] < cost["maml", 4]


def test_imaml_memory_does_not_depend_on_the_inner_steps():
    batch = sine_batch()
    mib = [meta_step_cost(learner("imaml", s, lam=2.0, cg_steps=3), batch, repeats=1)["graph_mib"] for s in (1, 8)]
    assert mib[0] == mib[1] > 0


def test_meta_step_cost_times_real_steps_and_updates_theta():
    lrn = learner("maml", 1)
    before = {k: v.detach().clone() for k, v in lrn.params.items()}
    cost = meta_step_cost(lrn, sine_batch(), repeats=2)
    assert cost["ms"] > 0 and math.isfinite(cost["ms"])
    assert any(not torch.equal(before[k], v) for k, v in lrn.params.items())


def test_a_learner_on_worker_threads_is_refused_rather_than_measured_as_zero():
    class OnThreads:
        path = "task-threads"
    with pytest.raises(ValueError, match="batched=False"):
        meta_step_cost(OnThreads(), sine_batch())


def test_conv_maml_on_the_main_thread_is_measured_with_one_intra_op_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)                         # where the looped path may move to worker threads
    try:
        torch.manual_seed(0)
        lrn = make_algorithm("maml", omniglot_conv4(5, filters=8), problem="classification", inner_lr=0.4,
                             batched=False)
        x = torch.rand(2, 5, 1, 28, 28, generator=gen(8))
        y = torch.arange(5).expand(2, 5)
        assert meta_step_cost(lrn, (x, y, x, y), repeats=1)["graph_mib"] > 0
    finally:
        torch.set_num_threads(threads)
