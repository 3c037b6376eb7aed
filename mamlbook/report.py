"""Turn ``metrics.json`` files into the Markdown results tables the README publishes.

The README's results tables (chapters 2, 6, 8).

    python -m mamlbook report runs/*/metrics.json

Every row is read from a file a run wrote, so a published table can be regenerated and checked
against its evidence (the files are committed beside it under ``results/``). Files of the run record
(``python -m mamlbook train``) give one row per run; the sinusoid runs committed before 0.2 (their
``eval`` holds ``mse`` lists) keep their own table, :func:`sinusoid_table`.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from .errors import BadFileError

__all__ = ["read_record", "results_table", "sinusoid_table", "main"]


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
    """A markdown table of the committed (pre-0.2) sinusoid runs: K, settings, MSE after 1 and 10 steps."""
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
        rows += ["", "¹ the mean is dominated by a task whose adaptation diverged at α = 0.01; see the median."]
    return "\n".join(rows)


def read_record(path: str | Path) -> dict:
    """One ``metrics.json``, or a one-line error that says what is wrong with it."""
    path = Path(path)
    if not path.is_file():
        raise BadFileError(f"{path} does not exist: give the metrics.json files that `python -m mamlbook train` wrote")
    try:
        record = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise BadFileError(f"{path} is not valid JSON ({err}); give the metrics.json a run wrote") from err
    if not isinstance(record, dict) or "eval" not in record:
        raise BadFileError(f"{path} is JSON but not a run record (no 'eval'); give the metrics.json a run wrote")
    return record


def results_table(paths: list[str | Path]) -> str:
    """One row per run record: preset, algorithm, the test metric at the learner's test steps, time, machine."""
    records = [read_record(p) for p in paths]
    if records and all("mse" in r.get("eval", {}) for r in records):
        return sinusoid_table(paths)
    rows = ["| preset | algorithm | protocol | metric (± 95% CI) at test steps | iterations | train time "
            "| device | date |",
            "|---|---|---|---|---:|---:|---|---|"]
    for r in records:
        for protocol, e in r["eval"].items():
            i = e["steps"].index(e["test_steps"]) if e["test_steps"] in e["steps"] else -1
            mean = e["mean"][i]
            value = "diverged" if mean is None else f"{mean:.3f} ± {e['ci95'][i]:.3f}"
            fast = " (FAST MODE)" if r.get("fast_mode") else ""
            rows.append(f"| {r['preset']} | {r['algorithm']} | {protocol} | {e['metric']} {value} after "
                        f"{e['steps'][i]} steps | {r['iterations_done']:,}{fast} | {r['train_time_s']:.0f} s | "
                        f"{r['machine'].get('gpu', r['machine']['device'])} | {r['date'][:10]} |")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv:
        print("usage: python -m mamlbook report PATH/metrics.json [...]", file=sys.stderr)
        return 2
    print(results_table(argv))
    return 0


if __name__ == "__main__":
    sys.exit(main())
