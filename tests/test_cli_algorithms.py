"""``train --algorithm``: every registered learner from the command line, with exact resume."""
import json

import pytest
import torch

from mamlbook.runs import load_checkpoint
from mamlbook.cli import main
from mamlbook.cli_algorithms import algorithm_options
from data_fixtures import make_fake_omniglot_root

SINE = ["train", "--preset", "sinusoid", "--eval-tasks", "20", "--no-progress", "--checkpoint-every", "2"]


def sine(out, *extra):
    return main([*SINE, "--out", str(out), *extra])


@pytest.fixture(scope="module")
def fake_omniglot(tmp_path_factory):
    return make_fake_omniglot_root(tmp_path_factory.mktemp("omniglot"))


@pytest.fixture(autouse=True)
def cache_in_tmp(tmp_path, monkeypatch):
    monkeypatch.setenv("MAMLBOOK_CACHE", str(tmp_path / "cache"))


def omniglot(data, out, *extra):
    return main(["train", "--preset", "omniglot-5w1s", "--data", str(data), "--out", str(out), "--split", "small",
                 "--meta-batch-size", "2", "--val-every", "2", "--eval-tasks", "6", "--no-progress",
                 "--device", "cpu", *extra])


def test_metasgd_on_sinusoids_writes_metrics_with_its_own_test_adaptation(tmp_path):
    assert sine(tmp_path, "--algorithm", "metasgd", "--iterations", "3") == 0
    m = json.loads((tmp_path / "metrics.json").read_text())
    assert m["algorithm"] == "metasgd" and m["iterations_done"] == 3
    assert m["options"] == {"inner_lr": 0.01, "inner_steps": 1}           # compare.SETTINGS["sinusoid"]
    ev = m["eval"]["10 queries"]
    assert ev["num_tasks"] == 20 and ev["test_steps"] == 1 and ev["mean"] > 0


@pytest.mark.parametrize("algorithm", ["metasgd", "mamlpp"])
def test_resume_is_bit_identical_including_learned_rates(tmp_path, algorithm):
    sine(tmp_path / "whole", "--algorithm", algorithm, "--iterations", "4")
    sine(tmp_path / "split", "--algorithm", algorithm, "--iterations", "2")            # "interrupted"
    assert sine(tmp_path / "split", "--algorithm", algorithm, "--iterations", "4", "--resume") == 0
    a = load_checkpoint(tmp_path / "whole" / "checkpoint.pt")
    b = load_checkpoint(tmp_path / "split" / "checkpoint.pt")
    assert a["iteration"] == b["iteration"] == 4
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    for group in a["extra"]:                                                    # Meta-SGD's α, MAML++'s α_{l,j}
        assert all(torch.equal(a["extra"][group][k], b["extra"][group][k]) for k in a["extra"][group])
    assert torch.equal(a["losses"].nan_to_num(), b["losses"].nan_to_num())


def test_a_run_that_crashed_resumes_to_the_same_end_as_one_that_did_not(tmp_path):
    # Reptile: no meta-optimizer, and ε annealed over the run, so the crash must not change the total.
    from mamlbook.algorithms import make_algorithm
    from mamlbook.cli_algorithms import train_algorithm
    from mamlbook.models import SinusoidMLP
    from mamlbook.tasks import sample_sinusoid_tasks

    def run(out, crash_at=None):
        torch.manual_seed(0)
        algo = make_algorithm("reptile", SinusoidMLP(), problem="regression", inner_lr=0.02, inner_steps=2)
        calls = []

        def sample(gen):
            calls.append(1)
            if len(calls) == crash_at:
                raise KeyboardInterrupt                           # the session died here
            b = sample_sinusoid_tasks(5, 10, generator=gen)
            return b.x_support, b.y_support, b.x_query, b.y_query
        kw = dict(iterations=5, meta_lr=1e-3, out=out, config={"k": 1}, checkpoint_every=2, progress=False)
        try:
            train_algorithm(algo, sample, torch.Generator().manual_seed(0), **kw)
        except KeyboardInterrupt:
            torch.manual_seed(0)
            algo = make_algorithm("reptile", SinusoidMLP(), problem="regression", inner_lr=0.02, inner_steps=2)
            calls.clear()
            train_algorithm(algo, sample, torch.Generator().manual_seed(0), resume=True, **kw)
        return algo.model.state_dict()

    out = tmp_path / "crash"
    out.mkdir()
    crashed = run(out, crash_at=4)                                # after the checkpoint at iteration 2
    (tmp_path / "whole").mkdir()
    whole = run(tmp_path / "whole")
    assert all(torch.equal(whole[k], crashed[k]) for k in whole)


def test_resume_refuses_another_algorithm(tmp_path, capsys):
    sine(tmp_path, "--algorithm", "anil", "--iterations", "2")
    assert sine(tmp_path, "--algorithm", "metasgd", "--iterations", "4", "--resume") == 2
    assert "same --algorithm" in capsys.readouterr().err


def test_protonet_on_sinusoids_is_refused_with_the_reason(tmp_path, capsys):
    assert sine(tmp_path, "--algorithm", "protonet", "--iterations", "2") == 2
    assert "nearest class prototype" in capsys.readouterr().err


def test_evaluate_reproduces_the_training_runs_test_numbers(tmp_path):
    sine(tmp_path, "--algorithm", "anil", "--iterations", "2")
    out = tmp_path / "e.json"
    assert main(["evaluate", "--checkpoint", str(tmp_path / "checkpoint.pt"), "--tasks", "20",
                 "--json", str(out)]) == 0
    trained = json.loads((tmp_path / "metrics.json").read_text())["eval"]["10 queries"]
    assert json.loads(out.read_text())["eval"]["10 queries"]["mean"] == trained["mean"]


def test_classification_selects_on_validation_and_tests_the_best_checkpoint(fake_omniglot, tmp_path, capsys):
    assert omniglot(fake_omniglot, tmp_path, "--algorithm", "protonet", "--iterations", "4") == 0
    m = json.loads((tmp_path / "metrics.json").read_text())
    assert "FAKE data" in capsys.readouterr().out and m["note"] == "FAKE data"
    assert [v["iteration"] for v in m["val"]] == [2, 4]
    assert load_checkpoint(tmp_path / "best.pt")["iteration"] == m["best"]["iteration"]
    assert m["eval"]["1 queries/class"]["num_tasks"] == 6


def test_fomaml_is_maml_with_the_first_order_switch(tmp_path):
    assert sine(tmp_path, "--algorithm", "fomaml", "--iterations", "2", "--no-compile") == 0
    assert json.loads((tmp_path / "metrics.json").read_text())["config"]["first_order"] is True


def test_amp_is_refused_for_algorithms_other_than_maml(fake_omniglot, tmp_path, capsys):
    assert omniglot(fake_omniglot, tmp_path, "--algorithm", "anil", "--iterations", "2", "--amp") == 2
    assert "--amp" in capsys.readouterr().err


def test_mamlpp_is_tested_with_the_steps_it_learned_rates_for():
    assert algorithm_options("mamlpp", "omniglot")["test_steps"] == 5
    assert algorithm_options("maml", "omniglot", inner_lr=0.5)["inner_lr"] == 0.5
