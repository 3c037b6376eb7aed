"""Benchmark one MAML meta-training step: the package against the baselines, in one run.

Chapter 4's speed question, answered on every workload.

    python -m mamlbook bench [--workloads W1,W2,W3,W4] [--orders second,first] [--repeats N]
                             [--quick] [--json PATH] [--device cpu|cuda] [--compile] [--threads N]

Method, implementations, workloads and results: docs/benchmarks.md. The implementations take turns
(``--warmup`` untimed rounds first) so that a busy spell on a shared machine slows all alike: the ratios
stay meaningful, absolute times do not. Each memory child runs two steps and saves the meta-gradient
(float32: agreement with the loop's to ~1e-6 is rounding). Beyond the docs' list: ``mamlbook-compiled``
(``--compile``): the ``torch.compile``-d :func:`mamlbook.functional.make_meta_grad` (the one-off compile
is not timed); ``mamlbook-fused`` compiles in the warm-up and leaves out the fused Adam of the training
step; ``jax`` runs with JAX's own thread pool. ``--threads 1`` is the training CLI's default.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.func import functional_call

from ..conv import miniimagenet_conv4, omniglot_conv4
from ..fast import can_compile, fused_mlp_step, mlp_layers
from ..fast_tasks import TaskThreads
from ..functional import make_meta_grad
from ..maml import meta_backward, resolve_batched
from ..models import SinusoidMLP
from ..runs import machine_info, write_json
from . import jax_sinusoid

__all__ = ["ITERATIONS_TO_PROJECT", "Workload", "WORKLOADS", "plain_loop", "loop_step", "higher_step",
           "mamlbook_step", "compiled_step", "measure_times", "measure_memory", "format_table", "add_arguments",
           "run", "main", "saved_graph_bytes"]

ITERATIONS_TO_PROJECT = 60_000  # mini-ImageNet meta-training iterations in the paper's code


@dataclass(frozen=True)
class Workload:
    """One benchmark setting: a model, a meta-batch shape and MAML's inner loop."""

    name: str
    description: str
    tasks: int
    support: int        # examples per task in the support set (n_way · k_shot for images)
    query: int          # examples per task in the query set
    input_shape: tuple
    inner_steps: int
    inner_lr: float
    n_way: int = 0      # 0: regression (MSE); otherwise classification (cross-entropy)

    def model(self) -> torch.nn.Module:
        if self.name == "W1":
            return SinusoidMLP()
        return omniglot_conv4(self.n_way) if self.name in ("W2", "W4") else miniimagenet_conv4(self.n_way)

    def loss_fn(self):
        return F.cross_entropy if self.n_way else F.mse_loss

    def data(self, seed: int = 0):
        """Random inputs and labels of the right shapes: (T, K|Q, ...); speed does not depend on values."""
        g, sizes = torch.Generator().manual_seed(seed), (self.support, self.query)
        x_s, x_q = (torch.randn(self.tasks, n, *self.input_shape, generator=g) for n in sizes)
        y_s, y_q = (torch.randint(0, self.n_way, (self.tasks, n), generator=g) if self.n_way
                    else torch.randn(self.tasks, n, 1, generator=g) for n in sizes)
        return x_s, y_s, x_q, y_q

    def shrunk(self) -> "Workload":
        """A tiny version (2 tasks, few examples) for tests and ``--quick``."""
        return replace(self, description=self.description + " [quick: shrunk]", tasks=2,
                       support=min(self.support, 5), query=min(self.query, 5),
                       inner_steps=min(self.inner_steps, 2))


