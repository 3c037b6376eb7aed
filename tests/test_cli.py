"""The command line on the sinusoid preset: the run record it writes, evaluate, report, and clear refusals.

The flag × learner matrix is in tests/test_cli_flags.py, resuming in tests/test_resume.py and the
classification presets in tests/test_cli_classification.py.
"""
import csv
import json
import math
import os
import subprocess
import sys

import pytest
from cli_fixtures import SINE, TINY, cli, differing, learner_tensors, metrics, record_checkpoints, train

from mamlbook.cli import main
from mamlbook.runs import load_checkpoint

# metrics.json: one schema for every learner and preset (mamlbook.cli.run_record).
RUN_RECORD = {"preset", "algorithm", "config", "learner", "options", "paper", "iterations_done",
              "stopped_by_budget", "resumed_from", "ms_per_step_median", "train_time_s", "eval_time_s",
              "wall_time_s", "val", "best", "eval", "loss_curve", "date", "fast_mode", "note", "machine",
              "world_size", "backend"}
EVAL = {"metric", "test_steps", "num_tasks", "steps", "mean", "ci95", "median", "diverged"}


@pytest.fixture(scope="module")
def run30(tmp_path_factory):
    """MAML on the sinusoids for 30 iterations, tested on 20 tasks: (Result, out folder)."""
    out = tmp_path_factory.mktemp("sine30")
    return train(out, *SINE, "--iterations", "30", "--eval-tasks", "20"), out


def test_train_writes_the_run_record(run30):
    result, out = run30
    assert result.code == 0, result.err
    m = metrics(out)
    assert set(m) == RUN_RECORD
    assert (m["preset"], m["algorithm"], m["iterations_done"]) == ("sinusoid", "maml", 30)
    assert (m["stopped_by_budget"], m["resumed_from"], m["paper"], m["val"], m["best"]) == (False, None, None, [], None)
    assert m["config"] == {"k_shot": 10, "meta_batch_size": 25, "meta_lr": 0.001, "iterations": 30, "seed": 0,
                           "init": "pytorch"}
    assert {k: m["learner"][k] for k in ("inner_lr", "inner_steps", "test_steps", "first_order")} == \
        {"inner_lr": 0.01, "inner_steps": 1, "test_steps": 1, "first_order": False}
    assert m["machine"]["device"] == "cpu" and m["machine"]["cpu_threads"] == 1
    assert m["wall_time_s"] == pytest.approx(m["train_time_s"] + m["eval_time_s"]) and m["train_time_s"] > 0


def test_the_meta_test_reports_query_mse_after_0_to_10_steps_at_k_5_10_and_20(run30):
    # The paper meta-trains one model with K = 10 and tests it at K = 5, 10 and 20 (App. B).
    ev = metrics(run30[1])["eval"]
    assert list(ev) == ["K=5", "K=10", "K=20"]
    for r in ev.values():
        assert set(r) == EVAL
        assert (r["metric"], r["num_tasks"], r["test_steps"], r["steps"]) == ("query MSE", 20, 1, list(range(11)))
        assert all(len(r[k]) == 11 for k in ("mean", "ci95", "median", "diverged"))
        assert all(math.isfinite(v) and v >= 0 for v in r["mean"] + r["ci95"] + r["median"])


def test_log_csv_has_each_iterations_meta_loss(run30):
    rows = list(csv.DictReader((run30[1] / "log.csv").read_text().splitlines()))
    losses = load_checkpoint(run30[1] / "checkpoint.pt")["losses"].tolist()
    assert [int(r["iteration"]) for r in rows] == list(range(1, 31))
    assert [float(r["meta_loss"]) for r in rows] == pytest.approx(losses, rel=1e-5)
    assert all(r["val_mean"] == r["val_ci95"] == "" for r in rows)           # no validation on the sinusoids


def test_the_loss_curve_averages_the_losses_over_windows_of_100(tmp_path):
    assert train(tmp_path, *SINE, "--iterations", "150", "--checkpoint-every", "1000").code == 0
    losses = load_checkpoint(tmp_path / "checkpoint.pt")["losses"].tolist()
    assert len(losses) == 150
    assert metrics(tmp_path)["loss_curve"] == pytest.approx([sum(losses[:100]) / 100, sum(losses[100:]) / 50])


