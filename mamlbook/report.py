"""Turn ``metrics.json`` files into the markdown results table the README publishes.

    python -m mamlbook.report results/sinusoid/*/metrics.json

Every row is read from a file a run wrote, so the published table can be regenerated
and checked against its evidence (the files are committed beside it under ``results/``).
"""
from __future__ import annotations

import json
import sys
from pathlib import Path


def _cell(metrics: dict, step: int) -> str:
    """'mean ± ci95', plus the median where the file has it; a null or huge mean means a task diverged."""
    ev = metrics["eval"]
    i = ev["steps"].index(step)
    mean, ci = ev["mse"][i], ev["ci95"][i]
    text = "diverged¹" if mean is None or mean > 1e3 else f"{mean:.3f} ± {ci:.3f}"
    if ev.get("median"):
        text += f" (median {ev['median'][i]:.3f})"
    return text


def sinusoid_table(paths: list[str | Path]) -> str:
    """A markdown table of sinusoid runs: K, settings, MSE after 1 and 10 steps, wall time."""
    rows = ["| K | init | iterations | MSE after 1 step | MSE after 10 steps | wall time | threads | compiled | date |",
            "|---|---|---:|---|---|---:|---:|---|---|"]
    runs = [json.loads(Path(p).read_text()) for p in paths]
    for m in sorted(runs, key=lambda m: (m["config"]["k_shot"], m["config"].get("init", "pytorch"))):
        cfg = m["config"]
        fast = " (FAST MODE)" if m.get("fast_mode") else ""
        rows.append(f"| {cfg['k_shot']} | {cfg.get('init', 'pytorch')} | {cfg['iterations']:,}{fast} | "
                    f"{_cell(m, 1)} | {_cell(m, 10)} | {m['wall_time_s']:.0f} s | "
                    f"{m['machine']['cpu_threads']} | {'yes' if m.get('compiled') else 'no'} | "
                    f"{m['date'][:10]} |")
    if any("diverged¹" in r for r in rows):
        rows.append("")
        rows.append("¹ the mean is dominated by a task whose adaptation diverged at α = 0.01; "
                    "see the median.")
    return "\n".join(rows)


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit("usage: python -m mamlbook.report PATH/metrics.json [...]")
    print(sinusoid_table(sys.argv[1:]))
