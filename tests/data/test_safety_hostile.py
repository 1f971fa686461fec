"""Hostile inputs, two commands at once, a full or read-only disk (issue 25).

Each scenario runs on tiny files in temporary folders and checks: bounded
memory (``getrusage`` of a child process, where a file declares or inflates to
more than it holds), one line of error with exit status 2, and that the
folder's ownership marker lists exactly the files on disk.
"""

from __future__ import annotations

import errno
import gzip
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import zipfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

import utils.config as config
import utils.inference.predict as predict_module
import utils.inference.sliding_window as inference
import utils.safety as safety
from utils.data.datasets import DatasetError, load_msd_case, load_nifti
from utils.inference.predict import main as predict_main
from utils.model.unet import ModelLoadError, load_model
from utils.safety import BOOKKEEPING, FolderBusyError, OwnedFiles, folder_lock
from utils.visualization.report import main as report_main

ROOT = Path(__file__).resolve().parents[2]
MB = 1 << 20


# --------------------------------------------------------------------------- hostile files


def nifti_header(shape, dtype=np.float32, affine=None) -> nib.Nifti1Header:
    """A NIfTI-1 header for ``shape``/``dtype`` whose sform is ``affine`` written as is (NaN or singular too)."""
    hdr = nib.Nifti1Header()
    hdr.set_data_shape(shape)
    hdr.set_data_dtype(dtype)
    hdr["pixdim"][1:4] = 1.0
    affine = np.eye(4) if affine is None else np.asarray(affine, dtype=float)
    hdr["sform_code"], hdr["qform_code"] = 1, 0
    hdr["srow_x"], hdr["srow_y"], hdr["srow_z"] = affine[0], affine[1], affine[2]
    hdr["vox_offset"] = 352
    return hdr


def write_nifti(path: Path, data: np.ndarray, affine) -> Path:
    """Write ``data`` with the raw sform ``affine`` (nibabel itself refuses to build such an image)."""
    hdr = nifti_header(data.shape, data.dtype, affine)
    raw = hdr.binaryblock + b"\0" * 4 + np.asfortranarray(data).tobytes(order="F")
    path.write_bytes(gzip.compress(raw) if path.name.endswith(".gz") else raw)
    return path


def header_bomb(path: Path, shape, dtype=np.float32) -> Path:
    """A header-only ``.nii`` that declares ``shape`` x ``dtype`` of voxel data."""
    path.write_bytes(nifti_header(shape, dtype).binaryblock + b"\0" * 4)
    return path


