"""environment.yml (conda) and pyproject.toml (pip) must name the same packages: the dependencies and
the `test` extra (GPU machines run the tests too)."""

import re
import tomllib

import yaml

from conftest import REPO

CONDA_NAMES = {"pytorch": "torch"}  # conda's name -> PyPI's
CONDA_ONLY = {"python", "pip", "pytorch-cuda"}


def name(requirement: str) -> str:
    return re.split(r"[<>=!~\[ ;]", requirement.strip(), maxsplit=1)[0].lower()


def test_environment_yml_and_pyproject_name_the_same_packages():
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    pip_names = {name(r) for r in pyproject["project"]["dependencies"] + pyproject["project"]["optional-dependencies"]["test"]}
    env = yaml.safe_load((REPO / "environment.yml").read_text())
    conda = set()
    for dep in env["dependencies"]:
        if isinstance(dep, dict):
            conda |= {name(r) for r in dep["pip"] if not r.startswith("-e")}
        else:
            conda.add(CONDA_NAMES.get(name(dep), name(dep)))
    assert conda - CONDA_ONLY == pip_names
