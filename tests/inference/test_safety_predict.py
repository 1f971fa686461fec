"""Data safety of prediction: inputs are read-only (through links), outputs replace only
what utils.inference.predict wrote, scoring never reads this run's output, and bad models or
empty images give one-line errors (issue 11)."""

from __future__ import annotations

import os
import shutil

import keras
import nibabel as nib
import numpy as np
import pytest

from utils.data.datasets import load_msd_case
from utils.inference.predict import main as predict_main

from conftest import write_brats_case


def _tree(root):
    """Bytes of every file under ``root`` (to prove nothing changed)."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture()
def brats_case(phantom_root, tmp_path):
    case = load_msd_case(phantom_root, "PHANTOM_001")
    return write_brats_case(tmp_path / "BraTS20_Training_001", case.image, case.label, case.affine)


def _run(capsys, *args):
    code = predict_main(list(map(str, args)))
    return code, capsys.readouterr().err


@pytest.mark.parametrize("victim", ["t2", "seg", "flair"])
def test_output_onto_a_file_of_the_case_is_refused(model_path, brats_case, capsys, victim):
    before = _tree(brats_case)
    out = brats_case / f"BraTS20_Training_001_{victim}.nii.gz"
    code, err = _run(capsys, "--model", model_path, "--input", brats_case, "--output", out, "--overwrite")
    assert code == 2 and "refusing to overwrite the input" in err and err.count("\n") == 1
    assert _tree(brats_case) == before


@pytest.mark.parametrize("link", ["hard", "symbolic"])
def test_output_that_is_a_link_to_an_input_is_refused(model_path, brats_case, tmp_path, capsys, link):
    flair = brats_case / "BraTS20_Training_001_flair.nii.gz"
    out = tmp_path / "elsewhere" / "pred.nii.gz"
    out.parent.mkdir()
    (os.link if link == "hard" else os.symlink)(flair, out)
    before = _tree(brats_case)
    code, err = _run(capsys, "--model", model_path, "--input", brats_case, "--output", out, "--overwrite")
    assert code == 2 and "refusing to overwrite the input" in err and "same file" in err
    assert _tree(brats_case) == before and out.read_bytes() == flair.read_bytes()


def test_output_dir_inside_the_dataset_is_refused(model_path, msd_copy, capsys):
    before = _tree(msd_copy)
    for folder in ("labelsTr", "imagesTr", "imagesTs", "."):
        code, err = _run(
            capsys, "--model", model_path, "--input-dir", msd_copy, "--output-dir", msd_copy / folder, "--overwrite"
        )
        assert code == 2 and "read-only" in err, folder
    assert _tree(msd_copy) == before


def test_labels_linked_to_the_output_are_never_scored(model_path, msd_copy, tmp_path, capsys):
    """labelsTr is a link to the output folder: the run would score its own predictions (Dice 1.0)."""
    out = tmp_path / "preds"
    shutil.move(msd_copy / "labelsTr", out)
    (msd_copy / "labelsTr").symlink_to(out)
    before = _tree(out)
    code, err = _run(capsys, "--model", model_path, "--input-dir", msd_copy, "--output-dir", out, "--overwrite")
    assert code == 2 and "read-only" in err
    assert _tree(out) == before


def test_msd_image_folder_is_read_only_in_single_case_mode(model_path, msd_copy, capsys):
    source = msd_copy / "imagesTr" / "PHANTOM_001.nii.gz"
    before = _tree(msd_copy)
    code, err = _run(
        capsys,
        "--model",
        model_path,
        "--input",
        source,
        "--output",
        msd_copy / "labelsTr" / "PHANTOM_001.nii.gz",
        "--overwrite",
    )
    assert code == 2 and "labelsTr" in err and "read-only" in err
    assert _tree(msd_copy) == before


def test_overwrite_replaces_only_our_own_outputs(model_path, phantom_root, tmp_path, capsys):
    source = phantom_root / "imagesTr" / "PHANTOM_001.nii.gz"
    mine = tmp_path / "mine.nii.gz"
    mine.write_bytes(b"the user's own segmentation")
    code, err = _run(capsys, "--model", model_path, "--input", source, "--output", mine, "--overwrite")
    assert code == 2 and "no course command wrote it" in err
    assert mine.read_bytes() == b"the user's own segmentation"
    ours = tmp_path / "ours.nii.gz"
    assert _run(capsys, "--model", model_path, "--input", source, "--output", ours)[0] == 0
    assert nib.load(ours).header["descrip"].tobytes().startswith(b"utils.predict")
    code, err = _run(capsys, "--model", model_path, "--input", source, "--output", ours)
    assert code == 2 and "exists; pass --overwrite" in err
    assert _run(capsys, "--model", model_path, "--input", source, "--output", ours, "--overwrite")[0] == 0
    assert not list(tmp_path.glob(".tmp-*")), "no temporary file left"


def test_folder_mode_writes_and_scores(model_path, msd_copy, tmp_path, capsys):
    before = _tree(msd_copy)
    out = tmp_path / "preds"
    assert _run(capsys, "--model", model_path, "--input-dir", msd_copy, "--output-dir", out)[0] == 0
    assert (out / "metrics.csv").is_file() and len(list(out.glob("PHANTOM_*.nii.gz"))) == 6
    code, err = _run(capsys, "--model", model_path, "--input-dir", msd_copy, "--output-dir", out)
    assert code == 2 and "exists" in err
    assert _run(capsys, "--model", model_path, "--input-dir", msd_copy, "--output-dir", out, "--overwrite")[0] == 0
    assert _tree(msd_copy) == before


def test_output_that_is_a_folder_or_output_dir_that_is_a_file(model_path, phantom_root, tmp_path, capsys):
    source = phantom_root / "imagesTr" / "PHANTOM_001.nii.gz"
    folder = tmp_path / "seg.nii.gz"
    folder.mkdir()
    code, err = _run(capsys, "--model", model_path, "--input", source, "--output", folder)
    assert code == 2 and "is a folder" in err
    afile = tmp_path / "notes.txt"
    afile.write_text("keep")
    code, err = _run(capsys, "--model", model_path, "--input-dir", phantom_root, "--output-dir", afile)
    assert code == 2 and "is a file" in err and afile.read_text() == "keep"


def test_bad_model_files_are_one_line_errors(phantom_root, tmp_path, capsys):
    source = phantom_root / "imagesTr" / "PHANTOM_001.nii.gz"
    fake = tmp_path / "model.keras"
    fake.write_bytes(b"not a zip archive")
    h5 = tmp_path / "model.h5"
    h5.write_bytes(b"\x89HDF\r\n\x1a\n")
    lam = tmp_path / "lambda.keras"
    keras.Sequential([keras.Input((32, 32, 16, 4)), keras.layers.Lambda(lambda x: x[..., :3])]).save(lam)
    for path, message in (
        (fake, "is not a .keras model"),
        (h5, "is not a .keras model"),
        (lam, "arbitrary code"),
        (tmp_path / "missing.keras", "model not found"),
    ):
        code, err = _run(capsys, "--model", path, "--input", source, "--output", tmp_path / "o.nii.gz")
        assert code == 2 and message in err and err.count("\n") == 1, err
        assert "Traceback" not in err
    assert not (tmp_path / "o.nii.gz").exists()


def test_all_zero_image_is_a_clear_error(model_path, phantom_root, tmp_path, capsys):
    img = nib.load(phantom_root / "imagesTr" / "PHANTOM_001.nii.gz")
    empty = tmp_path / "EMPTY.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros(img.shape, np.int16), img.affine), empty)
    code, err = _run(capsys, "--model", model_path, "--input", empty, "--output", tmp_path / "o.nii.gz")
    assert code == 2 and "all zero" in err and "EMPTY" in err
    assert not (tmp_path / "o.nii.gz").exists()
