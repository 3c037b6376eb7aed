"""The book's one fast-mode switch, and seeding.

Every chapter's fast mode.

Every notebook and test reads fast mode from here, so one environment variable,
``MAMLBOOK_FAST=1``, shortens every run in the book (CI sets it). With the switch off,
the notebooks run the paper's full configurations.
"""
from __future__ import annotations

import os
import random

import numpy as np
import torch

__all__ = ["FAST_ENV", "fast_mode", "pick", "banner", "seed_everything"]

FAST_ENV = "MAMLBOOK_FAST"


def fast_mode() -> bool:
    """True when ``MAMLBOOK_FAST`` is set to 1/true/yes (shortened runs for CI)."""
    return os.environ.get(FAST_ENV, "").strip().lower() in {"1", "true", "yes", "on"}


def pick(full, fast):
    """Return ``fast`` in fast mode and ``full`` otherwise (for iteration counts and sizes)."""
    return fast if fast_mode() else full


def banner(what: str = "this notebook") -> str:
    """A line to print at the top of every run, so shortened numbers are never mistaken for real ones."""
    if fast_mode():
        msg = (f"FAST MODE ({FAST_ENV}=1): {what} runs a SHORTENED configuration. "
               "Its numbers and figures come from a short run and are NOT the paper's results. "
               f"Unset {FAST_ENV} for the full run.")
    else:
        msg = (f"Full mode: {what} runs its full-length configuration (the paper's settings where it reproduces "
               f"a paper; set {FAST_ENV}=1 for a quick run).")
    print(msg)
    return msg


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python, NumPy and PyTorch; return a fresh ``torch.Generator`` seeded with ``seed``."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)
