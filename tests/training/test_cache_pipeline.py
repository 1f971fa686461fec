"""Training cache (crop, standardize, resume, invalidation) and the patch pipeline."""

import json

import numpy as np
import pytest

from utils.data.datasets import list_cases, load_msd_case
from utils.preprocessing.crop import brain_bbox
from utils.preprocessing.transforms import standardize_nonzero
from utils.safety import OWNER_FILE
from utils.training.cache import MANIFEST, CacheError, CacheParams, TrainingCache, build_cache
from utils.training.pipeline import PatchDataset, PatchSampler


@pytest.fixture()
def cache(phantom_root, tmp_path):
    return build_cache(phantom_root, tmp_path / "cache", progress=False)


def test_cache_holds_cropped_standardized_cases(cache, phantom_root):
    assert cache.case_ids == list_cases(phantom_root)
    case = load_msd_case(phantom_root, "PHANTOM_002")
    entry = cache.cases["PHANTOM_002"]
    box = brain_bbox(case.image, margin=2)
    assert entry["crop_box"] == [list(b) for b in box]
    window = tuple(slice(a, b) for a, b in box)
    image, label = cache.image("PHANTOM_002"), cache.label("PHANTOM_002")
    assert isinstance(image, np.memmap) and image.dtype == np.float16 and label.dtype == np.uint8
    np.testing.assert_array_equal(label, case.label[window])
    np.testing.assert_allclose(image.astype(np.float32), standardize_nonzero(case.image[window]), atol=2e-2)
    assert label.sum() > 0 and (case.label > 0).sum() == (label > 0).sum(), "cropping keeps the whole tumour"
    locs = cache.locations("PHANTOM_002")
    for k in (1, 2, 3):
        coords = locs[f"class{k}"]
        assert len(coords) == min(entry["voxels"][str(k)], 10_000)
        assert np.all(label[tuple(coords.T)] == k)


def test_cache_is_idempotent_and_resumes(phantom_root, tmp_path):
    folder = tmp_path / "cache"
    build_cache(phantom_root, folder, ["PHANTOM_001", "PHANTOM_002"], progress=False)
    stamp = (folder / "PHANTOM_001_image.npy").stat().st_mtime_ns
    # an interrupted build: one case's files are gone, its manifest entry too
    manifest = json.loads((folder / MANIFEST).read_text())
    (folder / "PHANTOM_002_label.npy").unlink()
    cache = build_cache(phantom_root, folder, ["PHANTOM_001", "PHANTOM_002", "PHANTOM_003"], progress=False)
    assert cache.case_ids == ["PHANTOM_001", "PHANTOM_002", "PHANTOM_003"]
    assert (folder / "PHANTOM_001_image.npy").stat().st_mtime_ns == stamp, "finished cases are not redone"
    assert manifest["params"] == json.loads((folder / MANIFEST).read_text())["params"]


def test_other_parameters_rebuild_the_cache(phantom_root, tmp_path, capsys):
    folder = tmp_path / "cache"
    build_cache(phantom_root, folder, ["PHANTOM_001"], progress=False)
    cache = build_cache(phantom_root, folder, ["PHANTOM_001"], params=CacheParams(margin=5), progress=False)
    assert "built with other parameters" in capsys.readouterr().out
    assert cache.manifest["params"]["margin"] == 5


def test_cache_refuses_a_foreign_folder_and_unknown_cases(phantom_root, tmp_path, cache):
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "x.txt").write_text("mine")
    with pytest.raises(CacheError, match="holds no cache manifest"):
        build_cache(phantom_root, foreign, progress=False)
    with pytest.raises(CacheError, match="no cache manifest"):
        TrainingCache(tmp_path / "nowhere")
    with pytest.raises(CacheError, match="'NOPE' is not in the cache"):
        cache.image("NOPE")


def test_sampler_patches(cache):
    sampler = PatchSampler(cache, cache.case_ids, (48, 48, 16), foreground_fraction=1.0, augment=False)
    rng = np.random.default_rng(0)
    for _ in range(10):
        X, y = sampler.sample(rng)
        assert X.shape == (48, 48, 16, 4) and y.shape == (48, 48, 16, 3)
        assert X.dtype == np.float32 and y.dtype == np.float32
        assert y.sum() > 0, "foreground_fraction=1 centres every patch on tumour"
    big = PatchSampler(cache, cache.case_ids, (64, 64, 48), augment=False)  # larger than the cropped case
    X, y = big.sample(np.random.default_rng(1))
    assert X.shape == (64, 64, 48, 4)
    with pytest.raises(ValueError, match="cases not in the cache"):
        PatchSampler(cache, ["NOPE"], (8, 8, 8))


class _OneCase:
    """The three things PatchSampler reads of a cache, for a case whose voxels hold their own index."""

    case_ids = ["C"]

    def __init__(self, shape):
        self._image = (np.arange(np.prod(shape), dtype=np.float32) + 1).reshape(*shape, 1).repeat(4, -1)

    def image(self, case_id):
        return self._image

    def label(self, case_id):
        return np.zeros(self._image.shape[:3], np.uint8)

    def locations(self, case_id):
        return {"class1": np.zeros((0, 3), np.int32)}


