"""The README's results table is generated from metrics.json files."""
import json

from mamlbook.report import sinusoid_table


def test_table_row_comes_from_the_metrics_file(tmp_path):
    metrics = {"config": {"k_shot": 10, "iterations": 70000, "init": "pytorch"},
               "eval": {"steps": list(range(11)), "mse": [3.0, 0.5] + [0.25] * 9,
                        "ci95": [0.2, 0.05] + [0.01] * 9},
               "wall_time_s": 123.4, "machine": {"cpu_threads": 1}, "compiled": True,
               "date": "2026-11-27T08:00:00", "fast_mode": False}
    path = tmp_path / "metrics.json"
    path.write_text(json.dumps(metrics))
    row = sinusoid_table([path]).splitlines()[-1]
    assert row == "| 10 | pytorch | 70,000 | 0.500 ± 0.050 | 0.250 ± 0.010 | 123 s | 1 | yes | 2026-11-27 |"


def test_fast_mode_runs_are_labelled(tmp_path):
    metrics = {"config": {"k_shot": 5, "iterations": 100},
               "eval": {"steps": list(range(11)), "mse": [1.0] * 11, "ci95": [0.1] * 11},
               "wall_time_s": 2.0, "machine": {"cpu_threads": 2}, "compiled": False,
               "date": "2026-11-27T08:00:00", "fast_mode": True}
    (tmp_path / "m.json").write_text(json.dumps(metrics))
    assert "(FAST MODE)" in sinusoid_table([tmp_path / "m.json"])
