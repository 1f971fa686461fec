"""The phantom: deterministic, glioma-like shapes and label statistics, BraTS-like contrast, safe on disk."""

import json

import numpy as np
import pandas as pd
import pytest
from scipy import ndimage as ndi
from scipy.spatial import ConvexHull

from utils.config import BRATS_SHAPE, TINY_SHAPE
from utils.data.datasets import dataset_volume_table, list_cases, load_msd_case
from utils.data.labels import CLASS_NAMES
from utils.data.phantom import (
    MARKER_FILE,
    anatomy,
    main,
    make_phantom_case,
    make_phantom_dataset,
    phantom_label_statistics,
)
from utils.data.phantom.build import _case_seed
from utils.data.phantom.scanner import _synthesise
from utils.data.statistics import class_intensity_table, label_statistics, label_volume_table

from conftest import snapshot

N_SEEDS = 30
"""Tiny-grid cases drawn for the statistics tests (about 0.2 s each)."""


@pytest.fixture(scope="module")
def tiny_cases():
    """The first N_SEEDS cases of the default dataset seed on the CI grid."""
    return [_synthesise(_case_seed(0, i), TINY_SHAPE) for i in range(N_SEEDS)]


def _volumes_ml(label: np.ndarray, shape) -> np.ndarray:
    voxel_ml = np.prod(np.asarray((240.0, 240.0, 155.0)) / np.asarray(shape)) / 1000.0
    return np.bincount(label.ravel(), minlength=4)[1:] * voxel_ml


def _hull_fill(mask: np.ndarray) -> float:
    """Voxels over the volume of their convex hull: about 1 for a convex blob, less when lobulated."""
    return float(mask.sum() / ConvexHull(np.argwhere(mask)).volume)


def test_case_is_a_pure_function_of_its_seed():
    a = make_phantom_case(11, TINY_SHAPE)
    b = make_phantom_case(11, TINY_SHAPE)
    c = make_phantom_case(12, TINY_SHAPE)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    assert not np.array_equal(a[1], c[1])
    assert not np.array_equal(a[0], c[0])


def test_dataset_is_reproducible(phantom_root, tmp_path):
    again = make_phantom_dataset(
        tmp_path / "again", n_train=5, n_test=1, shape=TINY_SHAPE, seed=7, progress=False, workers=1
    )
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


def test_labels_look_like_brats(phantom_root):
    """Every case has a tumour inside the skull-stripped brain, with edema around a core."""
    for cid in list_cases(phantom_root):
        case = load_msd_case(phantom_root, cid)
        table = label_volume_table(case.label, case.spacing)["volume_mL"]
        assert 2 < table.iloc[3] < 250, f"{cid}: whole tumour {table.iloc[3]} mL"
        assert table.iloc[0] > 0 and table.iloc[4] > 0, f"{cid}: edema {table.iloc[0]}, core {table.iloc[4]} mL"
        brain = np.any(case.image > 0, axis=-1)
        assert not np.any((case.label > 0) & ~brain), "tumour outside the brain"
        assert np.all(case.image[~brain] == 0), "skull-stripped: zero outside the brain"


def test_volumes_spread_like_gliomas(tiny_cases):
    """Whole tumour from a few mL to over 100 mL; every case has edema and a core."""
    vols = np.array([_volumes_ml(c["label"], TINY_SHAPE) for c in tiny_cases])
    wt = vols.sum(1)
    assert np.all(vols[:, 0] > 0) and np.all(vols[:, 1] > 0), "edema and core in every case"
    assert np.all((wt > 2) & (wt < 250)), f"whole tumour out of range: {np.round(wt, 1)}"
    assert wt.min() < 12 and wt.max() > 80, f"sizes should spread from small to large: {np.round(wt, 1)}"
    assert 15 < np.median(wt) < 80
    assert np.median(vols[:, 2][vols[:, 2] > 0]) < np.median(vols[:, 1]), "enhancing is the small class"


def test_enhancing_tumour_absent_in_a_share_of_cases(tiny_cases):
    """Lower-grade tumours carry no enhancing label; high-grade ones do."""
    has_et = np.array([np.any(c["label"] == 3) for c in tiny_cases])
    low = np.array([c["params"]["grade"] == "low" for c in tiny_cases])
    assert 0.15 <= 1 - has_et.mean() <= 0.5, f"ET absent in {1 - has_et.mean():.0%} of cases"
    assert not np.any(has_et & low), "a lower-grade tumour with an enhancing label"


