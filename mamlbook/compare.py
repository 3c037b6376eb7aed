"""Meta-learning algorithms side by side at an equal wall-clock budget.

:func:`compare` races the algorithms of :mod:`mamlbook.algorithms` as chapter 8, section 8, describes:
the same seconds, initial θ (``torch.manual_seed(seed)`` before the model is built), stream of
meta-batches (a generator seeded with ``seed`` for each) and test tasks, no model selection. Each row records

- ``iterations``: meta-steps completed; the budget is checked before each step, so training
  overruns it by at most one step and its sampling (``train_time_s`` says by how much);
- ``ms_per_step``: the median time of one outer step (sampling the meta-batch excluded);
- ``graph_peak_mb``: the most memory autograd holds for backward at any moment of the first
  outer step: tensors saved for backward, each storage counted once while some graph keeps it
  (a ``saved_tensors_hooks`` tally, the same on CPU and GPU and free of allocator noise; it
  leaves out the optimizer state and tensors no graph saves);
- ``cuda_peak_mb``: on a GPU also ``torch.cuda.max_memory_allocated`` during training, above
  what was allocated before;
- the test metric after each algorithm's own test-time adaptation (``test_steps``): mean, 95%
  CI (1.96·std/√n over tasks, as the MAML code) and median;
- ``diverged``: test tasks whose adaptation blew up (a non-finite MSE, counted as +∞: the mean is
  then ∞ and the median is the honest summary, as in chapter 2), and ``theta_finite``: whether
  meta-training itself kept θ finite (if not, every task diverges).

Per-problem settings (:data:`SETTINGS`) follow each method's paper, as stated next to them.
"""
from __future__ import annotations

import contextlib
import hashlib
import math
import statistics
from dataclasses import dataclass, field
from typing import Sequence

import matplotlib.pyplot as plt
import torch

from . import problems
from .algorithms import make_algorithm
from .config import fast_mode, pick
from .fewshot import FewShotConfig
from .plotting import format_ci, markdown_table
from .problems import Problem, score, summarize_scores
from .train import Batch, fit

__all__ = ["SETTINGS", "CHAPTER8", "sinusoid_problem", "omniglot_problem", "tasks_digest", "SavedGraphPeak",
           "Row", "compare", "evaluate", "format_table", "plot_comparison"]

