"""The graders against learner-like answers.

Each wrong implementation below is a mistake learners really make that still
gives the right shapes; each must FAIL its check, in the public variant (the
lesson's check cell) and in the grading variant (other inputs). Each correct
alternative is written in another style than the reference and must PASS both.
"""

from __future__ import annotations

import contextlib
import io
import re

import numpy as np
import pandas as pd
import pytest

from utils.course.checks import ExerciseCheckError, run_check
from utils.course.checks import runner as check_runner
from utils.data.labels import CLASS_NAMES

from exercise_registry import EXERCISES

WRONG: dict[str, list] = {name: [] for name in EXERCISES}
CORRECT: dict[str, list] = {name: [] for name in EXERCISES}


def wrong(name: str):
    def register(fn):
        WRONG[name].append(fn)
        return fn

    return register


def correct(name: str):
    def register(fn):
        CORRECT[name].append(fn)
        return fn

    return register


# ----------------------------------------------------------------------------
# Lesson 02: get_sub_volume
# ----------------------------------------------------------------------------


def _patch(image, label, start, size, num_classes, one_hot=None):
    window = tuple(slice(s, s + n) for s, n in zip(start, size))
    y = (
        (label[window][..., None] == np.arange(num_classes)).astype(np.float32)
        if one_hot is None
        else one_hot(label[window])
    )
    return np.array(image[window], dtype=np.float32), y


def _sampler(draw_start, accept=lambda share, thr: share < thr, one_hot=None, drop=slice(1, None)):
    def get_sub_volume(
        image,
        label,
        orig_x=240,
        orig_y=240,
        orig_z=155,
        output_x=160,
        output_y=160,
        output_z=16,
        num_classes=4,
        max_tries=1000,
        background_threshold=0.95,
    ):
        size = (output_x, output_y, output_z)
        for _ in range(max_tries):
            start = draw_start((orig_x, orig_y, orig_z), size)
            X, y = _patch(image, label, start, size, num_classes, one_hot)
            if accept(float(y[..., 0].mean()), background_threshold):
                return X, y[..., drop]
        raise ValueError("no patch")

    return get_sub_volume


_uniform = lambda orig, size: [np.random.randint(0, o - s + 1) for o, s in zip(orig, size)]  # noqa: E731

gsv_x_y_swapped = wrong("get_sub_volume")(
    _sampler(
        lambda orig, size: [
            np.random.randint(0, orig[1] - size[1] + 1),
            np.random.randint(0, orig[0] - size[0] + 1),
            np.random.randint(0, orig[2] - size[2] + 1),
        ]
    )
)
gsv_x_y_swapped.__name__ = "gsv_x_y_swapped"
gsv_last_corner_excluded = wrong("get_sub_volume")(
    _sampler(lambda orig, size: [np.random.randint(0, max(o - s, 1)) for o, s in zip(orig, size)])
)
gsv_last_corner_excluded.__name__ = "gsv_last_corner_excluded"
gsv_less_or_equal = wrong("get_sub_volume")(_sampler(_uniform, accept=lambda share, thr: share <= thr))
gsv_less_or_equal.__name__ = "gsv_less_or_equal"
gsv_one_hot_from_data = wrong("get_sub_volume")(
    _sampler(_uniform, one_hot=lambda lab: np.eye(int(lab.max()) + 1, dtype=np.float32)[lab])
)
gsv_one_hot_from_data.__name__ = "gsv_one_hot_from_data"
gsv_keeps_background = wrong("get_sub_volume")(_sampler(_uniform, drop=slice(None)))
gsv_keeps_background.__name__ = "gsv_keeps_background"
gsv_not_random = wrong("get_sub_volume")(_sampler(lambda orig, size: [0, 0, 0]))
gsv_not_random.__name__ = "gsv_not_random"
gsv_drops_last_class = wrong("get_sub_volume")(_sampler(_uniform, drop=slice(0, -1)))
gsv_drops_last_class.__name__ = "gsv_drops_last_class"


@wrong("get_sub_volume")
def gsv_x_y_window_swapped(
    image,
    label,
    orig_x=240,
    orig_y=240,
    orig_z=155,
    output_x=160,
    output_y=160,
    output_z=16,
    num_classes=4,
    max_tries=1000,
    background_threshold=0.95,
):
    for _ in range(max_tries):
        sx, sy, sz = (
            np.random.randint(0, o - s + 1) for o, s in ((orig_x, output_x), (orig_y, output_y), (orig_z, output_z))
        )
        window = (slice(sx, sx + output_y), slice(sy, sy + output_x), slice(sz, sz + output_z))
        y = (label[window][..., None] == np.arange(num_classes)).astype(np.float32)
        if y[..., 0].mean() < background_threshold:
            return image[window], y[..., 1:]
    raise ValueError("no patch")


@correct("get_sub_volume")
def gsv_generator_z_first_to_categorical(
    image,
    label,
    orig_x=240,
    orig_y=240,
    orig_z=155,
    output_x=160,
    output_y=160,
    output_z=16,
    num_classes=4,
    max_tries=1000,
    background_threshold=0.95,
):
    import keras

    rng = np.random.default_rng()
    for _ in range(max_tries):
        sz = rng.integers(0, orig_z - output_z + 1)
        sy = rng.integers(0, orig_y - output_y + 1)
        sx = rng.integers(0, orig_x - output_x + 1)
        lab = label[sx : sx + output_x, sy : sy + output_y, sz : sz + output_z]
        y = keras.utils.to_categorical(lab, num_classes=num_classes)
        if np.sum(y[..., 0]) / lab.size < background_threshold:
            return image[sx : sx + output_x, sy : sy + output_y, sz : sz + output_z, :], y[..., 1:]
    raise ValueError(f"gave up after {max_tries} tries")


@correct("get_sub_volume")
def gsv_python_random_eye(
    image,
    label,
    orig_x=240,
    orig_y=240,
    orig_z=155,
    output_x=160,
    output_y=160,
    output_z=16,
    num_classes=4,
    max_tries=1000,
    background_threshold=0.95,
):
    import random

    tries = 0
    while tries < max_tries:
        tries += 1
        start = [
            random.randint(0, orig - out) for orig, out in [(orig_x, output_x), (orig_y, output_y), (orig_z, output_z)]
        ]  # randint includes both ends
        end = [s + n for s, n in zip(start, [output_x, output_y, output_z])]
        patch = label[start[0] : end[0], start[1] : end[1], start[2] : end[2]]
        onehot = np.eye(num_classes)[patch]
        background = 1.0 - onehot[..., 1:].sum() / patch.size
        if background < background_threshold:
            return image[start[0] : end[0], start[1] : end[1], start[2] : end[2]].astype(float), onehot[..., 1:]
    raise ValueError("no patch with enough tumour")


# ----------------------------------------------------------------------------
# Lesson 02: standardize
# ----------------------------------------------------------------------------


def _z_score(image, axes, ddof=0, out=None):
    image_f = np.asarray(image, float)
    mean = image_f.mean(axis=axes, keepdims=True)
    std = image_f.std(axis=axes, keepdims=True, ddof=ddof)
    result = np.zeros_like(image) if out == "like_input" else np.zeros_like(image_f)
    result[...] = np.divide(image_f - mean, std, out=np.zeros_like(image_f), where=std > 0)
    return result


@wrong("standardize")
def std_sample_std(image):
    return _z_score(image, (0, 1), ddof=1)


@wrong("standardize")
def std_whole_volume(image):
    return _z_score(image, (0, 1, 2, 3))


@wrong("standardize")
def std_per_channel_only(image):
    return _z_score(image, (0, 1, 2))


@wrong("standardize")
def std_inherits_int_dtype(image):
    out = np.zeros_like(image)
    for c in range(image.shape[3]):
        for z in range(image.shape[2]):
            sl = image[:, :, z, c]
            if sl.std() > 0:
                out[:, :, z, c] = (sl - sl.mean()) / sl.std()
    return out


@wrong("standardize")
def std_nan_on_constant(image):
    image = np.asarray(image, float)
    with np.errstate(all="ignore"):
        return (image - image.mean(axis=(0, 1), keepdims=True)) / image.std(axis=(0, 1), keepdims=True)


@wrong("standardize")
def std_in_place(image):
    for c in range(image.shape[3]):
        for z in range(image.shape[2]):
            sl = image[:, :, z, c]
            std = sl.std()
            image[:, :, z, c] = (sl - sl.mean()) / std if std > 0 else 0.0
    return image


@correct("standardize")
def std_loop_float_copy(image):
    out = np.zeros(image.shape, dtype=np.float64)
    for c in range(image.shape[3]):
        for z in range(image.shape[2]):
            sl = image[:, :, z, c].astype(np.float64)
            std = np.std(sl)
            if std > 0:
                out[:, :, z, c] = (sl - np.mean(sl)) / std
    return out


@correct("standardize")
def std_where(image):
    image = image.astype(np.float32)
    mu = np.mean(image, axis=(0, 1))
    sigma = np.std(image, axis=(0, 1))
    safe = np.where(sigma == 0, 1.0, sigma)
    return np.where(sigma == 0, 0.0, (image - mu) / safe)


# ----------------------------------------------------------------------------
# Lesson 03: conv_block
# ----------------------------------------------------------------------------


def _layers():
    from keras import layers

    return layers


def _block(
    x,
    filters,
    normalization,
    activation="relu",
    first_activation=True,
    norm_layer=None,
    padding="same",
    kernel=3,
    relu_before_norm=False,
):
    layers = _layers()
    for i in range(2):
        x = layers.Conv3D(filters, kernel, padding=padding, use_bias=normalization is None)(x)
        act = activation if (i == 1 or first_activation) else None
        if relu_before_norm and act:
            x = layers.Activation(act)(x)
        if normalization == "batch":
            x = layers.BatchNormalization()(x)
        elif normalization == "instance":
            x = (norm_layer or (lambda: layers.GroupNormalization(groups=-1)))()(x)
        if act and not relu_before_norm:
            x = layers.Activation(act)(x)
    return x


@wrong("conv_block")
def cb_sigmoid(x, filters, normalization=None, name=None):
    return _block(x, filters, normalization, activation="sigmoid")


