"""Sliding-window inference, the label-merge rule, NIfTI export and the metrics."""

import itertools

import keras
import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage

from utils.evaluation.metrics import class_scores, dice_score, evaluate_cases, hd95, jaccard_score, region_scores
from utils.inference.sliding_window import (
    WindowBlender,
    blend_windows,
    gaussian_profiles,
    gaussian_weights,
    predict_case,
    probabilities_to_labels,
    save_segmentation,
    sliding_window_predict,
    tile_predict,
    window_starts,
)
from utils.model.unet import build_unet


def _identity(batch):
    return np.asarray(batch, dtype=np.float32)


@pytest.mark.parametrize("overlap", [0.0, 0.25, 0.5, 0.75])
@pytest.mark.parametrize("weighting", ["gaussian", "constant"])
def test_identity_model_reproduces_its_input(overlap, weighting):
    image = np.random.default_rng(0).normal(size=(37, 29, 23, 3)).astype(np.float32)
    out = sliding_window_predict(
        None,
        image,
        window=(16, 12, 8),
        overlap=overlap,
        weighting=weighting,
        batch_size=3,
        progress=False,
        predict_fn=_identity,
    )
    # float32 accumulation: equal up to a few float32 roundings (measured at most 2e-6 relative)
    np.testing.assert_allclose(out, image, rtol=5e-6, atol=1e-6)


def test_identity_with_mirroring_and_padding():
    image = np.random.default_rng(1).normal(size=(10, 9, 7, 2)).astype(np.float32)
    out = sliding_window_predict(None, image, window=(12, 12, 8), mirror=True, progress=False, predict_fn=_identity)
    assert out.shape == image.shape  # padded to the window, cropped back
    np.testing.assert_allclose(out, image, atol=1e-6)


def test_identity_keras_model_on_a_whole_case():
    inp = keras.Input((16, 16, 8, 3))
    model = keras.Model(inp, keras.layers.Identity()(inp))
    image = np.random.default_rng(2).normal(size=(40, 33, 19, 3)).astype(np.float32)
    np.testing.assert_allclose(sliding_window_predict(model, image, progress=False), image, atol=1e-5)
    np.testing.assert_allclose(tile_predict(model, image), image, atol=1e-6)


def test_windows_cover_the_volume():
    for size, window, overlap in ((155, 16, 0.5), (240, 160, 0.5), (10, 10, 0.5), (17, 8, 0.0)):
        starts = window_starts(size, window, overlap)
        covered = np.zeros(size, bool)
        for s in starts:
            covered[s : s + window] = True
        assert covered.all() and starts[0] == 0 and starts[-1] == size - window
        if len(starts) > 1:
            assert max(np.diff(starts)) <= window * (1 - overlap) + 0.5
    assert window_starts(155, 16, 0.5) == list(np.round(np.linspace(0, 139, 19)).astype(int))


def _nnunet_steps(size, window, overlap):
    """nnU-Net's compute_steps_for_sliding_window for one axis, written out from its definition."""
    if size <= window:
        return [0]
    count = int(np.ceil((size - window) / (window * (1 - overlap)))) + 1
    actual = (size - window) / (count - 1)
    return [int(np.round(actual * i)) for i in range(count)]


@pytest.mark.parametrize("size,window", [(155, 16), (240, 160), (139, 15), (77, 9), (33, 33), (20, 7)])
@pytest.mark.parametrize("overlap", [0.0, 0.25, 0.5])
def test_window_starts_place_windows_as_nnunet(size, window, overlap):
    assert window_starts(size, window, overlap) == _nnunet_steps(size, window, overlap)


def _blend64(starts, preds, shape, weights):
    """Lesson 06's rule in float64, one window at a time: sum(weight * prediction) / sum(weight)."""
    window = weights.shape
    total, norm = np.zeros((*shape, preds[0].shape[-1])), np.zeros(shape)
    for (a, b, c), pred in zip(starts, preds):
        region = (slice(a, a + window[0]), slice(b, b + window[1]), slice(c, c + window[2]))
        total[region] += np.asarray(pred, np.float64) * weights[..., None]
        norm[region] += weights
    return total / norm[..., None]


def _content_and_position(batch):
    """A prediction that changes with each window's content and with the position in the window."""
    batch = np.asarray(batch, np.float64)
    ramp = np.linspace(-1.0, 1.0, batch.shape[1])[:, None, None]
    window_mean = np.broadcast_to(batch.mean(axis=(1, 2, 3, 4))[:, None, None, None], batch.shape[:4])
    logits = np.stack([batch[..., 0] - batch[..., 1] + ramp, window_mean - ramp, batch[..., 1] * ramp], axis=-1)
    return (1.0 / (1.0 + np.exp(-logits))).astype(np.float32)


