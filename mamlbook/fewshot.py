"""MAML for N-way K-shot classification: meta-training with checkpoints, validation, 600-task tests.

Chapters 6 and 7. A run: :class:`FewShotConfig` (the paper's values: :mod:`mamlbook.presets`),
:func:`load_splits`, :func:`train_fewshot` (model selection on the meta-val split only; the meta-test
split is never looked at during training) and :func:`meta_test`. The inner loss is the MEAN
cross-entropy, so α is N × the official code's (0.4 → 2.0 on 5-way Omniglot; chapter 6 checks it
numerically): docs/classification.md, section "Choices, stated once".
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .algorithms.base import MAML
from .data import DatasetNotFoundError, find_omniglot_small, load_miniimagenet, omniglot_splits
from .evaluate import EvalResult, adaptation_curve, summarize
from .problems import fewshot_problem, make_model, make_sampler
from .runs import load_checkpoint
from .train import as_batch, fit

__all__ = ["SMALL_VAL_ALPHABETS", "FewShotConfig", "accuracy", "load_splits", "small_omniglot", "evaluate_accuracy",
           "FewShotRun", "maml_learner", "train_fewshot", "meta_test", "random_init_baseline"]

SMALL_VAL_ALPHABETS = ("Early_Aramaic",)  # small1's alphabet held out as meta-val (a Vinyals val alphabet)


@dataclass
class FewShotConfig:
    """One classification run. Defaults: the paper's 5-way 1-shot Omniglot (see presets.py).

    Attributes:
        dataset: "omniglot" or "miniimagenet".
        split: Omniglot split preset: "small" (the two small background sets; meta-val is
            small1's Early_Aramaic), "maml" (cbfinn/maml's 1100/100/423) or "vinyals".
        n_way, k_shot: N classes per task, K support images per class.
        k_query: query images per class in meta-training and validation (Omniglot: K, as the
            official code; mini-ImageNet: 15).
        meta_batch_size: tasks per meta-update.
        inner_lr: α for the MEAN cross-entropy (= the official α × N).
        inner_steps / test_inner_steps: inner SGD steps in meta-training / at meta-test.
        meta_lr: Adam's β (1e-3).
        grad_clip: clip each meta-gradient entry to ±grad_clip, in mean-CE units (docs/classification.md).
        val_every, val_tasks: validate every ``val_every`` iterations on ``val_tasks`` fixed tasks.
        test_tasks: meta-test tasks (600, as the official code).
        checkpoint_every: iterations between atomic checkpoints.
        amp: mixed precision (bf16 autocast, or fp16 + GradScaler; CUDA only).
        compile: compute the meta-gradient with the ``torch.compile``-d
            :func:`~mamlbook.functional.make_meta_grad` (docs/classification.md). Not with ``amp``.
        tf32: let CUDA round float32 convolutions/matmuls to TF32 (off by default, for the
            measured loss of precision: docs/classification.md). No effect on CPU.
    """

    dataset: str = "omniglot"
    split: str = "maml"
    n_way: int = 5
    k_shot: int = 1
    k_query: int = 1
    meta_batch_size: int = 32
    inner_lr: float = 2.0
    inner_steps: int = 1
    test_inner_steps: int = 10
    meta_lr: float = 1e-3
    iterations: int = 60_000
    first_order: bool = False
    grad_clip: float | None = None
    filters: int | None = None
    val_every: int = 500
    val_tasks: int = 100
    test_tasks: int = 600
    checkpoint_every: int = 1000
    seed: int = 0
    amp: bool = False
    tf32: bool = False
    compile: bool = False

    def __post_init__(self):
        if self.dataset not in ("omniglot", "miniimagenet"):
            raise ValueError(f"dataset must be 'omniglot' or 'miniimagenet', got {self.dataset!r}")
        for name in ("n_way", "k_shot", "k_query", "meta_batch_size", "iterations", "val_every",
                     "val_tasks", "test_tasks", "checkpoint_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be ≥ 1, got {getattr(self, name)}")
        if self.compile and self.amp:
            raise ValueError("compile and amp cannot be combined yet: choose one")
        if not self.inner_lr > 0 or not self.meta_lr > 0:
            raise ValueError(f"inner_lr and meta_lr must be positive, got {self.inner_lr}, {self.meta_lr}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "FewShotConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})

    def replace(self, **changes) -> "FewShotConfig":
        return dataclasses.replace(self, **changes)


def accuracy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Fraction of ``labels`` (M,) that the argmax of ``logits`` (M, N) gets right (a 0-d float tensor)."""
    return (logits.argmax(dim=-1) == labels).float().mean()


# ----------------------------------------------------------------------------- data

def _omniglot_small_with_val(root) -> dict:
    plain = omniglot_splits("small", root, rotations=(0,))
    train = plain["train"]
    is_val = [n.split("/")[0] in SMALL_VAL_ALPHABETS for n in train.class_names]
    splits = {"train": train.subset([i for i, v in enumerate(is_val) if not v], name=train.name),
              "val": train.subset([i for i, v in enumerate(is_val) if v],
                                  name=train.name.removesuffix("/train") + "/val"),
              "test": plain["test"]}
    return {k: s.with_rotations((0, 90, 180, 270)) for k, s in splits.items()}


