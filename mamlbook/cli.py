"""Command line for long runs: ``python -m mamlbook train|evaluate|bench``.

    python -m mamlbook train --preset sinusoid --out runs/sine [--iterations N] [--seed S]
                             [--inner-lr A] [--k-shot K] [--resume] [--no-compile]
    python -m mamlbook evaluate --checkpoint runs/sine/checkpoint.pt [--tasks 600]

    python -m mamlbook train --preset omniglot-5w1s|omniglot-5w5s|omniglot-20w1s|omniglot-20w5s|
                                      miniimagenet-5w1s|miniimagenet-5w5s --data DIR --out DIR
                             [--resume] [--amp] [--first-order] [--iterations N] [--time-budget S]
    python -m mamlbook train --preset ... --algorithm maml|fomaml|reptile|anil|metasgd|mamlpp|protonet
    python -m mamlbook evaluate --checkpoint runs/omni/best.pt --data DIR [--tasks 600]

The classification presets (see mamlbook/presets.py and docs/classification.md) write
``OUT/checkpoint.pt``, ``OUT/best.pt`` (best meta-validation accuracy), ``OUT/log.csv`` and
``OUT/metrics.json``; the 600-task meta-test is run on ``best.pt``.

``train`` writes ``OUT/checkpoint.pt`` (every ``--checkpoint-every`` iterations, atomically,
so ``--resume`` continues an interrupted run exactly) and, at the end, ``OUT/metrics.json``:

    {"preset": ..., "config": {...}, "wall_time_s": total seconds (training + evaluation),
     "train_time_s": ..., "eval": {"k_shot": K, "k_query": Q, "num_tasks": 600,
     "inner_lr": α, "steps": [0, ..., 10], "mse": [...], "ci95": [...]}, ...}

where ``mse[i]`` and ``ci95[i]`` are the mean query MSE over the meta-test tasks after
``steps[i]`` SGD steps and its 95% confidence half-width (1.96·std/√n).
"""
from __future__ import annotations

import argparse
import datetime as _dt
import shutil
import sys
import time
from pathlib import Path

import torch

from .algorithms import ALGORITHMS
from .checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from .runinfo import machine_info, write_json
from .config import fast_mode
from .evaluate import NUM_TEST_TASKS, EvalResult
from .models import SinusoidMLP
from .presets import PRESETS as FEWSHOT_PRESETS
from .sinusoid import SinusoidConfig, evaluate_model, task_stream
from .train import make_meta_optimizer, meta_train

PRESETS = {
    "sinusoid": "Finn et al. 2017 §5.1: MLP 1-40-40-1, K=10, meta-batch 25, α=0.01, 1 inner step, "
                "Adam β=1e-3, 70,000 iterations",
    **{name: p.describe() for name, p in FEWSHOT_PRESETS.items()},
}


def _eval_json(result: EvalResult, k_shot: int, k_query: int, inner_lr: float) -> dict:
    return {"k_shot": k_shot, "k_query": k_query, "num_tasks": result.num_tasks,
            "inner_lr": inner_lr, "steps": result.steps, "mse": result.mean, "ci95": result.ci95,
            "median": result.median}