@pytest.mark.parametrize("window", [(15, 11, 7), (16, 12, 8)])
@pytest.mark.parametrize("overlap", [0.25, 0.5])
@pytest.mark.parametrize("weighting", ["gaussian", "constant"])
def test_sliding_window_equals_the_plain_weighted_average(window, overlap, weighting):
    image = np.random.default_rng(4).normal(size=(37, 29, 23, 2)).astype(np.float32)
    weights = gaussian_weights(window).astype(np.float64) if weighting == "gaussian" else np.ones(window)
    starts = list(itertools.product(*[window_starts(s, w, overlap) for s, w in zip(image.shape[:3], window)]))
    preds = [
        _content_and_position(image[a : a + window[0], b : b + window[1], c : c + window[2]][None])[0]
        for a, b, c in starts
    ]
    expected = _blend64(starts, preds, image.shape[:3], weights)
    out = sliding_window_predict(
        None,
        image,
        window=window,
        overlap=overlap,
        weighting=weighting,
        batch_size=3,
        progress=False,
        predict_fn=_content_and_position,
    )
    assert out.dtype == np.float32 and out.shape == (37, 29, 23, 3)
    np.testing.assert_allclose(out, expected, rtol=0, atol=1e-6)


def test_sliding_window_places_windows_as_nnunet():
    shape, window = (37, 29, 23), (15, 11, 7)
    image = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), axis=-1).astype(np.float32)
    seen = []

    def record_corners(batch):
        seen.extend(tuple(int(v) for v in corner) for corner in batch[:, 0, 0, 0, :])
        return np.ones((*batch.shape[:4], 1), np.float32)

    sliding_window_predict(
        None, image, window=window, overlap=0.5, batch_size=4, progress=False, predict_fn=record_corners
    )
    assert seen == list(itertools.product(*[_nnunet_steps(s, w, 0.5) for s, w in zip(shape, window)]))


def test_separable_normalizer_equals_the_summed_weights():
    """Profiles on a grid: 1-D sums; an array, or windows off a grid: the weights summed window by window."""
    rng = np.random.default_rng(5)
    window, shape = (6, 5, 4), (14, 11, 9)
    grid = list(itertools.product(*[window_starts(s, w, 0.5) for s, w in zip(shape, window)]))
    for starts in (grid, grid + [(3, 2, 1)]):  # a grid, then a grid plus one more window
        preds = rng.random((len(starts), *window, 2)).astype(np.float32)
        separable = WindowBlender(shape, window, 2, gaussian_profiles(window))
        dense = WindowBlender(shape, window, 2, gaussian_weights(window))
        for start, pred in zip(starts, preds):
            separable.add(start, pred.copy())
            dense.add(start, pred.copy())
        assert (separable._grid_sums() is not None) == (starts is grid)  # the 1-D path is the one taken on a grid
        expected = _blend64(starts, preds, shape, gaussian_weights(window).astype(np.float64))
        np.testing.assert_allclose(separable.result(), expected, rtol=0, atol=1e-6)
        np.testing.assert_allclose(dense.result(), expected, rtol=0, atol=1e-6)


def test_blender_rejects_a_window_outside_the_volume():
    blender = WindowBlender((8, 8, 8), (4, 4, 4), 1)
    with pytest.raises(ValueError, match=r"a window at \(6, 0, 0\) of size \(4, 4, 4\) leaves the volume"):
        blender.add((6, 0, 0), np.zeros((4, 4, 4, 1), np.float32))
    with pytest.raises(ValueError, match="some voxels are covered by no window"):
        blender.add((0, 0, 0), np.zeros((4, 4, 4, 1), np.float32))
        blender.result()


def test_odd_window_gets_no_extra_window():
    # int(15 * 0.5) = 7 would need ceil(124 / 7) + 1 = 19 windows; a step of 7.5 needs 18
    assert len(window_starts(139, 15, 0.5)) == 18


def test_blend_windows_leaves_its_inputs_alone():
    preds = np.random.default_rng(3).random((2, 4, 4, 2, 3)).astype(np.float32)
    before = preds.copy()
    out = blend_windows(preds, [(0, 0, 0), (2, 0, 0)], (6, 4, 2), np.full((4, 4, 2), 0.5, np.float32))
    np.testing.assert_array_equal(preds, before)
    np.testing.assert_allclose(out[2:4], (preds[0, 2:4] + preds[1, :2]) / 2, rtol=1e-6)


