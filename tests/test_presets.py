"""Presets: the paper's numbers, and the α conversion from the official Σ xent / K loss to mean CE."""
import pytest
import torch
import torch.nn.functional as F

from mamlbook.conv import omniglot_conv4
from mamlbook.maml import adapt
from mamlbook.presets import PRESETS, get_preset


@pytest.mark.parametrize("name, acc, ci", [("omniglot-5w1s", 98.7, 0.4), ("omniglot-5w5s", 99.9, 0.1),
                                           ("omniglot-20w1s", 95.8, 0.3), ("omniglot-20w5s", 98.9, 0.2),
                                           ("miniimagenet-5w1s", 48.70, 1.84), ("miniimagenet-5w5s", 63.11, 0.92)])
def test_paper_results_are_stated(name, acc, ci):
    p = get_preset(name)
    assert (p.paper_acc, p.paper_ci95) == (acc, ci) and "Table 1" in p.source


def test_paper_hyperparameters():
    o1, o20 = PRESETS["omniglot-5w1s"].config, PRESETS["omniglot-20w1s"].config
    assert (o1.meta_batch_size, o1.inner_steps, o1.inner_lr, o1.k_query) == (32, 1, 2.0, 1)   # α 0.4 × 5
    assert (o20.meta_batch_size, o20.inner_steps, o20.inner_lr) == (16, 5, 2.0)              # α 0.1 × 20
    m1, m5 = PRESETS["miniimagenet-5w1s"].config, PRESETS["miniimagenet-5w5s"].config
    assert (m1.meta_batch_size, m5.meta_batch_size) == (4, 2)
    assert (m1.inner_steps, m1.test_inner_steps, m1.k_query, m1.grad_clip) == (5, 10, 15, 10.0)
    assert m1.inner_lr == pytest.approx(0.05)                                                # α 0.01 × 5
    assert all(p.config.iterations == 60_000 and p.config.meta_lr == 1e-3 for p in PRESETS.values())


def test_unknown_preset_lists_the_choices():
    with pytest.raises(ValueError, match="omniglot-5w1s"):
        get_preset("omniglot-5w2s")


@pytest.mark.parametrize("n_way, k_shot, alpha_official", [(5, 1, 0.4), (5, 5, 0.4), (20, 1, 0.1)])
def test_official_summed_xent_step_equals_mean_ce_step_at_n_times_alpha(n_way, k_shot, alpha_official):
    """cbfinn/maml: inner loss = Σ_i xent_i / K over N·K support images (tf.gradients sums) = N × mean CE."""
    torch.manual_seed(0)
    model = omniglot_conv4(n_way).double()
    params = dict(model.named_parameters())
    x = torch.rand(n_way * k_shot, 1, 28, 28, dtype=torch.float64)
    y = torch.arange(n_way).repeat_interleave(k_shot)

    def official_xent(logits, labels):
        return F.cross_entropy(logits, labels, reduction="sum") / k_shot

    a = adapt(model, params, x, y, inner_lr=alpha_official, loss_fn=official_xent)
    b = adapt(model, params, x, y, inner_lr=alpha_official * n_way, loss_fn=F.cross_entropy)
    for k in params:
        torch.testing.assert_close(a[k], b[k], rtol=1e-12, atol=1e-12)
    moved = sum((a[k] - params[k]).abs().sum() for k in params)
    assert moved > 0.1                                         # the step really changed θ
