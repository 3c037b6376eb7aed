"""The command line: ``python -m mamlbook train | evaluate | bench | report``.

The long runs of chapters 2 and 6–8 from a shell.

    python -m mamlbook train --preset sinusoid --out runs/sine [--algorithm maml] [--iterations N] ...
    python -m mamlbook train --preset omniglot-5w1s --split small --data DIR --out runs/omni [--resume]
    python -m mamlbook evaluate --checkpoint runs/omni/best.pt --data DIR [--tasks 600] [--steps N] [--inner-lr A]
    python -m mamlbook bench [--workloads W1,W2]            (see mamlbook.measure.bench)
    python -m mamlbook report runs/*/metrics.json            (a Markdown results table)

``train`` is one pipeline for every preset and every ``--algorithm``: parse → preset → problem
(model, task stream, fixed val/test tasks) + learner → :func:`mamlbook.train.fit` → meta-test →
run record. What it writes, and how every flag is honoured or refused (exit code 2, one line naming the
flag and the learner; nothing on disk touched): README, "Long runs from the command line".
"""
from __future__ import annotations

import argparse
import datetime as _dt
import sys
import time
from pathlib import Path

import torch

from .algorithms import ALGORITHMS, PRETRAINED, make_algorithm
from .compare import SETTINGS
from .config import fast_mode
from .distributed import (
    close,
    describe,
    distribute,
    elastic_resume,
    init_from_environment,
    launched_by_torchrun,
    on_main,
)
from .errors import MamlbookError, OptionError
from .fast import can_compile
from .fewshot import FewShotConfig, load_splits
from .measure import bench
from .presets import PRESETS as FEWSHOT_PRESETS
from .problems import evaluate_learner, fewshot_problem, sinusoid_problem
from .report import results_table
from .runs import load_checkpoint, machine_info, write_json
from .sinusoid import SinusoidConfig
from .train import fit

__all__ = ["PRESETS", "build_parser", "main", "train", "evaluate"]