def test_gaussian_weights():
    w = gaussian_weights((16, 16, 8))
    assert w.shape == (16, 16, 8) and w.dtype == np.float32
    assert w.max() == pytest.approx(1.0) and w.min() > 0
    assert w[8, 8, 4] > w[0, 0, 0]
    np.testing.assert_allclose(w, w[::-1, ::-1, ::-1], rtol=1e-6)  # symmetric
    x = np.arange(16)
    sigma = 16 / 8
    profile = np.exp(-0.5 * ((x - 7.5) / sigma) ** 2)
    np.testing.assert_allclose(w[:, 7, 3] / w[:, 7, 3].max(), profile / profile.max(), rtol=1e-5)


def test_gaussian_blending_removes_seams():
    """A model that predicts worse near its window border: tiles show seams, blending does not."""
    image = np.ones((64, 64, 16, 1), np.float32)
    edge = gaussian_weights((16, 16, 16), sigma_scale=0.3)[..., None]

    def border_biased(batch):
        return batch * (0.5 + 0.5 * edge)

    tiles = tile_predict(None, image, window=(16, 16, 16), predict_fn=border_biased)
    blended = sliding_window_predict(
        None, image, window=(16, 16, 16), overlap=0.5, progress=False, predict_fn=border_biased
    )
    # a constant input should give a constant output: measure the ripple inside the volume
    ripple = lambda v: np.ptp(v[8:56, 8:56, 8, 0])
    assert ripple(blended) < 0.5 * ripple(tiles)


def test_bad_inputs():
    model = build_unet((16, 16, 8, 4), depth=2, base_filters=2)
    with pytest.raises(ValueError, match="the model expects 4 input channels; the case has 3"):
        sliding_window_predict(model, np.zeros((20, 20, 10, 3), np.float32), progress=False)
    with pytest.raises(ValueError, match="overlap must be in"):
        sliding_window_predict(model, np.zeros((20, 20, 10, 4), np.float32), overlap=1.0, progress=False)
    with pytest.raises(ValueError, match="weighting must be one of"):
        sliding_window_predict(model, np.zeros((20, 20, 10, 4), np.float32), weighting="box", progress=False)
    with pytest.raises(ValueError, match=r"window \(8, 8, 8\) differs from the model's fixed input"):
        sliding_window_predict(model, np.zeros((20, 20, 10, 4), np.float32), window=(8, 8, 8), progress=False)


def test_label_merge_rule():
    probs = np.array(
        [[0.9, 0.1, 0.1], [0.9, 0.8, 0.1], [0.9, 0.8, 0.7], [0.1, 0.1, 0.7], [0.2, 0.6, 0.1], [0.4, 0.4, 0.4]],
        np.float32,
    )
    np.testing.assert_array_equal(probabilities_to_labels(probs), [1, 2, 3, 3, 2, 0])
    np.testing.assert_array_equal(probabilities_to_labels(probs, threshold=[0.5, 0.9, 0.3]), [1, 1, 3, 3, 0, 3])
    with pytest.raises(ValueError, match="3 class channels"):
        probabilities_to_labels(np.zeros((4, 2)))


def test_nifti_round_trip_keeps_the_affine(phantom_root, tmp_path):
    src = phantom_root / "imagesTr" / "PHANTOM_001.nii.gz"
    ref = nib.load(src)
    label = np.zeros(ref.shape[:3], np.uint8)
    label[20:30, 20:30, 10:20] = 3
    out = save_segmentation(
        label, src, tmp_path / "seg.nii.gz", probabilities=np.zeros((*ref.shape[:3], 3), np.float32)
    )
    seg = nib.load(out)
    np.testing.assert_array_equal(seg.affine, ref.affine)
    np.testing.assert_array_equal(np.asanyarray(seg.dataobj), label)
    assert seg.get_data_dtype() == np.uint8 and seg.shape == ref.shape[:3]
    assert seg.header.get_zooms() == ref.header.get_zooms()[:3]
    assert (tmp_path / "seg_probabilities.nii.gz").is_file()
    with pytest.raises(FileExistsError, match="exists"):
        save_segmentation(label, src, out)
    with pytest.raises(ValueError, match="refusing to overwrite the input"):
        save_segmentation(label, src, src)
    with pytest.raises(ValueError, match=r"label shape \(5, 5, 5\) does not match the input grid"):
        save_segmentation(np.zeros((5, 5, 5), np.uint8), src, tmp_path / "x.nii.gz")
    assert src.is_file() and nib.load(src).shape == ref.shape


