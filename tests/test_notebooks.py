"""Every notebook has its jupytext py:percent twin with the same cells, and no committed outputs."""
from pathlib import Path

import jupytext
import nbformat
import pytest

from mamlbook.config import banner

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))


def cells(nb):
    return [(c.cell_type, c.source.strip()) for c in nb.cells]


def test_there_are_notebooks():
    assert len(NOTEBOOKS) >= 2


@pytest.mark.parametrize("ipynb", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_and_its_text_twin_have_the_same_cells(ipynb):
    twin = ipynb.with_suffix(".py")
    assert twin.exists(), f"{twin.name} is missing: run `jupytext --sync {ipynb}`"
    assert cells(jupytext.read(ipynb)) == cells(jupytext.read(twin)), (
        f"{ipynb.name} and {twin.name} differ: edit one, then `jupytext --sync notebooks/*.ipynb`")


@pytest.mark.parametrize("ipynb", NOTEBOOKS, ids=lambda p: p.name)
def test_committed_notebook_has_no_outputs(ipynb):
    nb = nbformat.read(ipynb, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, (
                f"{ipynb.name} has outputs: strip them (e.g. `jupytext --update --to ipynb` from the .py)")


@pytest.mark.parametrize("ipynb", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_announces_fast_mode(ipynb):
    source = "\n".join(c.source for c in nbformat.read(ipynb, as_version=4).cells)
    assert "banner(" in source, f"{ipynb.name} must call mamlbook.config.banner() so fast mode shows"


@pytest.mark.parametrize("value, shortened", [("1", True), ("yes", True), ("0", False), ("", False)])
def test_the_banner_says_whether_the_numbers_come_from_a_shortened_run(monkeypatch, capsys, value, shortened):
    monkeypatch.setenv("MAMLBOOK_FAST", value)
    msg = banner("Chapter 10")
    assert capsys.readouterr().out == msg + "\n"
    assert msg.startswith("FAST MODE (MAMLBOOK_FAST=1): Chapter 10 runs a SHORTENED configuration") == shortened
    assert ("NOT the paper's results" in msg) == shortened
    assert msg.startswith("Full mode: Chapter 10 runs its full-length configuration") != shortened
