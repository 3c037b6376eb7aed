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
# # Chapter 6 — MAML on Omniglot
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/mamlbook/mamlbook/blob/main/notebooks/06_omniglot.ipynb)
#
# Chapter 5 built N-way K-shot tasks from real Omniglot characters. Here MAML learns from them,
# with the paper's network and protocol, and we check the two details that most ports get wrong.
#
# **What you will learn**
# - how MAML meta-trains a Conv4 classifier with cross-entropy, and how it is evaluated:
#   600 new tasks, 95% confidence intervals, the checkpoint chosen on the **meta-validation** split only;
# - **the inner-loss scale**: the official code's α = 0.4 is α = 2.0 with PyTorch's mean cross-entropy;
# - **BatchNorm modes**: why MAML normalises with the statistics of the batch it sees, and what
#   `model.eval()` does to a MAML network;
# - how to keep checkpoints safe when a Colab session dies.

# %%
# Google Colab only: install the book's package from its repository (torch is already there).
import subprocess, sys
if "google.colab" in sys.modules:
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps",
                    "git+https://github.com/mamlbook/mamlbook"], check=True)

# %%
from mamlbook.config import banner, pick

banner("Chapter 6");

# %% tags=["parameters"]
# Every knob of this chapter (papermill can override them).
seed = 0
presets = pick(["omniglot-5w1s", "omniglot-5w5s", "omniglot-20w1s", "omniglot-20w5s"], ["omniglot-5w1s"])
split = pick("maml", "small")          # full: cbfinn/maml's 1100/100/423 split; fast: the two small sets
iterations = pick(60_000, 400)         # meta-updates (official code's usage lines in main.py: 60,000)
time_budget_s = pick(None, 35)         # fast mode stops training after this many seconds
meta_batch_size = pick(None, 8)        # None: the preset's (32 for 5-way, 16 for 20-way)
meta_lr = pick(1e-3, 3e-3)             # Adam's β (the paper: 1e-3; fast mode learns faster with 3e-3)
val_every = pick(1000, 100)            # validate on the meta-val split every ... iterations
val_tasks = pick(200, 20)
test_tasks = pick(600, 100)            # meta-test tasks (official code's NUM_TEST_POINTS: 600)
bn_tasks = pick(600, 60)               # tasks in the BatchNorm experiment
run_dir = pick("runs/chapter06", None)  # checkpoints (see the Colab note); None: a temporary folder
threads = 1

# %%
import datetime
import platform
import tempfile
import time
from pathlib import Path

import matplotlib.pyplot as plt
import torch
import torch.nn.functional as F
from torch import nn

from mamlbook.config import fast_mode, seed_everything
from mamlbook.data import find_omniglot_small
from mamlbook.fewshot import (evaluate_accuracy, load_splits, make_sampler, meta_test, random_init_baseline,
                              train_fewshot)
from mamlbook.maml import adapt
from mamlbook.presets import PRESETS

torch.set_num_threads(threads)
seed_everything(seed)
run_dir = run_dir or tempfile.mkdtemp(prefix="mamlbook-chapter06-")
device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
hardware = torch.cuda.get_device_name() if device.type == "cuda" else f"CPU ({platform.processor() or platform.machine()}, {threads} thread)"
print("device:", device, "|", hardware)

# %% [markdown]
# ## 1. The data
#
# Full mode reads the full Omniglot (`mamlbook.data.download_omniglot_full()`, see `docs/data.md`)
# with the official code's split: 1,100 characters for meta-training, 100 for meta-validation, 423 for
# meta-test, each rotated by 0/90/180/270° into four classes. Fast mode uses the two *small*
# background sets: meta-train on small1 without Early_Aramaic, **meta-validate on Early_Aramaic**,
# meta-test on small2's Japanese (katakana), Sanskrit and Tagalog, alphabets never seen in training.

# %%
data_dir = None
if split == "small":
    small1, _, origin = find_omniglot_small(download=False, allow_fake=fast_mode())
    data_dir = small1.parent
    print("Omniglot small sets:", origin, data_dir)
cfg0 = PRESETS[presets[0]].config.replace(split=split)
splits = load_splits(cfg0, data_dir)
for name, s in splits.items():
    print(f"{name:>5}: {s.num_classes:4d} classes ({s.name})")
