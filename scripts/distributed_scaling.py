"""Meta-steps per second with 1 process and with N ranks under torchrun (issue 14; docs/benchmarks.md).

    python scripts/distributed_scaling.py --data ../shared/data/omniglot            # Omniglot 5-way 1-shot
    python scripts/distributed_scaling.py --ranks 1,2,4 --device cuda --preset miniimagenet-5w1s --data DIR

Runs the real command line (``python -m mamlbook train`` for one process, ``torchrun --standalone
--nproc_per_node=N -m mamlbook train`` for N ranks), one thread per rank, for ``--iterations``
meta-steps, in rounds (one process, then each N, then again) so that a change in the machine's
load hits every configuration alike, and reads each run's metrics.json: meta-steps per second =
iterations / train_time_s (rank 0's training time: sampling the whole meta-batch, its share of
the tasks, the all-reduce, the optimizer step; the final validation and meta-test are not
counted), and the median ms of the outer step alone. The speed-up is the median over rounds of
(N-rank speed / one-process speed in the same round). The 1-minute load average before each run
is printed with the table: other jobs on the machine slow every configuration, and N ranks most
(they need N free cores).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path


def run(ranks: int, out: Path, args) -> dict:
    """One training run (``ranks`` = 0: plain one process, no torchrun); its metrics.json."""
    train = ["-m", "mamlbook", "train", "--preset", args.preset, "--out", str(out), "--iterations",
             str(args.iterations), "--val-every", str(10 ** 9), "--eval-tasks", "1", "--threads", "1",
             "--no-progress", "--device", args.device]
    if args.data:
        train += ["--data", str(args.data)]
    if args.split:
        train += ["--split", args.split]
    launch = [] if ranks == 0 else ["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={ranks}"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("MAMLBOOK_FAST", None)
    done = subprocess.run([sys.executable, *launch, *train], env=env, capture_output=True, text=True)
    if done.returncode:
        sys.exit(f"run with {ranks or 1} rank(s) failed:\n{done.stderr[-3000:]}")
    return json.loads((out / "metrics.json").read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--preset", default="omniglot-5w1s")
    parser.add_argument("--split", default="small")
    parser.add_argument("--data", type=Path, default=Path("../shared/data/omniglot"))
    parser.add_argument("--ranks", default="1,2", help="comma-separated; 1 runs both plain and under torchrun")
    parser.add_argument("--iterations", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    if args.data and not args.data.exists():
        sys.exit(f"no data at {args.data}: see docs/data.md (Omniglot's small background zips go there)")
    configs = [0] + [int(n) for n in args.ranks.split(",")]
    print(f"load average before: {os.getloadavg()}", flush=True)
    rows: dict[int, list[dict]] = {n: [] for n in configs}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            for n in configs:
                load = os.getloadavg()[0]
                m = run(n, Path(tmp) / f"r{r}n{n}", args)
                rows[n].append({"steps_s": m["iterations_done"] / m["train_time_s"], "step_ms": m["ms_per_step_median"],
                                "world": m["world_size"], "backend": m["backend"], "load": load})
                print(f"round {r}, {n or 'plain'}: {rows[n][-1]}", flush=True)
    print(f"load average after: {os.getloadavg()}\n")
    print(f"{args.preset}, {args.iterations} meta-steps, median of {args.rounds} rounds, {args.device}, "
          "1 thread per rank\n")
    print("| launch | ranks | backend | meta-steps/s (median) | × one process (median of rounds) | outer step ms "
          "(median) | load average at start (min–max) |")
    print("|---|---|---|---|---|---|---|")
    for n in configs:
        speed = statistics.median(x["steps_s"] for x in rows[n])
        ratio = statistics.median(x["steps_s"] / b["steps_s"] for x, b in zip(rows[n], rows[0]))
        step = statistics.median(x["step_ms"] for x in rows[n])
        loads = [x["load"] for x in rows[n]]
        launch = "python -m mamlbook" if n == 0 else f"torchrun --nproc_per_node={n}"
        print(f"| {launch} | {rows[n][0]['world']} | {rows[n][0]['backend'] or '—'} | {speed:.2f} | {ratio:.2f}× | "
              f"{step:.0f} | {min(loads):.1f}–{max(loads):.1f} |")


if __name__ == "__main__":
    main()
