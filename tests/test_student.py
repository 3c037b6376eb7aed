"""Student versions: solutions and hidden tests out, generated reproducibly, failing only in exercises."""
from pathlib import Path

import nbformat
import pytest

from mamlbook.book.student import (
    CODE_STUB,
    MarkerError,
    execute_notebook,
    exercise_cells,
    has_exercises,
    main,
    make_student_notebook,
    outdated,
    student_run_problems,
    write_student_notebooks,
)

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))

EXERCISE = '''\
def double(x):
    """Twice x."""
    ### BEGIN SOLUTION
    return 2 * x
    ### END SOLUTION'''
CHECK = "assert double(3) == 6\nprint('double: right')"


def notebook(*cells):
    """A notebook from ("code" | "markdown", source) pairs, with fixed cell ids."""
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    make = {"code": nbformat.v4.new_code_cell, "markdown": nbformat.v4.new_markdown_cell}
    nb.cells = [make[kind](source, id=f"cell{i}") for i, (kind, source) in enumerate(cells)]
    return nb


def student_source(source, kind="code"):
    """The student version of a single cell's source (after the generated header cell)."""
    return make_student_notebook(notebook((kind, source)), "nb.ipynb").cells[1].source


def write(folder, name, nb):
    folder.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, folder / name)
    return folder / name


# ---------------------------------------------------------------- one cell
def test_a_solution_region_becomes_nbgraders_stub_at_the_markers_indentation():
    assert student_source(EXERCISE) == ('def double(x):\n    """Twice x."""\n'
                                        "    # YOUR CODE HERE\n    raise NotImplementedError()")


def test_a_top_level_solution_region_becomes_a_top_level_stub():
    source = "### BEGIN SOLUTION\nanswer = 42\n### END SOLUTION\nprint(answer)"
    assert student_source(source) == "\n".join(CODE_STUB) + "\nprint(answer)"


def test_hidden_tests_are_removed_and_visible_ones_kept():
    source = "assert double(1) == 2\n### BEGIN HIDDEN TESTS\nassert double(-4) == -8\n### END HIDDEN TESTS"
    assert student_source(source) == "assert double(1) == 2"


def test_a_markdown_solution_becomes_your_answer_here():
    source = "Why?\n\n### BEGIN SOLUTION\nBecause the phase covers half a period.\n### END SOLUTION"
    assert student_source(source, "markdown") == "Why?\n\nYOUR ANSWER HERE"


def test_outputs_and_execution_counts_are_stripped():
    nb = notebook(("code", "print(1)"))
    nb.cells[0].outputs = [nbformat.v4.new_output("stream", text="1\n")]
    nb.cells[0].execution_count = 3
    cell = make_student_notebook(nb, "nb.ipynb").cells[1]
    assert cell.outputs == [] and cell.execution_count is None


def test_solution_cells_are_tagged_exercise_and_others_are_not():
    student = make_student_notebook(notebook(("code", "x = 1"), ("code", EXERCISE)), "nb.ipynb")
    assert [c.metadata.get("tags", []) for c in student.cells[1:]] == [[], ["exercise"]]


def test_the_instructor_notebook_is_left_unchanged():
    nb = notebook(("code", EXERCISE))
    make_student_notebook(nb, "nb.ipynb")
    assert nb.cells[0].source == EXERCISE


def test_the_student_notebook_opens_with_a_note_naming_its_source():
    note = make_student_notebook(notebook(("code", EXERCISE)), "notebooks/02.ipynb").cells[0]
    assert note.cell_type == "markdown"
    assert "Student version** of `notebooks/02.ipynb`" in note.source
    assert "python -m mamlbook.book.student" in note.source


@pytest.mark.parametrize("source, message", [
    ("### BEGIN SOLUTION\nx = 1", "never closed"),
    ("### BEGIN SOLUTION\n### BEGIN SOLUTION\n### END SOLUTION", "line 2: '### BEGIN SOLUTION' inside an open region"),
    ("x = 1\n### END SOLUTION", "line 2: '### END SOLUTION' without a matching"),
    ("## BEGIN SOLUTION\nx = 1\n## END SOLUTION", "line 1: '## BEGIN SOLUTION' looks like a marker"),
    ("### BEGIN SOLUTION:\nx = 1\n### END SOLUTION", "line 1: '### BEGIN SOLUTION:' looks like a marker"),
    ("### BEGIN HIDDEN TESTS\nassert True", "never closed"),
], ids=["unclosed", "nested", "stray-end", "two-hashes", "colon", "unclosed-hidden"])
def test_a_malformed_marker_is_refused_with_its_line(source, message):
    # A marker that is silently ignored would hand the solution to every student.
    with pytest.raises(MarkerError, match=message):
        student_source(source)


