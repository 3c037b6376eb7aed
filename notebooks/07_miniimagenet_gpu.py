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
# # Chapter 7 — MAML on mini-ImageNet, on a GPU
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/mamlbook/mamlbook/blob/main/notebooks/07_miniimagenet_gpu.ipynb)
#
# mini-ImageNet is the benchmark where MAML reproductions drift. Against the paper's 48.70 ± 1.84% on
# 5-way 1-shot, PyTorch re-runs with the same Conv4 report 46.2% (dragen1860/MAML-Pytorch's README, a
# first-order port), 46.47% (Chen et al. 2019, "A Closer Look at Few-shot Classification"), 46.76%
# (mmfewshot's configs), 47.41% (LibFewShot's reproduce README) and 48.3% (learn2learn's
# examples/vision README). This chapter runs the paper's protocol on a GPU and measures what each
# option costs.
#
# **What you will learn**
# - how to turn any common mini-ImageNet download into one uint8 cache and keep a whole split on the GPU;
# - the paper's settings: 5 inner steps at α = 0.05 (mean CE; the official 0.01 × N), meta-batch 4 (1-shot)
#   or 2 (5-shot), 15 query images per class in training, 10 steps at test, second-order by default;
# - the two evaluation protocols: 15 queries per class (tighter CIs) and the paper's K per class
#   (comparable to its ±1.84);
# - what mixed precision (bf16 autocast, or fp16 with a gradient scaler) does to speed and accuracy.
#
# It needs a CUDA GPU and the real data. Without them it says so and, **in fast mode only**, runs a tiny
# configuration on the FAKE stand-in so that the code path is exercised; those numbers mean nothing.
#
# **On Colab**, choose *Runtime → Change runtime type → GPU* (T4 or better) before running the first
# cell; this notebook asks Colab for a GPU in its metadata, but the choice is yours to confirm.

# %%
# Google Colab only: install the book's package from its repository (torch is already there).
import subprocess, sys
if "google.colab" in sys.modules:
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps",
                    "git+https://github.com/mamlbook/mamlbook"], check=True)

# %%
from mamlbook.config import banner, pick

banner("Chapter 7");

# %% tags=["parameters"]
seed = 0
preset = "miniimagenet-5w1s"          # or "miniimagenet-5w5s"
data_root = None                      # folder with mini-ImageNet in any supported layout (None: data/miniimagenet)
iterations = pick(60_000, 3)
first_order = False                   # second-order by default, as the paper
amp_options = pick([False, True], [False])   # measure float32 and mixed precision (AMP needs a GPU)
test_tasks = pick(600, 10)
val_every = pick(1000, 2)
val_tasks = pick(200, 4)
run_dir = pick("runs/chapter07", None)  # on Colab: a folder on the mounted Drive; None: a temporary folder

# %%
import tempfile
import time
from pathlib import Path

import torch

from mamlbook.config import fast_mode
import tempfile as _tempfile
run_dir = run_dir or _tempfile.mkdtemp(prefix="mamlbook-chapter07-")
from mamlbook.data import make_fake_miniimagenet
from mamlbook.fewshot import load_splits, meta_test, train_fewshot
from mamlbook.presets import PRESETS
from mamlbook.runs import find_recorded

has_gpu = torch.cuda.is_available()
device = torch.device("cuda" if has_gpu else "cpu")
print("GPU:", torch.cuda.get_device_name() if has_gpu else "NONE — this machine has no CUDA GPU.")

# %% [markdown]
# ## 1. Data: any layout → one uint8 cache → the GPU
#
# `load_miniimagenet(root, split)` reads learn2learn's pickles, `images/` + the Ravi & Larochelle CSVs,
# or class folders, and writes `mini-imagenet-<split>.npz` (N×84×84×3 uint8) next to them; later reads
# take seconds. `EpisodeSampler(split, ..., device="cuda")` copies the uint8 split to the GPU **once**
# (the meta-training split is 38,400 × 84 × 84 × 3 bytes, 0.8 GB) and builds every meta-batch there
# with index arithmetic.

# %%
cfg = PRESETS[preset].config.replace(iterations=iterations, first_order=first_order, test_tasks=test_tasks,
                                     val_every=val_every, val_tasks=val_tasks, seed=seed)
try:
    splits = load_splits(cfg, data_root)
    fake = any(s.fake for s in splits.values())
except FileNotFoundError as err:
    print("mini-ImageNet is NOT available here:\n", err)
    splits, fake = None, True
