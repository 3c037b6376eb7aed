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
# # Chapter 3 — Inside the meta-gradient: second order, first order, Reptile
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/mamlbook/mamlbook/blob/main/notebooks/03_meta_gradient.ipynb)
#
# **What you will learn**
#
# - the MAML meta-gradient for one inner step, $(I - \alpha \nabla^2 L_{\text{support}}(\theta))\,
#   \nabla L_{\text{query}}(\theta')$, derived with the chain rule;
# - the Hessian-vector product it needs, and why autograd never forms the Hessian;
# - an explicit computation on a small sinusoid network that matches autograd to 1e-10;
# - first-order MAML (drop the Hessian term) and Reptile (move θ toward the adapted
#   parameters — what "a weighted average of the adapted parameters" really describes),
#   each written out in full and then taken from the `mamlbook` package;
# - how the three compare on sinusoids at an equal budget: final error ± 95% CI, time per
#   meta-step, memory, and how closely the first-order gradient follows the true one.
#
# Every number and figure below comes from the runs in this notebook.

# %%
# Google Colab only: install the book's package from its repository (torch is already there).
import subprocess, sys
if "google.colab" in sys.modules:
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps",
                    "git+https://github.com/mamlbook/mamlbook"], check=True)

# %%
import json
import time

import matplotlib.pyplot as plt
import torch
import torch.nn.functional as F
from IPython.display import Markdown, display
from torch.func import functional_call
from tqdm.auto import trange

from mamlbook.config import banner, fast_mode, pick
from mamlbook.evaluate import mean_ci95
from mamlbook.maml import meta_loss
from mamlbook.models import SinusoidMLP
from mamlbook.plotting import format_ci, markdown_table
from mamlbook.algorithms.reptile import reptile_gradient
from mamlbook.runs import find_recorded
from mamlbook.sinusoid import task_curves
from mamlbook.tasks import sample_sinusoid_tasks
from mamlbook.train import make_meta_optimizer

banner("Chapter 3");

# %% [markdown]
# The knobs, with the paper's sinusoid values. `pick(full, fast)` gives the second value when
# `MAMLBOOK_FAST=1` (a shortened run; its numbers are **not** converged results).

# %% tags=["parameters"]
SEED = 0
K_SHOT = 10                          # support (and query) points per task
META_BATCH_SIZE = 25                 # tasks per meta-step (official code's default; not in the paper)
INNER_LR = 0.01                      # α (paper §5.1)
META_LR = 1e-3                       # β, Adam (official code's default; the paper says only "Adam")
ITERATIONS = pick(20_000, 250)       # meta-steps per method: the equal budget
REPTILE_INNER_STEPS = 5              # Reptile needs several inner steps (with one it is joint training)
COSINE_EVERY = pick(500, 20)         # how often to compare second- and first-order meta-gradients
NUM_EVAL_TASKS = pick(600, 100)      # meta-test tasks (official code: 600)

# %%
SHORT_RUN = "*FAST MODE — a shortened run: these numbers are not converged results.* " if fast_mode() else ""

# %% [markdown]
# ## 1. The meta-gradient of one inner step
#
# For one task, the inner step adapts θ on the support loss, and the outer loss is the query
# loss at the adapted parameters:
#
# $$\theta' = \theta - \alpha \nabla L_s(\theta), \qquad \mathcal{L}(\theta) = L_q(\theta').$$
#
# The chain rule gives $\nabla_\theta \mathcal{L} = J^\top \nabla L_q(\theta')$ with the Jacobian
# of the inner step $J = \partial\theta'/\partial\theta = I - \alpha \nabla^2 L_s(\theta)$. The
# Hessian $H_s = \nabla^2 L_s(\theta)$ is symmetric, so
#
# $$\boxed{\nabla_\theta \mathcal{L} = \big(I - \alpha H_s\big)\, \nabla L_q(\theta')
#   = g_q - \alpha\, H_s g_q,\qquad g_q = \nabla L_q(\theta').}$$
#
# The second term is a **Hessian-vector product**. It never needs $H_s$ itself — affordable for
# this chapter's small MLP, but not for the conv networks of chapters 6 and 7 (the cell after this
# one counts): $H_s v = \nabla_\theta\big(\nabla L_s(\theta)\cdot v\big)$
# — differentiate the inner gradient once more, along $v$. That is exactly what
# `torch.autograd.grad(..., create_graph=True)` sets up: backpropagating the query loss
# through the inner update computes $H_s g_q$ at the cost of about one extra backward pass.
#
# **First-order MAML** (FOMAML) drops the term: $\nabla_\theta \mathcal{L} \approx g_q$.
#
# How big would $H_s$ be? One entry per pair of parameters, 8 bytes each in float64:

