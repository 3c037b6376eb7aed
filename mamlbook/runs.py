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

import contextlib
import datetime
import json
import math
import os
import pickle
import platform
import tempfile
import zipfile
from pathlib import Path
from typing import IO, Callable, Iterator

import torch

from .errors import BadFileError

__all__ = ["FORMAT", "VERSION", "CheckpointError", "atomic_file", "atomic_write", "save_checkpoint", "load_checkpoint",
           "write_json", "machine_info", "cpu_name"]

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
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
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
    if cuda:
        info["gpu"] = info["device_name"]
    return info


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