def load_splits(cfg: FewShotConfig, data: str | os.PathLike | None = None) -> dict:
    """{"train", "val", "test"} :class:`~mamlbook.data.ClassImages` for the config's dataset.

    Args:
        data: the data folder (for Omniglot "small": holding ``images_background_small{1,2}.zip``
            directly or in ``omniglot/``; for mini-ImageNet: the dataset folder or a folder with
            ``miniimagenet/`` in it). Default: the book's data roots (see docs/data.md).
    Raises:
        FileNotFoundError: the data is not there; the message says where to get it and where to put it.
    """
    if data is not None and not Path(data).is_dir():
        raise DatasetNotFoundError(f"data folder {data} does not exist; " + _where_to_get(cfg))
    try:
        if cfg.dataset == "omniglot":
            return _omniglot_small_with_val(data) if cfg.split == "small" else omniglot_splits(cfg.split, data)
        if data is not None and (Path(data) / "miniimagenet").is_dir():
            data = Path(data) / "miniimagenet"
        return {split: load_miniimagenet(data, split) for split in ("train", "val", "test")}
    except FileNotFoundError as err:
        raise DatasetNotFoundError(f"{str(err).splitlines()[0]}; {_where_to_get(cfg)}") from err


def small_omniglot(*, allow_fake: bool) -> tuple[dict | None, str | None]:
    """The small Omniglot splits (train / val = Early_Aramaic / test) and where they came from, each split
    printed with its size; ``(None, None)``, and why, where they are not on this machine."""
    try:
        small1, _, origin = find_omniglot_small(download=False, allow_fake=allow_fake)
        splits = load_splits(FewShotConfig(split="small"), small1.parent)
    except FileNotFoundError as err:
        print("The Omniglot experiments are SKIPPED: the small Omniglot sets are not on this machine.\n", err)
        return None, None
    print("Omniglot small sets:", origin, small1.parent)
    for name, s in splits.items():
        print(f"{name:>5}: {s.num_classes:4d} classes ({s.name})")
    if any(s.fake for s in splits.values()):
        print("FAKE DATA: every Omniglot number below comes from a generated stand-in, not from Omniglot.")
    return splits, origin


def _where_to_get(cfg: FewShotConfig) -> str:
    if cfg.dataset == "omniglot":
        if cfg.split == "small":
            return ("Omniglot's small sets: images_background_small1.zip and images_background_small2.zip from "
                    "https://github.com/brendenlake/omniglot (folder python/), or "
                    "mamlbook.data.download_omniglot_small(); pass their folder as --data. See docs/data.md.")
        return ("Full Omniglot: images_background.zip and images_evaluation.zip from "
                "https://github.com/brendenlake/omniglot (folder python/), e.g. with "
                "mamlbook.data.download_omniglot_full(DIR); pass DIR as --data. See docs/data.md.")
    return ("mini-ImageNet: put images/ + train.csv/val.csv/test.csv (Ravi & Larochelle), class folders, or "
            "learn2learn's mini-imagenet-cache-*.pkl in DIR/miniimagenet and pass --data DIR. See docs/data.md.")


# ----------------------------------------------------------------------------- evaluation

def evaluate_accuracy(model: nn.Module, sampler, *, inner_lr: float, steps: int = 10,
                      num_tasks: int = 600, generator: torch.Generator | None = None,
                      chunk: int = 25, per_task: bool = False):
    """Query accuracy (%) after 0..``steps`` SGD steps of adaptation on ``num_tasks`` new tasks.

    Each task starts from the model's parameters, takes ``steps`` plain SGD steps of size
    ``inner_lr`` on its support set (mean cross-entropy) and is scored on its query set.
    Returns an :class:`~mamlbook.evaluate.EvalResult` (mean and 95% CI in percent), and also
    the (tasks, steps+1) table of per-task accuracies (fractions) if ``per_task``.
    """
    params = {k: v.detach() for k, v in model.named_parameters()}
    curves = []                                              # (chunk, steps+1) accuracies per chunk of tasks
    for done in range(0, num_tasks, chunk):
        batch = as_batch(sampler.sample(min(chunk, num_tasks - done), generator))
        curves.append(adaptation_curve(model, params, *batch, inner_lr=inner_lr, max_steps=steps,
                                       loss_fn=F.cross_entropy, metric_fn=accuracy).cpu())
    table = torch.cat(curves).double()                       # (tasks, steps+1)
    result = summarize(table * 100.0)
    return (result, table) if per_task else result


# ----------------------------------------------------------------------------- training

