"""The whole mini-ImageNet 5w1s meta-step in one CUDA graph, against the plain per-task loop, in one run.

    python -m mamlbook.measure.gpu_graph --device cuda --json $OUT/gpu_graph.json \\
        [--paths loop,vmap,graph-loop,graph-vmap] [--iterations 60] [--e2e-iterations 60000 --e2e-time-limit 300]

What it runs and measures, and the GPU run still to do: docs/benchmarks.md, "GPU: prepared, not run"
(the ``miniimagenet-5w1s`` preset's second-order step, TF32 off, on a SYNTHETIC split resident on the
device). Paths (``path`` in the JSON), each from the same θ₀: ``loop`` (``meta_backward(batched=False)``
+ ``torch.optim.Adam``: the baseline of the ≥ 5× target), ``vmap``, and ``graph-loop`` / ``graph-vmap``
(the same step with a ``capturable=True`` Adam, captured once and replayed, fed by
:class:`StaticEpisodes` through a second captured graph). The float64 reference g₆₄ is the per-task
loop on the same device, compared (‖g − g₆₄‖/‖g₆₄‖, cosine) before the clip on one fixed episode at
θ₀; ms/iteration includes sampling, each timing round ended by a synchronize. On a CPU,
:func:`no_host_sync` stands in for ``torch.cuda.set_sync_debug_mode("error")``.

``--device cpu`` is a smoke test (tiny split and episodes, labelled SMOKE; graph capture is skipped
with a message); its numbers are not for the README.
"""
from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import time
from pathlib import Path
from unittest import mock

import torch
import torch.nn.functional as F
from torch.profiler import ProfilerActivity, profile

from ..algorithms import make_algorithm
from ..amp import tf32_mode
from ..fewshot import make_model, make_sampler
from ..maml import meta_backward
from ..presets import get_preset
from ..problems import TaskSet, evaluate_learner
from ..runs import write_json
from .gpu_speed import PROJECT_ITERATIONS, agreement, environment, flat64, projection, sync, synthetic_split
from .gpu_speed import SHAPES as SPEED_SHAPES

__all__ = ["PRESET", "PATHS", "SHAPES", "TARGET_MINUTES", "StaticEpisodes", "Runner", "no_host_sync",
           "precision_rows", "time_paths", "end_to_end", "run", "format_table", "main"]

PRESET = "miniimagenet-5w1s"
PATHS = {"loop": (False, False), "vmap": (True, False), "graph-loop": (False, True), "graph-vmap": (True, True)}
TARGET_MINUTES = 10                      # issue 15: 60,000 second-order iterations in ≤ 10 min on one H100/H200
TARGET_SPEEDUP = 5.0                     # … and ≥ 5× the plain per-task loop
SHAPES = {"w3": dict(SPEED_SHAPES["w3"], test_classes=16),          # gpu_speed's split and episodes,
          "smoke": dict(SPEED_SHAPES["smoke"], test_classes=6)}      # and held-out classes for the meta-test
SYNC_METHODS = ("item", "tolist", "numpy", "__bool__", "__float__", "__int__", "__index__")


@contextlib.contextmanager
def no_host_sync():
    """Inside the block, any tensor → Python conversion (``.item()``, ``float(t)``, ``bool(t)``, …) raises.

    On a CUDA device each of those waits for the GPU; inside a captured graph they are errors. On a
    CPU this is how the tests show that a step never reads a value back (CUDA has
    ``torch.cuda.set_sync_debug_mode`` for the same question).
    """
    def refuse(name):
        def method(self, *args, **kwargs):
            raise RuntimeError(f"host synchronisation inside the step: Tensor.{name}()")
        return method
    with contextlib.ExitStack() as stack:
        for name in SYNC_METHODS:
            stack.enter_context(mock.patch.object(torch.Tensor, name, refuse(name)))
        yield


