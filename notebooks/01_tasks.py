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
# # Chapter 1 — Tasks, and why plain training fails
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/mamlbook/mamlbook/blob/main/notebooks/01_tasks.ipynb)
#
# **What you will learn**
#
# - what *few-shot learning* and *meta-learning* are, and how a *task* is defined;
# - the sinusoid task family of Finn, Abbeel & Levine (ICML 2017), the "hello world" of MAML;
# - why training one network on all the tasks, one after another, is **not** meta-learning: it
#   learns the *average* task — which for these sinusoids is $-\tfrac{2\,\mathbb{E}[A]}{\pi}\cos x$,
#   not $0$ — and then adapts poorly from $K=10$ points;
# - how we measure adaptation: mean squared error (MSE) after $0, 1, \dots, 10$ gradient steps on
#   600 new tasks, with 95% confidence intervals.
#
# Every number and figure below is produced by the code in this notebook when you run it.

# %%
# Google Colab only: install the book's package from its repository (torch is already there).
import subprocess, sys
if "google.colab" in sys.modules:
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps",
                    "git+https://github.com/mamlbook/mamlbook"], check=True)

# %%
import math

import matplotlib.pyplot as plt
import torch
import torch.nn.functional as F
from IPython.display import Markdown, display
from tqdm.auto import trange

from mamlbook.config import banner, fast_mode, pick, seed_everything
from mamlbook.evaluate import adaptation_curve, mean_ci95, summarize
from mamlbook.models import SinusoidMLP
from mamlbook.plotting import (format_ci, markdown_table, plot_adaptation, plot_adaptation_curves,
                               plot_learning_curve, plot_model, plot_tasks)
from mamlbook.sinusoid import SinusoidConfig, eval_tasks, train_pretrained, tune_step_size
from mamlbook.tasks import AMP_RANGE, INPUT_RANGE, PHASE_RANGE, sample_sinusoid_tasks
from mamlbook.train import History, as_batch
from mamlbook.train import train_through_tasks as package_train_through_tasks

banner("Chapter 1");

# %% [markdown]
# Every knob of this chapter is in the next cell. `pick(full, fast)` returns the first value
# normally and the second when the environment variable `MAMLBOOK_FAST=1` is set (CI does this);
# the fast values make the notebook run in seconds, and the numbers they give are from a
# **shortened run**.

# %% tags=["parameters"]
SEED = 0
K_SHOT = 10                                # support points per task (the paper's K)
NUM_TRAIN_TASKS = pick(70_000, 3_000)      # tasks the plain network is trained through, one at a time
STEPS_PER_TASK = 1                         # optimizer steps on each task before moving on
LR = 1e-3                                  # Adam step size β (official code's meta_lr default; §5.1 says only "Adam")
JOINT_ITERATIONS = pick(70_000, 1_500)     # the package's joint-training baseline (25 tasks per step)
FINE_TUNE_LR = 0.01                        # α: the paper's inner step size, also used to fine-tune
MAX_STEPS = 10                             # fine-tuning steps at test time
NUM_EVAL_TASKS = 600                       # the official evaluation protocol's number of test tasks

# %%
if fast_mode():
    print(f"FAST MODE: the network below sees {NUM_TRAIN_TASKS:,} tasks instead of 70,000; "
          "its numbers come from this shortened run.")
generator = seed_everything(SEED)

# %% [markdown]
# ## 1. Few-shot learning and meta-learning
#
# Ordinary supervised learning fits one function from many examples. **Few-shot learning** asks
# for a good function from very few examples — $K$ of them ("$K$-shot"), with $K$ as small as 5 or
# 10. From 10 points alone, no learner can pin down an arbitrary function. What makes it possible
# is *experience with related problems*.
#
# **Meta-learning** ("learning to learn") makes that experience explicit. We have a distribution
# $p(\mathcal{T})$ over **tasks**. Each task $\mathcal{T}_i$ comes with
#
# - a **support set** $\mathcal{D}^{\text{support}}_i$ of $K$ labelled examples to adapt on, and
# - a **query set** $\mathcal{D}^{\text{query}}_i$ of new examples from the *same* task, on which
#   the adapted model is judged.
#
# A meta-learner is trained on many tasks drawn from $p(\mathcal{T})$ so that, given the support
# set of a **new** task, it produces a model that does well on that task's query set:
#
# $$\min_{\theta}\; \mathbb{E}_{\mathcal{T}_i\sim p(\mathcal{T})}
#   \Big[\mathcal{L}_{\mathcal{T}_i}\big(\,U(\theta, \mathcal{D}^{\text{support}}_i);\;
#   \mathcal{D}^{\text{query}}_i\big)\Big],$$
#
# where $U$ is the adaptation procedure. MAML's choice of $U$ — a few steps of gradient descent
# from a learned starting point $\theta$ — is the subject of the next chapter. In this chapter
# $U$ is plain fine-tuning, and $\theta$ is learned *without* looking at $U$ at all.

