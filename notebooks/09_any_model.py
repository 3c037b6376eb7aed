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
# # Chapter 9 — Model-agnostic means any model: MAML on an LSTM
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/mamlbook/mamlbook/blob/main/notebooks/09_any_model.ipynb)
#
# The MAML paper calls its algorithm *model-agnostic*, "in the sense that it is compatible with
# any model trained with gradient descent" (Finn, Abbeel & Levine, 2017, abstract). Every chapter so
# far used a feed-forward network: an MLP or a convolutional network. This chapter takes the claim
# at its word and meta-trains a **recurrent** network — an LSTM followed by a linear layer — with
# the very same MAML code as chapter 2, not one line of it changed.
#
# **What you will learn**
#
# - a sequence task family whose targets are chapter 2's sinusoids, seen through a random walk, so
#   that the network has to *remember* something across time steps;
# - the LSTM's equations, written out once and checked equal to `torch.nn.LSTM`;
# - why the unchanged MAML code works on an LSTM, and the proof: the second-order meta-gradient
#   checked against finite differences in float64, and two LSTM implementations (`nn.LSTM` looped
#   over tasks, a hand-written LSTM batched with `vmap`) giving the same meta-gradient — at very
#   different speeds;
# - MAML against three baselines on the LSTM: the same network from its random initialisation, one
#   pretrained on all tasks jointly, and one trained by the seed article's loop (chapter 1), with 95%
#   confidence intervals and paired tests;
# - the one thing that *does* break on a GPU — cuDNN's LSTM has no double backward — why, and the
#   fix `mamlbook` applies (only the inner loop leaves cuDNN), with a recorded H200 measurement.
#
# Every number and figure below comes from the runs in this notebook, except section 5's GPU table,
# which is loaded from a committed file and labelled with the card and the date it was recorded on.

# %%
# Google Colab only: install the book's package from its repository (torch is already there).
import subprocess, sys
if "google.colab" in sys.modules:
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps",
                    "git+https://github.com/mamlbook/mamlbook"], check=True)

# %%
import copy
import json
import math
import os
import platform
import statistics
import time

import matplotlib.pyplot as plt
import torch
from IPython.display import Markdown, display
from torch import nn

import mamlbook.measure.lstm_kernels as rnn_check
from mamlbook.config import banner, fast_mode, pick
from mamlbook.evaluate import adaptation_curve, mean_ci95, summarize
from mamlbook.maml import meta_backward, meta_loss, resolve_batched
from mamlbook.plotting import (adapted_params, format_ci, markdown_table, plot_adaptation_curves,
                               plot_learning_curve, predict)
from mamlbook.rnn import needs_native_rnn
from mamlbook.runs import find_recorded, record_full_run
from mamlbook.sequence import (LSTMRegressor, WalkConfig, sample_walk_tasks, walk_batches, walk_end,
                               walks_ending_at)
from mamlbook.sinusoid import EVAL_SEED, STEP_SIZE_SEED, tune_step_sizes, tuned_curves
from mamlbook.tasks import sinusoid
from mamlbook.train import as_batch, meta_train, pretrain, train_through_tasks

banner("Chapter 9");

# %% [markdown]
# All the knobs of this chapter. The MAML settings are chapter 2's sinusoid settings, the defaults
# of `mamlbook.sequence.WalkConfig`: K = 10 and one inner step at α = 0.01 from the paper (§5.1),
# meta-batch 25 and Adam's β = 1e-3 from the official code (cbfinn/maml's defaults; the paper does not
# state them). The number of iterations is ours (the official code trains its MLP for 70,000).
# `pick(full, fast)` gives the second value when `MAMLBOOK_FAST=1` (a shortened run
# for CI; its numbers are **not** converged results). The cell is tagged `parameters`, so papermill
# can override any of them.

# %% tags=["parameters"]
SEED = 0
K_SHOT = 10                                # K support (and K query) walks per task (paper: K = 10)
META_BATCH_SIZE = 25                       # tasks per meta-update (official code's default)
INNER_LR = 0.01                            # α (paper §5.1)
INNER_STEPS = 1                            # inner steps during meta-training (paper: 1)
META_LR = 1e-3                             # β, Adam's step size (official code's default)
SEQ_LEN = 5                                # L: a walk is its start and 4 moves
HIDDEN = 40                                # LSTM width, as the paper's MLP's hidden layers
ITERATIONS = pick(20_000, 1_000)           # MAML meta-training iterations (WalkConfig.iterations)
PRETRAIN_ITERATIONS = pick(20_000, 1_000)  # the pretrained baseline: as many Adam steps
SEED_ARTICLE_STEPS = pick(20_000, 1_000)   # the seed article's loop: as many Adam steps, one task each
NUM_EVAL_TASKS = pick(600, 200)            # meta-test tasks (official code: 600)
NUM_TUNING_TASKS = pick(200, 100)          # separate tasks to tune the baselines' fine-tuning step
MAX_STEPS = 10                             # gradient steps at meta-test time (0–10, as chapter 2)
TIMED_STEPS = pick(30, 5)                  # meta-steps timed per LSTM implementation (section 3)

# %%
cfg = WalkConfig(k_shot=K_SHOT, meta_batch_size=META_BATCH_SIZE, inner_lr=INNER_LR,
                 inner_steps=INNER_STEPS, meta_lr=META_LR, iterations=ITERATIONS, seq_len=SEQ_LEN,
                 hidden=HIDDEN, seed=SEED)
hardware = f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} thread(s))"
run_start, load_at_start = time.perf_counter(), os.getloadavg()[0]   # for the full run's record (section 4's end)
if fast_mode():
    print(f"FAST MODE: {ITERATIONS:,} meta-training iterations instead of {WalkConfig().iterations:,}, "
          f"{NUM_EVAL_TASKS} test tasks instead of 600. The numbers and figures below come from this "
          "shortened run and are not converged results.")
else:
    print(f"Full run: {ITERATIONS:,} iterations, {NUM_EVAL_TASKS} test tasks.")
print("torch", torch.__version__, "|", hardware)

# %% [markdown]
# ## 1. A task family that needs memory: sinusoid walks
#
# A task is chapter 2's sinusoid, with the paper's ranges:
#
# $$\mathcal{T} = (A, \varphi), \qquad A \sim U[0.1, 5], \quad \varphi \sim U[0, \pi], \qquad
#   f_{\mathcal{T}}(x) = A \sin(x - \varphi).$$
#
# What changes is the input. One example is a **walk** along the $x$ axis, given to the network as a
# sequence of $L = 5$ numbers: the start $x_0$, then $L-1$ moves,
#
# $$w = (x_0, \Delta_1, \dots, \Delta_{L-1}), \qquad \Delta_t \sim U[-0.5, 0.5], \qquad
#   x_{\text{end}} = x_0 + \sum_{t=1}^{L-1} \Delta_t, \qquad y = A \sin(x_{\text{end}} - \varphi).$$
#
# The end point is drawn first, $x_{\text{end}} \sim U[-5, 5]$ (the paper's input range), then the
# moves, and the start is set to $x_0 = x_{\text{end}} - \sum_t \Delta_t$. So the *targets* are exactly
# chapter 2's regression problem, but the network is never shown the position it has to evaluate the
# sine at: it reads the walk one number at a time and must **add up** the moves in its state before
# mapping the sum through the task's sine. What differs between tasks, $A$ and $\varphi$, can only be
# learnt from the task's $K = 10$ support walks — which is MAML's inner loop's job.
#
# `mamlbook.sequence.sample_walk_tasks` draws a meta-batch; the inputs are sequences now:

