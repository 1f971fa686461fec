# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Lesson 04 - Soft Dice loss and segmentation metrics
#
# Tumour voxels are a few percent of a scan. A loss that counts voxels one by
# one is happy with a network that finds no tumour at all. The Dice
# coefficient measures overlap instead, and its soft version trains.
#
# **You will learn to**
# - see why accuracy and cross-entropy mislead under class imbalance;
# - compute the Dice coefficient of one class and of a batch (exercises 1-2);
# - write the soft Dice loss with `keras.ops`, so it runs on any backend (exercise 3);
# - compute per-class sensitivity and specificity and tabulate them (exercises 4-5).
#
# **Accelerator: CPU**
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](COLAB_URL)

# %%
# Setup: on Colab, install the course package (locally, `make` has done it).
import sys

RELEASE = "COURSE_REF"  # the course release this notebook belongs to; "main" follows the newest course
if "google.colab" in sys.modules:
    import subprocess

    subprocess.run([sys.executable, "-m", "pip", "install", "-q",
                    f"git+https://github.com/COURSE_REPO@{RELEASE}"], check=True)

# %% tags=["imports"]
import numpy as np
import pandas as pd
import matplotlib.pyplot as plt
import utils  # before keras: it keeps TensorFlow's start-up notices out of the lesson
import keras
from keras import ops
from scipy import ndimage

from utils import get_dataset, list_cases, load_case, one_hot
from utils.course.checks import (check_compute_class_sens_spec, check_dice_coefficient, check_get_sens_spec_df,
                          check_single_class_dice_coefficient, check_soft_dice_loss)
from utils.data.labels import CLASS_NAMES

# %% tags=["parameters"]
DATASET = "phantom"

# %% [markdown]
# ## 1. When 99% right is useless
#
# A toy volume: 1% of its voxels are tumour. A lazy "network" predicts no
# tumour anywhere (probability 0.01 everywhere). It is 99% accurate and its
# binary cross-entropy (BCE) is small - yet it has found nothing.

# %%
rng = np.random.default_rng(0)
truth = np.zeros((1, 40, 40, 10, 1), dtype=np.float32)
truth[0, 15:23, 17:21, 3:8] = 1.0                      # 160 of 16000 voxels: 1%
lazy = np.full_like(truth, 0.01)
good = np.clip(truth * 0.9 + 0.05 + rng.normal(0, 0.02, truth.shape), 0, 1).astype(np.float32)


def summary(pred):
    bce = float(ops.convert_to_numpy(ops.mean(keras.losses.binary_crossentropy(truth[..., None], pred[..., None]))))
    return {"accuracy": float(((pred > 0.5) == truth).mean()), "BCE": bce,
            "Dice": float(ops.convert_to_numpy(utils.dice_coefficient(truth, (pred > 0.5).astype("float32"))))}


pd.DataFrame({"predicts no tumour": summary(lazy), "finds the tumour": summary(good)}).T.round(3)

# %% [markdown]
# The lazy predictor's accuracy is 99% and its BCE is low, because every
# background voxel counts as much as a tumour voxel. Its Dice is 0.
#
# ## 2. The Dice coefficient
#
# For a ground-truth mask $A$ and a prediction $B$, Dice is twice the overlap
# over the total size:
#
# $$\text{DSC}(A, B) = \frac{2 |A \cap B|}{|A| + |B|} \approx \frac{2 \sum_i y_i p_i + \epsilon}{\sum_i y_i + \sum_i p_i + \epsilon}$$
#
# It ignores the true negatives - the sea of healthy voxels - so it cannot be
# fooled by them. The small $\epsilon$ keeps the ratio defined when both masks
# are empty (Dice is then 1: nothing to find, nothing found). The expected
# outputs below use $\epsilon = 1$ so the fractions are easy to check by hand.
#
# ### Exercise 1: `single_class_dice_coefficient`
#
# Compute the formula for one class of one volume, summing over `axis`. Use
# `keras.ops` (`ops.sum`) rather than NumPy: the same code then works on
# NumPy arrays and on the tensors Keras passes during training, on any
# backend.
#
# Expected, for volumes of shape `(2, 2, 1)` (one z-slice; the default
# `axis=(0, 1, 2)` needs all three axes): pred `[[1, 0], [0, 1]]`, label
# `[[1, 1], [0, 0]]`, ε = 1 → 0.6; label `[[1, 1], [0, 1]]` → 0.8333.

