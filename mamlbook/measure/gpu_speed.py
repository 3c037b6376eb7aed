"""Time mini-ImageNet meta-training on a GPU and project 60,000 iterations: the README's GPU table.

Chapter 7's GPU timings.

The one command a session with a GPU runs (about 3–5 minutes of device time: ~20 s to start
CUDA and build the 0.8 GB synthetic split, 20 warm-up iterations per row, then at most
``--budget-s`` = 180 s of timed training in all, whatever the card's speed; give it
``timeout_s`` ≈ 420)::

    python -m mamlbook.measure.gpu_speed --device cuda --iterations 200 --warmup 20 --budget-s 180 \
        --json $OUT/gpu_check.json

What it runs, and the recorded results: README.md, "On a GPU". The ``miniimagenet-5w1s`` preset's
training configuration (benchmark workload W3) on the real code path of
:func:`~mamlbook.fewshot.train_fewshot` (its model, a sampler on a device-resident uint8 split,
:class:`~mamlbook.amp.Amp`, the one training loop :func:`mamlbook.train.fit`), on SYNTHETIC images
(:func:`synthetic_split`, shaped like mini-ImageNet's meta-train split: speed does not depend on what
the pixels show), each iteration synchronised. The peak GPU memory is reset before each row and
includes the resident split (given separately). As a check that the loop is what a real run costs,
``train_fewshot`` itself then runs as many iterations (resumed from a warm-up checkpoint, validation
off). The JSON is rewritten after every row; a row that fails on the device is recorded with
``status="error"`` and the exit code is 1.

``--device cpu`` is a smoke test: a tiny split (8 classes × 20 images) and shrunk episodes,
labelled SMOKE, with the AMP rows reported as refused (``Amp``'s message). Its numbers are not for
the README.
"""
from __future__ import annotations

import argparse
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from ..amp import Amp, AmpNotSupportedError
from ..data import ClassImages
from ..fewshot import FewShotConfig, maml_learner, train_fewshot
from ..presets import get_preset
from ..problems import fewshot_problem
from ..runs import machine_info, write_json
from ..train import fit

__all__ = ["PRESET", "PROJECT_ITERATIONS", "TARGET_MINUTES", "SHAPES", "synthetic_split", "sync", "time_loop",
           "time_train_fewshot", "projection", "environment", "flat64", "agreement", "run_check",
           "format_table", "main"]

PRESET = "miniimagenet-5w1s"
PROJECT_ITERATIONS = 60_000          # the paper's meta-training length
TARGET_MINUTES = 30                  # issue 4: ≤ 30 min for 60k second-order 5w1s iterations on one H100
SHAPES = {  # classes × images per class of the synthetic split, and what changes in the episodes
    "w3": dict(classes=64, per_class=600, changes={}),
    "smoke": dict(classes=8, per_class=20, changes=dict(meta_batch_size=2, k_query=2, inner_steps=1, filters=8)),
}


def synthetic_split(classes: int, per_class: int, device, size: int = 84, seed: int = 0,
                    noise: float = 12.0) -> ClassImages:
    """A uint8 (classes, per_class, size, size, 3) split on ``device``: per-class colour and stripes + noise.

    ``noise`` is the std of the Gaussian pixel noise (0–255 scale); raise it for harder tasks.
    """
    device = torch.device(device)
    g = torch.Generator(device=device).manual_seed(seed)
    crng = np.random.default_rng(seed)
    yy, xx = torch.meshgrid(torch.arange(size, device=device, dtype=torch.float32),
                            torch.arange(size, device=device, dtype=torch.float32), indexing="ij")
    images = torch.empty(classes, per_class, size, size, 3, dtype=torch.uint8, device=device)
    for c in range(classes):                     # one class at a time: ~50 MB of float32 at most
        colour = torch.tensor(crng.uniform(40, 215, size=3), dtype=torch.float32, device=device)
        angle, freq = crng.uniform(0, math.pi), crng.uniform(0.1, 0.4)
        phase = torch.rand(per_class, 1, 1, generator=g, device=device) * 2 * math.pi
        stripes = torch.sin(freq * (math.cos(angle) * xx + math.sin(angle) * yy) + phase)  # (P, H, W)
        jitter = torch.randn(per_class, size, size, 3, generator=g, device=device) * noise
        images[c] = (colour + 35 * stripes[..., None] + jitter).clamp_(0, 255).to(torch.uint8)
    return ClassImages(images, torch.full((classes,), per_class, device=device),
                       [f"synthetic{c:02d}" for c in range(classes)],
                       name=f"SYNTHETIC {classes}x{per_class}x{size}x{size}x3", fake=True)


