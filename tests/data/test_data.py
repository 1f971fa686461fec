"""Both loaders, the split helper, and every bad input the loaders must name."""

import gzip
import json

import nibabel as nib
import numpy as np
import pytest

from utils.config import TINY_SHAPE
from utils.data.datasets import (
    DatasetError,
    detect_layout,
    list_cases,
    load_brats_case,
    load_case,
    load_label,
    load_msd_case,
    read_dataset_json,
    split_cases,
)
from utils.data.labels import MODALITIES
from utils.data.sources import get_dataset

from conftest import snapshot, write_brats_case


def test_dataset_json(phantom_root):
    meta = read_dataset_json(phantom_root)
    assert [meta["modality"][k] for k in "0123"] == list(MODALITIES)
    assert meta["labels"]["1"] == "edema" and meta["labels"]["3"] == "enhancing tumour"
    assert meta["numTraining"] == 5 and len(meta["test"]) == 1


def test_msd_case_loads_in_the_shared_convention(phantom_root):
    ids = list_cases(phantom_root)
    assert ids == [f"PHANTOM_00{i}" for i in range(1, 6)]
    assert list_cases(phantom_root, "test") == ["PHANTOM_006"]
    case = load_msd_case(phantom_root, ids[0])
    assert case.image.shape == (*TINY_SHAPE, 4) and case.image.dtype == np.float32
    assert case.label.shape == TINY_SHAPE and case.label.dtype == np.uint8
    assert set(np.unique(case.label)) <= {0, 1, 2, 3}
    assert case.spacing == pytest.approx((3.75, 3.75, 3.875))
    assert case.affine.shape == (4, 4)
    np.testing.assert_allclose(np.diag(case.affine)[:3], case.spacing)
    raw = nib.load(phantom_root / "imagesTr" / f"{ids[0]}.nii.gz")
    np.testing.assert_array_equal(case.image, np.asarray(raw.dataobj, dtype=np.float32))
    test_case = load_msd_case(phantom_root, "PHANTOM_006", subset="test")
    assert test_case.label is None and test_case.image.shape == (*TINY_SHAPE, 4)


def test_macos_resource_forks_are_skipped(msd_copy):
    meta = json.loads((msd_copy / "dataset.json").read_text())
    meta["training"].append({"image": "./imagesTr/._PHANTOM_001.nii.gz", "label": "./labelsTr/._PHANTOM_001.nii.gz"})
    (msd_copy / "dataset.json").write_text(json.dumps(meta))
    (msd_copy / "imagesTr" / "._PHANTOM_001.nii.gz").write_bytes(b"\x00\x05\x16\x07 resource fork")
    assert "._PHANTOM_001" not in list_cases(msd_copy)
    assert len(list_cases(msd_copy)) == 5


def test_loaders_never_write(phantom_root):
    before = snapshot(phantom_root)
    for cid in list_cases(phantom_root):
        load_case(phantom_root, cid)
        load_label(phantom_root, cid)
    assert snapshot(phantom_root) == before


def test_brats_layout_matches_msd(phantom_root, tmp_path):
    case = load_msd_case(phantom_root, "PHANTOM_002")
    folder = write_brats_case(tmp_path / "brats" / "BraTS20_Training_002", case.image, case.label, case.affine)
    assert detect_layout(tmp_path / "brats") == "brats"
    assert list_cases(tmp_path / "brats") == ["BraTS20_Training_002"]
    loaded = load_brats_case(folder)
    np.testing.assert_array_equal(loaded.image, case.image)
    np.testing.assert_array_equal(loaded.label, case.label)  # labels 1/2/4 mapped back
    np.testing.assert_array_equal(loaded.affine, case.affine)
    assert loaded.spacing == case.spacing
    assert [p.name.split("_")[-1] for p in loaded.image_paths] == [
        "flair.nii.gz",
        "t1.nii.gz",
        "t1ce.nii.gz",
        "t2.nii.gz",
    ]


