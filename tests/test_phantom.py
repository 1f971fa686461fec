"""The phantom: deterministic, BraTS-like contrast and label statistics, safe on disk."""

import json

import numpy as np
import pytest

from conftest import snapshot
from utils.analysis import class_intensity_table, label_volume_table
from utils.config import BRATS_SHAPE, TINY_SHAPE
from utils.data import list_cases, load_msd_case
from utils.phantom import MARKER_FILE, anatomy, main, make_phantom_case, make_phantom_dataset


def test_case_is_a_pure_function_of_its_seed():
    a = make_phantom_case(11, TINY_SHAPE)
    b = make_phantom_case(11, TINY_SHAPE)
    c = make_phantom_case(12, TINY_SHAPE)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    assert not np.array_equal(a[1], c[1])
    assert not np.array_equal(a[0], c[0])


def test_dataset_is_reproducible(phantom_root, tmp_path):
    again = make_phantom_dataset(tmp_path / "again", n_train=5, n_test=1, shape=TINY_SHAPE, seed=7,
                                 progress=False, workers=1)
    for cid in list_cases(phantom_root):
        a, b = load_msd_case(phantom_root, cid), load_msd_case(again, cid)
        np.testing.assert_array_equal(a.image, b.image)
        np.testing.assert_array_equal(a.label, b.label)


def test_anatomy_is_real_and_skull_stripped():
    anat = anatomy(TINY_SHAPE)
    brain_ml = anat["mask"].sum() * np.prod(anat["spacing"]) / 1000
    assert 1300 < brain_ml < 2000  # an adult brain, 1.3-2.0 L
    tissue = anat["gm"] + anat["wm"] + anat["csf"]
    np.testing.assert_allclose(tissue[anat["mask"]], 1.0, atol=1e-5)
    assert np.all(tissue[~anat["mask"]] == 0)
    assert anat["wm"][anat["mask"]].mean() > 0.3 and anat["gm"][anat["mask"]].mean() > 0.3


def test_labels_and_volumes_look_like_brats(phantom_root):
    """Every case has a tumour of tens of mL; most cases hold all three classes."""
    complete = 0
    for cid in list_cases(phantom_root):
        case = load_msd_case(phantom_root, cid)
        table = label_volume_table(case.label, case.spacing)["volume_mL"]
        assert 15 < table.iloc[3] < 250, f"{cid}: whole tumour {table.iloc[3]} mL"
        assert table.iloc[0] > 5, f"{cid}: edema {table.iloc[0]} mL"
        complete += int((table.iloc[:3] > 0).all())
        brain = np.any(case.image > 0, axis=-1)
        assert not np.any((case.label > 0) & ~brain), "tumour outside the brain"
        assert np.all(case.image[~brain] == 0), "skull-stripped: zero outside the brain"
    assert complete >= 3


def test_class_presence_over_many_seeds():
    present = np.zeros(3)
    for seed in range(20):
        _, label, _ = make_phantom_case(seed, TINY_SHAPE)
        present += [np.any(label == k) for k in (1, 2, 3)]
    assert present[0] == 20            # edema always
    assert present[1] >= 14 and present[2] >= 14  # core and enhancing in most cases


def test_contrast_is_brats_like(phantom_root):
    case = load_msd_case(phantom_root, "PHANTOM_001")
    t = class_intensity_table(case.image, case.label)
    assert t.loc["Edema", "FLAIR"] > 1.3          # edema bright on FLAIR
    assert t.loc["Edema", "T2w"] > 1.3            # and on T2
    assert t.loc["Edema", "T1w"] < 1.0            # darker than brain on T1
    if "Enhancing Tumor" in t.index and not np.isnan(t.loc["Enhancing Tumor", "T1gd"]):
        assert t.loc["Enhancing Tumor", "T1gd"] > 1.3   # the enhancing rim lights up
        assert t.loc["Enhancing Tumor", "T1gd"] > 1.3 * t.loc["Enhancing Tumor", "T1w"]
    anat = anatomy(TINY_SHAPE)
    csf = anat["csf"] > 0.9
    flair, t2 = case.image[..., 0], case.image[..., 3]
    wm = (anat["wm"] > 0.9) & (case.label == 0)
    assert np.median(flair[csf & (case.label == 0)]) < 0.5 * np.median(flair[wm])  # CSF dark on FLAIR
    assert np.median(t2[csf & (case.label == 0)]) > 1.5 * np.median(t2[wm])        # CSF bright on T2


def test_full_size_case_on_the_brats_grid():
    image, label, affine = make_phantom_case(3, BRATS_SHAPE)
    assert image.shape == (*BRATS_SHAPE, 4) and image.dtype == np.int16
    assert label.shape == BRATS_SHAPE and label.dtype == np.uint8
    np.testing.assert_allclose(np.diag(affine)[:3], 1.0)
    wt_ml = (label > 0).sum() / 1000
    assert 15 < wt_ml < 250


def test_marker_and_idempotence(phantom_root):
    marker = json.loads((phantom_root / MARKER_FILE).read_text())
    assert marker["generator"] == "utils.phantom" and marker["shape"] == list(TINY_SHAPE)
    assert len(marker["cases"]) == 6
    before = snapshot(phantom_root)
    make_phantom_dataset(phantom_root, n_train=5, n_test=1, shape=TINY_SHAPE, seed=7, progress=False)
    assert snapshot(phantom_root) == before  # found complete: nothing rewritten


def test_other_parameters_rebuild_our_own_phantom(tmp_path):
    root = make_phantom_dataset(tmp_path / "p", n_train=2, n_test=0, shape=TINY_SHAPE, progress=False, workers=1)
    make_phantom_dataset(root, n_train=3, n_test=0, shape=TINY_SHAPE, progress=False, workers=1)
    assert list_cases(root) == ["PHANTOM_001", "PHANTOM_002", "PHANTOM_003"]
    assert not list(tmp_path.glob(".p.*")), "no partial or old folder left behind"


def test_refuses_to_overwrite_a_foreign_folder(tmp_path):
    precious = tmp_path / "mine"
    precious.mkdir()
    (precious / "notes.txt").write_text("my thesis")
    with pytest.raises(FileExistsError, match=r"not empty and is not a phantom .*notes.txt.*overwrite=True"):
        make_phantom_dataset(precious, n_train=1, n_test=0, shape=TINY_SHAPE, progress=False)
    assert (precious / "notes.txt").read_text() == "my thesis"
    assert main(["--out", str(precious), "--train", "1", "--test", "0", "--tiny"]) == 2
    assert (precious / "notes.txt").read_text() == "my thesis"
    assert main(["--out", str(precious), "--train", "1", "--test", "0", "--tiny", "--overwrite",
                 "--workers", "1"]) == 0
    # --overwrite writes the phantom beside the user's files; it never deletes them
    assert list_cases(precious) == ["PHANTOM_001"] and (precious / "notes.txt").read_text() == "my thesis"


def test_bad_parameters():
    with pytest.raises(ValueError, match="n_train >= 1"):
        make_phantom_dataset("/tmp/never", n_train=0)
    with pytest.raises(ValueError, match="shape must be 3 sizes"):
        make_phantom_dataset("/tmp/never", shape=(8, 8, 8))
