"""The command line: metrics it writes, resume, and clear errors on bad input."""
import json
import math
import subprocess
import sys

import pytest
import torch

from mamlbook.runs import load_checkpoint
from mamlbook.cli import main

QUICK = ["--no-compile", "--no-progress", "--eval-tasks", "20"]


def train(out, *extra):
    return main(["train", "--preset", "sinusoid", "--out", str(out), *QUICK, *extra])


def test_train_writes_documented_metrics(tmp_path):
    assert train(tmp_path, "--iterations", "30") == 0
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["wall_time_s"] > 0
    ev = metrics["eval"]
    assert ev["k_shot"] == 10 and ev["num_tasks"] == 20
    assert ev["steps"] == list(range(11))
    assert len(ev["mse"]) == len(ev["ci95"]) == 11
    assert all(math.isfinite(v) and v >= 0 for v in ev["mse"] + ev["ci95"])
    assert metrics["config"]["iterations"] == 30 and metrics["config"]["inner_lr"] == 0.01


def test_cli_options_reach_the_run(tmp_path):
    train(tmp_path, "--iterations", "5", "--k-shot", "5", "--inner-lr", "0.001", "--seed", "3")
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["config"]["k_shot"] == 5 and metrics["eval"]["k_shot"] == 5
    assert metrics["config"]["inner_lr"] == 0.001 and metrics["config"]["seed"] == 3


def test_evaluate_reads_the_checkpoint_and_writes_json(tmp_path):
    train(tmp_path, "--iterations", "10")
    out = tmp_path / "e.json"
    assert main(["evaluate", "--checkpoint", str(tmp_path / "checkpoint.pt"), "--tasks", "15",
                 "--json", str(out)]) == 0
    ev = json.loads(out.read_text())["eval"]
    assert ev["num_tasks"] == 15 and ev["steps"] == list(range(11)) and len(ev["mse"]) == 11


def test_same_seed_gives_the_same_evaluation(tmp_path):
    train(tmp_path / "a", "--iterations", "20")
    train(tmp_path / "b", "--iterations", "20")
    a = json.loads((tmp_path / "a" / "metrics.json").read_text())["eval"]["mse"]
    b = json.loads((tmp_path / "b" / "metrics.json").read_text())["eval"]["mse"]
    assert a == b


def test_resume_after_interruption_ends_bit_identical(tmp_path):
    train(tmp_path / "whole", "--iterations", "40")
    train(tmp_path / "split", "--iterations", "25")           # "interrupted" at 25
    train(tmp_path / "split", "--iterations", "40", "--resume")
    whole = load_checkpoint(tmp_path / "whole" / "checkpoint.pt")
    split = load_checkpoint(tmp_path / "split" / "checkpoint.pt")
    assert split["iteration"] == whole["iteration"] == 40
    for name, value in whole["model"].items():
        assert torch.equal(value, split["model"][name]), name
    assert torch.equal(whole["losses"], split["losses"])


def test_periodic_checkpoint_is_written_during_training(tmp_path):
    train(tmp_path, "--iterations", "12", "--checkpoint-every", "5")
    assert load_checkpoint(tmp_path / "checkpoint.pt")["iteration"] == 12
    assert not list(tmp_path.glob("*.tmp"))


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "mamlbook", *args], capture_output=True, text=True)


def test_unknown_preset_is_refused_with_the_choices(tmp_path):
    r = run_cli("train", "--preset", "sinusiod", "--out", str(tmp_path))
    assert r.returncode == 2
    assert "invalid choice: 'sinusiod'" in r.stderr and "sinusoid" in r.stderr


@pytest.mark.parametrize("flag,value", [("--k-shot", "0"), ("--k-shot", "-1"),
                                        ("--inner-lr", "0"), ("--inner-lr", "-0.01"),
                                        ("--meta-lr", "0")])
def test_non_positive_k_or_learning_rate_is_refused(tmp_path, flag, value, capsys):
    with pytest.raises(SystemExit) as exit_info:
        train(tmp_path, flag, value)
    assert exit_info.value.code == 2
    assert "must be positive" in capsys.readouterr().err


def test_missing_checkpoint_says_how_to_make_one(tmp_path, capsys):
    assert main(["evaluate", "--checkpoint", str(tmp_path / "nope.pt")]) == 2
    err = capsys.readouterr().err
    assert "No checkpoint at" in err and "python -m mamlbook train" in err


def test_corrupt_checkpoint_is_refused_clearly(tmp_path, capsys):
    train(tmp_path, "--iterations", "3")
    ckpt = tmp_path / "checkpoint.pt"
    ckpt.write_bytes(ckpt.read_bytes()[:200])  # truncated
    assert main(["evaluate", "--checkpoint", str(ckpt)]) == 2
    assert "not a readable checkpoint" in capsys.readouterr().err


def test_resume_without_a_checkpoint_is_refused(tmp_path, capsys):
    assert train(tmp_path, "--resume") == 2
    assert "No checkpoint at" in capsys.readouterr().err


def test_module_entry_point_runs(tmp_path):
    r = run_cli("train", "--preset", "sinusoid", "--out", str(tmp_path), "--iterations", "3", *QUICK)
    assert r.returncode == 0, r.stderr
    assert "MSE after 1 step" in r.stdout