# Settings shared by every algorithm on a problem are the MAML paper's (Finn et al. 2017):
# sinusoids: K = 10, meta-batch 25, Adam β = 1e-3 (§5.1); Omniglot 5-way 1-shot: meta-batch 32,
# β = 1e-3, α = 0.4 official = 2.0 for the mean cross-entropy (A.1; see mamlbook.presets).
SETTINGS: dict[str, dict[str, dict]] = {
    "sinusoid": {
        "maml": dict(inner_lr=0.01, inner_steps=1),          # Finn et al. §5.1; tested after 1 step
        "fomaml": dict(inner_lr=0.01, inner_steps=1),
        # Reptile paper, Fig. 2: the sine toy problem adapts with 32 steps at test. α = 0.02 and
        # ε = 0.1 annealed to 0 are the values of the sine demo in OpenAI's Reptile blog post
        # (not re-checked against the post here); 5 full-batch steps on the task's 20 points.
        "reptile": dict(inner_lr=0.02, inner_steps=5, outer_lr=0.1, outer_lr_final=0.0, test_steps=32),
        "anil": dict(inner_lr=0.01, inner_steps=1),          # Raghu et al. keep MAML's settings
        # Li et al.: one step. α initialised to MAML's α everywhere is this book's choice, not
        # Li et al.'s (their initialisation is not checked here).
        "metasgd": dict(inner_lr=0.01, inner_steps=1),
        # MAML++: the authors' config (quoted in MAMLPlusPlus's docstring); rates start at MAML's α here.
        "mamlpp": dict(inner_lr=0.01, inner_steps=5, anneal_epochs=10, iterations_per_epoch=500,
                       first_order_epochs=0),
        # iMAML (Rajeswaran et al. 2019) has no sinusoid experiment: λ = 2.0, 5 CG steps and 16 inner
        # steps are its Omniglot settings (Table 2's caption), α = MAML's 0.01 here: this book's choice.
        "imaml": dict(inner_lr=0.01, inner_steps=16, lam=2.0, cg_steps=5),
        # Truncated backpropagation: this book's choice, 5 inner steps differentiated through the last 1.
        "truncated": dict(inner_lr=0.01, inner_steps=5, backprop_steps=1),
    },
    "omniglot": {
        "maml": dict(inner_lr=2.0, inner_steps=1, test_steps=10),    # the book's protocol (chapter 6)
        "fomaml": dict(inner_lr=2.0, inner_steps=1, test_steps=10),
        # Only ε (1 annealed to 0) is Reptile's: THIS BOOK DEVIATES from openai/supervised-reptile's README (chapter
        # 8 quotes it; also --meta-iters 100000 --eval-batch 5) with plain SGD at MAML's α = 2.0 (mean CE), 3 inner
        # steps on the task's K + Q images, 5 at test, the race's shared meta-batch. These values produced
        # results/compare/omniglot_full.md; a rerun with Reptile's own settings is still to do.
        "reptile": dict(inner_lr=2.0, inner_steps=3, outer_lr=1.0, outer_lr_final=0.0, test_steps=5),
        "anil": dict(inner_lr=2.0, inner_steps=1, test_steps=10),
        "metasgd": dict(inner_lr=2.0, inner_steps=1, test_steps=1),  # Li et al. adapt with one step
        # HowToTrainYourMAMLPytorch omniglot_maml++-omniglot_1_8_0.1_64_5_0.json:
        # init_inner_loop_learning_rate 0.1 (their loss is the mean cross-entropy), 5 steps.
        "mamlpp": dict(inner_lr=0.1, inner_steps=5, anneal_epochs=10, iterations_per_epoch=500,
                       first_order_epochs=0),
        "protonet": dict(),   # Snell et al.: no α; Adam β = 1e-3 (their 60-way training episodes are not used)
        # iMAML, GD: λ, CG steps, 16 inner steps (5-way; 25 for 20-way: pass inner_steps=25) and α as quoted in
        # algorithms/imaml.py ("Settings"); meta-test with the same 16 steps (their measure_accuracy.py command).
        "imaml": dict(inner_lr=0.1, inner_steps=16, test_steps=16, lam=2.0, cg_steps=5),
        # Truncated backpropagation: this book's choice: MAML's α = 2.0 (mean CE), 5 inner steps (MAML's
        # 20-way count) differentiated through the last 1, 10 steps at test as the book's MAML.
        "truncated": dict(inner_lr=2.0, inner_steps=5, backprop_steps=1, test_steps=10),
        # The transfer baselines, on every classification preset (Omniglot and mini-ImageNet alike), Adam at the
        # preset's β. Sources (Chen et al. 2019; Tian et al. 2020; finetune: this book's choice) are quoted in
        # algorithms/baseline.py and algorithms/transfer.py.
        "baseline": dict(batch_size=16, weight_decay=1e-3),
        "baselinepp": dict(batch_size=16),
        "probe": dict(batch_size=16, C=1.0),
        "finetune": dict(batch_size=16, weight_decay=1e-3, inner_lr=0.1, test_steps=10),
    },
}
# compare()'s default race: chapter 8's learners. Chapter 10's (iMAML, truncated, the transfer baselines)
# are raced by naming them.
CHAPTER8 = ("maml", "fomaml", "reptile", "anil", "metasgd", "mamlpp", "protonet")


def sinusoid_problem(*, k_shot: int = 10, meta_batch_size: int = 25,
                     num_test_tasks: int | None = None) -> Problem:
    """The paper's sinusoids; test tasks are chapter 2's (seed ``EVAL_SEED``), 600 (fast: 100)."""
    return problems.sinusoid_problem(k_shot=k_shot, meta_batch_size=meta_batch_size,
                                     num_test_tasks=num_test_tasks or pick(600, 100))


def omniglot_problem(splits: dict, *, n_way: int = 5, k_shot: int = 1, meta_batch_size: int | None = None,
                     meta_lr: float | None = None, num_test_tasks: int | None = None,
                     test_seed: int = 2017, device=None) -> Problem:
    """N-way K-shot Omniglot from :func:`mamlbook.fewshot.load_splits`; tests on ``splits["test"]``.

    Training queries: K per class, as the official code; test tasks: ``num_test_tasks``
    (600, fast: 100) drawn once from the held-out alphabets with ``test_seed``, K queries per class.
    Fast mode: meta-batch 8 and β = 3e-3 (as chapter 6's fast mode), unless given.
    """
    cfg = FewShotConfig(dataset="omniglot", n_way=n_way, k_shot=k_shot, k_query=k_shot,
                        meta_batch_size=meta_batch_size or pick(32, 8), meta_lr=meta_lr or pick(1e-3, 3e-3),
                        test_tasks=num_test_tasks or pick(600, 100))
    problem = problems.fewshot_problem(cfg, splits, device=device, test_seed=test_seed, validate=False)
    for tasks in problem.tests.values():
        tasks.chunk = tasks.num_tasks                  # drawn in one go, as chapter 8's recorded runs
    if problem.note:
        problem.note = "FAKE data (a generated stand-in, not Omniglot)"
    return problem


def tasks_digest(tasks: Sequence[torch.Tensor]) -> str:
    """A short fingerprint of test tasks: equal digests mean the very same tensors' values."""
    h = hashlib.sha256()
    for t in tasks:
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:12]