@wrong("conv_block")
def cb_softplus(x, filters, normalization=None, name=None):
    return _block(x, filters, normalization, activation="softplus")


@wrong("conv_block")
def cb_missing_first_relu_without_normalization(x, filters, normalization=None, name=None):
    return _block(x, filters, normalization, first_activation=normalization is not None)


@wrong("conv_block")
def cb_instance_as_layer_norm(x, filters, normalization=None, name=None):
    return _block(x, filters, normalization, norm_layer=lambda: _layers().LayerNormalization())


@wrong("conv_block")
def cb_instance_two_groups(x, filters, normalization=None, name=None):
    return _block(x, filters, normalization, norm_layer=lambda: _layers().GroupNormalization(groups=2))


@wrong("conv_block")
def cb_instance_one_group(x, filters, normalization=None, name=None):
    return _block(x, filters, normalization, norm_layer=lambda: _layers().GroupNormalization(groups=1))


@wrong("conv_block")
def cb_valid_padding(x, filters, normalization=None, name=None):
    return _block(x, filters, normalization, padding="valid")


@wrong("conv_block")
def cb_kernel_two(x, filters, normalization=None, name=None):
    return _block(x, filters, normalization, kernel=2)


@wrong("conv_block")
def cb_relu_before_normalization(x, filters, normalization=None, name=None):
    return _block(x, filters, normalization, relu_before_norm=True)


@correct("conv_block")
def cb_sequential_ops_relu(x, filters, normalization=None, name=None):
    import keras
    from keras import layers, ops

    for _ in range(2):
        steps = [layers.Conv3D(filters, (3, 3, 3), padding="same", use_bias=not normalization)]
        if normalization == "batch":
            steps.append(layers.BatchNormalization())
        if normalization == "instance":
            steps.append(layers.GroupNormalization(groups=filters))
        x = ops.relu(keras.Sequential(steps)(x))
    return x


@correct("conv_block")
def cb_relu_layers_named(x, filters, normalization=None, name=None):
    from keras import layers

    norms = {"batch": layers.BatchNormalization, "instance": lambda: layers.GroupNormalization(-1)}
    prefix = name or "block"
    y = layers.Conv3D(filters, [3, 3, 3], padding="same", use_bias=normalization is None, name=f"{prefix}_a")(x)
    if normalization:
        y = norms[normalization]()(y)
    y = layers.ReLU()(y)
    y = layers.Conv3D(filters, 3, strides=1, padding="same", use_bias=normalization is None, name=f"{prefix}_b")(y)
    if normalization:
        y = norms[normalization]()(y)
    return layers.ReLU()(y)


# ----------------------------------------------------------------------------
# Lesson 03: upsampling_block
# ----------------------------------------------------------------------------


def _ref_conv_block(x, filters, normalization):
    from utils.model.unet import conv_block

    return conv_block(x, filters, normalization)


@wrong("upsampling_block")
def ub_relu_on_transpose(x, skip, filters, pool_size=(2, 2, 2), normalization=None, name=None):
    layers = _layers()
    up = layers.Conv3DTranspose(filters, pool_size, strides=pool_size, activation="relu")(x)
    return _ref_conv_block(layers.Concatenate()([up, skip]), filters, normalization)


@wrong("upsampling_block")
def ub_skip_ignored(x, skip, filters, pool_size=(2, 2, 2), normalization=None, name=None):
    layers = _layers()
    return _ref_conv_block(layers.Conv3DTranspose(filters, pool_size, strides=pool_size)(x), filters, normalization)


@wrong("upsampling_block")
def ub_skip_added(x, skip, filters, pool_size=(2, 2, 2), normalization=None, name=None):
    layers = _layers()
    up = layers.Conv3DTranspose(filters, pool_size, strides=pool_size)(x)
    return _ref_conv_block(layers.Add()([up, layers.Conv3D(filters, 1)(skip)]), filters, normalization)


@wrong("upsampling_block")
def ub_kernel_three(x, skip, filters, pool_size=(2, 2, 2), normalization=None, name=None):
    layers = _layers()
    up = layers.Conv3DTranspose(filters, 3, strides=pool_size, padding="same")(x)
    return _ref_conv_block(layers.Concatenate()([up, skip]), filters, normalization)


@wrong("upsampling_block")
def ub_stride_two_always(x, skip, filters, pool_size=(2, 2, 2), normalization=None, name=None):
    layers = _layers()
    up = layers.Conv3DTranspose(filters, pool_size, strides=2, padding="same")(x)
    return _ref_conv_block(layers.Concatenate()([up, skip]), filters, normalization)


@wrong("upsampling_block")
def ub_upsampling_layer(x, skip, filters, pool_size=(2, 2, 2), normalization=None, name=None):
    layers = _layers()
    up = layers.Conv3D(filters, 3, padding="same")(layers.UpSampling3D(pool_size)(x))
    return _ref_conv_block(layers.Concatenate()([up, skip]), filters, normalization)


@wrong("upsampling_block")
def ub_normalization_dropped(x, skip, filters, pool_size=(2, 2, 2), normalization=None, name=None):
    layers = _layers()
    up = layers.Conv3DTranspose(filters, pool_size, strides=pool_size)(x)
    return _ref_conv_block(layers.Concatenate()([up, skip]), filters, None)


@correct("upsampling_block")
def ub_skip_first_ops_concatenate(x, skip, filters, pool_size=(2, 2, 2), normalization=None, name=None):
    from keras import layers, ops

    up = layers.Conv3DTranspose(filters, kernel_size=tuple(pool_size), strides=tuple(pool_size))(x)
    return cb_sequential_ops_relu(ops.concatenate([skip, up], axis=-1), filters, normalization)


@correct("upsampling_block")
def ub_sequential_up_concatenate_layer(x, skip, filters, pool_size=(2, 2, 2), normalization=None, name=None):
    import keras
    from keras import layers

    up = keras.Sequential([layers.Conv3DTranspose(filters, list(pool_size), strides=list(pool_size), padding="valid")])(
        x
    )
    merged = layers.Concatenate(axis=4)([skip, up])
    return cb_relu_layers_named(merged, filters, normalization, name)


# ----------------------------------------------------------------------------
# Lesson 04: Dice
# ----------------------------------------------------------------------------


def _ops():
    from keras import ops

    return ops


def _dice_parts(y_true, y_pred, axis, epsilon, squares=False, num_eps=None, den_eps=None):
    ops = _ops()
    y_true, y_pred = ops.cast(y_true, "float32"), ops.cast(y_pred, "float32")
    num = 2.0 * ops.sum(y_true * y_pred, axis=axis) + (epsilon if num_eps is None else num_eps)
    if squares:
        den = ops.sum(ops.square(y_true), axis=axis) + ops.sum(ops.square(y_pred), axis=axis)
    else:
        den = ops.sum(y_true, axis=axis) + ops.sum(y_pred, axis=axis)
    return num / (den + (epsilon if den_eps is None else den_eps))


@wrong("single_class_dice_coefficient")
def scd_xy_only(y_true, y_pred, axis=(0, 1, 2), epsilon=0.00001):
    return _ops().mean(_dice_parts(y_true, y_pred, (0, 1), epsilon))


@wrong("single_class_dice_coefficient")
def scd_squares(y_true, y_pred, axis=(0, 1, 2), epsilon=0.00001):
    return _dice_parts(y_true, y_pred, axis, epsilon, squares=True)


@wrong("single_class_dice_coefficient")
def scd_one_minus(y_true, y_pred, axis=(0, 1, 2), epsilon=0.00001):
    return 1.0 - _dice_parts(y_true, y_pred, axis, epsilon)


@wrong("single_class_dice_coefficient")
def scd_eps_denominator_only(y_true, y_pred, axis=(0, 1, 2), epsilon=0.00001):
    return _dice_parts(y_true, y_pred, axis, epsilon, num_eps=0.0)


@wrong("single_class_dice_coefficient")
def scd_eps_inside_twice(y_true, y_pred, axis=(0, 1, 2), epsilon=0.00001):
    return _dice_parts(y_true, y_pred, axis, epsilon, num_eps=2 * epsilon)


@wrong("single_class_dice_coefficient")
def scd_ignores_axis(y_true, y_pred, axis=(0, 1, 2), epsilon=0.00001):
    return _dice_parts(y_true, y_pred, (0, 1, 2), epsilon)


@correct("single_class_dice_coefficient")
def scd_numpy(y_true, y_pred, axis=(0, 1, 2), epsilon=0.00001):
    y_true, y_pred = np.asarray(y_true, float), np.asarray(y_pred, float)
    return (2 * np.sum(y_true * y_pred, axis=axis) + epsilon) / (
        np.sum(y_true, axis=axis) + np.sum(y_pred, axis=axis) + epsilon
    )


@correct("single_class_dice_coefficient")
def scd_ops_no_cast(y_true, y_pred, axis=(0, 1, 2), epsilon=0.00001):
    ops = _ops()
    intersection = ops.sum(ops.multiply(y_true, y_pred), axis=list(axis))
    return ops.divide(2 * intersection + epsilon, ops.sum(y_true + y_pred, axis=list(axis)) + epsilon)


@wrong("dice_coefficient")
def dc_pooled_batch(y_true, y_pred, axis=(1, 2, 3), epsilon=0.00001):
    return _ops().mean(_dice_parts(y_true, y_pred, (0, 1, 2, 3), epsilon))


@wrong("dice_coefficient")
def dc_z_not_summed(y_true, y_pred, axis=(1, 2, 3), epsilon=0.00001):
    return _ops().mean(_dice_parts(y_true, y_pred, (1, 2), epsilon))


@wrong("dice_coefficient")
def dc_squares(y_true, y_pred, axis=(1, 2, 3), epsilon=0.00001):
    return _ops().mean(_dice_parts(y_true, y_pred, axis, epsilon, squares=True))


@wrong("dice_coefficient")
def dc_one_minus(y_true, y_pred, axis=(1, 2, 3), epsilon=0.00001):
    return 1.0 - _ops().mean(_dice_parts(y_true, y_pred, axis, epsilon))


@wrong("dice_coefficient")
def dc_eps_numerator_only(y_true, y_pred, axis=(1, 2, 3), epsilon=0.00001):
    return _ops().mean(_dice_parts(y_true, y_pred, axis, epsilon, den_eps=0.0))


