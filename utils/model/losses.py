"""Soft Dice loss and Dice metrics (lesson 04); sensitivity / specificity are in :mod:`utils.evaluation.metrics`.

Loss and metrics use ``keras.ops`` only, so they run on the TensorFlow, JAX and
PyTorch backends alike. Batches are channels-last ``(B, x, y, z, C)``:
per-class quantities are reduced over the spatial axes of each sample and
class (``axis=(1, 2, 3)``), then averaged. (The original assignment reduced
over ``(1, 2, 3)`` of a channels-first ``(C, x, y, z)`` array; once Keras added
the batch axis in front, that summed over the classes and two spatial axes.)

Every function here is registered with Keras, so a model saved with them
loads with ``keras.models.load_model(path)`` and no ``custom_objects``.
"""

from __future__ import annotations

import keras
from keras import ops

from ..data.labels import CLASS_NAMES, REGION_NAMES, REGION_ORDER

PACKAGE = "brats_course"
register = keras.saving.register_keras_serializable(package=PACKAGE)


def _as_float(*tensors):
    return [ops.cast(t, "float32") for t in tensors]


@register
def single_class_dice_coefficient(y_true, y_pred, axis=(0, 1, 2), epsilon=0.00001):
    """Dice coefficient of one class in one volume.

    Taught in lesson 04, exercise 1.

    ``(2 * sum(y_true * y_pred) + epsilon) / (sum(y_true) + sum(y_pred) + epsilon)``

    Args:
        y_true: ``(x, y, z)`` ground truth (0/1).
        y_pred: ``(x, y, z)`` prediction (0/1, or probabilities for the soft Dice).
        axis: axes to sum over.
        epsilon: keeps the ratio defined when both are empty (it is then 1).

    Returns:
        Scalar tensor.
    """
    y_true, y_pred = _as_float(y_true, y_pred)
    numerator = 2.0 * ops.sum(y_true * y_pred, axis=axis) + epsilon
    denominator = ops.sum(y_true, axis=axis) + ops.sum(y_pred, axis=axis) + epsilon
    return numerator / denominator


@register
def dice_coefficient(y_true, y_pred, axis=(1, 2, 3), epsilon=0.00001):
    """Mean Dice over the samples and classes of a batch.

    Taught in lesson 04, exercise 2.

    Args:
        y_true, y_pred: ``(B, x, y, z, C)``.
        axis: the spatial axes (per sample and class sums).
        epsilon: smoothing, as in :func:`single_class_dice_coefficient`.

    Returns:
        Scalar tensor: the mean of the ``(B, C)`` per-sample, per-class Dice.
    """
    y_true, y_pred = _as_float(y_true, y_pred)
    numerator = 2.0 * ops.sum(y_true * y_pred, axis=axis) + epsilon
    denominator = ops.sum(y_true, axis=axis) + ops.sum(y_pred, axis=axis) + epsilon
    return ops.mean(numerator / denominator)


@register
def soft_dice_loss(y_true, y_pred, axis=(1, 2, 3), epsilon=0.00001):
    """Soft Dice loss: 1 - mean over samples and classes of the soft Dice.

    Taught in lesson 04, exercise 3.

    ``1 - mean((2 * sum(p * y) + eps) / (sum(p^2) + sum(y^2) + eps))``

    Args:
        y_true: ``(B, x, y, z, C)`` one-hot targets.
        y_pred: ``(B, x, y, z, C)`` sigmoid probabilities.
        axis: the spatial axes.
        epsilon: smoothing; keeps the loss and its gradient finite.

    Returns:
        Scalar tensor in [0, 1].
    """
    y_true, y_pred = _as_float(y_true, y_pred)
    numerator = 2.0 * ops.sum(y_true * y_pred, axis=axis) + epsilon
    denominator = ops.sum(ops.square(y_pred), axis=axis) + ops.sum(ops.square(y_true), axis=axis) + epsilon
    return 1.0 - ops.mean(numerator / denominator)


@register
def dice_bce_loss(y_true, y_pred, axis=(1, 2, 3), epsilon=0.00001):
    """Soft Dice loss + binary cross-entropy (mean over voxels and classes).

    The usual practical choice (nnU-Net trains with Dice + cross-entropy):
    the Dice term copes with class imbalance, the cross-entropy term gives
    smooth, well-scaled gradients early in training and on empty patches,
    where Dice alone has little to say.
    """
    y_true, y_pred = _as_float(y_true, y_pred)
    bce = ops.mean(keras.losses.binary_crossentropy(y_true[..., None], y_pred[..., None]))
    return soft_dice_loss(y_true, y_pred, axis, epsilon) + bce


