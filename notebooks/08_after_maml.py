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
# # Chapter 8 — After MAML: ANIL, Meta-SGD, MAML++, Reptile and Prototypical Networks
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/mamlbook/mamlbook/blob/main/notebooks/08_after_maml.ipynb)
#
# MAML started a family. Some of its descendants change what the inner loop adapts (ANIL), how
# far it steps (Meta-SGD, MAML++), whether it needs second derivatives at all (first-order MAML,
# Reptile), or drop the inner loop altogether (Prototypical Networks). This chapter puts all seven
# behind one interface and races them against the clock.
#
# **What you will learn**
# - each method's update in one equation, written out by hand once and checked against the
#   tested `mamlbook` version;
# - `mamlbook.algorithms`: one interface (`make_algorithm`, `outer_step`, `adapt`) for MAML,
#   first-order MAML, Reptile, ANIL, Meta-SGD, MAML++ and Prototypical Networks;
# - how to compare meta-learners fairly: the **same wall-clock budget**, the same initial θ, the same
#   stream of training tasks and the same test tasks, with 95% confidence intervals, time per
#   meta-step and the memory autograd holds;
# - what the comparison shows on sinusoids and on Omniglot's held-out alphabets.
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

banner("Chapter 8");

# %% [markdown]
# The knobs. `pick(full, fast)` gives the second value when `MAMLBOOK_FAST=1` (a shortened run for
# CI; its numbers are **not** converged results). The budgets are seconds of meta-training *per
# algorithm*.

# %% tags=["parameters"]
SEED = 0
SINE_BUDGET_S = pick(120, 3)             # wall-clock seconds of meta-training per algorithm, sinusoids
OMNIGLOT_BUDGET_S = pick(600, 6)         # ... on Omniglot (5-way 1-shot, the small background sets)
SINE_TEST_TASKS = pick(600, 100)         # test tasks (the official code: 600)
OMNIGLOT_TEST_TASKS = pick(600, 100)
OMNIGLOT_META_BATCH = pick(32, 8)        # tasks per meta-step (the paper: 32)
OMNIGLOT_META_LR = pick(1e-3, 3e-3)      # Adam's β (official code: 1e-3; fast mode learns faster with 3e-3)
ALPHA = 0.01                             # α for the sinusoid demonstrations (paper §5.1)
threads = 1

# %%
import math
import platform

import matplotlib.pyplot as plt
import torch
import torch.nn.functional as F
from IPython.display import Markdown, display
from torch import nn
from torch.func import functional_call

from mamlbook.algorithms import ALGORITHMS, default_head, make_algorithm
from mamlbook.compare import SETTINGS, compare, format_table, omniglot_problem, plot_comparison, sinusoid_problem
from mamlbook.config import fast_mode, pick, seed_everything
from mamlbook.algorithms.mamlpp import multi_step_loss_weights
from mamlbook.models import SinusoidMLP
from mamlbook.plotting import markdown_table
from mamlbook.tasks import sample_sinusoid_tasks
from mamlbook.train import fit

torch.set_num_threads(threads)
seed_everything(SEED)
device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
hardware = torch.cuda.get_device_name() if device.type == "cuda" else f"CPU ({platform.processor() or platform.machine()}, {threads} thread)"
print("device:", device, "|", hardware)

# %% [markdown]
# ## 1. One interface for seven algorithms
#
# Every algorithm in `mamlbook.algorithms` takes the network and its parameters θ (a name → tensor
# dict, as in every chapter), and offers three things:
#
# - `meta_parameters()`: what the outer loop learns — θ, plus Meta-SGD's and MAML++'s learned rates;
# - `outer_step(optimizer, x_s, y_s, x_q, y_q, iteration, progress)`: one meta-update on a meta-batch;
# - `adapt(x_s, y_s, steps)`: the model adapted to one task's support set, ready to predict its queries.
#
# The settings each algorithm gets below follow its paper or its authors' code, except where this
# book deviates and says so; they are listed here and, with their sources and deviations, next to the
# code in `mamlbook/compare.py`. The largest deviation is Reptile's on Omniglot (section 6).