class SavedGraphPeak(torch.autograd.graph.saved_tensors_hooks):
    """Context manager: the peak bytes (``.peak``) of tensor storages held by autograd graphs for backward.

    Each saved tensor is wrapped in a handle that lives exactly as long as the graph keeps it;
    a storage saved several times counts once.
    """

    def __init__(self):
        super().__init__(lambda t: _Saved(self, t), lambda h: h.tensor)
        self.live: dict[int, int] = {}
        self.bytes = self.peak = 0

    def __enter__(self):
        super().__enter__()
        return self


class _Saved:
    __slots__ = ("owner", "tensor", "key", "nbytes")

    def __init__(self, owner: SavedGraphPeak, tensor: torch.Tensor):
        try:
            storage = tensor.untyped_storage()
            key, nbytes = storage.data_ptr(), storage.nbytes()
        except (RuntimeError, NotImplementedError):   # a tensor without a plain storage: count it alone
            key, nbytes = id(tensor), tensor.numel() * tensor.element_size()
        self.owner, self.tensor, self.key, self.nbytes = owner, tensor, key, nbytes
        if owner.live.get(self.key, 0) == 0:
            owner.bytes += self.nbytes
            owner.peak = max(owner.peak, owner.bytes)
        owner.live[self.key] = owner.live.get(self.key, 0) + 1

    def __del__(self):
        owner = self.owner
        owner.live[self.key] -= 1
        if owner.live[self.key] == 0:
            del owner.live[self.key]
            owner.bytes -= self.nbytes


@dataclass
class Row:
    """One algorithm's result in a comparison."""

    algorithm: str
    problem: str
    metric: str
    mean: float
    ci95: float
    median: float
    num_test_tasks: int
    test_steps: int
    iterations: int
    budget_s: float
    train_time_s: float
    ms_per_step: float
    graph_peak_mb: float
    cuda_peak_mb: float | None
    test_tasks: str                      # digest of the test tasks (the same in every row)
    device: str
    fast: bool
    note: str = ""
    losses: list = field(default_factory=list, repr=False)
    diverged: int = 0                    # test tasks whose adaptation gave a non-finite metric
    theta_finite: bool = True            # False: meta-training itself diverged


def compare(problem: Problem | str, algorithms: Sequence[str] | None = None, *, budget_s: float,
            seed: int = 0, settings: dict[str, dict] | None = None, device=None,
            progress: bool = True) -> list[Row]:
    """Train each algorithm for ``budget_s`` seconds of wall-clock time, then test it; one row each.

    Args:
        problem: a :class:`Problem`, or "sinusoid" for :func:`sinusoid_problem`'s defaults.
        algorithms: names from :data:`~mamlbook.algorithms.ALGORITHMS` (default: :data:`CHAPTER8`'s that
            fit the problem: Prototypical Networks only classify).
        settings: per-algorithm options replacing :data:`SETTINGS` entries, e.g.
            ``{"reptile": {"inner_steps": 10}}``.
        device: where to train (default: the test tasks' device).
    """
    if isinstance(problem, str):
        if problem != "sinusoid":
            raise ValueError(f"pass a Problem (e.g. omniglot_problem(splits)); only 'sinusoid' "
                             f"can be built by name, got {problem!r}")
        problem = sinusoid_problem()
    if not budget_s > 0:
        raise ValueError(f"budget_s must be positive, got {budget_s}")
    default = [a for a in CHAPTER8 if problem.kind == "classification" or a != "protonet"]
    tasks = problem.test
    device = torch.device(device) if device is not None else tasks[0].device
    test = tuple(t.to(device) for t in tasks)
    digest = tasks_digest(tasks)
    # The table by kind, as cli.learner_options picks it: sinusoid for regression, Omniglot for every
    # classification problem, mini-ImageNet too (there the command line then sets the preset's α and steps).
    table = SETTINGS["sinusoid" if problem.kind == "regression" else "omniglot"]
    return [_run_one(problem, name, {**table.get(name, {}), **(settings or {}).get(name, {})}, test, digest,
                     budget_s=budget_s, seed=seed, device=device, progress=progress) for name in algorithms or default]


@contextlib.contextmanager
def first_step_probe(algo, graph: "SavedGraphPeak"):
    """The graph probe around one outer step, run on this thread so that the probe sees the whole graph."""
    with algo.on_this_thread(), graph:
        yield


