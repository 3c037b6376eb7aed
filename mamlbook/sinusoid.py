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

import argparse
import datetime
import math
import os
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

import torch
from torch import nn

from .evaluate import NUM_TEST_TASKS, EvalResult, adaptation_curve, mean_ci95, summarize
from .models import SinusoidMLP
from .runs import machine_info, write_json
from .tasks import SinusoidBatch, sample_sinusoid_tasks
from .train import History, as_batch, meta_train, pretrain

__all__ = ["EVAL_SEED", "STEP_SIZE_SEED", "PRETRAIN_STEP_SIZES", "PAPER_TEST_K", "SinusoidConfig",
           "task_stream", "train_maml", "eval_tasks", "task_curves", "evaluate_model", "OracleMLP",
           "train_oracle", "evaluate_oracle", "train_pretrained", "tune_step_sizes", "tune_step_size",
           "tuned_curves", "paper_protocol"]

EVAL_SEED = 2017          # the 600 meta-test tasks: the same for every model, so comparisons are paired
STEP_SIZE_SEED = 2018     # separate tasks on which the pretrained baseline's fine-tuning step is tuned
PRETRAIN_STEP_SIZES = (0.001, 0.003, 0.01, 0.02, 0.03, 0.05, 0.1, 0.3)
PAPER_TEST_K = (5, 10, 20)   # App. B: "the MAML model trained on 10-shot learning and evaluated on 5-shot,
                             # 10-shot, and 20-shot"


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
        refusals = [(self.k_shot <= 0, f"k_shot (K) must be a positive number of support points, got {self.k_shot}"),
                    (self.meta_batch_size <= 0, f"meta_batch_size must be positive, got {self.meta_batch_size}"),
                    (not self.inner_lr > 0, f"inner_lr (α) must be positive, got {self.inner_lr}"),
                    (not self.meta_lr > 0, f"meta_lr (β) must be positive, got {self.meta_lr}"),
                    (self.inner_steps < 1, f"inner_steps must be at least 1, got {self.inner_steps}"),
                    (self.iterations < 0, f"iterations must be ≥ 0, got {self.iterations}"),
                    (self.init not in ("pytorch", "official"),
                     f"init must be 'pytorch' or 'official', got {self.init!r}")]
        for bad, why in refusals:
            if bad:
                raise ValueError(why)

    def to_dict(self) -> dict:
        return asdict(self)


def task_stream(cfg: SinusoidConfig, generator: torch.Generator):
    """A ``sample_batch`` callable for :func:`mamlbook.train.meta_train`: fresh tasks every call."""
    return lambda: as_batch(sample_sinusoid_tasks(cfg.meta_batch_size, cfg.k_shot, generator=generator))


def train_maml(cfg: SinusoidConfig, *, compile: bool = False, progress: bool = True,
               model: nn.Module | None = None, **kwargs) -> tuple[nn.Module, History]:
    """Meta-train the paper's MLP with MAML; returns (model, history). Seeded by ``cfg.seed``."""
    torch.manual_seed(cfg.seed)
    model = model if model is not None else SinusoidMLP(init=cfg.init)
    return model, meta_train(model, task_stream(cfg, torch.Generator().manual_seed(cfg.seed)),
                             iterations=cfg.iterations, inner_lr=cfg.inner_lr, inner_steps=cfg.inner_steps,
                             meta_lr=cfg.meta_lr, first_order=cfg.first_order, compile=compile, progress=progress,
                             desc=f"MAML K={cfg.k_shot}", **kwargs)


def eval_tasks(k_shot: int, num_tasks: int = NUM_TEST_TASKS, seed: int = EVAL_SEED,
               k_query: int | None = None) -> SinusoidBatch:
    """The fixed meta-test tasks: ``num_tasks`` sinusoids with K support and Q (= K) query points."""
    return sample_sinusoid_tasks(num_tasks, k_shot, k_query, generator=torch.Generator().manual_seed(seed))


def task_curves(model: nn.Module, k_shot: int, inner_lr: float, *, max_steps: int = 10,
                num_tasks: int = NUM_TEST_TASKS, seed: int = EVAL_SEED,
                tasks: SinusoidBatch | None = None) -> torch.Tensor:
    """Per-task query MSE after 0..max_steps SGD steps at ``inner_lr``: shape (tasks, max_steps + 1).

    The per-task values are what a *paired* comparison needs: two models tested on the same tasks
    are compared through the CI of their per-task differences, not through two separate CIs.
    A task whose adaptation diverged so far that its MSE became NaN (inf − inf) is recorded as +inf,
    so that the median over tasks stays defined (``torch.median`` would return NaN).
    """
    b = tasks if tasks is not None else eval_tasks(k_shot, num_tasks, seed)
    b = b.to(dtype=next(model.parameters()).dtype)
    curve = adaptation_curve(model, dict(model.named_parameters()), b.x_support, b.y_support,
                             b.x_query, b.y_query, inner_lr=inner_lr, max_steps=max_steps)
    return curve.nan_to_num(nan=float("inf"), posinf=float("inf"))


