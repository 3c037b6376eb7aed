"""The paper's Conv4 networks and the batch-statistics BatchNorm they use."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mamlbook.conv import BatchNorm, batch_norm, batch_norm_reference, miniimagenet_conv4, omniglot_conv4
from mamlbook.functional import make_meta_grad


def test_omniglot_conv4_maps_28x28x1_images_to_n_way_logits_through_a_2x2x64_map():
    model = omniglot_conv4(n_way=5)
    x = torch.randn(3, 1, 28, 28)
    assert model.features(x).shape == (3, 64, 2, 2)        # 28 → 14 → 7 → 4 → 2, stride 2
    assert model(x).shape == (3, 5)
    assert model.classifier.in_features == 64              # spatial mean, as the official code


def test_miniimagenet_conv4_maps_84x84x3_images_through_a_5x5x32_map():
    model = miniimagenet_conv4(n_way=5)
    x = torch.randn(2, 3, 84, 84)
    assert model.features(x).shape == (2, 32, 5, 5)        # 84 → 42 → 21 → 10 → 5, max-pool
    assert model(x).shape == (2, 5)
    assert model.classifier.in_features == 800


def test_batchnorm_has_a_learnable_shift_but_no_scale_and_no_running_statistics_by_default():
    bn = BatchNorm(4)
    assert [n for n, _ in bn.named_parameters()] == ["bias"]
    assert list(bn.buffers()) == []
    assert [n for n, _ in BatchNorm(4, scale=True).named_parameters()] == ["weight", "bias"]


def test_batchnorm_output_has_zero_mean_and_unit_variance_per_channel_in_train_and_eval():
    x = 3.0 + 2.0 * torch.randn(8, 4, 5, 5, dtype=torch.float64)
    bn = BatchNorm(4, eps=1e-12).double()
    for mode in (bn.train, bn.eval):                          # batch statistics in both modes
        mode()
        y = bn(x)
        torch.testing.assert_close(y.mean(dim=(0, 2, 3)), torch.zeros(4, dtype=torch.float64), atol=1e-12, rtol=0)
        torch.testing.assert_close(y.var(dim=(0, 2, 3), unbiased=False), torch.ones(4, dtype=torch.float64),
                                   atol=1e-9, rtol=0)


def test_native_and_reference_batchnorm_agree_with_hand_computed_values():
    x = torch.tensor([[[[1.0]], [[0.0]]], [[[3.0]], [[4.0]]]], dtype=torch.float64)  # (2, 2, 1, 1)
    w, b = torch.tensor([2.0, 1.0], dtype=torch.float64), torch.tensor([0.5, -1.0], dtype=torch.float64)
    # channel 0: mean 2, var 1 → (±1)·2 + 0.5; channel 1: mean 2, var 4 → (∓1)·1 − 1
    expected = torch.tensor([[[[-1.5]], [[-2.0]]], [[[2.5]], [[0.0]]]], dtype=torch.float64)
    for fn in (batch_norm, batch_norm_reference):
        torch.testing.assert_close(fn(x, w, b, eps=1e-12), expected, rtol=0, atol=1e-9)


@pytest.mark.parametrize("fn", [batch_norm, batch_norm_reference], ids=["native", "reference"])
def test_batchnorm_first_and_second_derivatives_match_finite_differences(fn):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(3, 2, 2, 1, dtype=torch.float64, generator=gen, requires_grad=True)
    w = torch.rand(2, dtype=torch.float64, generator=gen).add(0.5).requires_grad_()
    b = torch.randn(2, dtype=torch.float64, generator=gen, requires_grad=True)
    assert torch.autograd.gradcheck(lambda *a: fn(*a, eps=1e-3), (x, w, b))
    assert torch.autograd.gradgradcheck(lambda *a: fn(*a, eps=1e-3), (x, w, b))


def test_conv_bias_before_batchnorm_gets_exactly_zero_gradient():
    torch.manual_seed(0)
    model = omniglot_conv4(n_way=5, filters=8).double()
    x, y = torch.randn(6, 1, 28, 28, dtype=torch.float64), torch.randint(0, 5, (6,))
    F.cross_entropy(model(x), y).backward()
    for block in model.features:
        assert block[0].bias.grad.abs().max() < 1e-15
        assert block[0].weight.grad.abs().max() > 1e-6


def test_torch_func_meta_gradient_refuses_pytorchs_native_batchnorm():
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2, track_running_stats=False),
                          nn.Flatten(), nn.Linear(2, 2))
    with pytest.raises(ValueError, match="mamlbook.conv.BatchNorm"):
        make_meta_grad(model, inner_lr=0.1, loss_fn=F.cross_entropy)


def test_batchnorm_runs_under_cpu_bf16_autocast():
    # Under autocast the conv output is bf16 while BN's shift stays fp32.
    from mamlbook.conv import omniglot_conv4
    model = omniglot_conv4(n_way=5)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = model(torch.randn(10, 1, 28, 28))
    assert logits.shape == (10, 5) and torch.isfinite(logits.float()).all()
