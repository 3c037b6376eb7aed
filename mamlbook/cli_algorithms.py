"""``python -m mamlbook train --algorithm reptile|anil|metasgd|mamlpp|protonet``: any registered learner.

MAML and first-order MAML keep their own, faster paths (``mamlbook.cli`` and
``mamlbook.cli_fewshot``: torch.compile, AMP, the 0..10-step curves). Every other algorithm of
:mod:`mamlbook.algorithms` runs here, on the same presets, with the same guarantees:

- per-algorithm settings from :data:`mamlbook.compare.SETTINGS` (each with its source),
  overridden by ``--inner-lr``/``--inner-steps`` when given;
- ``OUT/checkpoint.pt`` every ``--checkpoint-every`` iterations, written atomically, holding θ,
  the meta-optimizer, the algorithm's learned rates (Meta-SGD, MAML++), the task generator and
  the torch RNG: ``--resume`` continues exactly (bit-identical on a CPU; tested);
- classification: validation on the meta-validation split only, ``OUT/best.pt`` at its best,
  and the meta-test on ``best.pt``; sinusoids: the last θ, as the paper;
- ``OUT/metrics.json`` with the test metric after each algorithm's own test-time adaptation
  (mean, 95% CI = 1.96·std/√n, median) on the same fixed test tasks as MAML's runs.
"""
from __future__ import annotations

import datetime as _dt
import time
from pathlib import Path

import torch
from tqdm.auto import tqdm

from .algorithms import make_algorithm
from .compare import SETTINGS, summarize_scores, task_scores
from .checkpoint import load_checkpoint, save_checkpoint
from .config import fast_mode
from .runinfo import machine_info, write_json

MAML_FAMILY = ("maml", "fomaml")


def algorithm_options(name: str, problem: str, *, inner_lr=None, inner_steps=None, test_steps=None) -> dict:
    """:data:`~mamlbook.compare.SETTINGS` for ``name`` on ``problem`` ("sinusoid"/"omniglot"), with overrides."""
    options = dict(SETTINGS[problem].get(name, {}))
    for key, value in (("inner_lr", inner_lr), ("inner_steps", inner_steps), ("test_steps", test_steps)):
        if value is not None:
            options[key] = value
    if name == "mamlpp":                      # one learned rate per step: test with the steps it learned
        options["test_steps"] = options.get("inner_steps", 5)
    return options


def evaluate_tasks(algo, tasks, kind: str) -> dict:
    """Mean, 95% CI, median and diverged count of the metric over ``tasks`` (x_s, y_s, x_q, y_q)."""
    return {"metric": "query MSE" if kind == "regression" else "query accuracy (%)",
            "test_steps": algo.test_steps, **summarize_scores(task_scores(algo, tasks, kind))}


def _state(algo, optimizer, generator, run: dict, config: dict) -> dict:
    return {"algorithm": algo.name, "config": config, "iteration": run["iteration"],
            "model": algo.model.state_dict(), "extra": algo.extra_state(),
            "optimizer": optimizer.state_dict() if optimizer is not None else None,
            "generator": generator.get_state(), "torch_rng": torch.get_rng_state(),
            "losses": torch.tensor(run["losses"], dtype=torch.float64), "val": run["val"],
            "best": run["best"], "train_time_s": run["train_time_s"]}