WORKLOADS = {
    "W1": Workload("W1", "sinusoid MLP 1-40-40-1, 25 tasks, K=10+10, 1 step, α=0.01",
                   25, 10, 10, (1,), 1, 0.01),
    "W2": Workload("W2", "Omniglot Conv4 (64 filters, BN), 28×28×1, 5-way 5+75, 32 tasks, 1 step, α=0.4",
                   32, 5, 75, (1, 28, 28), 1, 0.4, n_way=5),
    "W3": Workload("W3", "mini-ImageNet Conv4 (32 filters, BN), 84×84×3, 5-way 5+75, 4 tasks, 5 steps, α=0.01",
                   4, 5, 75, (3, 84, 84), 5, 0.01, n_way=5),
    "W4": Workload("W4", "Omniglot Conv4 (64 filters, BN), 28×28×1, 20-way 1-shot 20+20, 16 tasks, 5 steps, "
                   "α=2.0 (omniglot-20w1s)", 16, 20, 20, (1, 28, 28), 5, 2.0, n_way=20),
}


# ---------------------------------------------------------------- one meta-step per impl
def plain_loop(model, params, x_s, y_s, x_q, y_q, *, inner_lr: float, loss_fn, inner_steps: int = 1,
               first_order: bool = False) -> None:
    """The step a reader writes first: per task, autograd.grad(create_graph=True) inner steps and the
    query loss; the losses summed, one backward."""
    total = 0.0
    for i in range(x_s.shape[0]):
        fast = dict(params)
        for _ in range(inner_steps):
            inner = loss_fn(functional_call(model, fast, (x_s[i],)), y_s[i])
            grads = torch.autograd.grad(inner, list(fast.values()), create_graph=not first_order)
            fast = {k: v - inner_lr * g for (k, v), g in zip(fast.items(), grads)}
        total = total + loss_fn(functional_call(model, fast, (x_q[i],)), y_q[i])
    (total / x_s.shape[0]).backward()


def loop_step(model, params, data, w: Workload, first_order: bool) -> None:
    """Baseline: :func:`plain_loop`."""
    plain_loop(model, params, *data, inner_lr=w.inner_lr, inner_steps=w.inner_steps, loss_fn=w.loss_fn(),
               first_order=first_order)


def higher_step(model, params, data, w: Workload, first_order: bool) -> None:
    """Baseline: ``higher.innerloop_ctx`` per task, as in higher's own MAML example."""
    import higher
    x_s, y_s, x_q, y_q = data
    loss_fn = w.loss_fn()
    inner_opt = torch.optim.SGD(model.parameters(), lr=w.inner_lr)
    for i in range(w.tasks):
        with higher.innerloop_ctx(model, inner_opt, copy_initial_weights=False,
                                  track_higher_grads=not first_order) as (fmodel, diffopt):
            for _ in range(w.inner_steps):
                diffopt.step(loss_fn(fmodel(x_s[i]), y_s[i]))
            query = loss_fn(fmodel(x_q[i]), y_q[i]) / w.tasks
            if first_order:  # higher detaches the fast weights: ∇L_q(θ') goes to θ by hand
                grads = torch.autograd.grad(query, list(fmodel.parameters()))
                for p, g in zip(model.parameters(), grads):
                    p.grad = g if p.grad is None else p.grad + g
            else:
                query.backward()


def mamlbook_step(batched):
    def step(model, params, data, w: Workload, first_order: bool) -> None:
        meta_backward(model, params, *data, inner_lr=w.inner_lr, inner_steps=w.inner_steps,
                      loss_fn=w.loss_fn(), first_order=first_order, batched=batched)
    return step


# What an impl built (compiled function, thread pool, JAX copies of θ and data), once per process. Keyed
# on what the build depends on: the workload (the model's structure, shapes, inner loop), the device and
# the order. θ and the data are the same for all models of a workload (_setup seeds before it builds them),
# and not every build keeps the model alive, so id(model) could be reused by a later model (--in-process).
_cache: dict = {}


def _key(impl: str, model, w: Workload, first_order: bool) -> tuple:
    return impl, w, str(next(model.parameters()).device), first_order


def _cached(key: tuple, build):
    if key not in _cache:
        _cache[key] = build()
    return _cache[key]


def _grads_into(params, fn, data) -> None:
    """Call a functional meta-gradient ``fn(θ, *data) → (grads, loss)``; put the grads in ``p.grad``."""
    grads, _ = fn({k: v.detach() for k, v in params.items()}, *data)
    for k, p in params.items():
        p.grad = grads[k]