can_run_real = has_gpu and splits is not None and not fake
if not can_run_real:
    print("This chapter's real run needs a CUDA GPU and the real mini-ImageNet; "
          f"GPU: {'yes' if has_gpu else 'no'}, data: {'yes' if splits is not None and not fake else 'no'}.")
    if not fast_mode():
        raise SystemExit("Full mode stops here: run it on a machine with a GPU and the data (e.g. Colab).")
    tmp = Path(tempfile.mkdtemp())
    make_fake_miniimagenet(tmp / "miniimagenet", "csv", classes_per_split=(6, 5, 5), images_per_class=20,
                           csv_dir=None)
    splits = load_splits(cfg, tmp)
    fake = True
    cfg = cfg.replace(meta_batch_size=2, inner_steps=1, test_inner_steps=2, k_query=2, filters=8,
                      grad_clip=10.0 * cfg.k_shot / (cfg.n_way * 2))     # the clip follows Q (section 2)
    print("FAKE DATA, TINY CONFIG: meta-batch 2, 1 inner step, 2 test steps, 2 queries/class, 8 filters — "
          "only to run the code path; the numbers below say nothing about mini-ImageNet.")
for name, s in splits.items():
    print(f"{name:>5}: {s.num_classes} classes, {len(s)} images ({s.name})")

# %% [markdown]
# ## 2. Meta-training, float32 and mixed precision
#
# `train_fewshot` runs the paper's loop: 5 inner steps with second-order meta-gradients (`first_order=True`
# drops the Hessian term), Adam β = 1e-3, the meta-gradient clipped element-wise as the official code does
# on mini-ImageNet (converted to our loss's units, next cell), validation on the 16 meta-val classes,
# atomic checkpoints. With `amp=True` the forward
# and backward passes run under autocast: bfloat16 where the GPU supports it (no loss scaling), else
# float16 with a `GradScaler`.
#
# "float32" here means true float32. PyTorch lets cuDNN round float32 convolutions to TF32 (a 10-bit
# mantissa) by default on Ampere and newer GPUs; ordinary training hardly notices, but the
# second-order meta-gradient does (section 4 shows by how much), so `FewShotConfig.tf32` is `False`
# unless you ask for it.
#
# **Two conversions, one reason: the official losses are not the mean cross-entropy.**
#
# - *Inner loss, α.* The official inner loss is Σ xent / K over the N·K support images = N × the mean
#   cross-entropy (chapter 6), so its α = 0.01 is α = 0.01 × N = 0.05 with `F.cross_entropy`.
# - *Outer loss, the clip.* The official outer loss, `tf.reduce_sum(lossesb) / meta_batch_size` in
#   `maml.py`, sums the same per-example xent / K over the N·Q query images of each task: it is
#   (N·Q/K) × the mean cross-entropy — 75× for 5-way 1-shot with Q = 15, 15× for 5-shot. Its
#   `tf.clip_by_value(grad, -10, 10)` acts on the gradient of *that* loss, which is (N·Q/K) times
#   ours. The same clip on our gradient is therefore **±10·K/(N·Q)**: ±0.133 for 1-shot, ±0.667 for
#   5-shot. A port that clips the mean-CE gradient at ±10 clips nothing at all.
#
# Adam is otherwise blind to the scale of the loss (up to its ε), so the clip is the only place where
# the 75× or 15× matters. `tests/test_presets.py` checks in float64 that the official loss clipped at
# ±10 and ours clipped at the converted value give the same clipped meta-gradient, up to that factor.

# %%
for name in ("miniimagenet-5w1s", "miniimagenet-5w5s"):
    c = PRESETS[name].config
    factor = c.n_way * c.k_query / c.k_shot               # official outer loss / mean cross-entropy
    print(f"{name}: α = {c.inner_lr:g} (0.01 × {c.n_way}); official outer loss = {factor:g} × mean CE; "
          f"official clip ±10 → ±{c.grad_clip:.3f} here")
    assert abs(c.grad_clip * factor - 10.0) < 1e-12

# %%
runs, timings = {}, {}
for amp in amp_options:
    key = "AMP" if amp else "fp32"
    c = cfg.replace(amp=amp)
    if has_gpu:
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    runs[key] = train_fewshot(c, splits, out=Path(run_dir) / f"{preset}-{key}", device=device,
                              progress=True, desc=f"{preset} {key}")
    timings[key] = (time.perf_counter() - t0) / max(1, runs[key].iteration)
    print(f"{key}: {runs[key].iteration} iterations, {1000 * timings[key]:.0f} ms/iteration (incl. validation)")

# %% [markdown]
# ## 3. Meta-test: two protocols
#
# 600 tasks from the 20 meta-test classes, adapted with 10 SGD steps, scored with 15 queries per class
# and with K queries per class (the paper's). Same tasks' classes and support draws for both (same seed).

