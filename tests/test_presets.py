"""Presets: the paper's numbers, and the α and clip conversions from the official Σ xent / K losses to mean CE."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from mamlbook.conv import omniglot_conv4
from mamlbook.maml import adapt, meta_loss
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
    assert (m1.inner_steps, m1.test_inner_steps, m1.k_query) == (5, 10, 15)
    # [C]'s clip ±10 on an outer loss (N·Q/K) × mean CE, in mean-CE units: ±10·K/(N·Q)
    assert (m1.grad_clip, m5.grad_clip) == (pytest.approx(10 * 1 / 75), pytest.approx(10 * 5 / 75))
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


@pytest.mark.parametrize("name", ["miniimagenet-5w1s", "miniimagenet-5w5s"])
def test_official_clip_on_official_outer_loss_equals_preset_clip_on_mean_ce(name):
    """cbfinn/maml clips at ±10 the meta-gradient of Σ_tasks Σ_queries (xent / K) / T = (N·Q/K) × mean CE.

    The official side is written out here (its inner loss Σ xent / K at α_official, its outer loss,
    autograd through the inner steps); the book's side is mamlbook.maml.meta_loss with the mean
    cross-entropy at the preset's α and the preset's clip. After a real clip_grad_value_ on each,
    the official clipped gradient is exactly (N·Q/K) × the book's.
    """
    cfg = get_preset(name).config
    n, k, q, steps = cfg.n_way, cfg.k_shot, cfg.k_query, cfg.inner_steps
    alpha_official, tasks, scale = cfg.inner_lr / n, 2, n * q / k
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(12, 16), nn.ReLU(), nn.Linear(16, n)).double()
    g = torch.Generator().manual_seed(1)
    xs, xq = (20 * torch.randn(tasks, n * m, 12, generator=g, dtype=torch.float64) for m in (k, q))  # large:
    # some meta-gradient entries then exceed the preset's clip, some do not
    ys, yq = (torch.arange(n).repeat_interleave(m).repeat(tasks, 1) for m in (k, q))

    def xent(logits, labels):                     # utils.py: per-example cross-entropy / K
        return F.cross_entropy(logits, labels, reduction="none") / k

    official = {k_: v.detach().clone().requires_grad_() for k_, v in model.named_parameters()}
    outer = 0.0
    for t in range(tasks):
        fast = official
        for _ in range(steps):                    # tf.gradients of the xent vector = gradient of its sum
            loss = xent(functional_call(model, fast, (xs[t],)), ys[t]).sum()
            grads = torch.autograd.grad(loss, list(fast.values()), create_graph=True)
            fast = {k_: v - alpha_official * g_ for (k_, v), g_ in zip(fast.items(), grads)}
        outer = outer + xent(functional_call(model, fast, (xq[t],)), yq[t]).sum()
    (outer / tasks).backward()                    # maml.py: reduce_sum(lossesb) / meta_batch_size

    book = {k_: v.detach().clone().requires_grad_() for k_, v in model.named_parameters()}
    meta_loss(model, book, xs, ys, xq, yq, inner_lr=cfg.inner_lr, inner_steps=steps,
              loss_fn=F.cross_entropy, batched=False).backward()
    raw = torch.cat([p.grad.reshape(-1) for p in book.values()]).clone()

    torch.nn.utils.clip_grad_value_(list(official.values()), 10.0)
    torch.nn.utils.clip_grad_value_(list(book.values()), cfg.grad_clip)
    for k_ in official:
        torch.testing.assert_close(official[k_].grad, scale * book[k_].grad, rtol=1e-12, atol=1e-12)
    assert (raw.abs() > cfg.grad_clip).any() and (raw.abs() < cfg.grad_clip).any()   # the clip bites, not everywhere
    assert (raw.abs() < 10.0).all()               # ±10 on the mean-CE gradient would clip nothing here
