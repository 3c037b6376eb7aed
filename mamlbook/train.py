"""The one outer training loop, :func:`fit`, for every learner and preset (chapters 2, 6, 8 and the CLI).

``fit(learner, sample, ...)`` repeats: draw a meta-batch from the task stream, take the learner's
outer step, and — when asked — validate on fixed meta-validation tasks (keeping ``best.pt``, the
only model selection: the meta-test split is never looked at), write an atomic checkpoint, stop at
a time budget, show a progress bar. ``resume=True`` continues ``OUT/checkpoint.pt`` bit-identically
on a CPU: θ, the learner's meta-learned extras (inner rates, per-step BN), the optimizer's moments,
the task generator and PyTorch's global RNG all come back. The checkpoint schema is in
:mod:`mamlbook.runs`.

Across processes (``torchrun``; :mod:`mamlbook.distributed`, set on the learner as ``learner.ranks``)
the same loop runs on every rank, each keeping its share of the meta-batch; rank 0 alone writes
(docs/distributed.md).

:func:`meta_train` (MAML on a task stream, chapter 2's name) and :func:`pretrain` (the
joint-training baseline) are the notebooks' thin wrappers.
"""
from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from .algorithms.base import MAML, Algorithm, make_meta_optimizer
from .distributed import on_main
from .errors import OptionError
from .maml import LossFn, backward_detached
from .runs import atomic_write, load_checkpoint, save_checkpoint

__all__ = ["Batch", "BatchFn", "as_batch", "History", "Run", "fit", "write_log", "meta_train", "pretrain",
           "JointTraining", "train_through_tasks", "make_meta_optimizer"]

Batch = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]   # x_s, y_s, x_q, y_q: (T, K|Q, ...)
BatchFn = Callable[[], Batch]                                            # a task source: one meta-batch a call


def as_batch(tasks) -> Batch:
    """Sampled tasks (:class:`~mamlbook.tasks.SinusoidBatch`, :class:`~mamlbook.data.Episodes`) as a :data:`Batch`."""
    return tasks.x_support, tasks.y_support, tasks.x_query, tasks.y_query


@dataclass
class History:
    """What a training run recorded: the loss at every iteration and any periodic evaluations."""

    iteration: list[int] = field(default_factory=list)
    loss: list[float] = field(default_factory=list)
    eval_iteration: list[int] = field(default_factory=list)
    eval: list[object] = field(default_factory=list)
    wall_time_s: float = 0.0

    def smoothed(self, window: int = 100) -> tuple[list[int], list[float]]:
        """The loss averaged over consecutive windows, for plotting."""
        chunks = [(s, self.loss[s:s + window]) for s in range(0, len(self.loss), window)]
        return [self.iteration[s + len(c) - 1] for s, c in chunks], [sum(c) / len(c) for _, c in chunks]


@dataclass
class Run:
    """What :func:`fit` did. ``val`` rows are {"iteration", "mean", "ci95"}; ``best`` is one of them."""

    iteration: int = 0
    losses: list[float] = field(default_factory=list)
    val: list[dict] = field(default_factory=list)
    best: dict | None = None
    train_time_s: float = 0.0
    stopped_by_budget: bool = False
    resumed_from: int | None = None
    step_s: list[float] = field(default_factory=list)       # this session's outer steps, sampling excluded
    out: Path | None = None

    def history(self) -> History:
        """The losses as a :class:`History` (for the book's plotting helpers)."""
        return History(iteration=list(range(1, len(self.losses) + 1)), loss=list(self.losses),
                       wall_time_s=self.train_time_s)


def _rows(val: list[dict]) -> torch.Tensor:
    return torch.tensor([[v["iteration"], v["mean"], v["ci95"]] for v in val], dtype=torch.float64).reshape(-1, 3)


def _state(learner: Algorithm, optimizer, generator, run: Run, config: dict) -> dict:
    return {"config": config, "iteration": run.iteration, "learner": learner.state_dict(),
            "optimizer": optimizer.state_dict() if optimizer is not None else None,
            "generator": generator.get_state(), "torch_rng": torch.get_rng_state(),
            "losses": torch.tensor(run.losses, dtype=torch.float64), "val": _rows(run.val),
            "best": None if run.best is None else [run.best["iteration"], run.best["mean"], run.best["ci95"]],
            "train_time_s": run.train_time_s}