# %%
print("algorithms:", ", ".join(ALGORITHMS))
rows = [[problem, name, ", ".join(f"{k}={v}" for k, v in options.items()) or "(no inner loop)"]
        for problem, per_algorithm in SETTINGS.items() for name, options in per_algorithm.items()]
display(Markdown(markdown_table(["problem", "algorithm", "settings"], rows)))

# %% [markdown]
# The demonstrations below use the paper's sinusoid network in float64 and one task.

# %%
torch.manual_seed(SEED)
net = SinusoidMLP().double()
theta = {k: v.detach().clone().requires_grad_() for k, v in net.named_parameters()}
task = sample_sinusoid_tasks(1, 10, generator=torch.Generator().manual_seed(SEED)).to(dtype=torch.float64)
xs, ys, xq, yq = task.task(0)


def support_grads(params):
    """∇L_support at ``params``, one tensor per entry (the inner gradient of every method)."""
    loss = F.mse_loss(functional_call(net, params, (xs,)), ys)
    return dict(zip(params, torch.autograd.grad(loss, list(params.values()))))

# %% [markdown]
# ## 2. MAML and first-order MAML (chapters 2 and 3)
#
# $$\theta'_i = \theta - \alpha\nabla L_{s,i}(\theta), \qquad
#   \theta \leftarrow \theta - \beta\,\nabla_\theta \frac1T\sum_i L_{q,i}(\theta'_i).$$
#
# MAML differentiates through the inner step (a Hessian-vector product, chapter 3); first-order MAML
# treats $\nabla L_s$ as a constant, so its meta-gradient is $\nabla L_q$ evaluated at $\theta'$.
# Both are `make_algorithm("maml" | "fomaml", ...)`.
#
# ## 3. ANIL: adapt the head only (Raghu et al., ICLR 2020)
#
# Split θ into a body $\theta_b$ (the features) and a head $\theta_h$ (the last linear layer):
#
# $$\theta_h' = \theta_h - \alpha\nabla_{\theta_h} L_s(\theta_b, \theta_h), \qquad
#   \theta_b' = \theta_b, \qquad \min_{\theta_b,\theta_h} \frac1T\sum_i L_{q,i}(\theta_b, \theta'_{h,i}).$$
#
# Raghu et al. found that MAML's inner loop mostly *re-uses* features rather than changing them:
# freezing the body in the inner loop costs little accuracy. By hand, then with the package:

# %%
head = default_head(net)                                      # the last nn.Linear: "4." here
g = support_grads(theta)
by_hand = {k: v - ALPHA * g[k] if k.startswith(head) else v for k, v in theta.items()}
anil = make_algorithm("anil", net, theta, problem="regression", inner_lr=ALPHA)
adapted = anil.adapt(xs, ys, steps=1).params
for k in theta:
    torch.testing.assert_close(adapted[k], by_hand[k], rtol=1e-12, atol=1e-14)
print(f"head = {head!r}; tensors the ANIL inner step changed:",
      [k for k in theta if not torch.equal(adapted[k], theta[k])])

# %% [markdown]
# ## 4. Meta-SGD: learn a step size for every coordinate (Li et al., 2017)
#
# $$\theta' = \theta - \boldsymbol\alpha \odot \nabla L_s(\theta), \qquad
#   \min_{\theta,\,\boldsymbol\alpha}\ \frac1T\sum_i L_{q,i}(\theta'_i),$$
#
# with $\boldsymbol\alpha$ shaped like θ and learned by the same optimizer: each coordinate gets its own
# rate *and direction* (nothing keeps $\alpha$ positive). Here it starts equal to MAML's α everywhere,
# so its first step is MAML's: that initialisation is **this book's choice**, not Li et al.'s (we have
# not checked their initialisation against their paper, so we do not quote it). Below, α is set at
# random to check the elementwise update by hand.