def _ball(shape, centre, radius):
    grid = np.indices(shape)
    return ((grid - np.array(centre).reshape(3, 1, 1, 1)) ** 2).sum(0) <= radius**2


def test_dice_iou_hd95_against_scipy_reference():
    a = _ball((40, 40, 30), (20, 20, 15), 8)
    b = _ball((40, 40, 30), (22, 20, 15), 8)
    inter, total = (a & b).sum(), a.sum() + b.sum()
    assert dice_score(a, b) == pytest.approx(2 * inter / total)
    assert jaccard_score(a, b) == pytest.approx(inter / (a | b).sum())
    # reference for the voxel-centre HD95: brute force over surface voxel pairs with the spacing
    spacing = (1.0, 1.5, 2.0)
    sa = np.argwhere(a & ~ndimage.binary_erosion(a)) * spacing
    sb = np.argwhere(b & ~ndimage.binary_erosion(b)) * spacing
    d = np.sqrt(((sa[:, None, :] - sb[None, :, :]) ** 2).sum(-1))
    expected = max(np.percentile(d.min(1), 95), np.percentile(d.min(0), 95))
    assert hd95(a, b, spacing, "voxels") == pytest.approx(expected, rel=1e-6)
    assert hd95(a, a, spacing) == 0.0


def test_empty_mask_conventions():
    empty = np.zeros((24, 20, 10), bool)
    some = empty.copy()
    some[5:8, 5:8, 3:5] = True
    assert dice_score(empty, empty) == 1.0 and hd95(empty, empty) == 0.0
    assert dice_score(some, empty) == 0.0 and dice_score(empty, some) == 0.0
    diagonal = np.sqrt(24**2 + 20**2 + (10 * 2.0) ** 2)
    assert hd95(some, empty, (1, 1, 2)) == pytest.approx(diagonal)
    assert hd95(empty, some, (1, 1, 2)) == pytest.approx(diagonal)
    assert hd95(np.zeros((240, 240, 155), bool), np.pad(some, ((0, 216), (0, 220), (0, 145)))) == pytest.approx(
        373.13, abs=0.01
    )


def test_region_and_class_scores():
    truth = np.zeros((20, 20, 10), np.uint8)
    truth[4:16, 4:16, 2:8] = 1
    truth[7:13, 7:13, 3:7] = 2
    truth[9:11, 9:11, 4:6] = 3
    pred = truth.copy()
    pred[pred == 3] = 2  # enhancing missed, called core
    scores = region_scores(truth, pred)
    assert scores["Dice WT"] == 1.0 and scores["Dice TC"] == 1.0 and scores["Dice ET"] == 0.0
    assert scores["HD95 WT"] == 0.0 and scores["HD95 ET"] == pytest.approx(np.sqrt(20**2 * 2 + 10**2))
    table = class_scores(truth, pred)
    assert table.loc["Dice", "Edema"] == 1.0 and table.loc["Dice", "Enhancing tumour"] == 0.0
    assert table.loc["Sensitivity", "Enhancing tumour"] == 0.0
    summary = evaluate_cases([("a", truth, pred, (1, 1, 1)), ("b", truth, truth, (1, 1, 1))])
    assert list(summary.index) == ["a", "b", "mean", "median"]
    assert summary.loc["mean", "Dice ET"] == 0.5
    assert "Dice Edema" not in summary.columns
    classes = evaluate_cases([("a", truth, pred, (1, 1, 1)), ("b", truth, truth, (1, 1, 1))], with_classes=True)
    assert classes.loc["a", "Dice Edema"] == 1.0 and classes.loc["a", "Dice Enhancing tumour"] == 0.0
    assert classes.loc["a", "Dice mean (classes)"] == pytest.approx(
        classes.loc["a", ["Dice Edema", "Dice Non-enhancing tumour", "Dice Enhancing tumour"]].mean(), abs=1e-4
    )
    assert classes.loc["mean", "Dice Enhancing tumour"] == 0.5


def test_predict_case_end_to_end(phantom_root):
    from utils.data.datasets import load_msd_case

    case = load_msd_case(phantom_root, "PHANTOM_001")
    model = build_unet((32, 32, 16, 4), depth=2, base_filters=2)
    label, probs = predict_case(model, case.image, progress=False)
    assert label.shape == case.label.shape and label.dtype == np.uint8
    assert probs.shape == (*case.label.shape, 3) and 0 <= probs.min() and probs.max() <= 1
