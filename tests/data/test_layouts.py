"""Every dataset layout the course loads, each from a tiny fixture built here, with
its quirks; in each, a voxel the annotator called edema comes out as edema (1)."""

import shutil

import nibabel as nib
import numpy as np
import pytest

from utils.data.datasets import (
    LAYOUTS,
    DatasetError,
    detect_layout,
    list_cases,
    load_brats_case,
    load_case,
    load_label,
)
from utils.data.labels import brats2023_to_msd
from utils.data.sources import get_dataset

from conftest import write_brats_case

SHAPE = (8, 8, 6)
AFFINE = np.diag([1.0, 1.0, 1.0, 1.0])


def _image(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(1, 100, size=(*SHAPE, 4)).astype(np.float32)


def _label_msd() -> np.ndarray:
    """Edema shell (1) around a core (2) with an enhancing voxel (3)."""
    label = np.zeros(SHAPE, np.uint8)
    label[1:7, 1:7, 1:5] = 1
    label[2:5, 2:5, 2:4] = 2
    label[3, 3, 3] = 3
    return label


def write_brats2023_case(root, case_id, image, label_msd, raw_label=None, suffix=".nii.gz"):
    """One case in the BraTS 2023+ layout: <id>/<id>-{t2f,t1n,t1c,t2w,seg}.nii.gz, labels 1 NETC, 2 SNFH, 3 ET."""
    folder = root / case_id
    folder.mkdir(parents=True, exist_ok=True)
    for name, ch in {"t2f": 0, "t1n": 1, "t1c": 2, "t2w": 3}.items():
        nib.save(nib.Nifti1Image(image[..., ch], AFFINE), folder / f"{case_id}-{name}{suffix}")
    if raw_label is None and label_msd is not None:
        raw_label = np.select([label_msd == 1, label_msd == 2, label_msd == 3], [2, 1, 3], 0).astype(np.uint8)
    if raw_label is not None:
        nib.save(nib.Nifti1Image(raw_label, AFFINE), folder / f"{case_id}-seg{suffix}")
    return folder


def _assert_same_case(case, image, label_msd):
    np.testing.assert_array_equal(case.image, image)  # channels FLAIR, T1w, T1gd, T2w
    np.testing.assert_array_equal(case.label, label_msd)
    assert np.all(case.label[label_msd == 1] == 1)  # edema stays edema


def test_msd_layout_edema_stays_edema(phantom_root):
    assert detect_layout(phantom_root) == "msd"
    cid = list_cases(phantom_root)[0]
    raw = np.asarray(nib.load(phantom_root / "labelsTr" / f"{cid}.nii.gz").dataobj)
    case = load_case(phantom_root, cid)
    assert (raw == 1).any() and np.all(case.label[raw == 1] == 1)
    np.testing.assert_array_equal(case.label, raw)


@pytest.mark.parametrize("case_id,suffix", [("BraTS20_Training_001", ".nii"), ("BraTS2021_00000", ".nii.gz")])
def test_brats_2020_2021_layout(tmp_path, case_id, suffix):
    image, label = _image(), _label_msd()
    write_brats_case(tmp_path / case_id, image, label, AFFINE, suffix=suffix)
    assert detect_layout(tmp_path) == "brats"
    assert list_cases(tmp_path) == [case_id]
    _assert_same_case(load_case(tmp_path, case_id), image, label)
    raw = np.asarray(nib.load(tmp_path / case_id / f"{case_id}_seg{suffix}").dataobj)
    assert set(np.unique(raw)) == {0, 1, 2, 4} and np.all(load_label(tmp_path, case_id)[0][raw == 2] == 1)


@pytest.mark.parametrize("prefix", ["GLI", "SSA", "MEN", "MET"])
def test_brats_2023_layout(tmp_path, prefix):
    image, label = _image(1), _label_msd()
    ids = [f"BraTS-{prefix}-00000-000", f"BraTS-{prefix}-00002-001"]
    for cid in ids:
        write_brats2023_case(tmp_path, cid, image, label)
    assert detect_layout(tmp_path) == "brats2023"
    assert list_cases(tmp_path) == ids
    case = load_case(tmp_path, ids[0])
    _assert_same_case(case, image, label)
    assert [p.name.rsplit("-", 1)[1] for p in case.image_paths] == [
        "t2f.nii.gz",
        "t1n.nii.gz",
        "t1c.nii.gz",
        "t2w.nii.gz",
    ]
    raw = np.asarray(nib.load(tmp_path / ids[0] / f"{ids[0]}-seg.nii.gz").dataobj)
    assert np.all(case.label[raw == 2] == 1) and np.all(case.label[raw == 1] == 2) and np.all(case.label[raw == 3] == 3)
    label_only, spacing = load_label(tmp_path, ids[1])
    np.testing.assert_array_equal(label_only, label)
    assert spacing == (1.0, 1.0, 1.0)


def test_brats2023_mapping_values():
    np.testing.assert_array_equal(brats2023_to_msd(np.array([0, 1, 2, 3])), [0, 2, 1, 3])
    with pytest.raises(ValueError, match=r"found \[4\]: label 4 is the resection cavity"):
        brats2023_to_msd(np.array([0, 2, 4]))


def test_brats2023_refuses_resection_cavity_and_unsupported_prefixes(tmp_path):
    raw = np.select([_label_msd() == 1, _label_msd() == 2], [2, 1], 0).astype(np.uint8)
    raw[0, 0, 0] = 4
    folder = write_brats2023_case(tmp_path / "post", "BraTS-GLI-00001-100", _image(), None, raw_label=raw)
    with pytest.raises(DatasetError, match=r"(?s)resection cavity.*BraTS-GLI-00001-100-seg.nii.gz"):
        load_brats_case(folder)
    folder = write_brats2023_case(tmp_path / "ped", "BraTS-PED-00001-000", _image(), _label_msd())
    with pytest.raises(DatasetError, match=r"BraTS-PED cases are not supported: .*changed its label values"):
        load_brats_case(folder)
    folder = write_brats2023_case(tmp_path / "other", "BraTS-XYZ-00001-000", _image(), _label_msd())
    with pytest.raises(DatasetError, match=r"prefix one of BraTS-GLI .*found BraTS-XYZ-00001-000-t2f.nii.gz"):
        load_brats_case(folder)


def test_kaggle_brats2020_copy(tmp_path):
    """CSV files beside the cases, uncompressed .nii, __MACOSX/, a non-case folder, and
    case 355 whose label is named W39_1998.09.19_Segm.nii."""
    root = tmp_path / "BraTS2020_TrainingData" / "MICCAI_BraTS2020_TrainingData"
    image, label = _image(2), _label_msd()
    for n in (1, 2, 355):
        write_brats_case(root / f"BraTS20_Training_{n:03d}", image, label, AFFINE, suffix=".nii")
    case355 = root / "BraTS20_Training_355"
    (case355 / "BraTS20_Training_355_seg.nii").rename(case355 / "W39_1998.09.19_Segm.nii")
    (root / "name_mapping.csv").write_text("Grade,BraTS_2020_subject_ID\nHGG,BraTS20_Training_001\n")
    (root / "survival_info.csv").write_text("Brats20ID,Age,Survival_days\nBraTS20_Training_001,60,289\n")
    macosx = tmp_path / "BraTS2020_TrainingData" / "__MACOSX" / "MICCAI_BraTS2020_TrainingData"
    shutil.copytree(root / "BraTS20_Training_001", root / "__MACOSX" / "BraTS20_Training_001")
    (macosx / "BraTS20_Training_001").mkdir(parents=True)
    (macosx / "BraTS20_Training_001" / "._BraTS20_Training_001_flair.nii").write_bytes(b"\x00\x05\x16\x07")
    (case355 / "._BraTS20_Training_355_flair.nii").write_bytes(b"\x00\x05\x16\x07")
    (root / "notes").mkdir()
    (root / "notes" / "README.txt").write_text("not a case")

    assert detect_layout(root) == "brats"
    assert list_cases(root) == ["BraTS20_Training_001", "BraTS20_Training_002", "BraTS20_Training_355"]
    case = load_case(root, "BraTS20_Training_355")
    assert case.label_path.name == "W39_1998.09.19_Segm.nii"
    _assert_same_case(case, image, label)
    np.testing.assert_array_equal(load_label(root, "BraTS20_Training_355")[0], label)
    # the folder above (as the Kaggle archive extracts) is not itself a dataset: the error says where to look
    with pytest.raises(
        DatasetError,
        match=r"(?s)not a dataset the course knows.*one level down: try .*"
        r"MICCAI_BraTS2020_TrainingData",
    ):
        detect_layout(tmp_path / "BraTS2020_TrainingData")


def test_two_files_for_one_modality_are_refused_with_both_names(tmp_path):
    folder = write_brats_case(tmp_path / "BraTS20_Training_007", _image(), _label_msd(), AFFINE, suffix=".nii")
    shutil.copy(folder / "BraTS20_Training_007_flair.nii", folder / "BraTS20_Training_007_flair.nii.gz")
    with pytest.raises(
        DatasetError,
        match=r"expected one FLAIR image file .*found 2: BraTS20_Training_007_flair.nii, "
        r"BraTS20_Training_007_flair.nii.gz",
    ):
        load_brats_case(folder)
    (folder / "BraTS20_Training_007_flair.nii.gz").unlink()
    shutil.copy(folder / "BraTS20_Training_007_seg.nii", folder / "W39_1998.09.19_Segm.nii")
    case = load_brats_case(folder)  # a proper *_seg file wins over the Kaggle alias
    assert case.label_path.name == "BraTS20_Training_007_seg.nii"
    folder23 = write_brats2023_case(tmp_path / "b23", "BraTS-GLI-00003-000", _image(), _label_msd())
    shutil.copy(folder23 / "BraTS-GLI-00003-000-seg.nii.gz", folder23 / "copy-seg.nii.gz")
    with pytest.raises(
        DatasetError,
        match=r"expected one segmentation file .*BraTS-GLI-00003-000-seg.nii.gz, "
        r"copy-seg.nii.gz",
    ):
        load_brats_case(folder23)


def test_unknown_and_mixed_layouts(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError) as err:
        detect_layout(tmp_path / "empty")
    for name in LAYOUTS:
        assert f"- {name}:" in str(err.value)
    assert "dataset.json" in str(err.value) and "_flair" in str(err.value) and "-t2f" in str(err.value)
    write_brats_case(tmp_path / "mixed" / "BraTS2021_00001", _image(), _label_msd(), AFFINE)
    write_brats2023_case(tmp_path / "mixed", "BraTS-GLI-00001-000", _image(), _label_msd())
    with pytest.raises(DatasetError, match=r"mixes case folders of two layouts"):
        detect_layout(tmp_path / "mixed")


def test_get_dataset_accepts_a_path(tmp_path):
    write_brats2023_case(tmp_path / "gli", "BraTS-GLI-00000-000", _image(), _label_msd())
    assert get_dataset(str(tmp_path / "gli")) == (tmp_path / "gli").resolve()
    assert get_dataset(tmp_path / "gli") == (tmp_path / "gli").resolve()
    with pytest.raises(DatasetError, match="dataset folder not found"):
        get_dataset(str(tmp_path / "nope"))
    with pytest.raises(DatasetError, match="not a dataset the course knows"):
        get_dataset(str(tmp_path))
    with pytest.raises(ValueError, match="or the path of a dataset folder"):
        get_dataset("brats")


def test_predict_and_train_accept_a_brats2023_folder(tmp_path, monkeypatch, phantom_root, capsys):
    """``utils.inference.predict --input-dir`` and ``utils.training.train --dataset PATH`` on a BraTS 2023+ folder."""
    from utils.data.datasets import load_msd_case
    from utils.inference.predict import main as predict_main
    from utils.model.unet import build_unet
    from utils.training.train import prepare_data, preset

    monkeypatch.setenv("COURSE_DATA_DIR", str(tmp_path / "data"))
    root = tmp_path / "gli"
    for n, cid in enumerate(list_cases(phantom_root)[:3]):
        case = load_msd_case(phantom_root, cid)
        write_brats2023_case(root, f"BraTS-GLI-{n:05d}-000", case.image, case.label)
    model = build_unet((32, 32, 16, 4), depth=2, base_filters=2)
    model.save(tmp_path / "m.keras")
    out = tmp_path / "preds"
    assert predict_main(["--model", str(tmp_path / "m.keras"), "--input-dir", str(root), "--output-dir", str(out)]) == 0
    header, *rows = (out / "metrics.csv").read_text().splitlines()
    assert header.startswith("case,Dice WT") and "LW Dice WT" in header and "LW HD95 ET" in header
    assert [r.split(",")[0] for r in rows] == [
        "BraTS-GLI-00000-000",
        "BraTS-GLI-00001-000",
        "BraTS-GLI-00002-000",
        "mean",
        "median",
    ]
    assert sorted(p.name for p in out.glob("*.nii.gz")) == [f"BraTS-GLI-{n:05d}-000.nii.gz" for n in range(3)]
    data_dir, cache, train_ids, val_ids = prepare_data(preset("ci", dataset=str(root)), progress=False)
    assert data_dir == root.resolve() and sorted(train_ids + val_ids) == list_cases(root)