def evaluate_model(model: nn.Module, k_shot: int, inner_lr: float, *, max_steps: int = 10,
                   num_tasks: int = NUM_TEST_TASKS, seed: int = EVAL_SEED,
                   tasks: SinusoidBatch | None = None) -> EvalResult:
    """Query MSE after 0..max_steps SGD steps at ``inner_lr`` on new tasks, mean ± 95% CI."""
    return summarize(task_curves(model, k_shot, inner_lr, max_steps=max_steps, num_tasks=num_tasks,
                                 seed=seed, tasks=tasks))


class OracleMLP(nn.Module):
    """The oracle baseline: the same MLP, also told each task's amplitude and phase (3 inputs)."""

    def __init__(self, hidden: int = 40):
        super().__init__()
        self.net = SinusoidMLP(in_features=3, hidden=hidden)

    def forward(self, x: torch.Tensor, amplitude: torch.Tensor, phase: torch.Tensor) -> torch.Tensor:
        return self.net(self.inputs(x, amplitude, phase))

    @staticmethod
    def inputs(x: torch.Tensor, amplitude: torch.Tensor, phase: torch.Tensor) -> torch.Tensor:
        """(x, A, φ) per point: x (..., N, 1); amplitude, phase (...,) broadcast to every point of their task."""
        a, p = (t[..., None, None].expand_as(x) for t in (amplitude, phase))
        return torch.cat([x, a, p], dim=-1)                                    # (..., N, 3)


def train_oracle(cfg: SinusoidConfig, *, progress: bool = True) -> tuple[OracleMLP, History]:
    """Train the oracle on the same task stream as MAML (joint training by :func:`pretrain`, Adam at β)."""
    torch.manual_seed(cfg.seed)
    model = OracleMLP()
    gen = torch.Generator().manual_seed(cfg.seed)

    def batch():
        b = sample_sinusoid_tasks(cfg.meta_batch_size, cfg.k_shot, generator=gen)
        return model.inputs(b.x_support, b.amplitude, b.phase), b.y_support, None, None

    return model, pretrain(model.net, batch, iterations=cfg.iterations, lr=cfg.meta_lr, progress=progress,
                           desc="oracle")


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
    return model, pretrain(model, task_stream(cfg, torch.Generator().manual_seed(cfg.seed)),
                           iterations=cfg.iterations, lr=cfg.meta_lr, progress=progress)


def tune_step_sizes(model: nn.Module, k_shot: int, steps: Sequence[int], *,
                    candidates: Sequence[float] = PRETRAIN_STEP_SIZES, num_tasks: int = 200,
                    tasks: SinusoidBatch | None = None) -> dict[int, float]:
    """For each step count in ``steps``, the candidate step size with the lowest mean query MSE after
    that many fine-tuning steps, on *separate* tasks (``STEP_SIZE_SEED``, never the test tasks).

    The paper fine-tunes the pretrained baseline "using an automatically tuned step size"; the step size
    best after ten steps need not be best after one, so a baseline compared after s steps is tuned for
    s steps. Candidates whose mean overflows (diverged fine-tuning) are never chosen.
    """
    steps = sorted(set(steps))
    if not steps or steps[0] < 1:
        raise ValueError(f"steps must be step counts ≥ 1, got {steps}")
    tasks = tasks if tasks is not None else eval_tasks(k_shot, num_tasks, STEP_SIZE_SEED)
    means = {a: summarize(task_curves(model, k_shot, a, max_steps=steps[-1], tasks=tasks)).mean
             for a in candidates}
    tuned = {}
    for s in steps:
        finite = {a: m[s] for a, m in means.items() if math.isfinite(m[s])}
        if not finite:
            raise ValueError(f"every candidate step size diverged after {s} steps: {list(candidates)}")
        tuned[s] = min(finite, key=finite.get)
    return tuned


def tune_step_size(model: nn.Module, k_shot: int, *, candidates: Sequence[float] = PRETRAIN_STEP_SIZES,
                   max_steps: int = 10, num_tasks: int = 200) -> float:
    """The fine-tuning step size with the lowest MSE after ``max_steps`` steps on *separate* tasks."""
    return tune_step_sizes(model, k_shot, [max_steps], candidates=candidates, num_tasks=num_tasks)[max_steps]


def tuned_curves(model: nn.Module, k_shot: int, step_sizes: Mapping[int, float], *,
                 num_tasks: int = NUM_TEST_TASKS, seed: int = EVAL_SEED,
                 tasks: SinusoidBatch | None = None) -> torch.Tensor:
    """Per-task query MSE, (tasks, S + 1), where column s comes from fine-tuning at ``step_sizes[s]``,
    the step size tuned for s steps (:func:`tune_step_sizes`); column 0 is before any step.

    ``step_sizes`` must name every step count 1..S.
    """
    top = max(step_sizes)
    missing = [s for s in range(1, top + 1) if s not in step_sizes]
    if missing:
        raise ValueError(f"step_sizes has no step size for {missing} steps: tune with steps=range(1, {top + 1})")
    b = tasks if tasks is not None else eval_tasks(k_shot, num_tasks, seed)
    by_lr = {a: task_curves(model, k_shot, a, max_steps=top, tasks=b) for a in set(step_sizes.values())}
    out = next(iter(by_lr.values())).clone()
    for s in range(1, top + 1):
        out[:, s] = by_lr[step_sizes[s]][:, s]
    return out


