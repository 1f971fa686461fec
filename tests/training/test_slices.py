"""BraTS 2020 export and reload, the axial slice sampler, slice-wise prediction."""

import json

import nibabel as nib
import numpy as np
import pytest

from utils.data.datasets import list_cases, load_brats_case, load_msd_case
from utils.model.unet import build_unet
from utils.training.cache import build_cache
from utils.training.slices import SliceDataset, SliceSampler, export_brats, fit_slice, predict_slices, unfit_slice


def test_brats_export_round_trip(phantom_root, tmp_path):
    out = export_brats(phantom_root, tmp_path / "brats")
    mapping = json.loads((out / "brats_export.json").read_text())["cases"]
    assert list(mapping) == [f"BraTS20_Training_00{i}" for i in range(1, 6)]
    assert list_cases(out) == list(mapping)
    for folder, case_id in mapping.items():
        files = sorted(p.name for p in (out / folder).iterdir())
        assert files == [f"{folder}_{s}.nii.gz" for s in ("flair", "seg", "t1", "t1ce", "t2")]
        raw = np.asarray(nib.load(out / folder / f"{folder}_seg.nii.gz").dataobj)
        assert set(np.unique(raw)) <= {0, 1, 2, 4}
        loaded, original = load_brats_case(out / folder), load_msd_case(phantom_root, case_id)
        np.testing.assert_array_equal(loaded.label, original.label)  # back in the MSD convention
        np.testing.assert_array_equal(loaded.image, original.image)
        np.testing.assert_array_equal(loaded.affine, original.affine)
        # edema is 2 in the file and 1 once loaded
        np.testing.assert_array_equal(raw == 2, original.label == 1)
    again = export_brats(phantom_root, out)  # our own export: replaced
    assert again == out


def test_export_refuses_a_foreign_folder(phantom_root, tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "thesis.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="not a BraTS export made here"):
        export_brats(phantom_root, mine)
    assert (mine / "thesis.txt").read_text() == "keep me"


def test_fit_and_unfit_slice():
    a = np.arange(5 * 7 * 2).reshape(5, 7, 2)
    fitted = fit_slice(a, (8, 4))
    assert fitted.shape == (8, 4, 2)
    np.testing.assert_array_equal(fitted[1:6], a[:, 1:5])
    back = unfit_slice(fitted, (5, 7))
    np.testing.assert_array_equal(back[:, 1:5], a[:, 1:5])
    assert np.all(back[:, [0, 5, 6]] == 0)


def test_slice_sampler(phantom_root, tmp_path):
    cache = build_cache(phantom_root, tmp_path / "cache", progress=False)
    sampler = SliceSampler(cache, cache.case_ids, (48, 56), empty_keep_rate=0.25)
    counts = {c: int((np.asarray(cache.label(c)) > 0).any(axis=(0, 1)).sum()) for c in cache.case_ids}
    assert len(sampler.tumour_slices) == sum(counts.values())
    rng = np.random.default_rng(0)
    chosen = sampler.epoch_slices(rng)
    tumour = set(sampler.tumour_slices)
    empty_kept = [s for s in chosen if s not in tumour]
    assert tumour <= set(chosen)  # every tumour slice, every epoch
    assert 0 < len(empty_kept) < len(sampler.empty_slices)
    share = len(empty_kept) / len(sampler.empty_slices)
    assert 0.1 < share < 0.45
    X, y = sampler.slice(*sampler.tumour_slices[0], rng)
    assert X.shape == (48, 56, 4) and y.shape == (48, 56, 3) and y.sum() > 0
    none = SliceSampler(cache, cache.case_ids, (48, 56), empty_keep_rate=0.0)
    assert set(none.epoch_slices(rng)) == tumour
    data = SliceDataset(sampler, batch_size=4, seed=3)
    xa, ya = data[0]
    np.testing.assert_array_equal(SliceDataset(sampler, batch_size=4, seed=3)[0][0], xa)
    assert xa.shape == (4, 48, 56, 4)
    with pytest.raises(ValueError, match="empty_keep_rate"):
        SliceSampler(cache, cache.case_ids, (48, 56), empty_keep_rate=2.0)


def test_predict_slices_on_the_case_grid(phantom_root):
    case = load_msd_case(phantom_root, "PHANTOM_001")
    model = build_unet((48, 56, 4), depth=3, base_filters=2)
    label, probs = predict_slices(model, case.image)
    assert label.shape == case.label.shape and probs.shape == (*case.label.shape, 3)
    assert 0 <= probs.min() and probs.max() <= 1
    from utils.preprocessing.crop import brain_bbox

    (x0, x1), (y0, y1), (z0, z1) = brain_bbox(case.image, margin=2)
    assert np.all(probs[:x0] == 0) and np.all(probs[x1:] == 0)  # nothing predicted outside the brain box