PRESETS = {
    "sinusoid": "MLP 1-40-40-1, K=10, 1 inner step at α=0.01 (Finn et al. 2017 §5.1); meta-batch 25, "
                "Adam β=1e-3, 70,000 iterations (the official code's)",
    **{name: p.describe() for name, p in FEWSHOT_PRESETS.items()},
}
CLASSIFICATION_ONLY = ("data", "split", "val_every")
# Settings the learner owns: recorded once, under "learner", with the values the learner used.
LEARNER_KEYS = ("inner_lr", "inner_steps", "test_inner_steps", "first_order", "grad_clip", "amp", "tf32", "compile")
# Flags a learner has no use for (given: refused), and why.
REFUSED = {
    "protonet": (("inner_lr", "inner_steps"), "Prototypical Networks have no inner loop"),
    "reptile": (("meta_lr",), "its outer step is the interpolation ε, set in mamlbook/compare.py; it has no "
                              "meta-optimizer"),
    **{name: (("inner_lr", "inner_steps", "meta_batch_size"), "it pretrains an ordinary classifier on flat "
              "batches of all meta-train classes: no inner loop, no meta-batch of tasks") for name in PRETRAINED},
}


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
    tr = sub.add_parser("train", help="meta-train a preset; writes checkpoint.pt, best.pt, log.csv, metrics.json")
    tr.add_argument("--preset", required=True, choices=sorted(PRESETS),
                    help="; ".join(f"{k}: {v}" for k, v in PRESETS.items()).replace("%", "%%"))
    tr.add_argument("--out", required=True, type=Path, help="output folder")
    tr.add_argument("--algorithm", choices=ALGORITHMS, default="maml",
                    help="meta-learner (default maml); the others start from their papers' settings "
                         "(mamlbook/compare.py); protonet: classification only")
    tr.add_argument("--iterations", type=_positive_int, help="meta-training iterations (preset's by default)")
    tr.add_argument("--time-budget", type=_positive_float, help="stop (with a checkpoint) after this many "
                    "seconds of training; --resume continues")
    tr.add_argument("--seed", type=int, default=0)
    tr.add_argument("--inner-lr", type=_positive_float, help="α, the inner step size (mean-loss units)")
    tr.add_argument("--inner-steps", type=_positive_int, help="inner steps in meta-training")
    tr.add_argument("--k-shot", type=_positive_int, help="K support examples per task (per class)")
    tr.add_argument("--meta-batch-size", type=_positive_int, help="tasks per meta-batch")
    tr.add_argument("--meta-lr", type=_positive_float, help="β, Adam's step size (not Reptile: it has no optimizer)")
    tr.add_argument("--first-order", action="store_true", help="drop the second-order term (MAML, ANIL, "
                    "Meta-SGD, MAML++)")
    tr.add_argument("--adapt-bn", action=argparse.BooleanOptionalAction, default=True,
                    help="adapt BatchNorm's β in the inner loop (the default), or hold it at θ there as the "
                         "official code does (--no-adapt-bn; the outer step still learns it; MAML, first-order "
                         "MAML, ANIL, Meta-SGD, truncated; conv presets)")
    tr.add_argument("--init", choices=("pytorch", "official"), default="pytorch",
                    help="sinusoid: PyTorch's default init, or the official code's truncated normal (std 0.01)")
    tr.add_argument("--eval-tasks", type=_positive_int, default=600, help="meta-test tasks (600, the official code's)")
    tr.add_argument("--checkpoint-every", type=_positive_int, help="iterations between checkpoints "
                    "(sinusoid 5000, classification presets 1000)")
    tr.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt")
    tr.add_argument("--no-compile", dest="compile", action="store_false",
                    help="sinusoid MAML: skip torch.compile (needs a C compiler; 20-40 s the first time, "
                         "cached for later runs; then ~5x faster steps)")
    tr.add_argument("--threads", type=_positive_int, default=1,
                    help="CPU threads for PyTorch's kernels (default 1; with 1, MAML on the conv presets runs its "
                         "tasks on all cores instead: learner.path task-threads in metrics.json)")
    tr.add_argument("--no-progress", dest="progress", action="store_false")
    tr.add_argument("--device", help="cpu or cuda (default: cuda if available)")
    tr.add_argument("--amp", action="store_true", help="mixed precision (MAML, first-order MAML; CUDA only)")
    tr.add_argument("--data", type=Path, help="classification presets: the data folder (see docs/data.md)")
    tr.add_argument("--split", choices=["small", "maml", "vinyals"],
                    help="Omniglot split (default 'maml'; 'small' = the two small background sets)")
    tr.add_argument("--val-every", type=_positive_int, help="classification presets: validate every N iterations")

    ev = sub.add_parser("evaluate", help="evaluate a checkpoint on new tasks; writes eval.json")
    ev.add_argument("--checkpoint", required=True, type=Path)
    ev.add_argument("--tasks", type=_positive_int, default=600)
    ev.add_argument("--steps", type=int, help="adaptation steps (default: the learner's own)")
    ev.add_argument("--inner-lr", type=_positive_float, help="α at test time (default: the training α)")
    ev.add_argument("--adapt-bn", action=argparse.BooleanOptionalAction,
                    help="adapt BatchNorm's β at test time, or hold it at θ (default: as trained)")
    ev.add_argument("--json", type=Path, help="where to write the result (default: eval.json beside the checkpoint)")
    ev.add_argument("--data", type=Path, help="classification checkpoints: the data folder")
    ev.add_argument("--device", help="cpu or cuda")
    ev.add_argument("--seed", type=int, default=0, help="seed of the meta-test task sampler")
    ev.add_argument("--threads", type=_positive_int, default=1)

    bench.add_arguments(sub.add_parser("bench", help="time one meta-step against the baselines (ms, ratios)"))
    rp = sub.add_parser("report", help="a Markdown results table from metrics.json files")
    rp.add_argument("paths", nargs="+", type=Path)
    return parser


def resolve_device(name: str | None) -> torch.device:
    """``--device``: cpu, cuda or cuda:N; CUDA when available by default; refused when absent."""
    try:
        device = torch.device(name or ("cuda" if torch.cuda.is_available() else "cpu"))
    except RuntimeError as err:
        raise OptionError(f"--device {name!r} is not a device PyTorch knows ({err}); use cpu or cuda") from err
    if device.type == "cuda" and not torch.cuda.is_available():
        raise OptionError(f"--device {name}: PyTorch sees no CUDA GPU on this machine; use --device cpu")
    if device.type not in ("cpu", "cuda"):
        raise OptionError(f"--device {name}: mamlbook runs on cpu or cuda")
    return device