# %%
metasgd = make_algorithm("metasgd", net, theta, problem="regression", inner_lr=ALPHA)
with torch.no_grad():
    for a in metasgd.inner_lrs.values():
        a.uniform_(0.0, 0.05, generator=torch.Generator().manual_seed(1))
by_hand = {k: v - metasgd.inner_lrs[k] * g[k] for k, v in theta.items()}
adapted = metasgd.adapt(xs, ys, steps=1).params
for k in theta:
    torch.testing.assert_close(adapted[k], by_hand[k], rtol=1e-12, atol=1e-14)
print("meta-parameters: θ", sum(v.numel() for v in theta.values()), "numbers + α",
      sum(a.numel() for a in metasgd.inner_lrs.values()), "numbers")

# %% [markdown]
# ## 5. MAML++: per-step rates, a multi-step loss and derivative-order annealing (Antoniou et al., ICLR 2019)
#
# "How to train your MAML" fixes MAML's training instabilities with, among others:
#
# - **per-layer per-step learned rates** (LSLR): $\theta_{j+1} = \theta_j - \alpha_{l,j}\nabla_l L_s(\theta_j)$
#   for layer $l$ at inner step $j$;
# - the **multi-step loss** (MSL): the outer loss is $\sum_{j=1}^{N} w_j L_q(\theta_j)$ over every inner
#   step, the weights starting uniform and annealed toward the last step;
# - **derivative-order annealing**: first-order meta-gradients for the first epochs (the authors'
#   Omniglot configuration uses second order from the start, and so do we).
#
# The MSL weights the comparison uses (5 steps, annealed over 10 epochs of 500 meta-steps; from
# epoch 10 on, only the last step's loss is used, as in the authors' code):

# %%
epochs = list(range(0, 12))
weights = torch.stack([multi_step_loss_weights(5, e, anneal_epochs=10) for e in epochs])   # (epochs, 5)
fig, ax = plt.subplots(figsize=(6, 3.2))
ax.plot(epochs, weights[:, 0], marker="o", label="steps 1–4 (each; they coincide)")
ax.plot(epochs, weights[:, 4], marker="o", label="step 5 (the last)")
ax.set(xlabel="epoch (500 meta-steps)", ylabel="weight $w_j$ of $L_q(\\theta_j)$", title="MAML++'s multi-step loss")
ax.legend(fontsize=8)
plt.show()

# %% [markdown]
# ## 6. Reptile (Nichol, Achiam & Schulman, 2018; chapter 3)
#
# $$\varphi_i = \text{SGD}_k(\theta;\ \text{task } i), \qquad
#   \theta \leftarrow \theta + \varepsilon\,\frac1T\sum_i(\varphi_i - \theta).$$
#
# No query loss and no meta-optimizer: θ moves a fraction ε toward the average of the task-adapted
# parameters. (Chapter 3 handed the same direction $\theta - \overline{\varphi}$ to Adam, so that MAML,
# FOMAML and Reptile shared one meta-optimizer there; here Reptile takes its own interpolation step,
# as its authors' code does.) The paper anneals ε linearly to 0 over training; with a wall-clock
# budget the number
# of meta-steps is not known in advance, so `outer_step` anneals it over the fraction of the budget
# used (`progress`):

# %%
reptile = make_algorithm("reptile", net, theta, problem="regression", **SETTINGS["sinusoid"]["reptile"])
print("ε at 0%, 50%, 90% of the budget:", [round(reptile.epsilon(p), 3) for p in (0.0, 0.5, 0.9)])

