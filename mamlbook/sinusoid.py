"""The sinusoid experiment of Finn et al. (2017), Section 5.1: MAML, the pretrained and oracle baselines.

Configuration, and where each number comes from ([P] the paper, [C] the official code, cbfinn/maml):
- MLP 1-40-40-1 with ReLU                                  ([P] §5.1)
- K = 10 support points per task ([P] §5.1: trained with K = 10, evaluated at K = 5, 10, 20, App. B),
  Q = K query points ([C]: 2K points drawn per task)
- one inner SGD step with α = 0.01                          ([P] §5.1; [C]'s sinusoid command never
  sets ``update_lr``, whose default is 1e-3, a discrepancy the book measures in chapter 2)
- Adam as the meta-optimizer                                ([P] §5.1)
- meta-batch of 25 tasks, β = 1e-3, 70,000 iterations        ([C]: ``meta_batch_size`` and ``meta_lr``
  defaults, the usage line at the top of ``main.py``; the paper does not state them)
- evaluation: 600 new tasks, 0..10 SGD steps at α, 95% CI = 1.96·std/√600 ([C] ``test``)
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from .evaluate import NUM_TEST_TASKS, EvalResult, adaptation_curve, mean_ci95, summarize
from .models import SinusoidMLP
from .tasks import SinusoidBatch, sample_sinusoid_tasks
from .train import History, meta_train, pretrain

__all__ = ["EVAL_SEED", "STEP_SIZE_SEED", "PRETRAIN_STEP_SIZES", "SinusoidConfig", "task_stream",
           "train_maml", "eval_tasks", "evaluate_model", "OracleMLP", "train_oracle", "evaluate_oracle",
           "train_pretrained", "tune_step_size"]

EVAL_SEED = 2017          # the 600 meta-test tasks: the same for every model, so comparisons are paired
STEP_SIZE_SEED = 2018     # separate tasks on which the pretrained baseline's fine-tuning step is tuned
PRETRAIN_STEP_SIZES = (0.001, 0.003, 0.01, 0.02, 0.03, 0.05, 0.1, 0.3)


@dataclass
class SinusoidConfig:
    """Every knob of a sinusoid run; defaults are the paper's."""

    k_shot: int = 10
    meta_batch_size: int = 25
    inner_lr: float = 0.01
    inner_steps: int = 1
    meta_lr: float = 1e-3
    iterations: int = 70_000
    first_order: bool = False
    seed: int = 0
    init: str = "pytorch"   # or "official": cbfinn/maml's truncated normal (std 0.01), zero biases

    def __post_init__(self):
        if self.k_shot <= 0:
            raise ValueError(f"k_shot (K) must be a positive number of support points, got {self.k_shot}")
        if self.meta_batch_size <= 0:
            raise ValueError(f"meta_batch_size must be positive, got {self.meta_batch_size}")
        if not self.inner_lr > 0:
            raise ValueError(f"inner_lr (α) must be positive, got {self.inner_lr}")
        if not self.meta_lr > 0:
            raise ValueError(f"meta_lr (β) must be positive, got {self.meta_lr}")
        if self.inner_steps < 1:
            raise ValueError(f"inner_steps must be at least 1, got {self.inner_steps}")
        if self.iterations < 0:
            raise ValueError(f"iterations must be ≥ 0, got {self.iterations}")
        if self.init not in ("pytorch", "official"):
            raise ValueError(f"init must be 'pytorch' or 'official', got {self.init!r}")

    def to_dict(self) -> dict:
        return asdict(self)


def task_stream(cfg: SinusoidConfig, generator: torch.Generator):
    """A ``sample_batch`` callable for :func:`mamlbook.train.meta_train`: fresh tasks every call."""
    def sample():
        b = sample_sinusoid_tasks(cfg.meta_batch_size, cfg.k_shot, generator=generator)
        return b.x_support, b.y_support, b.x_query, b.y_query
    return sample


def train_maml(cfg: SinusoidConfig, *, compile: bool = False, progress: bool = True,
               model: nn.Module | None = None, **kwargs) -> tuple[nn.Module, History]:
    """Meta-train the paper's MLP with MAML; returns (model, history). Seeded by ``cfg.seed``."""
    torch.manual_seed(cfg.seed)
    model = model if model is not None else SinusoidMLP(init=cfg.init)
    gen = torch.Generator().manual_seed(cfg.seed)
    history = meta_train(model, task_stream(cfg, gen), iterations=cfg.iterations,
                         inner_lr=cfg.inner_lr, inner_steps=cfg.inner_steps, meta_lr=cfg.meta_lr,
                         first_order=cfg.first_order, compile=compile, progress=progress,
                         desc=f"MAML K={cfg.k_shot}", **kwargs)
    return model, history