def _config(args):
    """The preset's settings with the command line's overrides (refusing those that do not apply)."""
    if args.preset == "sinusoid":
        given = [f"--{k.replace('_', '-')}" for k in CLASSIFICATION_ONLY if getattr(args, k) is not None]
        if given:
            raise OptionError(f"{', '.join(given)}: only for the classification presets, not sinusoid")
        fields = {k: getattr(args, k) for k in ("iterations", "inner_lr", "k_shot", "meta_batch_size",
                                                "inner_steps", "meta_lr") if getattr(args, k) is not None}
        return SinusoidConfig(seed=args.seed, init=args.init, **fields)
    if args.init != "pytorch":
        raise OptionError(f"--init {args.init}: only for the sinusoid preset (the Conv4s use PyTorch's init)")
    cfg = FEWSHOT_PRESETS[args.preset].config.replace(seed=args.seed, test_tasks=args.eval_tasks)
    over = {k: getattr(args, k) for k in ("iterations", "inner_lr", "meta_batch_size", "inner_steps", "meta_lr",
                                          "k_shot", "checkpoint_every", "val_every", "split")
            if getattr(args, k) is not None}
    if "k_shot" in over and cfg.dataset == "omniglot":
        over["k_query"] = args.k_shot                # Omniglot: Q = K, as the official code
    return cfg.replace(**over)


def learner_options(args, cfg) -> dict:
    """make_algorithm's options: the method's own settings (its paper's, compare.SETTINGS), then the flags."""
    name, sinusoid = args.algorithm, args.preset == "sinusoid"
    flags, why = REFUSED.get(name, ((), ""))
    given = [f"--{k.replace('_', '-')}" for k in flags if getattr(args, k)]
    if given:
        raise OptionError(f"{', '.join(given)}: not available for {name} ({why})")
    family = "sinusoid" if sinusoid else "omniglot"
    if name == "protonet" or name in PRETRAINED:   # no inner loop: their own settings on every preset
        options = dict(SETTINGS["omniglot"].get(name, {}))
    elif name in ("maml", "fomaml") or (not sinusoid and cfg.dataset == "miniimagenet"):   # the preset's own
        options = dict(SETTINGS[family].get(name, {}), inner_lr=cfg.inner_lr, inner_steps=cfg.inner_steps)
        if not sinusoid:
            options["test_steps"] = cfg.test_inner_steps
    else:
        options = dict(SETTINGS[family].get(name, {}))
        options.update({k: getattr(args, k) for k in ("inner_lr", "inner_steps") if getattr(args, k)})
    if name == "mamlpp":                         # one learned rate per step: tested with the steps it learned
        options["test_steps"] = options.get("inner_steps", 5)
    if args.first_order:
        options["first_order"] = True
    if not args.adapt_bn:
        options["adapt_bn"] = False
    if not sinusoid and cfg.grad_clip and name not in PRETRAINED:    # the official clip is MAML's
        options["grad_clip"] = cfg.grad_clip
    if args.amp:
        options["amp"] = True
    if not sinusoid and cfg.tf32:
        options["tf32"] = True
    if sinusoid and args.compile and name in ("maml", "fomaml") and can_compile(resolve_device(args.device)):
        options["compile"] = True
    return options


def build_problem(cfg, *, data=None, device=None, num_test_tasks: int = 600, test_seed: int = 0):
    """The :class:`~mamlbook.problems.Problem` of a run's settings (loads the data: errors say where to get it)."""
    if isinstance(cfg, SinusoidConfig):
        if data is not None:
            raise OptionError("--data: only for the classification presets, not sinusoid")
        # The paper meta-trains one model with K = 10 and tests it at K = 5, 10 and 20 (App. B).
        return sinusoid_problem(k_shot=cfg.k_shot, meta_batch_size=cfg.meta_batch_size, init=cfg.init,
                                num_test_tasks=num_test_tasks, k_test=sorted({5, 10, 20, cfg.k_shot}))
    return fewshot_problem(cfg, load_splits(cfg, data), device=device, num_test_tasks=num_test_tasks,
                           test_seed=test_seed)


