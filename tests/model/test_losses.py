"""Loss and metrics against independent NumPy computations; the loss trains."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from keras import ops

from utils.evaluation.metrics import compute_class_sens_spec, get_sens_spec_df
from utils.model.losses import (
    batch_dice_bce_loss,
    dice_bce_loss,
    dice_coefficient,
    dice_edema,
    dice_enhancing,
    single_class_dice_coefficient,
    soft_dice_loss,
)


def _np(x):
    return np.asarray(ops.convert_to_numpy(x), dtype=np.float64)


@pytest.fixture()
def batch():
    rng = np.random.default_rng(0)
    y_true = (rng.random((3, 8, 7, 5, 3)) < 0.25).astype(np.float32)
    y_true[1, ..., 2] = 0.0  # one sample without enhancing tumour
    y_pred = rng.random((3, 8, 7, 5, 3)).astype(np.float32)
    return y_true, y_pred


def _per_sample_class(y_true, y_pred, eps, square=False):
    out = np.zeros((y_true.shape[0], y_true.shape[-1]))
    for b in range(y_true.shape[0]):
        for c in range(y_true.shape[-1]):
            t, p = y_true[b, ..., c].astype(np.float64), y_pred[b, ..., c].astype(np.float64)
            den = (p**2).sum() + (t**2).sum() if square else p.sum() + t.sum()
            out[b, c] = (2 * (t * p).sum() + eps) / (den + eps)
    return out


@pytest.mark.parametrize("eps", [1e-5, 1.0])
def test_dice_and_soft_dice_agree_with_numpy(batch, eps):
    y_true, y_pred = batch
    assert _np(dice_coefficient(y_true, y_pred, epsilon=eps)) == pytest.approx(
        _per_sample_class(y_true, y_pred, eps).mean(), rel=1e-5
    )
    assert _np(soft_dice_loss(y_true, y_pred, epsilon=eps)) == pytest.approx(
        1 - _per_sample_class(y_true, y_pred, eps, square=True).mean(), rel=1e-5
    )
    t, p = y_true[0, ..., 1], y_pred[0, ..., 1]
    assert _np(single_class_dice_coefficient(t, p, epsilon=eps)) == pytest.approx(
        (2 * (t * p).sum() + eps) / (t.sum() + p.sum() + eps), rel=1e-5
    )
    assert _np(dice_edema(y_true, y_pred)) == pytest.approx(
        _per_sample_class(y_true, y_pred, 1e-5)[:, 0].mean(), rel=1e-5
    )
    assert _np(dice_enhancing(y_true, y_pred)) == pytest.approx(
        _per_sample_class(y_true, y_pred, 1e-5)[:, 2].mean(), rel=1e-5
    )


def test_dice_bce_is_dice_plus_mean_bce(batch):
    y_true, y_pred = batch
    p = np.clip(y_pred.astype(np.float64), 1e-7, 1 - 1e-7)
    bce = -(y_true * np.log(p) + (1 - y_true) * np.log(1 - p)).mean()
    assert _np(dice_bce_loss(y_true, y_pred)) == pytest.approx(_np(soft_dice_loss(y_true, y_pred)) + bce, rel=1e-4)


def test_batch_dice_pools_the_batch_so_an_empty_patch_feels_its_false_positives():
    """nnU-Net's batch Dice: one Dice per class over the whole batch, plus the same BCE."""
    y_true = np.zeros((2, 4, 4, 2, 3), np.float32)
    y_true[0, :2, :2, :, :] = 1.0  # patch 0 has tumour, patch 1 none
    clean = y_true * 0.9
    noisy = clean.copy()
    noisy[1, 2:, 2:, :, :] = 0.6  # false positives in the empty patch
    p = np.clip(noisy.astype(np.float64), 1e-7, 1 - 1e-7)
    bce = -(y_true * np.log(p) + (1 - y_true) * np.log(1 - p)).mean()
    inter = (y_true * noisy).sum(axis=(0, 1, 2, 3))
    dice = (2 * inter + 1e-5) / ((noisy**2).sum(axis=(0, 1, 2, 3)) + (y_true**2).sum(axis=(0, 1, 2, 3)) + 1e-5)
    assert _np(batch_dice_bce_loss(y_true, noisy)) == pytest.approx(1 - dice.mean() + bce, rel=1e-4)
    # per-sample Dice gives the empty patch a loss of almost exactly 1 however faint its false
    # positives are, so it barely pushes them down; in the pooled Dice they weigh as they should
    fainter = noisy.copy()
    fainter[1] *= 0.1
    assert _np(soft_dice_loss(y_true, noisy)) == pytest.approx(_np(soft_dice_loss(y_true, fainter)), abs=1e-3)
    assert _np(batch_dice_bce_loss(y_true, noisy)) > _np(batch_dice_bce_loss(y_true, fainter)) + 0.1
    # a 2D batch (B, x, y, C): the same per-class pooling, over the slices of the batch
    flat = lambda a: a.transpose(0, 3, 1, 2, 4).reshape(-1, 4, 4, 3)  # every z-slice a sample
    assert _np(batch_dice_bce_loss(flat(y_true), flat(noisy))) == pytest.approx(1 - dice.mean() + bce, rel=1e-4)


