"""Training-patch augmentation: nnU-Net's pipeline from batchgenerators (issue 26) beside the basic one.

Shapes, dtypes and channels-last; image and label moved together by the spatial transforms (an
asymmetric marker survives a rotation); the tumour stays where the sampler centred it; intensity
transforms drawn per channel; zero outside the brain; deterministic by the sample's generator
whatever the threads; the ``--augmentation`` flag of the train command line.
"""

import itertools
import random
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from utils.config import AUGMENTATIONS, TrainConfig, preset
from utils.training import augment
from utils.training.augment import NnUNetAugmentation, rotation_angles
from utils.training.cache import build_cache
from utils.training.pipeline import PatchDataset, PatchSampler
from utils.training.train import _parser
from utils.training.train import main as train_main

PATCH = (32, 32, 16)


@pytest.fixture(scope="module")
def cache(phantom_root, tmp_path_factory):
    return build_cache(phantom_root, tmp_path_factory.mktemp("aug") / "cache", progress=False)


class _MarkedCase:
    """What PatchSampler reads of a cache: one case, a ball of brain (1 on every channel, labelled edema)
    with a 2x2x2 non-enhancing blob (label 2, the only location the sampler centres patches on) at its
    centre and, off-centre, an asymmetric block (4 on every channel) labelled enhancing tumour (3)."""

    case_ids = ["C"]

    def __init__(self, shape=(64, 64, 48), block=((40, 50), (28, 34), (21, 27))):
        grid = np.indices(shape)
        centre = (np.asarray(shape) - 1) / 2
        ball = sum((g - c) ** 2 for g, c in zip(grid, centre)) < (min(shape) / 2 - 2) ** 2
        self._label = np.where(ball, 1, 0).astype(np.uint8)
        self.blob = tuple(slice(int(c), int(c) + 2) for c in centre)
        self._label[self.blob] = 2
        box = tuple(slice(a, b) for a, b in block)
        self._label[box] = 3
        self._image = np.where(ball, 1.0, 0.0).astype(np.float32)[..., None].repeat(4, -1)
        self._image[box] = 4.0

    def image(self, case_id):
        return self._image

    def label(self, case_id):
        return self._label

    def locations(self, case_id):
        return {"class2": np.argwhere(self._label == 2).astype(np.int32)}


def _dice(a, b):
    return 2 * np.logical_and(a, b).sum() / max(a.sum() + b.sum(), 1)


def test_nnunet_patches_keep_shape_dtype_and_channels_last(cache):
    sampler = PatchSampler(cache, cache.case_ids, PATCH, foreground_fraction=0.5, augmentation="nnunet")
    for seed in range(12):
        X, y = sampler.sample(np.random.default_rng(seed))
        assert X.shape == (*PATCH, 4) and X.dtype == np.float32 and X.flags.c_contiguous
        assert y.shape == (*PATCH, 3) and y.dtype == np.float32
        assert np.isfinite(X).all()
        assert set(np.unique(y)) <= {0.0, 1.0} and y.sum(-1).max() <= 1, "targets stay one-hot after interpolation"
    batch_x, batch_y = PatchDataset(sampler, batch_size=2, steps=1)[0]
    assert batch_x.shape == (2, *PATCH, 4) and batch_y.shape == (2, *PATCH, 3)


def test_a_rotation_moves_image_and_label_together(monkeypatch):
    """Every patch rotated about its centre: the bright off-centre block is where the label says enhancing
    tumour, on every channel, and it has turned (the label map is none of the flips of the unrotated one)."""
    monkeypatch.setattr(augment, "P_ROTATION", 1.0)
    monkeypatch.setattr(augment, "P_SCALE", 0.0)
    case = _MarkedCase()
    plain = PatchSampler(case, ["C"], PATCH, foreground_fraction=1.0, augment=False)
    sampler = PatchSampler(case, ["C"], PATCH, foreground_fraction=1.0, augmentation="nnunet")
    turned = 0
    for seed in range(10):
        X, y = sampler.sample(np.random.default_rng(seed))
        _, y0 = plain.sample(np.random.default_rng(seed))
        marker = y[..., 2] > 0  # enhancing tumour
        inside = np.any(X != 0, axis=-1)
        assert marker.sum() > 50
        for c in range(4):
            high, low = X[..., c][marker].mean(), X[..., c][inside & ~marker].mean()
            assert high > low, f"seed {seed} channel {c}: the marker is not brighter where the label is"
            assert _dice(X[..., c] > (high + low) / 2, marker) > 0.7, f"seed {seed} channel {c}"
        flips = [np.flip(y0[..., 2], axes) for n in range(4) for axes in itertools.combinations(range(3), n)]
        turned += not any(np.array_equal(marker, f > 0) for f in flips)
    assert turned >= 8, "the patches were rotated"


def test_the_tumour_stays_where_the_sampler_centred_it(monkeypatch):
    """Rotated and zoomed about the patch centre: the block the patch was centred on stays at its centre."""
    monkeypatch.setattr(augment, "P_ROTATION", 1.0)
    monkeypatch.setattr(augment, "P_SCALE", 1.0)
    sampler = PatchSampler(_MarkedCase(), ["C"], PATCH, foreground_fraction=1.0, augmentation="nnunet")
    centre = (np.asarray(PATCH) - 1) / 2
    for seed in range(8):
        _, y = sampler.sample(np.random.default_rng(seed))
        coords = np.argwhere(y[..., 1] > 0)
        assert len(coords), f"seed {seed}: the tumour left the patch"
        # centred on a voxel of the 2x2x2 blob: its centre within 1 voxel on each axis, zoomed up to 1/0.7
        assert np.linalg.norm(coords.mean(0) - centre) <= np.sqrt(3) / 0.7 + 1, f"seed {seed}"