# %% [markdown]
# **Reptile's own Omniglot settings, and where this book departs from them.** The supervised-reptile
# README trains 5-way 1-shot Omniglot with `--inner-iters 5 --eval-iters 50 --train-shots 10
# --meta-batch 5 --inner-batch 10 --meta-step 1 --meta-step-final 0 --learning-rate 0.001`: 5 inner
# iterations in training, 50 at evaluation, 10 training shots per class, 5 tasks per meta-step, and
# **Adam with $\beta_1 = 0$ as the inner optimizer** (`models.py`: `DEFAULT_OPTIMIZER =
# partial(tf.train.AdamOptimizer, beta1=0)`). This book's Reptile instead takes **plain SGD** inner
# steps at MAML's α (mean cross-entropy) on the task's K + Q images, fewer of them (the cell prints
# its settings), on the meta-batches every algorithm of the race shares. Only the outer step — ε
# annealed from 1 to 0 — is Reptile's. The Omniglot row of the race below is therefore "Reptile's
# outer update with MAML's inner loop", not a reproduction of Reptile's results.

# %%
ours = SETTINGS["omniglot"]["reptile"]
print(f"Reptile on Omniglot, this book: SGD at α = {ours['inner_lr']:g}, {ours['inner_steps']} inner steps in "
      f"training, {ours['test_steps']} at test, ε {ours['outer_lr']:g} → {ours['outer_lr_final']:g}")
print("Reptile on Omniglot, its README: Adam (β1 = 0, lr 0.001), 5 inner iterations in training, 50 at "
      "evaluation, 10 training shots, meta-batch 5, ε 1 → 0")

# %% [markdown]
# ## 7. Prototypical Networks (Snell, Swersky & Zemel, NeurIPS 2017)
#
# No inner loop at all. An embedding network $f_\theta$ (here: the model without its last layer)
# maps each image to a vector; each class's **prototype** is the mean embedding of its support
# examples, and a query's logits are its negative squared distances to them:
#
# $$c_n = \frac1K\sum_{(x,y)\in S,\ y=n} f_\theta(x), \qquad
#   \text{logit}_n(x) = -\lVert f_\theta(x) - c_n\rVert^2, \qquad
#   \min_\theta\ \text{cross-entropy on the queries}.$$
#
# In two dimensions with the identity as embedding, the decision regions are the cells of the
# nearest prototype. By hand, then with the package:

# %%
body = nn.Linear(2, 2, bias=False)
with torch.no_grad():
    body.weight.copy_(torch.eye(2))                               # f(x) = x, so we can draw it
toy = nn.Sequential(body, nn.Linear(2, 3))                        # the last layer (head) is dropped
centers = torch.tensor([[-2.0, 0.0], [2.0, 1.0], [0.0, -2.5]])
gen = torch.Generator().manual_seed(SEED)
x_toy = (centers.repeat_interleave(5, 0) + torch.randn(15, 2, generator=gen))   # 3-way 5-shot
y_toy = torch.arange(3).repeat_interleave(5)
protos_by_hand = torch.stack([x_toy[y_toy == n].mean(0) for n in range(3)])     # (3, 2)
grid = torch.stack(torch.meshgrid(torch.linspace(-5, 5, 120), torch.linspace(-5, 5, 120), indexing="xy"), -1).reshape(-1, 2)
logits_by_hand = -((grid[:, None, :] - protos_by_hand[None]) ** 2).sum(-1)      # (grid, 3)
protonet = make_algorithm("protonet", toy, problem="classification")
torch.testing.assert_close(protonet.adapt(x_toy, y_toy)(grid), logits_by_hand, rtol=1e-5, atol=1e-4)

fig, ax = plt.subplots(figsize=(4.5, 4))
ax.contourf(grid[:, 0].reshape(120, 120), grid[:, 1].reshape(120, 120),
            logits_by_hand.argmax(1).reshape(120, 120), levels=[-0.5, 0.5, 1.5, 2.5], alpha=0.25,
            colors=["C0", "C1", "C2"])
