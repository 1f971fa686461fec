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
# # Lesson 07 (bonus) - A 2D slice-wise U-Net against the 3D U-Net
#
# Many BraTS notebooks train a **2D** U-Net on axial slices: one training
# sample is a slice, not a volume, so a batch needs far less memory and
# the 2D tooling applies. Whether the 2D network is also smaller or faster
# depends on its width - here it gets twice the 3D filters, and the cost
# table measures both. How does it compare? We train one on the same cases,
# with the same loss and the same time budget as lesson 05's 3D U-Net, and
# compare them on the same held-out cases - either may come out ahead.
#
# **You will learn to**
# - read a dataset in the BraTS 2020 layout (labels 1/2/4) into the course convention;
# - sample axial slices, skipping most of the empty ones;
# - predict a volume slice by slice;
# - compare 2D and 3D on Dice, HD95, IoU, size and speed - and see the
#   inter-slice consistency of each, which nothing in a 2D network enforces.
#
# **Accelerator: CPU** (GPU for the full-size comparison)
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
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
import matplotlib.pyplot as plt
import utils  # before keras: it keeps TensorFlow's start-up notices out of the lesson
import keras

from utils import data_root
from utils.data.datasets import list_cases, load_brats_case, load_case, load_msd_case
from utils.inference.sliding_window import predict_case
from utils.data.labels import CLASS_NAMES
from utils.model.losses import CLASS_DICE_METRICS, dice_coefficient
from utils.evaluation.metrics import region_scores
from utils.evaluation.stats import paired_difference, paired_verdict
from utils.model.unet import build_unet
from utils.training.slices import SliceDataset, SliceSampler, export_brats, predict_slices
from utils.config import preset, run_dir, use_drive
from utils.preprocessing.plan import plan_for_model
from utils.training.train import LOSSES, TimeBudget, prepare_data, train
from utils.visualization.figures import label_colormap, label_legend, take_slice, tumour_center

# %% tags=["parameters"]
BASE_FILTERS_2D = None   # None: twice the 3D model's (a 2D network can afford it)
EMPTY_KEEP_RATE = 0.1    # share of tumour-free slices kept for training
BATCH_SIZE_2D = 8
USE_DRIVE = False        # Colab: data, cache and runs on Google Drive, as in lesson 05

# %% [markdown]
# ## 1. The BraTS 2020 layout
#
# BraTS 2020 ships one folder per case, one file per sequence, and labels
# 1 (necrotic/non-enhancing core), 2 (edema), 4 (enhancing). We export the
# phantom in that layout and read it back with the BraTS loader, which maps
# the labels to the course's MSD convention (edema 1, core 2, enhancing 3) -
# on files it did not write itself.

# %% tags=["run-config"]
use_drive(USE_DRIVE)
config = preset()
run_3d = run_dir(config)
checkpoint = run_3d / "best.keras"

# %%
data_dir, cache, train_ids, val_ids = prepare_data(config, progress=False)
brats_dir = export_brats(data_dir, data_root() / f"{data_dir.name}-brats2020", case_ids=val_ids)
mapping = json.loads((brats_dir / "brats_export.json").read_text())["cases"]
for folder, case_id in mapping.items():
    brats_case = load_brats_case(brats_dir / folder)
    msd_case = load_msd_case(data_dir, case_id)
    print(f"{folder}: files {sorted(p.name.split('_')[-1] for p in (brats_dir / folder).iterdir())}")
    print(f"  labels in the file {np.unique(np.asarray(__import__('nibabel').load(brats_case.label_path).dataobj))}"
          f" -> loaded {np.unique(brats_case.label)}; identical to the MSD case: "
          f"{np.array_equal(brats_case.label, msd_case.label)}; image identical: "
          f"{np.allclose(brats_case.image, msd_case.image)}")

# %% [markdown]
# ## 2. Slices instead of patches
#
# The 2D network sees one axial slice with its four sequences. Most slices
# hold no tumour; training on all of them would teach mostly "background".
# The BraTS 2020 notebooks skip most empty slices; `SliceSampler` keeps
# every slice with tumour and a random `EMPTY_KEEP_RATE` of the others, from
# the same training cache as the 3D model.

