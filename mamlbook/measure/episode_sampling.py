"""Benchmark: time to sample one Omniglot meta-batch from the device-resident set.

Chapter 5's sampling speed.

    python -m mamlbook.data.bench [--repeats 300] [--threads 1] [--device cpu] [--json out.json]

Method and results: docs/data.md. Each configuration's median (and 90th percentile) time of
``EpisodeSampler.sample`` over many calls is set beside a baseline timed in the same process, the
per-task Python loop many PyTorch ports use (:func:`loop_baseline`). Pools: the small-set meta-train
split with rotations (the real zips when found, else the FAKE stand-in, said in the table) and a
Vinyals-sized pool (1028 × 4 classes) of random pixels, for timing only.
"""
from __future__ import annotations

import argparse
import random
import time

import numpy as np
import torch

from ..data.episodes import ClassImages, EpisodeSampler
from ..data.omniglot import find_omniglot_small, omniglot_splits
from ..runs import machine_info, write_json
from .gpu_speed import sync

__all__ = ["CONFIGS", "NUM_TASKS", "time_calls", "loop_baseline", "run", "format_table", "main"]

# (n_way, k_shot, k_query); 32 tasks each, as MAML's Omniglot meta-batch
CONFIGS = [(5, 1, 1), (5, 5, 5), (5, 1, 15), (20, 1, 1), (20, 5, 5)]
NUM_TASKS = 32


def time_calls(fn, repeats: int, device: torch.device, warmup: int = 10) -> tuple[list[float], list[float]]:
    """(wall-clock, process CPU) seconds of ``repeats`` calls after ``warmup``, synchronising a GPU.

    CPU time counts every thread of this process but not the time spent waiting for a core,
    so on a machine busy with other programs it is the steadier measure of the work done.
    """
    for _ in range(warmup):
        fn()
    wall, cpu = [], []
    for _ in range(repeats):
        sync(device)
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        sync(device)
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return wall, cpu


def loop_baseline(split: ClassImages, n_way: int, k_shot: int, k_query: int, rng: random.Random):
    """The common per-task loop over pre-decoded per-image tensors; returns a sampler function."""
    per_class = [[img.permute(2, 0, 1).float() / 255 for img in split.images[c, :int(n)]]
                 for c, n in enumerate(split.counts.tolist())]

    def sample(num_tasks: int):
        xs, xq = [], []
        for _ in range(num_tasks):
            s_imgs, q_imgs = [], []
            for c in rng.sample(range(len(per_class)), n_way):
                picks = rng.sample(range(len(per_class[c])), k_shot + k_query)
                s_imgs += [per_class[c][i] for i in picks[:k_shot]]
                q_imgs += [per_class[c][i] for i in picks[k_shot:]]
            xs.append(torch.stack(s_imgs))
            xq.append(torch.stack(q_imgs))
        ys = torch.arange(n_way).repeat_interleave(k_shot).expand(num_tasks, -1)
        yq = torch.arange(n_way).repeat_interleave(k_query).expand(num_tasks, -1)
        return torch.stack(xs), ys, torch.stack(xq), yq
    return sample


def _ms(times: list[float], q: float) -> float:
    """The q-quantile of ``times`` in milliseconds."""
    return 1e3 * float(np.quantile(times, q))


def run(repeats: int = 300, device: str = "cpu", baseline: bool = True) -> dict:
    """Time every configuration on every pool; return the results as a dict."""
    dev = torch.device(device)
    small1, small2, origin = find_omniglot_small(download=False, allow_fake=True)
    train = omniglot_splits("small", small1.parent)["train"]
    vinyals_like = ClassImages(torch.randint(0, 256, (1028 * 4, 20, 28, 28, 1), dtype=torch.uint8,
                                             generator=torch.Generator().manual_seed(0)),
                               torch.full((1028 * 4,), 20), [str(i) for i in range(1028 * 4)],
                               name="random pixels, Vinyals-sized")
    pools = [(f"omniglot small1 train x4 rotations ({origin})", train),
             ("Vinyals-sized pool (random pixels)", vinyals_like)]
    rows = []
    for pool_name, split in pools:
        for n, k, q in CONFIGS:
            sampler = EpisodeSampler(split, n, k, q, device=dev)
            g = torch.Generator().manual_seed(0)
            wall, cpu = time_calls(lambda: sampler.sample(NUM_TASKS, g), repeats, dev)
            row = {"pool": pool_name, "classes": split.num_classes, "n_way": n, "k_shot": k,
                   "k_query": q, "tasks": NUM_TASKS, "ours_median_ms": _ms(wall, 0.5),
                   "ours_p90_ms": _ms(wall, 0.9), "ours_cpu_median_ms": _ms(cpu, 0.5)}
            if baseline and dev.type == "cpu":
                base = loop_baseline(split, n, k, q, random.Random(0))
                slow, slow_cpu = time_calls(lambda: base(NUM_TASKS), max(20, repeats // 10), dev, warmup=2)
                row.update(loop_median_ms=_ms(slow, 0.5), loop_cpu_median_ms=_ms(slow_cpu, 0.5))
                row["speedup"] = row["loop_cpu_median_ms"] / row["ours_cpu_median_ms"]
            rows.append(row)
    return {**machine_info(dev), "threads": torch.get_num_threads(), "repeats": repeats, "data": origin,
            "rows": rows}


def format_table(result: dict) -> str:
    """The results as a Markdown table (speed-up = loop CPU time / ours CPU time)."""
    head = (f"torch {result['torch']}, {result['device']}, {result['threads']} thread(s), "
            f"{result['cpu_count']} CPUs, load average {result['load_average']}, {result['date']}\n\n"
            "| pool | classes | task | ours median ms | ours p90 ms | ours CPU ms | loop median ms "
            "| loop CPU ms | speed-up (CPU) |\n|---|---:|---|---:|---:|---:|---:|---:|---:|\n")
    lines = []
    for r in result["rows"]:
        task = f"{r['tasks']} × {r['n_way']}-way {r['k_shot']}-shot, Q={r['k_query']}"
        loop = (f"{r['loop_median_ms']:.2f} | {r['loop_cpu_median_ms']:.2f} | {r['speedup']:.1f}×"
                if "speedup" in r else "- | - | -")
        lines.append(f"| {r['pool']} | {r['classes']} | {task} | {r['ours_median_ms']:.3f} | "
                     f"{r['ours_p90_ms']:.3f} | {r['ours_cpu_median_ms']:.3f} | {loop} |")
    return head + "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=300, help="timed calls per configuration")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    p.add_argument("--no-baseline", action="store_true", help="skip the per-task loop baseline")
    p.add_argument("--json", default=None, help="also write the results to this JSON file")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    print("Timing only: the Vinyals-sized pool is random pixels. " + ("FAKE Omniglot stand-in in use."
          if find_omniglot_small(download=False, allow_fake=True)[2] == "FAKE" else ""))
    result = run(args.repeats, args.device, baseline=not args.no_baseline)
    print(format_table(result))
    if args.json:
        write_json(args.json, result)
    return result


if __name__ == "__main__":
    main()