def test_some_cases_are_multifocal(tiny_cases):
    """Some cases hold two or more separate tumour cores; most hold one."""
    foci = []
    for c in tiny_cases:
        parts, n = ndi.label(c["label"] >= 2)
        sizes_ml = np.bincount(parts.ravel())[1:] * np.prod(np.asarray((240.0, 240.0, 155.0)) / TINY_SHAPE) / 1000
        foci.append(int((sizes_ml > 0.3).sum()))
    foci = np.array(foci)
    assert 2 <= (foci >= 2).sum() <= N_SEEDS // 2, f"cores per case: {foci.tolist()}"


def test_lookalikes_lie_outside_the_tumour_and_are_unlabelled(tiny_cases):
    """Bright white-matter spots and vessels appear in most cases, never labelled, never touching the tumour."""
    with_lookalikes = 0
    for c in tiny_cases:
        look = (c["hyperintensity"] > 0.5) | (c["vessel"] > 0.5)
        with_lookalikes += int(look.any())
        near = ndi.binary_dilation(c["label"] > 0, iterations=1)
        assert not np.any(look & near), "a look-alike touches the tumour"
        assert np.all(c["label"][(c["hyperintensity"] > 0) | (c["vessel"] > 0)] == 0)
    assert with_lookalikes >= 0.8 * N_SEEDS


def test_lookalikes_are_bright_where_tumours_are(tiny_cases):
    """Look-alikes mimic the tumour: FLAIR-bright like edema, or T1gd-bright like enhancement."""
    anat = anatomy(TINY_SHAPE)
    seen = {"hyper": 0, "vessel": 0}
    for c in tiny_cases:
        image, label = c["image"].astype(float), c["label"]
        wm = (anat["wm"] > 0.9) & (label == 0) & (c["hyperintensity"] == 0) & (c["vessel"] == 0)
        hyper, vessel = c["hyperintensity"] > 0.6, c["vessel"] > 0.9
        if hyper.sum() >= 3:
            seen["hyper"] += 1
            assert np.median(image[..., 0][hyper]) > 1.2 * np.median(image[..., 0][wm])
        if vessel.sum() >= 3:
            seen["vessel"] += 1
            assert np.median(image[..., 2][vessel]) > 1.15 * np.median(image[..., 2][wm])
    assert seen["hyper"] >= 5 and seen["vessel"] >= 5, seen


def test_label_statistics_table():
    volumes = pd.DataFrame(
        [[10.0, 5.0, 0.0], [20.0, 0.0, 0.0], [30.0, 15.0, 5.0]], index=["a", "b", "c"], columns=list(CLASS_NAMES)
    )
    table = label_statistics(volumes)
    assert table.loc["Enhancing tumour", "cases"] == 1 and table.loc["Enhancing tumour", "share"] == 0.33
    assert table.loc["Non-enhancing tumour", "median_mL"] == 10.0  # over the cases where present
    assert table.loc["whole tumour (WT)"].tolist() == [3, 1.0, 15.0, 20.0, 50.0]
    assert table.loc["tumour core (TC)", "min_mL"] == 5.0
    with pytest.raises(ValueError, match="one column per class"):
        label_statistics(volumes.drop(columns="Edema"))


def test_generator_reports_the_label_statistics(phantom_root, tmp_path, capsys):
    """phantom.json's recorded volumes agree with the label files; the command line prints the table."""
    from_marker = phantom_label_statistics(phantom_root)
    from_labels = label_statistics(dataset_volume_table(phantom_root))
    pd.testing.assert_frame_equal(from_marker, from_labels, atol=0.11, check_dtype=False)
    assert from_marker.loc["Edema", "cases"] == 5
    assert main(["--out", str(tmp_path / "p"), "--train", "2", "--test", "0", "--tiny", "--workers", "1"]) == 0
    out = capsys.readouterr().out
    assert "label statistics" in out and "Enhancing tumour" in out and "median_mL" in out
    with pytest.raises(FileNotFoundError, match="phantom.json"):
        phantom_label_statistics(tmp_path)


