"""Student versions of the book's notebooks: solutions out, hidden tests out, outputs out.

Every chapter's student version (docs/instructor.md).

    python -m mamlbook.book.student [--src notebooks] [--out student]    # (re)generate
    python -m mamlbook.book.student --check                               # exit 1 if out of date
    python -m mamlbook.book.student --execute                             # run them, report errors

The instructor notebooks use nbgrader's markers inside code cells:

    def zero_predictor_mse(a, b):
        ### BEGIN SOLUTION
        return ...
        ### END SOLUTION

Each solution region becomes nbgrader's stub, at the marker's indentation
(``# YOUR CODE HERE`` / ``raise NotImplementedError()``); ``### BEGIN HIDDEN TESTS`` …
``### END HIDDEN TESTS`` regions are removed. A markdown solution region becomes
``YOUR ANSWER HERE``. The output depends only on the input notebook, so CI can regenerate
and compare bytes. Notebooks without a solution region get no student version.

An *exercise cell* is a code cell that holds a solution region (tagged ``exercise`` in the
student version); it and every code cell after the first one (the check cells) may fail in a
student version, and only with ``NotImplementedError``. Every cell before must run cleanly.
"""
from __future__ import annotations

import argparse
import copy
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import nbformat

__all__ = ["BEGIN_SOLUTION", "END_SOLUTION", "BEGIN_HIDDEN", "END_HIDDEN", "CODE_STUB", "TEXT_STUB",
           "EXERCISE_TAG", "HEADER_ID", "MarkerError", "has_solution", "has_exercises", "student_cell",
           "header_cell", "make_student_notebook", "exercise_cells", "student_notebooks",
           "write_student_notebooks", "outdated", "CellError", "execute_notebook", "student_run_problems",
           "main"]

BEGIN_SOLUTION, END_SOLUTION = "### BEGIN SOLUTION", "### END SOLUTION"
BEGIN_HIDDEN, END_HIDDEN = "### BEGIN HIDDEN TESTS", "### END HIDDEN TESTS"
CODE_STUB = ("# YOUR CODE HERE", "raise NotImplementedError()")   # nbgrader's own stub
TEXT_STUB = ("YOUR ANSWER HERE",)
EXERCISE_TAG = "exercise"
HEADER_ID = "student-version-note"


class MarkerError(ValueError):
    """A solution or hidden-test marker is malformed; the student version would leak or break."""


def _replace_regions(source: str, begin: str, end: str, stub: tuple[str, ...], where: str) -> tuple[str, int]:
    """Replace every ``begin``…``end`` region by ``stub`` (indented like ``begin``); count the regions."""
    out, inside, count = [], False, 0
    for number, line in enumerate(source.split("\n"), start=1):
        marker = line.strip()
        if marker == begin:
            if inside:
                raise MarkerError(f"{where}, line {number}: {begin!r} inside an open region; close the "
                                  f"first one with {end!r}")
            inside, count = True, count + 1
            indent = line[:len(line) - len(line.lstrip())]
            out += [indent + s for s in stub]
        elif marker == end:
            if not inside:
                raise MarkerError(f"{where}, line {number}: {end!r} without a matching {begin!r}")
            inside = False
        elif not inside:
            out.append(line)
    if inside:
        raise MarkerError(f"{where}: {begin!r} is never closed; add {end!r} after the region")
    return "\n".join(out), count


def _check_marker_spelling(source: str, where: str) -> None:
    """Refuse near-miss markers ("## BEGIN SOLUTION", "### BEGIN SOLUTION:"): they would leak a solution."""
    exact = {BEGIN_SOLUTION, END_SOLUTION, BEGIN_HIDDEN, END_HIDDEN}
    for number, line in enumerate(source.split("\n"), start=1):
        words = line.strip().lstrip("#").strip().upper()
        if any(words.startswith(k) for k in ("BEGIN SOLUTION", "END SOLUTION", "BEGIN HIDDEN",
                                             "END HIDDEN")) and line.strip() not in exact:
            raise MarkerError(f"{where}, line {number}: {line.strip()!r} looks like a marker but is not "
                              f"one of {sorted(exact)}; write it exactly so, on a line of its own")


def has_solution(cell) -> bool:
    """True if the cell holds a ``### BEGIN SOLUTION`` line."""
    return any(line.strip() == BEGIN_SOLUTION for line in cell.source.split("\n"))


def has_exercises(nb) -> bool:
    """True if any cell of the notebook holds a solution region."""
    return any(has_solution(c) for c in nb.cells)