# %% [markdown]
# ## 2. The sinusoid task family
#
# Section 5.1 of the MAML paper defines a task as regressing one sine wave
#
# $$y = A \sin(x - \varphi), \qquad A \sim \mathcal{U}[0.1,\ 5.0], \quad
#   \varphi \sim \mathcal{U}[0,\ \pi], \quad x \sim \mathcal{U}[-5,\ 5].$$
#
# A $K$-shot task gives $K$ points $(x, y)$ of one such curve; the network is the paper's
# multilayer perceptron with two hidden layers of 40 ReLU units. The package samples a whole batch
# of tasks at once as tensors of shape `(tasks, K, 1)`:

# %%
print("amplitude range", AMP_RANGE, " phase range", tuple(round(p, 4) for p in PHASE_RANGE),
      " input range", INPUT_RANGE)
demo = sample_sinusoid_tasks(5, K_SHOT, generator=generator)
print("x_support", tuple(demo.x_support.shape), " y_support", tuple(demo.y_support.shape),
      " x_query", tuple(demo.x_query.shape))

# %%
ax = plot_tasks(demo, num=5)
ax.set_title(f"Five tasks from the sinusoid family, each with its K={K_SHOT} support points (▲)")
ax.legend(fontsize=8, loc="lower left")
plt.show()

# %% [markdown]
# Ten points of a sine wave whose amplitude and phase you do not know: a network trained from
# scratch on them would fit the points and be wrong everywhere else. Knowing that *every* task is
# a sine wave with amplitude in $[0.1, 5]$ and phase in $[0, \pi]$ is what could make ten points
# enough. The question of this book is how a network can acquire that knowledge.

# %% [markdown]
# ## 3. The obvious approach: one network trained through all the tasks
#
# This book grew out of correcting one article, which we call **the seed article** from here on:
# a widely copied MAML tutorial whose "MAML" is an LSTM followed by a fully connected layer,
# trained by a single Adam optimizer. It trains its "meta-learner" like this: take **one network
# and one optimizer**, and run through the tasks one after another, taking an optimizer step on
# each task's $K$ points. Here is that loop, written out in full (on the paper's MLP; chapter 9
# returns to recurrent networks):