def _positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive (a whole number), got {value}")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m mamlbook", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    tr = sub.add_parser("train", help="meta-train a preset and write checkpoint.pt + metrics.json")
    tr.add_argument("--preset", required=True, choices=sorted(PRESETS),
                    help="; ".join(f"{k}: {v}" for k, v in PRESETS.items()))
    tr.add_argument("--out", required=True, type=Path, help="output folder")
    tr.add_argument("--iterations", type=_positive_int, help="meta-training iterations (preset: 70000)")
    tr.add_argument("--seed", type=int, default=0)
    tr.add_argument("--inner-lr", type=_positive_float, help="α, inner step size (preset: 0.01)")
    tr.add_argument("--k-shot", type=_positive_int, help="K support points per task (preset: 10)")
    tr.add_argument("--meta-batch-size", type=_positive_int, help="tasks per meta-batch (preset: 25)")
    tr.add_argument("--inner-steps", type=_positive_int, help="inner SGD steps in training (preset: 1)")
    tr.add_argument("--meta-lr", type=_positive_float, help="β, Adam's step size (preset: 1e-3)")
    tr.add_argument("--first-order", action="store_true", help="first-order MAML (drop the Hessian term)")
    tr.add_argument("--algorithm", choices=ALGORITHMS, default="maml",
                    help="meta-learner (default maml; fomaml = --first-order). Others use the per-algorithm "
                         "settings of mamlbook/compare.py (their papers'); protonet: classification only")
    tr.add_argument("--init", choices=("pytorch", "official"), default="pytorch",
                    help="weight init: PyTorch's default, or the official code's truncated normal (std 0.01)")
    tr.add_argument("--eval-tasks", type=_positive_int, default=NUM_TEST_TASKS)
    tr.add_argument("--checkpoint-every", type=_positive_int,
                    help="iterations between checkpoints (sinusoid: 5000; classification presets: 1000)")
    tr.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt")
    tr.add_argument("--no-compile", dest="compile", action="store_false",
                    help="skip torch.compile (it needs a C compiler; ~40 s once, then ~4x faster steps)")
    tr.add_argument("--threads", type=_positive_int, default=1,
                    help="CPU threads for PyTorch (default 1: the sinusoid MLP's matrices are tiny, and "
                         "more threads only add synchronisation; measured 4-10x slower on a busy 2-core machine)")
    tr.add_argument("--no-progress", dest="progress", action="store_false")
    tr.add_argument("--data", type=Path, help="classification presets: the data folder (see docs/data.md)")
    tr.add_argument("--amp", action="store_true",
                    help="mixed precision (bf16 autocast, or fp16 + GradScaler); needs a CUDA GPU")
    tr.add_argument("--device", help="classification presets: cpu or cuda (default: cuda if available)")
    tr.add_argument("--time-budget", type=_positive_float,
                    help="classification presets: stop (with a checkpoint) after this many seconds of training")
    tr.add_argument("--val-every", type=_positive_int, help="classification presets: validate every N iterations")
    tr.add_argument("--split", choices=["small", "maml", "vinyals"],
                    help="Omniglot split preset (default 'maml'; 'small' = the two small background sets)")

    ev = sub.add_parser("evaluate", help="evaluate a checkpoint on new tasks")
    ev.add_argument("--checkpoint", required=True, type=Path)
    ev.add_argument("--tasks", type=_positive_int, default=NUM_TEST_TASKS)
    ev.add_argument("--steps", type=_positive_int, default=10, help="largest number of inner steps")
    ev.add_argument("--inner-lr", type=_positive_float, help="α at test time (default: the training α)")
    ev.add_argument("--json", type=Path, help="where to write the result (default: eval.json beside the checkpoint)")
    ev.add_argument("--data", type=Path, help="classification checkpoints: the data folder")
    ev.add_argument("--device", help="classification checkpoints: cpu or cuda")
    ev.add_argument("--seed", type=int, default=0, help="seed of the meta-test task sampler")

    from . import bench  # imported here: the benchmark module pulls in the conv models
    be = sub.add_parser("bench", help="time one meta-training step against the baselines (ms/step, ratios)")
    bench.add_arguments(be)
    return parser


def _config_from_args(args) -> SinusoidConfig:
    overrides = {"iterations": args.iterations, "inner_lr": args.inner_lr, "k_shot": args.k_shot,
                 "meta_batch_size": args.meta_batch_size, "inner_steps": args.inner_steps,
                 "meta_lr": args.meta_lr}
    fields = {k: v for k, v in overrides.items() if v is not None}
    return SinusoidConfig(seed=args.seed, first_order=args.first_order, init=args.init, **fields)