def compiled_step(model, params, data, w: Workload, first_order: bool) -> None:
    fn = _cached(_key("compiled", model, w, first_order), lambda: make_meta_grad(
        model, inner_lr=w.inner_lr, inner_steps=w.inner_steps, loss_fn=w.loss_fn(), first_order=first_order,
        compile=True))
    _grads_into(params, fn, data)


def fused_step(model, params, data, w: Workload, first_order: bool) -> None:
    """The sinusoid MLP's default training path (:mod:`mamlbook.fast`), meta-gradient only."""
    fn = _cached(_key("fused", model, w, first_order), lambda: fused_mlp_step(
        model, loss_fn=w.loss_fn(), inner_lr=w.inner_lr, inner_steps=w.inner_steps, first_order=first_order,
        device=next(model.parameters()).device))
    _grads_into(params, fn, data)


def threads_step(model, params, data, w: Workload, first_order: bool) -> None:
    """The conv models' default training path on a CPU: the per-task loop on all cores (mamlbook.fast_tasks)."""
    _cached(_key("threads", model, w, first_order), lambda: TaskThreads(model)).meta_backward(
        params, *data, inner_lr=w.inner_lr, inner_steps=w.inner_steps, loss_fn=w.loss_fn(),
        first_order=first_order)


def jax_step(model, params, data, w: Workload, first_order: bool) -> None:
    """The JAX idiom's meta-gradient on the same θ and data (W1); waits for the result, keeps it in JAX."""
    import jax
    c = _cached(_key("jax", model, w, first_order), lambda: {
        "fn": jax_sinusoid.make_meta_grad(w.inner_lr, first_order),
        "params": jax_sinusoid.params_from_torch(model),
        "data": tuple(jax.numpy.asarray(t.detach().cpu().numpy()) for t in data)})
    c["loss"], c["grads"] = c["fn"](c["params"], *c["data"])
    jax.block_until_ready(c["grads"])


def _jax_export(model, params, w: Workload, first_order: bool) -> None:
    """Copy the last JAX meta-gradient into ``p.grad`` (for the gradient check; not timed)."""
    grads = _cache[_key("jax", model, w, first_order)]["grads"]
    for (weight, bias), (gw, gb) in zip(mlp_layers(model), grads):
        params[weight].grad = torch.from_numpy(np.array(gw))
        params[bias].grad = torch.from_numpy(np.array(gb))


def _jax_available() -> bool:
    return jax_sinusoid.available()


def _impls(w: Workload, device: str, with_compile: bool) -> dict:
    model = w.model()
    auto = resolve_batched(model, "auto", device)
    impls = {"loop": loop_step, "higher": higher_step, "mamlbook": mamlbook_step("auto"),
             "mamlbook-loop" if auto else "mamlbook-vmap": mamlbook_step(not auto)}
    mlp = mlp_layers(model) is not None
    if mlp and w.loss_fn() is F.mse_loss and can_compile(torch.device(device)):   # built lazily: it imports
        impls["mamlbook-fused"] = fused_step                                    # the compiler (memory rows)
    if not auto and torch.device(device).type == "cpu" and not any(True for _ in model.buffers()):
        impls["mamlbook-threads"] = threads_step
    if mlp:
        impls["jax"] = jax_step
    if with_compile:
        impls["mamlbook-compiled"] = compiled_step
    return impls


# ---------------------------------------------------------------- children: time, memory
def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _reset_peak_rss() -> None:
    """Linux: restart the peak-RSS count (VmHWM) at the current RSS. ``ru_maxrss`` cannot be reset and
    starts from the parent's peak after fork+exec, which inflated the memory rows by the parent's size."""
    with contextlib.suppress(OSError), open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def _peak_rss_mb() -> float:
    with contextlib.suppress(OSError), open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024                            # kB
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024   # bytes on macOS, KiB on Linux