def gzip_bomb(path: Path, inflate_mb: int) -> Path:
    """A small ``.nii.gz`` that honestly inflates to ``inflate_mb`` MB of zeros (streamed, never held in memory)."""
    n = inflate_mb * MB // 4
    with gzip.open(path, "wb", compresslevel=9) as fh:
        fh.write(nifti_header((n // (256 * 256), 256, 256), np.float32).binaryblock + b"\0" * 4)
        block = bytes(MB)
        for _ in range(inflate_mb):
            fh.write(block)
    return path


def keras_bomb(path: Path, config_mb: int) -> Path:
    """A ``.keras`` zip whose ``config.json`` inflates to ``config_mb`` MB (a few kB on disk)."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("metadata.json", json.dumps({"keras_version": "3.15.1"}))
        with zf.open("config.json", "w", force_zip64=True) as fh:
            fh.write(b'{"class_name": "Functional", "config": {"name": "')
            for _ in range(config_mb):
                fh.write(b" " * MB)
            fh.write(b'"}}')
    return path


def run_measured(code: str, *args: str, env: dict | None = None, timeout: float = 120) -> tuple[int, str, float]:
    """Run ``python -c code`` as a grandchild; return its exit status, stderr and peak memory (MB).

    The peak is ``getrusage(RUSAGE_CHILDREN).ru_maxrss`` measured in the middle
    process, which waits for that one child only.
    """
    wrapper = textwrap.dedent(
        """
        import json, resource, subprocess, sys
        r = subprocess.run([sys.executable, "-c", sys.argv[1], *sys.argv[2:]], capture_output=True, text=True)
        peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        print(json.dumps({"rc": r.returncode, "err": r.stderr, "peak_mb": peak}))
        """
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    out = subprocess.run(
        [sys.executable, "-c", wrapper, code, *args], capture_output=True, text=True, env=env, timeout=timeout
    )
    result = json.loads(out.stdout.strip().splitlines()[-1])
    return result["rc"], result["err"], result["peak_mb"]


LOAD = """
import importlib.util, sys, types
# the loader alone: the package's __init__ would import TensorFlow (about 0.8 GB, 10-20 s) for nothing here
package = types.ModuleType("utils")
package.__path__ = list(importlib.util.find_spec("utils").submodule_search_locations)
sys.modules["utils"] = package
import utils.config as config
from utils.data.datasets import DatasetError, load_nifti
if len(sys.argv) > 2:
    config.NIFTI_MAX_MB = int(sys.argv[2])
try:
    load_nifti(sys.argv[1]).get_fdata()
except DatasetError as err:
    print(f"error: {err}", file=sys.stderr)
    raise SystemExit(2)
"""


def one_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert "Traceback" not in err, err
    return lines[0]


def listed_exactly(folder: Path) -> bool:
    """The marker lists exactly the (non-bookkeeping, non-temporary) files in ``folder``, each unchanged."""
    on_disk = {p.name for p in folder.iterdir() if p.is_file() and p.name not in BOOKKEEPING}
    owned = OwnedFiles(folder, "test")
    return set(owned.files) == on_disk and all(owned.owns(folder / name) for name in on_disk)


# --------------------------------------------------------------------------- bounded reading


@pytest.mark.parametrize(
    ("shape", "dtype", "declared"),
    [((1024, 1024, 256), np.float32, "1,024 MB"), ((30000, 30000, 30000, 4), np.float32, "411,987,305 MB")],
    ids=["1GiB", "432TB"],
)
def test_header_bomb_is_refused_before_allocating(tmp_path, shape, dtype, declared):
    bomb = header_bomb(tmp_path / "bomb.nii", shape, dtype)
    assert bomb.stat().st_size == 352
    rc, err, peak = run_measured(LOAD, str(bomb))  # (before issue 25: 1.1 GB, then "truncated"; MemoryError)
    line = one_line(err)
    assert rc == 2 and str(bomb) in line and "truncated" in line and declared in line, line
    assert "file holds 0 bytes after the header" in line
    assert peak < 150, f"{peak:.0f} MB"  # python + numpy + nibabel: about 50 MB; the header claims 1 GiB or more


def test_header_bomb_through_the_report_command(tmp_path):
    """The command a user runs: one line, exit 2, no traceback, memory of an import of the course."""
    bomb = header_bomb(tmp_path / "bomb.nii", (30000, 30000, 30000, 4))
    code = "import sys; from utils.visualization.report import main; raise SystemExit(main(sys.argv[1:]))"
    args = ("--image", str(bomb), "--segmentation", str(bomb), "--out", str(tmp_path / "out" / "r.html"))
    rc, err, peak = run_measured(code, *args)
    assert rc == 2 and "truncated" in one_line(err) and str(bomb) in err
    assert peak < 2048, f"{peak:.0f} MB"  # TensorFlow's import is most of it; the header claims 432 TB
    assert not (tmp_path / "out").exists()


def test_gzip_bomb_stops_at_the_cap(tmp_path):
    bomb = gzip_bomb(tmp_path / "bomb.nii.gz", inflate_mb=256)
    assert bomb.stat().st_size < MB
    rc, err, peak = run_measured(LOAD, str(bomb), "16")
    line = one_line(err)
    assert rc == 2 and "decompresses to more than 16 MB" in line and str(bomb) in line, line
    assert peak < 150, f"{peak:.0f} MB"  # the file inflates to 256 MB


def test_data_within_the_limit_still_loads(tmp_path, phantom_root):
    case = load_msd_case(phantom_root, "PHANTOM_001")
    assert case.image.shape[-1] == 4
    path = write_nifti(tmp_path / "ok.nii.gz", np.ones((8, 8, 8), np.float32), np.eye(4))
    assert load_nifti(path).get_fdata().sum() == 512
    raw = path.read_bytes()
    (tmp_path / "cut.nii.gz").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(DatasetError, match="truncated"):
        load_nifti(tmp_path / "cut.nii.gz")


def test_limit_refuses_an_honest_but_huge_file(tmp_path, monkeypatch):
    monkeypatch.setattr(config, "NIFTI_MAX_MB", 1)
    path = write_nifti(tmp_path / "big.nii", np.zeros((128, 128, 32), np.float32), np.eye(4))
    with pytest.raises(DatasetError, match=r"more than the limit of 1 MB \(utils.config.NIFTI_MAX_MB\)"):
        load_nifti(path)


# --------------------------------------------------------------------------- geometry

SINGULAR = np.diag([1.0, 1.0, 0.0, 1.0])
NAN = np.where(np.eye(4) == 1, 1.0, 0.0)
NAN[0, 3] = np.nan


@pytest.fixture()
def case_image(phantom_root):
    return load_msd_case(phantom_root, "PHANTOM_001").image


@pytest.mark.parametrize(("affine", "words"), [(SINGULAR, "singular affine"), (NAN, "NaN")], ids=["singular", "nan"])
def test_predict_refuses_broken_geometry_before_predicting(
    tmp_path, model_path, case_image, monkeypatch, capsys, affine, words
):
    image = write_nifti(tmp_path / "case.nii.gz", case_image, affine)
    monkeypatch.setattr(predict_module, "predict_case", lambda *a, **k: pytest.fail("predicted a broken file"))
    out = tmp_path / "out" / "seg.nii.gz"
    assert predict_main(["--model", str(model_path), "--input", str(image), "--output", str(out)]) == 2
    line = one_line(capsys.readouterr().err)
    assert words in line and str(image) in line, line
    assert not out.exists()


@pytest.mark.parametrize(("affine", "words"), [(SINGULAR, "singular affine"), (NAN, "NaN")], ids=["singular", "nan"])
def test_report_refuses_broken_geometry_in_one_line(tmp_path, phantom_root, capsys, affine, words):
    image = phantom_root / "imagesTr" / "PHANTOM_001.nii.gz"
    label = np.asanyarray(nib.load(phantom_root / "labelsTr" / "PHANTOM_001.nii.gz").dataobj).astype(np.uint8)
    seg = write_nifti(tmp_path / "seg.nii.gz", label, affine)
    args = ["--image", str(image), "--segmentation", str(seg), "--out", str(tmp_path / "r.html")]
    assert report_main(args) == 2
    line = one_line(capsys.readouterr().err)
    assert words in line and str(seg) in line and "JSON" not in line, line
    assert not (tmp_path / "r.html").exists()


def test_predict_never_writes_a_nan_affine(tmp_path):
    ref = load_nifti_unchecked(write_nifti(tmp_path / "nan.nii", np.zeros((4, 4, 4), np.float32), NAN))
    assert np.isnan(ref.affine).any()
    with pytest.raises(DatasetError, match="NaN"):
        inference.save_segmentation(np.zeros((4, 4, 4), np.uint8), ref, tmp_path / "seg.nii.gz")
    with pytest.raises(DatasetError, match="NaN"):
        inference.save_segmentation(np.zeros((4, 4, 4), np.uint8), tmp_path / "nan.nii", tmp_path / "seg.nii.gz")
    assert not (tmp_path / "seg.nii.gz").exists()


def load_nifti_unchecked(path: Path) -> nib.Nifti1Image:
    return nib.load(str(path))


def test_qform_and_sform_that_disagree_are_refused(tmp_path):
    img = nib.Nifti1Image(np.zeros((8, 8, 8), np.float32), np.eye(4))
    shifted = np.eye(4)
    shifted[:3, 3] = 20.0
    img.header.set_qform(shifted, code=1)
    img.header.set_sform(np.eye(4), code=1)
    nib.save(img, tmp_path / "two.nii.gz")
    with pytest.raises(DatasetError, match="qform and sform disagree"):
        load_nifti(tmp_path / "two.nii.gz")


def test_zero_voxel_size_is_refused(tmp_path):
    """nibabel repairs a zero or negative pixdim on load (with a warning); an affine with a zero axis is refused."""
    path = write_nifti(tmp_path / "flat.nii", np.zeros((4, 4, 4), np.float32), np.diag([1.0, 0.0, 1.0, 1.0]))
    with pytest.raises(DatasetError, match="singular affine"):
        load_nifti(path)


# --------------------------------------------------------------------------- model files


def test_keras_archive_with_a_huge_config_is_refused_unread(tmp_path, monkeypatch):
    bomb = keras_bomb(tmp_path / "bomb.keras", config_mb=80)
    assert bomb.stat().st_size < MB
    import keras

    monkeypatch.setattr(keras.models, "load_model", lambda *a, **k: pytest.fail("Keras read the archive"))
    with pytest.raises(ModelLoadError, match=r"config.json inflates to 80 MB, more than the limit of 64 MB"):
        load_model(bomb)
    monkeypatch.setattr(config, "MODEL_CONFIG_MAX_MB", 1000)
    monkeypatch.setattr(config, "MODEL_MAX_MB", 50)
    with pytest.raises(ModelLoadError, match=r"members inflate to 80 MB in all"):
        load_model(bomb)


def test_keras_floor_is_past_the_safe_mode_advisories():
    from importlib.metadata import version

    from packaging.requirements import Requirement

    text = (ROOT / "pyproject.toml").read_text()
    req = next(Requirement(line.strip().strip('",')) for line in text.splitlines() if '"keras>=' in line)
    assert str(req.specifier) in ("<4,>=3.15.1", ">=3.15.1,<4")
    assert version("keras") in req.specifier


# --------------------------------------------------------------------------- one writer per folder

HOLD = """
import sys, time
from utils.safety import folder_lock
with folder_lock(sys.argv[1], "holder"):
    print("locked", flush=True)
    time.sleep(60)
"""


def _holder(folder: Path) -> subprocess.Popen:
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(folder)],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert proc.stdout.readline().strip() == "locked"
    return proc


def test_locked_folder_is_refused_naming_the_holder_and_a_killed_holder_frees_it(tmp_path):
    folder = tmp_path / "out"
    proc = _holder(folder)
    try:
        with pytest.raises(FolderBusyError, match=rf"process {proc.pid} \(holder on .*\) is writing there"):
            with folder_lock(folder, "test"):
                pass
        start = time.monotonic()
        with pytest.raises(FolderBusyError):
            with folder_lock(folder, "test", wait=0.5):
                pass
        assert 0.5 <= time.monotonic() - start < 5
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert (folder / ".course-lock").is_file()  # the killed holder's stale lock file
    with folder_lock(folder, "test"):  # recognised as stale: the OS released it with the process
        with folder_lock(folder, "test"):  # and this process may take it again
            pass
    assert not (folder / ".course-lock").exists()


def test_marker_updates_merge_instead_of_overwriting(tmp_path):
    one, two = OwnedFiles(tmp_path, "a"), OwnedFiles(tmp_path, "b")
    for name, owned in (("a.txt", one), ("b.txt", two)):
        (tmp_path / name).write_text(name)
        owned.record(tmp_path / name)
    assert set(OwnedFiles(tmp_path, "c").files) == {"a.txt", "b.txt"}
    assert listed_exactly(tmp_path)


PREDICT = "import sys; from utils.inference.predict import main; raise SystemExit(main(sys.argv[1:]))"


def test_two_predict_processes_into_one_folder(tmp_path, model_path, phantom_root):
    out = tmp_path / "preds"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "COURSE_MODE": "ci"}
    args = ["--model", str(model_path), "--input-dir", str(phantom_root), "--output-dir", str(out), "--overwrite"]
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", PREDICT, *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        for _ in range(2)
    ]
    results = [(p.wait(timeout=300), p.stderr.read().decode()) for p in procs]
    codes = sorted(rc for rc, _ in results)
    assert codes in ([0, 0], [0, 2]), results
    for rc, err in results:
        if rc == 2:  # they overlapped: the second was refused, naming the first
            line = one_line(err)
            assert "utils.predict" in line and "is writing there" in line, line
    names = {p.name for p in out.iterdir() if p.name not in BOOKKEEPING}
    assert names == {f"PHANTOM_00{i}.nii.gz" for i in range(1, 7)} | {"metrics.csv"}
    assert listed_exactly(out)
    assert predict_main([*args[:-1], "--overwrite"]) == 0  # the course's own files are replaced


TRAIN = "import sys; from utils.training.train import main; raise SystemExit(main(sys.argv[1:]))"


def test_two_train_processes_into_one_run_folder(tmp_path, phantom_root):
    run = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "COURSE_MODE": "ci", "COURSE_DATA_DIR": str(tmp_path / "data")}
    args = ["--mode", "ci", "--dataset", str(phantom_root), "--output-dir", str(run), "--epochs", "3"]
    procs = [
        subprocess.Popen([sys.executable, "-c", TRAIN, *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for _ in range(2)
    ]
    results = [(p.wait(timeout=300), p.stderr.read().decode()) for p in procs]
    codes = sorted(rc for rc, _ in results)
    assert codes in ([0, 0], [0, 2]), [(rc, err[-500:]) for rc, err in results]
    for rc, err in results:
        if rc == 2:
            line = one_line(err)
            assert "utils.train" in line and "is writing there" in line, line
    epochs = [int(row.split(",")[0]) for row in (run / "log.csv").read_text().splitlines()[1:]]
    assert epochs == [0, 1, 2], epochs  # each epoch once, in order (a waiter would find the run finished)
    assert json.loads((run / "state.json").read_text())["epochs_done"] == 3


# --------------------------------------------------------------------------- full and read-only disks


def _enospc(*_a, **_k):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


@pytest.mark.parametrize("point", ["segmentation", "rename", "marker", "metrics"])
def test_full_disk_at_each_write_leaves_a_folder_the_rerun_can_replace(
    tmp_path, model_path, phantom_root, monkeypatch, capsys, point
):
    """ENOSPC at each write of ``utils.inference.predict --input-dir``: one line, exit 2, marker == files, rerun works."""
    out = tmp_path / "preds"
    args = ["--model", str(model_path), "--input-dir", str(phantom_root), "--output-dir", str(out)]
    calls = {"n": 0}

    def fail_third(real):
        def wrapper(*a, **k):
            calls["n"] += 1
            if calls["n"] == 3:
                _enospc()
            return real(*a, **k)

        return wrapper

    if point == "segmentation":
        monkeypatch.setattr(inference.nib, "save", fail_third(nib.save))
    elif point == "rename":
        monkeypatch.setattr(safety.os, "replace", fail_third(os.replace))
    elif point == "marker":
        real = safety.write_json_atomic
        monkeypatch.setattr(
            safety, "write_json_atomic", lambda p, d: _enospc() if len(d.get("files", {})) >= 3 else real(p, d)
        )
    else:
        import pandas as pd

        monkeypatch.setattr(pd.DataFrame, "to_csv", _enospc)
    assert predict_main(args) == 2
    line = one_line(capsys.readouterr().err)
    assert "No space left on device" in line, line
    assert not [p for p in out.iterdir() if p.name.startswith(safety.TEMPORARY_PREFIX)]
    assert listed_exactly(out), (sorted(p.name for p in out.iterdir()), OwnedFiles(out, "t").files)
    monkeypatch.undo()  # space freed
    assert predict_main([*args, "--overwrite"]) == 0
    assert listed_exactly(out)


def _mount_tmpfs(folder: Path, options: str) -> bool:
    folder.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        return False
    return (
        subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)], capture_output=True).returncode
        == 0
    )


@pytest.fixture()
def read_only_folder(tmp_path):
    """A read-only folder: a read-only tmpfs where this test may mount one, else chmod 555 (not for root)."""
    folder = tmp_path / "ro"
    if _mount_tmpfs(folder, "ro,size=64k"):
        yield folder
        subprocess.run(["umount", str(folder)], check=True)
        return
    if os.geteuid() == 0:
        pytest.skip("needs a read-only folder: root ignores chmod and `mount -t tmpfs` is not permitted here")
    folder.chmod(0o555)
    yield folder
    folder.chmod(0o755)


def test_report_into_a_read_only_folder(read_only_folder, phantom_root, capsys):
    image = phantom_root / "imagesTr" / "PHANTOM_001.nii.gz"
    seg = phantom_root / "labelsTr" / "PHANTOM_001.nii.gz"
    args = ["--image", str(image), "--segmentation", str(seg), "--out", str(read_only_folder / "r.html")]
    assert report_main(args) == 2
    line = one_line(capsys.readouterr().err)
    assert "cannot write the report" in line and str(read_only_folder) in line, line


def test_predict_into_a_read_only_folder(read_only_folder, model_path, phantom_root, monkeypatch, capsys):
    monkeypatch.setattr(
        predict_module, "predict_case", lambda *a, **k: pytest.fail("predicted into a read-only folder")
    )
    image = phantom_root / "imagesTr" / "PHANTOM_001.nii.gz"
    args = ["--model", str(model_path), "--input", str(image), "--output", str(read_only_folder / "s.nii.gz")]
    assert predict_main(args) == 2
    assert "cannot write the segmentation" in one_line(capsys.readouterr().err)


def test_grader_into_a_read_only_folder_refuses_before_grading(read_only_folder, tmp_path, monkeypatch, capsys):
    import utils.course.grade as grade

    monkeypatch.setattr(grade, "grade_submission", lambda *a, **k: pytest.fail("graded before checking the output"))
    subs = tmp_path / "subs"
    subs.mkdir()
    (subs / "ada.ipynb").write_text(json.dumps({"cells": [], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}))
    assert grade.main([str(subs), "--out", str(read_only_folder / "grades.csv")]) == 2
    assert "cannot write the grading outputs" in one_line(capsys.readouterr().err)


def test_full_tmpfs_predict_one_line_and_rerun(tmp_path, model_path, phantom_root, capsys):
    """A real full disk: a 1 MB tmpfs with 24 kB free holds some of the outputs, not all."""
    folder = tmp_path / "small"
    if not _mount_tmpfs(folder, "size=1m"):
        pytest.skip("`mount -t tmpfs` is not permitted here (needs root); the patched ENOSPC tests cover the logic")
    try:
        (folder / "filler").write_bytes(b"\0" * (1024 - 24) * 1024)
        out = folder / "preds"
        args = ["--model", str(model_path), "--input-dir", str(phantom_root), "--output-dir", str(out)]
        assert predict_main(args) == 2
        line = one_line(capsys.readouterr().err)
        assert "No space left" in line or "cannot write the segmentations" in line, line
        if out.exists():  # every file there is listed as ours (a claim whose removal did not fit may remain)
            owned = OwnedFiles(out, "test")
            assert all(owned.owns(p) for p in out.iterdir() if p.name not in BOOKKEEPING)
        (folder / "filler").unlink()  # space freed
        assert predict_main([*args, "--overwrite"]) == 0
        assert listed_exactly(out)
    finally:
        subprocess.run(["umount", str(folder)], check=True)
