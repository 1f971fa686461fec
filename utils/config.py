"""The one knob that sizes the course, and where its data lives.

Every lesson reads its sizes from :func:`get_settings`, which looks at one
environment variable, ``COURSE_MODE``:

* ``ci``  - a tiny phantom (64x64x40) and a handful of steps, so the test suite
  executes every notebook in minutes on two CPU cores;
* ``cpu`` - the default: full-size (240x240x155) phantom cases, a small model
  and a training budget a laptop finishes in about ten minutes;
* ``gpu`` - the assignment-size model and the real MSD data when it is there.

Nothing rewrites notebook text: the same cells run in every mode.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

MODE_ENV = "COURSE_MODE"
DATA_ENV = "COURSE_DATA_DIR"
MODES = ("ci", "cpu", "gpu")
DEFAULT_MODE = "cpu"

BRATS_SHAPE = (240, 240, 155)
TINY_SHAPE = (64, 64, 40)


@dataclass(frozen=True)
class Settings:
    """Sizes for one course mode.

    Attributes:
        mode: ``"ci"``, ``"cpu"`` or ``"gpu"``.
        phantom_shape: grid of the phantom volumes ``(x, y, z)``.
        phantom_train: number of labelled phantom cases (``imagesTr``).
        phantom_test: number of unlabelled phantom cases (``imagesTs``).
        phantom_dir_name: folder under the data root that holds this phantom.
        patch_shape: default training patch ``(x, y, z)``.
    """

    mode: str
    phantom_shape: tuple[int, int, int]
    phantom_train: int
    phantom_test: int
    phantom_dir_name: str
    patch_shape: tuple[int, int, int]


_SETTINGS = {
    "ci": Settings("ci", TINY_SHAPE, 6, 1, "phantom-ci", (32, 32, 16)),
    "cpu": Settings("cpu", BRATS_SHAPE, 12, 2, "phantom", (160, 160, 16)),
    "gpu": Settings("gpu", BRATS_SHAPE, 24, 2, "phantom", (160, 160, 16)),
}


def course_mode() -> str:
    """Return the course mode named by ``$COURSE_MODE`` (default ``cpu``).

    Raises:
        ValueError: if the variable holds something other than ci/cpu/gpu.
    """
    mode = os.environ.get(MODE_ENV, DEFAULT_MODE).strip().lower() or DEFAULT_MODE
    if mode not in MODES:
        raise ValueError(
            f"{MODE_ENV} must be one of {', '.join(MODES)}; found {mode!r}."
        )
    return mode


def get_settings(mode: str | None = None) -> Settings:
    """Return the sizes for ``mode`` (default: the current :func:`course_mode`)."""
    mode = course_mode() if mode is None else mode
    if mode not in _SETTINGS:
        raise ValueError(f"mode must be one of {', '.join(MODES)}; found {mode!r}.")
    return _SETTINGS[mode]


def repo_root(start: Path | None = None) -> Path | None:
    """Return the course checkout that contains ``start`` (default: cwd), if any."""
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / "pyproject.toml").is_file() and (folder / "utils").is_dir():
            return folder
    return None


def project_path(path: Path | str) -> Path:
    """Resolve a relative path (e.g. ``runs/cpu``) against the course checkout.

    Lessons run with their own folder as working directory (``notebooks/``
    or ``notebooks/solutions/``) and the CLI from the repository root; all of
    them must find the same ``runs/`` folder.
    """
    path = Path(path).expanduser()
    if path.is_absolute():
        return path
    return (repo_root() or Path.cwd()) / path


def data_root() -> Path:
    """Return the folder that holds the course data.

    ``$COURSE_DATA_DIR`` wins; otherwise ``data/`` in the course checkout
    (found from the working directory, so lessons run from ``notebooks/``
    share it); otherwise ``./data`` (e.g. on Colab after a pip install).
    """
    env = os.environ.get(DATA_ENV)
    if env:
        return Path(env).expanduser().resolve()
    root = repo_root()
    return (root / "data") if root is not None else (Path.cwd() / "data").resolve()


def phantom_dir(mode: str | None = None) -> Path:
    """Return where the phantom dataset for ``mode`` lives."""
    return data_root() / get_settings(mode).phantom_dir_name


def msd_dir() -> Path:
    """Return where the real MSD Task01_BrainTumour folder is expected."""
    return data_root() / "Task01_BrainTumour"