# %%
crop = np.max([c["shape"][:2] for c in cache.manifest["cases"]], axis=0)  # the largest cropped brain
slice_shape = tuple(int(np.ceil(s / 8) * 8) for s in crop)   # divisible by 2**3 for depth 4
sampler = SliceSampler(cache, train_ids, slice_shape, empty_keep_rate=EMPTY_KEEP_RATE)
val_sampler = SliceSampler(cache, val_ids, slice_shape, empty_keep_rate=EMPTY_KEEP_RATE, augment=False)
print(f"slice shape {slice_shape}; training slices with tumour {len(sampler.tumour_slices)}, "
      f"without {len(sampler.empty_slices)} (keeping {EMPTY_KEEP_RATE:.0%} of those per epoch)")

# %% [markdown]
# ## 3. The 2D U-Net, same builder, same loss, same time
#
# `build_unet` with a 2-D input shape builds the 2D network. It trains with
# the loss of the 3D run, for the wall time the 3D run took (from its
# `state.json`).

# %%
if not checkpoint.is_file():
    print(f"{checkpoint} not found: training it first, as lesson 05 does")
    train(config)
model_3d = utils.load_model(checkpoint, compile=False)
plan_3d = plan_for_model(checkpoint)  # its preprocessing, crop and window (plan.json)
seconds_3d = json.loads((run_3d / "state.json").read_text()).get("seconds", 60.0)

base_2d = BASE_FILTERS_2D or 2 * config.base_filters
model_2d = build_unet((*slice_shape, 4), depth=config.depth, base_filters=base_2d, normalization=config.normalization)
model_2d.compile(optimizer=keras.optimizers.Adam(config.learning_rate), loss=LOSSES[config.loss],
                 metrics=[dice_coefficient, *CLASS_DICE_METRICS])
train_2d = SliceDataset(sampler, BATCH_SIZE_2D, seed=config.seed)
val_2d = SliceDataset(val_sampler, BATCH_SIZE_2D, steps=max(1, config.validation_steps), seed=1, fixed=True)
start = time.perf_counter()
history_2d = model_2d.fit(train_2d, validation_data=val_2d, epochs=1000, verbose=0,
                          callbacks=[TimeBudget(seconds_3d)])
seconds_2d = time.perf_counter() - start
print(f"3D: {model_3d.count_params():,} parameters, trained {seconds_3d:.0f} s; "
      f"2D: {model_2d.count_params():,} parameters, trained {seconds_2d:.0f} s "
      f"({len(history_2d.history['loss'])} epochs of {len(train_2d)} batches)")

# %% [markdown]
# ## 4. The same held-out cases, both ways
#
# The 3D model predicts by sliding windows (lesson 06), the 2D model slice
# by slice; both keep the largest connected tumour. Dice and HD95 per BraTS
# region, IoU (Jaccard, the notebooks' "mean IoU" per region), and the time
# to segment one case.

# %%
rows, predictions = [], {}
for case_id in val_ids:
    case = load_case(data_dir, case_id)
    for name, predict in (("3D U-Net", lambda img: predict_case(model_3d, img, largest_component=True,
                                                                 progress=False, plan=plan_3d)),
                          ("2D U-Net", lambda img: predict_slices(model_2d, img, largest_component=True))):
        start = time.perf_counter()
        label, _ = predict(case.image)
        elapsed = time.perf_counter() - start
        predictions[(name, case_id)] = label
        rows.append({"model": name, "case": case_id, "seconds": elapsed,
                     **region_scores(case.label, label, case.spacing)})
per_case = pd.DataFrame(rows)
print("both: the case cropped to the brain's bounding box + 2 voxels, threshold 0.5, the largest connected tumour "
      "kept; 3D by sliding windows (50% overlap, Gaussian weights, predict_case - the same numbers as lesson 06's "
      "held-out table), 2D slice by slice (predict_slices). Lesson 05's table keeps every piece, so it differs.")
