"""The Colab install cell: from the repository's one URL, no-op outside Colab, never touching torch."""
import shlex
import subprocess
import sys
import types
from pathlib import Path

import nbformat
import pytest
import tomllib

from mamlbook.book import colab

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def on_colab(monkeypatch):
    """Pretend to be on Colab: Colab's kernel has imported `google.colab`."""
    monkeypatch.setitem(sys.modules, "google.colab", types.ModuleType("google.colab"))


@pytest.fixture
def pip_calls(monkeypatch):
    """Record subprocess.run calls instead of running pip."""
    calls = []
    monkeypatch.setattr(subprocess, "run", lambda args, **kw: calls.append((list(args), kw)))
    return calls


def test_repo_url_names_a_github_repository():
    assert colab.REPO_URL.startswith("https://github.com/")
    assert len(colab.REPO_URL.removeprefix("https://github.com/").strip("/").split("/")) == 2


def test_install_command_is_a_no_deps_pip_install_of_the_repository():
    tokens = shlex.split(colab.colab_install_command())
    assert tokens[:2] == ["pip", "install"]
    assert "--no-deps" in tokens
    assert f"git+{colab.REPO_URL}" in tokens


def test_install_command_never_names_torch():
    # Colab's torch is built for its CUDA; reinstalling it would break the GPU runtime.
    packages = [t for t in shlex.split(colab.colab_install_command()) if not t.startswith("-")]
    assert not any(t.split("=")[0].split(">")[0] in {"torch", "torchvision"} for t in packages)


def test_every_runtime_dependency_is_either_on_colab_or_installed_by_the_cell():
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    names = {shlex.split(d)[0].split(">")[0].split("=")[0].split("<")[0] for d in deps}
    covered = set(colab.COLAB_PREINSTALLED) | {d.split(">")[0] for d in colab.COLAB_MISSING}
    assert names <= covered, f"add {sorted(names - covered)} to COLAB_PREINSTALLED or COLAB_MISSING"


def test_colab_cell_does_nothing_outside_colab(pip_calls):
    assert "google.colab" not in sys.modules
    exec(colab.COLAB_CELL, {})
    assert pip_calls == []


def test_colab_cell_on_colab_runs_the_install_command_with_the_kernels_python(on_colab, pip_calls):
    exec(colab.COLAB_CELL, {})
    assert pip_calls == [([sys.executable, "-m", *shlex.split(colab.colab_install_command())],
                          {"check": True})]


def test_colab_cell_installs_from_repo_url():
    assert f'"git+{colab.REPO_URL}"' in colab.COLAB_CELL


def test_setup_colab_is_a_no_op_elsewhere():
    calls = []
    assert colab.setup_colab(run=lambda *a, **k: calls.append(a)) is False
    assert calls == []


def test_setup_colab_installs_on_colab(on_colab):
    calls = []
    assert colab.setup_colab(run=lambda args, **kw: calls.append(args)) is True
    assert calls == [[sys.executable, "-m", *shlex.split(colab.colab_install_command())]]


def test_colab_and_binder_links_point_at_the_notebook_in_the_repository():
    owner_repo = colab.REPO_URL.removeprefix("https://github.com/")
    nb = "notebooks/01_tasks.ipynb"
    assert colab.colab_url(nb) == f"https://colab.research.google.com/github/{owner_repo}/blob/main/{nb}"
    assert colab.binder_url(nb) == f"https://mybinder.org/v2/gh/{owner_repo}/main?urlpath=lab/tree/{nb}"
    assert colab.colab_badge(nb).endswith(f"({colab.colab_url(nb)})")


NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


@pytest.mark.parametrize("ipynb", NOTEBOOKS, ids=lambda p: p.name)
def test_every_notebook_starts_with_the_colab_cell(ipynb):
    code = [c.source for c in nbformat.read(ipynb, as_version=4).cells if c.cell_type == "code"]
    assert code and code[0] == colab.COLAB_CELL, (
        f"the first code cell of {ipynb.name} must be mamlbook.book.colab.COLAB_CELL, exactly: paste "
        "`python -c 'from mamlbook.book.colab import COLAB_CELL; print(COLAB_CELL)'` into the .py twin's "
        "first code cell, then `jupytext --sync`")


@pytest.mark.parametrize("ipynb", NOTEBOOKS, ids=lambda p: p.name)
def test_every_notebook_title_carries_its_open_in_colab_badge(ipynb):
    first_markdown = next(c.source for c in nbformat.read(ipynb, as_version=4).cells
                          if c.cell_type == "markdown")
    assert colab.colab_badge(f"notebooks/{ipynb.name}") in first_markdown
