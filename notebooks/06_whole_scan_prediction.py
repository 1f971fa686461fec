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
# # Lesson 06 - Whole-scan prediction, NIfTI export and BraTS evaluation
#
# The network was trained on patches; a radiologist wants the whole scan
# segmented, in a file their viewer opens, with honest numbers on how good
# it is.
#
# **You will learn to**
# - predict a whole scan with overlapping sliding windows and stitch them
#   with Gaussian weights (exercise 1, `blend_windows`) - and see the seams
#   that stitching without overlap leaves;
# - turn three sigmoid channels into one label map;
# - evaluate with the BraTS regions: Dice (exercise 2, `region_dice`) and the
#   95th-percentile Hausdorff distance, both the legacy way (one score per
#   scan) and lesion-wise (one per lesion, as BraTS ranks since 2023);
# - export a NIfTI segmentation that keeps the scan's affine, and use the
#   `utils.inference.predict` command line.
#
# **Accelerator: CPU** (a GPU makes it faster, nothing more).
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
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import matplotlib.pyplot as plt
import nibabel as nib
import utils  # before keras: it keeps TensorFlow's start-up notices out of the lesson
import keras

from utils.course.checks import check_blend_windows, check_region_dice
from utils.data.datasets import load_case
from utils.data.sources import get_dataset
from utils.inference.sliding_window import (gaussian_weights, predict_case, preprocess_for_model, probabilities_to_labels,
                             save_segmentation, sliding_window_predict, tile_predict, window_starts)
from scipy import ndimage
from utils.evaluation.metrics import (class_scores, evaluate_cases, hd95, lesion_wise_region, region_scores,
                                     whole_tumour_errors)
from utils.inference.postprocessing import PostProcessing, read_postprocessing
from utils.data.labels import CLASS_NAMES, REGION_NAMES, REGION_ORDER, REGIONS
from utils.config import course_mode, preset, run_dir, use_drive
from utils.preprocessing.plan import plan_for_model
from utils.training.train import prepare_data, train
from utils.visualization.figures import AXIS_NAMES, label_colormap, label_legend, take_slice, tumour_center

# %% tags=["parameters"]
MODEL_PATH = None    # None: the best model of lesson 05 for this mode (trained now if missing); on a CPU
                     # runtime after a GPU run: "/content/drive/MyDrive/brats-course/runs/gpu/best.keras"
USE_DRIVE = False    # Colab: data, cache and runs on Google Drive, as in lesson 05
OVERLAP = 0.5
MIRROR = False       # test-time mirroring: 8x the work, usually a little better

# %% [markdown]
# ## 1. The model and a held-out case
#
# We reuse lesson 05's run - the same mode (`utils.config.course_mode()`),
# the same preset, the same run folder, on Google Drive too when
# `USE_DRIVE = True` in both lessons - or train it now as lesson 05 would,
# and its validation cases, which the network never trained on: the run
# folder's `plan.json` names them, with the preprocessing the run used.

# %% tags=["run-config"]
use_drive(USE_DRIVE)
config = preset()
model_path = Path(MODEL_PATH) if MODEL_PATH else run_dir(config) / "best.keras"
print(f"mode {course_mode()}: model {model_path}")

# %%
if not model_path.is_file():
    print(f"{model_path} not found: training it first, as lesson 05 does")
    trained = train(config)
    print(f"trained {len(trained.history)} epochs in {trained.seconds:.0f} s")
# a model trained with mixed precision on a GPU is rebuilt in float32 where there is none (same weights)
model = utils.load_model(model_path, compile=False)
plan = plan_for_model(model_path)  # the run's plan.json: preprocessing, crop, window and split
data_dir = get_dataset(plan.dataset or config.dataset, plan.mode or config.mode)
val_ids = list(plan.validation_cases) or prepare_data(config, progress=False)[3]  # a model without a plan
case = load_case(data_dir, val_ids[0])
window = tuple(model.input.shape[1:4])
# what the three output channels mean: tumour classes, or nested regions (the run's plan.json says which)
if plan.output_kind == "regions":
    channels = [(f"{r} ({REGION_NAMES[r]})", np.isin(case.label, REGIONS[r])) for r in REGION_ORDER]
else:
    channels = [(name, case.label == k + 1) for k, name in enumerate(CLASS_NAMES)]
print(f"model {model_path} ({model.count_params():,} parameters), window {window}, outputs: {plan.output_kind} "
      f"({', '.join(name for name, _ in channels)}); case {case.case_id} {case.image.shape}")