# %%
def single_class_dice_coefficient(y_true, y_pred, axis=(0, 1, 2), epsilon=0.00001):
    """Dice coefficient of one class of one volume.

    Args:
        y_true: (x, y, z) ground truth.
        y_pred: (x, y, z) prediction.
        axis: axes to sum over.
        epsilon: smoothing constant.

    Returns:
        Scalar: (2 * sum(y_true * y_pred) + epsilon) / (sum(y_true) + sum(y_pred) + epsilon).
    """
    ### BEGIN SOLUTION
    # Hint: ops.sum(a * b, axis=axis) sums the products over the given axes.
    y_true = ops.cast(y_true, "float32")
    y_pred = ops.cast(y_pred, "float32")
    numerator = 2.0 * ops.sum(y_true * y_pred, axis=axis) + epsilon
    denominator = ops.sum(y_true, axis=axis) + ops.sum(y_pred, axis=axis) + epsilon
    return numerator / denominator
    ### END SOLUTION

# %% tags=["check"]
check_single_class_dice_coefficient(single_class_dice_coefficient)

# %% [markdown]
# ### Exercise 2: `dice_coefficient`
#
# During training Keras passes whole batches, channels-last:
# `(batch, x, y, z, classes)`. Compute the Dice of **each sample and each
# class** by summing over the spatial axes `axis=(1, 2, 3)` - that leaves a
# `(batch, classes)` array - and return its mean.
#
# Expected: a batch of shape `(1, 2, 2, 1, 2)`, one sample whose two classes
# are the two label slices of exercise 1 (Dice 0.6 and 0.8333, ε = 1) → 0.7167.

# %%
def dice_coefficient(y_true, y_pred, axis=(1, 2, 3), epsilon=0.00001):
    """Mean Dice coefficient over the samples and classes of a batch.

    Args:
        y_true: (batch, x, y, z, classes) ground truth.
        y_pred: (batch, x, y, z, classes) prediction.
        axis: the spatial axes.
        epsilon: smoothing constant.

    Returns:
        Scalar: the mean over samples and classes of the per-sample, per-class Dice.
    """
    ### BEGIN SOLUTION
    # Hint: the same formula as exercise 1 with axis=(1, 2, 3), then ops.mean.
    y_true = ops.cast(y_true, "float32")
    y_pred = ops.cast(y_pred, "float32")
    numerator = 2.0 * ops.sum(y_true * y_pred, axis=axis) + epsilon
    denominator = ops.sum(y_true, axis=axis) + ops.sum(y_pred, axis=axis) + epsilon
    return ops.mean(numerator / denominator)
    ### END SOLUTION

# %% tags=["check"]
check_dice_coefficient(dice_coefficient)

# %% [markdown]
# ### The axis bug of the original assignment
#
# The original worked on channels-first volumes `(classes, x, y, z)` and
# summed over `axis=(1, 2, 3)`. Inside Keras a batch axis comes first,
# `(batch, classes, x, y, z)`, and the same axes now sum over classes and two
# spatial axes - mixing classes and leaving one Dice per z-slice. The same
# mistake in our channels-last world is to keep the single-volume
# `axis=(0, 1, 2)` for a batch: it pools the samples of a batch together.
#
# A batch of two: the network is perfect on the first sample and misses the
# small tumour of the second entirely.

# %%
batch_true = np.zeros((2, 20, 20, 8, 1), dtype=np.float32)
batch_true[0, 2:18, 2:18, 1:7] = 1.0     # a large tumour, found
batch_true[1, 8:11, 8:11, 3:5] = 1.0     # a small tumour, missed
batch_pred = batch_true.copy()
batch_pred[1] = 0.0

per_sample = float(ops.convert_to_numpy(utils.dice_coefficient(batch_true, batch_pred)))
pooled = float(ops.convert_to_numpy(ops.mean(
    utils.single_class_dice_coefficient(batch_true, batch_pred, axis=(0, 1, 2, 3)))))
