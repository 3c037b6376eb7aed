"""``python -m mamlbook train|evaluate`` for the classification presets (Omniglot, mini-ImageNet).

``train`` writes into ``--out``: ``checkpoint.pt`` (every ``--checkpoint-every`` iterations,
atomic; ``--resume`` continues it exactly), ``best.pt`` (best meta-validation accuracy),
``log.csv`` (per iteration: meta-loss, a training task's query accuracy every 10
iterations, validation accuracy where measured) and ``metrics.json``:

    {"preset", "paper": {"acc", "ci95", "source"}, "config", "iterations_done",
     "stopped_by_budget", "best_iteration", "best_val_acc", "val": [...],
     "train_time_s", "eval_time_s", "wall_time_s", "date", "fast_mode", "fake_data", "machine",
     "eval": {"<Q> queries/class": {"num_tasks", "steps", "acc", "ci95", "k_query"}, ...}}

where ``acc[i]`` ± ``ci95[i]`` is the meta-test accuracy (%) after ``steps[i]`` SGD steps,
measured with ``best.pt`` on the meta-test split (never used in training or selection).
"""
from __future__ import annotations

import datetime as _dt
import time
from pathlib import Path

import torch

from .checkpoint import load_checkpoint
from .config import fast_mode
from .evaluate import EvalResult
from .fewshot import FewShotConfig, load_splits, make_model, meta_test, train_fewshot
from .presets import get_preset
from .runinfo import machine_info, write_json


def _eval_json(results: dict[str, EvalResult]) -> dict:
    return {name: {"k_query": int(name.split()[0]), "num_tasks": r.num_tasks, "steps": r.steps,
                   "acc": r.mean, "ci95": r.ci95} for name, r in results.items()}


def _config(args) -> FewShotConfig:
    preset = get_preset(args.preset)
    cfg = preset.config.replace(seed=args.seed, first_order=args.first_order or preset.config.first_order,
                                amp=args.amp, test_tasks=args.eval_tasks)
    overrides = {"iterations": args.iterations, "inner_lr": args.inner_lr, "meta_batch_size": args.meta_batch_size,
                 "inner_steps": args.inner_steps, "meta_lr": args.meta_lr, "checkpoint_every": args.checkpoint_every,
                 "val_every": args.val_every, "split": args.split}
    if args.k_shot is not None:
        overrides["k_shot"] = args.k_shot
        if cfg.dataset == "omniglot":
            overrides["k_query"] = args.k_shot            # Omniglot: Q = K, as the official code
    return cfg.replace(**{k: v for k, v in overrides.items() if v is not None})


def _report(results: dict[str, EvalResult], steps: int) -> None:
    for name, r in results.items():
        m, c = r.at(steps)
        print(f"meta-test, {name}, {r.num_tasks} tasks, {steps} steps: {m:.2f} ± {c:.2f}%")


def train_fewshot_cli(args) -> dict:
    """Run ``train`` for a classification preset; returns the metrics it wrote."""
    cfg = _config(args)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if fast_mode():
        print("FAST MODE (MAMLBOOK_FAST=1): numbers from this run are from a shortened run.")
    splits = load_splits(cfg, args.data)
    fake = any(s.fake for s in splits.values())
    if fake:
        print("FAKE DATA: this run uses a generated stand-in; its accuracies say nothing about the real dataset.")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.resume:
        print(f"Resuming {out / 'checkpoint.pt'}.")
    print(f"preset={args.preset} device={device} " + " ".join(f"{k}={v}" for k, v in cfg.to_dict().items()),
          flush=True)
    run = train_fewshot(cfg, splits, out=out, resume=args.resume, device=device,
                        time_budget_s=args.time_budget, progress=args.progress, desc=args.preset)
    if run.stopped_by_budget:
        print(f"Stopped by the time budget at iteration {run.iteration} of {cfg.iterations}; "
              f"continue with --resume.")
    eval_start = time.perf_counter()
    results = meta_test(run.best_model(), cfg, splits["test"], seed=args.seed, device=device)
    eval_time = time.perf_counter() - eval_start
    preset = get_preset(args.preset)
    metrics = {
        "preset": args.preset, "paper": {"acc": preset.paper_acc, "ci95": preset.paper_ci95, "source": preset.source},
        "config": cfg.to_dict(), "iterations_done": run.iteration, "stopped_by_budget": run.stopped_by_budget,
        "best_iteration": run.best_iteration, "best_val_acc": run.best_val_acc, "val": run.val,
        "train_time_s": run.train_time_s, "eval_time_s": eval_time, "wall_time_s": run.train_time_s + eval_time,
        "date": _dt.datetime.now().isoformat(timespec="seconds"), "fast_mode": fast_mode(), "fake_data": fake,
        "machine": machine_info(device), "eval": _eval_json(results),
    }
    write_json(out / "metrics.json", metrics)
    _report(results, cfg.test_inner_steps)
    print(f"best validation accuracy {run.best_val_acc:.2f}% at iteration {run.best_iteration}; "
          f"wall time {metrics['wall_time_s']:.1f} s. Wrote {out / 'metrics.json'}.")
    return metrics


def is_fewshot_checkpoint(path) -> bool:
    """True if ``path`` is a checkpoint of a classification run (its config names a dataset)."""
    return "dataset" in load_checkpoint(path).get("config", {})


def evaluate_fewshot_cli(args) -> dict:
    """Run ``evaluate`` on a classification checkpoint (``best.pt`` or ``checkpoint.pt``)."""
    state = load_checkpoint(args.checkpoint)
    cfg = FewShotConfig.from_dict(state["config"])
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    splits = load_splits(cfg, args.data)
    model = make_model(cfg).to(device)
    model.load_state_dict(state["model"])
    results = meta_test(model, cfg, splits["test"], num_tasks=args.tasks, steps=args.steps,
                        inner_lr=args.inner_lr, seed=args.seed, device=device)
    out = {"checkpoint": str(args.checkpoint), "iteration": state["iteration"], "config": cfg.to_dict(),
           "fake_data": any(s.fake for s in splits.values()), "eval": _eval_json(results)}
    path = args.json or Path(args.checkpoint).with_name("eval.json")
    write_json(path, out)
    _report(results, args.steps)
    print(f"Wrote {path}.")
    return out
