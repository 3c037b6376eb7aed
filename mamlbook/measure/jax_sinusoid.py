"""The paper's sinusoid run written in the JAX idiom of the MAML tutorials: the peer to beat on a CPU.

    python -m mamlbook.measure.jax_sinusoid [--iterations 70000] [--seed 0] [--json PATH]

Needs ``pip install 'mamlbook[bench]'`` (jax, optax). The same workload as
``python -m mamlbook train --preset sinusoid`` (Finn et al. 2017 §5.1 and the official code's settings,
listed with their sources in :mod:`mamlbook.sinusoid`; PyTorch's default initialisation), then the
query MSE after 0 and 1 SGD steps on 600 new tasks with the official code's 95 % CI.

Written as the JAX tutorials write MAML (e.g. Eric Jang's "Meta-learning in 50 lines of JAX"):
``inner_step`` = one ``grad`` step, the meta-loss = ``mean(vmap(query_loss ∘ inner_step))``, and
one ``jit``-ted training step = task sampling with ``jax.random`` (inside the jit) +
``value_and_grad(meta_loss)`` + ``optax.adam``, called by a Python loop that keeps the losses as
device arrays (asynchronous dispatch left to work); JAX's defaults otherwise (float32, XLA's CPU
thread pool). The ``--json`` record: each phase's wall time, the whole process's from interpreter
start (``process_s``), the MSE with its CI, the loss curve, the versions and the machine.
:mod:`mamlbook.measure.race_jax` runs this file as a script, so the JAX process never imports torch
or mamlbook.
"""
from __future__ import annotations

import time

_T0 = time.perf_counter()

import argparse  # noqa: E402
import datetime  # noqa: E402
import importlib.util  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import os  # noqa: E402
import platform  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

__all__ = ["available", "init_params", "forward", "mse", "inner_step", "meta_loss", "sample_tasks",
           "make_train_step", "make_meta_grad", "params_from_torch", "evaluate", "run", "main"]

# Copies, so that the script runs without torch or mamlbook (tests/test_bench.py checks they match
# mamlbook.tasks and mamlbook.sinusoid). The same EVAL_SEED is not the same tasks: jax.random draws
# other numbers than torch.Generator from the same seed, so the two 600-task test sets are independent.
AMP_RANGE, PHASE_RANGE, INPUT_RANGE = (0.1, 5.0), (0.0, math.pi), (-5.0, 5.0)   # as mamlbook.tasks
EVAL_SEED = 2017                                                                    # as mamlbook.sinusoid


def available() -> bool:
    """True if jax and optax are installed (found, not imported: importing JAX changes this process,
    e.g. the peak-RSS baseline that ``python -m mamlbook bench``'s memory children inherit)."""
    return all(importlib.util.find_spec(name) is not None for name in ("jax", "optax"))


def _jax():
    import jax
    import jax.numpy as jnp
    return jax, jnp


def init_params(key, sizes=(1, 40, 40, 1)):
    """PyTorch's ``nn.Linear`` default: W (out, in) and b (out,) from U(±1/√in)."""
    jax, jnp = _jax()
    params = []
    for fan_in, fan_out in zip(sizes[:-1], sizes[1:]):
        key, kw, kb = jax.random.split(key, 3)
        bound = 1.0 / math.sqrt(fan_in)
        params.append((jax.random.uniform(kw, (fan_out, fan_in), minval=-bound, maxval=bound),
                       jax.random.uniform(kb, (fan_out,), minval=-bound, maxval=bound)))
    return params


def forward(params, x):
    """The MLP on (N, 1) inputs, PyTorch's layout (x @ W.T + b), ReLU between layers."""
    _, jnp = _jax()
    for i, (w, b) in enumerate(params):
        x = x @ w.T + b
        if i < len(params) - 1:
            x = jnp.maximum(x, 0.0)
    return x


def mse(params, x, y):
    _, jnp = _jax()
    return jnp.mean((forward(params, x) - y) ** 2)


def inner_step(params, x, y, inner_lr, first_order: bool = False):
    """θ' = θ − α ∇L_support(θ): one SGD step (differentiable: the meta-gradient is second-order,
    unless ``first_order``: then ∇L_support is a constant, ``stop_gradient``)."""
    jax, _ = _jax()
    g = jax.grad(mse)(params, x, y)
    if first_order:
        g = jax.lax.stop_gradient(g)
    return jax.tree_util.tree_map(lambda p, gi: p - inner_lr * gi, params, g)


