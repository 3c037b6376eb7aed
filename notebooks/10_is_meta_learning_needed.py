# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Chapter 10 — Is meta-learning needed? Transfer baselines, feature reuse, memorization and the cost of the meta-gradient
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/mamlbook/mamlbook/blob/main/notebooks/10_is_meta_learning_needed.ipynb)
#
# Once MAML works, a course asks two questions. *Does it beat simply pretraining a classifier and
# fine-tuning it?* Since Chen et al. 2019 ("A Closer Look at Few-shot Classification") and Tian et
# al. 2020 ("Rethinking Few-Shot Image Classification: a Good Embedding Is All You Need?") the
# honest answer is "often not". And *what does the meta-gradient cost, and can I avoid it?* This
# chapter puts both questions to the test on the same tasks as every other learner in the book.
#
# **What you will learn**
# - four learners that meta-learn nothing — Chen et al.'s Baseline and Baseline++, Tian et al.'s
#   linear probe, and fine-tuning the whole network — in equations, and beside MAML, first-order MAML,
#   ANIL, Prototypical Networks and iMAML on the **same test tasks at the same CPU budget**;
# - a picture of what MAML's initialisation is, in a model with two parameters;
# - **feature reuse** (Raghu et al. 2020): does adaptation change MAML's body, or only its head?
#   Measured with linear CKA and per-layer weight changes;
# - **the memorization problem** (Yin et al. 2020): when every class keeps its label across tasks,
#   MAML can ignore the support set; shuffling the labels per task cures it;
# - **the cost of the meta-gradient**: time and memory per meta-step against the number of inner
#   steps for second-order MAML, first-order MAML, truncated backpropagation and iMAML.
#
# Every number and figure below comes from the runs in this notebook.

# %%
# Google Colab only: install the book's package from its repository (torch is already there).
import subprocess, sys
if "google.colab" in sys.modules:
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps",
                    "git+https://github.com/mamlbook/mamlbook"], check=True)

# %%
from mamlbook.config import banner, pick

banner("Chapter 10");

# %% [markdown]
# The knobs. `pick(full, fast)` gives the second value when `MAMLBOOK_FAST=1` (a shortened run for
# CI: its numbers are **not** results). The full values are sized for one CPU thread: the recorded full
# run took 20.1 min on a shared 2-core machine (`results/chapter10/full_run.md`). A longer budget
# changes the picture, so the budget is printed next to every result.

# %% tags=["parameters"]
SEED = 0
# Section 3: the race on the small Omniglot sets, (N-way, K-shot); add (5, 5) and (20, 5) for 5-shot.
RACES = [(5, 1), (20, 1)]
RACE_BUDGET_S = pick(30, 0.5)            # seconds of training per learner and race (one CPU thread here)
RACE_META_BATCH = 8                      # tasks per meta-step (the paper: 32 for 5-way, 16 for 20-way)
RACE_META_LR = pick(1e-3, 3e-3)          # Adam's β for every learner (the official code and Chen et al.: 1e-3)
TEST_TASKS_5WAY = pick(600, 10)          # test tasks (the official protocol: 600)
TEST_TASKS_20WAY = pick(200, 6)
# Section 4: mini-ImageNet through the same code path (the real run needs the data and a GPU).
MINI_DATA = None                         # folder holding miniimagenet/ (None: the book's data roots)
MINI_BUDGET_S = pick(300, 0.3)
MINI_TEST_TASKS = pick(600, 3)
# Section 5: feature reuse, on the networks the 5-way race trained.
REUSE_TEST_TASKS = pick(200, 8)          # the first tasks of the race's test set
CKA_TASKS = pick(50, 4)
CKA_PROBE_IMAGES = pick(100, 40)
# Section 6: memorization.
MEMO_ITERATIONS = pick(400, 60)
MEMO_FILTERS = 16                        # a narrow Conv4, so that both trainings take seconds
MEMO_CLASSES_PER_GROUP = 5               # 5 groups (labels) × 5 classes = a pool of 25 training classes
MEMO_INNER_LR = 0.5
MEMO_EVAL_TASKS = pick(200, 20)
# Section 7: the cost of the meta-gradient.
COST_INNER_STEPS = pick([1, 2, 4, 8, 16], [1, 2, 4])
COST_META_BATCH = pick(8, 2)
COST_REPEATS = pick(2, 1)
# Section 2: the two-parameter picture.
WAVE_ITERATIONS = pick(2000, 300)
WAVE_META_LR = pick(1e-2, 3e-2)
WAVE_INNER_LR = 0.1
WAVE_INNER_STEPS = 5
WAVE_TEST_TASKS = pick(600, 100)
threads = 1

# %%
import dataclasses
import os
import platform
import tempfile
import time
from pathlib import Path

import matplotlib.pyplot as plt
import torch
import torch.nn.functional as F
from IPython.display import Markdown, display
from matplotlib.ticker import FuncFormatter, NullFormatter
from torch import nn

from mamlbook.adaptation import grouped_tasks, layer_features, linear_cka, meta_step_cost, relative_change
from mamlbook.algorithms import make_algorithm
from mamlbook.algorithms.baseline import fit_linear_heads
from mamlbook.cli import build_parser, learner_options
from mamlbook.compare import SETTINGS, compare, omniglot_problem, plot_comparison
from mamlbook.config import fast_mode, seed_everything
from mamlbook.conv import omniglot_conv4
from mamlbook.data import make_fake_miniimagenet
from mamlbook.evaluate import mean_ci95
from mamlbook.fewshot import load_splits, small_omniglot
from mamlbook.models import SinusoidMLP
from mamlbook.plotting import format_ci, markdown_table
from mamlbook.presets import PRESETS, official_clip_in_mean_ce_units
from mamlbook.problems import fewshot_problem
from mamlbook.runs import record_full_run
from mamlbook.tasks import sample_sinusoid_tasks
from mamlbook.train import fit, pretrain

torch.set_num_threads(threads)
seed_everything(SEED)
run_start, load_at_start = time.perf_counter(), os.getloadavg()[0]
section_s = {}                            # wall-clock seconds of each experiment, for the run record
device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
hardware = (torch.cuda.get_device_name() if device.type == "cuda"
            else f"CPU ({platform.processor() or platform.machine()}, {threads} thread)")
SHORT = "FAST MODE — SHORTENED RUN: " if fast_mode() else ""
# One core for every learner: on a CPU, MAML and first-order MAML would otherwise spread a meta-batch's tasks
# over worker threads on every free core (mamlbook.fast_tasks); batched=False is the plain per-task loop.
ONE_CORE = {"batched": False} if device.type == "cpu" else {}
print("device:", device, "|", hardware)
NAMES = {"maml": "MAML", "fomaml": "first-order MAML", "anil": "ANIL", "protonet": "Prototypical Networks",
         "baseline": "Baseline", "baselinepp": "Baseline++", "probe": "linear probe", "finetune": "fine-tune",
         "imaml": "iMAML", "truncated": "truncated (k = 1)"}
LEARNERS = ["maml", "fomaml", "anil", "protonet", "baseline", "baselinepp", "probe", "finetune", "imaml"]
TRANSFER = ["baseline", "baselinepp", "probe", "finetune"]

