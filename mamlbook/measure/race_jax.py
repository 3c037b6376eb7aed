"""The paper's sinusoid run, whole processes, mamlbook against the JAX idiom, in turns.

    python -m mamlbook.measure.race_jax [--pairs 3] [--iterations 70000] [--cache warm|cold] [--json PATH]

Method and results: docs/benchmarks.md, "The race, whole processes". Each pair runs, as fresh
processes from the shell's state (imports, compilation, training, the 600-task evaluation, writing
results), ``python -m mamlbook train --preset sinusoid --out TMP --no-progress`` (its path:
``learner.path`` in metrics.json) and ``python mamlbook/measure/jax_sinusoid.py --json TMP`` (run as a
file, so that the JAX process imports neither torch nor mamlbook), mamlbook first in odd pairs. Per
run: the wall time (from just before the child starts to its exit), its CPU time (user + system, all
its threads) and the load average before it; the final MSEs are "the same" when |Δ| ≤ √(CI₁² + CI₂²).

``--cache warm`` (default): PyTorch's compiled graphs come from mamlbook's on-disk cache
(:func:`mamlbook.fast.use_cache_dir`), which one untimed short run fills first if it is empty: the
time of every run after the first on a machine. ``--cache cold``: every mamlbook run gets a new, empty
cache folder: the first run's time. (JAX keeps no compilation cache by default: it compiles in every
run, ~1–2 s.)
"""
from __future__ import annotations

import argparse
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ..fast import cache_dir
from ..runs import machine_info, write_json
from .jax_sinusoid import available

__all__ = ["JAX_SCRIPT", "run_mamlbook", "run_jax", "same_within_ci", "race", "main"]

JAX_SCRIPT = Path(__file__).with_name("jax_sinusoid.py")


def _child(cmd: list[str], timeout: float, env: dict | None = None) -> dict:
    """Run ``cmd``; its wall time, CPU time (from RUSAGE_CHILDREN), the load before it and its exit code."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    load = os.getloadavg()[0]
    start = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return {"wall_s": wall, "cpu_s": cpu, "load_1min_before": load, "stdout_tail": proc.stdout[-600:]}


def run_mamlbook(iterations: int | None, *, cache_dir: str | None = None, timeout: float = 1800,
                 extra: list[str] | None = None) -> dict:
    """One whole ``python -m mamlbook train --preset sinusoid`` process; its timing and metrics."""
    env = None if cache_dir is None else dict(os.environ, TORCHINDUCTOR_CACHE_DIR=cache_dir)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "run"
        cmd = [sys.executable, "-m", "mamlbook", "train", "--preset", "sinusoid", "--out", str(out), "--no-progress"]
        cmd += (["--iterations", str(iterations)] if iterations else []) + (extra or [])
        r = _child(cmd, timeout, env)
        m = json.loads((out / "metrics.json").read_text())
    ev = m["eval"]["K=10"]
    i = ev["steps"].index(1)
    return {**r, "side": "mamlbook", "command": " ".join(["python"] + cmd[1:]), "mse_1step": ev["mean"][i],
            "mse_1step_ci95": ev["ci95"][i], "path": m["learner"].get("path"), "threads": m["machine"]["cpu_threads"],
            "ms_per_step_median": m["ms_per_step_median"], "train_time_s": m["train_time_s"],
            "iterations": m["iterations_done"]}


def run_jax(iterations: int | None, *, timeout: float = 1800) -> dict:
    """One whole JAX-idiom process (:mod:`mamlbook.measure.jax_sinusoid` run as a file); timing and result."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "jax.json"
        cmd = [sys.executable, str(JAX_SCRIPT), "--json", str(out), "--no-progress"]
        cmd += ["--iterations", str(iterations)] if iterations else []
        r = _child(cmd, timeout)
        rec = json.loads(out.read_text())
    return {**r, "side": "jax", "command": " ".join(["python"] + cmd[1:]), "mse_1step": rec["mse_1step"],
            "mse_1step_ci95": rec["mse_1step_ci95"], "ms_per_step": rec["ms_per_step"], "phases_s": rec["wall_s"],
            "iterations": rec["config"]["iterations"], "versions": rec["versions"]}


