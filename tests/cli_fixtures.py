"""Helpers for the command-line tests (tests/test_cli*.py, tests/test_resume.py and each learner's CLI tests).

They run the real command line, ``mamlbook.cli.main(argv)``, in this process (a subprocess costs
seconds of imports per call) with tiny settings, and read back what a run left on disk.
"""
from __future__ import annotations

import dataclasses
import io
import json
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import pytest
import torch

from mamlbook.cli import main
from mamlbook.presets import PRESETS
from mamlbook.runs import load_checkpoint

# The smallest runs that still exercise everything: 3 meta-test tasks, no progress bar, no
# torch.compile (a one-off ~40 s), CPU.
TINY = ["--eval-tasks", "3", "--no-progress", "--no-compile", "--device", "cpu"]
SINE = ["--preset", "sinusoid"]


def omniglot(data, meta_batch_size: int | None = 2) -> list[str]:
    """The 5-way 1-shot Omniglot preset on the two small background sets in ``data``, meta-batch 2.

    ``meta_batch_size=None`` leaves the flag out (the pretraining baselines refuse it: they draw no tasks).
    """
    meta_batch = ["--meta-batch-size", str(meta_batch_size)] if meta_batch_size else []
    return ["--preset", "omniglot-5w1s", "--split", "small", "--data", str(data), *meta_batch]


@dataclasses.dataclass
class Result:
    """What one command printed and returned."""

    code: int
    out: str
    err: str


def cli(*argv) -> Result:
    """``python -m mamlbook *argv`` in this process: exit code, stdout and stderr."""
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = main([str(a) for a in argv])
    return Result(code, out.getvalue(), err.getvalue())


def train(out, *flags) -> Result:
    """``train --out OUT`` with the tiny settings and ``flags`` (which must name the preset)."""
    return cli("train", "--out", out, *TINY, *flags)


def metrics(out) -> dict:
    """OUT/metrics.json, parsed as strict JSON (NaN or Infinity in the file is an error)."""
    def refuse(constant):
        raise ValueError(f"metrics.json holds {constant}, which is not JSON")
    return json.loads((Path(out) / "metrics.json").read_text(), parse_constant=refuse)


def tensors(state, prefix: str = "") -> dict[str, torch.Tensor]:
    """Every tensor of a nested dict (a checkpoint's learner state: model and extra), by dotted path."""
    found = {}
    for key, value in state.items():
        if isinstance(value, dict):
            found.update(tensors(value, f"{prefix}{key}."))
        elif isinstance(value, torch.Tensor):
            found[f"{prefix}{key}"] = value
    return found


def learner_tensors(path) -> dict[str, torch.Tensor]:
    """The learner state of the checkpoint at ``path``: θ ("model.*") and meta-learned extras ("extra.*")."""
    return tensors(load_checkpoint(path)["learner"])


def differing(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> list[str]:
    """Names whose tensors are not bit-identical (or present in only one of ``a`` and ``b``)."""
    return sorted(k for k in a.keys() | b.keys() if k not in a or k not in b or not torch.equal(a[k], b[k]))


def differing_runs(a, b, file: str = "checkpoint.pt") -> list[str]:
    """The learner tensors that differ between the checkpoints ``file`` of the run folders ``a`` and ``b``."""
    return differing(learner_tensors(Path(a) / file), learner_tensors(Path(b) / file))


def assert_stops_at_budget(out, *flags, budget: str) -> int:
    """``train`` for up to 100000 iterations within ``--time-budget budget``: it succeeds, stopped by the
    budget after at least one iteration. Returns the iterations it did."""
    result = train(out, *flags, "--iterations", "100000", "--time-budget", budget)
    assert result.code == 0, result.err
    m = metrics(out)
    assert m["stopped_by_budget"] is True and 1 <= m["iterations_done"] < 100000
    return m["iterations_done"]


class SimulatedCrash(BaseException):
    """The process died (a BaseException, like KeyboardInterrupt: nothing in mamlbook catches it)."""


def crash_after_checkpoint(monkeypatch, iteration: int) -> None:
    """Kill training right after the loop has written ``checkpoint.pt`` for ``iteration``."""
    import mamlbook.train
    save = mamlbook.train.save_checkpoint

    def save_then_crash(path, state):
        written = save(path, state)
        if Path(path).name == "checkpoint.pt" and state["iteration"] == iteration:
            raise SimulatedCrash(f"killed after the checkpoint of iteration {iteration}")
        return written
    monkeypatch.setattr(mamlbook.train, "save_checkpoint", save_then_crash)


def crash(monkeypatch, out, *flags, after: int) -> None:
    """``train(out, *flags)``, killed right after it has written ``checkpoint.pt`` for iteration ``after``."""
    with monkeypatch.context() as mp:
        crash_after_checkpoint(mp, after)
        with pytest.raises(SimulatedCrash):
            train(out, *flags)


def assert_resumes_bit_identical(tmp_path, monkeypatch, *flags) -> tuple[dict, dict]:
    """``train *flags`` into tmp_path/"whole", and into tmp_path/"crashed" killed after checkpoint 1 and then
    resumed: both succeed, their final checkpoint.pt hold the same learner tensors and their meta-tests agree.

    Returns the two runs' metrics.json: (whole, crashed).
    """
    whole, crashed = tmp_path / "whole", tmp_path / "crashed"
    assert train(whole, *flags).code == 0
    crash(monkeypatch, crashed, *flags, after=1)
    resumed = train(crashed, *flags, "--resume")
    assert resumed.code == 0, resumed.err
    assert differing_runs(whole, crashed) == []
    whole_metrics, crashed_metrics = metrics(whole), metrics(crashed)
    assert whole_metrics["eval"] == crashed_metrics["eval"]
    return whole_metrics, crashed_metrics


def record_checkpoints(monkeypatch) -> list[tuple[str, int]]:
    """A list that fills with (file name, iteration) for every checkpoint the loop writes."""
    import mamlbook.train
    save, written = mamlbook.train.save_checkpoint, []

    def save_and_record(path, state):
        written.append((Path(path).name, state["iteration"]))
        return save(path, state)
    monkeypatch.setattr(mamlbook.train, "save_checkpoint", save_and_record)
    return written


def small_validation(monkeypatch, preset: str = "omniglot-5w1s", val_tasks: int = 10) -> None:
    """Validate ``preset`` on ``val_tasks`` tasks instead of its 200 (10 s per validation of MAML on one core).

    Only the size of the fixed validation set changes; everything the tests check about
    validation (when it runs, best.pt, resuming) is the same for any size.
    """
    p = PRESETS[preset]
    monkeypatch.setitem(PRESETS, preset, dataclasses.replace(p, config=p.config.replace(val_tasks=val_tasks)))


def cached_runs(tmp_path_factory, preset_for):
    """A module fixture's ``run(learner, *flags, iterations=1, out=None)`` → (Result, out folder): ``train``
    with ``preset_for(learner)``'s flags and small validation sets; each distinct run is made once."""
    done = {}

    def run(learner, *flags, iterations=1, out=None):
        key = (learner, flags, iterations, out)
        if key not in done:
            folder = out or tmp_path_factory.mktemp(learner)
            with pytest.MonkeyPatch.context() as mp:
                small_validation(mp)
                done[key] = train(folder, *preset_for(learner), "--algorithm", learner, "--iterations", iterations,
                                  *flags), folder
        return done[key]
    return run