def test_options_reach_the_run(tmp_path):
    assert train(tmp_path, *SINE, "--iterations", "5", "--k-shot", "5", "--inner-lr", "0.001", "--seed", "3").code == 0
    m = metrics(tmp_path)
    assert (m["config"]["k_shot"], m["config"]["seed"], m["learner"]["inner_lr"]) == (5, 3, 0.001)
    assert list(m["eval"]) == ["K=5", "K=10", "K=20"]


def test_the_seed_decides_the_run(tmp_path):
    for name, seed in (("a", "0"), ("b", "0"), ("c", "1")):
        assert train(tmp_path / name, *SINE, "--iterations", "20", "--seed", seed).code == 0
    theta = {name: learner_tensors(tmp_path / name / "checkpoint.pt") for name in "abc"}
    assert differing(theta["a"], theta["b"]) == []
    assert metrics(tmp_path / "a")["eval"] == metrics(tmp_path / "b")["eval"]
    assert differing(theta["a"], theta["c"]) != []


def test_checkpoints_are_written_every_checkpoint_every_iterations_and_at_the_end(tmp_path, monkeypatch):
    written = record_checkpoints(monkeypatch)
    assert train(tmp_path, *SINE, "--iterations", "12", "--checkpoint-every", "5").code == 0
    assert written == [("checkpoint.pt", 5), ("checkpoint.pt", 10), ("checkpoint.pt", 12)]
    assert not [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")]       # atomic writes left no debris


@pytest.mark.parametrize("fast", [True, False])
def test_fast_mode_is_said_on_screen_and_recorded(tmp_path, monkeypatch, fast):
    monkeypatch.setenv("MAMLBOOK_FAST", "1" if fast else "0")
    result = train(tmp_path, *SINE, "--iterations", "1")
    assert result.code == 0
    assert ("FAST MODE (MAMLBOOK_FAST=1)" in result.out) == fast
    assert metrics(tmp_path)["fast_mode"] is fast


def test_evaluate_reads_the_checkpoint_and_writes_json(run30, tmp_path):
    path = tmp_path / "e.json"
    result = cli("evaluate", "--checkpoint", run30[1] / "checkpoint.pt", "--tasks", "15", "--json", path)
    assert result.code == 0, result.err
    out = json.loads(path.read_text())
    assert (out["algorithm"], out["iteration"], out["inner_lr"]) == ("maml", 30, 0.01)
    r = out["eval"]["K=10"]
    assert r["num_tasks"] == 15 and r["steps"] == list(range(11)) and len(r["mean"]) == 11


def test_evaluate_writes_eval_json_beside_the_checkpoint_by_default(tmp_path):
    assert train(tmp_path, *SINE, "--iterations", "2").code == 0
    assert cli("evaluate", "--checkpoint", tmp_path / "checkpoint.pt", "--tasks", "3").code == 0
    assert json.loads((tmp_path / "eval.json").read_text())["eval"] == metrics(tmp_path)["eval"]


def test_evaluate_loads_the_checkpoint_once(run30, tmp_path, monkeypatch):
    import mamlbook.cli
    load, paths = mamlbook.cli.load_checkpoint, []

    def counting(path, *args, **kwargs):
        paths.append(path)
        return load(path, *args, **kwargs)
    monkeypatch.setattr(mamlbook.cli, "load_checkpoint", counting)
    result = cli("evaluate", "--checkpoint", run30[1] / "checkpoint.pt", "--tasks", "3", "--json", tmp_path / "e.json")
    assert result.code == 0
    assert paths == [run30[1] / "checkpoint.pt"]


def test_evaluate_refuses_a_negative_number_of_steps(run30, tmp_path):
    result = cli("evaluate", "--checkpoint", run30[1] / "checkpoint.pt", "--steps", "-1", "--json", tmp_path / "e.json")
    assert result.code == 2
    assert result.err == "error: --steps must be ≥ 0, got -1\n"
    assert not (tmp_path / "e.json").exists()


def test_threads_sets_the_cpu_threads_of_the_run(tmp_path):
    assert train(tmp_path, *SINE, "--iterations", "1", "--threads", "2").code == 0
    assert metrics(tmp_path)["machine"]["cpu_threads"] == 2


def test_report_prints_one_table_row_per_run(run30, capsys):
    assert main(["report", str(run30[1] / "metrics.json")]) == 0
    r = metrics(run30[1])["eval"]["K=10"]
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| sinusoid |")]
    assert len(rows) == 3                                          # one per test protocol: K = 5, 10, 20
    cell = f"query MSE {r['mean'][1]:.3f} ± {r['ci95'][1]:.3f} after 1 steps"
    assert rows[1].startswith(f"| sinusoid | maml | K=10 | {cell} |")


def test_report_on_a_missing_file_is_refused_in_one_line(tmp_path):
    result = cli("report", tmp_path / "nope" / "metrics.json")
    assert result.code == 2
    assert result.err.startswith("error: ") and "nope" in result.err and result.err.count("\n") == 1


def test_unknown_preset_is_refused_with_the_choices(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--preset", "sinusiod", "--out", str(tmp_path)])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "invalid choice: 'sinusiod'" in err and "'sinusoid'" in err


@pytest.mark.parametrize("flag,value", [("--k-shot", "0"), ("--k-shot", "-1"), ("--inner-lr", "0"),
                                        ("--inner-lr", "-0.01"), ("--meta-lr", "0"), ("--iterations", "0"),
                                        ("--time-budget", "0")])
def test_non_positive_counts_and_rates_are_refused(tmp_path, flag, value, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--out", str(tmp_path / "out"), *TINY, *SINE, flag, value])
    assert exit_info.value.code == 2
    assert f"argument {flag}: must be positive" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("device,reason", [("tpu", "is not a device PyTorch knows"), ("meta", "runs on cpu or cuda")])
def test_a_device_other_than_cpu_or_cuda_is_refused(tmp_path, device, reason):
    result = train(tmp_path, *SINE, "--iterations", "1", "--device", device)
    assert result.code == 2
    assert result.err.startswith("error: --device ") and reason in result.err
    assert list(tmp_path.iterdir()) == []


def test_protonet_on_sinusoids_is_refused_with_the_reason(tmp_path):
    result = train(tmp_path, *SINE, "--algorithm", "protonet", "--iterations", "2")
    assert result.code == 2
    assert "nearest class prototype" in result.err
    assert list(tmp_path.iterdir()) == []


def test_missing_checkpoint_says_how_to_make_one(tmp_path):
    result = cli("evaluate", "--checkpoint", tmp_path / "nope.pt")
    assert result.code == 2
    assert result.err.startswith(f"error: no checkpoint at {tmp_path / 'nope.pt'}")
    assert "python -m mamlbook train" in result.err


def test_truncated_checkpoint_is_refused_and_nothing_is_written(tmp_path):
    assert train(tmp_path, *SINE, "--iterations", "3").code == 0
    ckpt = tmp_path / "checkpoint.pt"
    ckpt.write_bytes(ckpt.read_bytes()[:200])
    result = cli("evaluate", "--checkpoint", ckpt)
    assert result.code == 2
    assert "is not a readable checkpoint" in result.err and result.err.count("\n") == 1
    assert not (tmp_path / "eval.json").exists()


def test_module_entry_point_runs(tmp_path):
    r = subprocess.run([sys.executable, "-m", "mamlbook", "train", *SINE, "--out", str(tmp_path), "--iterations", "3",
                        *TINY], capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stderr
    r10 = metrics(tmp_path)["eval"]["K=10"]
    assert f"maml, K=10, 3 tasks, 1 test steps: query MSE {r10['mean'][1]:.3f}" in r.stdout
    assert (tmp_path / "checkpoint.pt").is_file()


def test_train_help_lists_every_preset_and_exits_0(capsys):
    # A preset's description holds a "%" (its paper accuracy); argparse must not choke on it.
    with pytest.raises(SystemExit) as stop:
        main(["train", "--help"])
    assert stop.value.code == 0
    out = capsys.readouterr().out
    assert all(name in out for name in ("sinusoid", "omniglot-20w1s", "miniimagenet-5w5s"))