def sync(device: torch.device) -> None:
    """Wait for the device's queued work (a no-op on a CPU), so a timer around it sees all of it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_loop(cfg: FewShotConfig, split: ClassImages, device: torch.device, *, warmup: int,
              iterations: int, time_limit_s: float | None) -> dict:
    """Warm up, then time each iteration of the one training loop (synchronised); peak GPU memory over it.

    :func:`mamlbook.train.fit` with the learner and task stream of :func:`~mamlbook.fewshot.train_fewshot`
    (validation and checkpoints off): the loop times each outer step, sampling excluded.
    """
    problem = fewshot_problem(cfg, {"train": split}, device=device, validate=False)   # its model, episodes
    torch.manual_seed(cfg.seed)
    learner = maml_learner(cfg, problem.make_model().to(device))
    common = dict(generator=torch.Generator().manual_seed(cfg.seed), progress=False,
                  optimizer=learner.make_optimizer(cfg.meta_lr))
    compile_start = time.perf_counter()
    fit(learner, problem.sample, iterations=warmup, **common)
    sync(device)
    warmup_s = time.perf_counter() - compile_start
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        start_alloc = torch.cuda.memory_allocated(device)
    run = fit(learner, problem.sample, iterations=iterations, time_budget_s=time_limit_s, **common)
    times = [1000 * t for t in run.step_s]
    out = {"precision": learner.amp.describe(), "compiled": cfg.compile, "warmup_s": warmup_s,
           "iterations": len(times), "ms_all": times,
           "ms_median": statistics.median(times), "ms_mean": statistics.fmean(times),
           "stopped_by_budget": len(times) < iterations, "loss_first": run.losses[0], "loss_last": run.losses[-1]}
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(device)
        out.update(peak_mem_mb=peak / 2**20, train_mem_mb=(peak - start_alloc) / 2**20)
    return out


def time_train_fewshot(cfg: FewShotConfig, split: ClassImages, device: torch.device, *, warmup: int,
                       iterations: int, time_limit_s: float | None) -> dict:
    """Mean ms/iteration of :func:`train_fewshot` itself: ``warmup`` iterations, then resume for more."""
    with tempfile.TemporaryDirectory() as tmp:
        common = dict(splits={"train": split}, out=tmp, device=device, progress=False, validate=False)
        first = train_fewshot(cfg.replace(iterations=max(warmup, 1)), **common)
        second = train_fewshot(cfg.replace(iterations=first.iteration + iterations), resume=True,
                               time_budget_s=time_limit_s, **common)
    done = second.iteration - first.iteration
    return {"e2e_iterations": done, "e2e_ms_mean": (second.train_time_s - first.train_time_s) * 1000 / done}


def projection(ms_per_iteration: float) -> dict:
    """Hours and minutes for ``PROJECT_ITERATIONS`` iterations at ``ms_per_iteration``."""
    hours = ms_per_iteration * PROJECT_ITERATIONS / 1000 / 3600
    return {"projected_iterations": PROJECT_ITERATIONS, "projected_hours": hours, "projected_minutes": hours * 60}


def environment(device: torch.device) -> dict:
    """:func:`mamlbook.runs.machine_info`, with ``device`` as its type ("cuda"/"cpu") as the recorded files have it."""
    return {**machine_info(device), "device": torch.device(device).type}


def flat64(tensors) -> torch.Tensor:
    """The tensors (a meta-gradient's, in parameter order) as one flat float64 vector, on their device."""
    return torch.cat([t.detach().double().flatten() for t in tensors])


def agreement(g: torch.Tensor, ref: torch.Tensor) -> tuple[float, float]:
    """‖g − ref‖/‖ref‖ and the cosine of flat vectors (:func:`flat64`): a gradient against its reference."""
    return ((g - ref).norm() / ref.norm()).item(), torch.nn.functional.cosine_similarity(g, ref, dim=0).item()


def run_check(device="cuda", *, iterations: int = 200, warmup: int = 20, modes=("fp32", "amp"),
              orders=("second", "first"), shape: str | None = None, budget_s: float | None = None,
              end_to_end: bool = True, on_row=None, tf32=(False,)) -> dict:
    """Every (order, mode) row of the check, with its environment; see the module docstring.

    A row that fails is kept with ``status="error"`` and its message; ``on_row(result_so_far)`` runs
    after every row (``main`` rewrites the JSON there).
    """
    device = torch.device(device)
    shape = shape or ("w3" if device.type == "cuda" else "smoke")
    spec = SHAPES[shape]
    env = environment(device)
    base = get_preset(PRESET).config.replace(**spec["changes"])
    t0 = time.perf_counter()
    split = synthetic_split(spec["classes"], spec["per_class"], device)
    sync(device)
    split_s = time.perf_counter() - t0
    combos = [(o, m, t) for o in orders for m in modes for t in tf32 if m != "amp" or not t]
    limit = None if budget_s is None else budget_s / (len(combos) * (2 if end_to_end else 1))  # per timed run
    timing = dict(warmup=warmup, iterations=iterations, time_limit_s=limit)
    rows = []
    result = {"environment": env, "shape": shape, "preset": PRESET, "config": base.to_dict(),
              "split_shape": list(split.images.shape), "split_mb": split.images.numel() / 2**20,
              "split_build_s": split_s, "rows": rows}
    for order, mode, allow_tf32 in combos:
        cfg = base.replace(first_order=order == "first", amp=mode == "amp", tf32=allow_tf32,
                           compile=mode == "compiled")
        row = {"shape": shape, "order": order, "mode": mode, "tf32": allow_tf32, **env,
               **{k: getattr(cfg, k) for k in ("n_way", "k_shot", "k_query", "meta_batch_size", "inner_steps",
                                               "inner_lr")}, "warmup": warmup}
        try:
            Amp.create(cfg.amp, device)
        except AmpNotSupportedError as err:
            rows.append({**row, "status": "refused", "reason": str(err)})
            print(f"{order}-order {mode}: refused: {err}", flush=True)
            continue
        try:
            row.update(status="ok", **time_loop(cfg, split, device, **timing))
            row.update(projection(row["ms_median"]))
            row["within_target"] = row["projected_minutes"] <= TARGET_MINUTES
            print(f"{order}-order {row['precision']}: {row['ms_median']:.1f} ms/it (median of "
                  f"{row['iterations']}) → {row['projected_minutes']:.1f} min for 60k", flush=True)
        except Exception as err:                      # noqa: BLE001 — keep the other rows
            row.update(status="error", reason=f"{type(err).__name__}: {err}")
            print(f"{order}-order {mode}: ERROR {row['reason']}", flush=True)
        if end_to_end and row["status"] == "ok":      # a cross-check: its failure keeps the timing
            try:
                row.update(time_train_fewshot(cfg, split, device, **timing))
            except Exception as err:                  # noqa: BLE001
                row["e2e_error"] = f"{type(err).__name__}: {err}"
                print(f"{order}-order {mode}: train_fewshot cross-check ERROR {row['e2e_error']}", flush=True)
        if device.type == "cuda":
            torch.cuda.empty_cache()
        rows.append(row)
        if on_row is not None:
            on_row(result)
    return result


def _fmt(value, spec: str) -> str:
    return "—" if value is None else format(value, spec)


def format_table(result: dict) -> str:
    """The Markdown table for the README, with a line saying what was run where."""
    env, smoke = result["environment"], result["shape"] == "smoke"
    c = result["config"]
    lines = (["**SMOKE run (shrunk episodes, tiny split): NOT the W3 shape; not for the README.**\n"]
             if smoke else [])
    lines += [f"{PRESET} training step ({'SMOKE' if smoke else 'W3'}: {c['n_way']}-way {c['k_shot']}-shot, "
              f"{c['k_query']} queries/class, meta-batch {c['meta_batch_size']}, {c['inner_steps']} inner "
              f"steps, α={c['inner_lr']}), "
              f"SYNTHETIC images, split of {result['split_mb']:.0f} MB resident on the device. "
              f"{env['device_name']}, torch {env['torch']}, {env['date'][:10]}; "
              f"`python -m mamlbook.measure.gpu_speed`.\n",
              "| card | order | precision | ms/it median | ms/it mean | train_fewshot ms/it | "
              "peak GPU MB (incl. split) | 60k iterations |", "|" + "---|" * 8]
    for r in result["rows"]:
        if r["status"] != "ok":
            reason = r["reason"].split(". ")[0].replace("|", "/")
            lines.append(f"| {r['device_name']} | {r['order']} | {r['mode']} | {r['status']}: {reason} "
                         "| — | — | — | — |")
            continue
        h = r["projected_hours"]
        proj = f"{h * 60:.0f} min" if h < 2 else f"{h:.1f} h"
        precision = r["precision"] + (f" (TF32 {'on' if r.get('tf32') else 'off'})"
                                      if r["precision"] == "float32" and "tf32" in r else "")
        precision += ", torch.compile" if r.get("compiled") else ""
        lines.append(f"| {r['device_name']} | {r['order']} | {precision} | {r['ms_median']:.1f} | "
                     f"{r['ms_mean']:.1f} | {_fmt(r.get('e2e_ms_mean'), '.1f')} | "
                     f"{_fmt(r.get('peak_mem_mb'), '.0f')} | {proj} |")
    lines.append(f"\nProjection = median ms/it × {PROJECT_ITERATIONS:,}, validation excluded. "
                 f"Target (issue 4): ≤ {TARGET_MINUTES} min for second-order on one H100.")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m mamlbook.measure.gpu_speed", description=__doc__.split("\n")[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="cuda or cpu")
    p.add_argument("--iterations", type=int, default=200, help="timed iterations per row")
    p.add_argument("--warmup", type=int, default=20, help="untimed iterations first")
    p.add_argument("--modes", default="fp32,amp", help="comma list of fp32, amp, compiled (fp32, torch.compile)")
    p.add_argument("--orders", default="second,first", help="comma list of second, first")
    p.add_argument("--shape", choices=sorted(SHAPES), default=None,
                   help="w3 (default on cuda) or smoke (default on cpu)")
    p.add_argument("--budget-s", type=float, default=None,
                   help="seconds of timed training in all (shared by the rows; default 180 on cuda)")
    p.add_argument("--no-end-to-end", action="store_true", help="skip the train_fewshot cross-check")
    p.add_argument("--tf32", default="off", help="off, on, or off,on: TF32 for the float32 rows")
    p.add_argument("--json", type=Path, default=None, help="write the rows here")
    args = p.parse_args(argv)
    modes, orders = args.modes.split(","), args.orders.split(",")
    if not set(modes) <= {"fp32", "amp", "compiled"} or not set(orders) <= {"second", "first"}:
        p.error(f"--modes takes fp32,amp,compiled and --orders second,first; got {args.modes!r}, {args.orders!r}")
    if args.iterations < 1 or args.warmup < 0:
        p.error("--iterations must be ≥ 1 and --warmup ≥ 0")
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda but no CUDA GPU is visible; use --device cpu for the smoke test")
    budget = args.budget_s if args.budget_s is not None else (180.0 if device.type == "cuda" else None)
    command = " ".join(["python -m mamlbook.measure.gpu_speed", *(argv if argv is not None else sys.argv[1:])])

    def write(result: dict) -> None:
        result["command"] = command
        result["markdown"] = format_table(result)
        if args.json:                                 # atomic: a run cut short leaves the last whole file
            write_json(args.json, result)

    result = run_check(device, iterations=args.iterations, warmup=args.warmup, modes=modes, orders=orders,
                       shape=args.shape, budget_s=budget, end_to_end=not args.no_end_to_end, on_row=write,
                       tf32=tuple(v == "on" for v in args.tf32.split(",")))
    write(result)
    print(result["markdown"])
    if args.json:
        print(f"wrote {args.json}")
    return 1 if any(r["status"] == "error" for r in result["rows"]) else 0


if __name__ == "__main__":
    sys.exit(main())