def test_brats_edema_stays_edema_through_files(tmp_path):
    image = np.random.default_rng(0).uniform(1, 100, size=(8, 8, 8, 4)).astype(np.float32)
    brats = np.zeros((8, 8, 8), dtype=np.uint8)
    brats[2:6, 2:6, 2:6] = 2
    brats[3:5, 3:5, 3:5] = 1
    brats[4, 4, 4] = 4
    folder = tmp_path / "BraTS2021_00001"
    folder.mkdir()
    for name, ch in {"flair": 0, "t1": 1, "t1ce": 2, "t2": 3}.items():
        nib.save(nib.Nifti1Image(image[..., ch], np.eye(4)), folder / f"BraTS2021_00001_{name}.nii")
    nib.save(nib.Nifti1Image(brats, np.eye(4)), folder / "BraTS2021_00001_seg.nii")
    case = load_brats_case(folder)
    assert np.all(case.label[brats == 2] == 1)  # edema
    assert np.all(case.label[brats == 1] == 2)
    assert case.label[4, 4, 4] == 3
    np.testing.assert_array_equal(case.image[..., 2], image[..., 2])  # T1gd from *_t1ce
    np.testing.assert_array_equal(case.image[..., 1], image[..., 1])  # T1w from *_t1, not *_t1ce


def test_split_is_deterministic_and_disjoint():
    ids = [f"case_{i:03d}" for i in range(50)]
    train, val = split_cases(ids, 0.2, seed=3)
    assert (train, val) == split_cases(list(reversed(ids)), 0.2, seed=3)
    assert len(val) == 10 and len(train) == 40
    assert set(train).isdisjoint(val) and set(train) | set(val) == set(ids)
    assert split_cases(ids, 0.2, seed=4)[1] != val
    assert split_cases(["a", "b"], 0.01)[1] and split_cases(["a", "b"], 0.99)[0]
    with pytest.raises(ValueError, match="at least 2 cases"):
        split_cases(["a"])
    with pytest.raises(ValueError, match="val_fraction"):
        split_cases(ids, 1.5)


def test_stratified_split_holds_out_each_group_in_its_share():
    """16 cases, 4 without enhancing tumour, 6 held out: 1 or 2 of the 4 (a plain split of seed 0 held out 3)."""
    ids = [f"PHANTOM_{i:03d}" for i in range(1, 17)]
    no_et = {"PHANTOM_002", "PHANTOM_003", "PHANTOM_006", "PHANTOM_013"}
    strata = {c: c not in no_et for c in ids}
    assert len(set(split_cases(ids, 0.375, seed=0)[1]) & no_et) == 3
    for seed in range(20):
        train, val = split_cases(ids, 0.375, seed=seed, strata=strata)
        assert len(val) == 6 and len(train) == 10 and set(train) | set(val) == set(ids)
        assert len(set(val) & no_et) in (1, 2), (seed, val)
        assert (train, val) == split_cases(list(reversed(ids)), 0.375, seed=seed, strata=strata)
    # 3 groups of 10, 20 and 30 cases, a fifth held out: exactly 2, 4 and 6 of them
    groups = {f"c{i:02d}": ("a" if i < 10 else "b" if i < 30 else "c") for i in range(60)}
    val = split_cases(list(groups), 0.2, seed=1, strata=groups)[1]
    assert [sum(groups[c] == g for c in val) for g in "abc"] == [2, 4, 6]
    with pytest.raises(ValueError, match="missing"):
        split_cases(ids, 0.375, strata={c: True for c in ids[:-1]})


# --- bad input: every error names the file and what was expected -----------


def test_missing_dataset_json(tmp_path):
    with pytest.raises(DatasetError, match="dataset.json not found"):
        read_dataset_json(tmp_path)
    with pytest.raises(
        DatasetError, match=r"(?s)is not a dataset the course knows.*Known layouts:.*msd.*brats.*brats2023"
    ):
        list_cases(tmp_path)


def test_missing_case_file(msd_copy):
    (msd_copy / "labelsTr" / "PHANTOM_003.nii.gz").unlink()
    with pytest.raises(DatasetError, match=r"case 'PHANTOM_003' not found.*labelsTr"):
        load_msd_case(msd_copy, "PHANTOM_003")
    with pytest.raises(DatasetError, match="case 'NOPE' not found"):
        load_msd_case(msd_copy, "NOPE")


def test_file_that_is_not_nifti(msd_copy):
    path = msd_copy / "imagesTr" / "PHANTOM_001.nii.gz"
    path.write_bytes(gzip.compress(b"this is a text file, not an image" * 10))
    with pytest.raises(DatasetError, match=r"could not read image .*PHANTOM_001.nii.gz"):
        load_msd_case(msd_copy, "PHANTOM_001")