def _setup(w: Workload, device: str, with_compile: bool, first_order: bool, threads: int | None):
    """The model and θ on ``device``, and ``one_step(impl)``: one synchronised meta-step of ``impl``."""
    if threads:                  # once: the count is per thread, TaskThreads' workers leave this one's alone
        torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = w.model().to(device)
    params, data = dict(model.named_parameters()), tuple(t.to(device) for t in w.data())
    steps = _impls(w, device, with_compile)

    def one_step(impl: str) -> None:
        model.zero_grad(set_to_none=True)
        steps[impl](model, params, data, w, first_order)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
    return model, params, one_step


def measure_times(w: Workload, impls: list[str], first_order: bool, device: str, repeats: int,
                  warmup: int, with_compile: bool = False, threads: int | None = None) -> dict[str, list[float]]:
    """ms per meta-step of each impl; the impls take turns (round-robin: see the module docstring)."""
    one_step = _setup(w, device, with_compile, first_order, threads)[2]
    times = {impl: [] for impl in impls}
    for i in range(warmup + repeats):                                   # the warm-up rounds first, untimed
        for impl in impls:
            t = time.perf_counter()
            one_step(impl)
            if i >= warmup:
                times[impl].append((time.perf_counter() - t) * 1e3)
    return times


def measure_memory(w: Workload, impl: str, first_order: bool, device: str,
                   grad_path: str | None = None, with_compile: bool = False, threads: int | None = None) -> float:
    """Peak memory (MB) of two meta-steps above what the model and data hold; saves the gradient."""
    model, params, one_step = _setup(w, device, with_compile, first_order, threads)
    cuda = device.startswith("cuda")
    _reset_peak_rss()
    rss_start = _rss_mb()
    if cuda:
        torch.cuda.reset_peak_memory_stats()
        start_alloc = torch.cuda.memory_allocated()
    for _ in range(2):
        one_step(impl)
    if impl == "jax":
        _jax_export(model, params, w, first_order)
    if grad_path:
        torch.save({k: p.grad.detach().cpu().double() if p.grad is not None
                    else torch.zeros(p.shape, dtype=torch.float64) for k, p in params.items()}, grad_path)
    return ((torch.cuda.max_memory_allocated() - start_alloc) / 2**20 if cuda else _peak_rss_mb() - rss_start)


def _measure(spec: dict, in_process: bool = True, timeout: float = 1800):
    """One measurement, "time" (``spec["impls"]`` in turns) or "memory" (one impl), here or in a child.

    The child (``--_child SPEC``) runs it in process and prints the result after "RESULT ".
    """
    if not in_process:
        proc = subprocess.run([sys.executable, "-m", "mamlbook.bench", "--_child", json.dumps(spec)],
                              capture_output=True, text=True, timeout=timeout)
        for line in proc.stdout.splitlines():
            if line.startswith("RESULT "):
                return json.loads(line[7:])
        raise RuntimeError(f"benchmark child ({spec['what']}, {spec['workload']['name']}, {spec['impls']}) "
                           f"failed:\n{proc.stderr[-2000:]}")
    w = Workload(**{**spec["workload"], "input_shape": tuple(spec["workload"]["input_shape"])})
    if spec["what"] == "time":
        return measure_times(w, spec["impls"], spec["first_order"], spec["device"], spec["repeats"],
                             spec["warmup"], spec["compile"], spec["threads"])
    return measure_memory(w, spec["impls"][0], spec["first_order"], spec["device"], spec["grad_path"],
                          spec["compile"], spec["threads"])


# ---------------------------------------------------------------- parent: table and JSON
def _rel_err(grad_path: str, ref_path: str) -> float:
    g, ref = torch.load(grad_path), torch.load(ref_path)
    num = sum(((g[k] - ref[k]) ** 2).sum() for k in ref).sqrt()
    den = sum((ref[k] ** 2).sum() for k in ref).sqrt()
    return (num / den).item()


def _higher_available() -> bool:
    try:
        import higher  # noqa: F401
        return True
    except ImportError:
        return False


