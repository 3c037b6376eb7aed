"""Model-agnostic means any model: MAML on an LSTM followed by a linear layer (chapter 9).

Task family, sinusoid walks (notebook 09, section 1): a task is the paper's sine y = A·sin(x − φ);
an example is a walk of L numbers, its start x₀ then L − 1 moves Δ_t ~ U[−0.5, 0.5], and its target is
the sine where it ends, x_end ~ U[−5, 5]. The network is never shown x_end: it has to add the moves
up in its state, and learn A and φ from the K support walks, which is MAML's inner loop's job.

Models: :class:`LSTMRegressor` on ``nn.LSTM`` (cuDNN on a GPU; :mod:`mamlbook.rnn` says why
second-order MAML needs the native kernels there) or on :class:`HandLSTM`, the same equations written
out, which ``torch.func.vmap`` can batch over tasks; one's weights load into the other.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from .tasks import SinusoidBatch, sample_sinusoid_tasks, uniform

__all__ = ["SEQ_LEN", "MOVE_RANGE", "HIDDEN", "sample_walk_tasks", "walk_end", "walks_ending_at", "HandLSTM",
           "LSTMRegressor", "WalkConfig", "walk_batches"]

SEQ_LEN = 5             # L: the start and 4 moves
MOVE_RANGE = (-0.5, 0.5)  # Δ_t: the walk's moves
HIDDEN = 40             # LSTM width, as the paper's sinusoid MLP's hidden layers


def sample_walk_tasks(num_tasks: int, k_shot: int, k_query: int | None = None, *,
                      seq_len: int = SEQ_LEN, generator: torch.Generator | None = None) -> SinusoidBatch:
    """Sample ``num_tasks`` sinusoid-walk tasks, K support and Q query walks each.

    Returns a :class:`~mamlbook.tasks.SinusoidBatch` whose inputs are sequences:
    ``x_support`` (T, K, L, 1), ``y_support`` (T, K, 1), likewise for the query set.

    Args:
        num_tasks: T, the meta-batch size.
        k_shot: K, support walks per task.
        k_query: Q, query walks per task (default K, as the official sinusoid code).
        seq_len: L ≥ 1, the length of each walk (the start, then L − 1 moves).
        generator: a seeded ``torch.Generator`` for reproducible tasks.
    """
    b = sample_sinusoid_tasks(num_tasks, k_shot, k_query, generator=generator)  # A, φ; the walks' ends as x
    end = torch.cat([b.x_support, b.x_query], dim=1)                             # (T, K+Q, 1)
    x = walks_ending_at(end, seq_len, generator=generator)                       # (T, K+Q, L, 1)
    return SinusoidBatch(x[:, :k_shot], b.y_support, x[:, k_shot:], b.y_query, b.amplitude, b.phase)


def walk_end(x: torch.Tensor) -> torch.Tensor:
    """The end point of walks (..., L, 1) → (..., 1): the sum of the start and the moves."""
    return x.sum(dim=-2)


def walks_ending_at(x_end: torch.Tensor, seq_len: int = SEQ_LEN, *,
                    generator: torch.Generator | None = None) -> torch.Tensor:
    """Random walks (..., L, 1) that end exactly at the points ``x_end`` (..., 1).

    The moves are drawn as in :func:`sample_walk_tasks` (U[−0.5, 0.5]) and the start is set so
    the walk ends at ``x_end``: what a figure needs to draw an LSTM's prediction against x.
    """
    if seq_len < 1:
        raise ValueError(f"seq_len must be at least 1 (the start), got {seq_len}")
    if x_end.shape[-1] != 1:
        raise ValueError(f"x_end must end in a dimension of size 1, got shape {tuple(x_end.shape)}")
    moves = uniform((*x_end.shape[:-1], seq_len - 1), *MOVE_RANGE, generator).to(x_end)  # (..., L−1)
    start = x_end - moves.sum(-1, keepdim=True)                                          # (..., 1)
    return torch.cat([start, moves], dim=-1).unsqueeze(-1)                               # (..., L, 1)


class HandLSTM(nn.Module):
    """One LSTM layer written out (batch-first), with ``nn.LSTM``'s parameter names and gate order.

    For input x_t and state (h, c), with W = [W_i; W_f; W_g; W_o] stacked as in PyTorch:

        i, f, g, o = σ(·), σ(·), tanh(·), σ(·) of  W_ih x_t + b_ih + W_hh h + b_hh   (4 chunks)
        c ← f ⊙ c + i ⊙ g,   h ← o ⊙ tanh(c)

    Returns ``(outputs (B, L, H), (h (1, B, H), c (1, B, H)))`` like ``nn.LSTM(batch_first=True)``.
    """

    def __init__(self, input_size: int, hidden_size: int):
        super().__init__()
        self.hidden_size = hidden_size
        self.weight_ih_l0 = nn.Parameter(torch.empty(4 * hidden_size, input_size))
        self.weight_hh_l0 = nn.Parameter(torch.empty(4 * hidden_size, hidden_size))
        self.bias_ih_l0 = nn.Parameter(torch.empty(4 * hidden_size))
        self.bias_hh_l0 = nn.Parameter(torch.empty(4 * hidden_size))
        bound = 1 / math.sqrt(hidden_size)  # nn.LSTM's initialisation: U(−1/√H, 1/√H)
        for p in self.parameters():
            nn.init.uniform_(p, -bound, bound)

    def forward(self, x: torch.Tensor):
        batch, steps, _ = x.shape
        h = c = x.new_zeros(batch, self.hidden_size)                              # (B, H) each
        x_proj = x @ self.weight_ih_l0.T + self.bias_ih_l0                        # (B, L, 4H)
        outputs = []
        for t in range(steps):
            gates = x_proj[:, t] + h @ self.weight_hh_l0.T + self.bias_hh_l0      # (B, 4H)
            i, f, g, o = gates.chunk(4, dim=-1)
            c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
            h = torch.sigmoid(o) * torch.tanh(c)
            outputs.append(h)
        return torch.stack(outputs, dim=1), (h.unsqueeze(0), c.unsqueeze(0))


class LSTMRegressor(nn.Module):
    """An LSTM followed by a linear layer on its last hidden state: (B, L, 1) → (B, 1).

    Args:
        hidden: LSTM width H (default 40).
        lstm: "torch" for ``nn.LSTM`` (cuDNN on GPUs), "hand" for :class:`HandLSTM`.
    """

    def __init__(self, hidden: int = HIDDEN, lstm: str = "torch", input_size: int = 1, output_size: int = 1):
        super().__init__()
        if lstm == "torch":
            self.lstm = nn.LSTM(input_size, hidden, batch_first=True)
        elif lstm == "hand":
            self.lstm = HandLSTM(input_size, hidden)
        else:
            raise ValueError(f"lstm must be 'torch' or 'hand', got {lstm!r}")
        self.head = nn.Linear(hidden, output_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outputs, _ = self.lstm(x)              # (B, L, H)
        return self.head(outputs[:, -1])       # (B, output_size)


@dataclass
class WalkConfig:
    """Chapter 9's settings: the paper's sinusoid MAML settings, applied to the LSTM.

    K = 10, meta-batch 25, one inner step at α = 0.01, Adam β = 1e-3 (Finn et al. §5.1);
    ``iterations`` is ours (the paper trains its MLP for 70,000).
    """

    k_shot: int = 10
    meta_batch_size: int = 25
    inner_lr: float = 0.01
    inner_steps: int = 1
    meta_lr: float = 1e-3
    iterations: int = 20_000
    seq_len: int = SEQ_LEN
    hidden: int = HIDDEN
    seed: int = 0


def walk_batches(cfg: WalkConfig, generator: torch.Generator, device=None, dtype=None):
    """A ``sample_batch`` function for :func:`mamlbook.train.meta_train`: fresh walk tasks each call."""
    def sample():
        b = sample_walk_tasks(cfg.meta_batch_size, cfg.k_shot, seq_len=cfg.seq_len, generator=generator)
        b = b.to(device=device, dtype=dtype)
        return b.x_support, b.y_support, b.x_query, b.y_query
    return sample