# %%
from mamlbook.conv import miniimagenet_conv4, omniglot_conv4   # only to count their parameters

networks = {"sinusoid MLP 1-40-40-1 (this chapter)": SinusoidMLP(),
            "Omniglot Conv4, 64 filters, 5-way (chapter 6)": omniglot_conv4(n_way=5),
            "mini-ImageNet Conv4, 32 filters, 5-way (chapter 7)": miniimagenet_conv4(n_way=5)}
num_params = {name: sum(p.numel() for p in m.parameters()) for name, m in networks.items()}
display(Markdown(markdown_table(
    ["network", "parameters", "Hessian entries", "Hessian in float64"],
    [[name, f"{n:,}", f"{n * n:,}", f"{n * n * 8 / 1e6:,.0f} MB"] for name, n in num_params.items()])))
# the MLP by hand: (1·40 + 40) + (40·40 + 40) + (40·1 + 1) weights and biases
assert num_params["sinusoid MLP 1-40-40-1 (this chapter)"] == (1 * 40 + 40) + (40 * 40 + 40) + (40 * 1 + 1)

# %% [markdown]
# Let us check the formula with an explicit Hessian, on a float64 network small enough for it.

# %%
torch.manual_seed(SEED)
net = SinusoidMLP(hidden=10).double()                       # 1-10-10-1: 141 parameters
names = [n for n, _ in net.named_parameters()]
shapes = [p.shape for _, p in net.named_parameters()]
theta = torch.cat([p.detach().reshape(-1) for p in net.parameters()])   # (141,)


def unflatten(vec):
    """A flat parameter vector as the name → tensor dict functional_call wants."""
    out, i = {}, 0
    for n, s in zip(names, shapes):
        out[n] = vec[i:i + s.numel()].reshape(s)
        i += s.numel()
    return out


task = sample_sinusoid_tasks(1, K_SHOT, generator=torch.Generator().manual_seed(SEED)).to(dtype=torch.float64)
xs, ys, xq, yq = task.task(0)


def loss_at(vec, x, y):
    return F.mse_loss(functional_call(net, unflatten(vec), (x,)), y)


ALPHA_DEMO = 0.1   # larger than the paper's α so the Hessian term is clearly visible
g_s = torch.autograd.functional.jacobian(lambda v: loss_at(v, xs, ys), theta)        # ∇L_s(θ)
theta_prime = theta - ALPHA_DEMO * g_s                                               # θ'
g_q = torch.autograd.functional.jacobian(lambda v: loss_at(v, xq, yq), theta_prime)  # ∇L_q(θ')
H_s = torch.autograd.functional.hessian(lambda v: loss_at(v, xs, ys), theta)         # (141, 141)
explicit = (torch.eye(theta.numel(), dtype=torch.float64) - ALPHA_DEMO * H_s) @ g_q
print(f"H_s is {tuple(H_s.shape)}, symmetric to {(H_s - H_s.T).abs().max():.1e}")

# %% [markdown]
# Now the same gradient three other ways: autograd through the inner step (what `mamlbook`
# does), and a Hessian-vector product built by hand with a double backward.

# %%
params = {n: p.clone().requires_grad_() for n, p in unflatten(theta).items()}
batch = tuple(t[None] for t in (xs, ys, xq, yq))           # a meta-batch of one task
loss = meta_loss(net, params, *batch, inner_lr=ALPHA_DEMO, batched=False)
autograd_meta = torch.cat([g.reshape(-1) for g in torch.autograd.grad(loss, list(params.values()))])

v = theta.clone().requires_grad_()
inner_grad = torch.autograd.grad(loss_at(v, xs, ys), v, create_graph=True)[0]      # ∇L_s(θ), differentiable
hvp = torch.autograd.grad(inner_grad @ g_q, v)[0]                                   # H_s g_q, no Hessian formed
via_hvp = g_q - ALPHA_DEMO * hvp

torch.testing.assert_close(autograd_meta, explicit, rtol=1e-10, atol=1e-12)
torch.testing.assert_close(via_hvp, explicit, rtol=1e-10, atol=1e-12)
hessian_share = (ALPHA_DEMO * hvp).norm() / explicit.norm()
print(f"autograd vs explicit: {(autograd_meta - explicit).abs().max():.1e}; "
      f"HVP vs explicit: {(via_hvp - explicit).abs().max():.1e}")