def test_truncated_gzip(msd_copy):
    path = msd_copy / "imagesTr" / "PHANTOM_001.nii.gz"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(DatasetError, match=r"PHANTOM_001.nii.gz: not a valid NIfTI file or truncated"):
        load_msd_case(msd_copy, "PHANTOM_001")


def test_image_not_4d_with_4_channels(msd_copy):
    path = msd_copy / "imagesTr" / "PHANTOM_001.nii.gz"
    img = nib.load(path)
    data = np.asarray(img.dataobj)
    nib.save(nib.Nifti1Image(data[..., 0], img.affine), path)
    with pytest.raises(DatasetError, match=r"expected a 4-D image .*found shape \(64, 64, 40\)"):
        load_msd_case(msd_copy, "PHANTOM_001")
    nib.save(nib.Nifti1Image(data[..., :3], img.affine), path)
    with pytest.raises(DatasetError, match=r"found shape \(64, 64, 40, 3\) in .*PHANTOM_001"):
        load_msd_case(msd_copy, "PHANTOM_001")


def test_label_shape_mismatch(msd_copy):
    path = msd_copy / "labelsTr" / "PHANTOM_001.nii.gz"
    img = nib.load(path)
    nib.save(nib.Nifti1Image(np.asarray(img.dataobj)[:, :, :20], img.affine), path)
    with pytest.raises(DatasetError, match=r"label shape \(64, 64, 20\) does not match image shape \(64, 64, 40\)"):
        load_msd_case(msd_copy, "PHANTOM_001")


def test_label_values_outside_convention(msd_copy):
    path = msd_copy / "labelsTr" / "PHANTOM_001.nii.gz"
    img = nib.load(path)
    data = np.asarray(img.dataobj).copy()
    data[0, 0, 0] = 4  # a BraTS value in an MSD file
    nib.save(nib.Nifti1Image(data, img.affine), path)
    with pytest.raises(DatasetError, match=r"expected label values \[0, 1, 2, 3\]; found \[4\] in .*PHANTOM_001"):
        load_msd_case(msd_copy, "PHANTOM_001")


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_nan_or_inf_intensities(msd_copy, bad):
    path = msd_copy / "imagesTr" / "PHANTOM_001.nii.gz"
    img = nib.load(path)
    data = np.asarray(img.dataobj).astype(np.float32)
    data[10, 10, 10, 2] = bad
    nib.save(nib.Nifti1Image(data, img.affine), path)
    with pytest.raises(DatasetError, match=r"found 1 NaN/Inf voxels in .*PHANTOM_001"):
        load_msd_case(msd_copy, "PHANTOM_001")


def test_brats_bad_inputs(phantom_root, tmp_path):
    case = load_msd_case(phantom_root, "PHANTOM_001")
    folder = write_brats_case(tmp_path / "C1", case.image, case.label, case.affine)
    (folder / "C1_t1ce.nii.gz").unlink()
    with pytest.raises(DatasetError, match=r"T1gd file not found: expected .*C1/\*_t1ce.nii.gz"):
        load_brats_case(folder)
    folder = write_brats_case(tmp_path / "C2", case.image, case.label, case.affine)
    nib.save(nib.Nifti1Image(np.full(TINY_SHAPE, 3, np.uint8), case.affine), folder / "C2_seg.nii.gz")
    with pytest.raises(DatasetError, match=r"expected BraTS label values \[0, 1, 2, 4\].*\[3\] in .*C2_seg"):
        load_brats_case(folder)
    folder = write_brats_case(tmp_path / "C3", case.image, case.label, case.affine)
    nib.save(nib.Nifti1Image(case.image[:32, ..., 3], case.affine), folder / "C3_t2.nii.gz")
    with pytest.raises(DatasetError, match=r"T2w shape \(32, 64, 40\) differs from FLAIR"):
        load_brats_case(folder)
    with pytest.raises(DatasetError, match="BraTS case folder not found"):
        load_brats_case(tmp_path / "missing")


def test_msd_dataset_missing_gives_instructions(tmp_path, monkeypatch):
    monkeypatch.setenv("COURSE_DATA_DIR", str(tmp_path))
    with pytest.raises(DatasetError, match=r"Task01_BrainTumour data was not found in .*data/README.md"):
        get_dataset("msd")