# %%
def train_through_tasks(model, num_tasks, *, k_shot, lr, steps_per_task, generator):
    """One network, one Adam optimizer, trained on one task after another. Returns a History."""
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    history = History()
    for t in trange(num_tasks, desc="one task at a time", mininterval=0.5):
        task = sample_sinusoid_tasks(1, k_shot, generator=generator)
        x, y = task.x_support[0], task.y_support[0]            # (K, 1) each
        for _ in range(steps_per_task):
            loss = F.mse_loss(model(x), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        history.iteration.append(t + 1)
        history.loss.append(loss.item())
    return history


# %%
torch.manual_seed(SEED)
plain_net = SinusoidMLP()
plain_history = train_through_tasks(plain_net, NUM_TRAIN_TASKS, k_shot=K_SHOT, lr=LR,
                                    steps_per_task=STEPS_PER_TASK, generator=generator)

# %% [markdown]
# Chapter 9 runs this loop again on an LSTM, through the package's tested copy,
# `mamlbook.train.train_through_tasks` (it takes the task sampler as an argument). From the same weights on
# the same tasks it takes exactly the same steps:

# %%
with torch.random.fork_rng():                     # leaves the notebook's random stream untouched
    ours, theirs = SinusoidMLP(), SinusoidMLP()
theirs.load_state_dict(ours.state_dict())
ours_history = train_through_tasks(ours, 5, k_shot=K_SHOT, lr=LR, steps_per_task=STEPS_PER_TASK,
                                   generator=torch.Generator().manual_seed(1))
check_generator = torch.Generator().manual_seed(1)
package_history = package_train_through_tasks(
    theirs, lambda: as_batch(sample_sinusoid_tasks(1, K_SHOT, generator=check_generator)), 5, lr=LR,
    steps_per_task=STEPS_PER_TASK, progress=False)
assert ours_history.loss == package_history.loss
assert all(torch.equal(p, q) for p, q in zip(ours.parameters(), theirs.parameters()))
print("mamlbook.train.train_through_tasks takes the same steps as the loop above")

# %%
ax = plot_learning_curve({"trained through the tasks": plain_history},
                         window=max(1, NUM_TRAIN_TASKS // 50), logy=False, ylabel="task MSE")
ax.set_title("Training through the tasks one after another")
plt.show()

# %% [markdown]
# The loss levels off far above zero: no single function fits tasks that disagree with each other.
# What has the network learned? There is no
# "task" input: for a given $x$ it must output one number, whatever the task. The number that
# minimises the expected squared error over all tasks is the **mean over tasks**,
#
# $$f^\star(x) = \mathbb{E}_{A,\varphi}\big[A \sin(x-\varphi)\big]
#   = \mathbb{E}[A]\cdot \frac{1}{\pi}\int_0^{\pi} \sin(x-\varphi)\,d\varphi
#   = \mathbb{E}[A]\cdot\frac{\cos(x-\pi) - \cos x}{\pi}
#   = -\frac{2\,\mathbb{E}[A]}{\pi}\cos x \approx -1.62\cos x,$$
#
# using that $A$ and $\varphi$ are independent and $\mathbb{E}[A] = (0.1 + 5)/2 = 2.55$.
# Because the phase covers only half a period, the mean task is **not** the zero function (it
# would be if $\varphi$ ranged over $[0, 2\pi]$). Let us draw the trained network over a few tasks,
# together with $f^\star$:

# %%
mean_amplitude = sum(AMP_RANGE) / 2


def mean_task(x):
    """f*(x) = E[A sin(x − φ)] = −(2 E[A] / π) cos x: the best single function for all tasks."""
    return -(2 * mean_amplitude / math.pi) * torch.cos(x)


# %%
ax = plot_tasks(demo, num=5, show_support=False, alpha=0.5)
xs_grid = torch.linspace(*INPUT_RANGE, 200)
ax.plot(xs_grid, mean_task(xs_grid), color="tab:gray", linewidth=6, alpha=0.5,
        label=r"mean task $-\frac{2E[A]}{\pi}\cos x$")
plot_model(plain_net, ax=ax, label="network trained through the tasks")
ax.set_title("The network predicts the mean task, whatever the task")
ax.legend(fontsize=8, loc="lower left")
plt.show()

# %% [markdown]
# Let us quantify it on the 600 test tasks of the official protocol (new tasks, never seen in
# training; $K$ support and $K$ query points each). We compare the network's query MSE *before any
# adaptation* with two fixed predictors: the all-zero function and the mean task $f^\star$.

# %%
test = eval_tasks(K_SHOT, NUM_EVAL_TASKS)                    # x_query: (600, K, 1)
with torch.no_grad():
    per_task_net = ((plain_net(test.x_query) - test.y_query) ** 2).mean(dim=(1, 2))   # (600,)
    per_task_zero = (test.y_query ** 2).mean(dim=(1, 2))
    per_task_mean = ((mean_task(test.x_query) - test.y_query) ** 2).mean(dim=(1, 2))
    grid = xs_grid.unsqueeze(-1)                                                       # (200, 1)
    net_on_grid = plain_net(grid)[:, 0]
    rms_net_minus_mean = (net_on_grid - mean_task(xs_grid)).pow(2).mean().sqrt().item()
    rms_mean = mean_task(xs_grid).pow(2).mean().sqrt().item()
    mean_abs_net = net_on_grid.abs().mean().item()

mse_net, mse_zero, mse_mean = (mean_ci95(v) for v in (per_task_net, per_task_zero, per_task_mean))
display(Markdown(markdown_table(
    ["predictor (no adaptation)", f"query MSE on {NUM_EVAL_TASKS} tasks, ± 95% CI"],
    [["all-zero function", format_ci(*mse_zero)],
     ["mean task $f^\\star(x) = -1.62\\cos x$", format_ci(*mse_mean)],
     ["network trained through the tasks", format_ci(*mse_net)]])))
print(f"mean |prediction| of the network on [-5, 5]: {mean_abs_net:.3f}")
print(f"RMS distance network − f*: {rms_net_minus_mean:.3f}   (RMS of f* itself: {rms_mean:.3f})")

# %% [markdown]
# The network is much closer to the mean task than to any particular task, and its error is about
# that of $f^\star$ — the best any single function can do. The checks below make these claims
# part of the run (they fail loudly if a change breaks them):

# %%
assert mse_net[0] < mse_zero[0] - 0.5, "the network should beat the all-zero predictor clearly"
assert abs(mse_net[0] - mse_mean[0]) < 0.5, "the network's error should be close to the mean task's"
assert rms_net_minus_mean < 0.5 * rms_mean, "the network should be close to the mean task f*"

# %% [markdown]
# ## 4. Does it adapt from K = 10 points?
#
# The network knows nothing about *which* task it faces; perhaps a little fine-tuning on the
# $K$ support points fixes that. Fine-tuning is plain gradient descent on the support loss,
# $\theta \leftarrow \theta - \alpha \nabla_\theta \mathcal{L}^{\text{support}}(\theta)$. Written
# out for one task:

# %%
def fine_tune(model, x_support, y_support, *, lr, steps):
    """Plain SGD on one task's support set; returns the adapted parameters as a name → tensor dict."""
    params = {k: v.detach().clone().requires_grad_() for k, v in model.named_parameters()}
    for _ in range(steps):
        prediction = torch.func.functional_call(model, params, (x_support,))
        loss = F.mse_loss(prediction, y_support)
        grads = torch.autograd.grad(loss, list(params.values()))
        params = {k: (p - lr * g).detach().requires_grad_() for (k, p), g in zip(params.items(), grads)}
    return params


x_s, y_s, x_q, y_q = test.task(0)
for steps in (0, 1, MAX_STEPS):
    adapted = fine_tune(plain_net, x_s, y_s, lr=FINE_TUNE_LR, steps=steps)
    with torch.no_grad():
        q_mse = F.mse_loss(torch.func.functional_call(plain_net, adapted, (x_q,)), y_q).item()
    print(f"test task 0, after {steps:2d} steps: query MSE {q_mse:.3f}")

# %% [markdown]
# The package's `adaptation_curve` does the same for all 600 tasks at once and records the query
# MSE after every step. We check it against our loop on task 0, then use it for the whole test set.
# Besides the paper's $\alpha = 0.01$ we give fine-tuning a fair chance with a step size tuned on
# *separate* tasks for ten steps, the step count this section judges it by (`tune_step_size`, as
# the paper does for its "pretrained" baseline; chapter 2 tunes one for every step count).

# %%
curve = adaptation_curve(plain_net, dict(plain_net.named_parameters()), test.x_support,
                         test.y_support, test.x_query, test.y_query,
                         inner_lr=FINE_TUNE_LR, max_steps=MAX_STEPS)     # (600, MAX_STEPS + 1)
assert abs(curve[0, -1].item() - q_mse) < 1e-5, "package and hand-written fine-tuning disagree"
plain_alpha = summarize(curve)
tuned_lr = tune_step_size(plain_net, K_SHOT)
plain_tuned = summarize(adaptation_curve(plain_net, dict(plain_net.named_parameters()),
                                         test.x_support, test.y_support, test.x_query,
                                         test.y_query, inner_lr=tuned_lr, max_steps=MAX_STEPS))
print(f"step size tuned on separate tasks: {tuned_lr}"
      + (" (the paper's α again)" if tuned_lr == FINE_TUNE_LR else ""))

# %%
curves = {f"pretrained, step={FINE_TUNE_LR} (paper's α)": plain_alpha}
if tuned_lr != FINE_TUNE_LR:
    curves[f"pretrained, step={tuned_lr} (tuned for {MAX_STEPS} steps)"] = plain_tuned
ax = plot_adaptation_curves({**curves, "all-zero function": mse_zero, "mean task f*": mse_mean})
ax.set_ylim(bottom=0)
ax.set_title(f"Fine-tuning the plain network from K={K_SHOT} points ({NUM_EVAL_TASKS} tasks)")
plt.show()

# %%
rows = [[name, *(format_ci(*res.at(s)) for s in (0, 1, MAX_STEPS))] for name, res in curves.items()]
display(Markdown(markdown_table(["fine-tuning step size", "0 steps", "1 step", f"{MAX_STEPS} steps"],
                                rows)))

# %% [markdown]
# Compare the last column with the zero and mean-task rows above: ten steps on ten points remove
# only part of the error. The pictures show why: the starting point is the mean task, and each
# gradient step bends it only a little towards the support points — the network has learned
# nothing about *how* tasks differ from each other.

# %%
fig, axes = plt.subplots(1, 3, figsize=(14, 3.6), sharey=True)
for i, ax in enumerate(axes):
    plot_adaptation(plain_net, test, i, inner_lr=tuned_lr, steps=(0, 1, MAX_STEPS), ax=ax,
                    color="tab:blue", title=f"test task {i}, step size {tuned_lr}")
axes[0].legend(fontsize=8)
fig.tight_layout()
plt.show()

# %%
best_after_10 = min(plain_alpha.at(MAX_STEPS)[0], plain_tuned.at(MAX_STEPS)[0])
assert best_after_10 > 0.25 * mse_zero[0], "plain training should adapt poorly from K=10 points"

# %% [markdown]
# ## 5. The same baseline from the package
#
# Taking one task per step is the seed article's loop; the paper's **pretrained** baseline, as
# the official code (cbfinn/maml) trains it, is the same idea with a batch of 25 tasks per Adam
# step (the code's `meta_batch_size` default; the paper does not state it) — less noisy
# gradients, same objective. The
# package's `train_pretrained` does exactly that, and the next chapter uses it as the baseline.
# It lands on the same mean task:

# %%
joint_net, joint_history = train_pretrained(SinusoidConfig(iterations=JOINT_ITERATIONS, seed=SEED))
with torch.no_grad():
    joint_rms = (joint_net(grid)[:, 0] - mean_task(xs_grid)).pow(2).mean().sqrt().item()
print(f"RMS distance joint-trained network − f*: {joint_rms:.3f}  (RMS of f*: {rms_mean:.3f})")

# %%
ax = plot_tasks(demo, num=5, show_support=False, alpha=0.4)
ax.plot(xs_grid, mean_task(xs_grid), color="tab:gray", linewidth=6, alpha=0.5, label="mean task f*")
plot_model(plain_net, ax=ax, label="one task per step (this chapter's loop)")
plot_model(joint_net, ax=ax, label="25 tasks per step (mamlbook.sinusoid.train_pretrained)",
           color="tab:blue", linestyle="--")
ax.set_title("Both ways of training on all tasks learn the mean task")
ax.legend(fontsize=8, loc="lower left")
plt.show()

# %%
assert joint_rms < 0.5 * rms_mean

# %% [markdown]
# ## 6. What is missing, and two corrections
#
# Training on all tasks asks the network for *one answer that is good on average*. Few-shot
# learning needs something else: a starting point from which *a few gradient steps on the support
# set* give a good answer for *each* task. MAML (next chapter) optimises exactly that: it
# differentiates the query loss **after** the inner gradient step(s) with respect to the starting
# point $\theta$,
#
# $$\min_\theta \sum_{\mathcal{T}_i} \mathcal{L}^{\text{query}}_{\mathcal{T}_i}
#   \big(\theta - \alpha \nabla_\theta \mathcal{L}^{\text{support}}_{\mathcal{T}_i}(\theta)\big).$$
#
# Two claims of the seed article need correcting here:
#
# 1. *"Training the network through the tasks one after another is meta-learning."* It is
#    multi-task training (the paper's **pretrained** baseline): nothing in the loop above ever
#    measures how well the network does *after* adapting to a task, so nothing rewards being easy
#    to adapt. We saw the consequence: it learns the mean task.
# 2. *"MAML updates the network with a (weighted) average of the task-adapted parameters."* It
#    does not. MAML takes a gradient step on $\theta$ using the gradient of the query losses of the
#    adapted parameters, differentiated *through* the inner update (a second-order term appears).
#    Moving $\theta$ towards an average of adapted parameters $\theta'_i$ is a different algorithm,
#    **Reptile** (Nichol, Achiam & Schulman, 2018), which we meet in a later chapter.
#    The MAML paper itself tested averaging in parameter space (App. C.1): 500 networks, each
#    trained on one task, their parameters averaged, then fine-tuned on 5 points. Its Table 2
#    (5-shot MSE after 1 / 5 / 10 steps) gives 4.19 / 3.85 / 3.69 for that average, 2.41 / 2.23 /
#    2.19 for pretraining on all tasks and 0.67 / 0.38 / 0.35 for MAML; in the paper's words,
#    "averaging in the parameter space (multi-task) performed worse than averaging in the output
#    space (pre-training on all tasks)". These are the paper's numbers, not this notebook's.

# %% [markdown]
# ## Summary
#
# - A **task** has a support set (to adapt on) and a query set (to be judged on); a meta-learner
#   is trained over a distribution of tasks to do well on new tasks after adapting.
# - The paper's sinusoid tasks: $y = A\sin(x-\varphi)$, $A\in[0.1, 5]$, $\varphi\in[0,\pi]$,
#   $x\in[-5, 5]$, with $K$ support points.
# - One network trained through all the tasks (one at a time, or 25 per step) converges to the
#   **mean task** $-\frac{2\mathbb{E}[A]}{\pi}\cos x$ — the best single function, not $0$, because
#   the phase covers half a period — and fine-tuning it on $K=10$ points helps little.
# - MAML optimises the starting point for the post-adaptation loss; averaging adapted parameters
#   is Reptile, not MAML.
#
# ## Exercises
#
# **Exercise 1 — the all-zero predictor in closed form.** Since
# $\varphi\sim\mathcal{U}[0,\pi]$ covers a full period of $\sin^2$, $\mathbb{E}[\sin^2(x-\varphi)]
# = 1/2$ for every $x$, so the all-zero predictor's MSE is $\mathbb{E}[A^2]/2$. Compute it for
# $A\sim\mathcal{U}[a,b]$, using $\mathbb{E}[A^2] = \frac{b^3-a^3}{3(b-a)}$.

# %%
def zero_predictor_mse(a, b):
    """Expected MSE of predicting 0 for y = A sin(x − φ), A ~ U[a, b], φ ~ U[0, π]."""
    ### BEGIN SOLUTION
    mean_a2 = (b ** 3 - a ** 3) / (3 * (b - a))
    return mean_a2 / 2
    ### END SOLUTION


# %%
closed_form_zero = zero_predictor_mse(*AMP_RANGE)
many = sample_sinusoid_tasks(20_000, 10, generator=torch.Generator().manual_seed(1))
monte_carlo_zero = (many.y_support ** 2).mean().item()
print(f"closed form {closed_form_zero:.4f}, Monte Carlo {monte_carlo_zero:.4f}, "
      f"600 test tasks {mse_zero[0]:.4f}, plain network {mse_net[0]:.4f}")
assert abs(closed_form_zero - monte_carlo_zero) < 0.05

# %% [markdown]
# **Exercise 2 — the mean task in closed form.** Show that the MSE of $f^\star$ is
# $\mathbb{E}[y^2] - \mathbb{E}_x[f^\star(x)^2]$, and compute it for $x\sim\mathcal{U}[-5,5]$
# (hint: $\cos^2 x = (1+\cos 2x)/2$ and $\frac{1}{10}\int_{-5}^{5}\cos 2x\,dx = \frac{\sin 10}{10}$).
# How much of the all-zero predictor's error does knowing the average task remove, and how close
# does the trained network come?

# %%
def mean_task_mse(a, b, x_low=-5.0, x_high=5.0):
    """Expected MSE of f*(x) = −(2 E[A]/π) cos x for the sinusoid family with A ~ U[a, b]."""
    ### BEGIN SOLUTION
    mean_a = (a + b) / 2
    width = x_high - x_low
    mean_cos2 = 0.5 + (math.sin(2 * x_high) - math.sin(2 * x_low)) / (4 * width)
    return zero_predictor_mse(a, b) - (2 * mean_a / math.pi) ** 2 * mean_cos2
    ### END SOLUTION


# %%
closed_form_mean = mean_task_mse(*AMP_RANGE)
monte_carlo_mean = ((mean_task(many.x_support) - many.y_support) ** 2).mean().item()
print(f"closed form {closed_form_mean:.4f}, Monte Carlo {monte_carlo_mean:.4f}, "
      f"plain network {mse_net[0]:.4f}")
assert abs(closed_form_mean - monte_carlo_mean) < 0.05

# %% [markdown]
# **Exercise 3 — change the task family.** Rerun the chapter with the phase drawn from
# $[0, 2\pi]$ instead (sample the tasks yourself: `sample_sinusoid_tasks` uses the paper's range).
# What does the network trained through the tasks predict now, and why? Then set
# `STEPS_PER_TASK = 20` in the parameters cell: does taking many steps on each task before moving
# on make the network better at new tasks, or only at the last one it saw?