def _finish(ranks, path: Path, record: dict, name: str, results: dict) -> dict:
    """Rank 0 writes ``record`` to ``path`` and prints the results; every rank leaves the process group."""
    if ranks is None or ranks.is_main:
        write_json(path, record)
        for protocol, r in results.items():
            i = r["steps"].index(r["test_steps"]) if r["test_steps"] in r["steps"] else -1
            print(f"{name}, {protocol}, {r['num_tasks']} tasks, {r['steps'][i]} test steps: {r['metric']} "
                  f"{r['mean'][i]:.3f} ± {r['ci95'][i]:.3f} (median {r['median'][i]:.3f})")
        print(f"Wrote {path}.")
    close(ranks)
    return record


def train(args) -> dict:
    """``train``: returns the metrics it wrote to ``OUT/metrics.json``."""
    torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    cfg = _config(args)
    # Under torchrun: join the ranks (gloo on the CPU, nccl on CUDA); this rank's device (docs/distributed.md).
    if args.algorithm in PRETRAINED and launched_by_torchrun():
        raise OptionError(f"--algorithm {args.algorithm}: not available under torchrun (the ranks split a meta-batch "
                          "of tasks; it trains on flat batches of classes): run it as one process")
    ranks, device = init_from_environment(device, meta_batch_size=cfg.meta_batch_size)
    options = learner_options(args, cfg)
    problem = build_problem(cfg, data=args.data, device=device, num_test_tasks=args.eval_tasks,
                            test_seed=args.seed)                      # data first: a refused run writes nothing
    resume = args.resume or elastic_resume(ranks, args.out)          # a torchrun restart continues its own run
    on_main(ranks, lambda: _check_out(args.out, resume))              # rank 0 looks at the folder, for all ranks
    torch.manual_seed(cfg.seed)
    options = problem.options_for(args.algorithm, options)            # the pretraining head's size
    learner = make_algorithm(args.algorithm, problem.make_model().to(device), problem=problem.kind, **options)
    distribute(learner, ranks)
    config = {"preset": args.preset, "algorithm": args.algorithm, "options": options, "settings": cfg.to_dict()}
    if fast_mode():
        print("FAST MODE (MAMLBOOK_FAST=1): numbers from this run are from a shortened run.")
    if problem.note:
        print(f"{problem.note}: its numbers say nothing about the real dataset.")
    print(f"{args.algorithm} on {args.preset}, {device}: {learner!r}", flush=True)
    if options.get("compile"):
        print(f"Compiling the training step with torch.compile (path {learner.path}): 20–40 s on 2 cores the first "
              "time, a few seconds once cached (~/.cache/mamlbook/inductor); --no-compile skips it.")
    args.out.mkdir(parents=True, exist_ok=True)
    run = fit(learner, problem.sampler(learner), generator=torch.Generator().manual_seed(cfg.seed),
              iterations=cfg.iterations, meta_lr=cfg.meta_lr, out=args.out, resume=resume,
              checkpoint_every=args.checkpoint_every or (5000 if args.preset == "sinusoid" else cfg.checkpoint_every),
              validate=problem.validator(), val_every=getattr(cfg, "val_every", 0),
              higher_is_better=problem.higher_is_better, time_budget_s=args.time_budget, config=config,
              progress=args.progress, desc=f"{args.algorithm} {args.preset}")
    if run.stopped_by_budget:
        print(f"Stopped by the time budget at iteration {run.iteration} of {cfg.iterations}; continue with --resume.")
    if run.best is not None:                      # the meta-test sees the best validated θ only
        learner.load_state_dict(on_main(ranks, lambda: load_checkpoint(args.out / "best.pt")["learner"]))
    eval_start = time.perf_counter()
    results = {name: evaluate_learner(learner, tasks, problem.kind) for name, tasks in problem.tests.items()}
    eval_time = time.perf_counter() - eval_start
    metrics = run_record(args, config, learner, run, results, problem, device, eval_time)
    return _finish(ranks, args.out / "metrics.json", metrics, args.algorithm, results)