@dataclass
class FewShotRun:
    """What :func:`train_fewshot` did: the model (last θ), its history and the best validation point.

    ``val`` rows are {"iteration", "acc", "ci95"} (accuracy in %, on the fixed meta-val tasks).
    """

    model: nn.Module
    config: FewShotConfig
    iteration: int
    losses: list[float] = field(default_factory=list)
    val: list[dict] = field(default_factory=list)
    best_iteration: int = 0
    best_val_acc: float = float("nan")
    train_time_s: float = 0.0
    stopped_by_budget: bool = False
    out: Path | None = None

    def best_model(self) -> nn.Module:
        """The model at the best validation accuracy (from ``best.pt``), or the last one if none."""
        if self.out is None or not (self.out / "best.pt").is_file():
            return self.model
        device = next(self.model.parameters()).device
        best = make_model(self.config).to(device)
        best.load_state_dict(load_checkpoint(self.out / "best.pt")["learner"]["model"])
        return best


def maml_learner(cfg: FewShotConfig, model: nn.Module) -> MAML:
    """MAML on ``model`` with the config's α, steps, order, clipping, AMP, TF32 and compile settings."""
    return MAML(model, problem="classification", inner_lr=cfg.inner_lr, inner_steps=cfg.inner_steps,
                test_steps=cfg.test_inner_steps, first_order=cfg.first_order, grad_clip=cfg.grad_clip,
                amp=cfg.amp, tf32=cfg.tf32, compile=cfg.compile)


def train_fewshot(cfg: FewShotConfig, splits: dict, *, out: str | os.PathLike | None = None,
                  resume: bool = False, device=None, time_budget_s: float | None = None,
                  progress: bool = True, desc: str | None = None, validate: bool = True) -> FewShotRun:
    """Meta-train a Conv4 with MAML on ``splits["train"]``, validating on ``splits["val"]`` only.

    A thin wrapper over the one loop, :func:`mamlbook.train.fit`, with the problem of
    :func:`mamlbook.problems.fewshot_problem` and the learner of :func:`maml_learner`.

    Args:
        out: folder for ``checkpoint.pt`` (every ``checkpoint_every`` iterations and at the end,
            written atomically), ``best.pt`` (best validation accuracy) and ``log.csv``.
        resume: continue from ``out/checkpoint.pt`` exactly where it stopped (same model,
            Adam state, episode-generator state and history: bit-identical on a CPU).
        device: default: CUDA if available, else CPU. The split is moved there once.
        time_budget_s: stop early (with a checkpoint) once training has used this many seconds.
        validate: set False to skip validation (and best-checkpoint selection).
    """
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    problem = fewshot_problem(cfg, {k: v for k, v in splits.items() if k != "test"}, device=device,
                              validate=validate)
    torch.manual_seed(cfg.seed)
    learner = maml_learner(cfg, problem.make_model().to(device))
    run = fit(learner, problem.sample, generator=torch.Generator().manual_seed(cfg.seed),
              iterations=cfg.iterations, meta_lr=cfg.meta_lr, out=out, resume=resume,
              checkpoint_every=cfg.checkpoint_every, validate=problem.validator(),
              val_every=cfg.val_every, time_budget_s=time_budget_s,
              config={"settings": cfg.to_dict()}, progress=progress,
              desc=desc or f"MAML {cfg.dataset} {cfg.n_way}-way {cfg.k_shot}-shot")
    best = run.best or {"iteration": 0, "mean": float("nan")}
    return FewShotRun(learner.model, cfg, run.iteration, run.losses,
                      [{"iteration": v["iteration"], "acc": v["mean"], "ci95": v["ci95"]} for v in run.val],
                      best["iteration"], best["mean"], run.train_time_s, run.stopped_by_budget,
                      Path(out) if out is not None else None)


def meta_test(model: nn.Module, cfg: FewShotConfig, test_split, *, num_tasks: int | None = None,
              steps: int | None = None, inner_lr: float | None = None, seed: int = 0,
              device=None) -> dict[str, EvalResult]:
    """The 600-task meta-test under each protocol: {"K queries/class": ..., "15 queries/class": ...}.

    Omniglot: Q = K queries per class (the official code). mini-ImageNet: both Q = 15 (as in
    training; more queries, tighter CIs) and the paper's Q = K (comparable to its ±1.84 / ±0.92).
    Every protocol sees tasks drawn from the same seeded generator.
    """
    queries = [cfg.k_shot] + ([15] if cfg.dataset == "miniimagenet" and cfg.k_shot != 15 else [])
    return {f"{q} queries/class": evaluate_accuracy(
                model, make_sampler(test_split, cfg, k_query=q, device=device), inner_lr=inner_lr or cfg.inner_lr,
                steps=steps or cfg.test_inner_steps, num_tasks=num_tasks or cfg.test_tasks,
                generator=torch.Generator().manual_seed(seed))
            for q in queries}


def random_init_baseline(cfg: FewShotConfig, sampler, *, num_tasks: int, generator=None,
                         device=None) -> EvalResult:
    """The same Conv4, from the same random θ MAML starts from, adapted with the same α and steps."""
    torch.manual_seed(cfg.seed)
    model = make_model(cfg).to(device or "cpu")
    return evaluate_accuracy(model, sampler, inner_lr=cfg.inner_lr, steps=cfg.test_inner_steps,
                             num_tasks=num_tasks, generator=generator)