@wrong("dice_coefficient")
def dc_classes_pooled(y_true, y_pred, axis=(1, 2, 3), epsilon=0.00001):
    return _ops().mean(_dice_parts(y_true, y_pred, (1, 2, 3, 4), epsilon))


@correct("dice_coefficient")
def dc_numpy_loop(y_true, y_pred, axis=(1, 2, 3), epsilon=0.00001):
    y_true, y_pred = np.asarray(y_true, float), np.asarray(y_pred, float)
    scores = []
    for b in range(y_true.shape[0]):
        for c in range(y_true.shape[-1]):
            t, p = y_true[b, ..., c], y_pred[b, ..., c]
            scores.append((2 * (t * p).sum() + epsilon) / (t.sum() + p.sum() + epsilon))
    return float(np.mean(scores))


@correct("dice_coefficient")
def dc_ops_tuple_axis(y_true, y_pred, axis=(1, 2, 3), epsilon=0.00001):
    ops = _ops()
    dice = (2.0 * ops.sum(y_true * y_pred, axis=axis) + epsilon) / (
        ops.sum(y_true, axis=axis) + ops.sum(y_pred, axis=axis) + epsilon
    )
    return ops.mean(ops.mean(dice, axis=-1))


@wrong("soft_dice_loss")
def sdl_pooled_batch(y_true, y_pred, axis=(1, 2, 3), epsilon=0.00001):
    return 1.0 - _ops().mean(_dice_parts(y_true, y_pred, (0, 1, 2, 3), epsilon, squares=True))


@wrong("soft_dice_loss")
def sdl_no_squares(y_true, y_pred, axis=(1, 2, 3), epsilon=0.00001):
    return 1.0 - _ops().mean(_dice_parts(y_true, y_pred, axis, epsilon))


@wrong("soft_dice_loss")
def sdl_returns_dice(y_true, y_pred, axis=(1, 2, 3), epsilon=0.00001):
    return _ops().mean(_dice_parts(y_true, y_pred, axis, epsilon, squares=True))


@wrong("soft_dice_loss")
def sdl_z_not_summed(y_true, y_pred, axis=(1, 2, 3), epsilon=0.00001):
    return 1.0 - _ops().mean(_dice_parts(y_true, y_pred, (1, 2), epsilon, squares=True))


@wrong("soft_dice_loss")
def sdl_eps_denominator_only(y_true, y_pred, axis=(1, 2, 3), epsilon=0.00001):
    return 1.0 - _ops().mean(_dice_parts(y_true, y_pred, axis, epsilon, squares=True, num_eps=0.0))


@wrong("soft_dice_loss")
def sdl_fixed_epsilon(y_true, y_pred, axis=(1, 2, 3), epsilon=0.00001):
    return 1.0 - _ops().mean(_dice_parts(y_true, y_pred, axis, 0.00001, squares=True))


@wrong("soft_dice_loss")
def sdl_numpy(y_true, y_pred, axis=(1, 2, 3), epsilon=0.00001):
    y_true, y_pred = np.asarray(y_true, float), np.asarray(y_pred, float)
    num = 2 * (y_true * y_pred).sum(axis=axis) + epsilon
    den = (y_true**2).sum(axis=axis) + (y_pred**2).sum(axis=axis) + epsilon
    return 1 - (num / den).mean()


@correct("soft_dice_loss")
def sdl_keras_backend_style(y_true, y_pred, axis=(1, 2, 3), epsilon=0.00001):
    ops = _ops()
    num = 2.0 * ops.sum(ops.multiply(y_true, y_pred), axis=axis) + epsilon
    den = ops.sum(y_true * y_true, axis=axis) + ops.sum(y_pred * y_pred, axis=axis) + epsilon
    return 1.0 - ops.mean(ops.divide(num, den))


@correct("soft_dice_loss")
def sdl_ops_power_list_axis(y_true, y_pred, axis=(1, 2, 3), epsilon=0.00001):
    ops = _ops()
    axis = list(axis)
    y_true, y_pred = ops.convert_to_tensor(y_true, "float32"), ops.convert_to_tensor(y_pred, "float32")
    dice = (ops.sum(2 * y_pred * y_true, axis) + epsilon) / (
        ops.sum(ops.power(y_pred, 2) + ops.power(y_true, 2), axis) + epsilon
    )
    return ops.subtract(1.0, ops.mean(dice))


# ----------------------------------------------------------------------------
# Lesson 04: sensitivity and specificity
# ----------------------------------------------------------------------------


def _counts(pred, label, class_num):
    p, t = np.asarray(pred)[..., class_num].astype(bool), np.asarray(label)[..., class_num].astype(bool)
    return (p & t).sum(), (~p & ~t).sum(), (p & ~t).sum(), (~p & t).sum()


def _ratio(a, b):
    return a / b if b else np.nan


@wrong("compute_class_sens_spec")
def css_swapped(pred, label, class_num):
    tp, tn, fp, fn = _counts(pred, label, class_num)
    return _ratio(tn, tn + fp), _ratio(tp, tp + fn)


@wrong("compute_class_sens_spec")
def css_precision(pred, label, class_num):
    tp, tn, fp, fn = _counts(pred, label, class_num)
    return _ratio(tp, tp + fp), _ratio(tn, tn + fp)


@wrong("compute_class_sens_spec")
def css_first_axis(pred, label, class_num):
    p, t = np.asarray(pred)[class_num].astype(bool), np.asarray(label)[class_num].astype(bool)
    tp, tn, fp, fn = (p & t).sum(), (~p & ~t).sum(), (p & ~t).sum(), (~p & t).sum()
    return _ratio(tp, tp + fn), _ratio(tn, tn + fp)


@wrong("compute_class_sens_spec")
def css_tilde_on_integers(pred, label, class_num):
    p, t = np.asarray(pred)[..., class_num], np.asarray(label)[..., class_num]
    tp, tn, fp, fn = np.sum(p & t), np.sum(~p & ~t), np.sum(p & ~t), np.sum(~p & t)
    return _ratio(tp, tp + fn), _ratio(tn, tn + fp)


@wrong("compute_class_sens_spec")
def css_zero_not_nan(pred, label, class_num):
    tp, tn, fp, fn = _counts(pred, label, class_num)
    return tp / max(tp + fn, 1), tn / max(tn + fp, 1)


@correct("compute_class_sens_spec")
def css_arithmetic_list(pred, label, class_num):
    p, t = np.asarray(pred, float)[..., class_num], np.asarray(label, float)[..., class_num]
    tp, tn = np.sum(p * t), np.sum((1 - p) * (1 - t))
    fp, fn = np.sum(p * (1 - t)), np.sum((1 - p) * t)
    with np.errstate(invalid="ignore", divide="ignore"):
        return [np.float64(tp) / (tp + fn), np.float64(tn) / (tn + fp)]


@correct("compute_class_sens_spec")
def css_comparisons(pred, label, class_num):
    p, t = pred[..., class_num] == 1, label[..., class_num] == 1
    tp = np.count_nonzero(p & t)
    fn = np.count_nonzero(~p & t)
    tn = np.count_nonzero(~p & ~t)
    fp = np.count_nonzero(p & ~t)
    sens = float("nan") if tp + fn == 0 else tp / (tp + fn)
    spec = float("nan") if tn + fp == 0 else tn / (tn + fp)
    return sens, spec


def _table(pred, label, fn=None):
    rows = {name: list(_sens_spec_ref(pred, label, k)) for k, name in enumerate(CLASS_NAMES)}
    return pd.DataFrame(rows, index=["Sensitivity", "Specificity"])


def _sens_spec_ref(pred, label, k):
    tp, tn, fp, fn = _counts(pred, label, k)
    return _ratio(tp, tp + fn), _ratio(tn, tn + fp)


@wrong("get_sens_spec_df")
def df_transposed(pred, label):
    return _table(pred, label).T


@wrong("get_sens_spec_df")
def df_rows_swapped(pred, label):
    table = _table(pred, label)
    return pd.DataFrame(table.to_numpy()[::-1], index=table.index, columns=table.columns)


@wrong("get_sens_spec_df")
def df_class_off_by_one(pred, label):
    rows = {name: list(_sens_spec_ref(pred, label, min(k + 1, 2))) for k, name in enumerate(CLASS_NAMES)}
    return pd.DataFrame(rows, index=["Sensitivity", "Specificity"])


@wrong("get_sens_spec_df")
def df_pooled_classes(pred, label):
    p, t = np.asarray(pred).astype(bool), np.asarray(label).astype(bool)
    tp, tn, fp, fn = (p & t).sum(), (~p & ~t).sum(), (p & ~t).sum(), (~p & t).sum()
    return pd.DataFrame(
        {name: [tp / (tp + fn), tn / (tn + fp)] for name in CLASS_NAMES}, index=["Sensitivity", "Specificity"]
    )


@correct("get_sens_spec_df")
def df_loc_filling(pred, label):
    table = pd.DataFrame(index=["Sensitivity", "Specificity"], columns=CLASS_NAMES, dtype=float)
    for k, name in enumerate(CLASS_NAMES):
        table.loc["Sensitivity", name], table.loc["Specificity", name] = _sens_spec_ref(pred, label, k)
    return table.round(4)


@correct("get_sens_spec_df")
def df_from_rows(pred, label):
    pairs = [_sens_spec_ref(pred, label, k) for k in range(3)]
    return pd.DataFrame(
        [[s for s, _ in pairs], [p for _, p in pairs]], columns=list(CLASS_NAMES), index=["Sensitivity", "Specificity"]
    )


# ----------------------------------------------------------------------------
# Lesson 06
# ----------------------------------------------------------------------------


def _blend_loop(window_predictions, starts, volume_shape, weights, mode):
    preds = np.asarray(window_predictions, float)
    wx, wy, wz = preds.shape[1:4]
    w = np.ones((wx, wy, wz)) if weights is None else np.asarray(weights, float)
    total = np.zeros((*volume_shape, preds.shape[-1]))
    norm = np.zeros(volume_shape)
    count = np.zeros(volume_shape)
    for (a, b, c), p in zip(starts, preds):
        region = (slice(a, a + wx), slice(b, b + wy), slice(c, c + wz))
        if mode == "overwrite":
            total[region] = p
            continue
        total[region] += p * (1.0 if mode == "no_weights" else w[..., None])
        norm[region] += 1.0 if mode == "no_weights" else w
        count[region] += 1
    if mode in ("overwrite", "sum"):
        return total
    if mode == "count":
        return total / count[..., None]
    return total / norm[..., None]