def test_gradient_is_finite_at_zero_and_one():
    y_true = tf.constant(np.array([1, 0, 1, 0], np.float32).reshape(1, 2, 2, 1, 1))
    for value in (0.0, 1.0):
        y_pred = tf.Variable(np.full((1, 2, 2, 1, 1), value, np.float32))
        for loss in (soft_dice_loss, dice_bce_loss):
            with tf.GradientTape() as tape:
                out = loss(y_true, y_pred)
            grad = tape.gradient(out, y_pred).numpy()
            assert np.all(np.isfinite(grad)), (loss.__name__, value, grad)
    # all-empty target and prediction: the loss is 0 and its gradient finite
    zero = tf.Variable(np.zeros((1, 2, 2, 1, 1), np.float32))
    with tf.GradientTape() as tape:
        out = soft_dice_loss(tf.zeros((1, 2, 2, 1, 1)), zero)
    assert float(out) == pytest.approx(0.0, abs=1e-6)
    assert np.all(np.isfinite(tape.gradient(out, zero).numpy()))


def test_soft_dice_loss_trains_a_tiny_model():
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(8, 8, 8, 4, 1)).astype(np.float32)
    y = (x[..., :1] > 0.5).astype(np.float32)  # learnable: threshold of the input
    model = keras.Sequential([keras.Input((8, 8, 4, 1)), keras.layers.Conv3D(1, 1, activation="sigmoid")])
    model.compile(optimizer=keras.optimizers.Adam(0.05), loss=soft_dice_loss)
    history = model.fit(x, y, epochs=40, batch_size=8, verbose=0)
    assert history.history["loss"][-1] < 0.5 * history.history["loss"][0]


def test_sens_spec_against_counts():
    rng = np.random.default_rng(3)
    label = (rng.random((10, 9, 8, 3)) < 0.3).astype(np.uint8)
    pred = (rng.random((10, 9, 8, 3)) < 0.3).astype(np.uint8)
    for k in range(3):
        t, p = label[..., k] == 1, pred[..., k] == 1
        sens, spec = compute_class_sens_spec(pred, label, k)
        assert sens == pytest.approx(np.logical_and(p, t).sum() / t.sum())
        assert spec == pytest.approx(np.logical_and(~p, ~t).sum() / (~t).sum())
    table = get_sens_spec_df(pred, label)
    assert list(table.columns) == ["Edema", "Non-enhancing tumour", "Enhancing tumour"]
    assert list(table.index) == ["Sensitivity", "Specificity"]
    assert table.iloc[0, 1] == pytest.approx(round(compute_class_sens_spec(pred, label, 1)[0], 4))


def test_sens_spec_empty_cases_are_documented_nan():
    empty = np.zeros((4, 4, 4, 3), np.uint8)
    sens, spec = compute_class_sens_spec(empty, empty, 0)
    assert np.isnan(sens) and spec == 1.0
    full = np.ones((4, 4, 4, 3), np.uint8)
    sens, spec = compute_class_sens_spec(full, full, 2)
    assert sens == 1.0 and np.isnan(spec)
    with pytest.raises(ValueError, match="pred shape"):
        compute_class_sens_spec(empty, empty[:2], 0)


def test_the_assignment_axis_bug_pools_samples():
    """Summing over (0, 1, 2, 3) on a batch pools samples: a missed case hides."""
    y_true = np.zeros((2, 10, 10, 4, 1), np.float32)
    y_true[0, 1:9, 1:9] = 1
    y_true[1, 4:6, 4:6, 1:3] = 1
    y_pred = y_true.copy()
    y_pred[1] = 0
    ours = _np(dice_coefficient(y_true, y_pred))
    pooled = _np(ops.mean(single_class_dice_coefficient(y_true, y_pred, axis=(0, 1, 2, 3))))
    assert ours == pytest.approx(0.5, abs=1e-3) and pooled > 0.97
