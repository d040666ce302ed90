"""environment.yml (conda) and pyproject.toml (pip) must name the same packages: the dependencies and
the `test` extra (GPU machines run the tests too)."""

import re
import tomllib

import yaml

from conftest import REPO

CONDA_NAMES = {"pytorch-gpu": "torch", "pytorch": "torch"}  # conda's name -> PyPI's
CONDA_ONLY = {"python", "pip", "cuda-version"}


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


def test_environment_yml_takes_cuda_pytorch_from_conda_forge_only():
    """The `pytorch` channel (and `nvidia` beside it, `pytorch-cuda` from it) stopped publishing
    after PyTorch 2.5 (pytorch/pytorch#138506): an environment from them is stuck at 2.5. Snakemake
    is on bioconda only, which Snakemake's docs put after conda-forge (strict priority), so
    PyTorch and everything else still come from conda-forge."""
    env = yaml.safe_load((REPO / "environment.yml").read_text())
    assert env["channels"] == ["conda-forge", "bioconda", "nodefaults"], env["channels"]
    specs = [dep for dep in env["dependencies"] if isinstance(dep, str)]
    assert not [s for s in specs if "::" in s], "a package from another channel (channel::name)"
    names = {name(s) for s in specs}
    assert "pytorch-cuda" not in names and not names & {"cudatoolkit", "cpuonly"}
    # conda-forge's CUDA build: pytorch-gpu, or pytorch with a cuda* build string
    assert "pytorch-gpu" in names or any(re.match(r"pytorch[ =].*=cuda", s) for s in specs), specs


def test_pyproject_installs_every_package_of_ocbench():
    """A non-editable install (`pip install .`, a wheel for a GPU machine) ships only the packages
    pyproject lists: a subpackage left out (ocbench.bench was) breaks `ocbench bench` and preflight."""
    from setuptools import find_packages

    listed = set(tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    assert set(find_packages(str(REPO), include=["ocbench", "ocbench.*"])) == listed