# %%
demo = sample_walk_tasks(2, K_SHOT, generator=torch.Generator().manual_seed(SEED))
print("x_support", tuple(demo.x_support.shape), "(tasks, K, L, 1)   y_support",
      tuple(demo.y_support.shape), "(tasks, K, 1)")
print("first walk of task 0:", [round(v, 2) for v in demo.x_support[0, 0, :, 0].tolist()],
      f"→ ends at {walk_end(demo.x_support[0, 0]).item():.2f}, target {demo.y_support[0, 0].item():.2f}")

# %% [markdown]
# The figure shows the two tasks. Below, each support walk climbs from its start (step 0) to its end
# (step 4); above, the task's sine, with each walk's target at its end point in the same colour.

# %%
fig, axes = plt.subplots(2, 2, figsize=(12, 6.5), sharex=True, gridspec_kw={"height_ratios": [1, 1.1]})
grid = torch.linspace(-7, 7, 300).unsqueeze(-1)                                  # (300, 1)
for col in range(2):
    top, bottom = axes[0, col], axes[1, col]
    top.plot(grid[:, 0], sinusoid(grid, demo.amplitude[col], demo.phase[col])[:, 0], color="tab:red",
             label=f"A={demo.amplitude[col]:.2f}, φ={demo.phase[col]:.2f}")
    top.axvspan(-7, -5, color="0.9")
    top.axvspan(5, 7, color="0.9")
    for j in range(K_SHOT):
        positions = demo.x_support[col, j, :, 0].cumsum(0)                        # x after each step
        (line,) = bottom.plot(positions, range(SEQ_LEN), marker="o", markersize=3, linewidth=1)
        bottom.scatter(positions[-1], SEQ_LEN - 1, marker="^", s=50, color=line.get_color(), zorder=3)
        top.scatter(positions[-1], demo.y_support[col, j, 0], marker="^", s=50, color=line.get_color(),
                    zorder=3)
    top.set(title=f"task {col}: targets at the walks' end points", ylabel="y")
    top.legend(fontsize=8, loc="upper right")
    bottom.set(xlabel="position x (grey: outside the end points' range [−5, 5])",
               ylabel="step t of the walk", yticks=range(SEQ_LEN))
fig.tight_layout()
plt.show()

# %% [markdown]
# ## 2. The LSTM, written out
#
# A long short-term memory layer (Hochreiter & Schmidhuber, 1997, with the forget gate of Gers et
# al., 2000) keeps two vectors of width $H$: a hidden state $h_t$ and a cell state $c_t$. With
# $h_0 = c_0 = 0$, at each step $t = 1, \dots, L$ it reads $x_t$ and computes, exactly as PyTorch's
# `nn.LSTM` documents:
#
# $$\begin{aligned}
# i_t &= \sigma(W_{ii} x_t + b_{ii} + W_{hi} h_{t-1} + b_{hi}) &&\text{input gate}\\
# f_t &= \sigma(W_{if} x_t + b_{if} + W_{hf} h_{t-1} + b_{hf}) &&\text{forget gate}\\
# g_t &= \tanh(W_{ig} x_t + b_{ig} + W_{hg} h_{t-1} + b_{hg}) &&\text{candidate}\\
# o_t &= \sigma(W_{io} x_t + b_{io} + W_{ho} h_{t-1} + b_{ho}) &&\text{output gate}\\
# c_t &= f_t \odot c_{t-1} + i_t \odot g_t\\
# h_t &= o_t \odot \tanh(c_t)
# \end{aligned}$$
#
# Our regressor reads the whole walk and predicts with a linear layer on the last hidden state,
# $\hat y = w^\top h_L + b$. The cell state is the memory: with $f_t \approx 1$ and $i_t g_t$ a multiple
# of the move $x_t$, $c_t$ is a running sum — the end point this task family asks for.
#
# PyTorch stacks the four gates' matrices into `weight_ih_l0` $= [W_{ii}; W_{if}; W_{ig}; W_{io}]$
# ($4H \times D$), and likewise `weight_hh_l0` ($4H \times H$), `bias_ih_l0` and `bias_hh_l0` ($4H$;
# two biases where one would do, as cuDNN has them). One step, written out:

# %%
def lstm_step(x_t, h, c, weight_ih, weight_hh, bias_ih, bias_hh):
    """One LSTM step: x_t (B, D), h and c (B, H) → the new (h, c). Gate order (i, f, g, o), as nn.LSTM."""
    gates = x_t @ weight_ih.T + bias_ih + h @ weight_hh.T + bias_hh     # (B, 4H)
    i, f, g, o = gates.chunk(4, dim=-1)                                 # (B, H) each
    i, f, g, o = torch.sigmoid(i), torch.sigmoid(f), torch.tanh(g), torch.sigmoid(o)
    c = f * c + i * g
    h = o * torch.tanh(c)
    return h, c


# %% [markdown]
# A layer runs the step along the sequence, starting from zero states:

# %%
def lstm_forward(x, weight_ih, weight_hh, bias_ih, bias_hh):
    """Run the LSTM over x (B, L, D) from h = c = 0; return the hidden states (B, L, H)."""
    batch, steps, _ = x.shape
    hidden = weight_hh.shape[1]
    h = x.new_zeros(batch, hidden)                                      # (B, H)
    c = x.new_zeros(batch, hidden)                                      # (B, H)
    outputs = []
    for t in range(steps):
        h, c = lstm_step(x[:, t], h, c, weight_ih, weight_hh, bias_ih, bias_hh)
        outputs.append(h)
    return torch.stack(outputs, dim=1)                                  # (B, L, H)


# %% [markdown]
# Is it PyTorch's LSTM? Same weights, same random sequences, float64 so that rounding cannot hide a
# difference:

# %%
torch.manual_seed(SEED)
reference = nn.LSTM(1, 8, batch_first=True).double()
x = torch.randn(6, SEQ_LEN, 1, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
ours = lstm_forward(x, reference.weight_ih_l0, reference.weight_hh_l0, reference.bias_ih_l0,
                    reference.bias_hh_l0)
theirs, _ = reference(x)
print(f"max |lstm_forward − nn.LSTM| = {(ours - theirs).abs().max().item():.1e}")
torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-14)