@register
def batch_dice_bce_loss(y_true, y_pred, epsilon=0.00001):
    """:func:`dice_bce_loss` with the Dice pooled over the batch (nnU-Net's ``batch_dice``).

    Each class's Dice sums over every patch of the batch, so a patch with no
    tumour still feels its false positives through the other patches' sums,
    instead of scoring an almost constant near-zero Dice of its own. Works for
    3D ``(B, x, y, z, C)`` and 2D ``(B, x, y, C)`` batches: it sums over every
    axis but the classes.
    """
    return dice_bce_loss(y_true, y_pred, axis=tuple(range(len(y_true.shape) - 1)), epsilon=epsilon)


def _class_dice(index: int, name: str, meaning: str | None = None):
    def metric(y_true, y_pred):
        y_true, y_pred = _as_float(y_true, y_pred)
        return dice_coefficient(y_true[..., index : index + 1], y_pred[..., index : index + 1])

    metric.__name__ = name
    metric.__qualname__ = name
    metric.__doc__ = f"Soft Dice of {meaning or CLASS_NAMES[index]} (channel {index}), mean over the batch."
    return register(metric)


dice_edema = _class_dice(0, "dice_edema")
dice_non_enhancing = _class_dice(1, "dice_non_enhancing")
dice_enhancing = _class_dice(2, "dice_enhancing")
CLASS_DICE_METRICS = (dice_edema, dice_non_enhancing, dice_enhancing)
dice_wt, dice_tc, dice_et = (_class_dice(k, f"dice_{r.lower()}", REGION_NAMES[r]) for k, r in enumerate(REGION_ORDER))
REGION_DICE_METRICS = (dice_wt, dice_tc, dice_et)
"""The per-channel soft Dice of a region-based model (``TrainConfig.outputs == "regions"``)."""
DICE_METRICS = {"classes": CLASS_DICE_METRICS, "regions": REGION_DICE_METRICS}
"""The per-channel soft Dice metrics of each output kind."""


@register
class PooledDice(keras.metrics.Metric):
    """Hard Dice of each class pooled over every voxel seen since the last reset.

    The soft Dice metrics above average one Dice per patch and class; a patch
    that lacks a class scores about 0 as soon as the network predicts a
    little of it there (the epsilon is tiny), so their mean sits far below
    the Dice of whole cases. This metric thresholds the prediction, adds up
    intersections and sizes over all the patches of an epoch (as if they
    were one volume), and only then divides: a class absent from a patch
    adds its false positives and nothing else. It is what the course selects
    ``best.keras`` by (``val_pooled_dice``).

    Args:
        class_index: report this channel (classes: 0 edema, 1 non-enhancing, 2 enhancing;
            regions: 0 WT, 1 TC, 2 ET); None: the mean of the three.
        threshold: probability above which a voxel counts as predicted.
    """

    def __init__(self, class_index: int | None = None, threshold: float = 0.5, name: str | None = None, **kwargs):
        if name is None:
            name = "pooled_dice" if class_index is None else f"pooled_dice_{METRIC_NAMES[class_index]}"
        super().__init__(name=name, **kwargs)
        self.class_index, self.threshold = class_index, float(threshold)
        n = len(CLASS_NAMES)
        self.intersection = self.add_variable(shape=(n,), initializer="zeros", name="intersection")
        self.total = self.add_variable(shape=(n,), initializer="zeros", name="total")

    def update_state(self, y_true, y_pred, sample_weight=None):
        y_true = ops.cast(y_true, "float32")
        predicted = ops.cast(ops.cast(y_pred, "float32") > self.threshold, "float32")
        axes = tuple(range(len(y_true.shape) - 1))  # every axis but the class axis
        self.intersection.assign_add(ops.sum(y_true * predicted, axis=axes))
        self.total.assign_add(ops.sum(y_true, axis=axes) + ops.sum(predicted, axis=axes))

    def result(self):
        # A class absent from truth and prediction alike scores 1 (the BraTS convention).
        dice = ops.where(self.total > 0, 2.0 * self.intersection / ops.maximum(self.total, 1.0), 1.0)
        return ops.mean(dice) if self.class_index is None else dice[self.class_index]

    def reset_state(self):
        # zeros of the variable's shape, as Keras's own metrics reset: ops.zeros_like(variable)
        # fails on the JAX backend (jax 0.10 cannot read a Keras variable's dtype)
        for variable in (self.intersection, self.total):
            variable.assign(ops.zeros(variable.shape, variable.dtype))

    def get_config(self):
        return {**super().get_config(), "class_index": self.class_index, "threshold": self.threshold}


METRIC_NAMES = ("edema", "non_enhancing", "enhancing")
CHANNEL_METRIC_NAMES = {"classes": METRIC_NAMES, "regions": tuple(r.lower() for r in REGION_ORDER)}
"""The suffix of each channel's metrics (``pooled_dice_<suffix>``) for each output kind."""


def pooled_dice_metrics(outputs: str = "classes") -> list[PooledDice]:
    """Fresh pooled Dice metrics: the mean of the channels, then one per channel (class or region)."""
    names = CHANNEL_METRIC_NAMES[outputs]
    return [PooledDice(), *(PooledDice(k, name=f"pooled_dice_{n}") for k, n in enumerate(names))]
