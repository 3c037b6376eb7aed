"""Binder's files parse, ask for a CPU PyTorch, and list the same dependencies as pyproject.toml."""
import os
import re
import shlex
import subprocess
from pathlib import Path

import yaml
from test_environment import CONDA_NAMES, conda_requirements, pyproject_requirements

ROOT = Path(__file__).resolve().parents[1]
BINDER = ROOT / "binder"


def binder_specs():
    """name → (lower bound, build string or None) from binder/environment.yml, python left out."""
    out = {}
    for spec in yaml.safe_load((BINDER / "environment.yml").read_text())["dependencies"]:
        m = re.fullmatch(r"([a-z][\w-]*)\s*(>=[\d.]+)(?:[ =](\S+))?", spec) if isinstance(spec, str) else None
        if m and m.group(1) != "python":
            out[CONDA_NAMES.get(m.group(1), m.group(1))] = (m.group(2), m.group(3))
    return out


def test_environment_yml_parses_with_conda_forge_only():
    env = yaml.safe_load((BINDER / "environment.yml").read_text())
    assert env["channels"] == ["conda-forge"]
    assert all(isinstance(d, str) for d in env["dependencies"]), "the package comes from postBuild, not a pip: list"


def test_binder_lists_the_same_packages_and_bounds_as_pyproject():
    assert {name: bound for name, (bound, _) in binder_specs().items()} == pyproject_requirements()


def test_binder_lists_the_same_packages_and_bounds_as_the_top_level_environment():
    assert {name: bound for name, (bound, _) in binder_specs().items()} == conda_requirements()


def test_binder_asks_for_a_cpu_build_of_pytorch():
    # Binder has no GPU and 1-2 GB of memory: a CUDA build would not fit.
    assert binder_specs()["torch"][1] == "cpu_*"


def test_post_build_is_an_executable_bash_script_that_parses():
    assert os.access(BINDER / "postBuild", os.X_OK)
    subprocess.run(["bash", "-n", str(BINDER / "postBuild")], check=True)


def test_post_build_installs_the_package_without_dependencies():
    commands = [shlex.split(line) for line in (BINDER / "postBuild").read_text().splitlines()
                if line.strip() and not line.lstrip().startswith(("#", "set "))]
    assert commands == [["pip", "install", "--no-deps", "-e", "."]]


def test_start_turns_fast_mode_on_unless_the_user_chose(tmp_path):
    assert os.access(BINDER / "start", os.X_OK)
    env = {k: v for k, v in os.environ.items() if k != "MAMLBOOK_FAST"}
    default = subprocess.run([str(BINDER / "start"), "printenv", "MAMLBOOK_FAST"], env=env,
                             capture_output=True, text=True, check=True).stdout
    chosen = subprocess.run([str(BINDER / "start"), "printenv", "MAMLBOOK_FAST"],
                            env={**env, "MAMLBOOK_FAST": "0"}, capture_output=True, text=True,
                            check=True).stdout
    assert (default, chosen) == ("1\n", "0\n")
