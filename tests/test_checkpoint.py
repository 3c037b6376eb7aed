"""Checkpoints: atomic writes and safe, clear loading."""
import os
import pickle

import pytest
import torch

from mamlbook.runs import CheckpointError, load_checkpoint, save_checkpoint


def test_round_trip_keeps_tensors_and_plain_values(tmp_path):
    path = save_checkpoint(tmp_path / "c.pt", {"iteration": 7, "w": torch.arange(3.0),
                                               "config": {"k_shot": 10}})
    state = load_checkpoint(path)
    assert state["iteration"] == 7 and state["config"] == {"k_shot": 10}
    assert torch.equal(state["w"], torch.arange(3.0))


def test_save_leaves_no_temporary_file_and_replaces_the_old_one(tmp_path):
    save_checkpoint(tmp_path / "c.pt", {"iteration": 1})
    save_checkpoint(tmp_path / "c.pt", {"iteration": 2})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.pt"]
    assert load_checkpoint(tmp_path / "c.pt")["iteration"] == 2


def test_failed_save_keeps_the_previous_checkpoint(tmp_path):
    save_checkpoint(tmp_path / "c.pt", {"iteration": 1})
    with pytest.raises((AttributeError, TypeError, RuntimeError, pickle.PicklingError)):
        save_checkpoint(tmp_path / "c.pt", {"bad": lambda: 0})  # lambdas cannot be saved
    assert load_checkpoint(tmp_path / "c.pt")["iteration"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.pt"]


def test_a_plain_torch_file_is_not_taken_for_a_checkpoint(tmp_path):
    torch.save({"w": torch.zeros(1)}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="not a mamlbook checkpoint"):
        load_checkpoint(tmp_path / "other.pt")


class Exploit:
    def __reduce__(self):
        return (os.system, ("touch pwned",))


def test_a_pickle_that_runs_code_is_refused_and_nothing_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with open("evil.pt", "wb") as f:
        pickle.dump({"format": "mamlbook-checkpoint", "x": Exploit()}, f)
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        load_checkpoint("evil.pt")
    assert not (tmp_path / "pwned").exists()
