"""What a run leaves on disk: atomic checkpoints that load safely, strict JSON, the machine it ran on.

Chapter 6's checkpoints and resume; every run's record.

Every file is written to a temporary file in the same folder and then renamed over the old one
(``os.replace`` is atomic), so a run killed mid-write never leaves a broken file
(:func:`atomic_write`, the one writer). Checkpoints load with ``torch.load(weights_only=True)``:
only tensors and plain containers are read, never arbitrary pickled objects.

One checkpoint schema for every learner and preset (written by :func:`mamlbook.train.fit`)::

    {"format": "mamlbook-checkpoint", "version": 2, "config": {...the run's settings...},
     "iteration": int, "learner": {"model": state_dict, "extra": {group: {name: tensor}}, ["scaler"]},
     "optimizer": state_dict | None, "generator": ByteTensor, "torch_rng": ByteTensor,
     "losses": (iteration,) tensor, "val": (n, 3) tensor of (iteration, mean, ci95),
     "best": [iteration, mean, ci95] | None, "train_time_s": float,
     ["torch_rng_ranks": (N, ·) ByteTensor, "elastic_run_id": str]}     (torchrun runs: mamlbook.distributed)

``best.pt`` has the same schema, frozen at the best validation point.
"""
from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import math
import os
import pickle
import platform
import subprocess
import tempfile
import zipfile
from pathlib import Path
from typing import IO, Callable, Iterator

import torch

from .config import fast_mode
from .errors import BadFileError

__all__ = ["FORMAT", "VERSION", "CheckpointError", "atomic_file", "atomic_write", "save_checkpoint", "load_checkpoint",
           "write_json", "machine_info", "cpu_name", "book_root", "git_state", "record_full_run", "shared_machine",
           "render_full_run", "full_run_table_cell", "full_run_when", "find_recorded"]

FORMAT = "mamlbook-checkpoint"
VERSION = 2


class CheckpointError(BadFileError, FileNotFoundError):
    """A checkpoint that is missing, corrupt or not one of ours (the message says which, and what to do)."""


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike, mode: str = "wb", suffix: str = ".tmp") -> Iterator[IO]:
    """A temporary file beside ``path``, fsynced and renamed over ``path`` when the block ends.

    If the block raises, the temporary file is removed and ``path`` (old or absent) is untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    try:
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write(path: str | os.PathLike, write: Callable[[IO], None], mode: str = "wb") -> Path:
    """Call ``write(file)`` on :func:`atomic_file` (``path`` appears only once complete)."""
    with atomic_file(path, mode) as f:
        write(f)
    return Path(path)


def save_checkpoint(path: str | os.PathLike, state: dict) -> Path:
    """Atomically write ``state`` (tensors, numbers, strings, lists, dicts) to ``path``."""
    payload = {"format": FORMAT, "version": VERSION, **state}
    return atomic_write(path, lambda f: torch.save(payload, f))


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict:
    """Read a checkpoint written by :func:`save_checkpoint`, with a one-line error if it is unusable."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(
            f"no checkpoint at {path}: train one first, e.g. `python -m mamlbook train --preset sinusoid "
            f"--out {path.parent}`, which writes checkpoint.pt into the --out folder")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except (RuntimeError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile, OSError, ValueError) as err:
        what = "empty" if path.stat().st_size == 0 else "corrupt, truncated, or not written by mamlbook"
        raise CheckpointError(
            f"{path} is not a readable checkpoint ({what}; loaded with weights_only=True: "
            f"{str(err).splitlines()[0] if str(err) else type(err).__name__}); retrain or use another "
            "checkpoint") from err
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"{path} is a PyTorch file but not a mamlbook checkpoint (no '{FORMAT}' marker)")
    if state.get("version") != VERSION:
        raise CheckpointError(f"{path} has checkpoint version {state.get('version')}; this mamlbook reads "
                              f"version {VERSION}: retrain with this version, or install the mamlbook that wrote it")
    return state