fake = any(s.fake for s in splits.values())
if fake:
    print("FAKE DATA: the numbers below come from a generated stand-in, not from Omniglot.")

# %% [markdown]
# ## 2. Lesson: the scale of the inner loss
#
# The official code (cbfinn/maml) computes, for each support image,
# `xent = softmax_cross_entropy_with_logits(pred, label) / update_batch_size` (`utils.py`; update_batch_size
# is K), and takes `tf.gradients(task_lossa, weights)` (`maml.py`). `tf.gradients` of a vector is the
# gradient of its **sum**, so the inner loss is
#
# $$\mathcal{L}_\text{official} = \frac{1}{K}\sum_{i=1}^{NK} \ell_i = N\cdot\underbrace{\frac{1}{NK}\sum_{i=1}^{NK}\ell_i}_{\text{F.cross\_entropy}}.$$
#
# So a step $\theta - \alpha\nabla\mathcal{L}_\text{official}$ is a step $\theta - (N\alpha)\nabla\,\text{mean CE}$:
# the paper's α = 0.4 on 5-way Omniglot is **α = 2.0** with PyTorch's mean cross-entropy, its 20-way
# α = 0.1 is also 2.0, and mini-ImageNet's α = 0.01 is 0.05. A port that keeps α = 0.4 with a mean loss
# takes steps five times too small. We check the claim in float64: one inner step each way.

# %%
from mamlbook.conv import omniglot_conv4

torch.manual_seed(seed)
net = omniglot_conv4(5).double()
theta = dict(net.named_parameters())
n, k = 5, 1
x = splits["train"].images[:n, :k].permute(0, 1, 4, 2, 3).reshape(n * k, 1, 28, 28).double() / 255
y = torch.arange(n).repeat_interleave(k)
official = adapt(net, theta, x, y, inner_lr=0.4,
                 loss_fn=lambda logits, labels: F.cross_entropy(logits, labels, reduction="sum") / k)
ours = adapt(net, theta, x, y, inner_lr=0.4 * n, loss_fn=F.cross_entropy)
wrong = adapt(net, theta, x, y, inner_lr=0.4, loss_fn=F.cross_entropy)
diff = max((official[p] - ours[p]).abs().max().item() for p in theta)
step = lambda a: sum((a[p] - theta[p]).norm() ** 2 for p in theta).sqrt().item()
print(f"max |θ'_official − θ'_mean,α=2.0| = {diff:.1e}")
print(f"step length: official {step(official):.4f}, mean CE at 2.0 {step(ours):.4f}, mean CE at 0.4 {step(wrong):.4f}")
assert diff < 1e-12 and abs(step(wrong) * n - step(official)) < 1e-9

# %% [markdown]
# ## 3. Meta-training
#
# Each preset (`mamlbook.presets`) holds the paper's settings (App. A.1): meta-batch 32 (16 for 20-way),
# one inner step at α = 0.4, i.e. 2.0 with the mean cross-entropy (5 steps at 0.1, again 2.0, for
# 20-way); and the official code's: Adam with β = 1e-3, 60,000 iterations (`main.py`'s usage lines).
# At meta-test the presets adapt with **10 steps, the official code's** `test_num_updates`; the paper
# evaluates 5-way "using 3 gradient steps with the same step size" and 20-way with 5 (App. A.1).
# Section 4 reports both. The network is the paper's Conv4 (`mamlbook.conv.omniglot_conv4`): four
# 64-filter stride-2 3×3 convolutions
# with BatchNorm on **batch statistics** and ReLU. Every `val_every` iterations the model is evaluated on
# fixed tasks of the meta-**validation** split and `best.pt` keeps the best one; the meta-test split is not
# touched until the end. `checkpoint.pt` is written atomically every `checkpoint_every` iterations, and
# `train_fewshot(..., resume=True)` continues an interrupted run exactly.

# %%
runs, results, baselines = {}, {}, {}
for name in presets:
    cfg = PRESETS[name].config.replace(split=split, iterations=iterations, meta_lr=meta_lr, val_every=val_every,
                                       val_tasks=val_tasks, test_tasks=test_tasks, seed=seed)
    if meta_batch_size is not None:
        cfg = cfg.replace(meta_batch_size=meta_batch_size)
    started = time.perf_counter()
    runs[name] = train_fewshot(cfg, splits, out=Path(run_dir) / name, device=device,
                               time_budget_s=time_budget_s, progress=True, desc=name)
    r = runs[name]
    print(f"{name}: {r.iteration} iterations in {r.train_time_s:.0f} s; best val {r.best_val_acc:.1f}% "
          f"at iteration {r.best_iteration}" + (" (stopped by the fast-mode time budget)" if r.stopped_by_budget else ""))