ax.scatter(x_toy[:, 0], x_toy[:, 1], c=[f"C{int(n)}" for n in y_toy], s=20, label="support")
ax.scatter(protos_by_hand[:, 0], protos_by_hand[:, 1], c=["C0", "C1", "C2"], marker="*", s=300,
           edgecolors="black", label="prototypes")
ax.set(title="nearest-prototype regions (3-way 5-shot)", xlabel="$f(x)_1$", ylabel="$f(x)_2$")
ax.legend(fontsize=8)
plt.show()

# %% [markdown]
# Prototypical Networks classify; for regression `make_algorithm` refuses them with a message
# that says why, which is why the sinusoid comparison below has six algorithms and Omniglot seven.
#
# ## 8. The race on sinusoids, at equal wall-clock time
#
# `mamlbook.compare.compare` trains each algorithm for the **same number of seconds**, one after the
# other in this process: the same initial θ (seeded), the same stream of meta-batches (K = 10 as in
# the paper; 25 tasks per meta-step and Adam β = 1e-3 as in the official code), so a faster
# algorithm simply sees more tasks. No
# model selection: the θ reached when the time is up is tested, on the same 600 tasks as chapter 2
# (a smaller set in fast mode), each algorithm adapting with its own test-time protocol (column *test steps*).
# Memory is what autograd keeps for backward at the peak of one meta-step (see the module's docstring).

# %%
sine_rows = compare(sinusoid_problem(num_test_tasks=SINE_TEST_TASKS), budget_s=SINE_BUDGET_S, seed=SEED,
                    device="cpu")
assert len({r.test_tasks for r in sine_rows}) == 1                   # one test set for all

# %%
label = (f"FAST MODE — shortened run: {SINE_BUDGET_S:g} s per algorithm. These numbers are NOT converged results."
         if fast_mode() else f"Full run: {SINE_BUDGET_S:g} s per algorithm.")
display(Markdown(f"**Sinusoids, K = 10: query MSE after adaptation on {sine_rows[0].num_test_tasks} test "
                 f"tasks (mean ± 95% CI). {label}** Hardware: {hardware}.\n\n" + format_table(sine_rows)))

# %%
plot_comparison(sine_rows, title="sinusoids, K = 10")
plt.show()

# %% [markdown]
# ### MAML++'s learned rates on sinusoids
#
# MAML++ learns one step size per layer and per inner step, each starting at α = 0.01 here (MAML's
# sinusoid α; the MAML++ paper has no sinusoid experiment, and its Omniglot rates start at 0.1). Adam
# moves every parameter by up to about β = 1e-3 per meta-step, *whatever its scale*: for a rate of
# 0.01 that is a tenth of its value per step, so after a few hundred steps the rates can be many times
# α, or negative (that layer then steps uphill on the support loss). The book's full race at commit
# `67fc8ea` ended with MAML++'s θ not finite (`results/compare/sinusoid_full.json`). The next cell
# trains MAML++ alone on the race's task stream and follows its smallest and largest rate, and says
# whether the meta-loss stayed finite in this run.

# %%
class Diverged(Exception):
    """Raised by the step hook below to stop training at the first non-finite meta-loss."""


PP_STEPS = pick(1000, 30)
torch.manual_seed(SEED)
pp_problem = sinusoid_problem(num_test_tasks=10)
pp = make_algorithm("mamlpp", pp_problem.make_model(), problem="regression", **SETTINGS["sinusoid"]["mamlpp"])
pp_rates = []                                                   # (min, max) over all learned rates, per step


def follow_rates(run):
    rates = torch.cat([r.detach().flatten() for r in pp.lrs.values()])
    pp_rates.append((rates.min().item(), rates.max().item()))
    if not math.isfinite(run.losses[-1]):
        raise Diverged


try:
    pp_run = fit(pp, pp_problem.sample, generator=torch.Generator().manual_seed(SEED), iterations=PP_STEPS,
                 meta_lr=pp_problem.meta_lr, desc="MAML++ rates", on_step=follow_rates)
    diverged_at = None