def _flat(config: dict, prefix: str = "") -> dict:
    """{"settings.inner_lr": 2.0, ...}: a run's config, flattened, without what resume may change.

    ``iterations`` (train longer) and ``test_tasks`` (the meta-test's size) do not change training.
    """
    flat = {}
    for k, v in config.items():
        if isinstance(v, dict):
            flat.update(_flat(v, f"{prefix}{k}."))
        elif k not in ("iterations", "test_tasks"):
            flat[prefix + k] = v
    return flat


def _restore(path: Path, learner: Algorithm, optimizer, generator, config: dict) -> Run:
    # Loaded on the CPU: RNG states must stay CPU ByteTensors (set_state refuses CUDA tensors);
    # load_state_dict moves the weights and Adam moments to the learner's device.
    # Across ranks, rank 0 reads the file and hands it to the others (no shared file system needed).
    ranks = getattr(learner, "ranks", None)
    state = on_main(ranks, lambda: load_checkpoint(path, map_location="cpu"))
    saved, mine = _flat(state["config"]), _flat(config)
    if saved != mine:
        diff = sorted(k for k in saved.keys() | mine.keys() if saved.get(k) != mine.get(k))
        raise OptionError(f"{path} was written with a different configuration ({', '.join(diff)} differ); resume "
                          "with the same settings (only --iterations may change), or train into a new --out")
    learner.load_state_dict(state["learner"])
    if optimizer is not None:
        optimizer.load_state_dict(state["optimizer"])
    generator.set_state(state["generator"])
    if ranks is None:
        torch.set_rng_state(state["torch_rng"])
    else:
        ranks.restore_rng(state)
    row = lambda i, m, c: {"iteration": int(i), "mean": m, "ci95": c}     # the inverse of _rows, for one row
    return Run(iteration=state["iteration"], losses=state["losses"].tolist(), train_time_s=state["train_time_s"],
               val=[row(*v) for v in state["val"].tolist()], best=state["best"] and row(*state["best"]),
               resumed_from=state["iteration"])


def write_log(path: Path, run: Run) -> None:
    """``log.csv``: iteration, meta-loss, and the validation score ± 95% CI where one was measured."""
    val = {v["iteration"]: v for v in run.val}
    rows = [f"{i},{loss:.6g}," + (f"{val[i]['mean']:.4f},{val[i]['ci95']:.4f}" if i in val else ",")
            for i, loss in enumerate(run.losses, start=1)]
    text = "\n".join(["iteration,meta_loss,val_mean,val_ci95", *rows]) + "\n"
    atomic_write(path, lambda f: f.write(text), mode="w")