def _check_out(out: Path, resume: bool) -> None:
    """Refuse --resume without a checkpoint, and training over a run already in ``out``."""
    if resume and not (out / "checkpoint.pt").is_file():
        raise OptionError(f"--resume: no {out / 'checkpoint.pt'} to continue; train without --resume first")
    if not resume and (out / "checkpoint.pt").exists():
        raise OptionError(f"{out} already holds a run (checkpoint.pt): continue it with --resume, or train "
                          "into a new --out (nothing was overwritten)")


def run_record(args, config, learner, run, results, problem, device, eval_time) -> dict:
    """``metrics.json``: one schema for every learner and preset (documented in the README)."""
    paper = FEWSHOT_PRESETS.get(args.preset)
    step_ms = sorted(run.step_s)[len(run.step_s) // 2] * 1e3 if run.step_s else None
    return {
        "preset": args.preset, "algorithm": args.algorithm,
        "config": {k: v for k, v in config["settings"].items() if k not in LEARNER_KEYS},
        "learner": learner.options(), "options": config["options"],
        "paper": {"acc": paper.paper_acc, "ci95": paper.paper_ci95, "source": paper.source} if paper else None,
        "iterations_done": run.iteration, "stopped_by_budget": run.stopped_by_budget,
        "resumed_from": run.resumed_from, "ms_per_step_median": step_ms,
        "train_time_s": run.train_time_s, "eval_time_s": eval_time, "wall_time_s": run.train_time_s + eval_time,
        "val": run.val, "best": run.best, "eval": results,
        "loss_curve": run.history().smoothed(window=100)[1],
        "date": _dt.datetime.now().isoformat(timespec="seconds"), "fast_mode": fast_mode(), "note": problem.note,
        "machine": machine_info(device), **describe(getattr(learner, "ranks", None)),
    }


def evaluate(args) -> dict:
    """``evaluate``: the learner of a checkpoint on ``--tasks`` new tasks, with ``--steps``/``--inner-lr`` honoured."""
    torch.set_num_threads(args.threads)
    ranks, device = init_from_environment(resolve_device(args.device))  # under torchrun: the tasks split across ranks
    state = on_main(ranks, lambda: load_checkpoint(args.checkpoint))     # loaded once
    saved = state["config"]
    settings = saved["settings"]
    cfg = FewShotConfig.from_dict(settings) if "dataset" in settings else SinusoidConfig(**settings)
    problem = build_problem(cfg, data=args.data, device=device, num_test_tasks=args.tasks, test_seed=args.seed)
    options = {k: v for k, v in saved["options"].items() if k not in ("compile", "amp")}
    if args.adapt_bn is not None:
        options["adapt_bn"] = args.adapt_bn
    learner = make_algorithm(saved["algorithm"], problem.make_model().to(device), problem=problem.kind, **options)
    learner.load_state_dict(state["learner"])
    distribute(learner, ranks)
    steps = None
    if args.steps is not None:
        if args.steps < 0:
            raise OptionError(f"--steps must be ≥ 0, got {args.steps}")
        steps = list(range(args.steps + 1)) if len(learner.default_eval_steps()) > 1 else [args.steps]
    results = {name: evaluate_learner(learner, tasks, problem.kind, steps=steps, inner_lr=args.inner_lr)
               for name, tasks in problem.tests.items()}
    out = {"checkpoint": str(args.checkpoint), "algorithm": saved["algorithm"], "iteration": state["iteration"],
           "config": settings, "inner_lr": args.inner_lr or learner.inner_lr, "adapt_bn": learner.adapt_bn,
           "note": problem.note, "eval": results}
    return _finish(ranks, args.json or args.checkpoint.with_name("eval.json"), out, saved["algorithm"], results)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "bench":
            return bench.run(args)
        if args.command == "report":
            print(results_table(args.paths))
            return 0
        (train if args.command == "train" else evaluate)(args)
    except MamlbookError as err:
        print(f"error: {str(err).splitlines()[0] if str(err) else type(err).__name__}", file=sys.stderr)
        return 2
    return 0