# %% [markdown]
# From here on the book uses the package's versions of the same equations:
# `mamlbook.sequence.HandLSTM` (the loop above as an `nn.Module`, with `nn.LSTM`'s parameter names,
# shapes and gate order) and `LSTMRegressor(lstm="torch" | "hand")`, an LSTM followed by
# `nn.Linear(H, 1)` on the last hidden state. Because the names match, one implementation's weights
# load into the other, and both give the same predictions:

# %%
torch.manual_seed(SEED)
torch_lstm = LSTMRegressor(hidden=HIDDEN, lstm="torch")
hand_lstm = LSTMRegressor(hidden=HIDDEN, lstm="hand")
hand_lstm.load_state_dict(torch_lstm.state_dict())
with torch.no_grad():
    gap = (torch_lstm(demo.x_support[0]) - hand_lstm(demo.x_support[0])).abs().max().item()
display(Markdown(markdown_table(["parameter", "shape"],
                                [[f"`{k}`", tuple(v.shape)] for k, v in torch_lstm.named_parameters()])))
print(f"{sum(p.numel() for p in torch_lstm.parameters()):,} parameters; "
      f"max |nn.LSTM − HandLSTM| prediction gap (float32): {gap:.1e}")
assert gap < 1e-5

# %% [markdown]
# ## 3. MAML, unchanged
#
# Nothing in chapter 2's MAML knows what the model is. `mamlbook.maml.adapt` runs
# `functional_call(model, params, (x_support,))`, takes `torch.autograd.grad(..., create_graph=True)`
# and steps $\theta' = \theta - \alpha\nabla_\theta\mathcal{L}^{\text{support}}(\theta)$; the outer loss is the
# query loss at $\theta'$. All that requires of the model is that its operations can be
# differentiated **twice** — the meta-gradient
# $(I - \alpha\nabla^2\mathcal{L}^{\text{support}})\nabla\mathcal{L}^{\text{query}}(\theta')$ contains the
# support loss's Hessian. An LSTM is matrix products, sigmoids, tanh and products: all twice
# differentiable. So the same calls run it.
#
# There is one difference in *how fast*. Chapter 4 batched the tasks of a meta-batch with
# `torch.func.vmap`. `vmap` needs a batching rule for every operation, and PyTorch's fused LSTM
# kernel has none:

# %%
batch = sample_walk_tasks(META_BATCH_SIZE, K_SHOT, generator=torch.Generator().manual_seed(123))
data = (batch.x_support, batch.y_support, batch.x_query, batch.y_query)
try:
    meta_loss(torch_lstm, dict(torch_lstm.named_parameters()), *data, inner_lr=INNER_LR, batched=True)
except RuntimeError as err:
    print("vmap over nn.LSTM:", str(err).splitlines()[0])
print("batched='auto' picks vmap for nn.LSTM:", resolve_batched(torch_lstm, "auto"),
      "| for HandLSTM:", resolve_batched(hand_lstm, "auto"))

# %% [markdown]
# With `batched="auto"` (the default everywhere) `mamlbook` therefore **loops over the tasks** for a
# model with an `nn.LSTM`, `nn.GRU` or `nn.RNN` layer, and batches the hand-written LSTM — made of
# ordinary operations — with `vmap`. Both must give the same meta-gradient. We check that in float64
# on a meta-batch of 25 tasks, and against something that depends on no autograd code at all:
# central finite differences of the outer loss along a random direction $v$.

# %%
torch_64 = copy.deepcopy(torch_lstm).double()
hand_64 = copy.deepcopy(hand_lstm).double()
params_64 = {k: v.detach().clone().requires_grad_() for k, v in torch_64.named_parameters()}
data_64 = tuple(t.double() for t in data)

looped = torch.autograd.grad(meta_loss(torch_64, params_64, *data_64, inner_lr=INNER_LR, batched=False),
                             list(params_64.values()))
vmapped = torch.autograd.grad(meta_loss(hand_64, params_64, *data_64, inner_lr=INNER_LR, batched=True),
                              list(params_64.values()))
first_order = torch.autograd.grad(meta_loss(hand_64, params_64, *data_64, inner_lr=INNER_LR,
                                            first_order=True), list(params_64.values()))
flat = lambda grads: torch.cat([g.flatten() for g in grads])            # noqa: E731
g_loop, g_vmap, g_fo = flat(looped), flat(vmapped), flat(first_order)
loop_vs_vmap = ((g_loop - g_vmap).norm() / g_loop.norm()).item()
hessian_share = ((g_loop - g_fo).norm() / g_loop.norm()).item()
print(f"‖nn.LSTM loop − HandLSTM vmap‖ / ‖g‖ = {loop_vs_vmap:.1e}")
print(f"‖second-order − first-order‖ / ‖g‖    = {hessian_share:.1e}   (the Hessian term's share)")
assert loop_vs_vmap < 1e-10
assert hessian_share > 1e-4

# %%
g = torch.Generator().manual_seed(7)
direction = {k: torch.randn(v.shape, dtype=torch.float64, generator=g) for k, v in params_64.items()}


def outer_loss_at(shift):
    """The outer loss at θ + shift·v (a fresh leaf, so that the inner gradient can be taken)."""
    shifted = {k: (p.detach() + shift * direction[k]).requires_grad_() for k, p in params_64.items()}
    return meta_loss(hand_64, shifted, *data_64, inner_lr=INNER_LR).item()


eps = 1e-6
finite_difference = (outer_loss_at(eps) - outer_loss_at(-eps)) / (2 * eps)
analytic = sum((gk * direction[k]).sum() for gk, k in zip(looped, params_64)).item()
fd_error = abs(finite_difference - analytic) / abs(analytic)
print(f"directional derivative: autograd {analytic:.10f}, finite differences {finite_difference:.10f}, "
      f"relative error {fd_error:.1e}")
assert fd_error < 1e-6

# %% [markdown]
# Both hold: the unchanged MAML computes the exact second-order meta-gradient of an LSTM, by either
# route. Now the speed of each route: the median time of one meta-step (`meta_backward`, as
# `meta_train` calls it: the outer loss and its gradient for 25 tasks) on this machine, in float32.

# %%
def ms_per_meta_step(model, batched, steps=TIMED_STEPS):
    """Median milliseconds of one meta_backward on the 25-task meta-batch, after two warm-up steps."""
    params = dict(model.named_parameters())
    times = []
    for i in range(steps + 2):
        model.zero_grad(set_to_none=True)
        start = time.perf_counter()
        meta_backward(model, params, *data, inner_lr=INNER_LR, batched=batched)
        if i >= 2:
            times.append(1000 * (time.perf_counter() - start))
    return statistics.median(times)


