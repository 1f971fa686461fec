"""Geometry and dataset.json checks: silent wrong results become clear errors (issue 11)."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest

from utils.data.datasets import DatasetError, load_brats_case, load_label, load_msd_case, read_dataset_json

from conftest import write_brats_case


def _flip_x(affine):
    flipped = affine.copy()
    flipped[0, 0] *= -1
    return flipped


def test_msd_label_with_a_flipped_affine_is_refused(msd_copy):
    path = msd_copy / "labelsTr" / "PHANTOM_001.nii.gz"
    img = nib.load(path)
    nib.save(nib.Nifti1Image(np.asarray(img.dataobj), _flip_x(img.affine)), path)
    with pytest.raises(
        DatasetError,
        match=r"label affine differs from the image affine \(orientation L.. vs R..\)"
        r".*PHANTOM_001",
    ):
        load_msd_case(msd_copy, "PHANTOM_001")
    with pytest.raises(DatasetError, match="label affine differs"):  # the scoring path reads only the label
        load_label(msd_copy, "PHANTOM_001")
    load_msd_case(msd_copy, "PHANTOM_002")  # the other cases still load


def test_small_affine_noise_is_tolerated_a_shift_is_not(msd_copy):
    path = msd_copy / "labelsTr" / "PHANTOM_001.nii.gz"
    img = nib.load(path)
    data = np.asarray(img.dataobj)
    nudged = img.affine.copy()
    nudged[0, 3] += 1e-5
    nib.save(nib.Nifti1Image(data, nudged), path)
    assert load_msd_case(msd_copy, "PHANTOM_001").label.shape == data.shape
    nudged[0, 3] += 2.0
    nib.save(nib.Nifti1Image(data, nudged), path)
    with pytest.raises(DatasetError, match=r"largest difference 2 mm"):
        load_msd_case(msd_copy, "PHANTOM_001")


@pytest.mark.parametrize("victim,what", [("t1ce", "T1gd"), ("t2", "T2w"), ("seg", "segmentation")])
def test_brats_files_with_another_affine_are_refused(phantom_root, tmp_path, victim, what):
    case = load_msd_case(phantom_root, "PHANTOM_001")
    folder = write_brats_case(tmp_path / "C1", case.image, case.label, case.affine)
    path = folder / f"C1_{victim}.nii.gz"
    img = nib.load(path)
    nib.save(nib.Nifti1Image(np.asarray(img.dataobj), _flip_x(img.affine)), path)
    with pytest.raises(DatasetError, match=rf"{what} affine differs from the FLAIR affine .*C1_{victim}"):
        load_brats_case(folder)
    if victim == "seg":
        with pytest.raises(DatasetError, match="segmentation affine differs"):
            load_label(tmp_path, "C1")


@pytest.mark.parametrize(
    "change,message",
    [
        (lambda m: m.update(training="imagesTr"), r"'training' should be a JSON array; found str"),
        (lambda m: m.update(modality=["FLAIR", "T1w", "t1gd", "T2w"]), r"'modality' should be a JSON object"),
        (lambda m: m.update(labels=None), r"'labels' should be a JSON object; found NoneType"),
        (lambda m: m["training"].__setitem__(0, "imagesTr/PHANTOM_001.nii.gz"), r"training\[0\] should be an object"),
        (lambda m: m["training"][1].update(label=3), r"training\[1\] should be an object"),
        (lambda m: m.update(test=[{"img": "x"}]), r"test\[0\] should be an image path"),
        (lambda m: m.update(modality={"a": "FLAIR", "b": "T1w", "c": "T1gd", "d": "T2w"}), r"channel numbers"),
        (
            lambda m: m.update(modality={"0": "T1", "1": "T1Gd", "2": "T2", "3": "FLAIR"}),
            r"expected the 4 modalities \['FLAIR', 'T1w', 'T1gd', 'T2w'\] in this order .*found \['T1', 'T1Gd'",
        ),
    ],
)
def test_dataset_json_with_wrong_types_or_modalities(msd_copy, change, message):
    path = msd_copy / "dataset.json"
    meta = json.loads(path.read_text())
    change(meta)
    path.write_text(json.dumps(meta))
    with pytest.raises(DatasetError, match=message):
        read_dataset_json(msd_copy)


def test_dataset_json_that_is_not_an_object(msd_copy):
    (msd_copy / "dataset.json").write_text("[1, 2, 3]")
    with pytest.raises(DatasetError, match="should hold a JSON object; found a list"):
        read_dataset_json(msd_copy)


def test_msd_modality_spelling_is_accepted(msd_copy):
    """The real Task01 dataset.json spells T1gd in lower case."""
    path = msd_copy / "dataset.json"
    meta = json.loads(path.read_text())
    meta["modality"] = {"0": "FLAIR", "1": "T1w", "2": "t1gd", "3": "T2w"}
    path.write_text(json.dumps(meta))
    assert read_dataset_json(msd_copy)["modality"]["2"] == "t1gd"