def train_algorithm(algo, sample, generator: torch.Generator, *, iterations: int, meta_lr: float,
                    out: Path, config: dict, resume: bool = False, checkpoint_every: int = 1000,
                    validate=None, val_every: int = 0, progress: bool = True, desc: str = "") -> dict:
    """Meta-train ``algo`` for ``iterations`` outer steps on ``sample(generator)`` meta-batches.

    Reptile's ε is annealed over ``iterations``: resuming with another total changes its schedule.

    Args:
        validate: optional ``algo → (mean, ci95)`` on the meta-validation tasks (higher is
            better); every ``val_every`` iterations and at the end; ``out/best.pt`` keeps the best.
    Returns the run record: iteration, losses, val, best, train_time_s.
    """
    optimizer = algo.make_optimizer(meta_lr)
    run = {"iteration": 0, "losses": [], "val": [], "best": None, "train_time_s": 0.0}
    if resume:
        state = load_checkpoint(out / "checkpoint.pt")           # CPU tensors: RNG states must be
        same = {k: v for k, v in state["config"].items() if k != "iterations"} == \
            {k: v for k, v in config.items() if k != "iterations"}
        if state.get("algorithm") != algo.name or not same:        # only the length may change
            raise ValueError(f"{out / 'checkpoint.pt'} was written by {state.get('algorithm')} with "
                             f"{state.get('config')}; resume with the same --algorithm and settings.")
        algo.model.load_state_dict(state["model"])
        algo.load_extra_state(state["extra"])
        if optimizer is not None:
            optimizer.load_state_dict(state["optimizer"])
        generator.set_state(state["generator"])
        torch.set_rng_state(state["torch_rng"])
        run.update(iteration=state["iteration"], losses=state["losses"].tolist(), val=state["val"],
                   best=state["best"], train_time_s=state["train_time_s"])

    def validate_now():
        mean, ci = validate(algo)
        run["val"].append({"iteration": run["iteration"], "mean": mean, "ci95": ci})
        if run["best"] is None or mean > run["best"]["mean"]:
            run["best"] = run["val"][-1]
            save_checkpoint(out / "best.pt", _state(algo, optimizer, generator, run, config))

    started, base = time.perf_counter(), run["train_time_s"]
    bar = tqdm(total=iterations, initial=run["iteration"], disable=not progress, mininterval=0.5, desc=desc)
    while run["iteration"] < iterations:
        batch = sample(generator)
        loss = algo.outer_step(optimizer, *batch, iteration=run["iteration"],
                               progress=run["iteration"] / iterations)
        run["iteration"] += 1
        run["losses"].append(float("nan") if loss is None else loss)
        run["train_time_s"] = base + time.perf_counter() - started
        if validate is not None and val_every and run["iteration"] % val_every == 0:
            validate_now()
        if run["iteration"] % checkpoint_every == 0:
            save_checkpoint(out / "checkpoint.pt", _state(algo, optimizer, generator, run, config))
        bar.update(1)
        if loss is not None:
            bar.set_postfix(loss=f"{loss:.3f}", refresh=False)
    bar.close()
    if validate is not None and (not run["val"] or run["val"][-1]["iteration"] != run["iteration"]):
        validate_now()
    save_checkpoint(out / "checkpoint.pt", _state(algo, optimizer, generator, run, config))
    return run


def _config(args):
    """The run's configuration from the command line: SinusoidConfig or FewShotConfig."""
    from .presets import PRESETS
    if args.preset not in PRESETS:
        from .cli import _config_from_args
        return _config_from_args(args)
    from .cli_fewshot import _config as fewshot_config
    return fewshot_config(args)


def _problem(cfg, *, data=None, eval_tasks: int = 600, seed: int = 0):
    """(kind, settings family, model, sample, val tasks | None, {protocol: test tasks}, note) for ``cfg``."""
    from .sinusoid import SinusoidConfig
    if isinstance(cfg, SinusoidConfig):
        from .models import SinusoidMLP
        from .sinusoid import eval_tasks as sinusoid_eval_tasks
        from .tasks import sample_sinusoid_tasks
        torch.manual_seed(cfg.seed)
        model = SinusoidMLP(init=cfg.init)

        def sample(gen):                          # the same task stream as MAML's (sinusoid.task_stream)
            b = sample_sinusoid_tasks(cfg.meta_batch_size, cfg.k_shot, generator=gen)
            return b.x_support, b.y_support, b.x_query, b.y_query
        t = sinusoid_eval_tasks(cfg.k_shot, eval_tasks)
        tests = {f"{cfg.k_shot} queries": (t.x_support, t.y_support, t.x_query, t.y_query)}
        return "regression", "sinusoid", model, sample, None, tests, ""
    from .fewshot import load_splits, make_model, make_sampler
    if cfg.amp:
        raise ValueError("--amp is implemented for --algorithm maml|fomaml only; drop --amp")
    splits = load_splits(cfg, data)
    torch.manual_seed(cfg.seed)
    model = make_model(cfg)
    train = make_sampler(splits["train"], cfg)

    def sample(gen):
        e = train.sample(cfg.meta_batch_size, gen)
        return e.x_support, e.y_support, e.x_query, e.y_query

    def tasks(split, n, task_seed, q=None):
        e = make_sampler(splits[split], cfg, k_query=q).sample(n, torch.Generator().manual_seed(task_seed))
        return e.x_support, e.y_support, e.x_query, e.y_query
    val = tasks("val", cfg.val_tasks, cfg.seed + 1) if "val" in splits else None
    queries = [cfg.k_shot] + ([15] if cfg.dataset == "miniimagenet" and cfg.k_shot != 15 else [])
    tests = {f"{q} queries/class": tasks("test", eval_tasks, seed, q) for q in queries}
    fake = any(s.fake for s in splits.values())
    return "classification", cfg.dataset, model, sample, val, tests, "FAKE data" if fake else ""