def format_table(rows: list[dict]) -> str:
    """A Markdown table of the rows: ms/step, speed-up over the loop, memory, gradient check."""
    head = ("| workload | order | device | impl | ms/step (median) | × loop speed | "
            "peak MB | MB vs loop | grad rel. err vs loop |")
    lines = [head, "|" + "---|" * 9]
    for r in rows:
        err = r.get("grad_rel_err_vs_loop")
        lines.append(
            f"| {r['workload']} | {r['order']} | {r['device']} | {r['impl']} | "
            f"{r['ms_median']:.1f} | {r.get('speedup_vs_loop', float('nan')):.2f}× | "
            f"{r['peak_mem_mb']:.0f} | {r.get('mem_ratio_vs_loop', float('nan')):.2f}× | "
            f"{'—' if err is None else f'{err:.1e}'} |")
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``bench`` command's options (used by ``python -m mamlbook bench``)."""
    parser.add_argument("--workloads", default="W1,W2,W3,W4",
                        help="comma-separated subset of W1 (sinusoid MLP), W2 (Omniglot Conv4), "
                             "W3 (mini-ImageNet Conv4), W4 (omniglot-20w1s's shapes)")
    parser.add_argument("--orders", default="second,first", help="second, first, or both")
    parser.add_argument("--impls", default=None,
                        help="comma-separated subset of loop,higher,mamlbook,mamlbook-vmap,mamlbook-loop,"
                             "mamlbook-fused,mamlbook-threads,jax,mamlbook-compiled (default: all that apply)")
    parser.add_argument("--repeats", type=int, default=5, help="timed steps per configuration (median)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps first")
    parser.add_argument("--quick", action="store_true",
                        help="shrink every workload to 2 tiny tasks and 1 repeat (smoke test, not timings)")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: both when a GPU is present)")
    parser.add_argument("--compile", action="store_true",
                        help="also time torch.compile-d make_meta_grad (cold compiles take minutes on conv models)")
    parser.add_argument("--json", type=Path, default=None, help="write the rows as a JSON list here")
    parser.add_argument("--in-process", action="store_true",
                        help="measure in this process instead of one subprocess per configuration "
                             "(faster start; peak memory then includes earlier configurations)")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds allowed per configuration")
    parser.add_argument("--threads", type=int, default=None,
                        help="PyTorch intra-op threads for every row (default: PyTorch's; the training CLI uses 1)")
    parser.add_argument("--_child", default=None, help=argparse.SUPPRESS)


