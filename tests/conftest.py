"""Shared fixtures: small datasets the tests build locally (no download)."""

from __future__ import annotations

import http.server
import shutil
import threading
from contextlib import contextmanager
from pathlib import Path

import nbformat
import nibabel as nib
import numpy as np
import pytest

from utils.config import TINY_SHAPE
from utils.course.checks import CHECKS
from utils.data.datasets import BRATS_SUFFIXES
from utils.data.labels import msd_to_brats
from utils.data.phantom import make_phantom_dataset
from utils.model.unet import build_unet


@pytest.fixture(scope="session")
def phantom_root(tmp_path_factory) -> Path:
    """A tiny phantom in the MSD layout: 5 labelled cases, 1 test case."""
    root = tmp_path_factory.mktemp("data") / "phantom"
    return make_phantom_dataset(root, n_train=5, n_test=1, shape=TINY_SHAPE, seed=7, progress=False)


@pytest.fixture(scope="session")
def model_path(tmp_path_factory) -> Path:
    """A tiny untrained U-Net saved as .keras (prediction's input in the safety tests; never written to)."""
    path = tmp_path_factory.mktemp("model") / "tiny.keras"
    build_unet((32, 32, 16, 4), depth=2, base_filters=2).save(path)
    return path


@pytest.fixture()
def msd_copy(phantom_root, tmp_path) -> Path:
    """A private copy of the tiny phantom that a test may damage."""
    dst = tmp_path / "msd"
    shutil.copytree(phantom_root, dst)
    return dst


def write_brats_case(
    folder: Path,
    image: np.ndarray,
    label_msd: np.ndarray | None,
    affine: np.ndarray,
    suffix: str = ".nii.gz",
    case_id: str | None = None,
) -> Path:
    """Write one case in the BraTS 2020 layout (labels 1/2/4)."""
    case_id = case_id or folder.name
    folder.mkdir(parents=True, exist_ok=True)
    for ch, name in enumerate(BRATS_SUFFIXES.values()):
        nib.save(nib.Nifti1Image(image[..., ch], affine), folder / f"{case_id}_{name}{suffix}")
    if label_msd is not None:
        nib.save(nib.Nifti1Image(msd_to_brats(label_msd), affine), folder / f"{case_id}_seg{suffix}")
    return folder


def snapshot(root: Path) -> dict[str, tuple[int, int]]:
    """Size and mtime of every file under ``root`` (to prove nothing was written)."""
    return {
        str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@contextmanager
def local_http_server(handler: type[http.server.BaseHTTPRequestHandler]):
    """Serve ``handler`` on a free loopback port in a thread; yields ``http://127.0.0.1:PORT``."""
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


# Submissions for the grader's tests (tests/course/test_grade*.py), built from a lesson's notebooks


def lesson_exercises(lesson: str) -> list[str]:
    """The graded functions of ``lesson`` (e.g. ``"04_soft_dice_loss"``), in the lesson's order."""
    return [name for name, check in CHECKS.items() if check.lesson == lesson]


def code_cells(path: Path, names: list[str] = (), tag: str = "") -> list:
    """The code cells of the notebook ``path`` that define one of ``names`` (``def name(``) or carry ``tag``."""
    nb = nbformat.read(path, as_version=4)
    return [
        c
        for c in nb.cells
        if c.cell_type == "code"
        and (any(f"def {n}(" in c.source for n in names) or (tag and tag in c.metadata.get("tags", [])))
    ]


def cell_index(nb, text: str) -> int:
    """Index of the first code cell of ``nb`` whose source contains ``text``."""
    for i, cell in enumerate(nb.cells):
        if cell.cell_type == "code" and text in cell.source:
            return i
    raise AssertionError(f"no code cell contains {text!r}")


def write_notebook(path: Path, cells: list, lesson: str) -> Path:
    """A notebook of ``cells`` (sources or code cells) that says it is ``lesson``, written to ``path``."""
    nb = nbformat.v4.new_notebook()
    nb.metadata["course"] = {"lesson": lesson}
    nb.cells = [nbformat.v4.new_code_cell(c) if isinstance(c, str) else c for c in cells]
    nbformat.write(nb, path)
    return path


def bad_notebook(folder: Path, content: bytes | str) -> Path:
    """``folder/bad.ipynb`` holding ``content`` as it is (a submission the grader must refuse, saying why)."""
    path = folder / "bad.ipynb"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    return path
