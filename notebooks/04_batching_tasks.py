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
# # Chapter 4 — Batching tasks with `torch.func.vmap`
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/mamlbook/mamlbook/blob/main/notebooks/04_batching_tasks.ipynb)
#
# **What you will learn**
#
# - how to run all the tasks of a meta-batch at once with `vmap` + `functional_call`, with the
#   plain loop beside it, and how to prove they agree (float64, 1e-10);
# - what it buys: the time per meta-step of both, measured here;
# - the pitfalls: BatchNorm running statistics, randomness inside `vmap`, memory that grows
#   with inner steps, and when `vmap` is *slower* (convolutions on a CPU);
# - a trap we measured — a wrong second-order meta-gradient through PyTorch's BatchNorm under
#   `torch.func` — and how an invariant (a gradient that must be exactly zero) exposes it.
#
# Every number and figure below comes from the runs in this notebook.

# %%
# Google Colab only: install the book's package from its repository (torch is already there).
import subprocess, sys
if "google.colab" in sys.modules:
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps",
                    "git+https://github.com/mamlbook/mamlbook"], check=True)

# %%
import statistics
import time

import matplotlib.pyplot as plt
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad, vmap

from mamlbook.config import banner, pick
from mamlbook.conv import BatchNorm, omniglot_conv4
from mamlbook.maml import meta_loss
from mamlbook.models import SinusoidMLP
from mamlbook.runs import find_recorded
from mamlbook.tasks import sample_sinusoid_tasks

banner("Chapter 4");

# %% tags=["parameters"]
SEED = 0
META_BATCH_SIZE = 25          # tasks per meta-step (official code's sinusoid default)
K_SHOT = 10
INNER_LR = 0.01               # α
TIMING_REPEATS = pick(30, 10) # meta-steps timed per path (median)
INNER_STEPS_GRID = [1, 2, 4, 8]
CONV_FILTERS = pick(64, 8)    # Omniglot Conv4 width in the BatchNorm experiment (paper: 64)
PAPER_CLS_INNER_LR = 0.4      # the paper's Omniglot α, in the official loss's units (Σ xent / K)

# %% [markdown]
# ## 1. The loop and the batch
#
# The loop adapts one task at a time. The batched version gives every task its own copy of θ
# — `expand`, so no memory is copied — and maps the forward pass over the task dimension with
# `vmap`. Because task $i$'s loss depends only on copy $i$, the gradient of the **sum** of the
# support losses with respect to the copies is every task's own gradient, in one backward pass.

# %%
def loop_meta_loss(model, params, xs, ys, xq, yq, alpha):
    total = 0.0
    for i in range(xs.shape[0]):
        loss = F.mse_loss(functional_call(model, params, (xs[i],)), ys[i])
        grads = torch.autograd.grad(loss, list(params.values()), create_graph=True)
        fast = {k: v - alpha * g for (k, v), g in zip(params.items(), grads)}
        total = total + F.mse_loss(functional_call(model, fast, (xq[i],)), yq[i])
    return total / xs.shape[0]


def vmap_meta_loss(model, params, xs, ys, xq, yq, alpha):
    T = xs.shape[0]
    per_task = {k: v.expand(T, *v.shape) for k, v in params.items()}         # (T, *shape) views
    task_loss = lambda p, x, y: F.mse_loss(functional_call(model, p, (x,)), y)
    support = vmap(task_loss)(per_task, xs, ys)                               # (T,)
    grads = torch.autograd.grad(support.sum(), list(per_task.values()), create_graph=True)
    fast = {k: v - alpha * g for (k, v), g in zip(per_task.items(), grads)}
    return vmap(task_loss)(fast, xq, yq).mean()


