"""Google Colab and Binder: the repository's address, in one place, and the Colab install cell.

Every chapter's Open-in-Colab badge and install cell.

The first cell of every notebook is the self-contained :data:`COLAB_CELL` (on Colab the package is
not installed yet, so it cannot import from here); why ``--no-deps``: docs/colab_binder.md.
"""
from __future__ import annotations

import json
import shlex
import subprocess
import sys

__all__ = ["REPO_URL", "BRANCH", "COLAB_PREINSTALLED", "COLAB_MISSING", "colab_install_command", "COLAB_CELL",
           "setup_colab", "colab_url", "binder_url", "colab_badge", "binder_badge"]

# The repository the notebooks install from and link to. PLACEHOLDER until the book has its
# public home: change it here, then update COLAB_CELL in every notebook (a test compares them).
REPO_URL = "https://github.com/mamlbook/mamlbook"
BRANCH = "main"

# pyproject's runtime dependencies that Colab's image already has, and those it lacks
# (installed next to the package). tests/test_colab.py checks that together they cover
# every dependency in pyproject.toml, so a new dependency cannot be forgotten here.
COLAB_PREINSTALLED = ("torch", "torchvision", "numpy", "matplotlib", "tqdm", "pillow", "ipywidgets")
COLAB_MISSING: tuple[str, ...] = ()


def colab_install_command(repo_url: str = REPO_URL) -> str:
    """The pip command that installs the package on Colab without touching torch."""
    return " ".join(["pip", "install", "--quiet", "--no-deps", shlex.quote(f"git+{repo_url}"),
                     *map(shlex.quote, COLAB_MISSING)])


def _cell(command: str) -> str:
    tokens = [json.dumps(t) for t in shlex.split(command)]
    options = [t for t in tokens if t.startswith('"-') or t in ('"pip"', '"install"')]
    packages = [t for t in tokens if t not in options]                 # the repository, then extras
    return ("# Google Colab only: install the book's package from its repository (torch is already there).\n"
            "import subprocess, sys\n"
            'if "google.colab" in sys.modules:\n'
            f'    subprocess.run([sys.executable, "-m", {", ".join(options)},\n'
            f'                    {", ".join(packages)}], check=True)')


# Plain Python rather than `!pip`: the notebooks' py:percent twins stay valid Python (jupytext
# comments out `!` lines, which would leave the `if` with an empty body).
COLAB_CELL = _cell(colab_install_command())


def setup_colab(run=subprocess.run) -> bool:
    """On Colab, install the package (see :func:`colab_install_command`); elsewhere do nothing.

    Returns True if it installed, False if not on Colab.
    """
    if "google.colab" not in sys.modules:              # not in a Google Colab kernel
        return False
    run([sys.executable, "-m", *shlex.split(colab_install_command())], check=True)
    return True


def colab_url(notebook: str, repo_url: str = REPO_URL, branch: str = BRANCH) -> str:
    """Where Colab opens ``notebook`` (a path in the repository, e.g. "notebooks/01_tasks.ipynb")."""
    owner_repo = repo_url.removeprefix("https://github.com/").rstrip("/")
    return f"https://colab.research.google.com/github/{owner_repo}/blob/{branch}/{notebook}"


def binder_url(notebook: str, repo_url: str = REPO_URL, branch: str = BRANCH) -> str:
    """Where Binder opens ``notebook`` in JupyterLab."""
    owner_repo = repo_url.removeprefix("https://github.com/").rstrip("/")
    return f"https://mybinder.org/v2/gh/{owner_repo}/{branch}?urlpath=lab/tree/{notebook}"


def colab_badge(notebook: str) -> str:
    """Markdown for an "Open in Colab" badge linking to ``notebook``."""
    return (f"[![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)]"
            f"({colab_url(notebook)})")


def binder_badge(notebook: str) -> str:
    """Markdown for a "launch binder" badge opening ``notebook`` in JupyterLab."""
    return f"[![Binder](https://mybinder.org/badge_logo.svg)]({binder_url(notebook)})"