def test_contrast_is_brats_like(phantom_root, tiny_cases):
    """Typical contrast holds in the median case; within a case, the classes overlap."""
    tables = [class_intensity_table(c["image"], c["label"]) for c in tiny_cases]
    t = pd.concat(tables).groupby(level=0).median()
    assert t.loc["Edema", "FLAIR"] > 1.15 and t.loc["Edema", "T2w"] > 1.3  # edema bright on FLAIR and T2
    assert t.loc["Edema", "T1w"] < 1.0 and t.loc["Non-enhancing tumour", "T1w"] < 0.9  # darker on T1
    assert t.loc["Enhancing tumour", "T1gd"] > 1.2  # the enhancing rim lights up
    assert t.loc["Enhancing tumour", "T1gd"] > 1.5 * t.loc["Enhancing tumour", "T1w"]
    overlap = 0
    for c in tiny_cases:  # FLAIR alone does not separate edema from the core
        flair, label = c["image"][..., 0], c["label"]
        overlap += int(np.percentile(flair[label == 1], 90) > np.percentile(flair[label == 2], 10))
    assert overlap >= N_SEEDS // 2, f"FLAIR overlaps in {overlap} cases"
    case = load_msd_case(phantom_root, "PHANTOM_001")
    anat = anatomy(TINY_SHAPE)
    csf = anat["csf"] > 0.9
    flair, t2 = case.image[..., 0], case.image[..., 3]
    wm = (anat["wm"] > 0.9) & (case.label == 0)
    assert np.median(flair[csf & (case.label == 0)]) < 0.5 * np.median(flair[wm])  # CSF dark on FLAIR
    assert np.median(t2[csf & (case.label == 0)]) > 1.5 * np.median(t2[wm])  # CSF bright on T2


def test_appearance_varies_between_tumours(tiny_cases):
    """Enhancement is strong in some tumours and weak in others; the core is sometimes hard to tell from edema."""
    enhancement, core_vs_edema = [], []
    for c in tiny_cases:
        t = class_intensity_table(c["image"], c["label"])
        if "Enhancing tumour" in t.index and (c["label"] == 3).sum() >= 5:
            enhancement.append(t.loc["Enhancing tumour", "T1gd"] / t.loc["Non-enhancing tumour", "T1gd"])
        if (c["label"] == 2).sum() >= 5:
            core_vs_edema.append(abs(t.loc["Non-enhancing tumour", "FLAIR"] - t.loc["Edema", "FLAIR"]))
    enhancement, core_vs_edema = np.array(enhancement), np.array(core_vs_edema)
    assert enhancement.min() < 1.6 and enhancement.max() > 2.2, np.round(enhancement, 2)
    assert np.median(enhancement) > 1.2, "enhancement stands out in the typical tumour"
    assert core_vs_edema.min() < 0.05 and core_vs_edema.max() > 0.2, np.round(core_vs_edema, 2)
    params = [c["params"] for c in tiny_cases]
    for key, low, high in (("enhancement", 0.6, 1.0), ("core_distinctness", 0.5, 1.0)):
        values = np.array([p[key] for p in params])
        assert low <= values.min() and values.max() <= high and values.std() > 0.08


def test_full_size_case_on_the_brats_grid():
    image, label, affine = make_phantom_case(3, BRATS_SHAPE)
    assert image.shape == (*BRATS_SHAPE, 4) and image.dtype == np.int16
    assert label.shape == BRATS_SHAPE and label.dtype == np.uint8
    np.testing.assert_allclose(np.diag(affine)[:3], 1.0)
    wt_ml = (label > 0).sum() / 1000
    assert 2 < wt_ml < 250
    # lobulated, not an ellipsoid: a digital ellipsoid fills its hull (ratio >= 1), this tumour does not
    grid = np.stack(np.meshgrid(*[np.arange(40)] * 3, indexing="ij")) - 20.0
    ellipsoid = ((grid / np.array([14.0, 10.0, 17.0])[:, None, None, None]) ** 2).sum(0) < 1
    assert _hull_fill(ellipsoid) > 1.0
    assert _hull_fill(label > 0) < 0.9


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
    assert main(["--out", str(precious), "--train", "1", "--test", "0", "--tiny", "--overwrite", "--workers", "1"]) == 0
    # --overwrite writes the phantom beside the user's files; it never deletes them
    assert list_cases(precious) == ["PHANTOM_001"] and (precious / "notes.txt").read_text() == "my thesis"


def test_bad_parameters():
    with pytest.raises(ValueError, match="at least one case"):
        make_phantom_dataset("/tmp/never", n_train=0, n_test=0)
    with pytest.raises(ValueError, match="shape must be 3 sizes"):
        make_phantom_dataset("/tmp/never", shape=(8, 8, 8))
