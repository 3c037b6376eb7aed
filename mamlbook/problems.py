"""A meta-learning problem: the model to build, the training task stream, fixed validation and test tasks.

One :class:`Problem` serves the command line, chapter 8's race and the recipes, for the sinusoids
(chapter 2) and for N-way K-shot classification (chapters 6–7). Its task sets are drawn from
seeded generators, so every learner and every run sees the very same validation and test tasks;
:func:`evaluate_learner` scores a learner on them (query MSE, or accuracy in %, after 0…n steps
of the learner's own adaptation), with 95% CIs of 1.96·std/√n as the official MAML code.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterator

import torch
import torch.nn.functional as F
from torch import nn

from .algorithms import PRETRAINED
from .conv import miniimagenet_conv4, omniglot_conv4
from .data import ClassImages, EpisodeSampler
from .errors import OptionError
from .evaluate import mean_ci95
from .models import SinusoidMLP
from .sinusoid import EVAL_SEED
from .tasks import sample_sinusoid_tasks
from .train import Batch, as_batch

__all__ = ["TaskSet", "ClassBatches", "Problem", "score", "metric_fn", "summarize_scores", "evaluate_learner",
           "sinusoid_problem", "fewshot_problem", "make_model", "make_sampler"]


@dataclass
class TaskSet:
    """``num_tasks`` fixed tasks, drawn ``chunk`` at a time from a generator seeded with ``seed``.

    Drawn anew on each pass (the same tensors every time), so 600 mini-ImageNet tasks never sit
    in memory at once.
    """

    draw: Callable[[int, torch.Generator], Batch]
    num_tasks: int
    seed: int
    chunk: int = 25

    def batches(self) -> Iterator[Batch]:
        gen = torch.Generator().manual_seed(self.seed)
        for done in range(0, self.num_tasks, self.chunk):
            yield self.draw(min(self.chunk, self.num_tasks - done), gen)


class ClassBatches:
    """Flat batches (x (B, C, H, W), y (B,)) of a split's images with their global class labels 0..C−1.

    What supervised pretraining (Chen et al. 2019's Baseline, Tian et al. 2020) trains on: every
    image of every meta-train class, the label being the class's index in the split (rotated
    copies are classes of their own, as in the episodes). Each batch is B i.i.d. uniform draws
    over the split's images from the given generator (Chen et al.'s loader shuffles per epoch
    instead; the two differ only in the order of visits). The images move to ``device`` on the
    first draw, so a problem that never pretrains never copies them.
    """

    def __init__(self, split: ClassImages, device=None):
        self.split, self.device, self.num_classes = split, device, split.num_classes
        self._flat = None

    def sample(self, batch_size: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """``batch_size`` images as float32 in [0, 1], (B, C, H, W), and their class indices (B,)."""
        if self._flat is None:
            split = self.split if self.device is None else self.split.to(self.device)
            per_class, (c, h, w) = split.images.shape[1], split.image_shape
            real = torch.arange(per_class, device=split.device)[None, :] < split.counts[:, None]  # (C, P)
            self._rows = real.flatten().nonzero().squeeze(1)              # (images,) rows of the flat view
            self._flat = split.images.reshape(-1, h, w, c)                 # (classes·P, H, W, C) uint8
        pick = torch.randint(len(self._rows), (batch_size,), generator=generator,
                             device=generator.device).to(self._rows.device)
        rows = self._rows[pick]
        x = self._flat.index_select(0, rows).permute(0, 3, 1, 2).to(torch.float32).div_(255.0)
        return x, rows // self.split.images.shape[1]


@dataclass
class Problem:
    """What a learner trains and is tested on.

    Attributes:
        name: "sinusoid", "omniglot" or "miniimagenet" (named in results; ``kind`` picks the settings).
        kind: "regression" or "classification".
        make_model: builds a fresh network (call it after seeding).
        sample: draws one training meta-batch (x_s, y_s, x_q, y_q) from a generator.
        tests: the fixed test tasks by protocol name (e.g. "5 queries/class").
        val: the fixed meta-validation tasks (None: no model selection).
        meta_lr: Adam's β.
        note: said with every result (e.g. that the data is a FAKE stand-in).
        classes: flat batches of the meta-train classes with global labels (classification only), for
            the learners that pretrain a classifier (``learner.batches == "classes"``); see :meth:`sampler`.
    """

    name: str
    kind: str
    make_model: Callable[[], nn.Module]
    sample: Callable[[torch.Generator], Batch]
    tests: dict[str, TaskSet]
    val: TaskSet | None = None
    meta_lr: float = 1e-3
    note: str = ""
    classes: ClassBatches | None = None

    @property
    def num_classes(self) -> int | None:
        """How many meta-train classes there are (the pretraining head's size); None for regression."""
        return None if self.classes is None else self.classes.num_classes

    def options_for(self, name: str, options: dict) -> dict:
        """``options`` for learner ``name`` on this problem: a :data:`~mamlbook.algorithms.PRETRAINED` one
        also gets ``num_classes``, the size of its pretraining head."""
        return {**options, "num_classes": self.num_classes} if name in PRETRAINED else options

    def sampler(self, learner) -> Callable[[torch.Generator], tuple]:
        """What :func:`mamlbook.train.fit` draws for ``learner``: meta-batches of tasks (``sample``), or for a
        pretraining learner (``learner.batches == "classes"``) flat batches of ``learner.batch_size``."""
        if learner.batches == "episodes":
            return self.sample
        if self.classes is None:
            raise OptionError(f"{learner.name} pretrains a classifier on the meta-train classes; the "
                              f"{self.name} problem has none (use a classification preset)")
        return lambda gen: self.classes.sample(learner.batch_size, gen)

    def validator(self) -> Callable[[object], tuple[float, float]] | None:
        """:func:`mamlbook.train.fit`'s ``validate``: a learner's (mean, ci95) on the fixed meta-validation tasks
        after its own ``test_steps``; None where there are none."""
        def validate(learner) -> tuple[float, float]:
            r = evaluate_learner(learner, self.val, self.kind, steps=[learner.test_steps])
            return r["mean"][0], r["ci95"][0]
        return None if self.val is None else validate

    @property
    def metric(self) -> str:
        return "query MSE" if self.kind == "regression" else "query accuracy (%)"

    @property
    def higher_is_better(self) -> bool:
        return self.kind == "classification"

    @property
    def test(self) -> Batch:
        """The first protocol's test tasks as one batch (chapter 8's race)."""
        return tuple(torch.cat(parts) for parts in zip(*next(iter(self.tests.values())).batches()))


def metric_fn(kind: str) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """One task's metric as a tensor: MSE, or accuracy in percent."""
    if kind == "regression":
        return F.mse_loss
    return lambda logits, labels: 100.0 * (logits.argmax(dim=-1) == labels).to(logits.dtype).mean()


def score(kind: str, prediction: torch.Tensor, target: torch.Tensor) -> float:
    """One task's metric: query MSE ("regression") or accuracy in percent ("classification")."""
    if kind == "regression":
        return F.mse_loss(prediction, target).item()
    return 100.0 * (prediction.argmax(dim=-1) == target).double().mean().item()


def summarize_scores(per_task: torch.Tensor) -> dict:
    """Mean, 95% CI, median and the number of diverged tasks (a non-finite metric counts as +∞)."""
    per_task = per_task.double()
    finite = torch.isfinite(per_task)
    per_task = torch.where(finite, per_task, torch.tensor(float("inf"), dtype=per_task.dtype))
    mean, ci = mean_ci95(per_task) if bool(finite.all()) else (float("inf"), float("nan"))
    return {"mean": mean, "ci95": ci, "median": per_task.median().item(), "num_tasks": len(per_task),
            "diverged": int((~finite).sum())}


def evaluate_learner(learner, tasks: TaskSet, kind: str, *, steps: list[int] | None = None,
                     inner_lr: float | None = None) -> dict:
    """Score ``learner`` on ``tasks`` after each number of adaptation steps in ``steps``.

    Returns {"steps", "mean", "ci95", "median", "diverged" (lists aligned with steps), "num_tasks",
    "test_steps", "metric"}. ``steps`` defaults to [0, …, test_steps] for MAML and first-order MAML
    (one incremental curve) and [test_steps] for the others; ``inner_lr`` replaces the training α.
    A learner split across ranks (:mod:`mamlbook.distributed`) scores its share of the tasks on
    each rank; every rank gets the whole per-task table, hence the one-process numbers.
    """
    steps = learner.default_eval_steps() if steps is None else steps

    def scores(b):
        return learner.score_tasks(*b, steps=steps, inner_lr=inner_lr, metric=metric_fn(kind)).cpu()
    ranks = getattr(learner, "ranks", None)           # across ranks: each scores its part, all get the table
    if ranks is None:
        table = torch.cat([scores(b) for b in tasks.batches()]).double()   # (tasks, len(steps))
    else:
        table = ranks.score_split(tasks.batches(), scores, columns=len(steps),
                                  num_batches=-(-tasks.num_tasks // tasks.chunk))
    cols = [summarize_scores(table[:, i]) for i in range(len(steps))]
    return {"metric": "query MSE" if kind == "regression" else "query accuracy (%)",
            "test_steps": learner.test_steps, "num_tasks": table.shape[0], "steps": list(steps),
            **{k: [c[k] for c in cols] for k in ("mean", "ci95", "median", "diverged")}}


def make_model(cfg) -> nn.Module:
    """The paper's Conv4 for the config's dataset (64 filters Omniglot, 32 mini-ImageNet)."""
    if cfg.dataset == "omniglot":
        return omniglot_conv4(cfg.n_way, filters=cfg.filters or 64)
    return miniimagenet_conv4(cfg.n_way, filters=cfg.filters or 32)


def make_sampler(split, cfg, k_query: int | None = None, device=None):
    """An :class:`~mamlbook.data.EpisodeSampler` for ``split`` with the config's N, K (and Q)."""
    return EpisodeSampler(split, cfg.n_way, cfg.k_shot, cfg.k_query if k_query is None else k_query,
                          device=device)


def sinusoid_problem(*, k_shot: int = 10, meta_batch_size: int = 25, num_test_tasks: int = 600,
                     init: str = "pytorch", k_test: list[int] | None = None) -> Problem:
    """The paper's sinusoids (chapter 2): Q = K query points; test tasks from ``EVAL_SEED`` (chapter 2's).

    ``k_test``: the support sizes K to test at (default: the training K), one protocol each.
    """
    def draw(k):
        return lambda n, gen: as_batch(sample_sinusoid_tasks(n, k, generator=gen))
    tests = {f"K={k}": TaskSet(draw(k), num_test_tasks, EVAL_SEED, chunk=num_test_tasks)
             for k in (k_test or [k_shot])}
    train = draw(k_shot)
    return Problem("sinusoid", "regression", lambda: SinusoidMLP(init=init),
                   lambda gen: train(meta_batch_size, gen), tests)


def fewshot_problem(cfg, splits: dict, *, device=None, num_test_tasks: int | None = None, test_seed: int = 0,
                    validate: bool = True) -> Problem:
    """N-way K-shot classification from a :class:`~mamlbook.fewshot.FewShotConfig` and its splits.

    Training and validation use ``cfg.k_query`` queries per class; validation draws ``cfg.val_tasks``
    tasks from ``splits["val"]`` with seed ``cfg.seed + 1``; the meta-test draws ``num_test_tasks``
    (default ``cfg.test_tasks``) from ``splits["test"]`` with ``test_seed`` under each protocol: Q = K
    queries per class (Omniglot's official protocol), and for mini-ImageNet also Q = 15.
    """
    def draw(split, q=None):
        sampler = make_sampler(splits[split], cfg, k_query=q, device=device)
        return lambda n, gen: as_batch(sampler.sample(n, gen))
    train = draw("train")
    val = (TaskSet(draw("val"), cfg.val_tasks, cfg.seed + 1) if validate and "val" in splits else None)
    queries = [cfg.k_shot] + ([15] if cfg.dataset == "miniimagenet" and cfg.k_shot != 15 else [])
    tests = {f"{q} queries/class": TaskSet(draw("test", q), num_test_tasks or cfg.test_tasks, test_seed)
             for q in queries} if "test" in splits else {}
    fake = any(getattr(s, "fake", False) for s in splits.values())
    return Problem(cfg.dataset, "classification", lambda: make_model(cfg),
                   lambda gen: train(cfg.meta_batch_size, gen), tests, val, meta_lr=cfg.meta_lr,
                   note="FAKE data (a generated stand-in)" if fake else "",
                   classes=ClassBatches(splits["train"], device) if "train" in splits else None)