@wrong("blend_windows")
def bw_overwrite(window_predictions, starts, volume_shape, weights=None):
    return _blend_loop(window_predictions, starts, volume_shape, weights, "overwrite")


@wrong("blend_windows")
def bw_sum(window_predictions, starts, volume_shape, weights=None):
    return _blend_loop(window_predictions, starts, volume_shape, weights, "sum")


@wrong("blend_windows")
def bw_divide_by_count(window_predictions, starts, volume_shape, weights=None):
    return _blend_loop(window_predictions, starts, volume_shape, weights, "count")


@wrong("blend_windows")
def bw_ignores_weights(window_predictions, starts, volume_shape, weights=None):
    return _blend_loop(window_predictions, starts, volume_shape, weights, "no_weights")


@wrong("blend_windows")
def bw_corner_order_swapped(window_predictions, starts, volume_shape, weights=None):
    preds = np.asarray(window_predictions, float)
    wx, wy, wz = preds.shape[1:4]
    w = np.ones((wx, wy, wz)) if weights is None else np.asarray(weights, float)
    total, norm = np.zeros((*volume_shape, preds.shape[-1])), np.zeros(volume_shape)
    for (c, b, a), p in zip(starts, preds):  # corners read as (z, y, x)
        a, c = min(a, volume_shape[0] - wx), min(c, volume_shape[2] - wz)
        total[a : a + wx, b : b + wy, c : c + wz] += p * w[..., None]
        norm[a : a + wx, b : b + wy, c : c + wz] += w
    return total / np.maximum(norm, 1e-9)[..., None]


@correct("blend_windows")
def bw_vectorised_slices(window_predictions, starts, volume_shape, weights=None):
    preds = np.asarray(window_predictions, dtype=np.float32)
    size = preds.shape[1:4]
    w = np.ones(size, np.float32) if weights is None else np.asarray(weights, np.float32)
    total = np.zeros(tuple(volume_shape) + (preds.shape[-1],), np.float32)
    norm = np.zeros(tuple(volume_shape) + (1,), np.float32)
    for start, p in zip(starts, preds):
        region = tuple(slice(s, s + n) for s, n in zip(start, size))
        total[region] += p * w[..., np.newaxis]
        norm[region] += w[..., np.newaxis]
    return total / norm


@correct("blend_windows")
def bw_list_of_windows(window_predictions, starts, volume_shape, weights=None):
    n, wx, wy, wz, k = np.shape(window_predictions)
    w = np.ones((wx, wy, wz, 1)) if weights is None else np.reshape(weights, (wx, wy, wz, 1))
    acc = np.zeros(list(volume_shape) + [k + 1])
    for i in range(n):
        x, y, z = starts[i]
        acc[x : x + wx, y : y + wy, z : z + wz, :k] += w * window_predictions[i]
        acc[x : x + wx, y : y + wy, z : z + wz, k:] += w
    return acc[..., :k] / acc[..., k:]


_REG = {"WT": [1, 2, 3], "TC": [2, 3], "ET": [3]}


def _rd(truth, pred, regions=_REG, empty=1.0, jaccard=False):
    out = {}
    for r, values in regions.items():
        a, b = np.isin(truth, values), np.isin(pred, values)
        inter, total = (a & b).sum(), a.sum() + b.sum()
        if total == 0:
            out[r] = empty
        else:
            out[r] = inter / (total - inter) if jaccard else 2 * inter / total
    return out


@wrong("region_dice")
def rd_single_labels(truth_label, pred_label):
    return _rd(truth_label, pred_label, {"WT": [1], "TC": [2], "ET": [3]})


@wrong("region_dice")
def rd_jaccard(truth_label, pred_label):
    return _rd(truth_label, pred_label, jaccard=True)


@wrong("region_dice")
def rd_empty_zero(truth_label, pred_label):
    return _rd(truth_label, pred_label, empty=0.0)


@wrong("region_dice")
def rd_msd_order_confused(truth_label, pred_label):
    return _rd(truth_label, pred_label, {"WT": [1, 2, 3], "TC": [1, 3], "ET": [3]})


@wrong("region_dice")
def rd_empty_nan(truth_label, pred_label):
    return _rd(truth_label, pred_label, empty=float("nan"))


@correct("region_dice")
def rd_threshold_style(truth_label, pred_label):
    t, p = np.asarray(truth_label), np.asarray(pred_label)
    masks = {"WT": (t > 0, p > 0), "TC": (t >= 2, p >= 2), "ET": (t == 3, p == 3)}
    scores = {}
    for region, (a, b) in masks.items():
        denominator = np.count_nonzero(a) + np.count_nonzero(b)
        scores[region] = 2 * np.count_nonzero(a & b) / denominator if denominator else 1.0
    return scores


@correct("region_dice")
def rd_epsilon_style(truth_label, pred_label):
    out = {}
    for region, values in (("ET", (3,)), ("TC", (2, 3)), ("WT", (1, 2, 3))):
        a = np.isin(truth_label, values).astype(float)
        b = np.isin(pred_label, values).astype(float)
        out[region] = float((2 * (a * b).sum() + 1e-9) / (a.sum() + b.sum() + 1e-9))
    return out


# ----------------------------------------------------------------------------
# More classes of mistakes a TA sees in hundreds of submissions: off-by-one
# ranges, clamped or rounded instead of uniform draws, a returned pair in the
# wrong order, layer widths that coincide on small inputs, dtype and keepdims
# slips, in-place modification of the caller's array
# ----------------------------------------------------------------------------


gsv_returns_y_x = wrong("get_sub_volume")(
    lambda *args, **kwargs: tuple(reversed(EXERCISES["get_sub_volume"].reference_function()(*args, **kwargs)))
)
gsv_returns_y_x.__name__ = "gsv_returns_y_x"
gsv_clamped_start = wrong("get_sub_volume")(
    _sampler(lambda orig, size: [min(np.random.randint(0, o), o - s) for o, s in zip(orig, size)])
)
gsv_clamped_start.__name__ = "gsv_clamped_start"
gsv_rounded_uniform = wrong("get_sub_volume")(
    _sampler(lambda orig, size: [int(round(np.random.uniform(0, o - s))) for o, s in zip(orig, size)])
)
gsv_rounded_uniform.__name__ = "gsv_rounded_uniform"
gsv_one_past_the_end = wrong("get_sub_volume")(
    _sampler(lambda orig, size: [np.random.randint(0, o - s + 2) for o, s in zip(orig, size)])
)
gsv_one_past_the_end.__name__ = "gsv_one_past_the_end"


@wrong("standardize")
def std_per_x_slice(image):
    return _z_score(image, (1, 2))


@wrong("standardize")
def std_mean_of_whole_volume(image):
    image = np.asarray(image, float)
    std = image.std(axis=(0, 1), keepdims=True)
    return np.divide(image - image.mean(), std, out=np.zeros_like(image), where=std > 0)


@wrong("standardize")
def std_in_place_when_float(image):
    image = image.astype(np.float32, copy=False)  # no copy when the input is float32 already
    mean, std = image.mean(axis=(0, 1), keepdims=True), image.std(axis=(0, 1), keepdims=True)
    image -= mean
    np.divide(image, std, out=image, where=std > 0)
    image[np.broadcast_to(std == 0, image.shape)] = 0.0
    return image


@wrong("conv_block")
def cb_three_convolutions(x, filters, normalization=None, name=None):
    x = _block(x, filters, normalization)
    layers = _layers()
    return layers.Activation("relu")(layers.Conv3D(filters, 3, padding="same", use_bias=normalization is None)(x))


@wrong("conv_block")
def cb_second_width_from_input(x, filters, normalization=None, name=None):
    layers = _layers()
    channels = x.shape[-1]
    y = layers.Activation("relu")(layers.Conv3D(filters, 3, padding="same")(x))
    return layers.Activation("relu")(layers.Conv3D(channels, 3, padding="same")(y))


@wrong("conv_block")
def cb_bias_kept_with_normalization(x, filters, normalization=None, name=None):
    layers = _layers()
    for _ in range(2):
        x = layers.Conv3D(filters, 3, padding="same")(x)
        if normalization == "batch":
            x = layers.BatchNormalization()(x)
        elif normalization == "instance":
            x = layers.GroupNormalization(groups=-1)(x)
        x = layers.Activation("relu")(x)
    return x


@wrong("upsampling_block")
def ub_up_width_from_skip(x, skip, filters, pool_size=(2, 2, 2), normalization=None, name=None):
    layers = _layers()
    up = layers.Conv3DTranspose(skip.shape[-1], pool_size, strides=pool_size)(x)
    return _ref_conv_block(layers.Concatenate()([up, skip]), filters, normalization)