# ---------------------------------------------------------------- exercise cells
def test_exercise_cells_are_the_solution_cells_and_every_code_cell_after_the_first():
    nb = notebook(("code", "x = 1"), ("markdown", "Exercise"), ("code", EXERCISE),
                  ("code", CHECK), ("markdown", "More"), ("code", "y = 2"))
    assert exercise_cells(nb) == {2, 3, 5}


def test_exercise_cells_are_found_in_the_student_version_too():
    nb = notebook(("code", "x = 1"), ("code", EXERCISE), ("code", CHECK))
    assert exercise_cells(make_student_notebook(nb, "nb.ipynb")) == {2, 3}   # after the header


def test_a_notebook_without_solutions_has_no_exercise_cells():
    assert exercise_cells(notebook(("code", "x = 1"))) == set() and not has_exercises(notebook())


# ---------------------------------------------------------------- folders
def test_generation_is_deterministic(tmp_path):
    write(tmp_path / "notebooks", "ch.ipynb", notebook(("code", EXERCISE), ("code", CHECK)))
    first = write_student_notebooks(tmp_path / "notebooks", tmp_path / "a")[0].read_bytes()
    second = write_student_notebooks(tmp_path / "notebooks", tmp_path / "b")[0].read_bytes()
    assert first == second and b"return 2 * x" not in first


def test_notebooks_without_exercises_get_no_student_version(tmp_path):
    write(tmp_path / "notebooks", "with.ipynb", notebook(("code", EXERCISE)))
    write(tmp_path / "notebooks", "without.ipynb", notebook(("code", "x = 1")))
    written = write_student_notebooks(tmp_path / "notebooks", tmp_path / "student")
    assert [p.name for p in written] == ["with.ipynb"]
    assert sorted(p.name for p in (tmp_path / "student").iterdir()) == ["with.ipynb"]


def test_a_stale_student_notebook_is_deleted_and_foreign_files_are_kept(tmp_path):
    src, out = tmp_path / "notebooks", tmp_path / "student"
    write(src, "old.ipynb", notebook(("code", EXERCISE)))
    write_student_notebooks(src, out)
    (src / "old.ipynb").rename(src / "new.ipynb")
    write(out, "mine.ipynb", notebook(("code", "x = 1")))               # not generated: kept
    write_student_notebooks(src, out)
    assert sorted(p.name for p in out.iterdir()) == ["mine.ipynb", "new.ipynb"]


def test_outdated_is_empty_when_current_and_names_every_difference(tmp_path):
    src, out = tmp_path / "notebooks", tmp_path / "student"
    write(src, "a.ipynb", notebook(("code", EXERCISE)))
    write(src, "b.ipynb", notebook(("code", EXERCISE)))
    write_student_notebooks(src, out)
    assert outdated(src, out) == []
    write(src, "a.ipynb", notebook(("code", EXERCISE), ("code", CHECK)))   # instructor edits a
    (out / "b.ipynb").unlink()
    assert outdated(src, out) == [f"{out / 'a.ipynb'} differs from its regeneration from {src / 'a.ipynb'}",
                                  f"{out / 'b.ipynb'} is missing"]


def test_the_output_folder_must_not_be_the_source_folder(tmp_path):
    write(tmp_path, "ch.ipynb", notebook(("code", EXERCISE)))
    with pytest.raises(ValueError, match="folder of their own"):
        write_student_notebooks(tmp_path, tmp_path)


def test_the_command_writes_then_checks(tmp_path, capsys):
    src, out = tmp_path / "notebooks", tmp_path / "student"
    write(src, "ch.ipynb", notebook(("code", EXERCISE)))
    assert main(["--src", str(src), "--out", str(out), "--check"]) == 1
    assert main(["--src", str(src), "--out", str(out)]) == 0
    assert main(["--src", str(src), "--out", str(out), "--check"]) == 0
    assert "is up to date" in capsys.readouterr().out