def test_intensity_transforms_draw_per_channel(monkeypatch):
    """Four identical channels in, different ones out (most patches): each channel gets its own draws."""
    monkeypatch.setattr(augment, "P_ROTATION", 0.0)
    monkeypatch.setattr(augment, "P_SCALE", 0.0)
    rng = np.random.default_rng(0)
    one = 1.0 + rng.random(PATCH, dtype=np.float32)
    X = one[..., None].repeat(4, -1)
    lab = np.zeros(PATCH, np.uint8)
    aug = NnUNetAugmentation(PATCH)
    differ = 0
    for seed in range(40):
        out, _ = aug.augment(X, lab, seed)
        differ += any(not np.allclose(out[..., c], out[..., 0], atol=1e-4) for c in range(1, 4))
    assert differ >= 20, f"channels differed in {differ} of 40 patches"


def test_background_stays_zero(monkeypatch):
    """The brain mask travels with the label: nothing outside it becomes non-zero (noise, blur, contrast)."""
    monkeypatch.setattr(augment, "P_ROTATION", 0.0)
    monkeypatch.setattr(augment, "P_SCALE", 0.0)
    case = _MarkedCase()
    aug = NnUNetAugmentation(PATCH)
    X0 = case.image("C")[16:48, 16:48, 16:32]
    lab = case.label("C")[16:48, 16:48, 16:32]
    assert (X0 == 0).any()
    for seed in range(20):
        out, out_lab = aug.augment(X0, lab, seed)
        assert np.any(out != 0, axis=-1).sum() == np.any(X0 != 0, axis=-1).sum(), f"seed {seed}"
        assert np.array_equal(np.any(out != 0, axis=-1), out_lab > 0), "brain and label flipped together"


def test_deterministic_by_seed_whatever_the_threads(cache):
    sampler = PatchSampler(cache, cache.case_ids, PATCH, foreground_fraction=0.5, augmentation="nnunet")
    np.random.seed(123)
    random.seed(123)
    numpy_state, python_state = np.random.get_state()[1].copy(), random.getstate()
    serial = [sampler.sample(np.random.default_rng(seed)) for seed in range(8)]
    assert np.array_equal(np.random.get_state()[1], numpy_state) and random.getstate() == python_state, (
        "the global generators are left as they were"
    )
    with ThreadPoolExecutor(4) as pool:
        threaded = list(pool.map(lambda seed: sampler.sample(np.random.default_rng(seed)), range(8)))
    for (a, b), (c, d) in zip(serial, threaded):
        np.testing.assert_array_equal(a, c)
        np.testing.assert_array_equal(b, d)
    assert not np.array_equal(serial[0][0], serial[1][0])
    one = PatchDataset(sampler, batch_size=2, steps=2, seed=3, workers=1)[1]
    two = PatchDataset(sampler, batch_size=2, steps=2, seed=3, workers=2)[1]
    np.testing.assert_array_equal(one[0], two[0])


def test_anisotropic_patches_rotate_in_plane_only():
    assert rotation_angles((160, 160, 16)) == (0.0, 0.0, pytest.approx(np.pi / 6))
    assert rotation_angles((64, 64, 32)) == pytest.approx((np.pi / 6,) * 3)


def test_augmentation_names_and_the_train_flag(tmp_path, monkeypatch, capsys):
    assert TrainConfig().augmentation == "basic" and set(AUGMENTATIONS) == {"basic", "nnunet"}
    assert _parser().parse_args(["--augmentation", "nnunet"]).augmentation == "nnunet"
    with pytest.raises(ValueError, match="augmentation must be one of basic, nnunet"):
        PatchSampler(_MarkedCase(), ["C"], PATCH, augmentation="elastic")
    monkeypatch.setenv("COURSE_DATA_DIR", str(tmp_path / "data"))
    bad = tmp_path / "bad"
    assert train_main(["--mode", "ci", "--output-dir", str(bad), "--augmentation", "elastic"]) == 2
    assert "augmentation must be one of basic, nnunet" in capsys.readouterr().err
    assert not bad.exists(), "refused before anything is written"
    # a real fit with it: tests/training/test_train_predict.py::test_train_cli_and_predict_cli
    assert preset("ci", augmentation="nnunet").augmentation == "nnunet"


def test_optional_elastic_deformation_is_deterministic_and_keeps_the_label_map(monkeypatch):
    monkeypatch.setattr(augment, "P_ROTATION", 0.0)
    monkeypatch.setattr(augment, "P_SCALE", 0.0)
    case = _MarkedCase()
    aug = NnUNetAugmentation(PATCH, elastic_probability=1.0)
    runs = [aug.sample(case.image("C"), case.label("C"), (16, 16, 16), np.random.default_rng(5)) for _ in range(2)]
    np.testing.assert_array_equal(runs[0][0], runs[1][0])
    np.testing.assert_array_equal(runs[0][1], runs[1][1])
    plain = case.label("C")[16:48, 16:48, 16:32]
    flips = [np.flip(plain, axes) for n in range(4) for axes in itertools.combinations(range(3), n)]
    deformed = 0
    for seed in range(6):
        _, lab = aug.sample(case.image("C"), case.label("C"), (16, 16, 16), np.random.default_rng(seed))
        assert set(np.unique(lab)) <= {0, 1, 2, 3}
        deformed += not any(np.array_equal(lab, f) for f in flips)
    assert deformed >= 4, f"{deformed} of 6 patches deformed"
    with pytest.raises(ValueError, match="elastic_probability"):
        NnUNetAugmentation(PATCH, elastic_probability=2.0)