torch.manual_seed(SEED)
mlp = SinusoidMLP().double()
params = dict(mlp.named_parameters())
b = sample_sinusoid_tasks(META_BATCH_SIZE, K_SHOT, generator=torch.Generator().manual_seed(SEED)).to(dtype=torch.float64)
data = (b.x_support, b.y_support, b.x_query, b.y_query)
g_loop = torch.autograd.grad(loop_meta_loss(mlp, params, *data, INNER_LR), list(params.values()))
g_vmap = torch.autograd.grad(vmap_meta_loss(mlp, params, *data, INNER_LR), list(params.values()))
for a, c in zip(g_loop, g_vmap):
    torch.testing.assert_close(c, a, rtol=1e-10, atol=1e-12)
print("loop and vmap meta-gradients agree (float64):",
      max((a - c).abs().max().item() for a, c in zip(g_loop, g_vmap)))

# %% [markdown]
# Agreement of two of our own code paths is not yet evidence that either is right; chapter 2
# checked the loop against finite differences. Now the speed, in float32 as in training, both
# paths timed in turns in this process:

# %%
def time_step(fn, repeats):
    ms = []
    for _ in range(repeats + 1):                         # the first call is a warm-up
        mlp32.zero_grad(set_to_none=True)
        t0 = time.perf_counter()
        fn(mlp32, p32, *data32, INNER_LR).backward()
        ms.append(1e3 * (time.perf_counter() - t0))
    return statistics.median(ms[1:])


mlp32 = SinusoidMLP()
p32 = dict(mlp32.named_parameters())
data32 = tuple(t.float() for t in data)
timing = {"loop": [], "vmap": []}
for _ in range(3):                                       # alternate, so a busy CPU hits both alike
    for name, fn in (("loop", loop_meta_loss), ("vmap", vmap_meta_loss)):
        timing[name].append(time_step(fn, TIMING_REPEATS))
ms = {k: statistics.median(v) for k, v in timing.items()}
print(f"ms per second-order meta-step: loop {ms['loop']:.2f}, vmap {ms['vmap']:.2f} "
      f"→ vmap is {ms['loop'] / ms['vmap']:.1f}× faster (ratio from this run; the CPU may be shared)")
plt.figure(figsize=(4, 3))
plt.bar(list(ms), list(ms.values()), color=["tab:gray", "tab:blue"])
plt.ylabel("ms / meta-step (median)")
plt.title(f"{META_BATCH_SIZE} sinusoid tasks, 1-40-40-1")
plt.show()

# %% [markdown]
# In the package, `meta_loss(..., batched=True)` is the second function and `batched=False`
# the first; `batched="auto"` (the default) picks per model and device — see section 3.
#
# ## 2. Memory grows with inner steps
#
# Second-order MAML keeps the graph of every inner step until the outer backward. We count the
# bytes autograd saves for backward (a `saved_tensors_hooks` tally) as the inner steps grow:

# %%
from mamlbook.measure.bench import saved_graph_bytes as saved_bytes   # chapter 3 writes it out in full

graph_kib = {order: [saved_bytes(lambda: meta_loss(mlp32, p32, *data32, inner_lr=INNER_LR,
                                                   inner_steps=s, batched=True,
                                                   first_order=order == "first")) / 1024
                     for s in INNER_STEPS_GRID] for order in ("second", "first")}
plt.figure(figsize=(5, 3))
for order, kib in graph_kib.items():
    plt.plot(INNER_STEPS_GRID, kib, marker="o", label=f"{order}-order")
plt.xlabel("inner steps"); plt.ylabel("autograd graph (KiB)"); plt.legend(); plt.show()
print({o: [round(k) for k in v] for o, v in graph_kib.items()})
assert graph_kib["second"][-1] > graph_kib["second"][0]

# %% [markdown]
# The graph grows linearly with the number of inner steps; under `vmap` it holds all tasks at
# once, where a loop that calls `backward` per task (`mamlbook.maml.meta_backward`) holds one
# task's graph at a time. Memory is one of the two reasons the package loops over tasks on a CPU for
# the conv models; speed is the other (section 3 reads both from the recorded benchmark).
#
# ## 3. Pitfalls
#
# **BatchNorm running statistics.** `nn.BatchNorm2d` in training mode updates its running
# mean in place — one buffer shared by every task — which `vmap` refuses ("in-place operation
# on a batched tensor"). MAML's own code never uses running statistics anyway: it normalises
# with the statistics of the batch it sees, at test time too. `mamlbook.conv.BatchNorm` does
# exactly that and keeps no buffers.
#
# **Randomness inside vmap.** `torch.randn` inside a vmapped function raises by default;
# `vmap(..., randomness="different")` gives each task its own draws and `"same"` one shared
# draw. Dropout inside MAML models needs the first.

