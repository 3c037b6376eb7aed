"""The command line on the classification presets: a fake Omniglot in the real zip format, and the real small sets.

MAML's runs validate on 10 fixed tasks instead of the preset's 200 (cli_fixtures.small_validation):
what is checked — when validation runs, best.pt, the meta-test of the best θ — is the same for any size.
"""
import csv
import json

import pytest
from cli_fixtures import cli, metrics, omniglot, small_validation, train
from data_fixtures import SMALL1, needs_omniglot

from mamlbook.cli import PRESETS
from mamlbook.runs import load_checkpoint

PROTOCOL = "1 queries/class"            # Omniglot's meta-test: Q = K queries per class


@pytest.fixture(scope="module")
def maml_run(tmp_path_factory, fake_omniglot):
    """MAML on the fake Omniglot: 4 iterations, validated every 2: (Result, out folder)."""
    out = tmp_path_factory.mktemp("omniglot-maml")
    with pytest.MonkeyPatch.context() as mp:
        small_validation(mp)
        return train(out, *omniglot(fake_omniglot), "--iterations", "4", "--val-every", "2"), out


def test_train_writes_the_run_record_of_a_classification_preset(maml_run):
    result, out = maml_run
    assert result.code == 0, result.err
    m = metrics(out)
    assert m["note"] == "FAKE data (a generated stand-in)" and "FAKE data" in result.out
    assert (m["preset"], m["iterations_done"]) == ("omniglot-5w1s", 4)
    assert {k: m["config"][k] for k in ("dataset", "split", "n_way", "k_shot", "k_query", "meta_batch_size")} == \
        {"dataset": "omniglot", "split": "small", "n_way": 5, "k_shot": 1, "k_query": 1, "meta_batch_size": 2}
    assert {k: m["learner"][k] for k in ("inner_lr", "inner_steps", "test_steps")} == \
        {"inner_lr": 2.0, "inner_steps": 1, "test_steps": 10}                        # α = 5 × 0.4 (mean CE)
    assert (m["paper"]["acc"], m["paper"]["ci95"]) == (98.7, 0.4)


def test_the_meta_test_reports_accuracy_after_0_to_10_steps(maml_run):
    ev = metrics(maml_run[1])["eval"]
    assert list(ev) == [PROTOCOL]
    r = ev[PROTOCOL]
    assert (r["metric"], r["num_tasks"], r["test_steps"], r["steps"]) == ("query accuracy (%)", 3, 10, list(range(11)))
    assert all(0 <= v <= 100 for v in r["mean"])


def test_validation_every_val_every_iterations_keeps_the_best_in_best_pt(maml_run):
    m = metrics(maml_run[1])
    assert [v["iteration"] for v in m["val"]] == [2, 4]
    best = max(m["val"], key=lambda v: v["mean"])                   # the first of equals: only better replaces
    assert m["best"] == best
    assert load_checkpoint(maml_run[1] / "best.pt")["iteration"] == best["iteration"]
    assert load_checkpoint(maml_run[1] / "checkpoint.pt")["iteration"] == 4


def test_the_meta_test_scores_the_best_validated_checkpoint(maml_run, fake_omniglot, tmp_path):
    out = maml_run[1]
    path = tmp_path / "best.json"
    result = cli("evaluate", "--checkpoint", out / "best.pt", "--data", fake_omniglot, "--tasks", "3", "--json", path)
    assert result.code == 0, result.err
    assert json.loads(path.read_text())["eval"] == metrics(out)["eval"]


def test_log_csv_records_the_losses_and_the_validation_scores(maml_run):
    out = maml_run[1]
    rows = list(csv.DictReader((out / "log.csv").read_text().splitlines()))
    assert [int(r["iteration"]) for r in rows] == [1, 2, 3, 4]
    assert [float(r["meta_loss"]) for r in rows] == \
        pytest.approx(load_checkpoint(out / "checkpoint.pt")["losses"].tolist(), rel=1e-5)
    val = {v["iteration"]: v for v in metrics(out)["val"]}
    for r in rows:
        i = int(r["iteration"])
        if i in val:
            assert float(r["val_mean"]) == pytest.approx(val[i]["mean"], abs=1e-4)
            assert float(r["val_ci95"]) == pytest.approx(val[i]["ci95"], abs=1e-4)
        else:
            assert r["val_mean"] == r["val_ci95"] == ""


def test_evaluate_honours_steps_on_a_classification_checkpoint(maml_run, fake_omniglot, tmp_path):
    out = maml_run[1]
    path = tmp_path / "e.json"
    result = cli("evaluate", "--checkpoint", out / "best.pt", "--data", fake_omniglot, "--tasks", "3", "--steps", "3",
                 "--json", path)
    assert result.code == 0, result.err
    r, full = json.loads(path.read_text())["eval"][PROTOCOL], metrics(out)["eval"][PROTOCOL]
    assert r["num_tasks"] == 3 and r["steps"] == [0, 1, 2, 3]
    assert r["mean"] == full["mean"][:4]                        # the same tasks: the first 4 points of the curve


def test_a_missing_data_folder_says_where_to_get_omniglot(tmp_path):
    result = train(tmp_path / "out", *omniglot(tmp_path / "nowhere"), "--iterations", "2")
    assert result.code == 2
    assert "github.com/brendenlake/omniglot" in result.err and "--data" in result.err
    assert result.err.count("\n") == 1
    assert not (tmp_path / "out").exists()


def test_init_official_is_refused_on_classification_presets(fake_omniglot, tmp_path):
    result = train(tmp_path, *omniglot(fake_omniglot), "--iterations", "2", "--init", "official")
    assert result.code == 2
    assert result.err.startswith("error: --init official: only for the sinusoid preset")
    assert list(tmp_path.iterdir()) == []


def test_every_classification_preset_is_offered():
    assert set(PRESETS) == {"sinusoid", "omniglot-5w1s", "omniglot-5w5s", "omniglot-20w1s", "omniglot-20w5s",
                            "miniimagenet-5w1s", "miniimagenet-5w5s"}


@needs_omniglot
def test_protonet_trains_and_tests_on_the_real_small_omniglot(tmp_path, monkeypatch):
    monkeypatch.setenv("MAMLBOOK_CACHE", str(tmp_path / "cache"))
    result = train(tmp_path / "out", *omniglot(SMALL1.parent), "--algorithm", "protonet", "--iterations", "2")
    assert result.code == 0, result.err
    m = metrics(tmp_path / "out")
    assert m["note"] == "" and "FAKE" not in result.out
    assert [v["iteration"] for v in m["val"]] == [2] and (tmp_path / "out" / "best.pt").is_file()
    r = m["eval"][PROTOCOL]
    assert r["num_tasks"] == 3 and r["steps"] == [0] and 0 <= r["mean"][0] <= 100