summary = per_case.drop(columns="case").groupby("model", sort=False).mean()
summary["parameters"] = [model_3d.count_params(), model_2d.count_params()]
summary["training s"] = [seconds_3d, seconds_2d]
summary = summary.rename(columns={"seconds": "inference s / case"})
scores = ["Dice WT", "Dice TC", "Dice ET", "HD95 WT", "HD95 TC", "HD95 ET", "IoU WT", "IoU TC", "IoU ET"]
print(f"mean over the {len(val_ids)} held-out case(s)")
summary[scores].T.round(3)

# %% [markdown]
# A mean hides how much the cases differ. The Dice of each held-out case,
# both ways:

# %%
per_case.pivot(index="case", columns="model", values=["Dice WT", "Dice TC", "Dice ET"]).round(3)

# %%
costs = summary[["parameters", "training s", "inference s / case"]].copy()
costs["parameters"] = costs["parameters"].astype(int)
for column, better, fmt in (("parameters", "smaller", ",.0f"), ("inference s / case", "faster", ".1f")):
    c3, c2 = (round(costs.loc[name, column], 1) for name in ("3D U-Net", "2D U-Net"))
    winner = "the same at this precision" if c2 == c3 else f"the {'2D' if c2 < c3 else '3D'} U-Net is {better}"
    print(f"{column}: 3D {c3:{fmt}}, 2D {c2:{fmt}} -> {winner}")
print(f"why the sizes: a 3x3 kernel has 9 weights per channel pair, a 3x3x3 one 27; the 2D network has "
      f"{base_2d} base filters, the 3D one {config.base_filters}, so a 2D convolution has "
      f"({base_2d}/{config.base_filters})^2 x 9/27 = {(base_2d / config.base_filters) ** 2 * 9 / 27:.2f}x the weights "
      f"of its 3D counterpart")
costs.round(1)

# %% alt="Bar charts of Dice and HD95 per BraTS region for the 3D and the 2D U-Net, with values on the bars."
fig, axes = plt.subplots(1, 2, figsize=(12, 4))
regions = ["WT", "TC", "ET"]
x = np.arange(3)
colours = {"3D U-Net": "0.25", "2D U-Net": "0.65"}   # grey shades: the class colours mean classes
for i, name in enumerate(summary.index):
    for ax, metric, fmt in ((axes[0], "Dice", "%.3f"), (axes[1], "HD95", "%.2f")):
        bars = ax.bar(x + 0.38 * i, summary.loc[name, [f"{metric} {r}" for r in regions]], 0.38,
                      color=colours[name], label=name)
        ax.bar_label(bars, fmt=fmt, fontsize=8, padding=2)
dice = summary[[f"Dice {r}" for r in regions]].to_numpy()
axes[0].set_ylim(max(0.0, np.floor((dice.min() - 0.05) * 20) / 20), min(1.0, dice.max() + 0.03))
axes[0].set_ylabel("Dice" + (f" (axis starts at {axes[0].get_ylim()[0]:.2f})" if axes[0].get_ylim()[0] > 0 else ""))
axes[0].set_title("Dice, higher is better")
axes[1].set_ylabel("HD95 (mm)")
axes[1].set_ylim(0, summary[[f"HD95 {r}" for r in regions]].to_numpy().max() * 1.2 + 0.1)
axes[1].set_title("HD95, lower is better")
for ax in axes:
    ax.set_xticks(x + 0.19, regions)
    ax.set_xlabel("BraTS region")
fig.legend(*axes[0].get_legend_handles_labels(), loc="upper center", ncol=2, frameon=False)
fig.tight_layout(rect=(0, 0, 1, 0.92))
plt.show()

# %% [markdown]
# ## 5. What a 2D network cannot see
#
# Each slice is segmented on its own, so nothing ties slice z to slice z+1.
# A sagittal cut - across the slices, zoomed on the tumour - is where steps
# and flicker between slices would show; the 3D network sees neighbouring
# slices and has no such excuse. The table after it measures the
# slice-to-slice change of each prediction against the ground truth's own.