# %%
noise = lambda x: x + torch.randn(())
try:
    vmap(noise)(torch.zeros(3))
except RuntimeError as err:
    print("default:", str(err).splitlines()[0][:90], "…")
print("different:", vmap(noise, randomness="different")(torch.zeros(3)))
print("same:     ", vmap(noise, randomness="same")(torch.zeros(3)))

# %% [markdown]
# **When vmap is slower.** Each task has its own convolution weights, so `vmap` turns a batch of
# convolutions into one *grouped* convolution. On a GPU that is a good trade; on a CPU grouped
# convolutions can be much slower than PyTorch's ordinary ones. Timing the paper's conv networks
# takes minutes, so the next cell does not run it: it reads the CPU table that the benchmark
# (`python -m mamlbook bench`) recorded in `docs/benchmarks.md` — **a recorded run, not run now**,
# with the machine and date of its heading — and prints the conv workloads, W2 (Omniglot Conv4) and
# W3 (mini-ImageNet Conv4): the per-task loop against `vmap`, speed and peak memory.

# %%
def recorded_cpu_bench(path):
    """(heading, {(workload, order, impl): row}) of the first '## CPU' table of docs/benchmarks.md."""
    heading, header, rows = None, None, {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("## "):
            if rows:
                break
            heading = line[3:] if line.startswith("## CPU") else None
        elif heading and line.startswith("|"):
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if cells[0] == "workload":
                header = cells
            elif header and not set(cells[0]) <= set("-:"):
                row = dict(zip(header, cells))
                rows[row["workload"], row["order"], row["impl"]] = row
    return heading, rows


bench_path = find_recorded("docs/benchmarks.md")
heading, bench = recorded_cpu_bench(bench_path) if bench_path else (None, {})
if not bench:
    print("docs/benchmarks.md (with its CPU table) is not on this machine; it is in the book's repository.")
else:
    print(f"Recorded by `python -m mamlbook bench` — {heading} — not run now (second order):")
    for w in ("W2", "W3"):
        loop, vm = bench[w, "second", "loop"], bench[w, "second", "mamlbook-vmap"]
        ratio = float(loop["ms/step (median)"]) / float(vm["ms/step (median)"])
        print(f"  {w}: loop {loop['ms/step (median)']} ms, vmap {vm['ms/step (median)']} ms per meta-step "
              f"(vmap at {ratio:.2f}× the loop's speed); peak memory {loop['peak MB']} MB vs {vm['peak MB']} MB "
              f"→ on this CPU the loop is {'faster' if ratio < 1 else 'slower'}")
#
# ## 4. The BatchNorm trap: testing with an invariant
#
# In conv → batch-statistics BatchNorm → …, the conv bias adds a constant per channel, which
# BatchNorm subtracts again with the batch mean. The loss does not depend on the conv bias at
# all, so **its meta-gradient must be exactly zero** — with any number of inner steps, first or
# second order. We do not need a reference implementation to test that: any nonzero value is a
# bug. Let us compute it three ways on a conv + `nn.BatchNorm2d(track_running_stats=False)` +
# linear model, in float64: the loop, autograd over `vmap` (what `mamlbook` does), and the
# fully functional `grad(vmap(grad(...)))` of `torch.func`.

# %%
class ConvBNLinear(nn.Module):
    def __init__(self, bn):
        super().__init__()
        self.conv, self.bn, self.fc = nn.Conv2d(1, 4, 3, padding=1), bn, nn.Linear(4 * 6 * 6, 3)

    def forward(self, x):
        return self.fc(torch.relu(self.bn(self.conv(x))).flatten(1))


gen = torch.Generator().manual_seed(SEED)
T, K, Q = 3, 4, 6
cls_data = (torch.randn(T, K, 1, 6, 6, generator=gen, dtype=torch.float64),
            torch.randint(0, 3, (T, K), generator=gen),
            torch.randn(T, Q, 1, 6, 6, generator=gen, dtype=torch.float64),
            torch.randint(0, 3, (T, Q), generator=gen))
# The paper's α = 0.4 goes with the official code's loss, N × the mean cross-entropy; with F.cross_entropy
# (a mean) the same step is α × N (chapter 6 shows why). These tasks have N = 3 classes.
CLS_ALPHA = PAPER_CLS_INNER_LR * 3


def torch_func_meta_grad(model, params, xs, ys, xq, yq, alpha):
    loss = lambda p, x, y: F.cross_entropy(functional_call(model, p, (x,)), y)

    def task(p, xs, ys, xq, yq):
        g = grad(loss)(p, xs, ys)
        return loss({k: p[k] - alpha * g[k] for k in p}, xq, yq)

    return grad(lambda p: vmap(task, in_dims=(None, 0, 0, 0, 0))(p, xs, ys, xq, yq).mean())(params)


def conv_bias_meta_grads(bn):
    torch.manual_seed(1)
    model = ConvBNLinear(bn).double()
    p = {k: v.detach().clone().requires_grad_() for k, v in model.named_parameters()}
    out = {}
    for name, batched in (("loop", False), ("autograd over vmap", True)):
        loss = meta_loss(model, p, *cls_data, inner_lr=CLS_ALPHA, loss_fn=F.cross_entropy, batched=batched)
        out[name] = torch.autograd.grad(loss, p["conv.bias"])[0].abs().max().item()
    out["torch.func grad(vmap(grad))"] = torch_func_meta_grad(
        model, {k: v.detach() for k, v in p.items()}, *cls_data, CLS_ALPHA)["conv.bias"].abs().max().item()
    return out


trap = {"nn.BatchNorm2d": conv_bias_meta_grads(nn.BatchNorm2d(4, track_running_stats=False)),
        "mamlbook.conv.BatchNorm": conv_bias_meta_grads(BatchNorm(4, scale=True))}
for bn, res in trap.items():
    print(f"{bn:>24}: " + ", ".join(f"{k} {v:.1e}" for k, v in res.items()))
assert all(v < 1e-13 for v in trap["mamlbook.conv.BatchNorm"].values())

# %% [markdown]
# Read the first line; the next cell says what it shows on *your* PyTorch. With PyTorch's
# BatchNorm the loop and autograd-over-`vmap` give zero to rounding; on the PyTorch this book was
# written with, the fully functional `torch.func` meta-gradient did not. Nothing crashes and the
# training loss still falls: only the invariant gives it away. Comparing against the loop would have
# caught it too, but only if someone had thought to run that comparison on a BatchNorm model.

# %%
torch_func_error = trap["nn.BatchNorm2d"]["torch.func grad(vmap(grad))"]
if torch_func_error > 1e-10:
    print(f"On torch {torch.__version__}, the torch.func meta-gradient of the conv bias is {torch_func_error:.1e} "
          "instead of 0: wrong, many orders of magnitude above rounding.")
else:
    print(f"On torch {torch.__version__}, the torch.func meta-gradient of the conv bias is {torch_func_error:.1e}: "
          "zero to rounding — the bug described below is fixed in this version.")
#
# The cause is in PyTorch's derivative rules for its fused batch-norm kernel under the
# `grad`-of-`vmap` transform, not in our code. The cure is a BatchNorm written from `mean`,
# `var` and `rsqrt` — ordinary operations whose derivatives compose correctly. That formula is
# slower than the fused kernel in a plain loop, so `mamlbook.conv.BatchNorm` uses the fused
# kernel normally and switches to the formula only when it runs inside `vmap`; and
# `mamlbook.functional.make_meta_grad` refuses models containing `nn.BatchNorm*d`.
#
# Finally, the same invariant on the paper's Omniglot network, through the package:

# %%
torch.manual_seed(SEED)
conv = omniglot_conv4(n_way=5, filters=CONV_FILTERS).double()
cp = {k: v.detach().clone().requires_grad_() for k, v in conv.named_parameters()}
g = torch.Generator().manual_seed(SEED)
omni = (torch.randn(2, 5, 1, 28, 28, generator=g, dtype=torch.float64), torch.arange(5).repeat(2, 1),
        torch.randn(2, 5, 1, 28, 28, generator=g, dtype=torch.float64), torch.randint(0, 5, (2, 5), generator=g))
omni_alpha = PAPER_CLS_INNER_LR * 5                      # 5-way: α = 0.4 × N = 2.0 with mean CE
for batched in (False, True):
    loss = meta_loss(conv, cp, *omni, inner_lr=omni_alpha, loss_fn=F.cross_entropy, batched=batched)
    grads = dict(zip(cp, torch.autograd.grad(loss, list(cp.values()))))
    worst = max(grads[f"features.{i}.0.bias"].abs().max().item() for i in range(4))
    print(f"batched={batched}: largest conv-bias meta-gradient {worst:.1e}")
    assert worst < 1e-13

# %% [markdown]
# ## Summary
#
# - `vmap` over tasks with `functional_call` gives the loop's meta-gradients (float64, 1e-10);
#   section 1 measured how much faster it makes the sinusoid MLP's meta-step on your machine.
# - BatchNorm under MAML uses batch statistics and no running buffers; randomness inside
#   `vmap` needs `randomness=`; graphs grow with inner steps; for the conv networks on a CPU, the
#   recorded benchmark has the per-task loop ahead, which is why `batched="auto"` loops there.
# - Test with invariants: the conv bias before batch-statistics BatchNorm must get a zero
#   meta-gradient. That one line exposed a wrong second-order gradient in a library path.
#
# ## Exercises
#
# **Exercise 1.** The MAML *evaluation* needs no second-order graph. Write `batched_eval_losses`
# that adapts every task with one SGD step of α under `vmap` (use `torch.func.grad` inside the
# mapped function) and returns the per-task query MSE; check it against `mamlbook.evaluate.adaptation_curve`.

# %%
from mamlbook.evaluate import adaptation_curve

### BEGIN SOLUTION
def batched_eval_losses(model, params, xs, ys, xq, yq, alpha):
    loss = lambda p, x, y: F.mse_loss(functional_call(model, p, (x,)), y)

    def one(xs, ys, xq, yq):
        g = grad(loss)(params, xs, ys)
        return loss({k: params[k] - alpha * g[k] for k in params}, xq, yq)

    return vmap(one)(xs, ys, xq, yq)
### END SOLUTION
detached = {k: v.detach() for k, v in params.items()}
mine = batched_eval_losses(mlp, detached, *data, INNER_LR)
ref = adaptation_curve(mlp, params, *data, inner_lr=INNER_LR, max_steps=1)[:, 1]
torch.testing.assert_close(mine, ref, rtol=1e-10, atol=1e-12)

# %% [markdown]
# **Exercise 2.** Show the invariant catches a bug: put a *shift that BatchNorm does not remove*
# after the BatchNorm (e.g. add the conv bias again after `self.bn`) and confirm that the conv
# bias meta-gradient is then clearly nonzero. (A test that cannot fail proves nothing.)

# %%
### BEGIN SOLUTION
class Leaky(ConvBNLinear):
    def forward(self, x):
        return self.fc(torch.relu(self.bn(self.conv(x)) + self.conv.bias[:, None, None]).flatten(1))


torch.manual_seed(1)
leaky = Leaky(BatchNorm(4)).double()
lp = dict(leaky.named_parameters())
leak = torch.autograd.grad(meta_loss(leaky, lp, *cls_data, inner_lr=CLS_ALPHA, loss_fn=F.cross_entropy),
                           lp["conv.bias"])[0].abs().max().item()
### END SOLUTION
print(f"conv-bias meta-gradient with a shift after BN: {leak:.1e}")
assert leak > 1e-6