@wrong("upsampling_block")
def ub_block_width_half_of_x(x, skip, filters, pool_size=(2, 2, 2), normalization=None, name=None):
    layers = _layers()
    up = layers.Conv3DTranspose(filters, pool_size, strides=pool_size)(x)
    return _ref_conv_block(layers.Concatenate()([up, skip]), x.shape[-1] // 2, normalization)


@wrong("upsampling_block")
def ub_pool_size_reversed(x, skip, filters, pool_size=(2, 2, 2), normalization=None, name=None):
    layers = _layers()
    factor = tuple(pool_size)[::-1]
    up = layers.Conv3DTranspose(filters, factor, strides=factor)(x)
    return _ref_conv_block(layers.Concatenate()([up, skip]), filters, normalization)


@wrong("single_class_dice_coefficient")
def scd_keepdims(y_true, y_pred, axis=(0, 1, 2), epsilon=0.00001):
    ops = _ops()
    y_true, y_pred = ops.cast(y_true, "float32"), ops.cast(y_pred, "float32")
    num = 2.0 * ops.sum(y_true * y_pred, axis=axis, keepdims=True) + epsilon
    return num / (ops.sum(y_true, axis=axis, keepdims=True) + ops.sum(y_pred, axis=axis, keepdims=True) + epsilon)


@wrong("single_class_dice_coefficient")
def scd_int_cast(y_true, y_pred, axis=(0, 1, 2), epsilon=0.00001):
    ops = _ops()
    return _dice_parts(ops.cast(y_true, "int32"), ops.cast(y_pred, "int32"), axis, epsilon)


@wrong("single_class_dice_coefficient")
def scd_mean_not_sum(y_true, y_pred, axis=(0, 1, 2), epsilon=0.00001):
    ops = _ops()
    y_true, y_pred = ops.cast(y_true, "float32"), ops.cast(y_pred, "float32")
    num = 2.0 * ops.mean(y_true * y_pred, axis=axis) + epsilon
    return num / (ops.mean(y_true, axis=axis) + ops.mean(y_pred, axis=axis) + epsilon)


@wrong("dice_coefficient")
def dc_no_mean(y_true, y_pred, axis=(1, 2, 3), epsilon=0.00001):
    return _dice_parts(y_true, y_pred, axis, epsilon)


@wrong("dice_coefficient")
def dc_mean_over_classes_only(y_true, y_pred, axis=(1, 2, 3), epsilon=0.00001):
    return _ops().mean(_dice_parts(y_true, y_pred, axis, epsilon), axis=-1)


@wrong("dice_coefficient")
def dc_axis_of_exercise_1(y_true, y_pred, axis=(1, 2, 3), epsilon=0.00001):
    return _ops().mean(_dice_parts(y_true, y_pred, (0, 1, 2), epsilon))


@wrong("soft_dice_loss")
def sdl_squares_in_numerator(y_true, y_pred, axis=(1, 2, 3), epsilon=0.00001):
    ops = _ops()
    num = 2.0 * ops.sum(ops.square(y_true * y_pred), axis=axis) + epsilon
    den = ops.sum(ops.square(y_true), axis=axis) + ops.sum(ops.square(y_pred), axis=axis) + epsilon
    return 1.0 - ops.mean(num / den)


@wrong("soft_dice_loss")
def sdl_int_cast(y_true, y_pred, axis=(1, 2, 3), epsilon=0.00001):
    ops = _ops()
    return 1.0 - ops.mean(
        _dice_parts(ops.cast(y_true, "int32"), ops.cast(y_pred, "int32"), axis, epsilon, squares=True)
    )


@wrong("compute_class_sens_spec")
def css_npv_for_specificity(pred, label, class_num):
    tp, tn, fp, fn = _counts(pred, label, class_num)
    return _ratio(tp, tp + fn), _ratio(tn, tn + fn)


@wrong("compute_class_sens_spec")
def css_floor_division(pred, label, class_num):
    tp, tn, fp, fn = _counts(pred, label, class_num)
    return (tp // (tp + fn) if tp + fn else np.nan), (tn // (tn + fp) if tn + fp else np.nan)


@wrong("compute_class_sens_spec")
def css_three_d_only(pred, label, class_num):
    p, t = np.asarray(pred).astype(bool), np.asarray(label).astype(bool)  # follows a 3-D example, ignores class_num
    tp, tn, fp, fn = (p & t).sum(), (~p & ~t).sum(), (p & ~t).sum(), (~p & t).sum()
    return _ratio(tp, tp + fn), _ratio(tn, tn + fp)


@wrong("blend_windows")
def bw_weights_in_place(window_predictions, starts, volume_shape, weights=None):
    preds = window_predictions
    if weights is not None:
        preds *= np.asarray(weights)[None, ..., None]  # writes into the caller's array
    size = preds.shape[1:4]
    w = np.ones(size) if weights is None else np.asarray(weights, float)
    total, norm = np.zeros((*volume_shape, preds.shape[-1])), np.zeros(volume_shape)
    for start, p in zip(starts, preds):
        region = tuple(slice(s, s + n) for s, n in zip(start, size))
        total[region] += p
        norm[region] += w
    return total / norm[..., None]


@wrong("region_dice")
def rd_whole_tumour_without_enhancing(truth_label, pred_label):
    return _rd(truth_label, pred_label, {"WT": [1, 2], "TC": [2, 3], "ET": [3]})


@wrong("region_dice")
def rd_one_if_truth_empty(truth_label, pred_label):
    out = _rd(truth_label, pred_label)
    for region, values in _REG.items():
        if not np.isin(truth_label, values).any():
            out[region] = 1.0
    return out


@correct("get_sub_volume")
def gsv_choice_per_axis(
    image,
    label,
    orig_x=240,
    orig_y=240,
    orig_z=155,
    output_x=160,
    output_y=160,
    output_z=16,
    num_classes=4,
    max_tries=1000,
    background_threshold=0.95,
):
    sizes = ((orig_x, output_x), (orig_y, output_y), (orig_z, output_z))
    for _ in range(max_tries):
        corner = [int(np.random.choice(np.arange(o - n + 1))) for o, n in sizes]
        window = tuple(slice(c, c + n) for c, (_, n) in zip(corner, sizes))
        patch = label[window]
        if np.mean(patch == 0) < background_threshold:
            y = np.stack([patch == k for k in range(1, num_classes)], axis=-1).astype(np.float32)
            return np.asarray(image[window], np.float32), y
    raise ValueError("no patch found")


@correct("standardize")
def std_no_keepdims_broadcast(image):
    image = np.array(image, dtype=np.float64)  # a copy
    mean, std = image.mean(axis=(0, 1)), image.std(axis=(0, 1))  # (z, C): broadcasts over x and y
    return np.where(std > 0, (image - mean) / np.where(std > 0, std, 1.0), 0.0)


@correct("compute_class_sens_spec")
def css_fourth_axis_as_the_docstring_says(pred, label, class_num):
    p, t = pred[:, :, :, class_num].astype(bool), label[:, :, :, class_num].astype(bool)
    tp, fn = np.sum(p & t), np.sum(~p & t)
    tn, fp = np.sum(~p & ~t), np.sum(p & ~t)
    return (tp / (tp + fn) if tp + fn else np.nan), (tn / (tn + fp) if tn + fp else np.nan)


# ----------------------------------------------------------------------------
# Lesson 08: parse_survival, tumour_volumes_ml
# ----------------------------------------------------------------------------


def _alive_days(text):
    match = re.fullmatch(r"ALIVE \((\d+) days later\)", str(text).strip())
    return None if match is None else float(match.group(1))


@wrong("parse_survival")
def ps_alive_is_a_death(value):
    days = _alive_days(value)
    return (days, True) if days is not None else (float(str(value).strip()), True)


@wrong("parse_survival")
def ps_event_inverted(value):
    days = _alive_days(value)
    return (days, True) if days is not None else (float(str(value).strip()), False)


@wrong("parse_survival")
def ps_alive_dropped_as_nan(value):
    days = _alive_days(value)
    return (float("nan"), False) if days is not None else (float(str(value).strip()), True)


@wrong("parse_survival")
def ps_garbage_becomes_nan(value):
    days = _alive_days(value)
    if days is not None:
        return days, False
    try:
        return float(str(value).strip()), True
    except ValueError:
        return float("nan"), False


@wrong("parse_survival")
def ps_strings_only(value):
    days = _alive_days(value)
    return (days, False) if days is not None else (float(value.strip()), True)


@wrong("parse_survival")
def ps_negative_accepted(value):
    days = _alive_days(value)
    return (days, False) if days is not None else (float(str(value).strip()), True)


@correct("parse_survival")
def ps_split_style(value):
    text = str(value).strip()
    if text.upper().startswith("ALIVE"):
        return float(text.split("(")[1].split()[0]), False
    days = float(text)
    if days < 0:
        raise ValueError(f"negative survival {text}")
    return days, True


@correct("parse_survival")
def ps_pandas_style(value):
    text = str(value).strip()
    digits = re.findall(r"\d+", text)
    if text.startswith("ALIVE") and digits:
        return float(digits[0]), False
    days = pd.to_numeric(text, errors="raise")  # raises ValueError for text and for ""
    if not np.isfinite(days) or days < 0:
        raise ValueError(text)
    return float(days), True


def _tv(label, voxel_mm3, regions=None, scale=1000.0):
    regions = regions or {"WT": (1, 2, 3), "TC": (2, 3), "ET": (3,)}
    return {r: float(np.isin(label, v).sum() * voxel_mm3 / scale) for r, v in regions.items()}


@wrong("tumour_volumes_ml")
def tv_single_labels(label, affine):
    return _tv(label, abs(np.linalg.det(affine[:3, :3])), {"WT": (1,), "TC": (2,), "ET": (3,)})


@wrong("tumour_volumes_ml")
def tv_voxel_counts(label, affine):
    return _tv(label, 1.0, scale=1.0)


@wrong("tumour_volumes_ml")
def tv_mm3_not_ml(label, affine):
    return _tv(label, abs(np.linalg.det(affine[:3, :3])), scale=1.0)


@wrong("tumour_volumes_ml")
def tv_diagonal_product(label, affine):
    return _tv(label, float(np.prod(np.diag(affine)[:3])))


@wrong("tumour_volumes_ml")
def tv_signed_determinant(label, affine):
    return _tv(label, float(np.linalg.det(affine[:3, :3])))


@wrong("tumour_volumes_ml")
def tv_label_values_summed(label, affine):
    voxel = abs(np.linalg.det(affine[:3, :3])) / 1000.0
    label = np.asarray(label)
    return {
        r: float(label[np.isin(label, v)].sum() * voxel) for r, v in (("WT", (1, 2, 3)), ("TC", (2, 3)), ("ET", (3,)))
    }


@wrong("tumour_volumes_ml")
def tv_msd_order_confused(label, affine):
    return _tv(label, abs(np.linalg.det(affine[:3, :3])), {"WT": (1, 2, 3), "TC": (1, 3), "ET": (3,)})


@correct("tumour_volumes_ml")
def tv_column_norms(label, affine):
    spacing = np.linalg.norm(np.asarray(affine)[:3, :3], axis=0)  # voxel sizes: right for any rotation
    counts = np.bincount(np.asarray(label).ravel(), minlength=4)
    ml = float(np.prod(spacing)) / 1000.0
    return {"ET": counts[3] * ml, "TC": (counts[2] + counts[3]) * ml, "WT": counts[1:4].sum() * ml}


@correct("tumour_volumes_ml")
def tv_nibabel_zooms(label, affine):
    import nibabel as nib

    zooms = nib.Nifti1Image(np.asarray(label, np.uint8), np.asarray(affine)).header.get_zooms()
    mm3 = float(np.prod(zooms))
    t = np.asarray(label)
    return {"WT": (t > 0).sum() * mm3 / 1e3, "TC": (t >= 2).sum() * mm3 / 1e3, "ET": (t == 3).sum() * mm3 / 1e3}


# ----------------------------------------------------------------------------
# Lesson 09: label_to_regions, regions_to_label
# ----------------------------------------------------------------------------


def _stack(label, sets, axis=-1):
    return np.stack([np.isin(label, v) for v in sets], axis=axis)


@wrong("label_to_regions")
def ltr_exclusive_classes(label):
    return _stack(label, ((1,), (2,), (3,))).astype(np.float32)


@wrong("label_to_regions")
def ltr_innermost_first(label):
    return _stack(label, ((3,), (2, 3), (1, 2, 3))).astype(np.float32)


@wrong("label_to_regions")
def ltr_brats_core(label):
    return _stack(label, ((1, 2, 3), (1, 3), (3,))).astype(np.float32)


@wrong("label_to_regions")
def ltr_bool(label):
    return _stack(label, ((1, 2, 3), (2, 3), (3,)))


@wrong("label_to_regions")
def ltr_int64(label):
    return _stack(label, ((1, 2, 3), (2, 3), (3,))).astype(np.int64)


@wrong("label_to_regions")
def ltr_channels_first(label):
    return _stack(label, ((1, 2, 3), (2, 3), (3,)), axis=0).astype(np.float32)


@wrong("label_to_regions")
def ltr_with_background(label):
    return _stack(label, ((0,), (1, 2, 3), (2, 3), (3,))).astype(np.float32)


@wrong("label_to_regions")
def ltr_float64(label):
    return _stack(label, ((1, 2, 3), (2, 3), (3,))).astype(float)


@correct("label_to_regions")
def ltr_comparisons(label):
    label = np.asarray(label)
    return np.stack([label > 0, label >= 2, label == 3], axis=-1).astype(np.float32)


@correct("label_to_regions")
def ltr_cumulative_one_hot(label):
    one_hot = np.eye(4, dtype=np.float32)[np.asarray(label).astype(int)]  # (..., 4) classes 0-3
    return np.cumsum(one_hot[..., ::-1], axis=-1)[..., ::-1][..., 1:].copy()  # class k or above, for k = 1, 2, 3


def _inside(regions, threshold):
    return np.asarray(regions) > threshold


@wrong("regions_to_label")
def rtl_argmax(regions, threshold=0.5):
    inside = _inside(regions, threshold)
    return np.where(inside.any(axis=-1), np.argmax(regions, axis=-1) + 1, 0).astype(np.uint8)


@wrong("regions_to_label")
def rtl_overwrite_without_nesting(regions, threshold=0.5):
    inside = _inside(regions, threshold)
    label = np.zeros(inside.shape[:-1], np.uint8)
    for k in range(3):
        label[inside[..., k]] = k + 1
    return label


@wrong("regions_to_label")
def rtl_count_regions(regions, threshold=0.5):
    return _inside(regions, threshold).sum(axis=-1).astype(np.uint8)


@wrong("regions_to_label")
def rtl_fixed_threshold(regions, threshold=0.5):
    inside = _inside(regions, 0.5)
    wt = inside[..., 0]
    tc = wt & inside[..., 1]
    return (wt.astype(np.uint8) + tc + (tc & inside[..., 2])).astype(np.uint8)


@wrong("regions_to_label")
def rtl_float_labels(regions, threshold=0.5):
    inside = _inside(regions, threshold)
    wt = inside[..., 0]
    tc = wt & inside[..., 1]
    return np.where(tc & inside[..., 2], 3.0, np.where(tc, 2.0, np.where(wt, 1.0, 0.0)))


@wrong("regions_to_label")
def rtl_channel_zero_is_et(regions, threshold=0.5):
    inside = _inside(regions, threshold)[..., ::-1]
    wt = inside[..., 0]
    tc = wt & inside[..., 1]
    return (wt.astype(np.uint8) + tc + (tc & inside[..., 2])).astype(np.uint8)


@correct("regions_to_label")
def rtl_where_chain(regions, threshold=0.5):
    p = np.asarray(regions)
    wt = p[..., 0] > threshold
    tc = wt & (p[..., 1] > threshold)
    et = tc & (p[..., 2] > threshold)
    return np.select([et, tc, wt], [3, 2, 1], default=0).astype(np.int64)


@correct("regions_to_label")
def rtl_cumulative_product(regions, threshold=0.5):
    inside = (np.asarray(regions) > threshold).astype(np.uint8)
    return np.cumprod(inside, axis=-1).sum(axis=-1).astype(np.uint8)  # stops counting at the first region missed


# Lesson 10: shuffle_block
# ----------------------------------------------------------------------------


def _sb_window(start, size):
    return tuple(slice(s, s + n) for s, n in zip(start, size))


@wrong("shuffle_block")
def sb_whole_patch(patch, start, size, seed):
    rng = np.random.default_rng(seed)
    out = patch.copy()
    for c in range(patch.shape[-1]):
        out[..., c] = rng.permutation(patch[..., c].ravel()).reshape(patch.shape[:3])
    return out


@wrong("shuffle_block")
def sb_channels_mixed(patch, start, size, seed):
    out = patch.copy()
    block = out[_sb_window(start, size)]
    out[_sb_window(start, size)] = np.random.default_rng(seed).permutation(block.ravel()).reshape(block.shape)
    return out


@wrong("shuffle_block")
def sb_first_axis_only(patch, start, size, seed):
    out = patch.copy()
    block = out[_sb_window(start, size)].copy()
    np.random.default_rng(seed).shuffle(block)
    out[_sb_window(start, size)] = block
    return out


@wrong("shuffle_block")
def sb_one_order_for_all_channels(patch, start, size, seed):
    out = patch.copy()
    block = out[_sb_window(start, size)]
    flat = block.reshape(-1, block.shape[-1])
    out[_sb_window(start, size)] = flat[np.random.default_rng(seed).permutation(len(flat))].reshape(block.shape)
    return out


@wrong("shuffle_block")
def sb_not_written_back(patch, start, size, seed):
    out = patch.copy()
    block = out[_sb_window(start, size)].reshape(-1, patch.shape[-1])  # a copy: the block is not contiguous
    block = np.random.default_rng(seed).permuted(block, axis=0)
    return out


@wrong("shuffle_block")
def sb_global_random(patch, start, size, seed):
    out = patch.copy()
    block = out[_sb_window(start, size)]
    flat = block.reshape(-1, block.shape[-1]).copy()
    for c in range(flat.shape[1]):
        np.random.shuffle(flat[:, c])
    out[_sb_window(start, size)] = flat.reshape(block.shape)
    return out


@wrong("shuffle_block")
def sb_seed_ignored(patch, start, size, seed):
    out = patch.copy()
    block = out[_sb_window(start, size)]
    out[_sb_window(start, size)] = (
        np.random.default_rng(0).permuted(block.reshape(-1, block.shape[-1]), axis=0).reshape(block.shape)
    )
    return out


@wrong("shuffle_block")
def sb_block_end_inclusive(patch, start, size, seed):
    return _sb_reference(patch, start, [n + 1 for n in size], seed)


@wrong("shuffle_block")
def sb_size_as_end(patch, start, size, seed):
    window = tuple(slice(s, n) for s, n in zip(start, size))
    out = patch.copy()
    block = out[window]
    out[window] = np.random.default_rng(seed).permuted(block.reshape(-1, block.shape[-1]), axis=0).reshape(block.shape)
    return out


@wrong("shuffle_block")
def sb_float64(patch, start, size, seed):
    return _sb_reference(patch, start, size, seed).astype(np.float64)


@wrong("shuffle_block")
def sb_in_place(patch, start, size, seed):
    block = patch[_sb_window(start, size)]
    patch[_sb_window(start, size)] = (
        np.random.default_rng(seed).permuted(block.reshape(-1, block.shape[-1]), axis=0).reshape(block.shape)
    )
    return patch


def _sb_reference(patch, start, size, seed):
    out = patch.copy()
    block = out[_sb_window(start, size)]
    out[_sb_window(start, size)] = (
        np.random.default_rng(seed).permuted(block.reshape(-1, block.shape[-1]), axis=0).reshape(block.shape)
    )
    return out


@correct("shuffle_block")
def sb_loop_over_channels(patch, start, size, seed):
    rng = np.random.default_rng(seed)
    x0, y0, z0 = start
    bx, by, bz = size
    out = np.copy(patch)
    for c in range(patch.shape[3]):
        block = patch[x0 : x0 + bx, y0 : y0 + by, z0 : z0 + bz, c]
        out[x0 : x0 + bx, y0 : y0 + by, z0 : z0 + bz, c] = rng.permutation(block.ravel()).reshape(block.shape)
    return out


@correct("shuffle_block")
def sb_random_keys_argsort(patch, start, size, seed):
    window = _sb_window(start, size)
    block = patch[window]
    flat = block.reshape(-1, block.shape[-1])
    keys = np.random.default_rng(seed).random(flat.shape)
    out = patch.copy()
    out[window] = np.take_along_axis(flat, np.argsort(keys, axis=0), axis=0).reshape(block.shape)
    return out


@correct("shuffle_block")
def sb_legacy_seeded_shuffle(patch, start, size, seed):
    np.random.seed(seed)
    out = patch.copy()
    window = _sb_window(start, size)
    for c in range(patch.shape[-1]):
        values = out[window][..., c].flatten()
        np.random.shuffle(values)
        out[window + (c,)] = values.reshape(out[window].shape[:3])
    return out


# ----------------------------------------------------------------------------
# The suite
# ----------------------------------------------------------------------------


def _cases(table):
    return [pytest.param(name, fn, id=f"{name}-{fn.__name__}") for name in EXERCISES for fn in table[name]]


@pytest.mark.parametrize("variant", ["public", "grading"])
@pytest.mark.parametrize("name,fn", _cases(WRONG))
def test_wrong_implementation_fails(name, fn, variant):
    results = run_check(name, fn, variant=variant, record=True)
    assert results and not all(r.passed for r in results), f"{fn.__name__} passed the {variant} tests of {name}"
    for r in results:
        assert r.passed == (r.detail == ""), r
        assert not r.detail.startswith("the check stopped"), r  # a bug of the check is no rejection


@pytest.mark.parametrize("variant", ["public", "grading"])
@pytest.mark.parametrize("name,fn", _cases(CORRECT))
def test_correct_alternative_passes(name, fn, variant):
    failed = [r for r in run_check(name, fn, variant=variant, record=True) if not r.passed]
    assert not failed, "\n".join(f"{r.description}: {r.detail}" for r in failed)


# ----------------------------------------------------------------------------
# The Dice exercises' grading inputs: the grader draws the hand-made 2x3 masks
# (and the soft batches) from a per-run seed. With epsilon=1, such small masks
# often made 0.5 the expected value (a constant 0.5 then scored) or let a
# mistake give the right value by chance; the draws now refuse both.
# ----------------------------------------------------------------------------

DICE = ["single_class_dice_coefficient", "dice_coefficient", "soft_dice_loss"]
RUNS = [("public", None), ("grading", None)] + [("grading", seed) for seed in range(6)]
"""The lesson's check, the fixed grading variant, and six of the grader's per-run seeds."""


@pytest.mark.parametrize("name", DICE)
def test_a_constant_half_passes_no_dice_test_whatever_the_seed(name):
    for variant, seed in [("public", None), ("grading", None)] + [("grading", seed) for seed in range(50)]:
        passed = [
            r.description
            for r in run_check(name, lambda *a, **k: 0.5, variant=variant, record=True, seed=seed)
            if r.passed
        ]
        assert not passed, (variant, seed, passed)


@pytest.mark.parametrize("name", DICE)
def test_a_wrong_dice_answer_passes_the_same_tests_whatever_the_seed(name):
    """A mistake may pass a test only where that test cannot tell it apart at all (0/1 masks square to themselves,
    one sample cannot be pooled): then it passes it with every seed. Never by a coincidence of one seed's draw."""
    for fn in WRONG[name]:
        passed = {
            (variant, seed): [r.passed for r in run_check(name, fn, variant=variant, record=True, seed=seed)]
            for variant, seed in RUNS
        }
        assert len({tuple(p) for p in passed.values()}) == 1, (fn.__name__, passed)


# ----------------------------------------------------------------------------
# Hint precision: a "likely mistake" line names the answer's own mistake, and
# only when its output matches that mistake (two mistakes that give the same
# value on an input may both be named, joined by "or"); an answer whose
# mistake has no signature gets what differs and no "likely mistake" at all
# ----------------------------------------------------------------------------

OWN_HINT: dict[str, tuple[str, ...]] = {
    "gsv_x_y_swapped": (),
    "gsv_last_corner_excluded": ("randint(low, high) excludes high",),
    "gsv_less_or_equal": ("<= instead of <",),
    "gsv_one_hot_from_data": ("took its number of classes from the label",),
    "gsv_keeps_background": ("background channel is still there",),
    "gsv_not_random": ("not drawn at random",),
    "gsv_drops_last_class": ("not the last channel",),
    "gsv_x_y_window_swapped": ("x and y swapped",),
    "gsv_returns_y_x": (),
    "gsv_clamped_start": ("clamped",),
    "gsv_rounded_uniform": (),
    "gsv_one_past_the_end": (),
    "std_sample_std": ("ddof=1",),
    "std_whole_volume": ("whole volume",),
    "std_per_channel_only": ("per channel over all z",),
    "std_inherits_int_dtype": ("integer dtype",),
    "std_nan_on_constant": ("NaN where a slice is constant",),
    "std_in_place": ("writes into its input", "integer dtype"),  # in place on int16 truncates too
    "std_per_x_slice": ("per x-slice",),
    "std_mean_of_whole_volume": (),
    "std_in_place_when_float": ("writes into its input",),
    "cb_sigmoid": ("no output is exactly 0",),
    "cb_softplus": ("no output is exactly 0",),
    "cb_missing_first_relu_without_normalization": ("first ReLU is missing",),
    "cb_instance_as_layer_norm": (),
    "cb_instance_two_groups": (),
    "cb_instance_one_group": ("normalized together",),
    "cb_valid_padding": ("padding='valid'",),
    "cb_kernel_two": ("kernel size differs",),
    "cb_relu_before_normalization": ("ReLU comes before",),
    "cb_three_convolutions": ("3 convolutions where 2",),
    "cb_second_width_from_input": (),
    "cb_bias_kept_with_normalization": ("have no bias",),
    "ub_relu_on_transpose": ("activation on the transposed",),
    "ub_skip_ignored": ("skip is not concatenated",),
    "ub_skip_added": ("4 convolutions where 3",),
    "ub_kernel_three": ("3x3x3 kernel", "kernel size differs"),
    "ub_stride_two_always": (),
    "ub_upsampling_layer": ("3x3x3 kernel", "kernel size differs"),
    "ub_normalization_dropped": ("normalization is not passed",),
    "ub_up_width_from_skip": (),
    "ub_block_width_half_of_x": (),
    "ub_pool_size_reversed": (),
    "scd_xy_only": ("axis argument is not used", "z is not summed"),
    "scd_squares": ("squares in the denominator",),
    "scd_one_minus": ("returns 1 - Dice",),
    "scd_eps_denominator_only": ("epsilon only in the denominator",),
    "scd_eps_inside_twice": ("2 * (sum + epsilon)",),
    "scd_ignores_axis": (),
    "scd_keepdims": (),
    "scd_int_cast": (),
    "scd_mean_not_sum": ("means where the formula has sums",),
    "dc_pooled_batch": ("batch is pooled",),
    "dc_z_not_summed": ("z is not summed",),
    "dc_squares": ("squares in the denominator",),
    "dc_one_minus": ("returns 1 - Dice",),
    "dc_eps_numerator_only": ("epsilon only in the numerator",),
    "dc_classes_pooled": ("classes are pooled",),
    "dc_no_mean": ("one value per sample and class",),
    "dc_mean_over_classes_only": ("one value per sample came back",),
    "dc_axis_of_exercise_1": ("batch is pooled",),  # axis=(0, 1, 2) pools the batch (and leaves z)
    "sdl_pooled_batch": ("batch is pooled",),
    "sdl_no_squares": ("no squares",),
    "sdl_returns_dice": ("returns the Dice",),
    "sdl_z_not_summed": ("z is not summed",),
    "sdl_eps_denominator_only": ("epsilon only in the denominator",),
    "sdl_fixed_epsilon": ("epsilon argument is not used",),
    "sdl_numpy": ("NumPy",),
    "sdl_squares_in_numerator": ("numerator squares too",),
    "sdl_int_cast": (),
    "css_swapped": ("swapped",),
    "css_precision": ("precision",),
    "css_first_axis": (),
    "css_tilde_on_integers": (),
    "css_zero_not_nan": (),
    "css_npv_for_specificity": ("TN / (TN + FN)",),
    "css_floor_division": (),
    "css_three_d_only": (),
    "df_transposed": ("transposed",),
    "df_rows_swapped": ("swapped",),
    "df_class_off_by_one": (),
    "df_pooled_classes": (),
    "bw_overwrite": ("overwrites",),
    "bw_sum": ("not divided",),
    "bw_divide_by_count": ("number of windows",),
    "bw_ignores_weights": ("weights are not used",),
    "bw_corner_order_swapped": (),
    "bw_weights_in_place": ("writes into its input",),
    "rd_single_labels": ("one label",),
    "rd_jaccard": ("Jaccard",),
    "rd_empty_zero": ("empty in both maps must score 1",),
    "rd_msd_order_confused": (),
    "rd_empty_nan": ("NaN is 0 / 0",),
    "rd_whole_tumour_without_enhancing": (),
    "rd_one_if_truth_empty": ("empty in the truth",),
    "ps_alive_is_a_death": ("ALIVE patient's death was not observed",),
    "ps_event_inverted": ("death that was observed", "ALIVE patient's death was not observed"),
    "ps_alive_dropped_as_nan": (),
    "ps_garbage_becomes_nan": (),
    "ps_strings_only": (),
    "ps_negative_accepted": (),
    "tv_single_labels": ("one label",),
    "tv_voxel_counts": ("count of voxels",),
    "tv_mm3_not_ml": ("mm³, not mL",),
    "tv_diagonal_product": ("diagonal",),
    "tv_signed_determinant": ("|det|",),
    "tv_label_values_summed": ("sum of the label values",),
    "tv_msd_order_confused": (),
    "ltr_exclusive_classes": ("one-hot classes",),
    "ltr_innermost_first": ("order ET, TC, WT",),
    "ltr_brats_core": ("{1, 3} would hold edema",),
    "ltr_bool": ("return .astype(np.float32)",),
    "ltr_int64": ("return .astype(np.float32)",),
    "ltr_channels_first": ("channels-last",),
    "ltr_with_background": ("background channel",),
    "ltr_float64": ("return .astype(np.float32)",),
    "rtl_argmax": ("argmax",),
    "rtl_overwrite_without_nesting": ("enclosing", "encloses it"),
    "rtl_count_regions": ("counting the regions",),
    "rtl_fixed_threshold": ("threshold argument is not used",),
    "rtl_float_labels": ("holds integers",),
    "rtl_channel_zero_is_et": (),
    "sb_whole_patch": ("across the whole patch",),
    "sb_channels_mixed": ("moved between channels",),
    "sb_first_axis_only": ("only reorders its first axis",),
    "sb_one_order_for_all_channels": ("every channel together",),
    "sb_not_written_back": ("written back",),
    "sb_global_random": ("must come from the seed",),
    "sb_seed_ignored": ("seed argument is not used",),
    "sb_block_end_inclusive": ("one voxel too large",),
    "sb_size_as_end": ("x0:x0 + bx",),
    "sb_float64": ("keep its dtype",),
    "sb_in_place": ("writes into its input",),
}
"""Each wrong answer's own "likely mistake" (substrings); () for a mistake with no signature of its own."""


def _misleading(name: str, fn) -> tuple[list[str], bool]:
    """The hint lines that do not name ``fn``'s own mistake, and whether its own mistake was named."""
    own = OWN_HINT[fn.__name__]
    lines = [
        line
        for variant in ("public", "grading")
        for line in _likely_mistakes(run_check(name, fn, variant=variant, record=True))
    ]
    return [line for line in lines if not any(o in line for o in own)], any(o in line for o in own for line in lines)


def test_every_wrong_answer_states_its_own_hint():
    assert sorted(OWN_HINT) == sorted(fn.__name__ for fns in WRONG.values() for fn in fns)


@pytest.mark.parametrize("name", list(EXERCISES))
def test_each_hint_fires_only_on_its_own_mistake(name):
    problems = []
    for fn in WRONG[name]:
        misleading, named = _misleading(name, fn)
        if misleading:
            problems.append(f"{fn.__name__} was told: {misleading}")
        if OWN_HINT[fn.__name__] and not named:
            problems.append(f"{fn.__name__} was never told its own mistake {OWN_HINT[fn.__name__]}")
    assert not problems, "\n".join(problems)


# ----------------------------------------------------------------------------
# The recording API (the instructor grader calls it) and the feedback
# ----------------------------------------------------------------------------


def _key(args, kwargs) -> str:
    def one(a):
        return (np.asarray(a).shape, np.asarray(a).tobytes()) if isinstance(a, np.ndarray) else repr(a)

    return repr([one(a) for a in args]) + repr(sorted((k, one(v)) for k, v in kwargs.items()))


NUMERIC = [
    "standardize",
    "single_class_dice_coefficient",
    "dice_coefficient",
    "soft_dice_loss",
    "compute_class_sens_spec",
    "get_sens_spec_df",
    "blend_windows",
    "region_dice",
    "tumour_volumes_ml",
    "label_to_regions",
    "regions_to_label",
]


@pytest.mark.parametrize("name", NUMERIC)
def test_an_answer_hard_coded_to_the_public_tests_fails_the_grading_variant(name):
    reference = EXERCISES[name].reference_function()
    memory = {}

    def recording(*args, **kwargs):
        memory[_key(args, kwargs)] = out = reference(*args, **kwargs)
        return out

    def hard_coded(*args, **kwargs):
        return memory.get(_key(args, kwargs))

    assert all(r.passed for r in run_check(name, recording, record=True))
    assert all(r.passed for r in run_check(name, hard_coded, record=True)), "the public tests are repeatable"
    grading = run_check(name, hard_coded, variant="grading", record=True)
    assert sum(not r.passed for r in grading) >= len(grading) - 1  # all but, for standardize, "input unchanged"


@pytest.mark.parametrize("variant", ["public", "grading"])
def test_both_variants_are_deterministic(variant):
    for name, fn in (
        ("get_sub_volume", EXERCISES["get_sub_volume"].reference_function()),
        ("get_sub_volume", gsv_last_corner_excluded),
        ("soft_dice_loss", sdl_pooled_batch),
    ):
        first = run_check(name, fn, variant=variant, record=True)
        assert first == run_check(name, fn, variant=variant, record=True)


def test_record_mode_prints_nothing_and_raises_nothing(capsys):
    def noisy(*args, **kwargs):
        print("debug output of the learner")
        import warnings

        warnings.warn("a learner warning", stacklevel=2)
        return "not a number"

    results = run_check("soft_dice_loss", noisy, variant="grading", record=True)
    assert capsys.readouterr() == ("", "")
    assert results and all(not r.passed and r.detail for r in results)


def test_the_stub_is_recorded_as_not_written():
    def stub(*args, **kwargs):
        raise NotImplementedError("replace this line")

    results = run_check("region_dice", stub, record=True)
    assert len(results) == 3 and all(not r.passed for r in results)
    assert all("not written yet" in r.detail for r in results)


def test_an_endless_loop_is_stopped_in_record_mode(monkeypatch):
    monkeypatch.setattr(check_runner, "TIME_LIMIT_S", 0.2)

    def endless(truth_label, pred_label):
        while True:
            try:
                pass
            except Exception:  # a learner's broad except must not swallow the time limit
                pass

    results = run_check("region_dice", endless, record=True)
    assert results and all(not r.passed and "endless loop" in r.detail for r in results)


def test_a_raising_function_is_shown_at_the_learners_line():
    def broken(truth_label, pred_label):
        masks = {region: np.isin(truth_label, values) for region, values in _REG.items()}
        return {region: masks[region].sum() / masks["XX"].sum() for region in masks}  # the learner's bug

    detail = run_check("region_dice", broken, record=True)[0].detail
    assert "your function raised KeyError: 'XX'" in detail
    assert 'return {region: masks[region].sum() / masks["XX"].sum() for region in masks}' in detail


def test_a_keras_error_is_shown_at_the_learners_line_not_inside_keras():
    def bad_padding(x, filters, normalization=None, name=None):
        from keras import layers

        x = layers.Conv3D(filters, 3, padding="same")(x)
        return layers.Concatenate(axis=1)([x, layers.Conv3D(filters, 3)(x)])  # the learner's line

    detail = run_check("conv_block", bad_padding, record=True)[0].detail
    assert detail.startswith("your function raised ValueError")
    assert "return layers.Concatenate(axis=1)([x, layers.Conv3D(filters, 3)(x)])" in detail
    assert "site-packages" not in detail


def test_a_failed_check_ends_in_one_line_in_a_notebook(capsys):
    with pytest.raises(ExerciseCheckError) as info:
        run_check("dice_coefficient", dc_pooled_batch)
    lines = info.value._render_traceback_()
    assert len(lines) == 1 and lines[0].startswith("ExerciseCheckError: ") and "\n" not in lines[0]
    # it names the first failed test's finding, short; not the list of the failed tests
    assert "failed; first: Dice: expected 0.6667, got 0.7778" in lines[0] and len(lines[0]) <= 250, lines[0]
    out = capsys.readouterr().out
    assert "likely mistake: the batch is pooled" in out and "All public tests passed" not in out


def test_large_arrays_are_summarised():
    results = run_check("blend_windows", bw_divide_by_count, record=True)
    detail = next(r.detail for r in results if "identity" in r.description)
    assert "array of shape (10, 8, 6, 2)" in detail and "differ at" in detail and len(detail) < 1000


def test_the_one_line_summary_stays_short_for_every_wrong_answer():
    for name, fns in WRONG.items():
        for fn in fns:
            with pytest.raises(ExerciseCheckError) as info:
                with contextlib.redirect_stdout(io.StringIO()):
                    run_check(name, fn)
            line = info.value._render_traceback_()[0]
            assert len(line) <= 80 + len(name) + check_runner.SUMMARY_CHARS and "\n" not in line, line


def test_something_that_is_not_a_function_fails_every_test():
    results = run_check("standardize", None, variant="grading", record=True)
    assert len(results) == 8 and all("not a function: found NoneType" in r.detail for r in results)


def test_get_sub_volume_feedback_blames_randint_only_for_the_off_by_one(capsys):
    off_by_one = run_check("get_sub_volume", gsv_last_corner_excluded, record=True)
    assert any("randint(low, high) excludes high" in r.detail for r in off_by_one)
    for fn in (gsv_x_y_swapped, gsv_not_random, gsv_less_or_equal, gsv_one_hot_from_data):
        details = [r.detail for r in run_check("get_sub_volume", fn, record=True)]
        assert not any("randint" in d for d in details), (fn.__name__, details)


def test_unknown_exercise_or_variant_is_an_error_even_when_recording():
    with pytest.raises(KeyError):
        run_check("no_such_exercise", print, record=True)
    with pytest.raises(ValueError):
        run_check("region_dice", print, variant="private", record=True)


# ----------------------------------------------------------------------------
# The table for a closing note: python tests/test_checks_mistakes.py
# (PYTHONPATH picks whose checks run against this file's answers)
# ----------------------------------------------------------------------------


def _likely_mistakes(results) -> list[str]:
    return [
        line.split("likely mistake:", 1)[1].strip()
        for r in results
        for line in r.detail.splitlines()
        if "likely mistake:" in line
    ]


def mistakes_table(variants=("public", "grading")) -> list[dict]:
    """Per exercise: wrong answers rejected, correct ones accepted, and what the hints said."""
    rows = []
    for name in EXERCISES:
        row = {"exercise": name}
        for variant in variants:
            rejected = sum(
                not all(r.passed for r in run_check(name, fn, variant=variant, record=True)) for fn in WRONG[name]
            )
            accepted = sum(
                all(r.passed for r in run_check(name, fn, variant=variant, record=True)) for fn in CORRECT[name]
            )
            row[f"{variant} wrong rejected"] = f"{rejected}/{len(WRONG[name])}"
            row[f"{variant} correct accepted"] = f"{accepted}/{len(CORRECT[name])}"
        told = [_misleading(name, fn) for fn in WRONG[name]]
        row["wrong answers told another mistake"] = sum(bool(misleading) for misleading, _ in told)
        row["wrong answers told their own"] = sum(named for _, named in told)
        rows.append(row)
    return rows


if __name__ == "__main__":
    import sys

    if "--hints" in sys.argv:
        for name in EXERCISES:
            for fn in WRONG[name]:
                results = run_check(name, fn, record=True)
                print(f"{name:32} {fn.__name__:40} {_likely_mistakes(results)}")
    else:
        print(pd.DataFrame(mistakes_table()).set_index("exercise").to_string())


@pytest.mark.parametrize("variant", ["public", "grading"])
@pytest.mark.parametrize("fn", [ltr_exclusive_classes, ltr_innermost_first, ltr_brats_core])
def test_a_wrong_region_set_fails_every_label_to_regions_test(fn, variant):
    """Exclusive classes, reversed or mis-nested regions are wrong on every input (no test gives partial credit)."""
    passed = [r.description for r in run_check("label_to_regions", fn, variant=variant, record=True) if r.passed]
    assert not passed, passed