# %% [markdown]
# ## 1. Four learners that meta-learn nothing
#
# All four **pretrain** the book's Conv4 as an ordinary classifier over all $C$ meta-train classes
# (flat batches of 16 images with their global labels, Adam; no tasks, no inner loop), then, for each
# test task, keep the body $f_\theta$ and put a new head on the $N\cdot K$ support images:
#
# | learner | the new head on a test task | source |
# |---|---|---|
# | Baseline | $\min_{W,b}\ \tfrac1S\sum_s \mathrm{CE}(W f_s + b, y_s) + \tfrac\lambda2(\lVert W\rVert^2 + \lVert b\rVert^2)$, $\lambda = 10^{-3}$ | Chen et al. 2019 |
# | Baseline++ | $\min_{W}\ \tfrac1S\sum_s \mathrm{CE}(s\cdot\cos(w_c, f_s), y_s)$, $s = 2$ | Chen et al. 2019 |
# | linear probe | $\min_{W,b}\ \tfrac12\lVert W\rVert^2 + C\sum_s \mathrm{CE}(W \hat f_s + b, y_s)$ on $\hat f = f/\lVert f\rVert$, $C = 1$ | Tian et al. 2020 |
# | fine-tune | the Baseline's head, then 10 SGD steps of size α = 0.1 on **every** parameter | this book's choice |
#
# with $f_s = f_\theta(x_s)$ the frozen body's features (64 numbers per Omniglot image). The Baseline's
# problem is strictly convex: `mamlbook` solves it to its optimum by Newton's method
# (`mamlbook.algorithms.baseline.fit_linear_heads`; the module's docstring lists where the book departs
# from the authors' code, e.g. the optimum instead of 100 epochs of SGD). Two learners from the other
# side join them: **iMAML** (Rajeswaran et al. 2019), whose meta-gradient
# $(I + \nabla^2 L_s(\varphi^*)/\lambda)^{-1}\nabla L_q(\varphi^*)$ is solved by conjugate gradient so that it
# keeps no graph of the inner steps, and **truncated backpropagation** (MAML differentiating through
# its last $k$ inner steps only), which section 7 times.
#
# The optimum is easy to check without trusting the solver: at it, the gradient of the objective is
# zero. Here on the features of a random Conv4's body for one real (or stand-in) 5-way 5-shot task:

# %%
splits, origin = small_omniglot(allow_fake=fast_mode())
fake = splits is not None and any(s.fake for s in splits.values())

# %%
if splits is not None:
    torch.manual_seed(SEED)
    problem_5w5s = omniglot_problem(splits, n_way=5, k_shot=5, num_test_tasks=1)    # draws nothing at random
    body_net = make_algorithm("baseline", problem_5w5s.make_model(), problem="classification",
                              num_classes=splits["train"].num_classes)
    task = problem_5w5s.test
    f_s = body_net.features(task[0][0]).double()                              # (25, 64) support features
    w, b = fit_linear_heads(f_s[None], task[1][:1], 5, weight_decay=1e-3)     # (1, 5, 64), (1, 5)
    w, b = w[0].requires_grad_(), b[0].requires_grad_()
    objective = F.cross_entropy(f_s @ w.T + b, task[1][0]) + 0.5e-3 * (w.square().sum() + b.square().sum())
    grad = torch.autograd.grad(objective, [w, b])
    largest = max(g.abs().max().item() for g in grad)
    assert largest < 1e-10, largest
    print(f"Baseline head on {tuple(f_s.shape)} features: objective {objective.item():.4f}, largest gradient "
          f"entry at the solver's optimum {largest:.1e} (float64)")

# %% [markdown]
# ## 2. A picture: MAML's θ and the pretrained θ in a model with two parameters
#
# Before racing Conv4s, look at what the two kinds of training produce where everything can be drawn.
# The model $f(x) = a\,\sin(x - b)$ has two parameters, amplitude $a$ and phase $b$, and fits every task
# of chapter 1's sinusoid family exactly (task $i$'s optimum is its own $(A_i, \varphi_i)$). We train it
# twice: with MAML (5 inner steps of size α = 0.1, K = 10, meta-batch 25), and **pretrained** — one
# model fitted to all tasks at once, as chapter 1's baseline (that one learns the mean task: with
# $A \sim U[0.1, 5]$ and $\varphi \sim U[0, \pi]$ independent,
# $\mathbb{E}[A\sin(x - \varphi)] = \mathbb{E}[A]\cdot\frac{1}{\pi}\int_0^\pi \sin(x - \varphi)\,d\varphi
# = 2.55 \cdot (-\tfrac{2}{\pi}\cos x) \approx -1.62\cos x$, i.e. $a \approx 1.62$, $b = \pi/2$). Then both
# adapt to new tasks with the same 5 steps.

# %%
class Wave(nn.Module):
    """f(x) = a · sin(x − b): two parameters, the task family's own form."""

    def __init__(self, amplitude: float = 1.0, phase: float = 0.5):
        super().__init__()
        self.amplitude = nn.Parameter(torch.tensor(amplitude))
        self.phase = nn.Parameter(torch.tensor(phase))

    def forward(self, x):
        return self.amplitude * torch.sin(x - self.phase)


def sine_meta_batch(gen):
    b = sample_sinusoid_tasks(25, 10, generator=gen)
    return b.x_support, b.y_support, b.x_query, b.y_query


t0 = time.perf_counter()
torch.manual_seed(SEED)
wave_maml = make_algorithm("maml", Wave(), problem="regression", inner_lr=WAVE_INNER_LR, inner_steps=WAVE_INNER_STEPS)
fit(wave_maml, sine_meta_batch, generator=torch.Generator().manual_seed(SEED), iterations=WAVE_ITERATIONS,
    meta_lr=WAVE_META_LR, progress=False)
wave_pre_net, pre_gen = Wave(), torch.Generator().manual_seed(SEED)
pretrain(wave_pre_net, lambda: sine_meta_batch(pre_gen), iterations=WAVE_ITERATIONS, lr=WAVE_META_LR, progress=False)
wave_pre = make_algorithm("maml", wave_pre_net, problem="regression", inner_lr=WAVE_INNER_LR,
                          inner_steps=WAVE_INNER_STEPS)                # only its adapt() is used: SGD steps
wave_test = sample_sinusoid_tasks(WAVE_TEST_TASKS, 10, generator=torch.Generator().manual_seed(2017))
wave_results = {}
for label, algo in (("MAML", wave_maml), ("pretrained", wave_pre)):
    theta = {k: round(v.item(), 3) for k, v in algo.params.items()}
    mse = torch.tensor([F.mse_loss(algo.adapt(wave_test.x_support[i], wave_test.y_support[i])(wave_test.x_query[i]),
                                   wave_test.y_query[i]).item() for i in range(WAVE_TEST_TASKS)])
    wave_results[label] = {"theta": theta, "mse": mean_ci95(mse)}
    print(f"{label:>10}: θ = (a {theta['amplitude']}, b {theta['phase']}); query MSE after {WAVE_INNER_STEPS} steps "
          f"on {WAVE_TEST_TASKS} new tasks: {format_ci(*mean_ci95(mse), 3)}")
section_s["wave"] = time.perf_counter() - t0