# %% [markdown]
# ## 2. One patch
#
# The network maps one window to three probability maps. What they are
# depends on how it was trained (`TrainConfig.outputs`, recorded in
# `plan.json`): one per tumour **class** (edema, non-enhancing,
# enhancing; the assignment's convention, and the exercises') or one per
# nested BraTS **region** (whole tumour WT, tumour core TC, enhancing tumour
# ET; nnU-Net's region-based training, lesson 05). Here the window sits on
# the tumour centre; the threshold 0.5 turns probabilities into masks.

# %% alt="One window through the tumour: FLAIR and the three predicted probability maps with the true outline of each class or region."
image = preprocess_for_model(case.image, plan)
centre = tumour_center(case.label, case.label.shape)
corner = [int(np.clip(c - w // 2, 0, max(s - w, 0))) for c, w, s in zip(centre, window, case.label.shape)]
region = tuple(slice(c, c + w) for c, w in zip(corner, window))
patch_prob = model.predict(image[region][None], verbose=0)[0]
z = centre[2] - corner[2]
fig, axes = plt.subplots(1, 4, figsize=(14, 3.6))
axes[0].imshow(image[region][:, :, z, 0].T, cmap="gray", origin="lower")
axes[0].set_title("FLAIR patch")
for k, (name, truth_mask) in enumerate(channels):
    axes[k + 1].imshow(patch_prob[:, :, z, k].T, cmap="magma", vmin=0, vmax=1, origin="lower")
    axes[k + 1].contour(truth_mask[region][:, :, z].T, levels=[0.5], colors="cyan", linewidths=1)
    axes[k + 1].set_title(f"P({name})\ncyan: ground truth", fontsize=9)
for ax in axes:
    ax.set_axis_off()
plt.show()

# %% [markdown]
# ## 3. From patches to the whole scan
#
# The original assignment cut the scan into **non-overlapping** tiles and
# pasted the predictions side by side. But a network is least sure at the
# border of its window, where it saw the least context - and every tile
# border becomes a visible **seam**.
#
# Sliding windows fix this: windows overlap (here by 50%), every voxel is
# predicted several times, and the predictions are averaged with weights
# that trust each window's centre more than its border - a Gaussian, as
# nnU-Net and MONAI do.

# %% alt="Gaussian weights of one window, and the overlapping windows along the x axis of the scan."
w = gaussian_weights(window)
fig, axes = plt.subplots(1, 2, figsize=(11, 3.4), width_ratios=(1, 1.6))
shown = axes[0].imshow(w[:, :, window[2] // 2].T, cmap="viridis", origin="lower")
axes[0].set_title(f"Gaussian weights, window {window}\n(middle slice)", fontsize=10)
axes[0].set_xlabel("x in the window")
axes[0].set_ylabel("y in the window")
fig.colorbar(shown, ax=axes[0], label="weight")
starts = window_starts(case.label.shape[0], window[0], OVERLAP)
for i, s in enumerate(starts):
    axes[1].barh(i, window[0], left=s, height=0.6, color="tab:purple", alpha=0.7)
    axes[1].text(s + window[0] / 2, i, f"{s}..{s + window[0]}", ha="center", va="center", fontsize=8,
                 color="white")
axes[1].set_xlim(0, case.label.shape[0])
axes[1].set_yticks(range(len(starts)), [f"window {i + 1}" for i in range(len(starts))])
axes[1].invert_yaxis()
axes[1].set_xlabel(f"x (voxel), the scan is {case.label.shape[0]} wide")
axes[1].set_title(f"{len(starts)} windows along x, overlap {OVERLAP:.0%}", fontsize=10)
fig.tight_layout()
plt.show()

# %% [markdown]
# ### Exercise 1: `blend_windows`
#
# Given the predictions of all windows, their corners and the weights,
# build the blended volume: for every voxel, the sum over the windows that
# cover it of `weight * prediction`, divided by the sum of their weights.
#
# 1. start two arrays of zeros: `total` with shape `(*volume_shape, K)` and
#    `norm` with shape `volume_shape`;
# 2. for each window at corner `(a, b, c)`: add `prediction * weights[..., None]`
#    to `total[a:a+wx, b:b+wy, c:c+wz]` and `weights` to the same region of `norm`;
# 3. return `total / norm[..., None]`.
#
# With `weights=None` every weight is 1 (a plain mean). Leave the caller's
# `window_predictions` and `weights` unchanged (multiply into new arrays,
# not with `*=`). An identity model -
# one that returns its input - must come back unchanged, whatever the
# overlap: a good test of any stitching code.

# %%
def blend_windows(window_predictions, starts, volume_shape, weights=None):
    """Stitch overlapping window predictions by weighted averaging.

    Args:
        window_predictions: (n_windows, wx, wy, wz, K) predictions.
        starts: the n_windows corners (x, y, z).
        volume_shape: (x, y, z) of the volume.
        weights: (wx, wy, wz) weights, or None for all ones.

    Returns:
        (x, y, z, K) blended prediction.
    """
    ### BEGIN SOLUTION
    # Hint: window size: wx, wy, wz = window_predictions.shape[1:4]
    window_predictions = np.asarray(window_predictions, dtype=np.float64)
    wx, wy, wz = window_predictions.shape[1:4]
    if weights is None:
        weights = np.ones((wx, wy, wz))
    total = np.zeros((*volume_shape, window_predictions.shape[-1]))
    norm = np.zeros(volume_shape)
    for (a, b, c), prediction in zip(starts, window_predictions):
        total[a:a + wx, b:b + wy, c:c + wz] += prediction * weights[..., None]
        norm[a:a + wx, b:b + wy, c:c + wz] += weights
    return total / norm[..., None]
    ### END SOLUTION

# %% tags=["check"]
check_blend_windows(blend_windows)

# %% [markdown]
# `utils.sliding_window_predict` does the same while it predicts (it adds each
# batch of windows as it comes, so it never holds all windows at once),
# pads a case smaller than the window, and can mirror. Three ways to predict
# the same scan:

# %%
timings = {}
start = time.perf_counter()
tiles = tile_predict(model, image)
timings["tiles, no overlap (assignment)"] = time.perf_counter() - start
start = time.perf_counter()
flat = sliding_window_predict(model, image, overlap=OVERLAP, weighting="constant", progress=False)
timings[f"sliding, {OVERLAP:.0%} overlap, constant weights"] = time.perf_counter() - start
start = time.perf_counter()
probabilities = sliding_window_predict(model, image, overlap=OVERLAP, weighting="gaussian", mirror=MIRROR,
                                       progress=False)
timings[f"sliding, {OVERLAP:.0%} overlap, Gaussian weights"] = time.perf_counter() - start
pd.Series(timings, name="seconds").round(1).to_frame()

# %% [markdown]
# Look at the first channel's probability (edema, or the whole tumour) on one axial slice, and below it the
# difference between neighbouring voxels: where tiles meet, a tile-wise
# prediction can jump (the red marks below and left of the bottom-left panel
# show where the tiles meet). The line under the figure measures it over the
# whole brain, for each way of predicting.

# %% alt="First-channel probability (edema or whole tumour) on one axial slice for tiles, constant-weight and Gaussian blending, and the differences between neighbouring voxels that show the tile seams."
zc = centre[2]
fig, axes = plt.subplots(2, 3, figsize=(13, 8))
for col, (name, volume) in enumerate((("tiles", tiles), ("constant weights", flat), ("Gaussian", probabilities))):
    sl = volume[:, :, zc, 0]
    axes[0, col].imshow(sl.T, cmap="magma", vmin=0, vmax=1, origin="lower")
    axes[0, col].set_title(f"P({channels[0][0]}): {name}")
    jump = np.zeros_like(sl)  # the larger jump to the next voxel along x or along y
    jump[:-1] = np.abs(np.diff(sl, axis=0))
    jump[:, :-1] = np.maximum(jump[:, :-1], np.abs(np.diff(sl, axis=1)))
    axes[1, col].imshow(jump.T, cmap="gray", vmin=0, vmax=0.05, origin="lower")
    axes[1, col].set_title("|difference between neighbours|")
seams_x = np.arange(window[0], sl.shape[0], window[0]) - 1   # the jump across each tile border
seams_y = np.arange(window[1], sl.shape[1], window[1]) - 1
limits = axes[1, 0].get_xlim(), axes[1, 0].get_ylim()
axes[1, 0].plot(seams_x, np.full(len(seams_x), -4), "^", color="tab:red", markersize=7, clip_on=False)
axes[1, 0].plot(np.full(len(seams_y), -4), seams_y, ">", color="tab:red", markersize=7, clip_on=False)
axes[1, 0].set_xlim(limits[0])
axes[1, 0].set_ylim(limits[1])
for ax in axes.ravel():
    ax.set_axis_off()
fig.tight_layout()
plt.show()


def seam_jump(volume, inside):
    """Mean |first-channel probability difference| of neighbouring brain voxels: across tile borders, and elsewhere (all 3 axes)."""
    across, elsewhere = [], []
    for axis in range(3):
        jump = np.abs(np.diff(volume[..., 0], axis=axis))
        n = jump.shape[axis]
        pair = np.take(inside, range(n), axis=axis) & np.take(inside, range(1, n + 1), axis=axis)
        border = np.zeros(n, bool)
        border[np.arange(window[axis], n + 1, window[axis]) - 1] = True  # between voxel k*w - 1 and k*w
        border = np.broadcast_to(border.reshape([-1 if a == axis else 1 for a in range(3)]), jump.shape)
        across.append(jump[pair & border])
        elsewhere.append(jump[pair & ~border])
    across = np.concatenate(across)
    return (across.mean() if across.size else np.nan), np.concatenate(elsewhere).mean()


inside = np.any(image != 0, axis=-1)
jumps = {name: seam_jump(volume, inside) for name, volume in
         (("tiles", tiles), ("constant weights", flat), ("Gaussian", probabilities))}
if np.isnan(jumps["tiles"][0]):
    print(f"the brain fits in one {window} tile: there is no tile border to measure")
else:
    print(f"mean jump of P({channels[0][0]}) between neighbouring brain voxels, across tile borders / elsewhere: " + "; ".join(
        f"{name} {a:.4f} / {b:.4f} ({a / b:.1f}x)" for name, (a, b) in jumps.items()))

# %% [markdown]
# ## 4. From probabilities to a label map
#
# The three sigmoid outputs are independent: a voxel can be "edema" and
# "enhancing" at once. We threshold each at 0.5 and let the tumour's nesting
# decide (`utils.inference.sliding_window.probabilities_to_labels`, which reads
# the output kind from the plan):
#
# - **classes**: enhancing wins over non-enhancing wins over edema;
# - **regions**: hierarchically, as nnU-Net's `regions_class_order`: tumour
#   where WT passes, core where TC passes too, enhancing where ET passes as
#   well - so a region always lies inside the one that encloses it, and a
#   voxel the network is unsure between edema and core is still tumour.
#
# Then **post-processing**. Without anything chosen for the run, the course
# keeps only the largest connected tumour (a glioma is one connected lesion;
# nnU-Net often does this). A run folder can hold a `postprocessing.json`
# chosen on validation cases, never the held-out ones
# (`utils.inference.postprocessing.choose_for_run`): the BraTS rules -
# removing components smaller than 250 / 150 / 100 mm³ (WT / TC / ET, the
# BraTS 2023 winner's sizes, or a multiple of them) and relabelling an
# enhancing tumour smaller than a threshold as core (nnU-Net, BraTS 2020: a
# case without enhancing tumour then scores ET Dice 1 instead of 0). The
# predict command applies it too.

# %%
chosen = read_postprocessing(model_path.parent)  # None: the run has no postprocessing.json
post = chosen or PostProcessing(largest_component=True)
raw = probabilities_to_labels(probabilities, output_kind=plan.output_kind)
prediction = post.apply(raw, case.spacing)
print(f"post-processing: {post.describe()} ("
      + ("chosen on validation cases, the run's postprocessing.json)" if chosen else "the course's default)"))
print("voxels per label, raw:            ", np.bincount(raw.ravel(), minlength=4))
print("voxels per label, post-processed: ", np.bincount(prediction.ravel(), minlength=4))
print("ground truth:                     ", np.bincount(case.label.ravel(), minlength=4))
kept_on_tumour = np.logical_and(prediction > 0, case.label > 0).any()
print("the post-processed tumour", "overlaps the true tumour" if kept_on_tumour else
      "does NOT touch the true tumour: a false positive outgrew the tumour's own prediction, "
      "and post-processing kept it and threw the tumour away")

# %% [markdown]
# Keeping the largest tumour assumes the tumour is the largest thing the
# network finds. A model that still over-calls look-alikes can break it, and
# one of several lesions (multifocal disease) is always dropped: read the
# line above, and the tables below, with that in mind.

# %% [markdown]
# ## 5. Segmentation against ground truth
#
# Three planes through the tumour centre, zoomed on the true tumour (errors
# far from the tumour fall outside the zoom but count in the numbers of
# section 6). Bottom row: the errors - **false positives** (segmented tumour
# where there is none, orange) and **false negatives** (missed tumour, cyan),
# for the whole tumour. Under the figure: where the errors sit, counted over
# the whole scan.

# %% alt="Ground truth, segmentation and whole-tumour errors (false positives orange, false negatives cyan) on three planes, zoomed on the tumour."
cmap, norm = label_colormap()
flair = case.image[..., 0]
errors = np.zeros(case.label.shape, np.uint8)
errors[(prediction > 0) & (case.label == 0)] = 1
errors[(prediction == 0) & (case.label > 0)] = 2
error_cmap = plt.matplotlib.colors.ListedColormap([(0, 0, 0, 0), (1.0, 0.55, 0.0, 1), (0.0, 0.9, 0.9, 1)])
fig, axes = plt.subplots(3, 3, figsize=(12, 11))
lo, hi = np.percentile(flair[flair > 0], [1, 99])
tumour = np.argwhere(case.label > 0)   # zoom: the true tumour and a margin of half its size around it
margin = np.maximum((tumour.max(axis=0) - tumour.min(axis=0)) // 2, 8)
box_lo = np.maximum(tumour.min(axis=0) - margin, 0)
box_hi = np.minimum(tumour.max(axis=0) + margin, np.array(case.label.shape) - 1)
for col, axis in enumerate((2, 1, 0)):
    shown_x, shown_y = [a for a in (0, 1, 2) if a != axis]   # take_slice shows these array axes as x and y
    idx = centre[axis]
    for row, (overlay, cm, nm, title) in enumerate(((case.label, cmap, norm, "ground truth"),
                                                    (prediction, cmap, norm, "segmentation"),
                                                    (errors, error_cmap, None, "errors"))):
        ax = axes[row, col]
        ax.imshow(take_slice(flair, axis, idx), cmap="gray", vmin=lo, vmax=hi, origin="lower")
        ax.imshow(take_slice(overlay, axis, idx), cmap=cm, norm=nm, alpha=0.55, origin="lower",
                  interpolation="nearest", vmin=None if nm else 0, vmax=None if nm else 2)
        ax.set_xlim(box_lo[shown_x] - 0.5, box_hi[shown_x] + 0.5)
        ax.set_ylim(box_lo[shown_y] - 0.5, box_hi[shown_y] + 0.5)
        ax.set_title(f"{title}, {AXIS_NAMES[axis]}", fontsize=10)
        ax.set_axis_off()
label_legend(axes[1, 2])
axes[2, 2].legend(handles=[plt.matplotlib.patches.Patch(color=(1.0, 0.55, 0.0), label="false positive"),
                           plt.matplotlib.patches.Patch(color=(0.0, 0.9, 0.9), label="false negative")],
                  loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize=8, frameon=False)
fig.tight_layout()
plt.show()

# a missed voxel two or more voxels inside the true tumour is an interior miss, not a rim
wt_errors = whole_tumour_errors(case.label, prediction)
depth_out = ndimage.distance_transform_edt(case.label == 0)  # 1 just outside the true tumour
extras = errors == 1
interior = wt_errors["interior_miss_share"]
print(f"whole tumour: {wt_errors['misses']:,} missed voxels, {interior:.0%} of them two or more voxels inside "
      f"the true tumour (interior misses) and {1 - interior:.0%} on its outer layer (rims); enclosed holes make "
      f"up {wt_errors['hole_share']:.1%} of the predicted tumour; {int(extras.sum()):,} false-positive voxels, "
      f"{(depth_out[extras] >= 2).mean() if extras.any() else 0:.0%} of them two or more voxels outside it")
if wt_errors["misses"]:
    print("so the misses are mostly " + ("INSIDE the tumour: holes and unsure patches, not a thin rim along "
                                         "its border" if interior > 0.5 else
                                         "a thin rim along the tumour's border, not holes inside it"))

# %% [markdown]
# ## 6. The numbers
#
# The assignment's table - Dice, sensitivity and specificity of each class:

# %%
class_scores(case.label, prediction)

# %% [markdown]
# BraTS ranks methods on three nested **regions** - whole tumour WT {1,2,3},
# tumour core TC {2,3}, enhancing tumour ET {3} - with two metrics: Dice
# (overlap) and **HD95**, the 95th percentile of the distances between the
# two surfaces in millimetres (from the voxel spacing), which punishes
# far-off errors that Dice barely sees. Every HD95 in this lesson's tables is
# computed the way the BraTS 2023 organisers compute it; the end of this
# section shows what that means and why other definitions give other numbers.
#
# Empty regions follow the BraTS convention: empty in both, Dice 1 and HD95
# 0; empty in exactly one, Dice 0 and HD95 the diagonal of the volume.
#
# ### Exercise 2: `region_dice`
#
# Return `{"WT": ..., "TC": ..., "ET": ...}`: for each region, turn both label
# maps into masks with `np.isin(label, values)` (the values are in
# `utils.data.labels.REGIONS`) and compute Dice = 2|A∩B| / (|A| + |B|), or 1.0 when
# both masks are empty.

# %%
def region_dice(truth_label, pred_label):
    """Dice of the BraTS regions WT {1,2,3}, TC {2,3} and ET {3}.

    Args:
        truth_label: (x, y, z) ground-truth label map.
        pred_label: (x, y, z) predicted label map.

    Returns:
        dict {"WT": dice, "TC": dice, "ET": dice}.
    """
    ### BEGIN SOLUTION
    # Hint: for region, values in REGIONS.items(): ...
    scores = {}
    for region, values in REGIONS.items():
        a, b = np.isin(truth_label, values), np.isin(pred_label, values)
        total = a.sum() + b.sum()
        scores[region] = 1.0 if total == 0 else 2.0 * np.logical_and(a, b).sum() / total
    return scores
    ### END SOLUTION

# %% tags=["check"]
check_region_dice(region_dice)

# %%
pd.Series(region_scores(case.label, prediction, case.spacing)).round(3).to_frame(case.case_id)

# %% [markdown]
# Over every held-out case, with mean and median rows (on a larger held-out
# set the median resists a single case that goes wrong; with one or two cases the
# two rows coincide):

# %%
pairs = []
for case_id in val_ids:
    if case_id == case.case_id:  # the case above: reuse its prediction, so both tables agree
        pairs.append((case_id, case.label, prediction, case.spacing))
        continue
    other = load_case(data_dir, case_id)
    pred, _ = predict_case(model, other.image, overlap=OVERLAP, mirror=MIRROR, progress=False, plan=plan,
                           postprocessing=post, spacing=other.spacing)
    pairs.append((case_id, other.label, pred, other.spacing))
print(f"every row: sliding windows ({OVERLAP:.0%} overlap, Gaussian weights, mirroring "
      f"{'on' if MIRROR else 'off'}), threshold 0.5, post-processing: {post.describe()}; {case.case_id} on the "
      "whole scan (section 4)" + (f", the other {len(pairs) - 1} case(s) through predict_case, which crops to the "
                                  "brain's bounding box + 2 voxels first (section 7 shows how much that crop changes)"
                                  if len(pairs) > 1 else ""))
evaluate_cases(pairs)

# %% [markdown]
# ### Legacy and lesion-wise scores
#
# The table holds two families. The **legacy** columns (`Dice`, `HD95`)
# score each region once over the whole scan, as BraTS did until 2022. The
# **lesion-wise** columns (`LW Dice`, `LW HD95`) are how BraTS ranks since
# 2023:
#
# 1. each connected lesion of the truth is scored on its own (lesions whose
#    3-voxel dilations touch count as one);
# 2. a lesion is matched by every predicted blob that touches it (dilated);
#    a lesion nothing touches scores Dice 0 and HD95 374 mm;
# 3. every predicted blob that touches no lesion is a false positive, with
#    Dice 0 and HD95 374 mm;
# 4. lesions of 50 mm³ or less are left out; the case score is the mean.
#
# Why the change? A big tumour dominates a whole-scan Dice, so a model that
# misses a small second lesion hardly loses anything - yet for a patient a
# missed lesion matters. Let us plant a small satellite lesion (edema, far
# from the tumour) in the truth and score a prediction that finds the main
# tumour perfectly but misses the satellite.
# (`lesion_wise_region` scores one region mask and lists its lesions;
# `region_scores(..., lesion_wise=True)` gives both families for WT, TC, ET.)

# %%
brain = ndimage.binary_erosion(case.image[..., 0] > 0, iterations=3)
far = ndimage.distance_transform_edt(case.label == 0, sampling=case.spacing)
centre = np.unravel_index(np.argmax(np.where(brain, far, 0)), far.shape)
grid = np.indices(case.label.shape).transpose(1, 2, 3, 0)
satellite = (np.linalg.norm((grid - centre) * case.spacing, axis=-1) <= 4.0) & (case.label == 0)  # 4 mm radius
truth_sat = case.label.copy()
truth_sat[satellite] = 1
missed = case.label.copy()  # the main tumour exactly right, the satellite missed
scores = pd.Series(region_scores(truth_sat, missed, case.spacing, lesion_wise=True))
wt = lesion_wise_region(truth_sat > 0, missed > 0, case.spacing)
print(f"satellite: {satellite.sum() * case.voxel_volume_ml * 1000:.0f} mm3, "
      f"{far[centre]:.0f} mm from the tumour; WT lesions (volume mm3, Dice, HD95): "
      f"{[(round(v), round(d, 3), round(h, 1)) for v, d, h, _ in wt.lesions]}")
scores[["Dice WT", "LW Dice WT", "HD95 WT", "LW HD95 WT"]].round(3).to_frame("missed satellite")

# %% [markdown]
# Legacy Dice WT stays close to 1: the satellite is a sliver of the whole
# tumour volume. Lesion-wise Dice WT is the mean of two lesions, the main
# tumour (Dice 1) and the missed satellite (Dice 0): it halves. The legacy
# HD95 sees the satellite only if its surface is more than 5% of the whole
# surface area - here it stays at 0 mm; lesion-wise HD95 charges the miss in full
# (374 mm, averaged with the main tumour's 0 mm).
#
# ### Which HD95?
#
# The tables use the organisers' definition (`hd95(..., method="surfels")`,
# the default), from DeepMind's `surface-distance` code that their lesion-wise
# script runs. The surface is a mesh of small **surface elements** lying on
# the boundary between voxels (on the voxel corners, half a voxel off the
# voxel centres), each weighted by its area in mm²; each direction's 95th
# percentile is the distance at which 95% of the surface *area* is covered,
# and HD95 is the larger direction. Two simpler definitions are common: the
# surface *voxels* at their centres, each counting once
# (`method="voxels"`, the larger of the two directed percentiles - what the
# course computed before it matched the organisers), and the same voxels with
# both directions' distances pooled (`method="pooled"`, as medpy and the BraTS
# 2024+ package `brats-evaluation` do). On this lesson's held-out case:

# %%
for region, values in REGIONS.items():
    t, p = np.isin(case.label, values), np.isin(prediction, values)
    print(f"HD95 {region}: surfels (tables) {hd95(t, p, case.spacing):6.2f} mm   "
          f"voxels {hd95(t, p, case.spacing, method='voxels'):6.2f} mm   "
          f"pooled {hd95(t, p, case.spacing, method='pooled'):6.2f} mm")

# %% [markdown]
# The definitions part most on **anisotropic voxels** - clinical scans often
# have thick slices. Take a round lesion of radius 10 voxels and a prediction
# that misses a two-voxel rim all round (radius 8), and read the same voxels
# as if scanned at 1 mm, then with 2 mm and 3 mm slices:

# %%
radius = np.linalg.norm(np.indices((32, 32, 32)) - 16, axis=0)  # voxels from the centre
lesion, under = radius <= 10, radius <= 8
for spacing in ((1.0, 1.0, 1.0), (1.0, 1.0, 2.0), (1.0, 1.0, 3.0)):
    print(f"{'x'.join(f'{s:g}' for s in spacing)} mm voxels: HD95 "
          + "   ".join(f"{m} {hd95(lesion, under, spacing, method=m):.3f} mm" for m in ("surfels", "voxels", "pooled")))

# %% [markdown]
# At 1 mm the three agree. With thick slices the missed rim is 2 mm wide on
# the sides but two slices (4 or 6 mm) deep at the top and bottom, and the
# definitions weigh those two parts differently. Counting voxels gives every
# boundary voxel one vote, although a voxel's side faces are then 2-3 times
# the area of its top and bottom faces, and voxel centres sit half a voxel
# inside the mask - half a slice along the thick axis; surface elements lie
# on the boundary itself and weigh by their area. So the organisers'
# definition reads the smallest HD95 here, and a score computed one way can
# only be compared with scores computed the same way.

# %% [markdown]
# ## 7. A file a radiologist's viewer opens
#
# `save_segmentation` writes the label map as uint8 NIfTI with the **affine
# and header of the input scan**, so 3D Slicer or ITK-SNAP overlays it in the
# right place. It refuses to overwrite the input, and an existing output
# unless asked.

# %%
out_dir = Path(tempfile.mkdtemp(prefix="brats-seg-"))
source = case.image_paths[0]
seg_path = save_segmentation(prediction, source, out_dir / f"{case.case_id}_seg.nii.gz")
reloaded, original = nib.load(seg_path), nib.load(source)
print("written:", seg_path)
print("affine equal:", np.array_equal(reloaded.affine, original.affine),
      "| dtype:", reloaded.get_data_dtype(), "| shape:", reloaded.shape, "| labels:", np.unique(reloaded.dataobj))
try:
    save_segmentation(prediction, source, source)
except ValueError as err:
    print("refused:", err)

# %% [markdown]
# The same from a terminal - one case (an MSD 4-D file or a BraTS case
# folder), or a whole dataset folder with a CSV of metrics for the cases
# that have labels:
#
# ```bash
# python -m utils.inference.predict --model runs/cpu/best.keras --input CASE.nii.gz --output CASE_seg.nii.gz
# python -m utils.inference.predict --model runs/cpu/best.keras --input-dir data/phantom --output-dir predictions/
# ```

# %%
cli = subprocess.run([sys.executable, "-m", "utils.inference.predict", "--model", str(model_path), "--input", str(source),
                      "--output", str(out_dir / "cli_seg.nii.gz")], capture_output=True, text=True)
print(cli.stdout.strip() or cli.stderr[-2000:])

# %% [markdown]
# The command line runs `predict_case`, which first crops the scan to the
# brain's bounding box (plus a 2-voxel margin) to skip windows of pure
# background. Its windows therefore sit at other places than in section 3,
# so some probabilities near 0.5 come out on the other side of the
# threshold; there are more of them the less sure the network is, and when
# two blobs are about the same size, it can also change which one the
# largest-blob rule keeps. How many, and where:

# %%
cli_labels = np.asarray(nib.load(out_dir / "cli_seg.nii.gz").dataobj) if cli.returncode == 0 else None
if cli_labels is not None:
    tumour = (cli_labels > 0) | (prediction > 0)
    differ = (cli_labels != prediction) & tumour
    print(f"{differ.sum():,} of {tumour.sum():,} tumour voxels ({differ.sum() / max(tumour.sum(), 1):.2%}) "
          f"differ; Dice WT between the two: {region_scores(cli_labels, prediction, with_hd95=False)['Dice WT']:.4f}")
    same_blob = np.logical_and(cli_labels > 0, prediction > 0).any()
    # distance of each differing voxel to the edge of the notebook's tumour (1: on either side of its surface)
    mask = prediction > 0
    to_edge = np.where(mask, ndimage.distance_transform_edt(mask), ndimage.distance_transform_edt(~mask))
    near_edge = (to_edge[differ] <= 1).mean() if differ.any() else 0.0
    print(f"the two kept {'the same blob' if same_blob else 'different blobs'} as the largest; "
          f"{near_edge:.0%} of the differing voxels lie within one voxel of the notebook's tumour surface")

# %% [markdown]
# ## 8. See the errors in 3-D, and share the case
#
# The same case in NiiVue, as a radiologist reads a result: the model's
# **segmentation filled** (half transparent) over FLAIR and the **ground truth
# as an outline**, both in the class colours, so where the two agree the
# outline runs along the filled edge, and a filled patch without an outline
# is tumour the truth does not have. The whole-tumour **errors** layer
# (false positives orange, false negatives cyan) is off at the start: switch
# it on to see them, and drag the 3-D render to see where they sit on the
# tumour's surface. Only FLAIR and the two label maps load before the first
# picture; another sequence or the errors load when you ask for them (a line
# under the controls says so). (A live kernel with widgets shows the viewer;
# a static copy shows a one-line note.)

# %%
from utils.visualization.viewer3d import show_3d

show_3d(case.image, case.affine, {"segmentation": prediction}, truth=case.label)

# %% [markdown]
# A colleague without Python wants to look too. `utils.visualization.report` writes **one
# HTML file** that opens offline in any recent browser: the same viewer and
# default view, with the four sequences and the label maps embedded
# (compressed), the files it was made from, the volumes in mL and the
# Dice / HD95 table. The same from a terminal:
#
# ```bash
# python -m utils.visualization.report --image CASE.nii.gz --segmentation CASE_seg.nii.gz --truth LABEL.nii.gz --out case.html
# ```

# %%
from utils.visualization.report import write_report

report_path = write_report(out_dir / f"{case.case_id}_report.html", case.image, case.affine, prediction,
                           case.spacing, truth=case.label, case_id=case.case_id,
                           sources={"image": str(source), "ground truth": str(case.label_path),
                                    "segmentation": f"{seg_path.name}, by {model_path}"})
print(f"report: {report_path} ({report_path.stat().st_size / 2**20:.1f} MiB)")

# %% [markdown]
# The segmentation, the command line's copy and the report sit in a
# temporary folder made for this run. Open the report now (or copy it) if
# you want it: the next cell deletes the files this lesson wrote there, and
# then the folder only if nothing else is in it, so a file you put there
# yourself is never deleted.

# %%
from utils.safety import LOCK_FILE, OWNER_FILE  # the course's bookkeeping files in a folder it wrote to

written = [seg_path, out_dir / "cli_seg.nii.gz", report_path, out_dir / OWNER_FILE, out_dir / LOCK_FILE]
for path in written:
    path.unlink(missing_ok=True)
others = sorted(p.name for p in out_dir.iterdir())
if others:
    print(f"kept {out_dir}: it holds files this lesson did not write: {others}")
else:
    out_dir.rmdir()
    print(f"removed {out_dir} and the {len(written)} files this lesson wrote in it")

# %% [markdown]
# ## Summary
#
# - Predict whole scans with overlapping windows blended by Gaussian weights,
#   which trust each window's centre, where it saw the most context (section 3
#   measures the jump at tile borders).
# - Merge the sigmoid channels by the tumour's nesting (classes, or the
#   regions WT / TC / ET rebuilt hierarchically: the run's `plan.json` says
#   which); post-process as the run chose on validation cases, else keep the
#   largest lesion.
# - Look where the errors sit: missed voxels deep inside the tumour (holes)
#   and missed rims along its border call for different cures.
# - Report BraTS region Dice and HD95 per case, with mean and median - the
#   legacy scores and the lesion-wise ones, which count a missed small lesion
#   as a whole failure.
# - Export uint8 NIfTI on the input's grid - and never overwrite the input.
#
# **Bonus:** lesson 07 compares this 3D U-Net with a 2D U-Net trained on
# axial slices.