print(f"the Hessian term is {hessian_share:.1%} of the meta-gradient's norm here (α = {ALPHA_DEMO})")

# %% [markdown]
# ## 2. First-order MAML
#
# FOMAML treats the inner gradient as a constant: in code, the inner `autograd.grad` runs
# without `create_graph`, so nothing flows back through it. Its meta-gradient must be exactly
# $g_q$, the explicit formula without the Hessian term:

# %%
fo_loss = meta_loss(net, params, *batch, inner_lr=ALPHA_DEMO, batched=False, first_order=True)
fomaml = torch.cat([g.reshape(-1) for g in torch.autograd.grad(fo_loss, list(params.values()))])
torch.testing.assert_close(fomaml, g_q, rtol=1e-10, atol=1e-12)
cos = F.cosine_similarity(fomaml, explicit, dim=0).item()
print(f"FOMAML = ∇L_q(θ') to {(fomaml - g_q).abs().max():.1e}; cosine with the true meta-gradient: {cos:.4f}")

# %% [markdown]
# That is the bug in the most-copied PyTorch MAML, dragen1860/MAML-Pytorch: its `meta.py` computes
# the inner gradient with `autograd.grad` without `create_graph=True` (its issues #17, #26, #32 and
# #63) and so trains FOMAML while calling it MAML. Nothing fails — the
# gradients just differ, by the Hessian term above.
#
# ## 3. Reptile
#
# Reptile (Nichol, Achiam & Schulman, 2018) needs no query set and no second derivatives.
# For each task it runs $k$ inner steps from θ to get $\varphi_i$ (plain SGD in this book; Reptile's
# own code uses Adam with $\beta_1 = 0$ there, see chapter 8), then moves θ toward them:
#
# $$\theta \leftarrow \theta + \varepsilon\,\frac1T \sum_i (\varphi_i - \theta).$$
#
# With $\varepsilon = 1$, θ becomes the plain **average of the adapted parameters**; with a
# smaller ε, it is a weighted average of θ and that average. That — not an average of the
# networks' *outputs*, and not MAML — is what a "weighted average of the adapted parameters"
# describes. The direction $\theta - \overline{\varphi}$ can be handed to Adam like a gradient, as this
# chapter does to compare all three methods with the same meta-optimizer (Reptile's own code takes
# the interpolation step above instead, with ε annealed linearly to 0).
# Written out in full for one meta-batch:

# %%
def reptile_direction_by_hand(model, params, x, y, inner_lr, inner_steps):
    """θ − mean_i φ_i, with φ_i from `inner_steps` plain SGD steps on task i's data."""
    phis = []
    for i in range(x.shape[0]):
        phi = {k: v.detach().clone() for k, v in params.items()}
        for _ in range(inner_steps):
            phi = {k: v.requires_grad_() for k, v in phi.items()}
            grads = torch.autograd.grad(F.mse_loss(functional_call(model, phi, (x[i],)), y[i]),
                                        list(phi.values()))
            phi = {k: (v - inner_lr * g).detach() for (k, v), g in zip(phi.items(), grads)}
        phis.append(phi)
    return {k: params[k].detach() - torch.stack([p[k] for p in phis]).mean(0) for k in params}


mb = sample_sinusoid_tasks(4, K_SHOT, generator=torch.Generator().manual_seed(1)).to(dtype=torch.float64)
x_all = torch.cat([mb.x_support, mb.x_query], dim=1)     # Reptile trains on all of a task's points
y_all = torch.cat([mb.y_support, mb.y_query], dim=1)
by_hand = reptile_direction_by_hand(net, params, x_all, y_all, INNER_LR, REPTILE_INNER_STEPS)
from_package = reptile_gradient(net, params, x_all, y_all, inner_lr=INNER_LR,
                                inner_steps=REPTILE_INNER_STEPS)
for k in params:
    torch.testing.assert_close(from_package[k], by_hand[k], rtol=1e-10, atol=1e-14)
print("mamlbook.algorithms.reptile.reptile_gradient matches the hand-written Reptile")