# %%
fig, axes = plt.subplots(1, 2, figsize=(11, 3.5))
for name, r in runs.items():
    w = max(1, len(r.losses) // 50)
    axes[0].plot([sum(r.losses[i:i + w]) / len(r.losses[i:i + w]) for i in range(0, len(r.losses), w)], label=name)
    axes[1].plot([v["iteration"] for v in r.val], [v["acc"] for v in r.val], "o-", label=name)
axes[0].set(xlabel=f"iteration / {w}", ylabel="meta-loss (query CE)", title="meta-training")
axes[1].set(xlabel="iteration", ylabel="meta-val accuracy (%)", title="validation (model selection)")
for ax in axes:
    ax.legend()
if fast_mode():
    fig.suptitle("FAST MODE: shortened run", color="red")
plt.show()

# %% [markdown]
# ## 4. Meta-test: 600 new tasks with 95% confidence intervals
#
# The best-validation checkpoint adapts to each meta-test task with 10 SGD steps at the training α (the
# official code's count) and is scored on the task's query images; the curve records every step, so we
# also read off the accuracy at the paper's count (3 steps for 5-way, 5 for 20-way), the one its
# Table 1 reports. The interval is 1.96·std/√n over tasks, as the official code
# computes it. The same network adapted from its **random initialisation** (the θ MAML started from) is
# the baseline: what meta-learning adds.

# %%
PAPER_TEST_STEPS = {5: 3, 20: 5}   # App. A.1: 5-way "evaluated using 3 gradient steps"; 20-way: 5
for name, r in runs.items():
    cfg = r.config
    results[name] = meta_test(r.best_model(), cfg, splits["test"], num_tasks=test_tasks, seed=seed, device=device)
    sampler = make_sampler(splits["test"], cfg, device=device)
    baselines[name] = random_init_baseline(cfg, sampler, num_tasks=test_tasks, device=device,
                                           generator=torch.Generator().manual_seed(seed))
    paper_steps = PAPER_TEST_STEPS[cfg.n_way]
    for protocol, res in results[name].items():
        print(f"{name} ({protocol}): MAML {res.at(10)[0]:.1f} ± {res.at(10)[1]:.1f}% after 10 steps, "
              f"{res.at(paper_steps)[0]:.1f} ± {res.at(paper_steps)[1]:.1f}% after {paper_steps} (the paper's) "
              f"| random init {baselines[name].at(10)[0]:.1f} ± {baselines[name].at(10)[1]:.1f}% after 10")

# %%
fig, ax = plt.subplots(figsize=(6, 3.5))
for name in runs:
    res = next(iter(results[name].values()))
    ax.errorbar(res.steps, res.mean, yerr=res.ci95, marker="o", capsize=3, label=f"MAML {name}")
    ax.errorbar(baselines[name].steps, baselines[name].mean, yerr=baselines[name].ci95, marker="s", capsize=3,
                label=f"random init {name}")
ax.set(xlabel="SGD steps on the support set", ylabel="query accuracy (%)", title="meta-test adaptation")
ax.legend(fontsize=8)
plt.show()

# %%
first = presets[0]
assert results[first][next(iter(results[first]))].at(10)[0] > baselines[first].at(10)[0] + 10, \
    "MAML should beat the same network adapted from random initialisation"

# %% [markdown]
# ### Results beside the paper's
#
# Filled from the runs above only (hardware, date and wall time printed with them). Fast-mode rows are
# from a shortened run on the small splits and are labelled so.

# %%
today = datetime.date.today().isoformat()
label = "FAST MODE (shortened run, small splits)" if fast_mode() else "full run"
print(f"| setting | this run, 10 steps ({label}) | this run, the paper's steps | paper (Finn et al. 2017, "
      "Table 1) | hardware | date | wall time |")
print("|---|---|---|---|---|---|---|")
for name in presets:
    res = next(iter(results[name].values()))
    m, c = res.at(10)
    steps_p = PAPER_TEST_STEPS[runs[name].config.n_way]
    mp, cp_ = res.at(steps_p)
    print(f"| {name}{' (FAKE data)' if fake else ''} | {m:.1f} ± {c:.1f}% ({res.num_tasks} tasks, "
          f"{runs[name].iteration} it.) | {mp:.1f} ± {cp_:.1f}% ({steps_p} steps) "
          f"| {PRESETS[name].paper_acc} ± {PRESETS[name].paper_ci95}% ({steps_p} steps) | {hardware} "
          f"| {today} | {runs[name].train_time_s:.0f} s |")

# %% [markdown]
# ## 5. Lesson: BatchNorm modes
#
# The official code calls `tf.contrib.layers.batch_norm` with its default `is_training=True`, at
# meta-training **and** at meta-test: every forward pass normalises with the mean and variance of the
# images it is given, and no running averages are used. At test time this is **transductive**: the query
# images of a task are normalised together, so each prediction depends a little on the other queries.
#
# PyTorch's `nn.BatchNorm2d` keeps running averages and, after `model.eval()`, uses them instead. A
# MAML network was never trained with those statistics. We take the meta-trained network, copy it into
# an `nn.BatchNorm2d` version, and evaluate it three ways on the same meta-test tasks:
# 1. batch statistics (what it was trained with);
# 2. `model.eval()` with running statistics **never updated** (mean 0, var 1): what a port gets when it
#    meta-trains functionally and then calls `eval()`;
# 3. `model.eval()` with running statistics averaged over meta-training batches.

# %%
from mamlbook.conv import BatchNorm


def with_torch_batchnorm(model):
    """A copy of a Conv4 whose BatchNorms are nn.BatchNorm2d (γ fixed at 1, same shift and ε)."""
    import copy
    clone = copy.deepcopy(model)
    for block in clone.features:
        ours = block[1]
        bn = nn.BatchNorm2d(ours.bias.numel(), eps=ours.eps, momentum=None)   # momentum None: plain average
        with torch.no_grad():
            bn.bias.copy_(ours.bias)
        bn.weight.requires_grad_(False)
        block[1] = bn
    return clone.to(device)


name = presets[0]
cfg = runs[name].config
trained = runs[name].best_model()
test_sampler = make_sampler(splits["test"], cfg, device=device)
kw = dict(inner_lr=cfg.inner_lr, steps=cfg.test_inner_steps, num_tasks=bn_tasks)

batch_stats = evaluate_accuracy(trained, test_sampler, generator=torch.Generator().manual_seed(1), **kw)
never = with_torch_batchnorm(trained).eval()
never_updated = evaluate_accuracy(never, test_sampler, generator=torch.Generator().manual_seed(1), **kw)
averaged = with_torch_batchnorm(trained).train()
train_sampler = make_sampler(splits["train"], cfg, device=device)
with torch.no_grad():                                     # accumulate running stats on meta-training images
    for _ in range(20):
        averaged(train_sampler.sample(8, torch.Generator().manual_seed(_)).x_support.flatten(0, 1))
averaged.eval()
running = evaluate_accuracy(averaged, test_sampler, generator=torch.Generator().manual_seed(1), **kw)
bn_rows = {"batch statistics (MAML's)": batch_stats, "eval(), never-updated running stats": never_updated,
           "eval(), running stats from meta-training": running}
for k_, r_ in bn_rows.items():
    print(f"{k_:>42}: {r_.at(10)[0]:.1f} ± {r_.at(10)[1]:.1f}%  (before adapting: {r_.at(0)[0]:.1f}%)")

# %%
fig, ax = plt.subplots(figsize=(6, 3.5))
for k_, r_ in bn_rows.items():
    ax.plot(r_.steps, r_.mean, marker="o", label=k_)
ax.axhline(100 / cfg.n_way, color="grey", ls=":", label="chance")
ax.set(xlabel="SGD steps", ylabel="query accuracy (%)", title="one meta-trained network, three BatchNorm modes")
ax.legend(fontsize=8)
plt.show()
assert batch_stats.at(10)[0] > never_updated.at(10)[0], "batch statistics should beat never-updated running stats"
assert batch_stats.at(10)[0] > running.at(10)[0], "batch statistics should beat averaged running stats"

# %% [markdown]
# Batch statistics win: the network was meta-trained to work *with* them. Never-updated running
# statistics (mean 0, variance 1) leave every activation un-normalised, and the classifier, meta-learned
# on normalised features, is lost. Running statistics averaged over meta-training images do not rescue
# it either. Two things could be behind that: a mistake in copying the network into `nn.BatchNorm2d`,
# or the adaptation itself going astray. Running statistics describe the *training* alphabets, not the
# new task's, and without per-batch normalisation the support loss can be far more sharply curved, so
# the meta-learned step α = 2.0 may overshoot. The next two cells test both. In training mode the copy
# normalises with batch statistics, so it must give the original network's logits (asserted). And if
# the step overshoots, a smaller one, α = 0.4 with the mean cross-entropy, should climb higher before
# it drifts back; the second cell adapts the same network with it and prints what this run shows.

# %%
x_check = test_sampler.sample(1, torch.Generator().manual_seed(2)).x_query[0]      # (N·Q, 1, 28, 28)
with torch.no_grad():
    logits, logits_copy = trained(x_check), with_torch_batchnorm(trained).train()(x_check)
print(f"nn.BatchNorm2d copy in training mode vs the meta-trained network: largest logit difference "
      f"{(logits_copy - logits).abs().max().item():.1e}")
torch.testing.assert_close(logits_copy, logits, rtol=1e-4, atol=1e-4)   # the copy is the same network

# %%
small_lr = 0.4                                  # smaller than the α the network was meta-trained with
running_small = evaluate_accuracy(averaged, test_sampler, generator=torch.Generator().manual_seed(1),
                                  **{**kw, "inner_lr": small_lr})


def peak(r):
    """(step, mean, ci95) where the accuracy curve is highest."""
    i = max(range(len(r.steps)), key=lambda j: r.mean[j])
    return r.steps[i], r.mean[i], r.ci95[i]


def steps_text(n):
    return f"{n} step{'' if n == 1 else 's'}"


for lr, curve in ((cfg.inner_lr, running), (small_lr, running_small)):
    best_step, best, ci = peak(curve)
    print(f"eval(), running stats from meta-training, α = {lr:g}: {curve.at(0)[0]:.1f}% before adapting, "
          f"highest {best:.1f} ± {ci:.1f}% after {steps_text(best_step)}, "
          f"{curve.mean[-1]:.1f}% after {steps_text(curve.steps[-1])}")

# %%
# A sentence written from the two curves: does the smaller α climb higher, and does it keep its best?
big_step, big_best, big_ci = peak(running)
small_step, small_best, small_ci = peak(running_small)
last_step, last = running_small.steps[-1], running_small.mean[-1]
higher = "higher" if small_best > big_best else "no higher"
overlap = "; the 95% intervals overlap" if abs(small_best - big_best) <= small_ci + big_ci else ""
if small_step < last_step and last < small_best - small_ci:         # clearly below its best
    ending = f"then drifts back to {last:.1f}%"
else:
    ending = f"ends at {last:.1f}%, not clearly below its best,"
print(("FAST MODE, a network meta-trained for seconds: " if fast_mode() else "")
      + f"With α = {small_lr:g} the same network climbs {higher} "
      f"({small_best:.1f}% after {steps_text(small_step)} against {big_best:.1f}% after {steps_text(big_step)} "
      f"with α = {cfg.inner_lr:g}{overlap}) and {ending} after {steps_text(last_step)} "
      f"(chance: {100 / cfg.n_way:.0f}%).")

# %% [markdown]
# The price of batch statistics is that meta-test predictions are transductive (queries are normalised
# together); the paper's numbers, and ours, are measured this way, and comparisons with
# non-transductive methods should say so.
#
# **One deviation from the official code: the BatchNorm shift.** The official BatchNorm has no scale γ
# and a trainable offset β per channel, as ours. But the official fast weights are built only from the
# `weights` dict (conv1–4, b1–4, w5, b5), so β is **not adapted in the inner loop**: the outer Adam
# learns it and every task uses it unchanged. This book's `adapt` steps every parameter of the model,
# β included, in the inner loop. That adds one adapted shift per channel of each BatchNorm (the cell
# below counts them against the whole Conv4); it changes what one inner step can do, and a run with the
# official behaviour (β in the outer loop only) is the fair comparison when you set our numbers beside
# the paper's. Every MAML-family learner offers it: `make_algorithm("maml", model, adapt_bn=False)`, or
# `python -m mamlbook train --preset omniglot-5w1s --no-adapt-bn` (the checkpoint records the choice and
# `evaluate` adapts the same way; `tests/test_adapt_bn.py` checks its meta-gradient against finite
# differences).

# %%
shifts = sum(m.bias.numel() for m in trained.modules() if isinstance(m, BatchNorm))
print(f"BatchNorm shifts β adapted in this book's inner loop (not in the official code's): {shifts} "
      f"of the Conv4's {sum(p.numel() for p in trained.parameters()):,} parameters")

# %% [markdown]
# ## 6. Colab: keep checkpoints on Google Drive
#
# A Colab session dies after idling, or when its virtual machine reaches its maximum lifetime ("as much
# as 12 hours", says Colab's FAQ, research.google.com/colaboratory/faq.html; not measured by this book),
# and takes its disk with it. Write the run folder to your Drive and resume from it in the next session:
#
# ```python
# from google.colab import drive
# drive.mount("/content/drive")
# run_dir = "/content/drive/MyDrive/mamlbook/runs/chapter06"   # then run the cells above
# # after a disconnect: the same cells with resume=True in train_fewshot(...), or from a shell:
# !python -m mamlbook train --preset omniglot-5w1s --out /content/drive/MyDrive/mamlbook/runs/o5w1 --resume
# ```
#
# Checkpoints are written to a temporary file and renamed (`os.replace`), so a session killed during a
# write leaves the previous checkpoint intact; `resume` restores the model, Adam's state, the episode
# generator and the history, and the run continues as if never interrupted.
#
# ## Summary
#
# - MAML meta-trains the paper's Conv4 on N-way K-shot episodes with cross-entropy; its model is chosen
#   on the meta-validation split and reported on 600 meta-test tasks with a 95% CI.
# - The official inner loss is Σ cross-entropy / K = N × mean cross-entropy, so α = 0.4 there is α = 2.0
#   with `F.cross_entropy`; one inner step each way gives the same θ′ to 1e-12.
# - MAML's BatchNorm uses batch statistics at training and at test (transductive); `model.eval()` with
#   running statistics evaluates a different network from the one that was meta-trained. This book also
#   adapts BatchNorm's shift β in the inner loop; the official code learns it in the outer loop only
#   (`adapt_bn=False`, `--no-adapt-bn`).
# - The presets test with 10 steps (the official code's); the paper reports 5-way after 3 steps and
#   20-way after 5, and section 4 prints both.
#
# ## Exercises
#
# **1.** Write the official inner loss for N-way K-shot as a function `official_xent(logits, labels, k)` and
# check that one step with it at α equals one mean-CE step at N·α for a 20-way 1-shot task.

# %%
def official_xent(logits, labels, k):
    ### BEGIN SOLUTION
    return F.cross_entropy(logits, labels, reduction="sum") / k
    ### END SOLUTION


# %%
torch.manual_seed(1)
net20 = omniglot_conv4(20).double()
p20 = dict(net20.named_parameters())
x20, y20 = torch.rand(20, 1, 28, 28, dtype=torch.float64), torch.arange(20)
a20 = adapt(net20, p20, x20, y20, inner_lr=0.1, loss_fn=lambda lo, la: official_xent(lo, la, 1))
b20 = adapt(net20, p20, x20, y20, inner_lr=2.0, loss_fn=F.cross_entropy)
assert all(torch.allclose(a20[q], b20[q], atol=1e-12) for q in p20)

# %% [markdown]
# **2.** How many meta-test tasks would halve the confidence interval of the first result above? Write
# `tasks_for_half_ci(n)` and check it against the formula 1.96·std/√n.

# %%
def tasks_for_half_ci(n):
    ### BEGIN SOLUTION
    return 4 * n
    ### END SOLUTION


# %%
res0 = next(iter(results[presets[0]].values()))
std = res0.ci95[10] * res0.num_tasks ** 0.5 / 1.96
assert abs(1.96 * std / tasks_for_half_ci(res0.num_tasks) ** 0.5 - res0.ci95[10] / 2) < 1e-9