def cpu_name() -> str:
    """The CPU's model name (from /proc/cpuinfo where there is one)."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def machine_info(device: str | torch.device = "cpu") -> dict:
    """Where a run ran, gathered once for every record: torch (and CUDA), device and its name, CPU, threads,
    load, platform, Python, date."""
    device = torch.device(device)
    cuda = device.type == "cuda"
    info = {"torch": torch.__version__, "cuda": torch.version.cuda if cuda else None, "device": str(device),
            "device_name": torch.cuda.get_device_name(device) if cuda else "CPU: " + cpu_name(),
            "cpu": cpu_name(), "cpu_count": os.cpu_count(), "cpu_threads": torch.get_num_threads(),
            "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
            "platform": platform.platform(), "python": platform.python_version(),
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
    return {**info, "gpu": info["device_name"]} if cuda else info


def finite_or_null(obj):
    """JSON has no inf/NaN: a value that overflowed (e.g. a diverged task's mean) is written as null."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: finite_or_null(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite_or_null(v) for v in obj]
    return obj


def write_json(path: str | os.PathLike, obj: dict) -> None:
    """Write strict JSON atomically (never a half-written file)."""
    text = json.dumps(finite_or_null(obj), indent=2, allow_nan=False) + "\n"
    atomic_write(path, lambda f: f.write(text), mode="w")


# ------------------------------------------------------------------ a chapter's full-mode run record
def _book_roots() -> list[Path]:
    """Where the book's checkout may be, in order: the working folder, its parent (a notebook's), and the
    folder this package was installed from (an editable install's checkout; site-packages for pip)."""
    return [Path.cwd(), Path.cwd().parent, Path(__file__).resolve().parents[1]]


def book_root() -> Path:
    """The book's checkout: the first of :func:`_book_roots` with mamlbook/ and results/ (else the
    working folder)."""
    roots = _book_roots()
    return next((r for r in roots if (r / "mamlbook").is_dir() and (r / "results").is_dir()), roots[0])


def find_recorded(name: str) -> Path | None:
    """A committed file of the book (``results/...``, ``docs/...``) in the first of :func:`_book_roots`
    that has it; None where none has it (a pip install alone)."""
    return next((r / name for r in _book_roots() if (r / name).exists()), None)


def git_state(root: str | os.PathLike) -> tuple[str | None, bool | None]:
    """(commit, whether the working tree has uncommitted changes), or (None, None) outside a git checkout."""
    def git(*args):
        return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, check=True).stdout.strip()
    try:
        return git("rev-parse", "HEAD"), bool(git("status", "--porcelain"))
    except (OSError, subprocess.CalledProcessError):
        return None, None


def record_full_run(chapter: int, record: dict, *, load_at_start: float, device="cpu") -> Path | None:
    """Write a chapter's full-mode numbers to ``results/chapterNN/full_run.json`` with the machine, the
    load, the environment and the git commit; fast mode writes nothing (and says so)."""
    where = f"results/chapter{chapter:02d}/full_run.json"
    if fast_mode():
        print(f"FAST MODE: nothing written (only a full run writes {where}).")
        return None
    root = book_root()
    commit, dirty = git_state(root)
    write_json(root / where, {"chapter": chapter, "fast_mode": False, **record, "machine": machine_info(device),
                              "load_average_1min": {"start": load_at_start, "end": os.getloadavg()[0]},
                              "env": {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "MAMLBOOK_FAST")},
                              "git": {"commit": commit, "dirty": dirty}})
    print(f"wrote {root / where}")
    return root / where


def shared_machine(run: dict) -> bool:
    """The run used one thread: a one-minute load average above 1.5 means other jobs ran beside it."""
    load = run["load_average_1min"]
    return max(load["start"], load["end"]) > 1.5


def render_full_run(folder: Path, markdown: Callable[[dict], str], readme_section: Callable[[dict], str]) -> None:
    """``results/chapterNN/render.py``'s command line: ``full_run.json`` → ``full_run.md`` (``--readme``:
    print the README's section and its Chapters-table cell too)."""
    ap = argparse.ArgumentParser(description="Render a chapter's full-run record into full_run.md.")
    ap.add_argument("--readme", action="store_true", help="print the README's section and table cell too")
    args = ap.parse_args()
    run = json.loads((folder / "full_run.json").read_text(encoding="utf-8"))
    if run.get("fast_mode"):
        raise SystemExit("full_run.json comes from a fast-mode run: rerun the notebook in full mode")
    (folder / "full_run.md").write_text(markdown(run), encoding="utf-8")
    print(f"wrote {folder / 'full_run.md'}")
    if args.readme:
        print("\n" + readme_section(run) + "\n\ntable cell: " + full_run_table_cell(run))


def full_run_when(run: dict) -> tuple[str, str]:
    """A full-run record's time span ("2026-12-01 20:10–20:31 UTC", settings cell to record cell) and
    where it ran ("commit `abc1234`", "… plus uncommitted changes in the working tree", "no git checkout")."""
    finished = datetime.datetime.fromisoformat(run["machine"]["date"])
    started = finished - datetime.timedelta(seconds=run["wall_time_s"]["settings_to_record"])
    commit, dirty = run["git"]["commit"], run["git"]["dirty"]
    at = (f"commit `{commit[:7]}`" + (" plus uncommitted changes in the working tree" if dirty else "")
          if commit else "no git checkout")
    return f"{started:%Y-%m-%d %H:%M}–{finished:%H:%M} UTC", at


def full_run_table_cell(run: dict) -> str:
    """The README Chapters table's full-run cell: settings cell to record cell, in minutes."""
    return f"{run['wall_time_s']['settings_to_record'] / 60:.0f} min²"