def fit(learner: Algorithm, sample: Callable[[torch.Generator], Batch], *, generator: torch.Generator,
        iterations: int | None, meta_lr: float = 1e-3, optimizer=None, out=None, resume: bool = False,
        checkpoint_every: int = 0, validate: Callable[[Algorithm], tuple[float, float]] | None = None,
        val_every: int = 0, higher_is_better: bool = True, time_budget_s: float | None = None,
        config: dict | None = None, progress: bool = True, desc: str = "meta-train",
        on_step: Callable[[Run], None] | None = None,
        step_context: Callable[[int], contextlib.AbstractContextManager] | None = None) -> Run:
    """Meta-train ``learner`` in place on meta-batches ``sample(generator)``; returns a :class:`Run`.

    Args:
        iterations: the iteration to stop at (None: only ``time_budget_s`` stops the run).
        meta_lr: Adam's β for the default optimizer (``learner.make_optimizer``; None for Reptile).
        out: folder for ``checkpoint.pt`` (every ``checkpoint_every`` iterations and at the end) and
            ``best.pt`` (best validation score); nothing is written without it.
        resume: continue ``out/checkpoint.pt`` (its ``config`` must equal ``config`` but for iterations).
        validate: scores the learner on fixed meta-val tasks → (mean, ci95); every ``val_every``
            iterations and once at the end. ``higher_is_better``: accuracy (True) or MSE (False).
        time_budget_s: stop before the next step once training has used this many seconds (this session).
        on_step: called with the run after every iteration (logging, plotting, measuring).
        step_context: a context manager around outer step ``i`` (e.g. a memory probe on the first).
    """
    if iterations is None and time_budget_s is None:
        raise OptionError("fit needs iterations or a time budget to know when to stop")
    out = Path(out) if out is not None else None
    config = config or {}
    optimizer = learner.make_optimizer(meta_lr) if optimizer is None else optimizer
    if resume and out is None:
        raise OptionError("resume needs the run's out folder")
    run = _restore(out / "checkpoint.pt", learner, optimizer, generator, config) if resume else Run()
    run.out = out
    cuda = learner.device.type == "cuda"
    ranks = getattr(learner, "ranks", None)              # None: one process
    main = ranks is None or ranks.is_main                # the one that writes

    def checkpoint(name: str = "checkpoint.pt") -> None:
        if out is None:
            return
        extras = {} if ranks is None else ranks.checkpoint_extras(learner, generator, run.iteration)
        if main:
            save_checkpoint(out / name, {**_state(learner, optimizer, generator, run, config), **extras})
            if name == "checkpoint.pt":
                write_log(out / "log.csv", run)

    def validate_now() -> None:
        mean, ci = validate(learner)
        run.val.append({"iteration": run.iteration, "mean": mean, "ci95": ci})
        if run.best is None or (mean > run.best["mean"] if higher_is_better else mean < run.best["mean"]):
            run.best = run.val[-1]
            checkpoint("best.pt")

    started, base = time.perf_counter(), run.train_time_s
    bar = tqdm(total=iterations, initial=run.iteration, disable=not (progress and main), mininterval=0.5, desc=desc)
    while iterations is None or run.iteration < iterations:
        elapsed = time.perf_counter() - started
        if time_budget_s is not None:
            over = elapsed >= time_budget_s
            if ranks is not None:
                over = ranks.any(over)                                 # all ranks stop together
            if over:
                run.stopped_by_budget = True
                run.train_time_s = base + elapsed                      # the time the budget was checked at
                break
        batch = sample(generator)                                      # the whole meta-batch, on every rank
        if ranks is not None:
            batch = ranks.shard(batch)                                 # this rank's T/N tasks
        fraction = run.iteration / iterations if iterations else elapsed / time_budget_s
        t0 = time.perf_counter()
        with step_context(run.iteration) if step_context else contextlib.nullcontext():
            loss = learner.outer_step(optimizer, *batch, iteration=run.iteration, progress=fraction)
        if cuda:
            torch.cuda.synchronize()
        run.step_s.append(time.perf_counter() - t0)
        run.iteration += 1
        run.losses.append(float("nan") if loss is None else loss)
        run.train_time_s = base + time.perf_counter() - started
        if validate is not None and val_every and run.iteration % val_every == 0:
            validate_now()
        if checkpoint_every and run.iteration % checkpoint_every == 0:
            checkpoint()
        if on_step is not None:
            on_step(run)
        bar.update(1)
        if loss is not None and run.iteration % 20 == 0:
            recent = run.losses[-20:]
            bar.set_postfix(loss=f"{sum(recent) / len(recent):.3f}", refresh=False)
    bar.close()
    if validate is not None and (not run.val or run.val[-1]["iteration"] != run.iteration):
        validate_now()                                                 # the last θ gets a say too
    checkpoint()
    return run


