"""Checkpoints that survive interruptions and load safely.

A checkpoint is written to a temporary file in the same folder and then renamed over the
old one (``os.replace`` is atomic), so a run killed mid-write never leaves a broken file.
Loading uses ``torch.load(weights_only=True)``: only tensors and plain containers are
read, never arbitrary pickled objects.
"""
from __future__ import annotations

import os
import pickle
import tempfile
import zipfile
from pathlib import Path

import torch

FORMAT = "mamlbook-checkpoint"
VERSION = 1


class CheckpointError(ValueError):
    """A checkpoint that is missing, corrupt or not one of ours."""


def save_checkpoint(path: str | os.PathLike, state: dict) -> Path:
    """Atomically write ``state`` (tensors, numbers, strings, lists, dicts) to ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"format": FORMAT, "version": VERSION, **state}
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(payload, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict:
    """Read a checkpoint written by :func:`save_checkpoint`, with a clear error if it is unusable."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(
            f"No checkpoint at {path}. Train one first, e.g. "
            f"`python -m mamlbook train --preset sinusoid --out {path.parent}`, "
            "which writes checkpoint.pt into the --out folder.")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except (RuntimeError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile, OSError) as err:
        raise CheckpointError(
            f"{path} is not a readable checkpoint (corrupt, truncated, or not written by "
            f"mamlbook; it was loaded with weights_only=True): {str(err).splitlines()[0]}") from err
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"{path} is a PyTorch file but not a mamlbook checkpoint "
                              f"(no '{FORMAT}' marker).")
    if state.get("version") != VERSION:
        raise CheckpointError(f"{path} has checkpoint version {state.get('version')}; "
                              f"this mamlbook reads version {VERSION}.")
    return state