# %% alt="Sagittal cut zoomed on the tumour: ground truth, 3D U-Net and 2D U-Net predictions in the course colours, axial slice index upwards."
case = load_case(data_dir, val_ids[0])
centre = tumour_center(case.label, case.label.shape)
cmap, norm = label_colormap()
flair = case.image[..., 0]
lo, hi = np.percentile(flair[flair > 0], [1, 99])
panels = (("ground truth", case.label), ("3D U-Net", predictions[("3D U-Net", case.case_id)]),
          ("2D U-Net (slice by slice)", predictions[("2D U-Net", case.case_id)]))
# zoom on the tumour: the box around every panel's tumour in this cut, plus a margin of a third of its size
tumour = np.argwhere(np.any([take_slice(label, 0, centre[0]) > 0 for _, label in panels], axis=0))
(row0, col0), (row1, col1) = tumour.min(axis=0), tumour.max(axis=0)
pad_rows, pad_cols = max(3, (row1 - row0) // 3), max(3, (col1 - col0) // 3)
fig, axes = plt.subplots(1, 3, figsize=(13, 4.5))
for ax, (title, label) in zip(axes, panels):
    ax.imshow(take_slice(flair, 0, centre[0]), cmap="gray", vmin=lo, vmax=hi, origin="lower",
              aspect=case.spacing[2] / case.spacing[1])
    ax.imshow(take_slice(label, 0, centre[0]), cmap=cmap, norm=norm, alpha=0.55, origin="lower",
              interpolation="nearest", aspect=case.spacing[2] / case.spacing[1])
    ax.set_xlim(col0 - pad_cols - 0.5, col1 + pad_cols + 0.5)
    ax.set_ylim(row0 - pad_rows - 0.5, row1 + pad_rows + 0.5)
    ax.set_title(f"{title}, sagittal (zoomed)")
    ax.set_xlabel("y (voxels)")
    ax.set_ylabel("z: axial slice")
label_legend(axes[2])
plt.show()

# %%
def slice_jumps(label):
    """Mean share of tumour voxels that change label between neighbouring axial slices."""
    tumour = label > 0
    changed = (label[:, :, 1:] != label[:, :, :-1]) & (tumour[:, :, 1:] | tumour[:, :, :-1])
    return changed.sum() / max(tumour.sum(), 1)


jumps = pd.DataFrame({name: [slice_jumps(predictions[(name, c)]) for c in val_ids] for name in summary.index} |
                     {"ground truth": [slice_jumps(load_case(data_dir, c).label) for c in val_ids]},
                     index=val_ids)
jumps.loc["mean"] = jumps.mean()
jumps.round(3)

# %% [markdown]
# ## 6. What the numbers say
#
# The differences, computed from the tables above (on other data or another
# budget they can come out the other way). Both networks segment the **same**
# cases, so we compare them case by case: the per-case differences (3D minus
# 2D), their mean, and a 95% paired bootstrap interval of that mean
# (resampling the cases), with the Wilcoxon signed-rank test's p-value beside
# it. A difference counts only if the interval excludes 0 and the mean
# difference is larger than a stated tolerance: 0.01 for Dice and for the
# slice-to-slice change (one tumour voxel in a hundred), one voxel (the
# largest spacing, in mm) for HD95, which cannot resolve less than a voxel.
# With fewer than 3 cases there is no verdict. `utils.evaluation.stats`
# computes the interval, the p-value and the verdict (lesson 09 uses it too).

# %%
DICE_TOLERANCE = 0.01
HD95_TOLERANCE = float(max(load_case(data_dir, val_ids[0]).spacing))
JUMP_TOLERANCE = 0.01


def compare(metric: str, higher_is_better: bool, digits: int, tolerance: float) -> None:
    """Print, per region, the paired comparison of 3D and 2D on ``metric`` over the held-out cases."""
    for region in regions:
        column = f"{metric} {region}"
        by_case = per_case.pivot(index="case", columns="model", values=column)
        diff = (by_case["3D U-Net"] - by_case["2D U-Net"]).to_numpy()
        result = paired_difference(diff)
        print(f"{column}: 3D {by_case['3D U-Net'].mean():.{digits}f}, 2D {by_case['2D U-Net'].mean():.{digits}f}; "
              f"3D - 2D per case: mean {result.mean:+.{digits}f}, 95% interval [{result.low:+.{digits}f}, "
              f"{result.high:+.{digits}f}], Wilcoxon p {result.p_value:.2g}, {result.largest_share:.0%} of it from "
              f"one case, n = {result.n} -> "
              f"{paired_verdict(result, tolerance, higher_is_better, names=('3D', '2D'), digits=digits)}")


print(f"tolerances: Dice {DICE_TOLERANCE}, HD95 {HD95_TOLERANCE:.2f} mm, slice-to-slice change {JUMP_TOLERANCE}; "
      "paired over the same held-out cases (bootstrap interval of the mean difference, Wilcoxon signed-rank test)")
compare("Dice", True, 3, DICE_TOLERANCE)
compare("HD95", False, 2, HD95_TOLERANCE)

# The slice-to-slice change is judged by its distance to the ground truth's own value:
# smoother than the truth is not better, it can mean missed structure.
truth_jumps, jumps_3d, jumps_2d = (round(float(v), 3) for v in jumps.loc["mean", ["ground truth", "3D U-Net", "2D U-Net"]])
distance_3d, distance_2d = round(abs(jumps_3d - truth_jumps), 3), round(abs(jumps_2d - truth_jumps), 3)
per_case_jumps = jumps.drop(index="mean")
# per case: how much closer to the truth's own value the 3D prediction is than the 2D one (positive: 3D closer)
closer = ((per_case_jumps["2D U-Net"] - per_case_jumps["ground truth"]).abs()
          - (per_case_jumps["3D U-Net"] - per_case_jumps["ground truth"]).abs()).to_numpy()
result = paired_difference(closer)
empty = [name[:2] for name in summary.index if not all(predictions[(name, c)].any() for c in val_ids)]
if empty:   # no tumour predicted, so no change between slices: the value says nothing about consistency
    verdict = f"not comparable: the {' and '.join(empty)} prediction is empty on at least one case"
else:
    verdict = (paired_verdict(result, JUMP_TOLERANCE, names=("3D", "2D")).replace(" better", " closer to the truth")
               + f" (per case, 2D distance - 3D distance: mean {result.mean:+.3f}, 95% interval "
               f"[{result.low:+.3f}, {result.high:+.3f}])")
print(f"slice-to-slice change of the tumour: ground truth {truth_jumps:.3f}, 3D {jumps_3d:.3f} "
      f"(distance {distance_3d:.3f}), 2D {jumps_2d:.3f} (distance {distance_2d:.3f}) -> {verdict}")
for name, value in (("3D", jumps_3d), ("2D", jumps_2d)):
    if name not in empty and round(abs(value - truth_jumps), 3) > JUMP_TOLERANCE:
        print(f"  the {name} prediction changes {'more' if value > truth_jumps else 'less'} between "
              f"neighbouring slices than the ground truth")
print(f"size and cost: 3D {costs.loc['3D U-Net', 'parameters']:,} parameters, 2D "
      f"{costs.loc['2D U-Net', 'parameters']:,}; trained 3D {seconds_3d:.0f} s, 2D {seconds_2d:.0f} s")

# %% [markdown]
# ## Summary
#
# - The BraTS loader maps 1/2/4 to the course convention; the export and
#   reload return the labels unchanged.
# - A 2D U-Net segments each axial slice alone; nothing ties one slice to
#   the next. The slice-to-slice change (section 5) measures what that costs
#   on your cases: compare each network with the ground truth's own value.
# - Same loss, same cases, same training time: section 6 prints, region by
#   region, which network scored better and by how much, or "no clear
#   difference" when the paired interval over the cases contains 0 or the
#   gap is within the stated tolerance. Which wins depends on the data, the
#   budget and the resolution -
#   read the numbers, not a rule.
# - Size and speed are measured, not assumed: a 2D network with twice the
#   filters can have more weights than the 3D one; section 4 prints which
#   network is smaller and which segments a case faster on your machine.