except Diverged:
    diverged_at = len(pp_rates)
lo, hi = zip(*pp_rates)
fig, ax = plt.subplots(figsize=(6, 3.2))
ax.plot(range(1, len(lo) + 1), lo, label="smallest rate")
ax.plot(range(1, len(hi) + 1), hi, label="largest rate")
ax.axhline(0.01, color="gray", ls=":", label="α = 0.01 (start)")
ax.set(xlabel="meta-step", ylabel="learned inner rate", title="MAML++ on sinusoids: per-layer, per-step rates")
ax.legend(fontsize=8)
plt.show()
n = len(pp_rates)
print(("FAST MODE, a shortened run: " if fast_mode() else "")
      + f"after {n} meta-steps the learned rates span {lo[-1]:.3f} … {hi[-1]:.3f} "
      f"({max(abs(lo[-1]), abs(hi[-1])) / 0.01:.0f}× α at the extreme; "
      f"{'some are negative' if lo[-1] < 0 else 'none is negative'}); "
      + (f"the meta-loss became non-finite at step {diverged_at}." if diverged_at
         else f"the meta-loss stayed finite for all {n} steps in this run."))

# %% [markdown]
# ## 9. The race on Omniglot: 5-way 1-shot on held-out alphabets
#
# The same race on the two small Omniglot background sets (chapter 5): meta-training on small1's
# alphabets (Early_Aramaic, chapter 6's meta-validation alphabet, is not used), testing on small2's
# Japanese (katakana), Sanskrit and Tagalog, never seen in training. Conv4 with batch-statistics
# BatchNorm (chapter 6), α = 2.0 for the mean cross-entropy (the paper's 0.4, chapter 6), meta-batch 32.
# ANIL's head is Conv4's `classifier`; Prototypical Networks embed with Conv4 minus `classifier`
# (64 numbers per image).

# %%
from mamlbook.fewshot import small_omniglot

splits, _ = small_omniglot(allow_fake=fast_mode())   # train / val (Early_Aramaic) / test, or None
fake = splits is not None and any(s.fake for s in splits.values())

# %%
omni_rows = []
if splits is not None:
    omniglot = omniglot_problem(splits, meta_batch_size=OMNIGLOT_META_BATCH, meta_lr=OMNIGLOT_META_LR,
                                num_test_tasks=OMNIGLOT_TEST_TASKS, device=device)
    omni_rows = compare(omniglot, budget_s=OMNIGLOT_BUDGET_S, seed=SEED, device=device)
    assert len({r.test_tasks for r in omni_rows}) == 1

# %%
if omni_rows:
    label = (f"FAST MODE — shortened run: {OMNIGLOT_BUDGET_S:g} s per algorithm, meta-batch {OMNIGLOT_META_BATCH}, "
             f"β = {OMNIGLOT_META_LR:g}. These numbers are NOT converged results." if fast_mode()
             else f"Full run: {OMNIGLOT_BUDGET_S:g} s per algorithm.")
    display(Markdown(f"**Omniglot 5-way 1-shot{' — FAKE DATA' if fake else ''}: query accuracy on "
                     f"{omni_rows[0].num_test_tasks} test tasks (mean ± 95% CI). {label}** "
                     f"Hardware: {hardware}.\n\n" + format_table(omni_rows)))
    plot_comparison(omni_rows, title="Omniglot 5-way 1-shot")
    plt.show()
else:
    print("No Omniglot results: the data is missing (see above).")

# %% [markdown]
# ## 10. Reading the results
#
# The sentences below are generated from the tables above. Differences smaller than the confidence
# intervals are noise; in fast mode every run is seconds long, so compare the intervals, not the means.

