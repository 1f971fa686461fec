"""One dependency list, one test command, and CI calling exactly that command."""

import re
from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parent.parent


def _pyproject():
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_environment_yml_installs_the_pyproject_set():
    text = (ROOT / "environment.yml").read_text()
    lines = [line.strip() for line in text.splitlines() if line.strip().startswith("- ")]
    conda = [line[2:].strip() for line in lines if not line.startswith("- -e") and line != "- pip:"]
    assert conda == ["conda-forge", "python=3.11", "pip"], (
        "environment.yml must not list its own dependencies; pyproject.toml is the one list"
    )
    pip_lines = re.findall(r"^\s+- (-e .*)$", text, re.MULTILINE)
    assert pip_lines == ["-e .[dev,lab]"]
    extras = set(_pyproject()["project"]["optional-dependencies"])
    assert extras == {"dev", "lab"}, "environment.yml installs every extra"


def test_dependencies_cover_the_stack():
    deps = {re.split(r"[<>=!\[ ;]", d)[0].lower() for d in _pyproject()["project"]["dependencies"]}
    for name in (
        "tensorflow",
        "keras",
        "nibabel",
        "nilearn",
        "numpy",
        "scipy",
        "pandas",
        "matplotlib",
        "ipywidgets",
        "jupytext",
        "tqdm",
    ):
        assert name in deps
    dev = " ".join(_pyproject()["project"]["optional-dependencies"]["dev"])
    assert "nbval" in dev and "pytest" in dev


def test_readme_test_command_is_what_ci_runs():
    readme = (ROOT / "README.md").read_text()
    assert "make test" in readme and "make demo" in readme
    ci = (ROOT / ".ci" / "run").read_text()
    assert re.search(r"^make test$", ci, re.MULTILINE)
    makefile = (ROOT / "Makefile").read_text()
    test_recipe = makefile.split("\ntest:")[1].split("\n\n")[0]
    assert "pytest tests notebooks" in test_recipe and "--nbval-lax" in test_recipe
    assert "COURSE_MODE=ci" in test_recipe
    assert "ruff check ." in test_recipe and "ruff format --check ." in test_recipe
    assert 'pip install --quiet -e ".[dev]"' in makefile


def test_tensorflow_range_admits_keras_3():
    dep = next(d for d in _pyproject()["project"]["dependencies"] if d.startswith("tensorflow"))
    low = re.search(r">=\s*2\.(\d+)", dep)
    assert low and int(low.group(1)) >= 16, "TensorFlow 2.16+ ships Keras 3"