# %%
results = {}
for key, r in runs.items():
    results[key] = meta_test(r.best_model(), r.config, splits["test"], num_tasks=test_tasks, seed=seed,
                             device=device)
    for protocol, res in results[key].items():
        m, c = res.at(r.config.test_inner_steps)
        print(f"{'FAKE ' if fake else ''}{key}, {protocol}: {m:.1f} ± {c:.1f}% over {res.num_tasks} tasks")
print(f"paper ({preset}): {PRESETS[preset].paper_acc} ± {PRESETS[preset].paper_ci95}% ({PRESETS[preset].source})")

# %%
import matplotlib.pyplot as plt

fig, ax = plt.subplots(figsize=(6, 3.5))
for key, res_by_protocol in results.items():
    for protocol, res in res_by_protocol.items():
        ax.errorbar(res.steps, res.mean, yerr=res.ci95, marker="o", capsize=3, label=f"{key}, {protocol}")
ax.set(xlabel="SGD steps", ylabel="query accuracy (%)",
       title=("FAKE DATA, tiny config: " if fake else "") + "meta-test adaptation")
ax.legend(fontsize=8)
plt.show()
assert all(0 <= res.mean[-1] <= 100 for rp in results.values() for res in rp.values())

# %% [markdown]
# ## 4. What one GPU session measured (recorded, not run now)
#
# The cells above time *your* run. The book's own GPU numbers come from one GPU session
# (`bash scripts/gpu_checks.sh`; raw JSON in the repository's `results/gpu/`, each file with the GPU,
# torch version and date it was recorded on, which the next cell prints), on mini-ImageNet-shaped
# **synthetic** images through the real code path:
#
# - `gpu_check`: ms per meta-training iteration and peak memory, fp32 and AMP, second- and first-order;
# - `precision_check`: how far each precision's meta-gradient is from the float64 one, on the same GPU;
# - `amp_check`: fp32 and AMP trained side by side from the same θ₀ on the same episodes, then tested.
#
# The next cells read those files (when the repository is here) and plot them.

# %%
import json
import math

gpu_results = find_recorded("results/gpu")          # the folder, from here, its parent or the checkout
if gpu_results is None:
    print("results/gpu/ is not here (it is in the repository, not in the pip package): skipping section 4.")
else:
    recorded = {f.stem: json.loads(f.read_text()) for f in sorted(gpu_results.glob("*.json"))}
    for name, rec in recorded.items():
        e = rec.get("environment", {}) if isinstance(rec, dict) else {}
        if "device_name" in e:
            print(f"{name:>20}: RECORDED on {e['device_name']}, torch {e['torch']}, "
                  f"{e['date'][:16].replace('T', ' ')} UTC — not run now.")
    env = recorded["precision_check"]["environment"]
    for name in ("gpu_check_run1", "gpu_check_run2", "gpu_check_run3_tf32"):
        for r in recorded[name]["rows"]:
            if "ms_median" in r:
                tf32 = r.get("tf32", True)      # runs 1-2 predate the switch: PyTorch's default, TF32 on
                label = r["precision"] + (f" (TF32 {'on' if tf32 else 'off'})" if r["precision"] == "float32" else "")
                if r["status"] != "ok":      # run 1 failed; its own report shows no numbers, nor do we
                    print(f"{name:>20}: {r['order']:>6}-order {label:<28} failed ({r.get('reason', '?')})")
                    continue
                print(f"{name:>20}: {r['order']:>6}-order {label:<28} {r['ms_median']:6.1f} ms/it  "
                      f"{r['peak_mem_mb']:6.0f} MB  → {r['projected_minutes']:5.0f} min for 60,000 iterations")

# %%
if gpu_results is not None:
    rows = [r for r in recorded["precision_check"]["rows"] if r["status"] == "ok"]
    variants = list(dict.fromkeys(r["variant"] for r in rows))
    fig, ax = plt.subplots(figsize=(7, 3.5))
    for i, w in enumerate(("W2", "W3")):
        errs = [next(r["rel_err"] for r in rows if r["workload"] == w and r["variant"] == v) for v in variants]
        ax.bar([j + 0.4 * i for j in range(len(variants))], errs, width=0.4, label=w)
    ax.set_xticks([j + 0.2 for j in range(len(variants))], variants, rotation=30)
    ax.set(yscale="log", ylabel="‖g − g_float64‖ / ‖g_float64‖",
           title=f"RECORDED on {env['device_name']}: meta-gradient error by precision")
    ax.legend()
    plt.show()