def _report(name: str, results: dict) -> None:
    for protocol, r in results.items():
        print(f"{name}, {protocol}, {r['num_tasks']} tasks, {r['test_steps']} test steps: "
              f"{r['metric']} {r['mean']:.3f} ± {r['ci95']:.3f} (median {r['median']:.3f})")


def train_algorithm_cli(args) -> dict:
    """``train --algorithm NAME`` for a non-MAML algorithm; returns the metrics it wrote."""
    torch.set_num_threads(args.threads)
    cfg = _config(args)
    kind, family, model, sample, val, tests, note = _problem(cfg, data=args.data, eval_tasks=args.eval_tasks,
                                                             seed=args.seed)
    if family == "miniimagenet":                   # no per-algorithm table: the preset's own α and steps
        options = algorithm_options(args.algorithm, "omniglot", inner_lr=cfg.inner_lr,
                                    inner_steps=cfg.inner_steps, test_steps=cfg.test_inner_steps)
    else:
        options = algorithm_options(args.algorithm, family, inner_lr=args.inner_lr,
                                    inner_steps=args.inner_steps)
    if args.algorithm == "protonet":
        options = {}
    algo = make_algorithm(args.algorithm, model, problem=kind, **options)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    config = {"preset": args.preset, "algorithm": args.algorithm, "options": options, **cfg.to_dict()}
    if fast_mode():
        print("FAST MODE (MAMLBOOK_FAST=1): numbers from this run are from a shortened run.")
    if note:
        print(f"{note}: accuracies say nothing about the real dataset.")
    print(f"{args.algorithm} on {args.preset}: {algo!r}", flush=True)

    def validate(a):
        r = evaluate_tasks(a, val, kind)               # the same fixed meta-val tasks every time
        return r["mean"], r["ci95"]
    run = train_algorithm(algo, sample, torch.Generator().manual_seed(cfg.seed), iterations=cfg.iterations,
                          meta_lr=cfg.meta_lr, out=out, config=config, resume=args.resume,
                          checkpoint_every=args.checkpoint_every or (5000 if kind == "regression" else 1000),
                          validate=validate if val is not None else None,
                          val_every=getattr(cfg, "val_every", 0), progress=args.progress,
                          desc=f"{args.algorithm} {args.preset}")
    if val is not None:                            # the meta-test uses the best validated θ only
        best = load_checkpoint(out / "best.pt")
        algo.model.load_state_dict(best["model"])
        algo.load_extra_state(best["extra"])
    eval_start = time.perf_counter()
    results = {name: evaluate_tasks(algo, t, kind) for name, t in tests.items()}
    metrics = {"preset": args.preset, "algorithm": args.algorithm, "options": options, "config": config,
               "iterations_done": run["iteration"], "val": run["val"], "best": run["best"],
               "train_time_s": run["train_time_s"], "eval_time_s": time.perf_counter() - eval_start,
               "date": _dt.datetime.now().isoformat(timespec="seconds"), "fast_mode": fast_mode(),
               "note": note, "machine": machine_info("cpu"), "eval": results}
    write_json(out / "metrics.json", metrics)
    _report(args.algorithm, results)
    print(f"Wrote {out / 'metrics.json'}.")
    return metrics


def is_algorithm_checkpoint(path) -> bool:
    """True if ``path`` was written by :func:`train_algorithm` (it names its algorithm)."""
    return "algorithm" in load_checkpoint(path)


def evaluate_algorithm_cli(args) -> dict:
    """``evaluate --checkpoint`` for a checkpoint of this module: the same tests, on ``--tasks`` tasks."""
    from .fewshot import FewShotConfig
    from .sinusoid import SinusoidConfig
    state = load_checkpoint(args.checkpoint)
    saved = state["config"]
    if "dataset" in saved:
        cfg = FewShotConfig.from_dict(saved)
    else:
        cfg = SinusoidConfig(**{k: v for k, v in saved.items() if k in SinusoidConfig.__dataclass_fields__})
    kind, _, model, _, _, tests, note = _problem(cfg, data=args.data, eval_tasks=args.tasks, seed=args.seed)
    algo = make_algorithm(state["algorithm"], model, problem=kind, **saved["options"])
    model.load_state_dict(state["model"])
    algo.load_extra_state(state["extra"])
    results = {name: evaluate_tasks(algo, t, kind) for name, t in tests.items()}
    out = {"checkpoint": str(args.checkpoint), "algorithm": state["algorithm"], "iteration": state["iteration"],
           "config": saved, "note": note, "eval": results}
    path = args.json or Path(args.checkpoint).with_name("eval.json")
    write_json(path, out)
    _report(state["algorithm"], results)
    print(f"Wrote {path}.")
    return out
