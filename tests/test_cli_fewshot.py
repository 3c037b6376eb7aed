"""The command line for the classification presets, on a fake Omniglot in the real zip format."""
import json

import pytest
import torch

from mamlbook.runs import load_checkpoint
from mamlbook.cli import main
from data_fixtures import make_fake_omniglot_root


@pytest.fixture(scope="module")
def fake_omniglot(tmp_path_factory):
    return make_fake_omniglot_root(tmp_path_factory.mktemp("omniglot"))


QUICK = ["--split", "small", "--meta-batch-size", "2", "--val-every", "2", "--eval-tasks", "6",
         "--no-progress", "--device", "cpu"]


def train(data, out, *extra):
    return main(["train", "--preset", "omniglot-5w1s", "--data", str(data), "--out", str(out), *QUICK, *extra])


@pytest.fixture(autouse=True)
def cache_in_tmp(tmp_path, monkeypatch):
    monkeypatch.setenv("MAMLBOOK_CACHE", str(tmp_path / "cache"))


def test_train_writes_checkpoints_log_and_metrics(fake_omniglot, tmp_path, capsys):
    assert train(fake_omniglot, tmp_path, "--iterations", "4") == 0
    m = json.loads((tmp_path / "metrics.json").read_text())
    assert m["fake_data"] is True and "FAKE DATA" in capsys.readouterr().out
    assert m["iterations_done"] == 4 and m["config"]["inner_lr"] == 2.0 and m["config"]["n_way"] == 5
    assert m["paper"]["acc"] == 98.7
    ev = m["eval"]["1 queries/class"]
    assert ev["num_tasks"] == 6 and ev["steps"] == list(range(11)) and len(ev["acc"]) == 11
    assert [v["iteration"] for v in m["val"]] == [2, 4]
    assert load_checkpoint(tmp_path / "best.pt")["iteration"] == m["best_iteration"]
    assert len((tmp_path / "log.csv").read_text().splitlines()) == 5


def test_resume_continues_to_the_same_parameters(fake_omniglot, tmp_path):
    train(fake_omniglot, tmp_path / "whole", "--iterations", "4")
    train(fake_omniglot, tmp_path / "split", "--iterations", "2")
    assert train(fake_omniglot, tmp_path / "split", "--iterations", "4", "--resume") == 0
    a = load_checkpoint(tmp_path / "whole" / "checkpoint.pt")["model"]
    b = load_checkpoint(tmp_path / "split" / "checkpoint.pt")["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_evaluate_runs_the_meta_test_on_a_checkpoint(fake_omniglot, tmp_path):
    train(fake_omniglot, tmp_path, "--iterations", "2")
    out = tmp_path / "e.json"
    assert main(["evaluate", "--checkpoint", str(tmp_path / "best.pt"), "--data", str(fake_omniglot),
                 "--tasks", "5", "--steps", "3", "--json", str(out), "--device", "cpu"]) == 0
    ev = json.loads(out.read_text())["eval"]["1 queries/class"]
    assert ev["num_tasks"] == 5 and ev["steps"] == [0, 1, 2, 3]


def test_missing_data_folder_is_a_clear_error(tmp_path, capsys):
    assert train(tmp_path / "nowhere", tmp_path / "out", "--iterations", "2") == 2
    err = capsys.readouterr().err
    assert "github.com/brendenlake/omniglot" in err and "--data" in err


def test_amp_on_cpu_is_refused_clearly(fake_omniglot, tmp_path, capsys):
    assert train(fake_omniglot, tmp_path, "--iterations", "2", "--amp") == 2
    assert "needs a CUDA GPU" in capsys.readouterr().err


def test_every_classification_preset_is_offered():
    from mamlbook.cli import PRESETS
    assert {"omniglot-5w1s", "omniglot-5w5s", "omniglot-20w1s", "omniglot-20w5s",
            "miniimagenet-5w1s", "miniimagenet-5w5s", "sinusoid"} <= set(PRESETS)