# %% [markdown]
# ## 4. MAML, FOMAML and Reptile at an equal budget
#
# Same network (1-40-40-1, float32), same meta-batch of 25 tasks and Adam (β = 1e-3) as the
# official code's sinusoid run, same number of meta-steps; MAML and FOMAML adapt with one step of α
# = 0.01 on K = 10 points and
# are scored on 10 others; Reptile takes 5 SGD steps on all 20 points of each task. All three
# are then evaluated the same way: one SGD step of α = 0.01 on K = 10 new points.
#
# While MAML trains, every `COSINE_EVERY` meta-steps we compute both the second- and the
# first-order meta-gradient on a fixed probe meta-batch at the current θ, and record their
# cosine similarity. The memory column counts the bytes autograd **saves for the backward
# pass** during one meta-step (a `saved_tensors_hooks` tally: the graph that second-order
# MAML must keep, independent of allocator noise).

# %%
def saved_graph_bytes(fn):
    """Bytes of the tensors autograd saves for backward while ``fn`` runs."""
    total = 0

    def pack(t):
        nonlocal total
        total += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return total


def flat_grad(loss, params):
    return torch.cat([g.reshape(-1) for g in torch.autograd.grad(loss, list(params.values()))])


def train(method, iterations, seed=SEED):
    """Meta-train a fresh 1-40-40-1 net with 'maml', 'fomaml' or 'reptile'; returns (model, log)."""
    torch.manual_seed(seed)
    model = SinusoidMLP()
    params = dict(model.named_parameters())
    opt = make_meta_optimizer(model, META_LR)
    gen = torch.Generator().manual_seed(seed + 1)
    probe = sample_sinusoid_tasks(META_BATCH_SIZE, K_SHOT, generator=torch.Generator().manual_seed(123))
    probe = (probe.x_support, probe.y_support, probe.x_query, probe.y_query)
    log = {"cos_it": [], "cos": [], "seconds": 0.0}

    def step(b):
        opt.zero_grad(set_to_none=True)
        if method == "reptile":
            d = reptile_gradient(model, params, torch.cat([b.x_support, b.x_query], 1),
                                 torch.cat([b.y_support, b.y_query], 1), inner_lr=INNER_LR,
                                 inner_steps=REPTILE_INNER_STEPS)
            for k, p in params.items():
                p.grad = d[k]
        else:
            meta_loss(model, params, b.x_support, b.y_support, b.x_query, b.y_query,
                      inner_lr=INNER_LR, first_order=method == "fomaml").backward()
        opt.step()

    for it in trange(iterations, desc=method, mininterval=1.0):
        b = sample_sinusoid_tasks(META_BATCH_SIZE, K_SHOT, generator=gen)
        t0 = time.perf_counter()
        step(b)
        log["seconds"] += time.perf_counter() - t0
        if method == "maml" and it % COSINE_EVERY == 0:
            g2 = flat_grad(meta_loss(model, params, *probe, inner_lr=INNER_LR), params)
            g1 = flat_grad(meta_loss(model, params, *probe, inner_lr=INNER_LR, first_order=True), params)
            log["cos_it"].append(it)
            log["cos"].append(F.cosine_similarity(g2, g1, dim=0).item())
    b = sample_sinusoid_tasks(META_BATCH_SIZE, K_SHOT, generator=torch.Generator().manual_seed(7))
    log["graph_bytes"] = saved_graph_bytes(lambda: step(b))
    return model, log


runs = {m: train(m, ITERATIONS) for m in ("maml", "fomaml", "reptile")}

# %%
after_one_step = {m: task_curves(model, K_SHOT, INNER_LR, max_steps=1, num_tasks=NUM_EVAL_TASKS)[:, 1]
                  for m, (model, _) in runs.items()}        # (tasks,) each, the same tasks for all three
results = {m: mean_ci95(v) for m, v in after_one_step.items()}
rows = []
for m, (model, log) in runs.items():
    mean, ci = results[m]
    rows.append([m.upper() if m != "fomaml" else "First-order MAML", format_ci(mean, ci, 3),
                 f"{1e3 * log['seconds'] / ITERATIONS:.2f}", f"{log['graph_bytes'] / 1024:.0f}"])
display(Markdown(SHORT_RUN + f"**{ITERATIONS} meta-steps each; query MSE after 1 step on {NUM_EVAL_TASKS} new "
                 f"tasks (mean ± 95% CI)**\n\n"
                 + markdown_table(["method", "MSE after 1 step", "ms / meta-step",
                                   "autograd graph per step (KiB)"], rows)))
assert runs["maml"][1]["graph_bytes"] > runs["fomaml"][1]["graph_bytes"]   # second order keeps more

# %% [markdown]
# From here on the book counts with the package's copy of this function,
# `mamlbook.measure.bench.saved_graph_bytes` (chapter 4 does); on one MAML meta-loss it counts the bytes
# ours counts:

