import warnings

import numpy as np
import pytest

from utils.preprocessing.transforms import (
    PatchSamplingError,
    compare_samplers,
    get_sub_volume,
    rejection_sample,
    sample_foreground_patch,
    standardize,
    standardize_nonzero,
)

from bench_standardize import standardize_slices_loop  # the benchmark's baseline: the assignment's per-slice loop


def _volume(shape=(20, 18, 12), seed=0):
    rng = np.random.default_rng(seed)
    image = rng.gamma(2.0, 100.0, size=(*shape, 4)).astype(np.float32)
    image[:3] = 0.0  # "outside the brain"
    label = np.zeros(shape, dtype=np.uint8)
    label[8:14, 6:12, 4:9] = 1
    label[10:12, 8:10, 5:8] = 2
    label[11, 9, 6] = 3
    return image, label


def test_get_sub_volume_shapes_and_content():
    image, label = _volume()
    np.random.seed(0)
    X, y = get_sub_volume(image, label, 20, 18, 12, 8, 8, 4, background_threshold=0.9)
    assert X.shape == (8, 8, 4, 4) and y.shape == (8, 8, 4, 3)
    assert X.dtype == np.float32 and y.dtype == np.float32
    assert y.sum(axis=-1).max() <= 1 and 1 - y.sum(axis=-1).mean() < 0.9
    matches = [
        (a, b, c)
        for a in range(13)
        for b in range(11)
        for c in range(9)
        if np.array_equal(image[a : a + 8, b : b + 8, c : c + 4], X)
    ]
    assert len(matches) == 1
    a, b, c = matches[0]
    np.testing.assert_array_equal(y.argmax(-1)[y.any(-1)] + 1, label[a : a + 8, b : b + 8, c : c + 4][y.any(-1)])


def test_get_sub_volume_bad_input():
    image, label = _volume()
    with pytest.raises(ValueError, match=r"patch \(30, 8, 4\) does not fit in the volume \(20, 18, 12\)"):
        get_sub_volume(image, label, 20, 18, 12, 30, 8, 4)
    with pytest.raises(ValueError, match=r"label shape \(20, 18, 11\) does not match image shape \(20, 18, 12\)"):
        get_sub_volume(image, label[..., :11], 20, 18, 12, 8, 8, 4)
    bad = label.copy()
    bad[0, 0, 0] = 4
    with pytest.raises(ValueError, match=r"label values must be in 0..3; found \[4\]"):
        get_sub_volume(image, bad, 20, 18, 12, 8, 8, 4)
    nan = image.copy()
    nan[5, 5, 5, 1] = np.nan
    with pytest.raises(ValueError, match="image holds 1 NaN/Inf values"):
        get_sub_volume(nan, label, 20, 18, 12, 8, 8, 4)
    with pytest.raises(ValueError, match=r"orig_x, orig_y, orig_z = \(240, 240, 155\) but the image is"):
        get_sub_volume(image, label)
    with pytest.raises(PatchSamplingError, match=r"no \(8, 8, 4\) patch with background below 10% in 7 tries"):
        get_sub_volume(image, np.zeros_like(label), 20, 18, 12, 8, 8, 4, max_tries=7, background_threshold=0.1)


def test_rejection_sample_is_deterministic_with_a_generator():
    image, label = _volume()
    a = rejection_sample(image, label, (8, 8, 4), background_threshold=0.9, rng=np.random.default_rng(3))
    b = rejection_sample(image, label, (8, 8, 4), background_threshold=0.9, rng=np.random.default_rng(3))
    assert a.start == b.start and a.tries == b.tries
    np.testing.assert_array_equal(a.X, b.X)


def test_foreground_sampler():
    image, label = _volume()
    rng = np.random.default_rng(0)
    forced = [sample_foreground_patch(image, label, (8, 8, 4), foreground_fraction=1.0, rng=rng) for _ in range(50)]
    assert all(p.y.sum() > 0 for p in forced) and all(p.tries == 1 for p in forced)
    # the rarest class (one voxel of enhancing tumour) is the centre in about a third of the draws
    with_enh = sum(p.y[..., 2].sum() > 0 for p in forced)
    assert with_enh >= 8
    free = [sample_foreground_patch(image, label, (8, 8, 4), foreground_fraction=0.0, rng=rng) for _ in range(50)]
    assert len({p.start for p in free}) > 10
    for p in forced + free:
        a, b, c = p.start
        np.testing.assert_array_equal(p.X, image[a : a + 8, b : b + 8, c : c + 4])
    with pytest.raises(ValueError, match="foreground_fraction must be in"):
        sample_foreground_patch(image, label, (8, 8, 4), foreground_fraction=1.5)


