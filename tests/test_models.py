"""The paper's sinusoid network."""
import pytest
import torch

from mamlbook.models import SinusoidMLP


def test_paper_mlp_is_1_40_40_1():
    shapes = [tuple(p.shape) for p in SinusoidMLP().parameters()]
    assert shapes == [(40, 1), (40,), (40, 40), (40,), (1, 40), (1,)]


def test_official_init_is_truncated_normal_std_001_with_zero_biases():
    torch.manual_seed(0)
    model = SinusoidMLP(hidden=400, init="official")
    w = model[2].weight
    assert w.abs().max() <= 0.02 and 0.007 < w.std() < 0.01  # truncation at 2σ shrinks the std
    assert all(not layer.bias.any() for layer in model if hasattr(layer, "bias"))


def test_unknown_init_is_refused():
    with pytest.raises(ValueError, match="init"):
        SinusoidMLP(init="xavier")
