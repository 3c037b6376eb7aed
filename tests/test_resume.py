"""``train --resume``: a run killed after a checkpoint ends bit-identical to one never interrupted.

The crash is simulated in this process: the run is launched exactly like the uninterrupted one and
killed (a BaseException nothing in mamlbook catches) right after the training loop has written
``checkpoint.pt`` for iteration k; the same command with ``--resume`` then finishes it. Bit-identical
means every tensor of the final learner state (θ and the meta-learned extras: Meta-SGD's and MAML++'s
inner rates) is ``torch.equal``, and so are the per-iteration losses; on the classification preset also
the validation rows and ``best.pt``.
"""
import pytest
import torch
from cli_fixtures import SINE, crash, differing_runs, metrics, omniglot, small_validation, train
from data_fixtures import snapshot

from mamlbook.algorithms import ALGORITHMS, CLASSIFICATION_ONLY
from mamlbook.runs import load_checkpoint

SINE_LEARNERS = [a for a in ALGORITHMS if a not in CLASSIFICATION_ONLY]   # the rest: tests/test_baseline.py


def assert_same_end(whole, resumed):
    """The two runs' final checkpoints (and best.pt, where there is one) hold the very same numbers."""
    a, b = load_checkpoint(whole / "checkpoint.pt"), load_checkpoint(resumed / "checkpoint.pt")
    assert a["iteration"] == b["iteration"]
    assert differing_runs(whole, resumed) == []
    torch.testing.assert_close(a["losses"], b["losses"], rtol=0, atol=0, equal_nan=True)   # Reptile's are NaN
    assert torch.equal(a["val"], b["val"])
    assert (whole / "best.pt").is_file() == (resumed / "best.pt").is_file()
    if (whole / "best.pt").is_file():
        assert load_checkpoint(whole / "best.pt")["iteration"] == load_checkpoint(resumed / "best.pt")["iteration"]
        assert differing_runs(whole, resumed, "best.pt") == []
    assert metrics(whole)["eval"] == metrics(resumed)["eval"]


def crash_and_resume(monkeypatch, out, command, crash_at: int):
    """Run ``command`` into ``out``, killed after checkpoint ``crash_at``; then the same with --resume."""
    crash(monkeypatch, out, *command, after=crash_at)
    assert load_checkpoint(out / "checkpoint.pt")["iteration"] == crash_at
    assert not (out / "metrics.json").exists()
    return train(out, *command, "--resume")


@pytest.mark.parametrize("learner", SINE_LEARNERS)
def test_a_crashed_sinusoid_run_resumes_bit_identical(tmp_path, monkeypatch, learner):
    command = [*SINE, "--algorithm", learner, "--iterations", "4", "--checkpoint-every", "1"]
    assert train(tmp_path / "whole", *command).code == 0
    resumed = crash_and_resume(monkeypatch, tmp_path / "crashed", command, crash_at=2)
    assert resumed.code == 0, resumed.err
    assert metrics(tmp_path / "crashed")["resumed_from"] == 2
    assert_same_end(tmp_path / "whole", tmp_path / "crashed")


@pytest.mark.parametrize("learner", ["maml", "protonet"])
def test_a_crashed_classification_run_resumes_to_the_same_validation_and_best_checkpoint(
        fake_omniglot, tmp_path, monkeypatch, learner):
    small_validation(monkeypatch)
    command = [*omniglot(fake_omniglot), "--algorithm", learner, "--iterations", "3", "--val-every", "1",
               "--checkpoint-every", "1"]
    assert train(tmp_path / "whole", *command).code == 0
    resumed = crash_and_resume(monkeypatch, tmp_path / "crashed", command, crash_at=1)
    assert resumed.code == 0, resumed.err
    assert [v["iteration"] for v in metrics(tmp_path / "crashed")["val"]] == [1, 2, 3]
    assert_same_end(tmp_path / "whole", tmp_path / "crashed")


@pytest.mark.parametrize("learner", ["maml", "reptile"])
def test_a_run_stopped_by_its_time_budget_resumes_bit_identical(tmp_path, learner):
    command = [*SINE, "--algorithm", learner, "--iterations", "200"]
    assert train(tmp_path / "whole", *command).code == 0
    assert train(tmp_path / "stopped", *command, "--time-budget", "0.2").code == 0
    assert metrics(tmp_path / "stopped")["stopped_by_budget"] is True
    assert train(tmp_path / "stopped", *command, "--resume").code == 0
    assert_same_end(tmp_path / "whole", tmp_path / "stopped")


# Reptile is left out: its ε is annealed over --iterations, so a run first told k iterations has
# taken other steps than one told N from the start.
@pytest.mark.parametrize("learner", [a for a in SINE_LEARNERS if a != "reptile"])
def test_a_finished_run_extended_with_more_iterations_matches_a_longer_run(tmp_path, learner):
    command = [*SINE, "--algorithm", learner, "--checkpoint-every", "1"]
    assert train(tmp_path / "whole", *command, "--iterations", "4").code == 0
    assert train(tmp_path / "extended", *command, "--iterations", "2").code == 0
    resumed = train(tmp_path / "extended", *command, "--iterations", "4", "--resume")
    assert resumed.code == 0, resumed.err
    assert_same_end(tmp_path / "whole", tmp_path / "extended")


@pytest.mark.parametrize("change", [("--inner-lr", "0.05"), ("--algorithm", "anil"), ("--meta-batch-size", "3"),
                                    ("--seed", "1"), ("--first-order",), ("--k-shot", "5")],
                         ids=lambda c: c[0])
def test_resuming_with_another_setting_is_refused_and_touches_nothing(tmp_path, change):
    assert train(tmp_path, *SINE, "--iterations", "2").code == 0
    before = snapshot(tmp_path)
    result = train(tmp_path, *SINE, "--iterations", "4", "--resume", *change)
    assert result.code == 2
    assert result.err.startswith(f"error: {tmp_path / 'checkpoint.pt'} was written with a different configuration")
    assert "only --iterations may change" in result.err
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("preset", ["sinusoid", "omniglot-5w1s"])
def test_resuming_with_another_meta_test_size_is_accepted(fake_omniglot, tmp_path, preset):
    # --eval-tasks sizes the meta-test after training; it changes nothing that was trained.
    command = SINE if preset == "sinusoid" else [*omniglot(fake_omniglot), "--algorithm", "protonet"]
    assert train(tmp_path, *command, "--iterations", "1").code == 0
    result = train(tmp_path, *command, "--iterations", "2", "--resume", "--eval-tasks", "4")
    assert result.code == 0, result.err
    assert metrics(tmp_path)["iterations_done"] == 2
    assert list(metrics(tmp_path)["eval"].values())[0]["num_tasks"] == 4


def test_resume_without_a_checkpoint_says_to_train_first(tmp_path):
    result = train(tmp_path, *SINE, "--iterations", "2", "--resume")
    assert result.code == 2
    assert result.err.startswith("error: --resume: no ") and "train without --resume first" in result.err
    assert not (tmp_path / "metrics.json").exists()


def test_training_again_into_a_finished_run_without_resume_is_refused_and_overwrites_nothing(tmp_path):
    assert train(tmp_path, *SINE, "--iterations", "1").code == 0
    before = snapshot(tmp_path)
    result = train(tmp_path, *SINE, "--iterations", "2")
    assert result.code == 2 and result.err.startswith(f"error: {tmp_path} already holds a run")
    assert "--resume" in result.err
    assert snapshot(tmp_path) == before