def test_compare_samplers_table():
    image, label = _volume()
    table = compare_samplers([(image, label)], n_patches=30, patch_shape=(8, 8, 4), background_threshold=0.9)
    rej, fg = table.index
    assert table.loc[fg, "draws per patch (mean)"] == 1.0
    assert table.loc[rej, "draws per patch (mean)"] > 1.0
    assert table.loc[rej, "patches with tumour"] == 1.0
    assert table.loc[rej, "Edema share"] > table.loc[fg, "Edema share"] > 0


def test_standardize_matches_the_loop_and_numpy():
    image, _ = _volume(seed=1)
    image[:, :, 3] = 42.0  # one constant slice in every channel
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = standardize(image)
    np.testing.assert_allclose(out, standardize_slices_loop(image), atol=1e-5)
    sl = image[:, :, 5, 2].astype(np.float64)
    np.testing.assert_allclose(out[:, :, 5, 2], (sl - sl.mean()) / sl.std(), atol=1e-5)
    assert np.all(out[:, :, 3] == 0)
    assert out.dtype == np.float32 and out.shape == image.shape


def test_standardize_bad_input():
    with pytest.raises(ValueError, match=r"expected a channels-last image \(x, y, z, C\); found shape \(4, 4, 4\)"):
        standardize(np.zeros((4, 4, 4)))
    bad = np.ones((4, 4, 2, 1))
    bad[0, 0, 0, 0] = np.inf
    with pytest.raises(ValueError, match="1 NaN/Inf"):
        standardize(bad)


def test_standardize_nonzero_uses_the_brain_only():
    image, _ = _volume(seed=2)
    out = standardize_nonzero(image)
    brain = np.any(image != 0, axis=-1)
    assert np.all(out[~brain] == 0)
    for c in range(4):
        assert abs(out[..., c][brain].mean()) < 1e-4
        assert abs(out[..., c][brain].std() - 1) < 1e-4
        v = image[..., c][brain].astype(np.float64)
        np.testing.assert_allclose(out[..., c][brain], (v - v.mean()) / v.std(), atol=1e-4)
    # the same tissue value maps to the same output in every slice
    same = image.copy()
    same[5:, :, :, 0] = 100.0
    o = standardize_nonzero(same)
    assert np.ptp(o[5:, :, :, 0]) == 0
    with pytest.raises(ValueError, match="mask shape"):
        standardize_nonzero(image, np.ones((2, 2, 2)))
    assert np.all(standardize_nonzero(np.zeros((3, 3, 3, 2))) == 0)


def test_one_sampler_core_with_the_overhang_as_a_parameter():
    """Lesson 02's reference sampler keeps patches inside; training's may overhang by half a patch."""
    from utils.preprocessing.transforms import patch_corner

    shape, patch = (20, 18, 10), (8, 8, 4)
    inside = np.array([patch_corner(shape, patch, np.random.default_rng(s), 0.0) for s in range(300)])
    over = np.array([patch_corner(shape, patch, np.random.default_rng(s), 0.0, overhang=True) for s in range(300)])
    assert inside.min() >= 0 and np.all(inside.max(axis=0) <= np.subtract(shape, patch))
    assert np.all(over.min(axis=0) == -np.array(patch) // 2)
    assert np.all(over.max(axis=0) == np.subtract(shape, patch) + np.array(patch) // 2)
    image = np.random.default_rng(0).normal(size=(*shape, 4)).astype(np.float32)
    label = np.zeros(shape, np.uint8)
    label[3:6, 4:7, 2:5] = 2
    for seed in range(20):  # the reference draws through the same core (its corners, draw for draw)
        ref = sample_foreground_patch(image, label, patch, foreground_fraction=0.0, rng=np.random.default_rng(seed))
        core = patch_corner(shape, patch, np.random.default_rng(seed), 0.0, draw_centre=lambda r: None)
        assert ref.start == tuple(core)