class StaticEpisodes:
    """Meta-batches sampled on the device into fixed buffers (the same storage every time).

    The real :class:`~mamlbook.data.EpisodeSampler` draws the episode with ``generator`` (on the split's
    device: no host round trip); :meth:`sample_` copies it into ``x_support``/``x_query``. The labels of an
    N-way episode are always 0..N−1 grouped by class, so ``y_support``/``y_query`` never change.
    """

    def __init__(self, split, cfg, device: torch.device, generator: torch.Generator):
        self.sampler = make_sampler(split, cfg, device=device)
        self.tasks, self.generator = cfg.meta_batch_size, generator
        e = self.sampler.sample(self.tasks, generator)
        self.x_support, self.y_support = e.x_support.clone(), e.y_support.clone()
        self.x_query, self.y_query = e.x_query.clone(), e.y_query.clone()

    def sample_(self) -> None:
        """Draw a new meta-batch into the buffers (device work only)."""
        e = self.sampler.sample(self.tasks, self.generator)
        self.x_support.copy_(e.x_support)
        self.x_query.copy_(e.x_query)

    def batch(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.x_support, self.y_support, self.x_query, self.y_query


class Runner:
    """One path's model, Adam and step, from θ₀; ``graph`` paths capture the step in a CUDA graph."""

    def __init__(self, path: str, cfg, theta0: dict, episodes: StaticEpisodes, device: torch.device):
        self.name, (self.batched, self.use_graph) = path, PATHS[path]
        self.cfg, self.episodes, self.device = cfg, episodes, device
        self.model = make_model(cfg).to(device)
        self.model.load_state_dict(theta0)
        self.params = dict(self.model.named_parameters())
        kind = {"capturable": True} if device.type == "cuda" else {"fused": True}   # neither reads `step` back
        self.optimizer = torch.optim.Adam(self.params.values(), lr=cfg.meta_lr, **kind)
        self.loss = torch.zeros((), device=device)
        self.raw_grad = {k: torch.zeros_like(p) for k, p in self.params.items()}   # before the clip
        self.graph = None

    def step(self) -> None:
        """Meta-gradient (accumulated into .grad), clip, Adam; the loss into ``self.loss``. No host sync."""
        loss = meta_backward(self.model, self.params, *self.episodes.batch(), inner_lr=self.cfg.inner_lr,
                             inner_steps=self.cfg.inner_steps, loss_fn=F.cross_entropy,
                             first_order=self.cfg.first_order, batched=self.batched)
        with torch.no_grad():
            for k, p in self.params.items():                  # the meta-gradient itself, for the precision check
                self.raw_grad[k].copy_(p.grad)
        if self.cfg.grad_clip:
            torch.nn.utils.clip_grad_value_(self.params.values(), self.cfg.grad_clip)
        self.optimizer.step()
        self.loss.copy_(loss)

    def eager_step(self) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        self.step()

    def capture(self, warmup: int = 3) -> float:
        """Warm up on a side stream (Adam's state, cuDNN), then capture :meth:`step`; returns seconds."""
        start = time.perf_counter()
        side = torch.cuda.Stream(self.device)
        side.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(side):
            for _ in range(warmup):
                self.eager_step()
        torch.cuda.current_stream(self.device).wait_stream(side)
        self.optimizer.zero_grad(set_to_none=True)          # the graph's backward allocates .grad in its pool
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.step()
        sync(self.device)
        return time.perf_counter() - start

    def compute(self) -> None:
        """One step on whatever the buffers hold: a replay, or the eager step."""
        if self.graph is not None:
            self.graph.replay()
        else:
            self.eager_step()


def _sampler_graph(episodes: StaticEpisodes, device: torch.device):
    """``episodes.sample_`` captured in a CUDA graph (None on a CPU)."""
    if device.type != "cuda":
        return None
    side = torch.cuda.Stream(device)
    side.wait_stream(torch.cuda.current_stream(device))
    with torch.cuda.stream(side):
        episodes.sample_()
    torch.cuda.current_stream(device).wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        episodes.sample_()
    return graph


def _iterate(r: Runner, sample_graph, episodes: StaticEpisodes) -> None:
    """One iteration: a new meta-batch into the buffers (by the sampler's graph on a graph path), then a step."""
    if sample_graph is not None and r.graph is not None:
        sample_graph.replay()
    else:
        episodes.sample_()
    r.compute()


def _timed(r: Runner, sample_graph, episodes: StaticEpisodes, device: torch.device, iterations: int) -> float:
    """Seconds for ``iterations`` iterations of ``r`` with TF32 off, from a synchronised start to a synchronised end."""
    sync(device)
    start = time.perf_counter()
    with tf32_mode(False):
        for _ in range(iterations):
            _iterate(r, sample_graph, episodes)
    sync(device)
    return time.perf_counter() - start


def precision_rows(runners: dict, cfg, theta0: dict, batch, device: torch.device) -> list[dict]:
    """Each path's meta-gradient at θ₀ on ``batch`` against the float64 per-task loop's, same device."""
    ref_model = make_model(cfg).to(device=device, dtype=torch.float64)
    ref_model.load_state_dict({k: v.double() for k, v in theta0.items()})
    ref_params = dict(ref_model.named_parameters())
    with tf32_mode(False):
        meta_backward(ref_model, ref_params, *(t.double() if t.is_floating_point() else t for t in batch),
                      inner_lr=cfg.inner_lr, inner_steps=cfg.inner_steps, loss_fn=F.cross_entropy,
                      first_order=cfg.first_order, batched=False)
    ref = flat64(p.grad for p in ref_params.values())
    rows = []
    for name, r in runners.items():
        with torch.no_grad():
            for k, p in r.params.items():
                p.copy_(theta0[k])
        for buf, value in zip(r.episodes.batch(), batch):      # the fixed meta-batch into the buffers
            buf.copy_(value)
        with tf32_mode(False):
            r.compute()
        sync(device)
        rel_err, cosine = agreement(flat64(r.raw_grad[k] for k in r.params), ref)   # before the clip
        rows.append({"path": name, "grad_rel_err_vs_f64": rel_err, "grad_cosine_vs_f64": cosine})
    return rows


def time_paths(runners: dict, sample_graph, episodes: StaticEpisodes, device: torch.device, *,
               iterations: int, rounds: int) -> dict[str, list[float]]:
    """ms/iteration (sampling included) of each path, ``rounds`` rounds in turns; each round synchronised."""
    times = {name: [] for name in runners}
    for _ in range(rounds):
        for name, r in runners.items():
            times[name].append(1e3 * _timed(r, sample_graph, episodes, device, iterations) / iterations)
    return times


def profile_paths(runners: dict, sample_graph, episodes: StaticEpisodes, device: torch.device, *,
                  iterations: int, top: int = 8) -> dict[str, dict]:
    """Where each path's time goes: ``torch.profiler`` over ``iterations`` iterations.

    Per path: wall ms/iteration under the profiler, the summed device time of the kernels per iteration
    (CUDA; for a graph path, the kernels its replays ran) and their ratio (how busy the GPU was: far below
    100 % means launch- or host-bound), and the ``top`` operations by device (CPU: host) time.
    """
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    out = {}
    for name, r in runners.items():
        with profile(activities=activities) as prof:
            wall = _timed(r, sample_graph, episodes, device, iterations)
        events = prof.key_averages()
        attr = "self_device_time_total" if device.type == "cuda" else "self_cpu_time_total"
        busy = sum(getattr(e, attr, 0.0) for e in events) / 1e3 / iterations            # µs → ms
        rows = sorted(events, key=lambda e: getattr(e, attr, 0.0), reverse=True)[:top]
        out[name] = {"iterations": iterations, "wall_ms_per_iteration": 1e3 * wall / iterations,
                     "kernel_ms_per_iteration": busy, "busy_fraction": busy / (1e3 * wall / iterations),
                     "top": [{"op": e.key, "ms_per_iteration": getattr(e, attr, 0.0) / 1e3 / iterations,
                              "calls_per_iteration": e.count / iterations} for e in rows]}
    return out


def end_to_end(path: str, cfg, theta0: dict, split, test_split, device: torch.device, generator, *,
               iterations: int, time_limit_s: float | None, test_tasks: int, check_every: int = 500) -> dict:
    """``iterations`` training iterations of ``path`` from θ₀ (stopped at ``time_limit_s``), then a meta-test."""
    episodes = StaticEpisodes(split, cfg, device, generator)
    runner = Runner(path, cfg, theta0, episodes, device)
    sample_graph = _sampler_graph(episodes, device) if runner.use_graph else None
    setup_s = runner.capture() if runner.use_graph and device.type == "cuda" else 0.0
    losses = torch.zeros(iterations, device=device)
    sync(device)
    start, done = time.perf_counter(), 0
    with tf32_mode(False):
        while done < iterations:
            _iterate(runner, sample_graph, episodes)
            losses[done].copy_(runner.loss)
            done += 1
            if done % check_every == 0:
                sync(device)
                if time_limit_s is not None and time.perf_counter() - start >= time_limit_s:
                    break
    sync(device)
    train_s = time.perf_counter() - start
    curve = losses[:done].double().cpu()
    learner = make_algorithm("maml", runner.model, problem="classification", inner_lr=cfg.inner_lr,
                             inner_steps=cfg.inner_steps, test_steps=cfg.test_inner_steps)
    sampler = make_sampler(test_split, cfg, device=device)

    def draw(n, gen):
        e = sampler.sample(n, gen)
        return e.x_support, e.y_support, e.x_query, e.y_query
    test = evaluate_learner(learner, TaskSet(draw, test_tasks, seed=0, chunk=cfg.meta_batch_size), "classification",
                            steps=[0, cfg.test_inner_steps])
    window, ms = max(done // 100, 1), 1e3 * train_s / max(done, 1)
    return {"path": path, "iterations_asked": iterations, "iterations_done": done, "time_limit_s": time_limit_s,
            "stopped_by_time_limit": done < iterations, "capture_s": setup_s, "train_s": train_s,
            "ms_per_iteration": ms, "projected_minutes_60k": projection(ms)["projected_minutes"],
            "loss_first_100": curve[:100].mean().item(), "loss_last_100": curve[-100:].mean().item(),
            "loss_curve": [curve[i:i + window].mean().item() for i in range(0, done, window)],
            "test": {"tasks": test["num_tasks"], "steps": test["steps"], "accuracy": test["mean"],
                     "ci95": test["ci95"], "classes": "held-out SYNTHETIC classes"}}


def run(device="cuda", *, paths=tuple(PATHS), iterations: int = 60, rounds: int = 3, shape: str | None = None,
        e2e_iterations: int = PROJECT_ITERATIONS, e2e_time_limit_s: float | None = 300.0,
        e2e_path: str | None = None, e2e_test_tasks: int = 100, profile_iterations: int = 0, on_stage=None,
        log=print) -> dict:
    """The whole check (see the module docstring); ``on_stage(result)`` after every stage."""
    device = torch.device(device)
    shape = shape or ("w3" if device.type == "cuda" else "smoke")
    spec = SHAPES[shape]
    cfg = get_preset(PRESET).config.replace(**spec["changes"])
    result = {"environment": environment(device), "shape": shape, "preset": PRESET, "config": cfg.to_dict(),
              "tf32": False, "paths": {}, "notes": []}
    stage = on_stage or (lambda r: None)
    t0 = time.perf_counter()
    split = synthetic_split(spec["classes"], spec["per_class"], device)
    test_split = synthetic_split(spec["test_classes"], spec["per_class"], device, seed=1)
    sync(device)
    result["split_build_s"] = time.perf_counter() - t0
    torch.manual_seed(cfg.seed)                         # every device's generator, CUDA's included
    generator = (torch.cuda.default_generators[device.index or 0] if device.type == "cuda"
                 else torch.Generator().manual_seed(cfg.seed))
    theta0 = {k: v.detach().clone() for k, v in make_model(cfg).to(device).state_dict().items()}
    episodes = StaticEpisodes(split, cfg, device, generator)
    fixed = tuple(t.clone() for t in episodes.batch())
    runners = {}
    for name in paths:
        if PATHS[name][1] and device.type != "cuda":
            note = f"{name}: skipped: CUDA graph capture needs a CUDA device (this run is on {device.type})"
            log(note)
            result["notes"].append(note)
            result["paths"][name] = {"status": "skipped", "reason": note}
            continue
        try:
            r = Runner(name, cfg, theta0, episodes, device)
            with tf32_mode(False):
                r.eager_step()                                    # cuDNN / Adam state; then a sync check
                if device.type == "cuda":
                    torch.cuda.set_sync_debug_mode("error")
                    try:
                        r.eager_step()
                    finally:
                        torch.cuda.set_sync_debug_mode("default")
                else:
                    with no_host_sync():
                        r.eager_step()
                capture_s = r.capture() if r.use_graph else None
            runners[name] = r
            result["paths"][name] = {"status": "ok", "capture_s": capture_s, "no_host_sync": True}
            log(f"{name}: ready" + (f" (captured in {capture_s:.1f} s)" if capture_s is not None else ""))
        except Exception as err:                       # noqa: BLE001 — keep the other paths
            result["paths"][name] = {"status": "error", "reason": f"{type(err).__name__}: {str(err)[:300]}"}
            log(f"{name}: ERROR {result['paths'][name]['reason']}")
    stage(result)
    sample_graph = _sampler_graph(episodes, device) if any(r.graph is not None for r in runners.values()) else None
    for row in precision_rows(runners, cfg, theta0, fixed, device):
        result["paths"][row.pop("path")].update(row)
    stage(result)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times = time_paths(runners, sample_graph, episodes, device, iterations=iterations, rounds=rounds)
    base = statistics.median(times["loop"]) if "loop" in times else None
    for name, ms in times.items():
        row = result["paths"][name]
        row.update(ms_rounds=ms, ms_median=statistics.median(ms), iterations_per_round=iterations,
                   rounds=rounds)
        row["projected_minutes_60k"] = projection(row["ms_median"])["projected_minutes"]
        if base is not None:
            row["speedup_vs_loop"] = base / row["ms_median"]
        log(f"{name}: {row['ms_median']:.2f} ms/iteration"
            + (f", {row['speedup_vs_loop']:.1f}× the loop" if base else "")
            + f", grad rel. err vs float64 {row['grad_rel_err_vs_f64']:.1e}")
    if device.type == "cuda":
        result["peak_mem_mb_all_paths"] = torch.cuda.max_memory_allocated(device) / 2**20
    stage(result)
    if profile_iterations:
        result["profile"] = profile_paths(runners, sample_graph, episodes, device, iterations=profile_iterations)
        for name, pr in result["profile"].items():
            log(f"{name}: kernels {pr['kernel_ms_per_iteration']:.2f} of {pr['wall_ms_per_iteration']:.2f} ms per "
                f"iteration under the profiler ({100 * pr['busy_fraction']:.0f} % busy); top: "
                + ", ".join(f"{t['op']} {t['ms_per_iteration']:.2f}" for t in pr["top"][:3]))
        stage(result)
    del runners
    if e2e_iterations:
        ok = {n: r for n, r in result["paths"].items() if r.get("status") == "ok" and "ms_median" in r}
        path = e2e_path or min(ok, key=lambda n: ok[n]["ms_median"])
        log(f"end to end: {e2e_iterations:,} iterations of {path} (time limit {e2e_time_limit_s} s) …")
        e = result["end_to_end"] = end_to_end(path, cfg, theta0, split, test_split, device, generator,
                                              iterations=e2e_iterations, time_limit_s=e2e_time_limit_s,
                                              test_tasks=e2e_test_tasks)
        log(f"end to end: {e['iterations_done']:,} iterations in {e['train_s']:.0f} s ({e['ms_per_iteration']:.2f} "
            f"ms/it → {e['projected_minutes_60k']:.1f} min for 60k); loss {e['loss_first_100']:.3f} → "
            f"{e['loss_last_100']:.3f}; test accuracy {e['test']['accuracy'][-1]:.1f} ± {e['test']['ci95'][-1]:.1f} %")
        stage(result)
    return result


def format_table(result: dict) -> str:
    """A Markdown table of the paths, and the end-to-end line."""
    env, smoke = result["environment"], result["shape"] == "smoke"
    c = result["config"]
    lines = ["**SMOKE run (tiny split and episodes): NOT the W3 shape; not for the README.**\n"] if smoke else []
    lines.append(f"{PRESET} second-order step ({c['n_way']}-way {c['k_shot']}-shot, {c['k_query']} queries/class, "
                 f"meta-batch {c['meta_batch_size']}, {c['inner_steps']} inner steps, α={c['inner_lr']}), TF32 off, "
                 f"SYNTHETIC images on the device; {env['device_name']}, torch {env['torch']}, CUDA {env.get('cuda')}, "
                 f"{env['date'][:10]}; `python -m mamlbook.measure.gpu_graph`.\n")
    lines.append("| path | ms/iteration (median) | × loop | 60k iterations | grad rel. err vs float64 | cosine |")
    lines.append("|---|---:|---:|---:|---:|---:|")
    for name, r in result["paths"].items():
        if r.get("status") != "ok":
            lines.append(f"| {name} | {r.get('status')}: {r.get('reason', '')[:80]} | — | — | — | — |")
            continue
        lines.append(f"| {name} | {r['ms_median']:.2f} | {r.get('speedup_vs_loop', float('nan')):.1f}× | "
                     f"{r['projected_minutes_60k']:.1f} min | {r['grad_rel_err_vs_f64']:.1e} | "
                     f"{r['grad_cosine_vs_f64']:.6f} |")
    e = result.get("end_to_end")
    if e:
        lines.append(f"\nEnd to end ({e['path']}): {e['iterations_done']:,} of {e['iterations_asked']:,} iterations in "
                     f"{e['train_s']:.0f} s ({e['ms_per_iteration']:.2f} ms/it; 60k → {e['projected_minutes_60k']:.1f} "
                     f"min); meta-loss {e['loss_first_100']:.3f} → {e['loss_last_100']:.3f}; "
                     f"{e['test']['tasks']} test tasks of held-out synthetic classes, {e['test']['steps'][-1]} steps: "
                     f"{e['test']['accuracy'][-1]:.1f} ± {e['test']['ci95'][-1]:.1f} %.")
    lines.append(f"\nTargets (issue 15): 60,000 iterations ≤ {TARGET_MINUTES} min, and ≥ {TARGET_SPEEDUP:.0f}× the "
                 "plain per-task loop.")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m mamlbook.measure.gpu_graph", description=__doc__.split("\n")[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--paths", default=",".join(PATHS), help=f"subset of {','.join(PATHS)}")
    p.add_argument("--iterations", type=int, default=None, help="iterations per timing round (cuda 60, cpu 2)")
    p.add_argument("--rounds", type=int, default=3, help="timing rounds, the paths in turns (median round)")
    p.add_argument("--shape", choices=sorted(SHAPES), default=None, help="w3 (cuda default) or smoke (cpu default)")
    p.add_argument("--e2e-iterations", type=int, default=None,
                   help="end-to-end training iterations of the fastest path (cuda 60,000, cpu 5; 0: skip)")
    p.add_argument("--e2e-time-limit", type=float, default=300.0, help="seconds; the end-to-end run stops there")
    p.add_argument("--e2e-path", default=None, help="the path to train end to end (default: the fastest)")
    p.add_argument("--e2e-test-tasks", type=int, default=None, help="meta-test tasks after it (cuda 100, cpu 4)")
    p.add_argument("--profile-iterations", type=int, default=None,
                   help="torch.profiler over this many iterations of every path: where the time goes (cuda 5, cpu 0)")
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda but no CUDA GPU is visible; use --device cpu for the smoke test")
    paths = [s.strip() for s in args.paths.split(",") if s.strip()]
    if not paths or any(s not in PATHS for s in paths):
        p.error(f"--paths must be a subset of {','.join(PATHS)}")
    cuda = device.type == "cuda"
    command = " ".join(["python -m mamlbook.measure.gpu_graph", *(argv if argv is not None else sys.argv[1:])])

    def write(result: dict) -> None:
        result["command"] = command
        result["markdown"] = format_table(result) if any("ms_median" in r for r in result["paths"].values()) else ""
        if args.json:                                 # atomic: a run cut short leaves the last whole file
            write_json(args.json, result)

    result = run(device, paths=paths, iterations=args.iterations or (60 if cuda else 2), rounds=args.rounds,
                 shape=args.shape, e2e_iterations=(args.e2e_iterations if args.e2e_iterations is not None
                                                   else (PROJECT_ITERATIONS if cuda else 5)),
                 e2e_time_limit_s=args.e2e_time_limit, e2e_path=args.e2e_path,
                 e2e_test_tasks=args.e2e_test_tasks or (100 if cuda else 4),
                 profile_iterations=(args.profile_iterations if args.profile_iterations is not None
                                     else (5 if cuda else 0)),
                 on_stage=write)
    write(result)
    print(result["markdown"])
    if args.json:
        print(f"wrote {args.json}")
    return 1 if any(r.get("status") == "error" for r in result["paths"].values()) else 0


if __name__ == "__main__":
    sys.exit(main())