# %%
def summary(rows, lower_is_better):
    best = (min if lower_is_better else max)(rows, key=lambda r: r.mean)
    close = [r.algorithm for r in rows if r is not best and abs(r.mean - best.mean) <= r.ci95 + best.ci95]
    cheapest = min(rows, key=lambda r: r.ms_per_step)
    priciest = max(rows, key=lambda r: r.ms_per_step)
    return (f"best mean: {best.algorithm} ({best.mean:.3g} ± {best.ci95:.2g}); within the intervals of it: "
            f"{', '.join(close) or 'none'}. Cheapest meta-step: {cheapest.algorithm} ({cheapest.ms_per_step:.1f} ms, "
            f"{cheapest.iterations:,} meta-steps); dearest: {priciest.algorithm} ({priciest.ms_per_step:.1f} ms, "
            f"{priciest.iterations:,} meta-steps).")


print("Sinusoids:", summary(sine_rows, lower_is_better=True))
if omni_rows:
    print("Omniglot" + (" (FAKE data)" if fake else "") + ":", summary(omni_rows, lower_is_better=False))
for rows in (sine_rows, omni_rows):
    peak = {r.algorithm: r.graph_peak_mb for r in rows}
    assert not rows or peak["maml"] > peak["fomaml"], "a second-order graph should hold more than a first-order one"

# %% [markdown]
# What to look for, whatever your numbers:
#
# - **Cost per meta-step** differs widely (the *ms / meta-step* column). First-order MAML and ANIL
#   drop work that MAML does: ANIL differentiates its inner step with respect to the head only, so its
#   second-order terms use only the Hessian blocks that involve the head — head–head for the head's
#   meta-gradient, and the mixed head–body block for the body's — never the large body–body block;
#   Reptile's cost
#   grows with its k inner steps; MAML++ pays for five second-order inner steps, and in this package
#   it also runs a per-task loop (`mamlpp_meta_loss`) where MAML batches the MLP's tasks with `vmap`,
#   so part of its cost is that implementation, not the algorithm.
# - **At equal time, cheap steps buy more tasks.** Whether that beats a better gradient is exactly
#   what a budget comparison measures, and the answer can change with the budget: rerun with a
#   longer one (`SINE_BUDGET_S`) before drawing conclusions.
# - **Memory** (autograd's peak): a second-order graph is kept until the outer backward, so MAML holds
#   more than first-order MAML (the cell below checks it on both problems); MAML++ builds the graphs of
#   a whole meta-batch of 5-step inner loops before its one backward, and Prototypical Networks embed
#   every task of the meta-batch before theirs.
# - **Adaptation can blow up.** A method that takes many test steps (Reptile's 32) or learns its own
#   step sizes (MAML++) can diverge on a few test tasks: their MSE is infinite. The table then says
#   "∞: diverged on k of n tasks" instead of a mean, and the median — finite while fewer than half
#   diverge — is the number to read (chapter 2 met the same effect with ten steps of MAML). The book
#   found this the hard way: a full run of this chapter printed `nan ± nan` (median `nan`) for Reptile
#   and MAML++ on sinusoids, because one non-finite task poisoned the mean and the median (the project's
#   history, not this run: commit 67fc8ea, "compare: a diverged test task counts as +inf and is
#   reported, not turned into a NaN table").
# - **Test-time protocols differ** (the *test steps* column), each method's own: on sinusoids Reptile
#   adapts for 32 steps where MAML takes 1; on Omniglot Meta-SGD takes 1 where MAML takes 10; Prototypical
#   Networks take none. A comparison table must say so, as this one does.
#
# ## Summary
#
# - One interface (`mamlbook.algorithms.make_algorithm`) covers MAML, first-order MAML, Reptile,
#   ANIL, Meta-SGD, MAML++ and Prototypical Networks, on regression and classification.
# - Their updates differ in one line each: what adapts (ANIL: the head), how far (Meta-SGD: α per
#   coordinate; MAML++: per layer and step), how the meta-gradient is taken (second order, first
#   order, Reptile's difference of parameters), or no inner loop at all (prototypes).
# - A fair comparison fixes the wall-clock budget, the initial θ, the task stream and the test tasks,
#   and reports 95% CIs, time per step and memory; `mamlbook.compare` does all of that.
#
# ## Exercises
#
# **Exercise 1 — prototypes.** Write `class_prototypes(embeddings, labels, n_way)`: the mean
# embedding of each class, as an (N, D) tensor. The check compares it with a hand-computed case and
# with `mamlbook.algorithms.protonet.prototypes`.

