import numpy as np
import pytest

from utils.data.labels import BRATS_TO_MSD, brats_to_msd, msd_to_brats, one_hot, region_mask


def test_brats_mapping_values():
    brats = np.array([0, 1, 2, 4, 2, 0], dtype=np.int16)
    np.testing.assert_array_equal(brats_to_msd(brats), [0, 2, 1, 3, 1, 0])
    assert brats_to_msd(brats).dtype == np.uint8


def test_edema_stays_edema():
    # BraTS marks edema with 2; in the MSD convention edema is 1. A voxel that
    # a radiologist called edema must come out as edema, not as tumour core.
    brats = np.zeros((6, 6, 6), dtype=np.uint8)
    brats[1:5, 1:5, 1:5] = 2  # edema shell
    brats[2:4, 2:4, 2:4] = 1  # necrotic / non-enhancing core
    brats[3, 3, 3] = 4  # enhancing
    msd = brats_to_msd(brats)
    assert np.all(msd[brats == 2] == 1)
    assert np.all(msd[brats == 1] == 2)
    assert np.all(msd[brats == 4] == 3)
    assert np.all(msd[brats == 0] == 0)


def test_round_trip_and_bad_values():
    msd = np.arange(4).repeat(3)
    np.testing.assert_array_equal(brats_to_msd(msd_to_brats(msd)), msd)
    assert BRATS_TO_MSD[2] == 1
    with pytest.raises(ValueError, match=r"found unexpected values \[3\]"):
        brats_to_msd(np.array([0, 3]))
    with pytest.raises(ValueError, match=r"\[4\]"):
        msd_to_brats(np.array([4]))


def test_one_hot_drops_background():
    label = np.array([[0, 1], [2, 3]])
    oh = one_hot(label)
    assert oh.shape == (2, 2, 3) and oh.dtype == np.float32
    np.testing.assert_array_equal(oh[0, 0], [0, 0, 0])
    np.testing.assert_array_equal(oh[0, 1], [1, 0, 0])
    np.testing.assert_array_equal(oh[1, 0], [0, 1, 0])
    np.testing.assert_array_equal(oh[1, 1], [0, 0, 1])


def test_regions_are_nested():
    label = np.array([0, 1, 2, 3])
    np.testing.assert_array_equal(region_mask(label, "WT"), [0, 1, 1, 1])
    np.testing.assert_array_equal(region_mask(label, "TC"), [0, 0, 1, 1])
    np.testing.assert_array_equal(region_mask(label, "ET"), [0, 0, 0, 1])
    with pytest.raises(ValueError, match="region must be one of"):
        region_mask(label, "XX")


def test_label_to_regions_nests_the_brats_regions():
    from utils.data.labels import label_to_regions

    label = np.array([0, 1, 2, 3], dtype=np.uint8)
    regions = label_to_regions(label)
    assert regions.dtype == np.float32 and regions.shape == (4, 3)
    np.testing.assert_array_equal(regions, [[0, 0, 0], [1, 0, 0], [1, 1, 0], [1, 1, 1]])
    with pytest.raises(ValueError, match=r"unexpected values \[4\]"):
        label_to_regions(np.array([0, 4]))


def test_regions_to_label_is_hierarchical_and_inverts_label_to_regions():
    from utils.data.labels import label_to_regions, regions_to_label

    rng = np.random.default_rng(0)
    label = rng.integers(0, 4, size=(5, 6, 7)).astype(np.uint8)
    np.testing.assert_array_equal(regions_to_label(label_to_regions(label)), label)
    # an enhancing probability outside the core does not make enhancing tumour
    probs = np.array([[0.9, 0.2, 0.9], [0.2, 0.9, 0.9], [0.9, 0.9, 0.4], [0.6, 0.7, 0.8]])
    np.testing.assert_array_equal(regions_to_label(probs), [1, 0, 2, 3])
    with pytest.raises(ValueError, match="3 channels"):
        regions_to_label(np.zeros((4, 4)))