def same_within_ci(a: dict, b: dict) -> tuple[float, float, bool]:
    """(|Δ MSE|, √(CI₁² + CI₂²), whether Δ is within it) for two independent 600-task estimates."""
    diff = abs(a["mse_1step"] - b["mse_1step"])
    bound = math.hypot(a["mse_1step_ci95"], b["mse_1step_ci95"])
    return diff, bound, diff <= bound


def race(pairs: int = 3, iterations: int | None = None, *, cache: str = "warm", log=print) -> dict:
    """``pairs`` mamlbook/JAX pairs in alternating order; the record (see the module docstring)."""
    if cache == "warm":
        log("warming mamlbook's compile cache (one untimed 20-iteration run) …")
        run_mamlbook(20)
    runs = []
    with tempfile.TemporaryDirectory() as cold_root:
        for i in range(pairs):
            cold = os.path.join(cold_root, f"c{i}") if cache == "cold" else None
            for side in ("mamlbook", "jax") if i % 2 == 0 else ("jax", "mamlbook"):
                r = run_jax(iterations) if side == "jax" else run_mamlbook(iterations, cache_dir=cold)
                r["pair"] = i
                runs.append(r)
                log(f"pair {i + 1}/{pairs} {side:8s}: {r['wall_s']:6.1f} s wall, {r['cpu_s']:6.1f} s CPU, "
                    f"load {r['load_1min_before']:.2f} before; "
                    f"1-step MSE {r['mse_1step']:.3f} ± {r['mse_1step_ci95']:.3f}"
                    + (f"; path {r['path']}" if side == "mamlbook" else ""))
    mb = [r for r in runs if r["side"] == "mamlbook"]
    jx = [r for r in runs if r["side"] == "jax"]
    med_m, med_j = statistics.median(r["wall_s"] for r in mb), statistics.median(r["wall_s"] for r in jx)
    checks = [same_within_ci(a, b) for a, b in zip(mb, jx)]
    return {"pairs": pairs, "iterations": iterations or 70_000, "cache": cache,
            "cache_dir": os.environ.get("TORCHINDUCTOR_CACHE_DIR") or str(cache_dir()),
            "median_wall_s": {"mamlbook": med_m, "jax": med_j}, "ratio_mamlbook_over_jax": med_m / med_j,
            "pair_ratios": [a["wall_s"] / b["wall_s"] for a, b in zip(mb, jx)],
            "mse_same_within_ci": [ok for _, _, ok in checks],
            "mse_abs_diff": [d for d, _, _ in checks], "mse_ci_bound": [c for _, c, _ in checks], "runs": runs}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m mamlbook.measure.race_jax", description=__doc__.split("\n")[0])
    p.add_argument("--pairs", type=int, default=3, help="mamlbook/JAX pairs, in alternating order (default 3)")
    p.add_argument("--iterations", type=int, default=None,
                   help="meta-training iterations (default: the preset's 70,000)")
    p.add_argument("--cache", choices=("warm", "cold"), default="warm",
                   help="mamlbook's compile cache: warm (filled first, untimed) or cold (empty for every run)")
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)
    if not available():
        print("error: the JAX peer needs jax and optax: pip install 'mamlbook[bench]'", file=sys.stderr)
        return 2
    if args.pairs < 1:
        p.error("--pairs must be ≥ 1")
    record = race(args.pairs, args.iterations, cache=args.cache)
    record["machine"] = machine_info("cpu")
    record["command"] = "python -m mamlbook.measure.race_jax " + " ".join(sys.argv[1:] if argv is None else argv)
    m, j = record["median_wall_s"]["mamlbook"], record["median_wall_s"]["jax"]
    print(f"\nmedian wall time, whole process ({record['iterations']:,} iterations, {args.cache} compile cache): "
          f"mamlbook {m:.1f} s, JAX idiom {j:.1f} s → ratio {m / j:.2f} (target ≤ 0.80); pair ratios "
          + ", ".join(f"{x:.2f}" for x in record["pair_ratios"]))
    print("final 1-step MSE the same within the CIs in every pair: "
          + ("yes" if all(record["mse_same_within_ci"]) else "NO") + " ("
          + "; ".join(f"|Δ| {d:.3f} vs {c:.3f}" for d, c in zip(record["mse_abs_diff"], record["mse_ci_bound"])) + ")")
    if args.json:
        write_json(args.json, record)
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