# %%
def class_prototypes(embeddings, labels, n_way):
    """(N, D): row n is the mean of the embeddings (S, D) whose label (S,) is n."""
    ### BEGIN SOLUTION
    return torch.stack([embeddings[labels == n].mean(dim=0) for n in range(n_way)])
    ### END SOLUTION


# %%
from mamlbook.algorithms.protonet import prototypes

emb = torch.tensor([[0.0, 0.0], [2.0, 0.0], [0.0, 2.0], [0.0, 4.0]])
assert torch.equal(class_prototypes(emb, torch.tensor([0, 0, 1, 1]), 2), torch.tensor([[1.0, 0.0], [0.0, 3.0]]))
emb, lab = torch.randn(20, 8, generator=torch.Generator().manual_seed(2)), torch.arange(4).repeat(5)
torch.testing.assert_close(class_prototypes(emb, lab, 4), prototypes(emb, lab, 4))
print("class_prototypes: right")

# %% [markdown]
# **Exercise 2 — one Meta-SGD step.** Write `metasgd_update(params, grads, alphas)`, returning
# θ − α ⊙ g for every entry of the dicts. Check: one weight (1, 2) with g = (0.5, −1) and α = (0.1, 0.2)
# gives (0.95, 2.2).

# %%
def metasgd_update(params, grads, alphas):
    """{name: θ − α ⊙ g} for dicts of tensors with the same keys and shapes."""
    ### BEGIN SOLUTION
    return {k: params[k] - alphas[k] * grads[k] for k in params}
    ### END SOLUTION


# %%
out = metasgd_update({"w": torch.tensor([1.0, 2.0])}, {"w": torch.tensor([0.5, -1.0])}, {"w": torch.tensor([0.1, 0.2])})
torch.testing.assert_close(out["w"], torch.tensor([0.95, 2.2]))
print("metasgd_update: right")

# %% [markdown]
# **Exercise 3 — Reptile's outer update.** Write `reptile_update(theta, phis, epsilon)`: θ + ε(mean φ − θ)
# for a tensor θ and a list of adapted tensors φ_i. Check by hand: θ = 1, φ = (1.6, 0.6), ε = 0.5 gives 1.05;
# then against `mamlbook.algorithms.reptile.reptile_step` on a random linear model.

# %%
def reptile_update(theta, phis, epsilon):
    """θ + ε·(mean_i φ_i − θ)."""
    ### BEGIN SOLUTION
    return theta + epsilon * (torch.stack(phis).mean(dim=0) - theta)
    ### END SOLUTION


# %%
from mamlbook.algorithms.reptile import adapted_parameters, reptile_step

torch.testing.assert_close(reptile_update(torch.tensor(1.0), [torch.tensor(1.6), torch.tensor(0.6)], 0.5),
                           torch.tensor(1.05))
lin = nn.Linear(3, 1).double()
p = dict(lin.named_parameters())
x3 = torch.randn(4, 6, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
y3 = torch.randn(4, 6, 1, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
phi = adapted_parameters(lin, p, x3, y3, inner_lr=0.1, inner_steps=3)            # (tasks, *shape) each
mine = {k: reptile_update(v.detach(), list(phi[k]), 0.3) for k, v in p.items()}
reptile_step(lin, p, x3, y3, inner_lr=0.1, inner_steps=3, outer_lr=0.3)
for k in p:
    torch.testing.assert_close(mine[k], p[k].detach())
print("reptile_update: right")