def _run_one(problem: Problem, name: str, options: dict, test: Batch, digest: str, *, budget_s: float,
             seed: int, device: torch.device, progress: bool) -> Row:
    torch.manual_seed(seed)
    options = problem.options_for(name, options)                      # the pretraining head's size
    algo = make_algorithm(name, problem.make_model().to(device), problem=problem.kind, **options)
    sample = problem.sampler(algo)                                     # tasks, or flat batches of classes
    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        cuda_start = torch.cuda.memory_allocated()
    graph = SavedGraphPeak()                                           # measures the first step's graph
    run = fit(algo, lambda gen: tuple(t.to(device) for t in sample(gen)),
              generator=torch.Generator().manual_seed(seed),          # the same tasks for every algorithm
              iterations=None, time_budget_s=budget_s, meta_lr=problem.meta_lr, progress=progress,
              desc=f"{name} ({budget_s:g} s)",
              step_context=lambda i: first_step_probe(algo, graph) if i == 0 else contextlib.nullcontext())
    cuda_peak = (torch.cuda.max_memory_allocated() - cuda_start) / 2**20 if cuda else None
    theta_finite = all(bool(torch.isfinite(p).all()) for p in algo.meta_parameters())
    r = summarize_scores(evaluate(algo, problem, test))
    losses = [None if math.isnan(v) else v for v in run.losses]
    return Row(name, problem.name, problem.metric, r["mean"], r["ci95"], r["median"], r["num_tasks"],
               algo.test_steps, run.iteration, budget_s, run.train_time_s, 1e3 * statistics.median(run.step_s),
               graph.peak / 2**20, cuda_peak, digest, str(device), fast_mode(), problem.note, losses,
               diverged=r["diverged"], theta_finite=theta_finite)


def evaluate(algo, problem: Problem, test: Batch) -> torch.Tensor:
    """Per-task metric (tasks,) after ``algo.adapt`` on each test task's support set."""
    x_s, y_s, x_q, y_q = test
    return torch.tensor([score(problem.kind, algo.adapt(x_s[i], y_s[i])(x_q[i]), y_q[i])
                         for i in range(x_s.shape[0])], dtype=torch.float64)


def format_table(rows: Sequence[Row], digits: int | None = None) -> str:
    """The rows as a Markdown table, one row per algorithm."""
    if not rows:
        raise ValueError("no rows to format")
    digits = digits if digits is not None else (3 if rows[0].metric == "query MSE" else 1)
    header = ["algorithm", f"{rows[0].metric} ± 95% CI", "median", "test steps", "meta-steps",
              "train time (s)", "ms / meta-step", "autograd graph peak (MiB)"]
    if any(r.cuda_peak_mb is not None for r in rows):
        header.append("CUDA peak (MiB)")
    body = []
    for r in rows:
        metric = format_ci(r.mean, r.ci95, digits)
        if not r.theta_finite:
            metric = "training diverged (θ not finite)"
        elif r.diverged:
            metric = f"∞: diverged on {r.diverged} of {r.num_test_tasks} tasks"
        cells = [r.algorithm, metric, f"{r.median:.{digits}f}", r.test_steps,
                 f"{r.iterations:,}", f"{r.train_time_s:.1f}", f"{r.ms_per_step:.1f}", f"{r.graph_peak_mb:.2f}"]
        if len(header) > len(cells):
            cells.append("—" if r.cuda_peak_mb is None else f"{r.cuda_peak_mb:.0f}")
        body.append(cells)
    return markdown_table(header, body)


def plot_comparison(rows: Sequence[Row], *, title: str | None = None):
    """Two panels: the test metric per algorithm with 95% CI error bars, and ms per meta-step."""
    names = [r.algorithm for r in rows]
    colors = [f"C{i}" for i in range(len(rows))]
    fig, (ax_metric, ax_time) = plt.subplots(1, 2, figsize=(11, 3.8))
    finite = [math.isfinite(r.mean) for r in rows]         # a diverged row gets no bar, only a label
    ax_metric.bar(names, [r.mean if f else 0.0 for r, f in zip(rows, finite)],
                  yerr=[r.ci95 if f else 0.0 for r, f in zip(rows, finite)], capsize=4, color=colors)
    for i, f in enumerate(finite):
        if not f:
            ax_metric.annotate("diverged", (i, 0), ha="center", va="bottom", rotation=90, color="red")
    ax_metric.set(ylabel=f"{rows[0].metric} (mean ± 95% CI)",
                  title=f"{rows[0].num_test_tasks} test tasks, {rows[0].budget_s:g} s of training each")
    ax_time.bar(names, [r.ms_per_step for r in rows], color=colors)
    ax_time.set(ylabel="ms per meta-step (median)", yscale="log", title="cost of one meta-step")
    for ax in (ax_metric, ax_time):
        ax.tick_params(axis="x", rotation=30)
    suptitle = title or rows[0].problem
    if rows[0].fast:
        suptitle += " — FAST MODE: shortened run"
    if rows[0].note:
        suptitle += f" — {rows[0].note}"
    fig.suptitle(suptitle, color="red" if rows[0].fast or rows[0].note else "black")
    fig.tight_layout()
    return fig