# %%
x_grid = torch.linspace(-5, 5, 201)                                          # the input range of the tasks
A, B = torch.meshgrid(torch.linspace(0.0, 5.5, 111), torch.linspace(-0.6, torch.pi + 0.6, 111), indexing="xy")
many = sample_sinusoid_tasks(500, 1, generator=torch.Generator().manual_seed(1))
targets = many.amplitude[:, None] * torch.sin(x_grid[None] - many.phase[:, None])          # (500, 201)
pred = A[..., None] * torch.sin(x_grid - B[..., None])                                     # (111, 111, 201)
mean_loss = ((pred - targets.mean(0)) ** 2).mean(-1) + targets.var(0, unbiased=False).mean()  # E_i E_x[(f − y_i)²]
shown = sample_sinusoid_tasks(6, 10, generator=torch.Generator().manual_seed(7))

fig, axes = plt.subplots(1, 2, figsize=(11, 4.3), sharey=True)
for ax, (label, algo) in zip(axes, (("MAML", wave_maml), ("pretrained", wave_pre))):
    cs = ax.contourf(A, B, mean_loss, levels=20, cmap="Greys")
    for i in range(6):
        path = torch.tensor([[algo.adapt(shown.x_support[i], shown.y_support[i], steps=s).params[k].item()
                              for k in ("amplitude", "phase")] for s in range(WAVE_INNER_STEPS + 1)])
        ax.plot(path[:, 0], path[:, 1], "-o", ms=3, color=f"C{i}")
        ax.plot(shown.amplitude[i], shown.phase[i], "x", ms=9, mew=2, color=f"C{i}")
    th = wave_results[label]["theta"]
    ax.plot(th["amplitude"], th["phase"], "*", ms=18, color="gold", mec="black", label=f"θ ({label})")
    ax.set(xlabel="amplitude a", title=label)
    ax.legend(loc="upper right", fontsize=8)
axes[0].set_ylabel("phase b")
fig.colorbar(cs, ax=axes, label="average task loss")
fig.suptitle(SHORT + f"θ → θ′ᵢ for six tasks ({WAVE_INNER_STEPS} steps, α = {WAVE_INNER_LR}; × = each task's optimum), "
             f"{WAVE_ITERATIONS:,} training steps each", fontsize=10,
             color="red" if fast_mode() else "black")
plt.show()

# %%
m, p = wave_results["MAML"], wave_results["pretrained"]
print(f"MAML's θ has amplitude {m['theta']['amplitude']:.2f} where the pretrained one has "
      f"{p['theta']['amplitude']:.2f}; after {WAVE_INNER_STEPS} steps MAML's query MSE is {format_ci(*m['mse'], 3)} "
      f"and the pretrained model's {format_ci(*p['mse'], 3)}"
      + (" (the intervals overlap)." if abs(m['mse'][0] - p['mse'][0]) <= m['mse'][1] + p['mse'][1] else "."))

# %% [markdown]
# The background is the loss averaged over tasks: the pretrained θ sits at its minimum, the single
# best answer for all tasks. MAML does not look for that minimum; it looks for the point from which a
# few steps on each task's own loss go furthest toward that task's optimum (the crosses). Read the two
# panels for where θ sits and how far the five steps carry each task.
#
# ## 3. The race: nine learners, the same tasks, the same CPU budget
#
# `mamlbook.compare.compare` trains each learner for the same wall-clock seconds from the same seed,
# on the same stream of training data, and tests it on the same tasks (its digest is in every row).
# The meta-learners see meta-batches of tasks; the four transfer learners see flat batches of 16 images
# of the same meta-train classes (`Problem.sampler`); at a budget, a cheap step buys more of them.
# Settings: each learner's own, from `mamlbook/compare.py` with the sources next to them (printed
# below), with these choices of this chapter: meta-batch `RACE_META_BATCH` for every meta-learner (the
# paper uses 32 for 5-way and 16 for 20-way; at a budget of seconds a smaller meta-batch buys more
# meta-steps); MAML and its variants take **one** inner step for 20-way as for 5-way (the paper
# takes 5 for 20-way), and iMAML takes 25 for 20-way (its paper's count). Every learner computes on one
# CPU core (`batched=False` keeps MAML's per-task loop on the main thread). Meta-training uses small1's
# alphabets, testing small2's unseen ones.

# %%
RACE_SETTINGS = {(n, k): {"maml": ONE_CORE, "fomaml": ONE_CORE,     # fast mode: iMAML's 16–25 steps shrink to 2
                          "imaml": dict(inner_steps=pick(25 if n == 20 else 16, 2), test_steps=pick(16, 2))}
                 for n, k in RACES}
race_options = lambda name, race: {**SETTINGS["omniglot"].get(name, {}), **RACE_SETTINGS[race].get(name, {})}
rows = [[NAMES[name]] + [", ".join(f"{k}={v}" for k, v in race_options(name, race).items()) or "(no inner loop)"
                         for race in RACES] for name in LEARNERS]
display(Markdown(markdown_table(["learner"] + [f"settings, {n}-way {k}-shot" for n, k in RACES], rows)))


# %%
def keep_networks(problem):
    """Make ``problem`` remember every network it builds: compare() trains them in place, in order."""
    built, make = [], problem.make_model

    def make_and_keep():
        built.append(make())
        return built[-1]
    problem.make_model = make_and_keep
    return built


races, race_problems, trained = {}, {}, {}
t0 = time.perf_counter()
if splits is not None:
    for n_way, k_shot in RACES:
        problem = omniglot_problem(splits, n_way=n_way, k_shot=k_shot, meta_batch_size=RACE_META_BATCH,
                                   meta_lr=RACE_META_LR, device=device,
                                   num_test_tasks=TEST_TASKS_5WAY if n_way == 5 else TEST_TASKS_20WAY)
        built = keep_networks(problem)
        races[n_way, k_shot] = compare(problem, LEARNERS, budget_s=RACE_BUDGET_S, seed=SEED, device=device,
                                       settings=RACE_SETTINGS[n_way, k_shot], progress=not fast_mode())
        race_problems[n_way, k_shot], trained[n_way, k_shot] = problem, dict(zip(LEARNERS, built))
        assert len(built) == len(LEARNERS) and len({r.test_tasks for r in races[n_way, k_shot]}) == 1
section_s["races"] = time.perf_counter() - t0


# %%
def race_table(races):
    """One table: a row per learner, accuracy ± 95% CI, meta-steps and ms per step for each race."""
    header = ["learner"] + [f"{n}-way {k}-shot: {what}" for n, k in races for what in ("accuracy %", "steps", "ms/step")]
    body = []
    for i, name in enumerate(LEARNERS):
        cells = [NAMES[name]]
        for rows in races.values():
            r = rows[i]
            cells += ["diverged" if not r.theta_finite else format_ci(r.mean, r.ci95, 1), f"{r.iterations:,}",
                      f"{r.ms_per_step:.0f}"]
        body.append(cells)
    return markdown_table(header, body)


if races:
    first = next(iter(races.values()))[0]
    label = (f"FAST MODE — shortened run: {RACE_BUDGET_S:g} s per learner. These numbers are NOT results."
             if fast_mode() else f"Full run: {RACE_BUDGET_S:g} s of training per learner and race.")
    tasks = ", ".join(f"{n}-way: {rows[0].num_test_tasks}" for (n, _), rows in races.items())
    display(Markdown(f"**Omniglot small sets{' — FAKE DATA' if fake else ''}: query accuracy on the same test "
                     f"tasks for every learner (mean ± 95% CI; {tasks} tasks), meta-batch {RACE_META_BATCH}, "
                     f"β = {RACE_META_LR:g}. {label}** Hardware: {hardware}.\n\n" + race_table(races)))