print(f"per sample, then the mean (ours):       {per_sample:.3f}")
print(f"samples pooled (a batch-unaware axis):  {pooled:.3f}")

# %% [markdown]
# Pooled, the big tumour drowns the miss and the score is nearly perfect; per
# sample, the missed case costs what it should. The loss built on it tells
# the network the same thing.
#
# ## 3. The soft Dice loss
#
# Dice on thresholded predictions has no useful gradient. The **soft** Dice
# uses the probabilities directly; with squares in the denominator (the
# V-Net form) its optimum sits at confident 0/1 predictions:
#
# $$\mathcal{L}_{Dice} = 1 - \frac{1}{N C}\sum_{n, c} \frac{2 \sum_i p_i y_i + \epsilon}{\sum_i p_i^2 + \sum_i y_i^2 + \epsilon}$$
#
# ### Exercise 3: `soft_dice_loss`
#
# Per sample and class (sum over `axis=(1, 2, 3)`), then one minus the mean.
# Use `ops.square` for the squares.
#
# Expected (ε = 1, batches of shape `(1, 2, 2, 1, 1)`): pred `[[1, 0], [0, 1]]`,
# label `[[1, 1], [0, 0]]` → 0.4; pred `[[0.5, 0], [0, 0.5]]` → 0.4286.

# %%
def soft_dice_loss(y_true, y_pred, axis=(1, 2, 3), epsilon=0.00001):
    """Soft Dice loss of a batch.

    Args:
        y_true: (batch, x, y, z, classes) one-hot targets.
        y_pred: (batch, x, y, z, classes) probabilities.
        axis: the spatial axes.
        epsilon: smoothing constant.

    Returns:
        Scalar: 1 - mean over samples and classes of the soft Dice.
    """
    ### BEGIN SOLUTION
    # Hint: denominator = ops.sum(ops.square(y_pred), axis) + ops.sum(ops.square(y_true), axis) + epsilon
    y_true = ops.cast(y_true, "float32")
    y_pred = ops.cast(y_pred, "float32")
    numerator = 2.0 * ops.sum(y_true * y_pred, axis=axis) + epsilon
    denominator = ops.sum(ops.square(y_pred), axis=axis) + ops.sum(ops.square(y_true), axis=axis) + epsilon
    return 1.0 - ops.mean(numerator / denominator)
    ### END SOLUTION

# %% tags=["check"]
check_soft_dice_loss(soft_dice_loss)

# %% [markdown]
# ### The loss of one voxel
#
# How does the loss change with the predicted probability $p$ of a single
# voxel (ε = 1 for readability)? Cross-entropy explodes as a confident
# prediction turns wrong; soft Dice stays bounded in [0, 1]. Both pull $p$
# towards the target.

# %% alt="Soft Dice loss and binary cross-entropy of one voxel against its predicted probability, for target 1 and target 0."
p = np.linspace(0.0, 1.0, 201, dtype=np.float32)
voxels = p.reshape(-1, 1, 1, 1, 1)
fig, axes = plt.subplots(1, 2, figsize=(11, 3.5))
for ax, target in zip(axes, (1.0, 0.0)):
    y = np.full_like(voxels, target)
    dice = [float(ops.convert_to_numpy(utils.soft_dice_loss(y[i:i + 1], voxels[i:i + 1], epsilon=1.0)))
            for i in range(len(p))]
    bce = -(target * np.log(np.clip(p, 1e-7, 1)) + (1 - target) * np.log(np.clip(1 - p, 1e-7, 1)))
    ax.plot(p, dice, label="soft Dice loss (ε = 1)")
    ax.plot(p, bce, label="binary cross-entropy", linestyle="--")
    ax.set_ylim(0, 3)
    ax.set_xlabel("predicted probability p")
    ax.set_title(f"one voxel, target y = {int(target)}")
    ax.legend()
fig.tight_layout()
plt.show()

# %% [markdown]
# **Dice + cross-entropy.** In practice nnU-Net and most BraTS winners add the
# two: `utils.dice_bce_loss`. Cross-entropy gives every voxel a well-scaled
# gradient, which helps early in training and on patches without tumour
# (where Dice has little to say); Dice keeps the rare classes from being
# swamped. Use soft Dice alone when the classes are very unbalanced and the
# patches are sampled around the tumour; add BCE when training is unstable or
# many patches are empty.