def meta_train(model: nn.Module, sample_batch: BatchFn, *, iterations: int, inner_lr: float,
               inner_steps: int = 1, meta_lr: float = 1e-3, loss_fn: LossFn = F.mse_loss,
               first_order: bool = False, batched: bool | str = "auto",
               optimizer: torch.optim.Optimizer | None = None,
               eval_fn: Callable[[], object] | None = None, eval_every: int = 0,
               on_iteration: Callable[[int], None] | None = None, compile: bool = False,
               progress: bool = True, desc: str = "meta-train") -> History:
    """Meta-train ``model`` in place with MAML (:func:`fit` with a :class:`~mamlbook.algorithms.MAML`).

    Each iteration samples a meta-batch, computes the outer loss (1/T) Σ L_query(θ'_i)
    and takes one Adam step on θ (meta_lr = 1e-3, the official code's β).

    Args:
        sample_batch: returns (x_support, y_support, x_query, y_query) for T tasks.
        iterations: meta-training iterations (70,000 in the official code's sinusoid runs).
        optimizer: by default Adam(model.parameters(), lr=meta_lr).
        eval_fn / eval_every: called every ``eval_every`` iterations, result kept in history.
        on_iteration: called with the finished iteration count.
        compile: ``torch.compile`` the outer step (:class:`~mamlbook.algorithms.MAML`'s ``compile``: for a
            ReLU MLP with MSE, :func:`mamlbook.fast.fused_mlp_step`; else
            :func:`mamlbook.functional.make_meta_grad`): the same maths up to rounding; a one-off compile,
            then much faster steps.
    """
    learner = MAML(model, problem="regression", loss_fn=loss_fn, inner_lr=inner_lr, inner_steps=inner_steps,
                   first_order=first_order, batched=batched, compile=compile)
    history = History()

    def on_step(run: Run) -> None:
        if eval_fn is not None and eval_every and run.iteration % eval_every == 0:
            history.eval_iteration.append(run.iteration)
            history.eval.append(eval_fn())
        if on_iteration is not None:
            on_iteration(run.iteration)

    run = fit(learner, lambda _: sample_batch(), generator=torch.Generator(), iterations=iterations,
              meta_lr=meta_lr, optimizer=optimizer, progress=progress, desc=desc, on_step=on_step)
    return replace(run.history(), eval_iteration=history.eval_iteration, eval=history.eval)


def pretrain(model: nn.Module, sample_batch: BatchFn, *, iterations: int, lr: float = 1e-3,
             loss_fn: LossFn = F.mse_loss, progress: bool = True,
             desc: str = "pretrain") -> History:
    """The *pretrained* baseline: one network trained on all tasks jointly, no inner loop.

    Each iteration fits the support points of a fresh meta-batch with Adam (as the
    official code's ``pretrain_op`` does). It learns the best single answer for all tasks
    at once: for the paper's sinusoids (phase in [0, π]) that is the mean task
    E[A·sin(x − φ)] = −(2·E[A]/π)·cos x ≈ −1.62·cos x (chapter 1 derives it).
    """
    learner = JointTraining(model, problem="regression", loss_fn=loss_fn)
    return fit(learner, lambda _: sample_batch(), generator=torch.Generator(), iterations=iterations, meta_lr=lr,
               progress=progress, desc=desc).history()


def train_through_tasks(model: nn.Module, sample_task: BatchFn, num_tasks: int, *, lr: float,
                        steps_per_task: int = 1, progress: bool = True,
                        desc: str = "one task at a time") -> History:
    """The seed article's loop (chapter 1 writes it out; chapter 9's baseline): one network and one Adam
    optimizer, ``steps_per_task`` steps on each task's support set, task after task; no inner loop.

    ``sample_task()`` returns one task as a meta-batch of one, (1, K, ...) each. The history holds each
    task's last loss.
    """
    calls, task = 0, None

    def sample(_):
        nonlocal calls, task
        if calls % steps_per_task == 0:                       # a new task every steps_per_task steps
            task = sample_task()
        calls += 1
        return task
    run = fit(JointTraining(model, problem="regression"), sample, generator=torch.Generator(),
              iterations=num_tasks * steps_per_task, optimizer=torch.optim.Adam(model.parameters(), lr=lr),
              progress=progress, desc=desc)
    return History(iteration=list(range(1, num_tasks + 1)), loss=run.losses[steps_per_task - 1::steps_per_task],
                   wall_time_s=run.train_time_s)


class JointTraining(Algorithm):
    """:func:`pretrain`'s learner: no inner loop; each outer step is one Adam step on the support points of
    every task of the meta-batch at once (the query points are not used)."""

    name = "pretrained"
    has_inner_loop = False
    supports = frozenset()

    def _backward(self, x_s, y_s, x_q, y_q, iteration):
        return backward_detached(self.loss_fn(self.model(x_s.flatten(0, 1)), y_s.flatten(0, 1)))  # (T·K, ...)
