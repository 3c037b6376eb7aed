"""Meta-learning algorithms side by side at an equal wall-clock budget.

:func:`compare` trains each algorithm of :mod:`mamlbook.algorithms`, one after the other in this
process, for the same number of seconds, from the same initial θ (``torch.manual_seed(seed)``
before the model is built) and on the same stream of meta-batches (a generator seeded with
``seed`` for each algorithm, so all see the same tasks in the same order; a faster algorithm
simply sees more of them). No model selection: the θ reached when the budget runs out is
evaluated, on the same fixed test tasks for every algorithm. Each row records

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

import hashlib
import math
import statistics
import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from .algorithms import ALGORITHMS, make_algorithm
from .config import fast_mode, pick
from .evaluate import mean_ci95
from .plotting import format_ci, markdown_table

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
        "metasgd": dict(inner_lr=0.01, inner_steps=1),       # Li et al.: one step; α starts at MAML's α
        # MAML++ (authors' config): 5 steps at train and test, MSL over 10 epochs of 500 iterations,
        # second order throughout; rates start at MAML's α for this problem.
        "mamlpp": dict(inner_lr=0.01, inner_steps=5, anneal_epochs=10, iterations_per_epoch=500,
                       first_order_epochs=0),
    },
    "omniglot": {
        "maml": dict(inner_lr=2.0, inner_steps=1, test_steps=10),    # the book's protocol (chapter 6)
        "fomaml": dict(inner_lr=2.0, inner_steps=1, test_steps=10),
        # supervised-reptile README, transductive 1-shot 5-way Omniglot: --inner-iters 3
        # --meta-step 1 --meta-step-final 0 --eval-iters 5. Its inner optimizer is Adam
        # (lr 0.001) on 15 shots per class; here SGD at MAML's α on the task's K + Q images.
        "reptile": dict(inner_lr=2.0, inner_steps=3, outer_lr=1.0, outer_lr_final=0.0, test_steps=5),
        "anil": dict(inner_lr=2.0, inner_steps=1, test_steps=10),
        "metasgd": dict(inner_lr=2.0, inner_steps=1, test_steps=1),  # Li et al. adapt with one step
        # HowToTrainYourMAMLPytorch omniglot_maml++-omniglot_1_8_0.1_64_5_0.json:
        # init_inner_loop_learning_rate 0.1 (their loss is the mean cross-entropy), 5 steps.
        "mamlpp": dict(inner_lr=0.1, inner_steps=5, anneal_epochs=10, iterations_per_epoch=500,
                       first_order_epochs=0),
        "protonet": dict(),   # Snell et al.: no α; Adam β = 1e-3 (their 60-way training episodes are not used)
    },
}

Batch = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]


@dataclass
class Problem:
    """What :func:`compare` trains on: a model, a training task stream and fixed test tasks.

    Attributes:
        name: "sinusoid" or "omniglot" (picks :data:`SETTINGS`).
        kind: "regression" or "classification".
        make_model: builds a fresh network (called after seeding).
        sample: draws one training meta-batch (x_s, y_s, x_q, y_q) from a generator.
        test: the fixed test tasks (x_s, y_s, x_q, y_q), each (tasks, ...).
        meta_lr: Adam's β for every algorithm but Reptile.
        note: said with every result (e.g. that the data is a FAKE stand-in).
    """

    name: str
    kind: str
    make_model: Callable[[], nn.Module]
    sample: Callable[[torch.Generator], Batch]
    test: Batch
    meta_lr: float = 1e-3
    note: str = ""

    @property
    def metric(self) -> str:
        return "query MSE" if self.kind == "regression" else "query accuracy (%)"

    def score(self, prediction: torch.Tensor, target: torch.Tensor) -> float:
        """One task's metric: MSE, or the accuracy in percent."""
        return score(self.kind, prediction, target)


def score(kind: str, prediction: torch.Tensor, target: torch.Tensor) -> float:
    """One task's metric: query MSE ("regression") or accuracy in percent ("classification")."""
    if kind == "regression":
        return F.mse_loss(prediction, target).item()
    return 100.0 * (prediction.argmax(dim=-1) == target).double().mean().item()