# %%
y_toy = truth
print("soft Dice on the good prediction:      ", round(float(ops.convert_to_numpy(utils.soft_dice_loss(y_toy, good))), 4))
print("Dice + BCE on the good prediction:     ", round(float(ops.convert_to_numpy(utils.dice_bce_loss(y_toy, good))), 4))
print("soft Dice on the lazy prediction:      ", round(float(ops.convert_to_numpy(utils.soft_dice_loss(y_toy, lazy))), 4))
print("Dice + BCE on the lazy prediction:     ", round(float(ops.convert_to_numpy(utils.dice_bce_loss(y_toy, lazy))), 4))

# %% [markdown]
# **Pooling the Dice over the batch.** Most training patches hold no tumour of
# some class, and many hold none at all. `soft_dice_loss` scores each patch on
# its own, so such a patch scores a loss of almost exactly 1 (the epsilon is
# tiny) whether its false positives are strong or faint: it gives little push
# to remove them. nnU-Net pools each class's sums over the whole batch before
# dividing ("batch Dice"); then false positives in an empty patch count
# against the tumour in the others, in proportion to how many there are.
# `utils.batch_dice_bce_loss` is Dice + BCE with the Dice pooled that way; the
# CPU preset of lesson 05 trains with it. Below: a batch of the good
# prediction and an empty patch with false positives, strong then faint. One
# change per column: the soft Dice per patch, the same soft Dice pooled over
# the batch (the only change: the sums run over the batch too), BCE alone, and
# the sum lesson 05 trains with.

# %%
empty = np.zeros_like(truth)
strong, faint = np.zeros_like(truth), np.zeros_like(truth)
strong[0, :10, :10, :5] = 0.6   # 500 false-positive voxels at p = 0.6
faint[0, :10, :10, :5] = 0.06   # the same voxels at p = 0.06
batch_truth = np.concatenate([truth, empty])


def as_float(value):
    return float(ops.convert_to_numpy(value))


rows = {}
for name, fp in (("strong", strong), ("faint", faint)):
    batch_pred = np.concatenate([good, fp])
    rows[f"{name} false positives"] = {
        "soft Dice per patch": as_float(utils.soft_dice_loss(batch_truth, batch_pred)),
        "soft Dice pooled over the batch": as_float(utils.soft_dice_loss(batch_truth, batch_pred, axis=(0, 1, 2, 3))),
        "BCE": as_float(ops.mean(keras.losses.binary_crossentropy(batch_truth[..., None], batch_pred[..., None]))),
        "batch Dice + BCE": as_float(utils.batch_dice_bce_loss(batch_truth, batch_pred)),
    }
fp_table = pd.DataFrame(rows).T
gap = fp_table.iloc[0] - fp_table.iloc[1]   # strong minus faint: what removing the false positives is worth
print(f"loss removed by turning the strong false positives faint: soft Dice per patch "
      f"{gap['soft Dice per patch']:.4f}, the same soft Dice pooled over the batch "
      f"{gap['soft Dice pooled over the batch']:.4f}, BCE {gap['BCE']:.4f}, batch Dice + BCE "
      f"{gap['batch Dice + BCE']:.4f}")
fp_table.round(4)

# %% [markdown]
# ## 4. Sensitivity and specificity
#
# Dice is one number. Clinicians also ask two separate questions, per class:
#
# - **sensitivity** (recall) = TP / (TP + FN): of the true tumour voxels, how
#   many did we find?
# - **specificity** = TN / (TN + FP): of the healthy voxels, how many did we
#   leave alone?
#
# ### Exercise 4: `compute_class_sens_spec`
#
# `pred` and `label` are binary, channels-last `(x, y, z, classes)`; take
# channel `class_num` of each and count TP, TN, FP and FN. When a denominator
# is 0 (e.g. the class does not occur in the label, so there is nothing to
# find), the ratio is undefined: return `np.nan` for it.
#
# Expected: pred `[[1, 0], [0, 1]]`, label `[[1, 1], [0, 0]]` as arrays of
# shape `(2, 2, 1, 1)` (x, y, z, classes), `class_num=0` → (0.5, 0.5).