timings = {"nn.LSTM, tasks looped": ms_per_meta_step(torch_lstm, "auto"),
           "HandLSTM, tasks looped": ms_per_meta_step(hand_lstm, False),
           "HandLSTM, tasks batched (vmap)": ms_per_meta_step(hand_lstm, "auto")}
for name, ms in timings.items():
    print(f"{name:>32}: {ms:7.1f} ms per meta-step")

# %%
fig, ax = plt.subplots(figsize=(7.5, 2.6))
names = list(timings)
ax.barh(names, [timings[n] for n in names], color=["tab:gray", "tab:blue", "tab:green"])
for i, n in enumerate(names):
    ax.text(timings[n], i, f" {timings[n]:.0f} ms", va="center")
ax.invert_yaxis()
ax.set_xlim(0, 1.2 * max(timings.values()))
ax.set(xlabel="milliseconds per meta-step (median; lower is better)",
       title=f"Second-order MAML, 25 tasks, LSTM 1→{HIDDEN}→1 — {hardware}")
plt.show()
speedup = timings["nn.LSTM, tasks looped"] / timings["HandLSTM, tasks batched (vmap)"]
written_out = timings["nn.LSTM, tasks looped"] / timings["HandLSTM, tasks looped"]
batching = timings["HandLSTM, tasks looped"] / timings["HandLSTM, tasks batched (vmap)"]
print(f"HandLSTM with vmap is {speedup:.1f}× faster than nn.LSTM looped over tasks, here: writing the LSTM out "
      f"gives {written_out:.2f}×, batching it over the tasks {batching:.1f}× — "
      + ("the batching is what counts." if batching > written_out else "the implementation counts more."))

# %% [markdown]
# The first two bars separate the two effects: `nn.LSTM` against the same equations written out,
# both looped over the tasks; then the written-out LSTM batched (the line above says which effect
# counted on your machine). Why batching can matter so much here: this
# network is tiny (160 gate rows, walks of 5 steps), so each operation does little arithmetic and
# much of the time goes into running operations at all; the loop runs every operation once **per
# task**, 25 times over, while `vmap` runs it once for all 25 tasks with a batch dimension. We
# meta-train the hand-written LSTM below; its weights are `nn.LSTM` weights, so the result loads into
# `LSTMRegressor(lstm="torch")` unchanged.
#
# ## 4. Meta-training the LSTM, and three baselines
#
# The call is `mamlbook.train.meta_train`, the loop inside chapter 2's `train_maml`, with a task
# source for walks (`walk_batches`: a fresh meta-batch of 25 tasks per iteration) and chapter 2's
# sinusoid settings: $K = 10$, one inner step at $\alpha = 0.01$ (the paper's), Adam at
# $\beta = 10^{-3}$ (the official code's). We keep a copy of the initial weights: that is the
# first baseline.

# %%
torch.manual_seed(SEED)
maml_model = LSTMRegressor(hidden=HIDDEN, lstm="hand")
random_init_model = copy.deepcopy(maml_model)            # baseline 1: the same LSTM, never trained
maml_history = meta_train(maml_model, walk_batches(cfg, torch.Generator().manual_seed(SEED)),
                          iterations=ITERATIONS, inner_lr=INNER_LR, inner_steps=INNER_STEPS,
                          meta_lr=META_LR, desc="MAML, LSTM")
print(f"MAML: {ITERATIONS:,} iterations in {maml_history.wall_time_s:.0f} s "
      f"({1000 * maml_history.wall_time_s / max(ITERATIONS, 1):.1f} ms per iteration)")

# %% [markdown]
# The second baseline is the paper's **pretrained** network: the same LSTM, from the same initial
# weights, trained on all tasks jointly — each iteration fits the support walks of a fresh meta-batch
# with Adam (`mamlbook.train.pretrain`, as the official code's `pretrain_op`). It learns the best single
# answer for all tasks at once, the mean task (chapter 1), and is fine-tuned at test time.

# %%
pretrained_model = copy.deepcopy(random_init_model)      # baseline 2: trained on all tasks jointly
pretrained_history = pretrain(pretrained_model, walk_batches(cfg, torch.Generator().manual_seed(SEED)),
                              iterations=PRETRAIN_ITERATIONS, lr=META_LR)
print(f"pretrained: {PRETRAIN_ITERATIONS:,} iterations in {pretrained_history.wall_time_s:.0f} s")

# %% [markdown]
# The third baseline is **the seed article's loop** (chapter 1, section 3, introduced it): the widely
# copied tutorial whose "MAML" is an LSTM followed by a fully connected layer — this chapter's very
# model — trained by a single Adam optimizer that takes one step on each task's $K$ points, task after
# task. There is no inner loop and no outer loop, so nothing in it measures how well the network does
# *after* adapting: it is joint training, one task per step. Here is that loop, exactly, on the same
# LSTM from the same initial weights, with as many Adam steps as MAML has meta-iterations (so it sees
# 1/25 of MAML's tasks; the pretrained baseline above is the same idea with 25 tasks per step). Chapter 1
# wrote the loop out; this is the package's tested copy, `mamlbook.train.train_through_tasks`:

# %%
seed_model = copy.deepcopy(random_init_model)            # baseline 3: the seed article's loop
seed_generator = torch.Generator().manual_seed(SEED)
seed_history = train_through_tasks(seed_model, lambda: as_batch(sample_walk_tasks(1, K_SHOT, seq_len=SEQ_LEN,
                                                                                 generator=seed_generator)),
                                   SEED_ARTICLE_STEPS, lr=META_LR, desc="seed article's loop")
print(f"seed article's loop: {SEED_ARTICLE_STEPS:,} tasks, one Adam step each, in {seed_history.wall_time_s:.0f} s")

