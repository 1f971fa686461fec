"""The course as Colab gets it: a release install, one notebook per lesson, a wheel that works alone."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import textwrap
from pathlib import Path

import utils

import notebooks as nbtools

ROOT = nbtools.notebooks_dir().parent
WHEEL_LESSONS = ("01_mri_exploration", "06_whole_scan_prediction")


def test_setup_cell_installs_the_release_of_the_notebook():
    tag = f"v{utils.__version__}"
    assert nbtools.course_ref() == tag
    for lesson in nbtools.lessons():
        for path in (lesson.learner, lesson.solution):
            setup = "".join(json.loads(path.read_text())["cells"][1]["source"])
            assert f'RELEASE = "{tag}"' in setup, path
            assert f'f"git+https://github.com/{nbtools.COURSE_REPO}@{{RELEASE}}"' in setup, path


def test_readme_badges_follow_course_repo():
    readme = (ROOT / "README.md").read_text()
    badges = re.findall(r"https://colab\.research\.google\.com/github/([\w.-]+/[\w.-]+)/blob/", readme)
    assert len(badges) >= len(nbtools.lessons())
    assert set(badges) == {nbtools.COURSE_REPO}
    assert "COURSE_REPO" in readme, "the README tells a fork where the repository is set"


def test_lesson_sources_do_not_open_as_notebooks():
    from jupytext.config import find_jupytext_configuration_file, load_jupytext_configuration_file

    for folder in (ROOT / "notebooks", ROOT / "notebooks" / "solutions"):
        config_file = find_jupytext_configuration_file(str(folder))
        assert config_file is not None and Path(config_file).parent == ROOT / "notebooks"
        assert list(load_jupytext_configuration_file(config_file).notebook_extensions) == ["ipynb"]


def _fresh_env(tmp_path: Path) -> tuple[Path, dict]:
    """A new virtual environment holding only the course wheel; the dependencies come from this one."""
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, src / name)
    shutil.copytree(ROOT / "utils", src / "utils", ignore=shutil.ignore_patterns("__pycache__"))
    dist = tmp_path / "dist"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(dist), str(src)],
        check=True,
        cwd=tmp_path,
    )
    wheel = next(dist.glob("brats_course-*.whl"))
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps", "--no-index", str(wheel)],
        check=True,
    )
    site = Path(
        subprocess.run(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
    )
    # Reuse the installed dependencies: their folder goes on the path after the venv's own
    # site-packages (a plain path line: an editable install of the course there stays inactive).
    paths = dict.fromkeys(sysconfig.get_paths()[key] for key in ("purelib", "platlib"))
    (site / "_course_dependencies.pth").write_text("".join(f"{p}\n" for p in paths))
    kernels = venv / "share" / "jupyter" / "kernels" / "course-wheel"
    kernels.mkdir(parents=True)
    (kernels / "kernel.json").write_text(
        json.dumps(
            {
                "argv": [str(python), "-m", "ipykernel_launcher", "-f", "{connection_file}"],
                "display_name": "course wheel",
                "language": "python",
            }
        )
    )
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "COURSE_DATA_DIR", "VIRTUAL_ENV")}
    env.update(COURSE_MODE="ci", JUPYTER_PATH=str(venv / "share" / "jupyter"))
    return python, env


RUNNER = textwrap.dedent("""
    import sys
    import nbformat
    from nbclient import NotebookClient

    path, workdir = sys.argv[1], sys.argv[2]
    nb = nbformat.read(path, as_version=4)
    nb.cells.append(nbformat.v4.new_code_cell("import sys, utils; print('COURSE', utils.__file__, sys.prefix)"))
    NotebookClient(nb, timeout=900, kernel_name="course-wheel", resources={"metadata": {"path": workdir}}).execute()
    nbformat.write(nb, path)
    print(nb.cells[-1].outputs[0]["text"].strip())
""")


def test_wheel_install_runs_lessons_outside_the_checkout(tmp_path):
    python, env = _fresh_env(tmp_path)
    workdir = tmp_path / "colab"  # a folder outside the checkout, as /content on Colab
    workdir.mkdir()
    probe = subprocess.run(
        [str(python), "-c", "import utils; print(utils.__file__)"],
        cwd=workdir,
        env=env,
        check=True,
        capture_output=True,
        text=True,
    )
    assert Path(probe.stdout.strip()).is_relative_to(tmp_path / "venv"), probe.stdout
    runner = tmp_path / "run_notebook.py"
    runner.write_text(RUNNER)
    for name in WHEEL_LESSONS:
        lesson = next(lesson for lesson in nbtools.lessons() if lesson.name == name)
        notebook = workdir / lesson.solution.name
        shutil.copy2(lesson.solution, notebook)
        done = subprocess.run(
            [str(python), str(runner), str(notebook), str(workdir)],
            cwd=workdir,
            env=env,
            capture_output=True,
            text=True,
        )
        assert done.returncode == 0, f"{name} failed from the wheel:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
        assert f"COURSE {tmp_path / 'venv'}" in done.stdout, done.stdout
        outputs = [o for cell in json.loads(notebook.read_text())["cells"] for o in cell.get("outputs", [])]
        errors = [o for o in outputs if o.get("output_type") == "error"]
        assert not errors, f"{name}: {errors[0]['ename']}: {errors[0]['evalue']}" if errors else ""
    assert (workdir / "runs" / "ci" / "best.keras").is_file(), "lesson 06 trains into ./runs outside a checkout"
