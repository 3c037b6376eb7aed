"""The sinusoid task family: the paper's ranges, shapes and seeded reproducibility."""
import math

import pytest
import torch

from mamlbook.tasks import AMP_RANGE, INPUT_RANGE, PHASE_RANGE, sample_sinusoid_tasks


def sample(seed, num_tasks=25, k_shot=10, k_query=None):
    return sample_sinusoid_tasks(num_tasks, k_shot, k_query,
                                 generator=torch.Generator().manual_seed(seed))


def test_paper_ranges_are_the_papers():
    assert AMP_RANGE == (0.1, 5.0)
    assert PHASE_RANGE == (0.0, math.pi)
    assert INPUT_RANGE == (-5.0, 5.0)


def test_shapes_are_tasks_by_points_by_one():
    b = sample(0, num_tasks=7, k_shot=5, k_query=12)
    assert b.x_support.shape == b.y_support.shape == (7, 5, 1)
    assert b.x_query.shape == b.y_query.shape == (7, 12, 1)
    assert b.amplitude.shape == b.phase.shape == (7,)


def test_query_defaults_to_k_points_as_in_the_official_code():
    assert sample(0, k_shot=5).x_query.shape == (25, 5, 1)


def test_same_seed_gives_identical_tasks():
    a, b = sample(3), sample(3)
    for name in ("x_support", "y_support", "x_query", "y_query", "amplitude", "phase"):
        assert torch.equal(getattr(a, name), getattr(b, name))


def test_different_seed_gives_different_tasks():
    assert not torch.equal(sample(3).amplitude, sample(4).amplitude)


def test_targets_are_amplitude_times_sine_of_x_minus_phase():
    b = sample(1)
    expected = b.amplitude[:, None, None] * torch.sin(b.x_support - b.phase[:, None, None])
    assert torch.equal(b.y_support, expected)


def test_samples_cover_the_stated_ranges_and_stay_inside_them():
    b = sample(2, num_tasks=20_000, k_shot=5)
    amp, phase, x = b.amplitude, b.phase, torch.cat([b.x_support, b.x_query], 1)
    assert 0.1 <= amp.min() < 0.11 and 4.99 < amp.max() <= 5.0
    assert 0.0 <= phase.min() < 0.01 and math.pi - 0.01 < phase.max() <= math.pi
    assert -5.0 <= x.min() < -4.999 and 4.999 < x.max() <= 5.0
    # uniform: each decile of the amplitude range holds about a tenth of the tasks
    counts = torch.histc(amp, bins=10, min=0.1, max=5.0)
    assert (counts / amp.numel() - 0.1).abs().max() < 0.015


@pytest.mark.parametrize("k_shot", [0, -3])
def test_non_positive_k_is_refused(k_shot):
    with pytest.raises(ValueError, match="k_shot"):
        sample_sinusoid_tasks(5, k_shot)