# ---------------------------------------------------------------- executing student versions
def run_student(tmp_path, *cells):
    src = tmp_path / "notebooks"
    write(src, "ch.ipynb", notebook(*cells))
    path = write_student_notebooks(src, tmp_path / "student")[0]
    return execute_notebook(path, timeout=60)


def test_a_student_version_fails_only_with_not_implemented_error_in_its_exercises(tmp_path):
    nb, errors = run_student(tmp_path, ("code", "import math"), ("code", EXERCISE), ("code", CHECK))
    assert [(e.index, e.ename) for e in errors] == [(3, "NotImplementedError")]   # the check cell
    assert student_run_problems(nb, errors) == []


def test_an_error_before_the_exercises_is_a_problem(tmp_path):
    nb, errors = run_student(tmp_path, ("code", "1 / 0"), ("code", EXERCISE), ("code", CHECK))
    problems = student_run_problems(nb, errors)
    assert len(problems) == 1
    assert problems[0].startswith("cell 1 ('1 / 0'): ZeroDivisionError") and "run cleanly" in problems[0]


def test_a_top_level_solution_breaks_its_check_with_a_name_error_and_says_how_to_fix_it(tmp_path):
    nb, errors = run_student(tmp_path, ("code", "### BEGIN SOLUTION\nanswer = 42\n### END SOLUTION"),
                             ("code", "assert answer == 42"))
    problems = student_run_problems(nb, errors)
    assert [(e.index, e.ename) for e in errors] == [(1, "NotImplementedError"), (2, "NameError")]
    assert len(problems) == 1 and "put the exercise inside a function" in problems[0]


def test_an_exercise_whose_check_never_calls_it_is_a_problem(tmp_path):
    nb, errors = run_student(tmp_path, ("code", EXERCISE), ("code", "print('nothing checked')"))
    assert student_run_problems(nb, errors) == [
        "the exercise in cell 1 is unsolved, yet neither it nor a cell after it failed: its check "
        "cell must call the exercise's code"]


# ---------------------------------------------------------------- the book's notebooks
@pytest.fixture(scope="module")
def regenerated(tmp_path_factory):
    """The student versions of notebooks/, generated afresh (never the committed copies)."""
    out = tmp_path_factory.mktemp("student")
    write_student_notebooks(ROOT / "notebooks", out)
    return out


def skip_without_exercises(ipynb):
    if not has_exercises(nbformat.read(ipynb, as_version=4)):
        pytest.skip(f"{ipynb.name} has no exercises, so no student version")


@pytest.mark.parametrize("ipynb", NOTEBOOKS, ids=lambda p: p.name)
def test_committed_student_version_is_current(ipynb, regenerated):
    skip_without_exercises(ipynb)
    committed = ROOT / "student" / ipynb.name
    fix = "run `python -m mamlbook.book.student` and commit student/"
    assert committed.exists(), f"student/{ipynb.name} is missing: {fix}"
    assert committed.read_bytes() == (regenerated / ipynb.name).read_bytes(), (
        f"student/{ipynb.name} is not what notebooks/{ipynb.name} generates (never edit it by hand): {fix}")


def test_student_folder_holds_no_notebook_without_an_instructor_version():
    stale = [p for p in outdated(ROOT / "notebooks", ROOT / "student") if "has no instructor" in p]
    assert stale == [], "run `python -m mamlbook.book.student` to delete them"


@pytest.mark.parametrize("ipynb", NOTEBOOKS, ids=lambda p: p.name)
def test_student_version_runs_and_fails_only_in_its_exercises(ipynb, regenerated):
    skip_without_exercises(ipynb)
    # Run from notebooks/ (student/ sits beside it, so relative paths resolve the same way).
    nb, errors = execute_notebook(regenerated / ipynb.name, cwd=ROOT / "notebooks",
                                  env={"MAMLBOOK_FAST": "1"})
    problems = student_run_problems(nb, errors)
    assert problems == [], f"student version of {ipynb.name}:\n" + "\n".join(problems)