# %%
from mamlbook.measure.bench import saved_graph_bytes as package_saved_graph_bytes

b = sample_sinusoid_tasks(META_BATCH_SIZE, K_SHOT, generator=torch.Generator().manual_seed(7))
net = runs["maml"][0]
one_meta_loss = lambda: meta_loss(net, dict(net.named_parameters()), b.x_support, b.y_support, b.x_query,  # noqa: E731
                                  b.y_query, inner_lr=INNER_LR)
assert saved_graph_bytes(one_meta_loss) == package_saved_graph_bytes(one_meta_loss) > 0

# %%
fig, ax = plt.subplots(figsize=(6, 3.5))
ax.plot(runs["maml"][1]["cos_it"], runs["maml"][1]["cos"], marker=".")
ax.set_xlabel("meta-training iteration (MAML run)")
ax.set_ylabel("cosine(second-, first-order meta-gradient)")
ax.set_title("How well FOMAML's gradient points the right way")
ax.grid(alpha=0.3)
plt.show()
cosines = torch.tensor(runs["maml"][1]["cos"])
print(f"cosine similarity: min {cosines.min():.4f}, median {cosines.median():.4f}")

# %% [markdown]
# **Reading the results.** The three models met the same test tasks, so each is compared with MAML
# through the 95% CI of the per-task differences (a paired test). The sentences below are generated
# from this run's numbers.

# %%
def versus_maml(method):
    d, d_ci = mean_ci95(after_one_step[method] - after_one_step["maml"])
    word = ("worse than" if d - d_ci > 0 else "better than" if d + d_ci < 0
            else "not significantly different from")
    return f"{NAMES[method]} − MAML = {format_ci(d, d_ci, 3)}: {NAMES[method]} is {word} MAML"


NAMES = {"maml": "MAML", "fomaml": "first-order MAML", "reptile": "Reptile"}
ms_per_step = {m: 1e3 * log["seconds"] / ITERATIONS for m, (_, log) in runs.items()}
display(Markdown(SHORT_RUN + "\n".join([
    f"- With α = {INNER_LR} the first-order meta-gradient's cosine with the true one stayed between "
    f"{cosines.min():.4f} and {cosines.max():.4f} (median {cosines.median():.4f}): the Hessian term "
    + ("turns the direction very little." if cosines.min() > 0.95 else "is not negligible for the direction."),
    f"- After {ITERATIONS:,} meta-steps each, query MSE after one step on {NUM_EVAL_TASKS} paired tasks: "
    f"{versus_maml('fomaml')}; {versus_maml('reptile')}.",
    f"- Per meta-step here: MAML {ms_per_step['maml']:.2f} ms, first-order MAML {ms_per_step['fomaml']:.2f} ms, "
    f"Reptile ({REPTILE_INNER_STEPS} inner steps, no query loss) {ms_per_step['reptile']:.2f} ms; first-order "
    "MAML keeps a smaller graph (asserted above), because nothing flows back through the inner gradient."])))

# %% [markdown]
# A gradient that points *almost* the right way can still train a worse model: the small
# differences add up over tens of thousands of steps. Chapter 8's full-length race gives each
# algorithm the same **wall-clock** budget on the same tasks (first-order MAML, cheaper per step,
# takes more steps). The next cell reads its recorded result from
# `results/compare/sinusoid_full.json` — a recorded run, not run now, labelled with its machine and
# date. (On mini-ImageNet the MAML paper, §5.2, reports first-order MAML close to MAML: 48.07 ±
# 1.75 % against 48.70 ± 1.84 % for 5-way 1-shot, 63.15 ± 0.91 % against 63.11 ± 0.92 % for 5-shot —
# an external figure, quoted from the paper, for a different problem.)

# %%
race_path = find_recorded("results/compare/sinusoid_full.json")
if race_path is None:
    print("results/compare/sinusoid_full.json is not on this machine (it is in the book's repository).")