# %%
for (n_way, k_shot), rows in races.items():
    plot_comparison(rows, title=f"Omniglot {n_way}-way {k_shot}-shot")
    plt.show()


# %%
def race_sentences(rows, what):
    """What a race shows, in words generated from its rows."""
    by = {r.algorithm: r for r in rows}
    best = max(rows, key=lambda r: r.mean)
    tied = [NAMES[r.algorithm] for r in rows if r is not best and abs(r.mean - best.mean) <= r.ci95 + best.ci95]
    best_transfer = max((by[a] for a in TRANSFER), key=lambda r: r.mean)
    maml, gap = by["maml"], best_transfer.mean - by["maml"].mean
    verdict = ("level with (the intervals overlap)" if abs(gap) <= maml.ci95 + best_transfer.ci95
               else "ahead of" if gap > 0 else "behind")
    return (f"{what}: best mean {NAMES[best.algorithm]} ({format_ci(best.mean, best.ci95, 1)} %); within its interval: "
            f"{', '.join(tied) or 'none'}. The best transfer learner, {NAMES[best_transfer.algorithm]} "
            f"({format_ci(best_transfer.mean, best_transfer.ci95, 1)} %), is {verdict} MAML "
            f"({format_ci(maml.mean, maml.ci95, 1)} %). A pretraining step took {best_transfer.ms_per_step:.0f} ms, a MAML meta-step {maml.ms_per_step:.0f} ms: "
            f"{best_transfer.iterations:,} steps against {maml.iterations:,} in the same {maml.budget_s:g} s.")


for (n_way, k_shot), rows in races.items():
    print(SHORT + race_sentences(rows, f"Omniglot {n_way}-way {k_shot}-shot" + (" (FAKE data)" if fake else "")))

# %% [markdown]
# What to look for, whatever your numbers: the *steps* columns. The transfer learners' steps are
# ordinary classification steps of 16 images; a MAML meta-step adapts and differentiates through
# `RACE_META_BATCH` tasks. At an equal budget of seconds the question "is meta-learning needed?" is
# partly "is a meta-step worth dozens of ordinary steps?" — and the answer can change with the budget,
# the number of classes and the data, which is why the budget is a knob.
#
# ## 4. mini-ImageNet through the same code path
#
# The same nine learners, the same `compare`, on the `miniimagenet-5w1s` preset (Conv4 with 32 filters,
# 5 inner steps at α = 0.05 for the mean cross-entropy, 10 at test, meta-batch 4, the official
# meta-gradient clip), with each learner's options built by the command line's own
# `mamlbook.cli.learner_options`, so that the row of a learner here is what
# `python -m mamlbook train --preset miniimagenet-5w1s --algorithm …` trains. Tested with 15 queries
# per class. The real run needs the images (see `docs/data.md`) and a GPU; without them fast mode runs
# a tiny configuration on a **FAKE** stand-in (only to exercise the code path: its numbers mean
# nothing), and full mode skips this section.

# %%
mini_cfg = PRESETS["miniimagenet-5w1s"].config
mini_rows, mini_note = [], ""
try:
    mini_splits = load_splits(mini_cfg, MINI_DATA)
    mini_real = not any(s.fake for s in mini_splits.values())
except FileNotFoundError as err:
    mini_splits, mini_real = None, False
    print("mini-ImageNet is not on this machine:", str(err).splitlines()[0][:200])
if mini_real and device.type == "cuda":
    mini_note = f"real mini-ImageNet on {hardware}"
elif fast_mode():
    mini_root = Path(tempfile.mkdtemp())
    make_fake_miniimagenet(mini_root / "miniimagenet", "csv", classes_per_split=(8, 5, 5), images_per_class=20,
                           csv_dir=None)
    mini_splits = load_splits(mini_cfg, mini_root)
    mini_cfg = mini_cfg.replace(meta_batch_size=2, inner_steps=1, test_inner_steps=2, k_query=2, filters=8,
                                grad_clip=official_clip_in_mean_ce_units(mini_cfg.n_way, mini_cfg.k_shot, 2))
    mini_note = ("FAKE DATA, TINY CONFIG (8 filters, meta-batch 2, 1 inner step, 2 at test, 2 training queries "
                 "per class): only the code path is real")
else:
    mini_splits = None
    mini_note = (f"skipped: the real run needs mini-ImageNet and a CUDA GPU (data: {'yes' if mini_real else 'no'}, "
                 f"GPU: {'yes' if device.type == 'cuda' else 'no'})")
print("mini-ImageNet:", mini_note)

# %%
t0 = time.perf_counter()
if mini_splits is not None:
    mini = fewshot_problem(mini_cfg, mini_splits, device=device, num_test_tasks=MINI_TEST_TASKS, test_seed=2017,
                           validate=False)
    mini.tests = dict(sorted(mini.tests.items(), key=lambda kv: not kv[0].startswith("15")))   # 15 queries first
    as_cli = lambda name: build_parser().parse_args(   # the command line's defaults for this learner and preset
        ["train", "--preset", "miniimagenet-5w1s", "--algorithm", name, "--out", "unused", "--no-compile"])
    mini_settings = {name: {**learner_options(as_cli(name), mini_cfg), **(ONE_CORE if name in ("maml", "fomaml") else {})}
                     for name in LEARNERS}
    mini_rows = compare(mini, LEARNERS, budget_s=MINI_BUDGET_S, seed=SEED, device=device,
                        settings=mini_settings, progress=not fast_mode())
    label = SHORT + ("" if mini_real else "FAKE DATA — ")
    display(Markdown(f"**{label}mini-ImageNet 5-way 1-shot, {mini_rows[0].num_test_tasks} test tasks, 15 queries "
                     f"per class, {MINI_BUDGET_S:g} s per learner ({mini_note}).**\n\n"
                     + markdown_table(["learner", "accuracy % ± 95% CI", "steps", "ms/step"],
                                      [[NAMES[r.algorithm], format_ci(r.mean, r.ci95, 1), f"{r.iterations:,}",
                                        f"{r.ms_per_step:.0f}"] for r in mini_rows])))
    plot_comparison(mini_rows, title="mini-ImageNet 5-way 1-shot" + ("" if mini_real else " — FAKE DATA, tiny config"))
    plt.show()
section_s["mini"] = time.perf_counter() - t0

# %% [markdown]
# ## 5. Feature reuse: does adaptation change the body?
#
# Raghu et al. (ICLR 2020) asked whether MAML works by **rapid learning** (the inner loop changes the
# representation) or **feature reuse** (the representation is already good; the inner loop mostly moves
# the head), and answered with ANIL (chapter 8). Here we ask MAML's own network, the one the 5-way race
# just trained: adapt it on each test task (a) as MAML does, every parameter, and (b) the head only
# (`classifier`, ANIL's adaptation, same α and steps); then measure what changed. The network the
# transfer learners pretrained gets the same treatment: (a) fine-tuning every parameter, (b) the
# Baseline's fitted head alone.
#
# How much did the representation change? For each layer, **linear CKA** (Kornblith et al., ICML 2019)
# between its outputs before and after adaptation on a fixed probe batch of test images:
#
# $$\mathrm{CKA}(X, Y) = \frac{\lVert Y^\top X\rVert_F^2}{\lVert X^\top X\rVert_F\,\lVert Y^\top Y\rVert_F}
#   \qquad (X, Y \text{ centred, one row per image}),$$
#
# 1 when the two are the same up to a rotation and a scale (Raghu et al. used CCA, which asks the same
# question). And how far each layer's weights moved: $\lVert\theta'_l - \theta_l\rVert/\lVert\theta_l\rVert$.