def eval_tasks(k_shot: int, num_tasks: int = NUM_TEST_TASKS, seed: int = EVAL_SEED,
               k_query: int | None = None) -> SinusoidBatch:
    """The fixed meta-test tasks: ``num_tasks`` sinusoids with K support and Q (= K) query points."""
    return sample_sinusoid_tasks(num_tasks, k_shot, k_query,
                                 generator=torch.Generator().manual_seed(seed))


def evaluate_model(model: nn.Module, k_shot: int, inner_lr: float, *, max_steps: int = 10,
                   num_tasks: int = NUM_TEST_TASKS, seed: int = EVAL_SEED,
                   tasks: SinusoidBatch | None = None) -> EvalResult:
    """Query MSE after 0..max_steps SGD steps at ``inner_lr`` on new tasks, mean ± 95% CI."""
    b = tasks if tasks is not None else eval_tasks(k_shot, num_tasks, seed)
    dtype = next(model.parameters()).dtype
    b = b.to(dtype=dtype)
    curve = adaptation_curve(model, dict(model.named_parameters()), b.x_support, b.y_support,
                             b.x_query, b.y_query, inner_lr=inner_lr, max_steps=max_steps)
    return summarize(curve)


class OracleMLP(nn.Module):
    """The oracle baseline: the same MLP, also told each task's amplitude and phase (3 inputs)."""

    def __init__(self, hidden: int = 40):
        super().__init__()
        self.net = SinusoidMLP(in_features=3, hidden=hidden)

    def forward(self, x: torch.Tensor, amplitude: torch.Tensor, phase: torch.Tensor) -> torch.Tensor:
        # x: (..., N, 1); amplitude, phase: (...,) broadcast to every point of their task
        a = amplitude[..., None, None].expand_as(x)
        p = phase[..., None, None].expand_as(x)
        return self.net(torch.cat([x, a, p], dim=-1))


def train_oracle(cfg: SinusoidConfig, *, progress: bool = True) -> tuple[OracleMLP, History]:
    """Train the oracle on the same task stream as MAML (joint training, Adam at β)."""
    torch.manual_seed(cfg.seed)
    model = OracleMLP()
    gen = torch.Generator().manual_seed(cfg.seed)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.meta_lr)
    history = History()
    start = time.perf_counter()
    for it in tqdm(range(cfg.iterations), desc="oracle", disable=not progress, mininterval=0.5):
        b = sample_sinusoid_tasks(cfg.meta_batch_size, cfg.k_shot, generator=gen)
        loss = F.mse_loss(model(b.x_support, b.amplitude, b.phase), b.y_support)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        history.iteration.append(it + 1)
        history.loss.append(loss.item())
    history.wall_time_s = time.perf_counter() - start
    return model, history


@torch.no_grad()
def evaluate_oracle(model: OracleMLP, k_shot: int, *, num_tasks: int = NUM_TEST_TASKS,
                    seed: int = EVAL_SEED) -> tuple[float, float]:
    """The oracle's query MSE (mean, 95% CI) on the meta-test tasks; it needs no adaptation."""
    b = eval_tasks(k_shot, num_tasks, seed)
    per_task = ((model(b.x_query, b.amplitude, b.phase) - b.y_query) ** 2).mean(dim=(1, 2))
    return mean_ci95(per_task)


def train_pretrained(cfg: SinusoidConfig, *, progress: bool = True) -> tuple[nn.Module, History]:
    """The pretrained baseline: the MLP trained on all tasks jointly (same stream, same Adam)."""
    torch.manual_seed(cfg.seed)
    model = SinusoidMLP()
    gen = torch.Generator().manual_seed(cfg.seed)
    history = pretrain(model, task_stream(cfg, gen), iterations=cfg.iterations, lr=cfg.meta_lr,
                       progress=progress)
    return model, history


def tune_step_size(model: nn.Module, k_shot: int, *, candidates=PRETRAIN_STEP_SIZES,
                   max_steps: int = 10, num_tasks: int = 200) -> float:
    """The fine-tuning step size with the lowest MSE after ``max_steps`` steps on *separate* tasks.

    The paper fine-tunes the pretrained baseline "using an automatically tuned step size";
    tuning on tasks other than the 600 meta-test tasks keeps the test set untouched.
    """
    tasks = eval_tasks(k_shot, num_tasks, STEP_SIZE_SEED)
    scores = {a: evaluate_model(model, k_shot, a, max_steps=max_steps, tasks=tasks).mean[-1]
              for a in candidates}
    return min(scores, key=scores.get)