def student_cell(cell, where: str = "cell"):
    """The student version of one cell (a new cell; the input is unchanged)."""
    cell = copy.deepcopy(cell)
    _check_marker_spelling(cell.source, where)
    stub = CODE_STUB if cell.cell_type == "code" else TEXT_STUB
    cell.source, solutions = _replace_regions(cell.source, BEGIN_SOLUTION, END_SOLUTION, stub, where)
    cell.source, _ = _replace_regions(cell.source, BEGIN_HIDDEN, END_HIDDEN, (), where)
    if cell.cell_type == "code":
        cell.outputs, cell.execution_count = [], None
        cell.metadata.pop("execution", None)
        if solutions:
            tags = list(cell.metadata.get("tags", []))
            cell.metadata["tags"] = tags + [EXERCISE_TAG] * (EXERCISE_TAG not in tags)
    return cell


def header_cell(source_name: str):
    """The note that opens every student notebook."""
    cell = nbformat.v4.new_markdown_cell(
        f"> **Student version** of `{source_name}`, generated by `python -m mamlbook.book.student`; "
        "do not edit it by hand.\n"
        ">\n"
        "> Each exercise at the end has a cell with `raise NotImplementedError()`: replace that "
        "line with your code, run the cell, then run the check cell below it. The check says what "
        "is wrong until your answer is right.")
    cell.id = HEADER_ID
    return cell


def make_student_notebook(nb, source_name: str):
    """The student version of an instructor notebook (``source_name`` is shown in its header)."""
    student = copy.deepcopy(nb)
    student.cells = [header_cell(source_name)] + [
        student_cell(c, f"{source_name}, cell {i}") for i, c in enumerate(nb.cells)]
    for i, cell in enumerate(student.cells):
        if "id" not in cell and (student.nbformat, student.nbformat_minor) >= (4, 5):
            cell.id = f"cell-{i}"                          # deterministic, unlike nbformat's random ids
    student.metadata["mamlbook"] = {"student_version_of": source_name}
    return student


def exercise_cells(nb) -> set[int]:
    """Indices of the cells allowed to fail: solution cells and every code cell after the first.

    Works on instructor notebooks (solution markers) and student ones (the ``exercise`` tag).
    """
    def is_exercise(cell):
        return cell.cell_type == "code" and (
            has_solution(cell) or EXERCISE_TAG in cell.metadata.get("tags", []))
    first = next((i for i, c in enumerate(nb.cells) if is_exercise(c)), None)
    if first is None:
        return set()
    return {i for i, c in enumerate(nb.cells) if i >= first and c.cell_type == "code"}


def _notebooks(src: Path) -> list[Path]:
    return sorted(Path(src).glob("*.ipynb"))


def student_notebooks(src: Path) -> dict[str, str]:
    """File name → exact text of the student version, for every notebook in ``src`` with exercises."""
    out = {}
    for path in _notebooks(src):
        nb = nbformat.read(path, as_version=4)
        if has_exercises(nb):
            student = make_student_notebook(nb, f"{Path(src).name}/{path.name}")
            out[path.name] = nbformat.writes(student) + "\n"
    return out


def _generated(path: Path) -> bool:
    try:
        return "mamlbook" in nbformat.read(path, as_version=4).metadata
    except Exception:  # noqa: BLE001 — not a notebook we wrote
        return False


def write_student_notebooks(src: Path | str = "notebooks", out: Path | str = "student") -> list[Path]:
    """Write the student versions into ``out``; delete student notebooks there whose source is gone.

    Only files this function generated (marked in their metadata) are ever deleted.
    """
    src, out = Path(src), Path(out)
    if not src.is_dir():
        raise FileNotFoundError(f"no notebook folder {src}: pass --src with the instructor notebooks")
    if src.resolve() == out.resolve():
        raise ValueError(f"--out {out} is the source folder: the student versions need a folder of their own")
    texts = student_notebooks(src)
    out.mkdir(parents=True, exist_ok=True)
    for stale in _notebooks(out):
        if stale.name not in texts and _generated(stale):
            stale.unlink()
    for name, text in texts.items():
        (out / name).write_text(text, encoding="utf-8")
    return [out / name for name in texts]


def outdated(src: Path | str = "notebooks", out: Path | str = "student") -> list[str]:
    """What differs between ``out`` and a fresh generation from ``src`` (empty when current)."""
    src, out = Path(src), Path(out)
    texts = student_notebooks(src)
    problems = []
    for name, text in texts.items():
        path = out / name
        if not path.exists():
            problems.append(f"{path} is missing")
        elif path.read_text(encoding="utf-8") != text:
            problems.append(f"{path} differs from its regeneration from {src / name}")
    problems += [f"{p} has no instructor notebook with exercises in {src}"
                 for p in _notebooks(out) if p.name not in texts and _generated(p)]
    return problems