def _record(curve: torch.Tensor) -> dict:
    r = summarize(curve)
    return {"mean": r.mean, "ci95": r.ci95, "median": r.median}


def paper_protocol(*, iterations: int = 70_000, baseline_iterations: int = 70_000, k_train: int = 10,
                   k_test: Sequence[int] = PAPER_TEST_K, num_tasks: int = NUM_TEST_TASKS,
                   max_steps: int = 10, seed: int = 0, compile: bool = False,
                   progress: bool = True) -> dict:
    """The paper's sinusoid experiment (§5.1, App. B, App. C.1), as chapter 2 runs it; returns a JSON-able dict.

    The protocol and what it records per K: README.md, section "Sinusoid regression (chapter 2)"; also the
    per-step MSE of the task that ends worst (the one that decides the mean when adaptation diverges).
    """
    start, load_before = time.perf_counter(), os.getloadavg()
    cfg = SinusoidConfig(k_shot=k_train, iterations=iterations, seed=seed)
    base_cfg = SinusoidConfig(k_shot=k_train, iterations=baseline_iterations, seed=seed)
    maml, maml_history = train_maml(cfg, compile=compile, progress=progress)
    pretrained, pretrained_history = train_pretrained(base_cfg, progress=progress)
    oracle, oracle_history = train_oracle(base_cfg, progress=progress)
    eval_start = time.perf_counter()
    results = {}
    for k in k_test:
        tasks = eval_tasks(k, num_tasks)
        m = task_curves(maml, k, cfg.inner_lr, max_steps=max_steps, tasks=tasks)
        step_sizes = tune_step_sizes(pretrained, k, range(1, max_steps + 1))
        p = tuned_curves(pretrained, k, step_sizes, tasks=tasks)
        paired = [mean_ci95(m[:, s] - p[:, s]) for s in range(max_steps + 1)]
        worst = int(m[:, max_steps].nan_to_num(float("inf")).argmax())
        results[f"K={k}"] = {
            "maml": {"inner_lr": cfg.inner_lr, **_record(m),
                     "tasks_worse_after_max_steps": int((m[:, max_steps] > m[:, 0]).sum()),
                     "worst_task": {"index": worst, "curve": m[worst].tolist()}},
            "pretrained": {"step_sizes": {str(s): a for s, a in step_sizes.items()}, **_record(p)},
            "oracle": dict(zip(("mean", "ci95"), evaluate_oracle(oracle, k, num_tasks=num_tasks))),
            "maml_minus_pretrained": {"mean": [d for d, _ in paired], "ci95": [c for _, c in paired]}}
    now = time.perf_counter()
    return {"protocol": "Finn et al. 2017, §5.1 and App. B: one MAML model trained with K = 10, "
                        "evaluated at K = 5, 10, 20 (chapter 2)",
            "config": cfg.to_dict(), "baseline_iterations": baseline_iterations, "k_test": list(k_test),
            "num_tasks": num_tasks, "max_steps": max_steps, "steps": list(range(max_steps + 1)),
            "eval_seed": EVAL_SEED, "step_size_seed": STEP_SIZE_SEED, "compiled": compile,
            "results": results,
            "wall_time_s": {"maml": maml_history.wall_time_s, "pretrained": pretrained_history.wall_time_s,
                            "oracle": oracle_history.wall_time_s, "evaluation": now - eval_start,
                            "total": now - start},
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "machine": machine_info(), "load_average_1min": {"start": load_before[0], "end": os.getloadavg()[0]}}


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m mamlbook.sinusoid --out results/chapter02/full_run.json``: chapter 2's full run."""
    ap = argparse.ArgumentParser(prog="python -m mamlbook.sinusoid", description=main.__doc__)
    ap.add_argument("--out", required=True, help="the JSON file to write (atomically)")
    ap.add_argument("--iterations", type=int, default=70_000, help="MAML meta-iterations (official code: 70,000)")
    ap.add_argument("--baseline-iterations", type=int, default=70_000)
    ap.add_argument("--num-tasks", type=int, default=NUM_TEST_TASKS)
    ap.add_argument("--no-compile", action="store_true", help="do not torch.compile the meta-gradient")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    record = paper_protocol(iterations=args.iterations, baseline_iterations=args.baseline_iterations,
                            num_tasks=args.num_tasks, compile=not args.no_compile, seed=args.seed)
    record["command"] = "python -m mamlbook.sinusoid " + " ".join(sys.argv[1:] if argv is None else argv)
    write_json(args.out, record)
    print(f"wrote {args.out} ({record['wall_time_s']['total']:.0f} s)")


if __name__ == "__main__":
    main()