# %%
reuse = {}
t0 = time.perf_counter()
if (5, 1) in trained:
    problem5 = race_problems[5, 1]
    test5 = tuple(t[:REUSE_TEST_TASKS] for t in problem5.test)                # the race's first test tasks
    maml_net, pre_net = trained[5, 1]["maml"], trained[5, 1]["finetune"]
    adapters = {
        ("MAML's network", "every parameter"): make_algorithm("maml", maml_net, problem="classification",
                                                              **SETTINGS["omniglot"]["maml"]),
        ("MAML's network", "head only"): make_algorithm("anil", maml_net, problem="classification",
                                                        **SETTINGS["omniglot"]["anil"]),
        ("pretrained network", "every parameter"): make_algorithm("finetune", pre_net, problem="classification",
                                                                  num_classes=problem5.num_classes,
                                                                  **SETTINGS["omniglot"]["finetune"])}
    adapters["pretrained network", "head only"] = adapters["pretrained network", "every parameter"]
    for (net, how), algo in adapters.items():
        steps = 0 if (net, how) == ("pretrained network", "head only") else None     # the fitted head alone
        scores = torch.tensor([100.0 * (algo.adapt(test5[0][i], test5[1][i], steps=steps)(test5[2][i]).argmax(-1)
                                        == test5[3][i]).double().mean().item() for i in range(len(test5[0]))])
        reuse[net, how] = mean_ci95(scores)
    display(Markdown(SHORT + f"**Omniglot 5-way 1-shot{' (FAKE data)' if fake else ''}, {len(test5[0])} test tasks of "
                     "the race: query accuracy % after adapting every parameter or the head only.**\n\n"
                     + markdown_table(["network", "every parameter", "head only"],
                                      [[net, format_ci(*reuse[net, "every parameter"], 1), format_ci(*reuse[net, "head only"], 1)]
                                       for net in ("MAML's network", "pretrained network")])))

# %%
LAYERS = ["features.0", "features.1", "features.2", "features.3", "classifier"]
cka, moved = {}, {}
if (5, 1) in trained:
    test_split = splits["test"]
    g = torch.Generator().manual_seed(SEED)
    probe = test_split.images[torch.randint(test_split.num_classes, (CKA_PROBE_IMAGES,), generator=g),
                              torch.randint(test_split.images.shape[1], (CKA_PROBE_IMAGES,), generator=g)]
    probe = probe.permute(0, 3, 1, 2).float().div(255).to(device)              # (P, 1, 28, 28)
    for net_name, algo in (("MAML's network", adapters["MAML's network", "every parameter"]),
                           ("pretrained network", adapters["pretrained network", "every parameter"])):
        sims, changes = {l: [] for l in LAYERS}, {l: [] for l in LAYERS}
        for i in range(min(CKA_TASKS, len(test5[0]))):
            start = algo.adapt(test5[0][i], test5[1][i], steps=0).params       # θ (with the fitted head, if pretrained)
            end = algo.adapt(test5[0][i], test5[1][i]).params                  # θ′ᵢ
            before, after = (layer_features(algo.model, p, probe, LAYERS) for p in (start, end))
            change = relative_change({k: v for k, v in start.items() if k.endswith("weight")}, end)
            for l in LAYERS:
                sims[l].append(linear_cka(before[l], after[l]))
                changes[l].append(change[[k for k in change if k.startswith(l)][0]])
        cka[net_name] = {l: sum(v) / len(v) for l, v in sims.items()}
        moved[net_name] = {l: sum(v) / len(v) for l, v in changes.items()}
section_s["reuse"] = time.perf_counter() - t0

# %%
if cka:
    fig, (ax_cka, ax_move) = plt.subplots(1, 2, figsize=(11, 3.8))
    x = torch.arange(len(LAYERS)).float()
    short_names = ["conv 1", "conv 2", "conv 3", "conv 4", "head"]
    for j, net_name in enumerate(cka):
        ax_cka.bar(x + 0.38 * j - 0.19, [cka[net_name][l] for l in LAYERS], width=0.38, label=net_name)
        ax_move.bar(x + 0.38 * j - 0.19, [moved[net_name][l] for l in LAYERS], width=0.38, label=net_name)
    ax_cka.set(xticks=x, xticklabels=short_names, ylabel="CKA(before, after adaptation)", ylim=(0, 1.05),
               title=f"representation similarity, {CKA_PROBE_IMAGES} probe images")
    ax_move.set(xticks=x, xticklabels=short_names, ylabel="‖θ′ − θ‖ / ‖θ‖ (weights)", yscale="log",
                title="how far each layer's weights moved")
    ax_cka.legend(fontsize=8)
    fig.suptitle(SHORT + f"Adapting every parameter, mean over {min(CKA_TASKS, len(test5[0]))} test tasks"
                 + (" — FAKE DATA" if fake else ""), color="red" if fast_mode() or fake else "black")
    fig.tight_layout()
    plt.show()
    body = {n: sum(cka[n][l] for l in LAYERS[:4]) / 4 for n in cka}
    gap = {n: reuse[n, "every parameter"][0] - reuse[n, "head only"][0] for n in cka}
    print(SHORT + "; ".join(
        f"{n}: the body's CKA averages {body[n]:.3f} over the four conv layers, the head's {cka[n]['classifier']:.3f}; "
        f"adapting every parameter instead of the head only changes accuracy by {gap[n]:+.1f} points "
        f"(± {reuse[n, 'every parameter'][1] + reuse[n, 'head only'][1]:.1f})" for n in cka) + ".")

# %% [markdown]
# A CKA near 1 in the conv layers means the body's representation barely moved: the task was solved by
# re-reading the same features with a new head — feature reuse. Raghu et al. found this for MAML
# trained to convergence; how close this run comes depends on how long it trained.
#
# For the pretrained network the CKA of 1 holds by construction and is no finding: fine-tuning starts
# from the Baseline's fitted head, which already (nearly) minimises the support loss, so its 10 steps
# barely move any weight — by 2e-4 to 1e-3 of each layer's norm in the recorded full run
# (`results/chapter10/full_run.md`). Only MAML's network is a real test of feature reuse here.
#
# ## 6. The memorization problem (Yin et al. 2020)
#
# MAML's tasks are *mutually exclusive*: a class gets a random label in each task, so no single
# network can classify the queries without reading the support set. Yin, Tucker, Zhou, Levine & Finn
# ("Meta-Learning without Memorization", ICLR 2020) showed what happens when they are not: if each class
# keeps one label in every task, one network can solve every training task from the query image alone,
# and the meta-learner may learn exactly that — it *memorizes* the classes and ignores the support
# set, which then fails on new classes, whose labels it cannot know.
#
# A small experiment: a pool of 25 meta-train classes split into 5 groups; each 5-way 1-shot task takes
# one class from each group. **Fixed labels**: group n's class is always label n. **Shuffled labels**:
# the same tasks with the labels permuted per task (`mamlbook.adaptation.grouped_tasks`). Two MAMLs
# (a 16-filter Conv4, one inner step) train on each, then are tested on tasks of the same classes with
# no adaptation at all, after one step on the real support set, and after one step on a support set
# **replaced by uniform noise** (same labels), and on tasks of new classes.