def test_random_patches_reach_the_border_as_nnunet_does():
    """The corner voxel is in about 1 % of random patches; kept inside the case, patches would reach it 0.009 %."""
    shape, patch = (40, 40, 24), (16, 16, 8)
    sampler = PatchSampler(_OneCase(shape), ["C"], patch, foreground_fraction=0.0, augment=False)
    corner, centre = 1.0, float(np.ravel_multi_index((20, 20, 12), shape) + 1)
    rng = np.random.default_rng(0)
    seen = {"corner": 0, "centre": 0, "padded": 0}
    for _ in range(4000):
        X, _ = sampler.sample(rng)
        values = X[..., 0]
        seen["corner"] += bool((values == corner).any())
        seen["centre"] += bool((values == centre).any())
        seen["padded"] += bool((values == 0).any())
    # each axis: starts -8..32 for x/y and -4..20 for z; the corner needs start <= 0 on all three
    # axes (9/41 * 9/41 * 5/25 = 0.0096), the centre 16/41 * 16/41 * 8/25 (0.049)
    assert seen["corner"] / 4000 == pytest.approx(0.0096, abs=0.004)
    assert seen["centre"] / 4000 == pytest.approx(0.049, abs=0.01)
    assert seen["padded"] > 0 and seen["corner"] > 0


def test_augmentation_keeps_image_and_label_aligned(cache):
    plain = PatchSampler(cache, ["PHANTOM_001"], (32, 32, 16), foreground_fraction=1.0, augment=False)
    aug = PatchSampler(
        cache, ["PHANTOM_001"], (32, 32, 16), foreground_fraction=1.0, augment=True, scale_range=0.0, shift_range=0.0
    )
    for seed in range(6):
        X0, y0 = plain.sample(np.random.default_rng(seed))
        X1, y1 = aug.sample(np.random.default_rng(seed))
        flips = [a for a in range(3) if not np.array_equal(np.flip(X0, a), X0)]
        matched = False
        for mask in range(8):
            axes = tuple(a for a in range(3) if mask >> a & 1)
            if np.array_equal(np.flip(X0, axes) if axes else X0, X1):
                np.testing.assert_array_equal(np.flip(y0, axes) if axes else y0, y1)
                matched = True
        assert matched and flips


def test_dataset_is_deterministic_and_epoch_dependent(cache):
    sampler = PatchSampler(cache, cache.case_ids, (32, 32, 16))
    a = PatchDataset(sampler, batch_size=2, steps=3, seed=5)
    b = PatchDataset(sampler, batch_size=2, steps=3, seed=5)
    xa, ya = a[1]
    xb, yb = b[1]
    np.testing.assert_array_equal(xa, xb)
    np.testing.assert_array_equal(ya, yb)
    assert xa.shape == (2, 32, 32, 16, 4) and ya.shape == (2, 32, 32, 16, 3)
    a.on_epoch_end()
    assert not np.array_equal(a[1][0], xa), "a new epoch draws new patches"
    resumed = PatchDataset(sampler, batch_size=2, steps=3, seed=5, initial_epoch=1)
    np.testing.assert_array_equal(resumed[1][0], a[1][0])
    fixed = PatchDataset(sampler, batch_size=2, steps=3, seed=5, fixed=True)
    first = fixed[0][0]
    fixed.on_epoch_end()
    np.testing.assert_array_equal(fixed[0][0], first)
    with pytest.raises(IndexError):
        a[3]


def _arrays(folder):
    out = {}
    for path in sorted(folder.glob("*.np[yz]")):
        if path.suffix == ".npy":
            out[path.name] = np.load(path)
        else:
            with np.load(path) as data:
                out.update({f"{path.name}:{k}": data[k] for k in data.files})
    return out


def test_parallel_build_equals_the_serial_build(phantom_root, tmp_path):
    serial = build_cache(phantom_root, tmp_path / "serial", progress=False, workers=1)
    parallel = build_cache(phantom_root, tmp_path / "parallel", progress=False, workers=2)
    assert parallel.manifest["cases"] == serial.manifest["cases"], "same entries, in the same order"
    a, b = _arrays(tmp_path / "serial"), _arrays(tmp_path / "parallel")
    assert sorted(a) == sorted(b) and len(a) == 5 * 5  # image, label, 3 location arrays per case
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)
    marker = json.loads((tmp_path / "parallel" / OWNER_FILE).read_text())
    assert sorted(marker["files"]) == sorted([MANIFEST, *(p.name for p in (tmp_path / "parallel").glob("*.np?"))])
    assert not any("claimed" in record for record in marker["files"].values()), "every file recorded"
    assert not list((tmp_path / "parallel").glob(".tmp-*"))


def test_an_error_in_a_worker_process_names_the_case(msd_copy, tmp_path):
    import nibabel as nib

    path = msd_copy / "imagesTr" / "PHANTOM_003.nii.gz"
    img = nib.load(path)
    nib.save(nib.Nifti1Image(np.zeros(img.shape, np.int16), img.affine), path)
    with pytest.raises(CacheError, match=r"PHANTOM_003: the image is all zero .*PHANTOM_003.nii.gz"):
        build_cache(msd_copy, tmp_path / "cache", progress=False, workers=2)
    done = [c["case_id"] for c in json.loads((tmp_path / "cache" / MANIFEST).read_text())["cases"]]
    assert done == ["PHANTOM_001", "PHANTOM_002"], "the cases before it are committed"


def test_cache_progress_is_a_text_line_a_stored_notebook_keeps(phantom_root, tmp_path, capsys):
    # a widget bar (tqdm.auto) would leave an empty box in an HTML export, where widgets cannot run
    build_cache(phantom_root, tmp_path / "cache", ["PHANTOM_001"], progress=True)
    out = capsys.readouterr().out
    assert "cache: 100%" in out and "1/1" in out, out
