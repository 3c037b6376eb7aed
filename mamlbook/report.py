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
    ev = metrics["eval"]
    i = ev["steps"].index(step)
    return f"{ev['mse'][i]:.3f} ± {ev['ci95'][i]:.3f}"


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
    return "\n".join(rows)


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit("usage: python -m mamlbook.report PATH/metrics.json [...]")
    print(sinusoid_table(sys.argv[1:]))
