"""environment.yml (conda) and pyproject.toml ask for the same packages at the same lower bounds."""
import re
from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parents[1]
CONDA_NAMES = {"pytorch": "torch"}  # conda-forge's name → PyPI's


def pyproject_requirements():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = project["dependencies"] + project["optional-dependencies"]["dev"]
    return {re.split("[<>=]", r)[0]: r[len(re.split("[<>=]", r)[0]):] for r in reqs}


def conda_requirements():
    out = {}
    for line in (ROOT / "environment.yml").read_text().splitlines():
        m = re.match(r"\s+- ([a-z][\w-]*)(>=[\d.]+)$", line)
        if m and m.group(1) != "python":
            out[CONDA_NAMES.get(m.group(1), m.group(1))] = m.group(2)
    return out


def test_environment_yml_lists_the_same_packages_and_bounds_as_pyproject():
    assert conda_requirements() == pyproject_requirements()


def test_pyproject_gives_lower_bounds_only():
    assert all(spec.startswith(">=") for spec in pyproject_requirements().values())
