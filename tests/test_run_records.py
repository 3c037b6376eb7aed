"""A chapter's full-mode run record (runs.record_full_run) and the files the book looks up (find_recorded)."""
import json
import subprocess

import pytest

from mamlbook.runs import (
    find_recorded,
    full_run_table_cell,
    full_run_when,
    git_state,
    record_full_run,
    shared_machine,
)


@pytest.fixture
def checkout(tmp_path, monkeypatch):
    """A stand-in for the book's checkout (mamlbook/ and results/), run from its notebooks/ folder."""
    for d in ("mamlbook", "results", "notebooks"):
        (tmp_path / d).mkdir()
    monkeypatch.chdir(tmp_path / "notebooks")
    return tmp_path


def test_fast_mode_writes_nothing_and_says_so(checkout, monkeypatch, capsys):
    monkeypatch.setenv("MAMLBOOK_FAST", "1")
    assert record_full_run(9, {"x": 1}, load_at_start=0.5) is None
    out = capsys.readouterr().out
    assert "FAST MODE: nothing written (only a full run writes results/chapter09/full_run.json)" in out
    assert not (checkout / "results" / "chapter09").exists()


def test_a_full_run_is_recorded_in_the_checkout_with_its_machine_load_and_commit(checkout, monkeypatch):
    monkeypatch.setenv("MAMLBOOK_FAST", "0")
    subprocess.run(["git", "init", "-q", str(checkout)], check=True)
    path = record_full_run(10, {"notebook": "n.ipynb", "config": {"SEED": 0}}, load_at_start=0.25)
    assert path == checkout / "results" / "chapter10" / "full_run.json"
    run = json.loads(path.read_text())
    assert run["chapter"] == 10 and run["fast_mode"] is False and run["config"] == {"SEED": 0}
    assert run["load_average_1min"]["start"] == 0.25 and run["env"]["MAMLBOOK_FAST"] == "0"
    assert run["machine"]["device"] == "cpu"
    assert run["git"] == {"commit": None, "dirty": None}   # a repository without a commit has no HEAD


def test_git_state_is_none_outside_a_checkout(tmp_path):
    assert git_state(tmp_path) == (None, None)


def test_a_run_is_shared_when_the_load_passed_one_and_a_half():
    assert shared_machine({"load_average_1min": {"start": 0.4, "end": 1.6}})
    assert not shared_machine({"load_average_1min": {"start": 1.5, "end": 0.2}})


def test_the_chapters_table_cell_is_the_whole_notebook_in_minutes():
    assert full_run_table_cell({"wall_time_s": {"settings_to_record": 1230.0}}) == "20 min²"


def test_find_recorded_finds_a_committed_file_from_the_notebooks_folder(checkout):
    (checkout / "results" / "r.json").write_text("{}")
    assert find_recorded("results/r.json") == checkout / "results" / "r.json"


def test_find_recorded_finds_the_books_own_files_from_anywhere(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert find_recorded("results/chapter02/full_run.json").is_file()     # this checkout's, via the package
    assert find_recorded("results/no_such_file.json") is None


def test_a_record_says_when_it_ran_and_at_which_commit():
    run = {"machine": {"date": "2026-12-01T20:31:05+00:00"}, "wall_time_s": {"settings_to_record": 1230.0},
           "git": {"commit": "0123456789abcdef", "dirty": True}}
    assert full_run_when(run) == ("2026-12-01 20:10–20:31 UTC",
                                  "commit `0123456` plus uncommitted changes in the working tree")
    run["git"] = {"commit": None, "dirty": None}
    assert full_run_when(run)[1] == "no git checkout"