# %% [markdown]
# Read the figure from left to right, from the float64 batched path to bf16 autocast (W2 is the
# Omniglot Conv4 workload, W3 the mini-ImageNet one; `docs/benchmarks.md` defines them). The next cell
# says how far each group of bars is from the float64 meta-gradient, how TF32 on the batched path, whose
# tasks run as grouped convolutions, compares with TF32 on the loop, and how much bf16 changed the step
# time in the same session.

# %%
if gpu_results is not None:
    err = {(r["workload"], r["variant"]): r["rel_err"] for r in recorded["precision_check"]["rows"]
           if r["status"] == "ok"}
    group = lambda prefix: [v for (_, variant), v in err.items() if variant.startswith(prefix)]
    span = lambda prefix: f"{100 * min(group(prefix)):.0f}–{100 * max(group(prefix)):.0f} %"
    order = lambda xs: ", ".join(sorted({f"1e{math.floor(math.log10(x))}" for x in xs}))   # orders of magnitude
    step_ms = {(r["order"], r["precision"]): r["ms_median"] for r in recorded["gpu_check_run2"]["rows"]
               if r["status"] == "ok"}
    bf16_change = {o: step_ms[o, "autocast bfloat16"] / step_ms[o, "float32"] - 1 for o in ("second", "first")}
    vmap_vs_loop = [err[w, "tf32-vmap"] / err[w, "tf32-loop"] for w in ("W2", "W3")]
    print(f"RECORDED on {env['device_name']}, {env['date'][:10]}: the batched path in float64 equals the loop "
          f"to rounding ({order(group('f64'))}); true float32 is {order(group('fp32'))} away; TF32 is "
          f"{span('tf32')} away, {min(vmap_vs_loop):.0f}–{max(vmap_vs_loop):.0f}× further on the batched path "
          f"(W2, W3) than on the loop; bf16 autocast {span('bf16')}. In gpu_check_run2 (TF32 on, PyTorch's "
          f"default; {recorded['gpu_check_run2']['environment']['date'][:10]}), bf16 autocast changed the median "
          f"step time by " + " and ".join(f"{100 * c:+.0f} % ({o}-order)" for o, c in bf16_change.items()) + ".")

# %% [markdown]
# Where the step time barely moves with precision, the likely reason (our reading, not yet profiled)
# is that the step is bound by launching many small kernels, not by arithmetic; AMP then buys little
# speed. Whether it costs accuracy is what `amp_check` measured, training fp32 and AMP side by side
# over a short run; the next cell prints what it recorded:

# %%
if gpu_results is not None:
    amp_rec = recorded["amp_check"]
    print(f"first meta-batch: AMP vs fp32 meta-gradient cosine {amp_rec['grad_cosine']:.2f}, "
          f"relative difference {amp_rec['grad_rel_err']:.2f}")
    for r in amp_rec["rows"]:
        acc = r["acc[1 queries/class]"]
        print(f"{r['precision']:>18}: {amp_rec['iterations']} iterations, {r['ms_per_iteration']:.0f} ms/it, "
              f"test accuracy {acc[0]:.1f}% → {acc[1]:.1f} ± {r['ci95[1 queries/class]']:.1f}% "
              f"(1 query/class, {amp_rec['tasks']} SYNTHETIC tasks)")
    (fp32_acc, fp32_ci), (amp_acc, amp_ci) = ((r["acc[1 queries/class]"][1], r["ci95[1 queries/class]"])
                                              for mode in ("fp32", "amp") for r in amp_rec["rows"] if r["mode"] == mode)
    print(f"AMP minus fp32 after training: {amp_acc - fp32_acc:+.1f} points; the two 95% intervals "
          + ("overlap." if abs(amp_acc - fp32_acc) <= amp_ci + fp32_ci else "do not overlap."))

# %% [markdown]
# ## 5. Past one GPU: the meta-batch across processes
#
# The meta-batch is embarrassingly parallel: each task's adaptation and meta-gradient are independent
# until the average (1/T) Σ_i ∇θ L_i(θ'_i). So N processes (*ranks*), one per GPU, can each adapt T/N
# of the tasks and average their meta-gradients before the one Adam step. `torchrun` starts the ranks;
# the book's command line does the rest (`mamlbook/distributed.py`; the whole story, several machines
# and SLURM in `docs/distributed.md`):
#
# ```bash
# torchrun --standalone --nproc_per_node=4 -m mamlbook train --preset miniimagenet-5w1s --data DIR \
#     --out runs/mini-4gpu --meta-batch-size 8      # one rank per GPU, backend nccl
# ```
#
# Every rank draws the *whole* meta-batch from the same seeded generator and keeps its slice, so the
# tasks do not depend on N; each rank's loss is the mean over its T/N tasks, so the mean of the ranks'
# gradients is the gradient of the mean over all T. The run is the one-process run up to the rounding
# of the sum. The meta-batch must divide by N: the paper's 4 (1-shot) splits over 2 or 4 GPUs.
#
# Two ranks run on a CPU too (backend gloo). The next cell trains the sinusoid preset for 100
# iterations twice — one process, then two ranks — and compares the meta-losses and the final θ
# (a short demonstration run in both modes, not a result).