# %%
memo = {}
t0 = time.perf_counter()
if splits is not None:
    g = torch.Generator().manual_seed(SEED)
    train_split, test_split = splits["train"].to(device), splits["test"].to(device)
    pool = torch.randperm(train_split.num_classes, generator=g)[:5 * MEMO_CLASSES_PER_GROUP].view(5, -1)
    new_pool = torch.randperm(test_split.num_classes, generator=g)[:5 * MEMO_CLASSES_PER_GROUP].view(5, -1)

    def memo_batch(split, groups, shuffle, tasks, gen):
        e = grouped_tasks(split, groups, k_shot=1, k_query=2, num_tasks=tasks, generator=gen, shuffle_labels=shuffle)
        return e.x_support, e.y_support, e.x_query, e.y_query

    memo_nets = {}
    for shuffle in (False, True):
        torch.manual_seed(SEED)
        algo = make_algorithm("maml", omniglot_conv4(5, filters=MEMO_FILTERS).to(device), problem="classification",
                              inner_lr=MEMO_INNER_LR, inner_steps=1, **ONE_CORE)
        fit(algo, lambda gen, s=shuffle: memo_batch(train_split, pool, s, RACE_META_BATCH, gen),
            generator=torch.Generator().manual_seed(SEED), iterations=MEMO_ITERATIONS, meta_lr=3e-3, progress=False)
        memo_nets["shuffled labels" if shuffle else "fixed labels"] = algo

    eval_gen = lambda: torch.Generator().manual_seed(2017)
    seen = memo_batch(train_split, pool, False, MEMO_EVAL_TASKS, eval_gen())
    noise = (torch.rand(seen[0].shape, generator=eval_gen()).to(device), *seen[1:])
    new = memo_batch(test_split, new_pool, True, MEMO_EVAL_TASKS, eval_gen())
    CONDITIONS = {"seen classes, no adaptation": (seen, 0), "seen classes, 1 step": (seen, 1),
                  "seen classes, support = noise, 1 step": (noise, 1), "new classes, 1 step": (new, 1)}
    for label, algo in memo_nets.items():
        for cond, (batch, steps) in CONDITIONS.items():
            acc = [100.0 * (algo.adapt(batch[0][i], batch[1][i], steps=steps)(batch[2][i]).argmax(-1) == batch[3][i])
                   .double().mean().item() for i in range(MEMO_EVAL_TASKS)]
            memo[label, cond] = mean_ci95(torch.tensor(acc))
section_s["memorization"] = time.perf_counter() - t0

# %%
if memo:
    display(Markdown(SHORT + f"**Memorization{' (FAKE data)' if fake else ''}: query accuracy % (mean ± 95% CI, "
                     f"{MEMO_EVAL_TASKS} tasks, chance = 20 %) after {MEMO_ITERATIONS} meta-steps of MAML.**\n\n"
                     + markdown_table(["trained with"] + list(CONDITIONS),
                                      [[label] + [format_ci(*memo[label, c], 1) for c in CONDITIONS] for label in memo_nets])))
    fig, ax = plt.subplots(figsize=(9, 3.6))
    x = torch.arange(len(CONDITIONS)).float()
    for j, label in enumerate(memo_nets):
        ax.bar(x + 0.4 * j - 0.2, [memo[label, c][0] for c in CONDITIONS], yerr=[memo[label, c][1] for c in CONDITIONS],
               width=0.4, capsize=3, label=f"MAML trained with {label}")
    ax.axhline(20, color="gray", ls="--", lw=1, label="chance")
    ax.set(xticks=x, ylabel="query accuracy %")
    ax.set_title(SHORT + "non-mutually-exclusive tasks" + (" — FAKE DATA" if fake else ""),
                 color="red" if fast_mode() or fake else "black")
    ax.set_xticklabels([c.replace(", ", "\n") for c in CONDITIONS], fontsize=8)
    ax.legend(fontsize=8)
    plt.show()
    fixed, shuf = (lambda c: memo["fixed labels", c]), (lambda c: memo["shuffled labels", c])
    print(SHORT + f"Without looking at any support image, the fixed-label MAML classifies its training classes "
          f"{format_ci(*fixed('seen classes, no adaptation'), 1)} % correctly (shuffled: "
          f"{format_ci(*shuf('seen classes, no adaptation'), 1)} %). With the support set replaced by noise: "
          f"{format_ci(*fixed('seen classes, support = noise, 1 step'), 1)} % (shuffled: "
          f"{format_ci(*shuf('seen classes, support = noise, 1 step'), 1)} %). On new classes: fixed "
          f"{format_ci(*fixed('new classes, 1 step'), 1)} %, shuffled {format_ci(*shuf('new classes, 1 step'), 1)} %.")

# %% [markdown]
# Read the first column first: a network that is right *before* it has seen a support image has
# memorized which label each class gets; the support set carries no information it needs. The third
# column asks what is left when the support set is noise: for the shuffled-label network nothing
# (chance, 20 %); a network that memorized still has what it memorized, but its inner step on noise
# images (α = `MEMO_INNER_LR`, on inputs it never saw) also moves it, so how much survives depends on
# that step. The last column is the price: classes it cannot have memorized. Shuffling the labels per
# task makes memorization impossible, which is why every episode sampler in this book
# (`mamlbook.data.EpisodeSampler`) assigns labels at random.
# Yin et al. also propose regularisers for the cases where the labels cannot be shuffled (pose
# regression, for instance); they are not in this book.
#
# ## 7. The cost of the meta-gradient
#
# Second-order MAML backpropagates through every inner step, so its graph — and its memory — grows with
# the number of inner steps $n$. The alternatives:
#
# - **first-order MAML** treats the inner gradients as constants: $g = \nabla L_q(\theta'_n)$;
# - **truncated backpropagation** differentiates through the last $k$ steps only,
#   $g_k = (I - \alpha H_{n-k})\cdots(I - \alpha H_{n-1})\nabla L_q(\theta'_n)$ (here $k = 1$);
# - **iMAML** solves a proximally regularised inner problem, keeps no graph of its steps at all, and
#   pays instead with conjugate-gradient iterations of Hessian-vector products (5 here).
#
# `mamlbook.adaptation.meta_step_cost` times one outer step (the median of `COST_REPEATS`) and measures
# the memory its autograd graph holds at its peak (`SavedGraphPeak`: the tensors saved for backward).
# Two of the book's workloads: the sinusoid MLP (25 tasks, K = 10) and the Omniglot Conv4 (5-way 1-shot,
# `COST_META_BATCH` tasks).

# %%
def cost_learner(workload, method, steps):
    torch.manual_seed(SEED)
    if workload == "sinusoid MLP":
        net, problem, table = SinusoidMLP(), "regression", SETTINGS["sinusoid"]
    else:
        net, problem, table = omniglot_conv4(5), "classification", SETTINGS["omniglot"]
    name = {"second-order MAML": "maml", "first-order MAML": "fomaml", "truncated (k = 1)": "truncated",
            "iMAML (5 CG steps)": "imaml"}[method]
    # α, and iMAML's λ and CG steps and truncated's k, as the race: the learner's entry in SETTINGS
    extra = {k: v for k, v in table[name].items() if k in ("inner_lr", "lam", "cg_steps", "backprop_steps")}
    if problem == "classification" and name in ("maml", "fomaml"):
        # the chapter's one-core fairness choice, as in the race; it also keeps the tasks on this
        # thread, and meta_step_cost measures this one thread's autograd graphs
        extra = {**extra, **ONE_CORE}
    return make_algorithm(name, net.to(device), problem=problem, inner_steps=steps, **extra)