def meta_loss(params, xs, ys, xq, yq, inner_lr, first_order: bool = False):
    """mean over tasks of L_query(inner_step(θ)): ``mean(vmap(query_loss ∘ inner_step))``."""
    jax, jnp = _jax()

    def task_loss(xs_i, ys_i, xq_i, yq_i):
        return mse(inner_step(params, xs_i, ys_i, inner_lr, first_order), xq_i, yq_i)
    return jnp.mean(jax.vmap(task_loss)(xs, ys, xq, yq))


def sample_tasks(key, num_tasks: int, k_shot: int, k_query: int | None = None):
    """A meta-batch of sinusoid tasks with ``jax.random``: (T, K, 1) support, (T, Q, 1) query."""
    jax, jnp = _jax()
    k_query = k_shot if k_query is None else k_query
    ka, kp, kx = jax.random.split(key, 3)
    amp = jax.random.uniform(ka, (num_tasks, 1, 1), minval=AMP_RANGE[0], maxval=AMP_RANGE[1])
    phase = jax.random.uniform(kp, (num_tasks, 1, 1), minval=PHASE_RANGE[0], maxval=PHASE_RANGE[1])
    x = jax.random.uniform(kx, (num_tasks, k_shot + k_query, 1), minval=INPUT_RANGE[0], maxval=INPUT_RANGE[1])
    y = amp * jnp.sin(x - phase)
    return x[:, :k_shot], y[:, :k_shot], x[:, k_shot:], y[:, k_shot:]


def make_train_step(optimizer, *, meta_batch_size: int = 25, k_shot: int = 10, inner_lr: float = 0.01):
    """One jitted iteration: sample tasks on the device, value_and_grad of the meta-loss, an optax step."""
    jax, _ = _jax()
    import optax

    @jax.jit
    def train_step(params, opt_state, key):
        key, sub = jax.random.split(key)
        xs, ys, xq, yq = sample_tasks(sub, meta_batch_size, k_shot)
        loss, grads = jax.value_and_grad(meta_loss)(params, xs, ys, xq, yq, inner_lr)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, key, loss
    return train_step


def make_meta_grad(inner_lr: float = 0.01, first_order: bool = False):
    """``jit(value_and_grad(meta_loss))`` on given data: what ``python -m mamlbook bench`` times on W1."""
    jax, _ = _jax()
    return jax.jit(jax.value_and_grad(lambda p, xs, ys, xq, yq: meta_loss(p, xs, ys, xq, yq, inner_lr, first_order)))


def params_from_torch(model) -> list:
    """The torch MLP's θ (``nn.Sequential`` of Linear/ReLU) as this module's [(W, b), …] (same layout)."""
    _, jnp = _jax()
    return [(jnp.asarray(m.weight.detach().cpu().numpy()), jnp.asarray(m.bias.detach().cpu().numpy()))
            for m in model if hasattr(m, "weight")]


def evaluate(params, *, num_tasks: int = 600, k_shot: int = 10, inner_lr: float = 0.01, steps: int = 1,
             seed: int = EVAL_SEED) -> dict:
    """Query MSE after 0..``steps`` SGD steps on ``num_tasks`` new tasks: mean and 1.96·std/√n per step."""
    jax, jnp = _jax()
    xs, ys, xq, yq = sample_tasks(jax.random.PRNGKey(seed), num_tasks, k_shot)

    @jax.jit
    def curve(params, xs, ys, xq, yq):
        def one(xs_i, ys_i, xq_i, yq_i):
            p, out = params, []
            for s in range(steps + 1):
                out.append(mse(p, xq_i, yq_i))
                if s < steps:
                    p = inner_step(p, xs_i, ys_i, inner_lr)
            return jnp.stack(out)
        return jax.vmap(one)(xs, ys, xq, yq)                     # (tasks, steps + 1)
    per_task = np.asarray(curve(params, xs, ys, xq, yq), dtype=np.float64)
    return {"steps": list(range(steps + 1)), "mean": per_task.mean(axis=0).tolist(),
            "ci95": (1.96 * per_task.std(axis=0) / math.sqrt(num_tasks)).tolist(), "num_tasks": num_tasks}


def _process_start_s() -> float | None:
    """Seconds since this process started (from /proc: includes the interpreter's own start-up)."""
    try:
        ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
        boot = float(Path("/proc/uptime").read_text().split()[0])
        return boot - ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