else:
    race = json.loads(race_path.read_text())
    row = {r["algorithm"]: r for r in race["rows"]}
    print(f"Recorded: chapter 8's race, {race['date'][:10]}, {race['machine']['device']} "
          f"({race['machine']['cpu_threads']} thread), torch {race['machine']['torch']}, "
          f"{row['maml']['budget_s']} s per algorithm, {row['maml']['num_test_tasks']} test tasks — not run now.")
    for m in ("maml", "fomaml"):
        r = row[m]
        print(f"  {NAMES[m]:>16}: {r['iterations']:,} meta-steps, query MSE after one step "
              f"{format_ci(r['mean'], r['ci95'], 3)} (median {r['median']:.3f})")
    fo, so = row["fomaml"], row["maml"]
    print("  → with more meta-steps, first-order MAML ended "
          + ("worse than" if fo["mean"] - fo["ci95"] > so["mean"] + so["ci95"] else "not clearly worse than")
          + " MAML (non-overlapping 95% CIs; that file keeps no per-task values for a paired test)")

# %% [markdown]
# ## Summary
#
# - The MAML meta-gradient for one inner step is $(I - \alpha H_s)\nabla L_q(\theta')$; autograd
#   computes the Hessian term as a Hessian-vector product, never the Hessian.
# - We matched autograd against an explicit Hessian to 1e-10 in float64.
# - FOMAML drops $\alpha H_s g_q$ (exactly: its gradient is $\nabla L_q(\theta')$); Reptile moves θ
#   toward the average of the task-adapted parameters. Both are in `mamlbook`
#   (`first_order=True`, `mamlbook.algorithms.reptile`).
#
# ## Exercises
#
# **Exercise 1.** A Hessian-vector product is the directional derivative of the gradient:
# $H_s v \approx \big(\nabla L_s(\theta + \varepsilon v) - \nabla L_s(\theta - \varepsilon v)\big) / 2\varepsilon$.
# Compute `hvp_fd` this way for $v = g_q$ and check it against `hvp` above (central differences
# in float64 are good to about 1e-7 relative here).

# %%
### BEGIN SOLUTION
eps = 1e-5
grad_s = lambda vec: torch.autograd.functional.jacobian(lambda u: loss_at(u, xs, ys), vec)
hvp_fd = (grad_s(theta + eps * g_q) - grad_s(theta - eps * g_q)) / (2 * eps)
### END SOLUTION
assert ((hvp_fd - hvp).norm() / hvp.norm()).item() < 1e-6

# %% [markdown]
# **Exercise 2.** Show that Reptile with **one** inner step is α times the gradient of the
# joint-training loss $\frac1T\sum_i L_i(\theta)$ (so it needs several steps to be more than
# joint training). Compute `joint_direction` from `x_all`, `y_all` without `mamlbook.algorithms.reptile`.

# %%
### BEGIN SOLUTION
joint = sum(F.mse_loss(functional_call(net, params, (x_all[i],)), y_all[i]) for i in range(4)) / 4
joint_direction = {k: INNER_LR * g for k, g in zip(params, torch.autograd.grad(joint, list(params.values())))}
### END SOLUTION
one_step = reptile_gradient(net, params, x_all, y_all, inner_lr=INNER_LR, inner_steps=1)
for k in params:
    torch.testing.assert_close(one_step[k], joint_direction[k], rtol=1e-10, atol=1e-14)

# %% [markdown]
# **Exercise 3.** With two inner steps the meta-gradient is
# $(I - \alpha H_s(\theta))(I - \alpha H_s(\theta'))\nabla L_q(\theta'')$: the transpose of the
# Jacobian $(I - \alpha H_s(\theta'))(I - \alpha H_s(\theta))$ of $\theta \mapsto \theta''$, with
# symmetric Hessians. Compute it with explicit
# Hessians and compare with `meta_loss(..., inner_steps=2)`.

# %%
### BEGIN SOLUTION
eye = torch.eye(theta.numel(), dtype=torch.float64)
t1 = theta - ALPHA_DEMO * torch.autograd.functional.jacobian(lambda v: loss_at(v, xs, ys), theta)
t2 = t1 - ALPHA_DEMO * torch.autograd.functional.jacobian(lambda v: loss_at(v, xs, ys), t1)
gq2 = torch.autograd.functional.jacobian(lambda v: loss_at(v, xq, yq), t2)
H0 = torch.autograd.functional.hessian(lambda v: loss_at(v, xs, ys), theta)
H1 = torch.autograd.functional.hessian(lambda v: loss_at(v, xs, ys), t1)
two_step_explicit = (eye - ALPHA_DEMO * H0) @ (eye - ALPHA_DEMO * H1) @ gq2
### END SOLUTION
two_step = flat_grad(meta_loss(net, params, *batch, inner_lr=ALPHA_DEMO, inner_steps=2, batched=False), params)
torch.testing.assert_close(two_step, two_step_explicit, rtol=1e-10, atol=1e-12)