@dataclass
class CellError:
    """An error raised by one cell of an executed notebook."""

    index: int
    ename: str
    evalue: str
    source: str

    def __str__(self) -> str:
        first = next((line for line in self.source.splitlines() if line.strip()), "")
        return f"cell {self.index} ({first[:60]!r}): {self.ename}: {self.evalue}"


def execute_notebook(path: Path | str, *, cwd: Path | str | None = None, env: dict | None = None,
                     timeout: int = 900):
    """Run every cell of a notebook with nbclient, continuing after errors.

    Args:
        cwd: the kernel's working directory (default: the notebook's folder).
        env: extra environment variables for the kernel (e.g. ``{"MAMLBOOK_FAST": "1"}``).
        timeout: seconds allowed per cell.
    Returns:
        (executed notebook, list of :class:`CellError`, in cell order).
    """
    from nbclient import NotebookClient  # imported here: only CI and instructors need it

    path = Path(path)
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(nb, timeout=timeout, allow_errors=True, kernel_name="python3",
                            resources={"metadata": {"path": str(cwd or path.parent)}})
    client.execute(env={**os.environ, **(env or {})})
    errors = [CellError(i, out.get("ename", ""), out.get("evalue", ""), cell.source)
              for i, cell in enumerate(nb.cells) if cell.cell_type == "code"
              for out in cell.outputs if out.output_type == "error"]
    return nb, errors


def student_run_problems(nb, errors: list[CellError]) -> list[str]:
    """Why an executed student notebook is not as it should be (empty when all is well).

    Every code cell must have run; every error must be a ``NotImplementedError`` raised from
    an exercise or check cell (see :func:`exercise_cells`); and every unsolved exercise must
    make its own cell or a check cell after it (before the next exercise) fail, or the check
    does not test the exercise.
    """
    allowed = exercise_cells(nb)
    problems = [f"cell {i} did not run" for i, c in enumerate(nb.cells)
                if c.cell_type == "code" and c.source.strip() and c.execution_count is None]
    starts = [i for i, c in enumerate(nb.cells)
              if c.cell_type == "code" and EXERCISE_TAG in c.metadata.get("tags", [])]
    failed = {err.index for err in errors}
    for start, end in zip(starts, starts[1:] + [len(nb.cells)]):
        if not failed & set(range(start, end)):
            problems.append(f"the exercise in cell {start} is unsolved, yet neither it nor a cell "
                            "after it failed: its check cell must call the exercise's code")
    for err in errors:
        if err.index not in allowed:
            problems.append(f"{err} — a cell before the exercises must run cleanly")
        elif err.ename != "NotImplementedError":
            hint = (" (a top-level solution leaves its names undefined: put the exercise inside a "
                    "function so the check cell fails with NotImplementedError)"
                    if err.ename == "NameError" else "")
            problems.append(f"{err} — exercise and check cells may fail only with "
                            f"NotImplementedError{hint}")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mamlbook.book.student", description=__doc__.split("\n")[0])
    parser.add_argument("--src", default="notebooks", help="instructor notebooks (default: notebooks)")
    parser.add_argument("--out", default="student", help="where the student versions go (default: student)")
    action = parser.add_mutually_exclusive_group()
    action.add_argument("--check", action="store_true", help="only report whether --out is up to date")
    action.add_argument("--execute", action="store_true",
                        help="run the student versions in --out (with MAMLBOOK_FAST=1) and report errors")
    args = parser.parse_args(argv)
    if args.check:
        problems = outdated(args.src, args.out)
        if problems:
            print(*problems, sep="\n")
            print(f"run `python -m mamlbook.book.student --src {args.src} --out {args.out}` to regenerate")
            return 1
        print(f"{args.out}/ is up to date with {args.src}/")
        return 0
    if args.execute:
        failed = 0
        for path in _notebooks(Path(args.out)):
            nb, errors = execute_notebook(path, cwd=Path(args.src).resolve(), env={"MAMLBOOK_FAST": "1"})
            problems = student_run_problems(nb, errors)
            failed += bool(problems)
            print(f"{path}: {len(errors)} NotImplementedError(s) in exercise cells" if not problems
                  else f"{path}:\n  " + "\n  ".join(problems))
        return 1 if failed else 0
    for path in write_student_notebooks(args.src, args.out):
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