def train(args) -> dict:
    """Run ``train``; returns the metrics it wrote."""
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    ckpt_path = out / "checkpoint.pt"
    cfg = _config_from_args(args)
    torch.set_num_threads(args.threads)
    torch.manual_seed(cfg.seed)
    model = SinusoidMLP(init=cfg.init)
    optimizer = make_meta_optimizer(model, cfg.meta_lr)
    generator = torch.Generator().manual_seed(cfg.seed)
    start_iteration, losses, prior_time = 0, [], 0.0
    if args.resume:
        state = load_checkpoint(ckpt_path)
        saved = SinusoidConfig(**state["config"])
        if args.iterations is not None:
            saved.iterations = args.iterations
        cfg = saved
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        generator.set_state(state["task_generator"])
        start_iteration = state["iteration"]
        losses = state["losses"].tolist()
        prior_time = state["train_time_s"]
        print(f"Resuming {ckpt_path} at iteration {start_iteration} of {cfg.iterations}.")
    compile = args.compile and shutil.which("cc") is not None
    if compile:
        print("Compiling the meta-gradient with torch.compile (a one-off ~40 s on 2 cores; "
              "--no-compile skips it).", flush=True)
    print(f"preset={args.preset} " + " ".join(f"{k}={v}" for k, v in cfg.to_dict().items()), flush=True)

    started = time.perf_counter()
    run_losses = []

    def checkpoint(iteration: int) -> None:
        save_checkpoint(ckpt_path, {
            "preset": args.preset, "config": cfg.to_dict(), "iteration": iteration,
            "model": model.state_dict(), "optimizer": optimizer.state_dict(),
            "task_generator": generator.get_state(),
            "losses": torch.tensor(losses + run_losses[:iteration - start_iteration]),
            "train_time_s": prior_time + time.perf_counter() - started})

    def on_iteration(iteration: int) -> None:
        if iteration % (args.checkpoint_every or 5000) == 0 and iteration < cfg.iterations:
            checkpoint(iteration)

    history = meta_train(model, task_stream(cfg, generator), iterations=cfg.iterations,
                         inner_lr=cfg.inner_lr, inner_steps=cfg.inner_steps, optimizer=optimizer,
                         first_order=cfg.first_order, start_iteration=start_iteration,
                         compile=compile, on_iteration=on_iteration, progress=args.progress,
                         desc=f"MAML sinusoid K={cfg.k_shot}")
    run_losses = history.loss
    train_time = prior_time + (time.perf_counter() - started)
    checkpoint(cfg.iterations)

    eval_start = time.perf_counter()
    result = evaluate_model(model, cfg.k_shot, cfg.inner_lr, num_tasks=args.eval_tasks)
    eval_time = time.perf_counter() - eval_start
    all_losses = losses + run_losses
    window = 100
    curve = [sum(all_losses[i:i + window]) / len(all_losses[i:i + window])
             for i in range(0, len(all_losses), window)]
    metrics = {
        "preset": args.preset, "config": cfg.to_dict(), "compiled": compile,
        "wall_time_s": train_time + eval_time, "train_time_s": train_time, "eval_time_s": eval_time,
        "resumed_from": start_iteration if args.resume else None,
        "date": _dt.datetime.now().isoformat(timespec="seconds"), "fast_mode": fast_mode(),
        "machine": machine_info("cpu"),
        "eval": _eval_json(result, cfg.k_shot, cfg.k_shot, cfg.inner_lr),
        "loss_curve": {"window": window, "iteration": [min((i + 1) * window, len(all_losses))
                                                        for i in range(len(curve))], "loss": curve},
    }
    write_json(out / "metrics.json", metrics)
    print(result)
    m1, c1 = result.at(1)
    print(f"K={cfg.k_shot}: MSE after 1 step {m1:.3f} ± {c1:.3f}; "
          f"wall time {metrics['wall_time_s']:.1f} s. Wrote {out / 'metrics.json'} and {ckpt_path}.")
    return metrics


def evaluate(args) -> dict:
    """Run ``evaluate``; returns the JSON it wrote."""
    state = load_checkpoint(args.checkpoint)
    cfg = SinusoidConfig(**state["config"])
    model = SinusoidMLP()
    model.load_state_dict(state["model"])
    inner_lr = args.inner_lr or cfg.inner_lr
    result = evaluate_model(model, cfg.k_shot, inner_lr, max_steps=args.steps, num_tasks=args.tasks)
    out = {"checkpoint": str(args.checkpoint), "iteration": state["iteration"],
           "config": cfg.to_dict(), "eval": _eval_json(result, cfg.k_shot, cfg.k_shot, inner_lr)}
    path = args.json or args.checkpoint.with_name("eval.json")
    write_json(path, out)
    print(result)
    print(f"Wrote {path}.")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if args.command == "bench":
            from . import bench
            return bench.run(args)
        if args.command == "train":
            if args.algorithm == "fomaml":
                args.first_order = True
            if args.algorithm not in ("maml", "fomaml"):
                from .cli_algorithms import train_algorithm_cli
                train_algorithm_cli(args)
            elif args.preset in FEWSHOT_PRESETS:
                from .cli_fewshot import train_fewshot_cli
                train_fewshot_cli(args)
            else:
                train(args)
        else:
            from .cli_algorithms import evaluate_algorithm_cli, is_algorithm_checkpoint
            from .cli_fewshot import evaluate_fewshot_cli, is_fewshot_checkpoint
            if is_algorithm_checkpoint(args.checkpoint):
                evaluate_algorithm_cli(args)
            elif is_fewshot_checkpoint(args.checkpoint):
                evaluate_fewshot_cli(args)
            else:
                evaluate(args)
    except (CheckpointError, ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0