METHODS = ["second-order MAML", "first-order MAML", "truncated (k = 1)", "iMAML (5 CG steps)"]
cost = {}
t0 = time.perf_counter()
workloads = {"sinusoid MLP": sine_meta_batch(torch.Generator().manual_seed(SEED))}
if splits is not None:
    cost_problem = omniglot_problem(splits, n_way=5, k_shot=1, meta_batch_size=COST_META_BATCH, device=device)
    workloads["Omniglot Conv4"] = tuple(t.to(device) for t in cost_problem.sample(torch.Generator().manual_seed(SEED)))
for workload, batch in workloads.items():
    for method in METHODS:
        for steps in COST_INNER_STEPS:
            cost[workload, method, steps] = meta_step_cost(cost_learner(workload, method, steps), batch,
                                                           repeats=COST_REPEATS)
section_s["cost"] = time.perf_counter() - t0

# %%
fig, axes = plt.subplots(2, len(workloads), figsize=(5.5 * len(workloads), 7), squeeze=False)
for j, workload in enumerate(workloads):
    for i, method in enumerate(METHODS):
        for row, key in ((0, "ms"), (1, "graph_mib")):
            axes[row, j].plot(COST_INNER_STEPS, [cost[workload, method, s][key] for s in COST_INNER_STEPS], "-o",
                              color=f"C{i}", label=method)
    tasks = 25 if workload == "sinusoid MLP" else COST_META_BATCH
    axes[0, j].set(title=f"{workload}, {tasks} tasks", ylabel="ms per meta-step (log scale)", yscale="log")
    axes[1, j].set(xlabel="inner steps n", ylabel="autograd graph peak (MiB)", ylim=(0, None))
    for ax in axes[:, j]:
        ax.set_xscale("log", base=2)
        ax.set_xticks(COST_INNER_STEPS, [str(s) for s in COST_INNER_STEPS])
        ax.xaxis.set_minor_formatter(NullFormatter())
    axes[0, j].yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    axes[0, j].yaxis.set_minor_formatter(FuncFormatter(lambda v, _: f"{v:g}" if str(v)[0] in "25" else ""))
axes[0, 0].legend(fontsize=8)
fig.suptitle(SHORT + f"The cost of one meta-step ({hardware})", color="red" if fast_mode() else "black")
fig.tight_layout()
plt.show()

# %%
n_max = COST_INNER_STEPS[-1]
for workload in workloads:
    c = lambda m, s, k: cost[workload, m, s][k]
    print(SHORT + f"{workload}: from 1 to {n_max} inner steps, second-order MAML's graph grows "
          f"{c(METHODS[0], n_max, 'graph_mib') / c(METHODS[0], 1, 'graph_mib'):.1f}× "
          f"({c(METHODS[0], 1, 'graph_mib'):.2f} → {c(METHODS[0], n_max, 'graph_mib'):.2f} MiB), first-order MAML's "
          f"{c(METHODS[1], n_max, 'graph_mib') / c(METHODS[1], 1, 'graph_mib'):.1f}×, truncated's "
          f"{c(METHODS[2], n_max, 'graph_mib') / c(METHODS[2], 1, 'graph_mib'):.1f}×, iMAML's "
          f"{c(METHODS[3], n_max, 'graph_mib') / c(METHODS[3], 1, 'graph_mib'):.1f}×. At {n_max} steps a meta-step "
          "takes " + ", ".join(f"{c(m, n_max, 'ms'):.0f} ms ({m})" for m in METHODS) + ".")
    assert c(METHODS[3], n_max, "graph_mib") == c(METHODS[3], 1, "graph_mib"), "iMAML keeps no graph of its steps"
    assert c(METHODS[0], n_max, "graph_mib") > c(METHODS[0], 1, "graph_mib")

# %% [markdown]
# The memory curves are the point: the autograd graph of second-order MAML grows with $n$ (it keeps
# every inner step's activations for the backward pass through them), truncation keeps the last $k$
# steps' worth, and iMAML's does not depend on $n$ at all — the cell above checks the last exactly. The
# time curves all grow with $n$, since every method still takes the $n$ inner steps; what differs is the
# price of the backward pass on top.
#
# ## 8. Reading the results
#
# The sentences printed under each experiment are generated from its numbers. In fast mode every run is
# seconds long: compare the intervals, not the means, and rerun with the switch off before believing
# any of them. Three things hold whatever the numbers: the comparison is only as fair as its budget and
# its test tasks (both printed with every table); a network that solves training tasks without its
# support set has memorized them; and a meta-gradient's memory is a choice — second order, truncated,
# first order or implicit.
#
# ### The run's record
#
# In full mode (only), the next cell writes this run's numbers — settings, wall times, every table —
# to `results/chapter10/full_run.json` with the machine, the date, the load and the git commit;
# `results/chapter10/full_run.md` and the README's chapter-10 numbers are generated from it
# (`python results/chapter10/render.py`). Fast mode writes nothing.

# %%
def row_record(r):
    return {k: v for k, v in dataclasses.asdict(r).items() if k != "losses"}


def run_record():
    """Everything the README and full_run.md state about this run, as plain JSON-able values."""
    return {
        "notebook": "notebooks/10_is_meta_learning_needed.ipynb",
        "config": {k: globals()[k] for k in (
            "SEED", "RACE_BUDGET_S", "RACE_META_BATCH", "RACE_META_LR", "TEST_TASKS_5WAY", "TEST_TASKS_20WAY",
            "MINI_BUDGET_S", "MINI_TEST_TASKS", "REUSE_TEST_TASKS", "CKA_TASKS", "CKA_PROBE_IMAGES",
            "MEMO_ITERATIONS", "MEMO_FILTERS", "MEMO_CLASSES_PER_GROUP", "MEMO_INNER_LR", "MEMO_EVAL_TASKS",
            "COST_INNER_STEPS", "COST_META_BATCH", "COST_REPEATS", "WAVE_ITERATIONS", "WAVE_META_LR",
            "WAVE_INNER_LR", "WAVE_INNER_STEPS", "WAVE_TEST_TASKS")},
        "races": {f"{n}w{k}s": {"settings": {a: {**SETTINGS["omniglot"].get(a, {}), **RACE_SETTINGS[n, k].get(a, {})}
                                             for a in LEARNERS},
                                "rows": [row_record(r) for r in rows]} for (n, k), rows in races.items()},
        "omniglot": {"origin": origin if splits is not None else None, "fake": fake},
        "miniimagenet": {"note": mini_note, "rows": [row_record(r) for r in mini_rows]},
        "wave": wave_results,
        "feature_reuse": {"accuracy": {f"{net} | {how}": v for (net, how), v in reuse.items()},
                          "cka": cka, "relative_weight_change": moved},
        "memorization": {f"{label} | {cond}": v for (label, cond), v in memo.items()},
        "cost": [{"workload": w, "method": m, "inner_steps": s, **v} for (w, m, s), v in cost.items()],
        "wall_time_s": {**section_s, "settings_to_record": time.perf_counter() - run_start},
        "hardware": hardware}