def run(args) -> int:
    """Run the benchmark; print the table (and the 60,000-iteration projection); write JSON."""
    if getattr(args, "_child", None):
        print("RESULT " + json.dumps(_measure(json.loads(args._child))))
        return 0
    names = [n.strip().upper() for n in args.workloads.split(",") if n.strip()]
    unknown = [n for n in names if n not in WORKLOADS]
    orders = [o.strip() for o in args.orders.split(",") if o.strip()]
    threads = getattr(args, "threads", None)
    for bad, message in (
            (unknown or not names, f"unknown workload(s) {unknown}; choose from {', '.join(WORKLOADS)}"),
            (not orders or any(o not in ("second", "first") for o in orders),
             f"--orders must list 'second' and/or 'first', got {args.orders!r}"),
            (args.repeats < 1 or args.warmup < 0, "--repeats must be ≥ 1 and --warmup ≥ 0"),
            (threads is not None and threads < 1, "--threads must be ≥ 1")):
        if bad:
            print(f"error: {message}", file=sys.stderr)
            return 2
    devices = [args.device] if args.device else (["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"])
    repeats = 1 if args.quick else args.repeats
    have_higher, have_jax = _higher_available(), _jax_available()
    if not have_higher:
        print("note: `higher` is not installed, so its baseline is skipped "
              "(pip install 'mamlbook[bench]' or pip install higher).")
    if not have_jax and "W1" in names:
        print("note: jax/optax are not installed, so the JAX idiom's W1 row is skipped "
              "(pip install 'mamlbook[bench]' or pip install jax optax).")
    if threads:
        torch.set_num_threads(threads)
    wanted = None if args.impls is None else {s.strip() for s in args.impls.split(",")}
    print(f"torch {torch.__version__}, {platform.machine()} {os.cpu_count()} CPUs, "
          f"{torch.get_num_threads()} threads; devices {devices}; "
          + ("QUICK smoke run: shrunk workloads, NOT timings" if args.quick
             else f"median of {repeats} after {args.warmup} warm-up"))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            w = WORKLOADS[name].shrunk() if args.quick else WORKLOADS[name]
            for device in devices:
                impls = [i for i in _impls(w, device, args.compile)
                         if (wanted is None or i in wanted or i == "loop")
                         and (i != "higher" or have_higher) and (i != "jax" or have_jax)]
                measure = ("cuda max_memory_allocated above start" if device.startswith("cuda") else
                           "peak RSS above start (in-process: a lower bound)" if args.in_process else
                           "peak RSS above start, own process")
                for order in orders:
                    print(f"  {name} {device} {order}-order: timing {', '.join(impls)} in turns …", flush=True)
                    load = os.getloadavg()[0]
                    spec = {"workload": asdict(w), "first_order": order == "first", "device": device,
                            "repeats": repeats, "warmup": args.warmup, "compile": args.compile,
                            "threads": threads}
                    times = _measure({**spec, "what": "time", "impls": impls}, args.in_process, args.timeout)
                    group = []
                    for impl in impls:
                        path = os.path.join(tmp, f"{name}-{device}-{impl}-{order}.pt")
                        mem = _measure({**spec, "what": "memory", "impls": [impl], "grad_path": path},
                                       args.in_process, args.timeout)
                        group.append({"workload": w.name, "impl": impl, "order": order,
                                      "device": device, "ms_median": statistics.median(times[impl]),
                                      "ms_all": times[impl], "peak_mem_mb": round(mem, 1),
                                      "memory_measure": measure, "threads": threads or torch.get_num_threads(),
                                      "load_1min_before": load, "grad_path": path})
                    loop = next(r for r in group if r["impl"] == "loop")
                    for r in group:
                        r["speedup_vs_loop"] = loop["ms_median"] / r["ms_median"]
                        r["mem_ratio_vs_loop"] = (r["peak_mem_mb"] / loop["peak_mem_mb"]
                                                  if loop["peak_mem_mb"] > 0 else float("nan"))
                        r["grad_rel_err_vs_loop"] = _rel_err(r["grad_path"], loop["grad_path"])
                        r["workload_description"] = w.description
                    rows.extend({k: v for k, v in r.items() if k != "grad_path"} for r in group)
    print("\n" + format_table(rows))
    for r in rows:
        if r["workload"] == "W3" and r["impl"] == "mamlbook":
            hours = r["ms_median"] * ITERATIONS_TO_PROJECT / 3.6e6
            print(f"Projected W3 ({r['order']}-order) meta-training, {ITERATIONS_TO_PROJECT:,} iterations "
                  f"on {r['device']}: {hours:.1f} h (steps only, no data loading)"
                  + ("" if r["device"].startswith("cuda") else "; no GPU here: run on CUDA for the GPU projection"))
    if args.json:
        meta = {**machine_info(args.device or "cpu"), "quick": bool(args.quick)}
        write_json(args.json, [{**r, **meta} for r in rows])
        print(f"Wrote {args.json}.")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mamlbook.bench", description=__doc__.split("\n")[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


def saved_graph_bytes(fn) -> int:
    """Bytes of the tensors autograd saves for backward while ``fn()`` runs.

    A ``saved_tensors_hooks`` tally: the graph that second-order MAML must keep until the
    outer backward, independent of allocator noise (chapter 3 writes it out in full).
    """
    sizes = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: sizes.append(t.numel() * t.element_size()) or t,
                                                  lambda t: t):
        fn()
    return sum(sizes)


if __name__ == "__main__":
    sys.exit(main())
