"""The package's layout rules, read from its import statements (issue "one house").

- no import circles between mamlbook's modules;
- the science (kernel, learners, loop, data, recipes) never imports the entry points (``cli``), the
  measurements (``measure``), the book helpers (``book``) or ``plotting``;
- ``algorithms`` never imports ``data`` (a learner knows tensors, not files);
- no module imports another module's ``_private`` name.
"""
import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "mamlbook"
NOT_SCIENCE = ("mamlbook.cli", "mamlbook.measure", "mamlbook.book", "mamlbook.plotting", "mamlbook.compare",
               "mamlbook.checks", "mamlbook.report", "mamlbook.__main__", "mamlbook._moved")
ALIASES = {"anil", "metasgd", "mamlpp", "mamlpp_bn", "reptile", "protonet", "bench", "gpu_check", "rnn_check",
           "amp_check", "precision_check", "student", "colab", "checkpoint", "runinfo", "data.bench"}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> list[tuple[str, list[str]]]:
    """(imported module, names) for every import in ``path``, relative imports resolved."""
    here = module_name(path).split(".")
    package = here if path.name == "__init__.py" else here[:-1]
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out += [(a.name, []) for a in node.names if a.name.startswith("mamlbook")]
        elif isinstance(node, ast.ImportFrom):
            base = package[:len(package) - node.level + 1] if node.level else []
            target = ".".join(base + ([node.module] if node.module else []))
            if target.startswith("mamlbook"):
                names = [a.name for a in node.names]
                submodules = [f"{target}.{n}" for n in names
                              if (PACKAGE.parent / f"{target}.{n}".replace(".", "/")).with_suffix(".py").exists()]
                out += [(m, []) for m in submodules] or [(target, names)]
    return out


MODULES = {module_name(p): p for p in PACKAGE.rglob("*.py")
           if module_name(p).removeprefix("mamlbook.") not in ALIASES}
GRAPH = {name: sorted({m for m, _ in imports(path) if m in MODULES and m != name}) for name, path in MODULES.items()}


def test_there_are_no_import_circles():
    state, cycles = {}, []

    def visit(node, stack):
        state[node] = "open"
        for nxt in GRAPH[node]:
            if state.get(nxt) == "open":
                cycles.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt, stack + [nxt])
        state[node] = "done"
    for name in GRAPH:
        if name not in state:
            visit(name, [name])
    assert cycles == []


@pytest.mark.parametrize("name", sorted(n for n in GRAPH if not n.startswith(NOT_SCIENCE)))
def test_the_science_never_imports_cli_measure_book_or_plotting(name):
    assert [m for m in GRAPH[name] if m.startswith(NOT_SCIENCE[:4])] == []


def test_algorithms_never_import_data():
    bad = {n: [m for m in deps if m.startswith("mamlbook.data")] for n, deps in GRAPH.items()
           if n.startswith("mamlbook.algorithms")}
    assert {n: d for n, d in bad.items() if d} == {}


def test_no_module_imports_another_modules_private_names():
    found = [(name, target, n) for name, path in MODULES.items() for target, names in imports(path)
             for n in names if n.startswith("_") and not n.startswith("__") and target != name]
    assert found == []


def test_every_module_declares_its_public_names():
    missing = [n for n, p in MODULES.items() if p.name != "__main__.py" and p.read_text().strip()
               and "__all__" not in p.read_text()]
    assert missing == []
