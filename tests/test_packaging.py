"""environment.yml (conda) and pyproject.toml (pip) must list the same packages."""

import re
from pathlib import Path

import tomllib
import yaml

REPO = Path(__file__).resolve().parents[1]
# pip name -> conda name where they differ
PIP_TO_CONDA = {"torch": "pytorch", "opentsne": "opentsne"}
# installed from PyPI inside the conda environment (the pip: section)
PIP_ONLY = {"mp-api", "moto", "chgnet"}


def _name(requirement: str) -> str:
    """Distribution name of a requirement string, lower case, extras dropped."""
    return re.split(r"[\s\[<>=!~;]", requirement.strip(), maxsplit=1)[0].lower()


def _pyproject() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())


def _environment() -> dict:
    return yaml.safe_load((REPO / "environment.yml").read_text())


def _conda_and_pip(env: dict) -> tuple[set[str], set[str]]:
    conda, pip = set(), set()
    for dep in env["dependencies"]:
        if isinstance(dep, dict):
            pip |= {_name(d) for d in dep["pip"] if not d.startswith("-")}
        else:
            conda.add(_name(dep))
    return conda - {"python", "pip"}, pip


def _extras(project: dict) -> list[str]:
    """Every optional dependency (dev, and the backbones' extras): conda users get them all."""
    return [d for extra in project["optional-dependencies"].values() for d in extra]


def test_environment_lists_every_pyproject_dependency_and_extra():
    project = _pyproject()["project"]
    wanted = {_name(d) for d in project["dependencies"]} | {_name(d) for d in _extras(project)}
    conda, pip = _conda_and_pip(_environment())
    expected_conda = {PIP_TO_CONDA.get(n, n) for n in wanted if n not in PIP_ONLY}
    assert conda == expected_conda
    assert pip == {n for n in wanted if n in PIP_ONLY}


def test_pip_only_packages_keep_their_extras_in_environment():
    pip_section = next(d["pip"] for d in _environment()["dependencies"] if isinstance(d, dict))
    assert any(d.replace(" ", "").startswith("moto[server]") for d in pip_section)
    assert "-e ." in [d.strip() for d in pip_section]


def test_version_bounds_agree_between_the_two_files():
    project = _pyproject()["project"]
    reqs = list(project["dependencies"]) + _extras(project)
    bounds = {_name(r): re.sub(r"^[^<>=!~]*", "", r.split(";")[0]).replace(" ", "") for r in reqs}
    env = _environment()
    flat = [d for d in env["dependencies"] if isinstance(d, str)]
    flat += next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    for dep in flat:
        name = _name(dep)
        if name in ("python", "pip", "-e"):
            continue
        pip_name = {v: k for k, v in PIP_TO_CONDA.items()}.get(name, name)
        assert re.sub(r"^[^<>=!~]*", "", dep).replace(" ", "") == bounds[pip_name], dep


def test_profiles_ship_as_package_data():
    data = _pyproject()["tool"]["setuptools"]["package-data"]["cgcnn"]
    assert "profiles/*.json" in data
    for name in ("fixture", "default", "paper"):
        assert (REPO / "cgcnn" / "profiles" / f"{name}.json").is_file()


def test_papermill_and_ipykernel_are_runtime_dependencies():
    names = {_name(d) for d in _pyproject()["project"]["dependencies"]}
    assert {"papermill", "ipykernel", "nbformat", "opentsne", "matplotlib"} <= names


def test_ci_runs_exactly_the_readme_test_command():
    readme = (REPO / "README.md").read_text().splitlines()
    commands = [line for line in readme if line.startswith("python3 -m venv .venv") and line.endswith("-m pytest")]
    assert len(commands) == 1
    ci = (REPO / ".ci" / "run").read_text()
    assert ci.startswith("#!/usr/bin/env bash")
    assert "set -euo pipefail" in ci
    assert commands[0] + " || status=$?" in ci.splitlines()
    assert " && .venv/bin/ruff check . && .venv/bin/ruff format --check . && " in commands[0]  # lint fails CI
    assert 'exit "${status}"' in ci  # pytest's exit code (5 = no tests) is passed on, never swallowed


def test_readme_pipeline_command_uses_the_same_install():
    readme = (REPO / "README.md").read_text().splitlines()
    setup = [line for line in readme if line.startswith("python3 -m venv .venv")]
    assert len(setup) == 2
    assert setup[0].endswith("scripts/run_pipeline.py")
    assert setup[0].split(" && ")[:3] == setup[1].split(" && ")[:3]  # venv, torch, the package with its dev extra


def test_ci_runs_the_readme_pipeline_command_then_a_notebook_in_jupyterlab():
    """'Open them in Jupyter' works after the README's first command: CI runs that command
    verbatim, then `jupyter lab --version` and one notebook with its default parameters."""
    readme = (REPO / "README.md").read_text().splitlines()
    pipeline = next(line for line in readme if line.startswith("python3 -m venv .venv"))
    ci = [line.strip() for line in (REPO / ".ci" / "run").read_text().splitlines()]
    first = ci.index(pipeline + " || status=$?")
    jupyter = next(k for k, line in enumerate(ci) if ".venv/bin/jupyter lab --version && " in line)
    tests = next(k for k, line in enumerate(ci) if line.endswith("-m pytest || status=$?"))
    assert first < jupyter < tests
    assert ".venv/bin/jupyter nbconvert --to notebook --execute" in ci[jupyter] and ci[jupyter].endswith(
        ".ipynb || status=$?"
    )
    assert "jupyterlab" in {_name(d) for d in _pyproject()["project"]["optional-dependencies"]["dev"]}
