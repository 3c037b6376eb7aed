"""The sinusoid task family of Finn et al. (2017), Section 5.1.

The tested copy of chapter 1's task family.

Each task is a sine wave y = A·sin(x − φ) with amplitude A ~ U[0.1, 5.0] and phase
φ ~ U[0, π]; inputs are drawn from U[-5, 5]. A K-shot task gives K support points to
adapt on and separate query points to measure the adapted model (the official code
draws 2K points per task and splits them K / K).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, fields

import torch

__all__ = ["AMP_RANGE", "PHASE_RANGE", "INPUT_RANGE", "MetaBatch", "SinusoidBatch", "uniform", "sinusoid",
           "sample_sinusoid_tasks"]

# The paper's ranges (Section 5.1; cbfinn/maml data_generator.py uses the same numbers).
AMP_RANGE = (0.1, 5.0)
PHASE_RANGE = (0.0, math.pi)
INPUT_RANGE = (-5.0, 5.0)


class MetaBatch:
    """A meta-batch of T tasks: a dataclass of tensors, task first, beginning with
    ``x_support, y_support, x_query, y_query`` (:class:`SinusoidBatch`, :class:`mamlbook.data.Episodes`)."""

    @property
    def num_tasks(self) -> int:
        return self.x_support.shape[0]

    def to(self, device=None, dtype=None):
        """The same meta-batch on ``device``; ``dtype`` converts the floating-point tensors (labels stay int)."""
        return type(self)(*(t.to(device, dtype if t.is_floating_point() else None)
                            for t in (getattr(self, f.name) for f in fields(self))))

    def task(self, i: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """The i-th task as (x_support, y_support, x_query, y_query)."""
        return self.x_support[i], self.y_support[i], self.x_query[i], self.y_query[i]


@dataclass
class SinusoidBatch(MetaBatch):
    """A meta-batch of T sinusoid tasks, each with support and query sets.

    Shapes: ``x_support``/``y_support`` (T, K, 1), ``x_query``/``y_query`` (T, Q, 1),
    ``amplitude``/``phase`` (T,).
    """

    x_support: torch.Tensor
    y_support: torch.Tensor
    x_query: torch.Tensor
    y_query: torch.Tensor
    amplitude: torch.Tensor
    phase: torch.Tensor


def uniform(shape, low, high, generator):
    return low + (high - low) * torch.rand(shape, generator=generator)


def sinusoid(x: torch.Tensor, amplitude: torch.Tensor, phase: torch.Tensor) -> torch.Tensor:
    """y = A·sin(x − φ); ``amplitude`` and ``phase`` broadcast against ``x``."""
    return amplitude * torch.sin(x - phase)


def sample_sinusoid_tasks(num_tasks: int, k_shot: int, k_query: int | None = None, *,
                          generator: torch.Generator | None = None) -> SinusoidBatch:
    """Sample ``num_tasks`` sinusoid tasks at once, K support and Q query points each.

    Args:
        num_tasks: T, the meta-batch size (25 in the paper).
        k_shot: K, support points per task (the paper uses 5, 10 and 20).
        k_query: Q, query points per task; defaults to K, as in the official code.
        generator: a seeded ``torch.Generator`` for reproducible tasks.
    """
    if num_tasks <= 0:
        raise ValueError(f"num_tasks must be positive, got {num_tasks}")
    if k_shot <= 0:
        raise ValueError(f"k_shot (K) must be a positive number of support points, got {k_shot}")
    k_query = k_shot if k_query is None else k_query
    if k_query <= 0:
        raise ValueError(f"k_query must be positive, got {k_query}")
    amp = uniform((num_tasks,), *AMP_RANGE, generator)                  # (T,)
    phase = uniform((num_tasks,), *PHASE_RANGE, generator)              # (T,)
    x = uniform((num_tasks, k_shot + k_query, 1), *INPUT_RANGE, generator)  # (T, K+Q, 1)
    y = sinusoid(x, amp[:, None, None], phase[:, None, None])            # (T, K+Q, 1)
    return SinusoidBatch(x[:, :k_shot], y[:, :k_shot], x[:, k_shot:], y[:, k_shot:], amp, phase)