def task_scores(algo, test: "Batch", kind: str) -> torch.Tensor:
    """Per-task metric (tasks,) after ``algo.adapt`` on each test task's support set."""
    x_s, y_s, x_q, y_q = test
    return torch.tensor([score(kind, algo.adapt(x_s[i], y_s[i])(x_q[i]), y_q[i]) for i in range(x_s.shape[0])],
                        dtype=torch.float64)


def summarize_scores(per_task: torch.Tensor) -> dict:
    """Mean, 95% CI, median and the number of diverged tasks (a non-finite metric counts as +∞)."""
    finite = torch.isfinite(per_task)
    per_task = torch.where(finite, per_task, torch.tensor(float("inf"), dtype=per_task.dtype))
    mean, ci = mean_ci95(per_task) if bool(finite.all()) else (float("inf"), float("nan"))
    return {"mean": mean, "ci95": ci, "median": per_task.median().item(), "num_tasks": len(per_task),
            "diverged": int((~finite).sum())}


def sinusoid_problem(*, k_shot: int = 10, meta_batch_size: int = 25,
                     num_test_tasks: int | None = None) -> Problem:
    """The paper's sinusoids; test tasks are chapter 2's (seed ``EVAL_SEED``), 600 (fast: 100)."""
    from .models import SinusoidMLP
    from .sinusoid import eval_tasks
    from .tasks import sample_sinusoid_tasks

    def sample(gen):
        b = sample_sinusoid_tasks(meta_batch_size, k_shot, generator=gen)
        return b.x_support, b.y_support, b.x_query, b.y_query

    t = eval_tasks(k_shot, num_test_tasks or pick(600, 100))
    return Problem("sinusoid", "regression", SinusoidMLP, sample,
                   (t.x_support, t.y_support, t.x_query, t.y_query))


def omniglot_problem(splits: dict, *, n_way: int = 5, k_shot: int = 1, meta_batch_size: int | None = None,
                     meta_lr: float | None = None, num_test_tasks: int | None = None,
                     test_seed: int = 2017, device=None) -> Problem:
    """N-way K-shot Omniglot from :func:`mamlbook.fewshot.load_splits`; tests on ``splits["test"]``.

    Training queries: K per class, as the official code; test tasks: ``num_test_tasks``
    (600, fast: 100) drawn once from the held-out alphabets with ``test_seed``, K queries per class.
    Fast mode: meta-batch 8 and β = 3e-3 (as chapter 6's fast mode), unless given.
    """
    from .conv import omniglot_conv4
    from .data import EpisodeSampler

    train = EpisodeSampler(splits["train"], n_way, k_shot, k_shot, device=device)
    test = EpisodeSampler(splits["test"], n_way, k_shot, k_shot, device=device)
    meta_batch_size = meta_batch_size or pick(32, 8)
    ep = test.sample(num_test_tasks or pick(600, 100), torch.Generator().manual_seed(test_seed))
    fake = any(getattr(s, "fake", False) for s in splits.values())

    def sample(gen):
        e = train.sample(meta_batch_size, gen)
        return e.x_support, e.y_support, e.x_query, e.y_query

    return Problem("omniglot", "classification", lambda: omniglot_conv4(n_way), sample,
                   (ep.x_support, ep.y_support, ep.x_query, ep.y_query),
                   meta_lr=meta_lr or pick(1e-3, 3e-3),
                   note="FAKE data (a generated stand-in, not Omniglot)" if fake else "")


def tasks_digest(tasks: Sequence[torch.Tensor]) -> str:
    """A short fingerprint of test tasks: equal digests mean the very same tensors' values."""
    h = hashlib.sha256()
    for t in tasks:
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:12]