# %%
def compute_class_sens_spec(pred, label, class_num):
    """Sensitivity and specificity of one class.

    Args:
        pred: binary prediction (x, y, z, classes).
        label: binary ground truth (x, y, z, classes).
        class_num: the class (channel) to evaluate.

    Returns:
        (sensitivity, specificity); np.nan where a denominator is 0.
    """
    ### BEGIN SOLUTION
    # Hint: with p and t boolean, TP = np.sum(p & t) and TN = np.sum(~p & ~t).
    p = np.asarray(pred)[..., class_num].astype(bool)
    t = np.asarray(label)[..., class_num].astype(bool)
    tp, tn = np.sum(p & t), np.sum(~p & ~t)
    fp, fn = np.sum(p & ~t), np.sum(~p & t)
    sensitivity = tp / (tp + fn) if tp + fn > 0 else np.nan
    specificity = tn / (tn + fp) if tn + fp > 0 else np.nan
    return float(sensitivity), float(specificity)
    ### END SOLUTION

# %% tags=["check"]
check_compute_class_sens_spec(compute_class_sens_spec)

# %% [markdown]
# ### Exercise 5: `get_sens_spec_df`
#
# Put both numbers for the three classes into a pandas DataFrame: columns
# `Edema`, `Non-enhancing tumour`, `Enhancing tumour` (`utils.data.labels.CLASS_NAMES`),
# rows `Sensitivity` and `Specificity`, values rounded to 4 decimals.

# %%
def get_sens_spec_df(pred, label):
    """Per-class sensitivity and specificity as a DataFrame.

    Args:
        pred: binary prediction (x, y, z, 3).
        label: binary ground truth (x, y, z, 3).

    Returns:
        DataFrame: columns the class names, rows "Sensitivity" and "Specificity".
    """
    ### BEGIN SOLUTION
    # Hint: build a dict {class name: [sensitivity, specificity]} and pass index=[...].
    table = {name: compute_class_sens_spec(pred, label, k) for k, name in enumerate(CLASS_NAMES)}
    return pd.DataFrame(table, index=["Sensitivity", "Specificity"]).round(4)
    ### END SOLUTION

# %% tags=["check"]
check_get_sens_spec_df(get_sens_spec_df)

# %% [markdown]
# ## 5. On a real label map
#
# We have no trained network yet (lesson 05), so we imitate a typical one:
# it over-segments edema by two voxels, misses the thinnest parts of the
# enhancing rim, and finds the core. The table is the one lesson 06 reports
# for real predictions.

# %%
data_dir = get_dataset(DATASET)
case = load_case(data_dir, list_cases(data_dir)[0])
target = one_hot(case.label).astype(np.uint8)                       # (x, y, z, 3)
fake = target.copy()
fake[..., 0] = ndimage.binary_dilation(target[..., 0], iterations=2) & ~target[..., 1:].any(-1)
fake[..., 2] = ndimage.binary_erosion(target[..., 2])
utils.get_sens_spec_df(fake, target)

# %%
dice_per_class = [float(ops.convert_to_numpy(utils.single_class_dice_coefficient(target[..., k], fake[..., k])))
                  for k in range(3)]
pd.Series(dice_per_class, index=list(CLASS_NAMES), name="Dice").round(4)

# %% [markdown]
# Over-segmenting edema keeps its sensitivity at 1 but lowers its Dice;
# specificity barely moves, because healthy voxels are so many. That is why
# BraTS reports Dice (and a boundary distance, lesson 06) rather than
# accuracy or specificity.
#
# ## Summary
#
# - Under class imbalance, accuracy and cross-entropy reward finding nothing;
#   Dice measures overlap and ignores true negatives.
# - A Dice **metric** reduces over the spatial axes of each sample and class,
#   `(1, 2, 3)`, then averages: pooled over the batch, a large tumour drowns a
#   missed small one (section 2). A **loss** may pool each class's sums over
#   the batch on purpose (batch Dice, section 3), so that false positives in
#   a patch without tumour still cost something.
# - The soft Dice loss trains; Dice + BCE is the robust default.
# - Sensitivity and specificity per class complete the picture.
#
# **Next:** lesson 05 trains the U-Net with this loss.