def run(iterations: int = 70_000, *, seed: int = 0, meta_batch_size: int = 25, k_shot: int = 10,
        inner_lr: float = 0.01, meta_lr: float = 1e-3, eval_tasks: int = 600, progress: bool = True) -> dict:
    """Meta-train and evaluate; returns the record (see the module docstring)."""
    jax, jnp = _jax()
    import optax
    import_s = time.perf_counter() - _T0
    t = time.perf_counter()
    key, init_key = jax.random.split(jax.random.PRNGKey(seed))
    params = init_params(init_key)
    optimizer = optax.adam(meta_lr)
    opt_state = optimizer.init(params)
    train_step = make_train_step(optimizer, meta_batch_size=meta_batch_size, k_shot=k_shot, inner_lr=inner_lr)
    setup_s = time.perf_counter() - t
    t = time.perf_counter()
    params, opt_state, key, loss = train_step(params, opt_state, key)   # compiles
    loss.block_until_ready()
    compile_s = time.perf_counter() - t
    losses = [loss]
    t = time.perf_counter()
    report_every = max(iterations // 10, 1)
    for it in range(1, iterations):
        params, opt_state, key, loss = train_step(params, opt_state, key)
        losses.append(loss)
        if progress and (it + 1) % report_every == 0:
            print(f"  iteration {it + 1:,}: meta-loss {float(loss):.3f}", flush=True)
    jax.block_until_ready(params)
    train_s = time.perf_counter() - t
    t = time.perf_counter()
    result = evaluate(params, num_tasks=eval_tasks, k_shot=k_shot, inner_lr=inner_lr, steps=1)
    eval_s = time.perf_counter() - t
    curve = [float(v) for v in losses]          # not jnp.stack(losses): 7 s for 5,000 scalars
    window = 100
    return {
        "implementation": "jax idiom: jit(value_and_grad(mean(vmap(query_loss ∘ inner_step)))) + optax.adam, "
                          "jax.random task sampling inside the jitted step",
        "config": {"iterations": iterations, "meta_batch_size": meta_batch_size, "k_shot": k_shot,
                   "inner_lr": inner_lr, "inner_steps": 1, "meta_lr": meta_lr, "seed": seed},
        "eval": {"K=10": {**result, "metric": "query MSE", "test_steps": 1}},
        "mse_1step": result["mean"][1], "mse_1step_ci95": result["ci95"][1],
        "wall_s": {"import": import_s, "setup": setup_s, "compile": compile_s, "train": train_s, "eval": eval_s,
                   "in_python": time.perf_counter() - _T0, "process": _process_start_s()},
        "ms_per_step": 1e3 * train_s / max(iterations - 1, 1),
        "loss_curve": [sum(curve[i:i + window]) / len(curve[i:i + window]) for i in range(0, len(curve), window)],
        "versions": {"jax": jax.__version__, "optax": optax.__version__, "jax_backend": jax.default_backend()},
    }


def _machine() -> dict:
    """Where it ran. Run as a file (as :mod:`~mamlbook.measure.race_jax` does) it imports neither torch nor mamlbook."""
    if __package__:
        from ..runs import machine_info
        return machine_info("cpu")
    return {"cpu_count": os.cpu_count(), "load_average": list(os.getloadavg()), "platform": platform.platform(),
            "python": platform.python_version(),
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m mamlbook.measure.jax_sinusoid", description=__doc__.split("\n")[0])
    p.add_argument("--iterations", type=int, default=70_000,
                   help="meta-training iterations (70,000, the official code's)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--eval-tasks", type=int, default=600)
    p.add_argument("--json", type=Path, default=None, help="write the record here")
    p.add_argument("--no-progress", dest="progress", action="store_false")
    args = p.parse_args(argv)
    if not available():
        print("error: jax and optax are not installed: pip install 'mamlbook[bench]' (or pip install jax optax)",
              file=sys.stderr)
        return 2
    if args.iterations < 1:
        p.error("--iterations must be ≥ 1")
    record = run(args.iterations, seed=args.seed, eval_tasks=args.eval_tasks, progress=args.progress)
    record["machine"] = _machine()
    record["command"] = "python -m mamlbook.measure.jax_sinusoid " + " ".join(sys.argv[1:] if argv is None else argv)
    print(f"jax idiom, sinusoid, {args.iterations:,} iterations: {record['ms_per_step']:.3f} ms/step; "
          f"1-step MSE on {args.eval_tasks} new tasks {record['mse_1step']:.3f} ± {record['mse_1step_ci95']:.3f}; "
          f"wall: import {record['wall_s']['import']:.1f} s, compile {record['wall_s']['compile']:.1f} s, "
          f"train {record['wall_s']['train']:.1f} s, eval {record['wall_s']['eval']:.1f} s")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(record, indent=1))
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