record_full_run(10, run_record(), load_at_start=load_at_start, device=device)

# %% [markdown]
# ## Summary
#
# - Four learners that meta-learn nothing — Baseline, Baseline++, a linear probe and whole-network
#   fine-tuning — are `make_algorithm` learners like MAML; `compare` races them with MAML, first-order
#   MAML, ANIL, Prototypical Networks and iMAML on the same test tasks at the same CPU budget.
# - In parameter space, MAML's θ is not the minimum of the average task loss (the pretrained θ is); it
#   is a point from which a few steps reach each task.
# - Feature reuse is measurable: CKA of each layer's outputs before and after adaptation, and how far
#   each layer's weights move, for MAML's network and a pretrained one.
# - Tasks must be mutually exclusive: with a fixed label per class, MAML can solve its training tasks
#   without reading the support set, and then fails on new classes; shuffled labels cure it.
# - Second-order MAML's memory grows with the inner steps; truncation bounds it by $k$ steps, first-order
#   MAML drops it, and iMAML's does not depend on the steps at all.
#
# ## Exercises
#
# **Exercise 1 — linear CKA.** Write `my_linear_cka(x, y)` for two representations (n, p) and (n, q)
# of the same n inputs, with the formula of section 5 (centre each column first). The check uses a case
# worked by hand — x = (0, 1, 2), y = (0, 0, 3) gives 0.75 — then the invariances (rotation, scale,
# shift) and `mamlbook.adaptation.linear_cka`.

# %%
def my_linear_cka(x, y):
    """Linear CKA of x (n, p) and y (n, q): ‖YᵀX‖²_F / (‖XᵀX‖_F ‖YᵀY‖_F) with centred columns."""
    ### BEGIN SOLUTION
    x, y = x.double() - x.double().mean(0), y.double() - y.double().mean(0)
    return float((y.T @ x).norm() ** 2 / ((x.T @ x).norm() * (y.T @ y).norm()))
    ### END SOLUTION


# %%
hand = my_linear_cka(torch.tensor([[0.0], [1.0], [2.0]]), torch.tensor([[0.0], [0.0], [3.0]]))
assert abs(hand - 0.75) < 1e-12, f"x = (0, 1, 2), y = (0, 0, 3) should give 0.75, got {hand}: did you centre the columns?"
gx = torch.Generator().manual_seed(3)
xr = torch.randn(40, 6, generator=gx, dtype=torch.float64)
q, _ = torch.linalg.qr(torch.randn(6, 6, generator=gx, dtype=torch.float64))
assert abs(my_linear_cka(xr, 2.5 * xr @ q + 1.0) - 1.0) < 1e-10, "CKA must be 1 under rotation, scaling and shift"
yr = torch.randn(40, 3, generator=gx, dtype=torch.float64)
assert abs(my_linear_cka(xr, yr) - linear_cka(xr, yr)) < 1e-10, "differs from mamlbook.adaptation.linear_cka"
print("my_linear_cka: right")

# %% [markdown]
# **Exercise 2 — the Baseline's head.** Write `fit_head(features, labels, n_way, weight_decay)` returning
# (W (N, D), b (N,)) that minimise $\tfrac1S\sum_s \mathrm{CE}(W f_s + b, y_s) + \tfrac\lambda2(\lVert W\rVert^2 +
# \lVert b\rVert^2)$ — with `torch.optim.LBFGS`, or plain gradient descent run long enough. The check: the
# objective's gradient at your answer is (nearly) zero, and your head equals the package's Newton solution.

# %%
def fit_head(features, labels, n_way, weight_decay):
    """The weight-decayed logistic-regression head on frozen features (S, D) with labels (S,) in 0..N−1."""
    ### BEGIN SOLUTION
    w = torch.zeros(n_way, features.shape[1], dtype=features.dtype, requires_grad=True)
    b = torch.zeros(n_way, dtype=features.dtype, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], lr=1.0, max_iter=500, tolerance_grad=1e-12, tolerance_change=0.0,
                            line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(features @ w.T + b, labels) + 0.5 * weight_decay * (w.square().sum() + b.square().sum())
        loss.backward()
        return loss
    opt.step(closure)
    return w.detach(), b.detach()
    ### END SOLUTION


# %%
gh = torch.Generator().manual_seed(4)
feats = torch.randn(15, 8, generator=gh, dtype=torch.float64)
labs = torch.arange(3).repeat(5)
w_mine, b_mine = fit_head(feats, labs, 3, 0.1)
w_opt, b_opt = (t[0] for t in fit_linear_heads(feats[None], labs[None], 3, weight_decay=0.1))
wg, bg = w_mine.clone().requires_grad_(), b_mine.clone().requires_grad_()
obj = F.cross_entropy(feats @ wg.T + bg, labs) + 0.05 * (wg.square().sum() + bg.square().sum())
largest = max(g.abs().max().item() for g in torch.autograd.grad(obj, [wg, bg]))
assert largest < 1e-6, f"the objective's gradient at your head is {largest:.1e}, not ~0: optimise longer (or check the decay term)"
torch.testing.assert_close(w_mine, w_opt, rtol=1e-5, atol=1e-6)
torch.testing.assert_close(b_mine, b_opt, rtol=1e-5, atol=1e-6)
print(f"fit_head: right (largest gradient entry {largest:.1e})")

# %% [markdown]
# **Exercise 3 — shuffle the labels.** Write `shuffle_task_labels(y_support, y_query, generator)`: for
# each task t of (T, S) and (T, Q) label tensors, draw one random permutation π_t of the N labels and
# return (π_t(y_support), π_t(y_query)) — the same permutation for a task's support and query. That is
# the cure of section 6. The check: the permutation is the same within a task, and differs between tasks.

# %%
def shuffle_task_labels(y_support, y_query, generator):
    """Relabel each task t with a random permutation of its N labels: (T, S), (T, Q) → same shapes."""
    ### BEGIN SOLUTION
    n_way = int(y_support.max()) + 1
    perms = torch.rand(y_support.shape[0], n_way, generator=generator).argsort(dim=1)   # (T, N)
    return perms.gather(1, y_support), perms.gather(1, y_query)
    ### END SOLUTION


# %%
ys = torch.arange(5).repeat_interleave(2).expand(200, -1)                       # (200, 10): 5-way 2-shot
yq = torch.arange(5).repeat_interleave(3).expand(200, -1)                       # (200, 15)
new_s, new_q = shuffle_task_labels(ys, yq, torch.Generator().manual_seed(5))
assert new_s.shape == ys.shape and new_q.shape == yq.shape
perm_s = new_s[:, ::2]                                                           # π_t(0..4) read off the support
assert all(sorted(p.tolist()) == list(range(5)) for p in perm_s), "each task's new labels must be a permutation of 0..4"
assert torch.equal(new_q, perm_s.gather(1, yq)), "the query must use the same permutation as the support of its task"
assert len({tuple(p.tolist()) for p in perm_s}) > 50, "the permutations should differ from task to task"
print("shuffle_task_labels: right")

# %% [markdown]
# **Exercise 4 (open) — does the answer depend on the budget?** Set `RACES = [(5, 1), (5, 5)]` and run
# section 3 with `RACE_BUDGET_S` at 10, 30 and 120 seconds. For each budget, which learner is best, and
# by how much (compare the intervals)? Does MAML's position relative to the Baseline change, and why
# might the *steps* column explain it?