class SavedGraphPeak:
    """Context manager: the peak bytes of tensor storages held by autograd graphs for backward.

    Each saved tensor is wrapped in a handle that lives exactly as long as the graph keeps it;
    a storage saved several times counts once.
    """

    def __init__(self):
        self.live: dict[int, int] = {}
        self.bytes = self.peak = 0

    def __enter__(self):
        self._hooks = torch.autograd.graph.saved_tensors_hooks(self._pack, lambda h: h.tensor)
        self._hooks.__enter__()
        return self

    def __exit__(self, *exc):
        self._hooks.__exit__(*exc)

    def _pack(self, tensor):
        return _Saved(self, tensor)


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
        algorithms: names from :data:`~mamlbook.algorithms.ALGORITHMS` (default: every one that
            fits the problem: Prototypical Networks only classify).
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
    default = [a for a in ALGORITHMS if problem.kind == "classification" or a != "protonet"]
    device = torch.device(device) if device is not None else problem.test[0].device
    test = tuple(t.to(device) for t in problem.test)
    digest = tasks_digest(problem.test)
    rows = []
    for name in algorithms or default:
        options = {**SETTINGS[problem.name].get(name, {}), **(settings or {}).get(name, {})}
        rows.append(_run_one(problem, name, options, test, digest, budget_s=budget_s, seed=seed,
                             device=device, progress=progress))
    return rows


def _run_one(problem: Problem, name: str, options: dict, test: Batch, digest: str, *, budget_s: float,
             seed: int, device: torch.device, progress: bool) -> Row:
    torch.manual_seed(seed)
    model = problem.make_model().to(device)
    algo = make_algorithm(name, model, problem=problem.kind, **options)
    optimizer = algo.make_optimizer(problem.meta_lr)
    stream = torch.Generator().manual_seed(seed)                      # the same tasks for every algorithm
    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        cuda_start = torch.cuda.memory_allocated()
    step_s, losses, graph = [], [], SavedGraphPeak()
    bar = tqdm(total=budget_s, desc=f"{name} ({budget_s:g} s)", unit="s", disable=not progress,
               mininterval=0.5, bar_format="{l_bar}{bar}| {n:.0f}/{total:.0f} s {postfix}")
    start = time.perf_counter()
    while (elapsed := time.perf_counter() - start) < budget_s:
        batch = tuple(t.to(device) for t in problem.sample(stream))
        t0 = time.perf_counter()
        if not step_s:                                                 # measure the first step's graph
            with graph:
                loss = algo.outer_step(optimizer, *batch, iteration=0, progress=elapsed / budget_s)
        else:
            loss = algo.outer_step(optimizer, *batch, iteration=len(step_s), progress=elapsed / budget_s)
        if cuda:
            torch.cuda.synchronize()
        step_s.append(time.perf_counter() - t0)
        losses.append(loss)
        bar.update(min(time.perf_counter() - start, budget_s) - bar.n)
    train_time = time.perf_counter() - start
    bar.set_postfix_str(f"{len(step_s)} meta-steps", refresh=False)
    bar.close()
    cuda_peak = (torch.cuda.max_memory_allocated() - cuda_start) / 2**20 if cuda else None
    theta_finite = all(bool(torch.isfinite(p).all()) for p in algo.meta_parameters())
    r = summarize_scores(evaluate(algo, problem, test))
    return Row(name, problem.name, problem.metric, r["mean"], r["ci95"], r["median"], r["num_tasks"],
               algo.test_steps, len(step_s), budget_s, train_time, 1e3 * statistics.median(step_s),
               graph.peak / 2**20, cuda_peak, digest, str(device), fast_mode(), problem.note, losses,
               diverged=r["diverged"], theta_finite=theta_finite)


def evaluate(algo, problem: Problem, test: Batch) -> torch.Tensor:
    """Per-task metric (tasks,) after ``algo.adapt`` on each test task's support set."""
    return task_scores(algo, test, problem.kind)


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
    import matplotlib.pyplot as plt

    names = [r.algorithm for r in rows]
    colors = [f"C{i}" for i in range(len(rows))]
    fig, (ax_metric, ax_time) = plt.subplots(1, 2, figsize=(11, 3.8))
    finite = [math.isfinite(r.mean) for r in rows]         # a diverged row gets no bar, only a label
    ax_metric.bar(names, [r.mean if f else 0.0 for r, f in zip(rows, finite)],
                  yerr=[r.ci95 if f else 0.0 for r, f in zip(rows, finite)], capsize=4, color=colors)
    for i, (r, f) in enumerate(zip(rows, finite)):
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
