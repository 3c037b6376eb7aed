"""Where the book looks for data, and where it writes downloads and caches.

Chapters 5–8. The search order and the defaults: docs/data.md, section "Where data goes".
"""
from __future__ import annotations

import os
from pathlib import Path

__all__ = ["DATA_ENV", "CACHE_ENV", "repo_root", "default_data_root", "default_cache_dir", "data_roots",
           "find_data"]

DATA_ENV, CACHE_ENV = "MAMLBOOK_DATA", "MAMLBOOK_CACHE"


def repo_root() -> Path | None:
    """The repository checkout this package runs from, or None when it is installed elsewhere."""
    root = Path(__file__).resolve().parents[2]
    return root if (root / "pyproject.toml").is_file() and (root / "mamlbook").is_dir() else None


def default_data_root() -> Path:
    """Where downloads go: ``$MAMLBOOK_DATA``, else the checkout's ``data/``, else ``./data``."""
    if env := os.environ.get(DATA_ENV):
        return Path(env).expanduser()
    return (repo_root() or Path.cwd()) / "data"


def default_cache_dir() -> Path:
    """Where decoded uint8 caches go: ``$MAMLBOOK_CACHE``, else ``<default data root>/cache``."""
    return Path(env).expanduser() if (env := os.environ.get(CACHE_ENV)) else default_data_root() / "cache"


def data_roots() -> list[Path]:
    """The folders searched for data, in order, missing ones left out: ``$MAMLBOOK_DATA``, then the
    checkout's ``data/`` and ``../shared/data`` beside it (outside a checkout: ``./data``)."""
    roots = []
    if os.environ.get(DATA_ENV):
        roots.append(Path(os.environ[DATA_ENV]).expanduser())
    repo = repo_root()
    roots += [repo / "data", repo.parent / "shared" / "data"] if repo is not None else [Path.cwd() / "data"]
    unique: dict[Path, Path] = {}                       # resolved → the first spelling of it
    for r in filter(Path.is_dir, roots):
        unique.setdefault(r.resolve(), r)
    return list(unique.values())


def find_data(*relative: str) -> Path | None:
    """The first data root holding every one of ``relative`` (e.g. ``"omniglot/x.zip"``), or None."""
    for root in data_roots():
        if all((root / rel).exists() for rel in relative):
            return root
    return None