# %%
fig, axes = plt.subplots(1, 3, figsize=(16, 3.8))
plot_learning_curve({"MAML": maml_history}, window=max(1, ITERATIONS // 40), ax=axes[0],
                    ylabel="query MSE after 1 inner step")
plot_learning_curve({"pretrained": pretrained_history}, window=max(1, PRETRAIN_ITERATIONS // 40),
                    ax=axes[1], ylabel="support MSE, no adaptation")
plot_learning_curve({"seed article's loop": seed_history}, window=max(1, SEED_ARTICLE_STEPS // 40),
                    ax=axes[2], ylabel="task MSE, no adaptation")
fast = " (FAST MODE)" if fast_mode() else ""
axes[0].set_title("MAML on the LSTM: the outer loss" + fast)
axes[1].set_title("pretrained LSTM: the joint-training loss" + fast)
axes[2].set_title("the seed article's loop: one task per step" + fast)
fig.tight_layout()
plt.show()

# %% [markdown]
# ### Meta-test
#
# As in chapter 2: new tasks (600 in a full run, drawn with the same seed as chapter 2's, so the
# amplitudes and phases are new to every model), $K = 10$ support and $K$ query walks each; adapt with
# plain gradient descent and record the query MSE after $0, 1, \dots, 10$ steps; report the mean over
# tasks with a 95% confidence interval $1.96\,\sigma/\sqrt{n}$. MAML adapts at its training
# $\alpha = 0.01$. Each baseline gets, for each number of steps $s$, the step size among 0.001 … 0.3
# that works best for it after $s$ steps, tuned on *separate* tasks, never the test tasks (the paper's
# "automatically tuned step size"; `tune_step_sizes`, as in chapter 2). All four models are tested on
# the same tasks, so they are compared through the CI of their per-task differences (paired).

# %%
test_tasks = sample_walk_tasks(NUM_EVAL_TASKS, K_SHOT, generator=torch.Generator().manual_seed(EVAL_SEED))
tuning_tasks = sample_walk_tasks(NUM_TUNING_TASKS, K_SHOT,
                                 generator=torch.Generator().manual_seed(STEP_SIZE_SEED))
models = {"MAML": maml_model, "seed article's loop": seed_model, "pretrained": pretrained_model,
          "random init": random_init_model}
STEPS = range(1, MAX_STEPS + 1)
step_sizes = {name: ({s: INNER_LR for s in STEPS} if name == "MAML"
                     else tune_step_sizes(model, K_SHOT, STEPS, tasks=tuning_tasks))
              for name, model in models.items()}
curves = {name: tuned_curves(model, K_SHOT, step_sizes[name], tasks=test_tasks)      # (tasks, MAX_STEPS + 1)
          for name, model in models.items()}
results = {name: summarize(c) for name, c in curves.items()}
print("fine-tuning step size tuned for 1 / 10 steps:",
      {name: (lr[1], lr[MAX_STEPS]) for name, lr in step_sizes.items()})

# %%
ax = plot_adaptation_curves({name if name == "MAML" else f"{name}, step tuned per step count": r
                             for name, r in results.items()},
                            title=f"LSTM, K={K_SHOT}: meta-test MSE on {NUM_EVAL_TASKS} tasks (shaded: 95% CI)"
                            + (" — FAST MODE" if fast_mode() else ""))
ax.set_ylim(bottom=0)
plt.show()

# %%
note = (f"*FAST MODE: {ITERATIONS:,} iterations and {NUM_EVAL_TASKS} test tasks — a shortened run.*\n\n"
        if fast_mode() else "")
display(Markdown(note + f"Query MSE, mean ± 95% CI (median) on {NUM_EVAL_TASKS} test tasks. {hardware}.\n\n"
                 + markdown_table(["model", "step size (for 1 / 10 steps)", "0 steps", "1 step", f"{MAX_STEPS} steps"],
                                  [[name, f"{step_sizes[name][1]} / {step_sizes[name][MAX_STEPS]}",
                                    *(f"{format_ci(*r.at(s))} ({r.median[s]:.2f})" for s in (0, 1, MAX_STEPS))]
                                   for name, r in results.items()])))

# %% [markdown]
# The check below is part of the run: MAML after one step must beat every baseline after one step
# (each at the step size tuned for one step) — the 95% CI of the per-task differences must lie below
# zero — and one step must improve on none. The table under it gives the paired differences, and the
# sentences after it are generated from them.

# %%
paired = {name: {s: mean_ci95(curves["MAML"][:, s] - curves[name][:, s]) for s in (0, 1, MAX_STEPS)}
          for name in models if name != "MAML"}
for name in paired:
    d, d_ci = paired[name][1]
    assert d + d_ci < 0, f"MAML − {name} after one step = {d:.3f} ± {d_ci:.3f}, not below zero"
assert results["MAML"].mean[1] < results["MAML"].mean[0]
display(Markdown(note + f"MAML − baseline, per-task query MSE differences, mean ± 95% CI ({NUM_EVAL_TASKS} "
                 "paired tasks):\n\n" + markdown_table(
                     ["baseline", "0 steps", "1 step", f"{MAX_STEPS} steps"],
                     [[name, *(format_ci(*paired[name][s], 3) for s in (0, 1, MAX_STEPS))] for name in paired])))

# %%
def compared(name, s):
    d, d_ci = paired[name][s]
    if not (math.isfinite(d) and math.isfinite(d_ci)):
        return "not comparable by the mean (a diverged task)"
    return ("MAML better" if d + d_ci < 0 else f"{name} better" if d - d_ci > 0 else "no significant difference")


SEED_NAME = "seed article's loop"
random_gain = 1 - results["random init"].median[MAX_STEPS] / results["random init"].median[0]
display(Markdown(note + "\n".join([
    f"- Before adaptation (0 steps), MAML against the pretrained network: {compared('pretrained', 0)}; "
    "MAML's starting point is not trained to be a good average predictor — what it buys is the first step.",
    f"- After one step: MAML {format_ci(*results['MAML'].at(1))}, the seed article's loop "
    f"{format_ci(*results[SEED_NAME].at(1))}, the pretrained network {format_ci(*results['pretrained'].at(1))}, "
    f"the untrained LSTM {format_ci(*results['random init'].at(1))} (every paired difference below zero: "
    "asserted above).",
    f"- After {MAX_STEPS} steps: against the seed article's loop, {compared(SEED_NAME, MAX_STEPS)}; against the "
    f"pretrained network, {compared('pretrained', MAX_STEPS)}.",
    f"- The untrained LSTM's median task improves by {100 * random_gain:.0f}% in {MAX_STEPS} steps: from random "
    "weights, a few small gradient steps on 10 walks cannot build the counting and the sine that MAML and "
    "joint training learnt from thousands of meta-batches."])))

# %% [markdown]
# What adaptation looks like, on the first two test tasks. The network's input is a walk, not a
# position, so to draw its prediction against $x$ we feed it, for each $x$ on a grid, a random walk
# that **ends** at $x$ (`walks_ending_at`). Each point of a curve is a different walk, so the wiggles
# show how exactly the LSTM adds up the moves; the triangles are the task's $K$ support walks, at
# their end points.

# %%
x_grid = torch.linspace(-5, 5, 150).unsqueeze(-1)                                  # (150, 1)
grid_walks = walks_ending_at(x_grid, SEQ_LEN, generator=torch.Generator().manual_seed(SEED))  # (150, L, 1)
fig, axes = plt.subplots(2, 4, figsize=(20, 7.5), sharex=True, sharey="row")
for task, row in enumerate(axes):
    xs, ys, _, _ = test_tasks.task(task)
    for ax, (name, model) in zip(row, models.items()):
        ax.plot(x_grid[:, 0], sinusoid(x_grid, test_tasks.amplitude[task], test_tasks.phase[task])[:, 0],
                color="tab:red", linewidth=2, label="ground truth")
        lr = step_sizes[name]                      # 1 step at the size tuned for 1, 10 at the one tuned for 10
        thetas = {**adapted_params(model, xs, ys, inner_lr=lr[1], steps=(0, 1)),
                  **adapted_params(model, xs, ys, inner_lr=lr[MAX_STEPS], steps=(MAX_STEPS,))}
        for shade, (steps, theta) in zip((0.35, 0.65, 1.0), thetas.items()):
            label = "before adaptation" if steps == 0 else f"after {steps} step{'s' * (steps > 1)}"
            ax.plot(x_grid[:, 0], predict(model, grid_walks, theta)[:, 0], color="black", alpha=shade,
                    linestyle=":" if steps == 0 else "-", label=label)
        ax.scatter(walk_end(xs)[:, 0], ys[:, 0], marker="^", color="tab:purple", s=45, zorder=3,
                   label="support walks' ends")
        ax.set_title(f"{name} (steps {lr[1]} / {lr[MAX_STEPS]}), test task {task}", fontsize=10)
    row[0].set_ylabel("y")
for ax in axes[1]:
    ax.set_xlabel("end point of the walk x")
axes[0, 0].legend(fontsize=8)
fig.suptitle("Predictions for walks ending at x, before and after adaptation"
             + (" — FAST MODE, shortened run" if fast_mode() else ""), y=1.02)
fig.tight_layout()
plt.show()

# %% [markdown]
# The weights MAML found are plain `nn.LSTM` weights: loaded into the `nn.LSTM` regressor (the
# one a GPU would run on cuDNN), the adapted predictions on the test tasks are the same.

# %%
as_torch = LSTMRegressor(hidden=HIDDEN, lstm="torch")
as_torch.load_state_dict(maml_model.state_dict())
few = sample_walk_tasks(5, K_SHOT, generator=torch.Generator().manual_seed(EVAL_SEED))   # test tasks 0–4
curves = [adaptation_curve(m, dict(m.named_parameters()), few.x_support, few.y_support, few.x_query,
                           few.y_query, inner_lr=INNER_LR, max_steps=2) for m in (maml_model, as_torch)]
print("query MSE of test tasks 0–4 after 0, 1, 2 steps, HandLSTM:\n", curves[0])
torch.testing.assert_close(curves[0], curves[1], rtol=1e-4, atol=1e-5)
print("nn.LSTM with the same weights: the same (to float32 rounding)")

# %% [markdown]
# ## 5. On a GPU: the one thing cuDNN cannot do
#
# On a CUDA GPU, `nn.LSTM` (and `nn.GRU`, `nn.RNN`) runs NVIDIA's cuDNN kernels. Their backward pass,
# `_cudnn_rnn_backward`, is a fused kernel with **no derivative of its own**. First-order training
# never needs one. Second-order MAML does: its meta-gradient for one task is
#
# $$\nabla_\theta \mathcal{L}^{\text{query}}(\theta') =
#   \big(I - \alpha\,\nabla^2_\theta \mathcal{L}^{\text{support}}(\theta)\big)\,
#   \nabla_{\theta'}\mathcal{L}^{\text{query}}(\theta'),
#   \qquad \theta' = \theta - \alpha\,\nabla_\theta\mathcal{L}^{\text{support}}(\theta).$$
#
# Read it term by term:
#
# - $\nabla_{\theta'}\mathcal{L}^{\text{query}}(\theta')$ is a **first** derivative of the query
#   forward pass: exactly what cuDNN's backward computes. The query pass may stay on cuDNN.
# - The Hessian term is the derivative of the support gradient $\nabla\mathcal{L}^{\text{support}}$.
#   Autograd built that gradient (`create_graph=True`) out of the *backward* operations of the
#   support forward pass; differentiating it means differentiating those operations. If the support
#   forward ran on cuDNN, one of them is `_cudnn_rnn_backward`, and the step fails with
#   "NotImplementedError: the derivative for '_cudnn_rnn_backward' is not implemented".
#
# So only the **inner loop** needs PyTorch's native RNN kernels (built from ordinary, twice
# differentiable operations). `mamlbook.maml.adapt` switches cuDNN off while the inner loop runs —
# second-order, on CUDA, for a model with a cuDNN RNN layer, and nowhere else — and restores the
# user's setting afterwards (`mamlbook.rnn`). The rule, evaluated here (it needs no GPU):

# %%
cases = [("cuda", False, "torch"), ("cuda", True, "torch"), ("cuda", False, "hand"), ("cpu", False, "torch")]
display(Markdown(markdown_table(
    ["device", "MAML", "LSTM", "inner loop leaves cuDNN?"],
    [[d, "first-order" if fo else "second-order", "nn.LSTM" if kind == "torch" else "HandLSTM",
      "**yes**" if needs_native_rnn(LSTMRegressor(lstm=kind), d, fo) else "no"] for d, fo, kind in cases])))

# %% [markdown]
# `python -m mamlbook.measure.lstm_kernels` measures all of this on a GPU: the naive second-order step through
# cuDNN, `mamlbook`'s route, cuDNN off for the whole step, first-order MAML, and the hand-written LSTM
# looped and batched — each meta-gradient compared with a float64 CPU reference on the same weights
# and data (chapter 9's settings: 25 tasks, K = 10, walks of 5, one step at α = 0.01). The table
# below is **a recorded run, not run now**: it is loaded from `results/gpu/rnn_check.json`, written
# by that command on the card and date it names.

# %%
recorded_path = find_recorded("results/gpu/rnn_check.json")
recorded = json.loads(recorded_path.read_text()) if recorded_path else None
if recorded is None:
    print("results/gpu/rnn_check.json is not on this machine (it is in the book's repository); "
          "on a GPU, the next cells run the measurement live.")
else:
    env = recorded["environment"]
    timed_steps = next(r["steps"] for r in recorded["rows"] if r["status"] == "ok")
    rows = []
    for r in recorded["rows"]:
        if r["status"] == "ok":
            rows.append([r["row"], r["lstm"], f"{r['ms_median']:.1f}", f"{r['grad_rel_err']:.1e}"])
        else:
            rows.append([r["row"], r["lstm"], f"fails: {r['error'].split('. ')[0]}", "—"])
    display(Markdown(
        f"**Recorded by `python -m mamlbook.measure.lstm_kernels` on an {env['device_name']}, torch {env['torch']}, "
        f"{env['date'][:10]} — not run now.** Median of {timed_steps} timed meta-steps; "
        "meta-gradient error relative to a float64 CPU reference (first-order: a different gradient "
        "by design).\n\n"
        + markdown_table(["row", "LSTM", "ms per meta-step", "meta-gradient rel. error"], rows)
        + f"\n\nmamlbook's route in float64 on the GPU against the CPU: relative difference "
          f"{recorded['float64_rel_err_vs_cpu']:.1e}."))

# %%
if recorded is not None:
    ok = [r for r in recorded["rows"] if r["status"] == "ok"]
    fig, ax = plt.subplots(figsize=(7.5, 3))
    ax.barh([f"{r['row']} ({r['lstm']})" for r in ok], [r["ms_median"] for r in ok],
            color=["tab:green" if r["row"] in ("mamlbook", "hand-vmap") else "tab:gray" for r in ok])
    for i, r in enumerate(ok):
        ax.text(r["ms_median"], i, f" {r['ms_median']:.0f} ms", va="center")
    ax.invert_yaxis()
    ax.set_xlim(0, 1.2 * max(r["ms_median"] for r in ok))
    ax.set(xlabel="milliseconds per meta-step (median)",
           title=f"Recorded run: {env['device_name']}, {env['date'][:10]} (naive-cudnn: fails)")
    plt.show()
    ms = {r["row"]: r["ms_median"] for r in ok}
    print(f"recorded: hand-vmap is {ms['mamlbook'] / ms['hand-vmap']:.0f}× faster than mamlbook's nn.LSTM "
          f"loop and {ms['first-order'] / ms['hand-vmap']:.1f}× faster than first-order MAML's loop; "
          f"keeping the query pass on cuDNN saves {100 * (1 - ms['mamlbook'] / ms['no-cudnn']):.0f}% "
          "against cuDNN off everywhere")

# %% [markdown]
# What the recorded run shows, generated from the file:

# %%
if recorded is not None:
    failed = [r["row"] for r in recorded["rows"] if r["status"] != "ok"]
    exponent = math.ceil(math.log10(recorded["float64_rel_err_vs_cpu"]))
    loops = {row: ms[row] for row in ("mamlbook", "no-cudnn", "first-order", "hand-loop") if row in ms}
    display(Markdown("\n".join([
        f"- the naive second-order step through cuDNN: {'**fails**, with the error above' if 'naive-cudnn' in failed else 'runs'};",
        f"- `mamlbook`'s route: {ms['mamlbook']:.0f} ms per meta-step, against {ms['no-cudnn']:.0f} ms with cuDNN "
        f"off everywhere ({100 * (1 - ms['mamlbook'] / ms['no-cudnn']):.0f}% saved by keeping the query pass on "
        f"cuDNN); in float64 the GPU and the CPU agree to $10^{{{exponent}}}$ — the native kernels compute the "
        "same function;",
        f"- the hand-written LSTM batched over the tasks with `vmap`: {ms['hand-vmap']:.0f} ms, "
        f"{min(loops.values()) / ms['hand-vmap']:.1f}× faster than the fastest per-task loop of the table "
        f"({min(loops, key=loops.get)}, {min(loops.values()):.0f} ms) — the same lesson as this chapter's CPU "
        "measurement: 25 small tasks become one batch of kernel launches."])))

# %% [markdown]
# If this kernel has a CUDA GPU, the next cell runs the same measurement live (about a minute).

# %%
if torch.cuda.is_available():
    live = rnn_check.run("cuda", steps=10)
    display(Markdown("**Measured now, on this GPU:**\n\n" + rnn_check.format_table(live)))
else:
    print("No CUDA GPU in this kernel: the table above is the recorded run. "
          "On a GPU (e.g. Colab's), this cell runs `mamlbook.measure.lstm_kernels.run('cuda', steps=10)` live.")

# %% [markdown]
# ## Summary
#
# - *Model-agnostic* is meant literally: MAML needs a model trained by gradient descent whose
#   operations can be differentiated twice. An LSTM followed by a linear layer qualifies, and the
#   unchanged `meta_train` (the loop behind chapter 2's `train_maml`), `adapt` and `meta_loss`
#   meta-train it.
# - The sinusoid-walk family makes the network remember: the target is chapter 2's sine at the end of
#   a walk the LSTM must add up step by step.
# - The LSTM's equations, written out, are `nn.LSTM` to $10^{-14}$ in float64; the second-order
#   meta-gradient through it matches finite differences, and the looped `nn.LSTM` and the batched
#   `HandLSTM` give the same meta-gradient to $10^{-10}$.
# - `vmap` cannot batch `nn.LSTM` (no batching rule for `aten::lstm`), so `mamlbook` loops over tasks
#   for it; the hand-written LSTM batches (section 3 timed both on your machine).
# - After meta-training, one gradient step on 10 walks adapts the LSTM to a new sine better than
#   fine-tuning the network trained by the seed article's loop, the jointly trained network or the
#   untrained one — each baseline at the step size tuned for one step, tested by the CI of the paired
#   per-task differences (section 4's check fails the run otherwise).
# - On a GPU, cuDNN's RNN backward has no derivative: second-order MAML must run its inner loop on
#   PyTorch's native kernels; the query pass may stay on cuDNN. `mamlbook` does exactly that.
#
# This run's numbers behind those lines:

# %%
display(Markdown(note + "\n".join([
    f"- HandLSTM with `vmap`: {speedup:.1f}× faster per meta-step than `nn.LSTM` looped over the tasks ({hardware}).",
    "- After one step, MAML − baseline (paired, mean ± 95% CI): "
    + "; ".join(f"{name} {format_ci(*paired[name][1], 3)}" for name in paired) + "."])))

# %% [markdown]
# ### The run's record
#
# In full mode (only), the next cell writes this run's numbers — the settings, the wall times, section
# 3's timings and checks, the meta-test table at every step count and the paired differences — to
# `results/chapter09/full_run.json`, with the machine, the date, the load and the git commit. The
# README's chapter-9 numbers and `results/chapter09/full_run.md` are generated from that file
# (`python results/chapter09/render.py`), and `tests/test_cited_numbers.py` checks the README against it,
# so no number of the full run is copied by hand. Fast mode writes nothing.

# %%
def run_record():
    """Everything the README and full_run.md state about this run, as plain JSON-able values."""
    walls = {"maml": maml_history.wall_time_s, "pretrained": pretrained_history.wall_time_s,
             "seed_article": seed_history.wall_time_s, "settings_to_record": time.perf_counter() - run_start}
    counts = {"maml": ITERATIONS, "pretrained": PRETRAIN_ITERATIONS, "seed_article": SEED_ARTICLE_STEPS}
    return {
        "notebook": "notebooks/09_any_model.ipynb",
        "config": {"seed": SEED, "k_shot": K_SHOT, "meta_batch_size": META_BATCH_SIZE, "inner_lr": INNER_LR,
                   "inner_steps": INNER_STEPS, "meta_lr": META_LR, "seq_len": SEQ_LEN, "hidden": HIDDEN,
                   "iterations": ITERATIONS, "pretrain_iterations": PRETRAIN_ITERATIONS,
                   "seed_article_steps": SEED_ARTICLE_STEPS, "num_eval_tasks": NUM_EVAL_TASKS,
                   "num_tuning_tasks": NUM_TUNING_TASKS, "max_steps": MAX_STEPS, "timed_steps": TIMED_STEPS,
                   "eval_seed": EVAL_SEED, "step_size_seed": STEP_SIZE_SEED},
        "wall_time_s": walls,
        "ms_per_iteration": {k: 1000 * walls[k] / max(n, 1) for k, n in counts.items()},
        "section3": {"ms_per_meta_step": timings, "speedup_vmap_vs_nn_lstm": speedup,
                     "written_out": written_out, "batching": batching,
                     "loop_vs_vmap_rel": loop_vs_vmap, "hessian_share": hessian_share,
                     "finite_difference_rel_err": fd_error},
        "results": {name: {"step_sizes": {str(s): step_sizes[name][s] for s in STEPS},
                           "mean": r.mean, "ci95": r.ci95, "median": r.median}
                    for name, r in results.items()},
        "paired_maml_minus": {name: {str(s): dict(zip(("mean", "ci95"), paired[name][s])) for s in paired[name]}
                              for name in paired},
        "hardware": hardware}


record_full_run(9, run_record(), load_at_start=load_at_start)

# %% [markdown]
# ## Exercises
#
# **Exercise 1 — a GRU step from its equations.** The gated recurrent unit (Cho et al., 2014) keeps
# one state $h$. PyTorch's `nn.GRUCell` computes, with its weights stacked in the order $(r, z, n)$:
#
# $$\begin{aligned}
# r &= \sigma(W_{ir} x + b_{ir} + W_{hr} h + b_{hr}) &&\text{reset gate}\\
# z &= \sigma(W_{iz} x + b_{iz} + W_{hz} h + b_{hz}) &&\text{update gate}\\
# n &= \tanh\big(W_{in} x + b_{in} + r \odot (W_{hn} h + b_{hn})\big) &&\text{candidate}\\
# h' &= (1 - z) \odot n + z \odot h
# \end{aligned}$$
#
# Note where the reset gate acts: on $W_{hn}h + b_{hn}$, bias included. Write `gru_step`. The check
# compares it with a case worked by hand and with `nn.GRUCell`.

# %%
def gru_step(x, h, weight_ih, weight_hh, bias_ih, bias_hh):
    """One GRU step: x (B, D), h (B, H) → h' (B, H); weights (3H, D), (3H, H), biases (3H,), order (r, z, n)."""
    ### BEGIN SOLUTION
    xr, xz, xn = (x @ weight_ih.T + bias_ih).chunk(3, dim=-1)
    hr, hz, hn = (h @ weight_hh.T + bias_hh).chunk(3, dim=-1)
    r, z = torch.sigmoid(xr + hr), torch.sigmoid(xz + hz)
    n = torch.tanh(xn + r * hn)
    return (1 - z) * n + z * h
    ### END SOLUTION


# %%
# By hand: with all weights and biases zero, r = z = σ(0) = 1/2 and n = tanh(0) = 0, so h' = h / 2.
h0 = torch.tensor([[1.0, -2.0]])
zeros = dict(weight_ih=torch.zeros(6, 1), weight_hh=torch.zeros(6, 2), bias_ih=torch.zeros(6),
             bias_hh=torch.zeros(6))
torch.testing.assert_close(gru_step(torch.tensor([[3.0]]), h0, **zeros), torch.tensor([[0.5, -1.0]]))
# Against PyTorch, in float64, with random weights (the reset gate's placement matters here).
cell = nn.GRUCell(3, 5).double()
x_in = torch.randn(4, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
h_in = torch.randn(4, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
torch.testing.assert_close(gru_step(x_in, h_in, cell.weight_ih, cell.weight_hh, cell.bias_ih, cell.bias_hh),
                           cell(x_in, h_in), rtol=0, atol=1e-12)
print("gru_step: right")

# %% [markdown]
# **Exercise 2 — MAML on a GRU, code unchanged.** Write `GRURegressor`: an `nn.GRU` (input 1, width
# `hidden`, `batch_first=True`) followed by `nn.Linear(hidden, 1)` on the last time step's output,
# mapping walks (B, L, 1) to predictions (B, 1) — `LSTMRegressor` with the LSTM swapped. The check
# meta-trains it with the same `meta_train` call as section 4 (meta-batches of 10 tasks and Adam at
# 0.01 so that it shows in 100 iterations; `nn.GRU` runs on the per-task loop, since `vmap` cannot
# batch it either) and requires the outer loss on 50 fixed tasks to fall by more than 10%. On a GPU
# the same code would run, cuDNN leaving only the inner loop — the check confirms `mamlbook` sees the
# GRU as a cuDNN RNN.

# %%
class GRURegressor(nn.Module):
    """nn.GRU (1 → hidden) followed by a linear layer on the last hidden state: (B, L, 1) → (B, 1)."""

    def __init__(self, hidden=HIDDEN):
        super().__init__()
        ### BEGIN SOLUTION
        self.gru = nn.GRU(1, hidden, batch_first=True)
        self.head = nn.Linear(hidden, 1)
        ### END SOLUTION

    def forward(self, x):
        ### BEGIN SOLUTION
        outputs, _ = self.gru(x)                 # (B, L, H)
        return self.head(outputs[:, -1])         # (B, 1)
        ### END SOLUTION


# %%
torch.manual_seed(SEED)
gru = GRURegressor()
assert needs_native_rnn(gru, "cuda", first_order=False), "GRURegressor should contain an nn.GRU"
assert gru(demo.x_support[0]).shape == (K_SHOT, 1)
fixed = sample_walk_tasks(50, K_SHOT, generator=torch.Generator().manual_seed(5))
fixed_data = (fixed.x_support, fixed.y_support, fixed.x_query, fixed.y_query)
before = meta_loss(gru, dict(gru.named_parameters()), *fixed_data, inner_lr=INNER_LR).item()
gru_cfg = WalkConfig(k_shot=K_SHOT, meta_batch_size=10, seq_len=SEQ_LEN)
gru_history = meta_train(gru, walk_batches(gru_cfg, torch.Generator().manual_seed(SEED)), iterations=100,
                         inner_lr=INNER_LR, meta_lr=1e-2, desc="MAML, GRU")
after = meta_loss(gru, dict(gru.named_parameters()), *fixed_data, inner_lr=INNER_LR).item()
print(f"GRU outer loss on 50 fixed tasks: {before:.3f} before, {after:.3f} after 100 meta-steps "
      f"({gru_history.wall_time_s:.0f} s)")
assert after < 0.9 * before, "the meta-loss should fall: is the GRU's output its last time step's?"
print("GRURegressor: right")

# %% [markdown]
# **Exercise 3 — longer walks (open).** Set `SEQ_LEN = 20` in the parameters cell (the end points
# keep their range; the moves still lie in $[-0.5, 0.5]$) and rerun sections 3 and 4. How do the
# ms per meta-step of the three implementations change, and why does the loop over tasks suffer
# more than `vmap`? Does MAML still beat the pretrained LSTM after one step? Look at the figure of
# predictions: does the LSTM add up twenty moves as exactly as five?