# %%
import os
import subprocess
import sys

from mamlbook.runs import load_checkpoint

demo = Path(tempfile.mkdtemp(prefix="mamlbook-ranks-"))
train_args = ["-m", "mamlbook", "train", "--preset", "sinusoid", "--iterations", "100", "--meta-batch-size", "10",
              "--eval-tasks", "20", "--no-compile", "--no-progress", "--device", "cpu"]
launchers = {"one process": [], "2 ranks": ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]}
states = {}
for name, launch in launchers.items():
    done = subprocess.run([sys.executable, *launch, *train_args, "--out", str(demo / name)], capture_output=True,
                          text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-2000:]
    states[name] = load_checkpoint(demo / name / "checkpoint.pt")
    print(f"{name}: world size {json.loads((demo / name / 'metrics.json').read_text())['world_size']}")
one, two = states["one process"], states["2 ranks"]
dtheta = max((one["learner"]["model"][k] - two["learner"]["model"][k]).abs().max().item()
             for k in one["learner"]["model"])
print(f"largest |θ(1 process) − θ(2 ranks)| after 100 meta-steps: {dtheta:.1e} (float32 rounding)")

fig, ax = plt.subplots(figsize=(7, 3))
for name, state in states.items():
    ax.plot(range(1, len(state["losses"]) + 1), state["losses"], label=name, lw=1, ls="-" if name == "one process" else "--")
ax.set(xlabel="meta-iteration", ylabel="meta-loss (query MSE)", title="The same run on one process and on two ranks")
ax.legend()
plt.show()
assert dtheta < 1e-3

# %% [markdown]
# The two curves lie on top of each other: the same tasks, the same meta-gradients. What to expect from
# more GPUs: a rank holds the graphs of its T/N tasks only (less memory per GPU), and steps get faster
# when each rank's share keeps its GPU busy — with the paper's meta-batch of 4, one task per GPU is
# little work per step, so the gain is small; bigger meta-batches, bigger backbones and more inner steps
# gain more. On this book's 2-core development machine two CPU ranks ran Omniglot 5-way 1-shot 1.36×
# as many meta-steps per second as one process (median over 4 rounds), measured while other jobs loaded
# the machine heavily (one-minute load average 3.7–8.1 before the runs); the ceiling is 2×. Recorded on
# 2026-12-01 in `results/distributed/omniglot_scaling_cpu_2026-12-01.txt`; the method and table are in
# `docs/benchmarks.md`.

# %% [markdown]
# ## Summary
#
# - The whole uint8 split lives on the GPU; meta-batches are gathered there, so the GPU never waits for data.
# - The paper's mini-ImageNet protocol: α = 0.05 in mean-CE units (0.01 × 5), 5 inner steps, meta-batch
#   4 / 2, 15 queries per class in training, 10 steps at test; and the official code's clip of ±10, which
#   in mean-CE units is ±10·K/(N·Q): ±0.133 (1-shot), ±0.667 (5-shot).
# - Report both protocols: K queries per class is comparable to the paper's intervals; 15 gives tighter ones.
# - Precision matters more for meta-gradients than for ordinary gradients: keep TF32 off (the default
#   here); treat AMP as a speed option whose gradients are approximate, and check accuracy when you use it.
# - Past one GPU, `torchrun --nproc_per_node=N -m mamlbook train …` splits the meta-batch across N ranks
#   and averages the meta-gradients: the same run, faster or bigger (`docs/distributed.md`).
#
# ## Exercises
#
# **1.** The paper's ±1.84 comes from 600 tasks with K = 1 query per class (5 query images per task). How
# wide would the interval be with 15 queries per class if the per-task standard deviation shrank by √15?
# Write `ci_with_queries(ci_k, k, q)`.

# %%
def ci_with_queries(ci_k, k, q):
    ### BEGIN SOLUTION
    return ci_k * (k / q) ** 0.5
    ### END SOLUTION


# %%
assert abs(ci_with_queries(1.84, 1, 15) - 1.84 / 15 ** 0.5) < 1e-12
