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
# # Lesson 09 - What wins BraTS, and what breaks when the scanner changes
#
# The course's pipeline is the 2017 assignment's. Since then the BraTS
# winners have published what moved their numbers - and what did not. This
# lesson reads the field's own measurements, rebuilds the change that
# mattered most (nested region outputs), learns to compare two models
# honestly on the same cases, and looks at where a segmentation goes wrong.
#
# **You will learn to**
# - read the BraTS literature's numbers for what they are: which data, which
#   split, legacy or lesion-wise Dice;
# - build the nested region targets WT, TC, ET from a label map (exercise 1,
#   `label_to_regions`) and rebuild the label map from region probabilities,
#   outermost region first (exercise 2, `regions_to_label`);
# - compare two models case by case with a paired bootstrap interval and the
#   Wilcoxon signed-rank test, and say which differences the data supports;
# - tell misses on the tumour's rim from holes inside it, and read a
#   confusion matrix of labels.
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
from pathlib import Path

import numpy as np
import pandas as pd
import matplotlib.pyplot as plt
import utils  # before keras: it keeps TensorFlow's start-up notices out of the lesson
import keras

from utils.course.checks import check_label_to_regions, check_regions_to_label
from utils.config import course_mode, preset, run_dir, use_drive
from utils.data.datasets import load_case
from utils.data.labels import CLASS_COLORS, CLASS_NAMES, REGION_ORDER, REGIONS
from utils.data.sources import get_dataset
from utils.evaluation.metrics import evaluate_cases
from utils.evaluation.misses import INTERIOR_MISS, RIM_MISS, RIM_VOXELS, label_confusion, miss_depths, miss_summary
from utils.evaluation.stats import paired_difference, paired_verdict
from utils.inference.sliding_window import keep_largest_component, predict_case
from utils.preprocessing.plan import plan_for_model
from utils.training.train import prepare_data, train
from utils.visualization.figures import label_colormap, label_legend, take_slice, tumour_center

# %% tags=["parameters"]
MODEL_PATH = None       # None: the best model of lesson 05 for this mode (trained now if missing)
USE_DRIVE = False       # Colab: data, cache and runs on Google Drive, as in lesson 05
DICE_TOLERANCE = 0.01   # a paired Dice difference smaller than this is "no clear difference"
SEED = 0

# %% [markdown]
# ## 1. What the field reports
#
# Four sources, each with the data it was measured on. Two things to keep
# apart when reading them:
#
# - **Legacy Dice** (BraTS up to 2022): one Dice per region over the whole
#   scan, averaged over cases. **Lesion-wise Dice** (the BraTS 2023+
#   ranking): each connected lesion of the truth is scored on its own and
#   every missed lesion or false-positive blob counts as 0 - stricter, and
#   not comparable with legacy numbers (lesson 06 computes both).
# - **Where** it was measured: the challenge's hidden test set, its
#   validation set, a cross-validation on the training cases, or a split of
#   MSD Task01 (the 2016-2017 BraTS cases). Numbers from different places are
#   not a ranking.

# %%
field = pd.DataFrame([
    {"result": "nnU-Net, BraTS 2020 winner (ensemble)", "data": "BraTS 2020 test set", "Dice": "legacy",
     "WT": 88.95, "TC": 85.06, "ET": 82.03,
     "source": "Isensee et al. 2020, nnU-Net for Brain Tumor Segmentation, arXiv:2011.00848 (abstract)"},
    {"result": "MONAI tutorial: SegResNet, 300 epochs", "data": "MSD Task01, its validation fifth",
     "Dice": "legacy", "WT": 91.29, "TC": 84.22, "ET": 61.87,
     "source": "Project-MONAI/tutorials 3d_segmentation/brats_segmentation_3d.ipynb, stored output "
               "(mean 0.7912 at the original spacing; best mean 0.7914 at epoch 279)"},
    {"result": "BraTS 2023 adult glioma winner (ensemble)", "data": "BraTS 2023 validation set",
     "Dice": "lesion-wise", "WT": 90.0, "TC": 86.7, "ET": 85.1,
     "source": "Ferreira et al. 2024, How we won BraTS 2023 Adult Glioma challenge? Just faking it!, "
               "arXiv:2402.17317 (rounded, as summarised at sciencestack.ai/paper/2402.17317)"},
]).set_index("result")
field["mean"] = field[["WT", "TC", "ET"]].mean(axis=1).round(2)
field[["data", "Dice", "WT", "TC", "ET", "mean", "source"]]

# %% [markdown]
# **What won.** nnU-Net's BraTS 2020 entry started from its plain U-Net and
# added three BraTS-specific changes: **region-based training** (sigmoid
# outputs for the nested regions WT, TC, ET instead of the exclusive
# classes), **more aggressive data augmentation**, and **BraTS
# post-processing** (a predicted enhancing tumour smaller than a threshold
# chosen on the training cases becomes core), then ensembled its best
# variants. The BraTS 2023 winner ensembled nnU-Net, Swin UNETR and the
# BraTS 2021 winner's network, trained on many more cases made by
# registering cases to each other and by a GAN that plants synthetic
# tumours in healthy brains, and removed small connected components.
#
# **What did not.** nnU-Net Revisited (Isensee et al., MICCAI 2024,
# arXiv:2404.09556) trained current architectures in one framework with
# 5-fold cross-validation on the 1251 BraTS 2021 training cases. Its BraTS
# column (mean Dice of the regions, as listed in the nnU-Net repository's
# `documentation/resenc_presets.md`):

# %%
revisited = pd.DataFrame({
    "network": ["nnU-Net (org.)", "nnU-Net ResEnc M", "nnU-Net ResEnc L", "nnU-Net ResEnc XL", "MedNeXt L k3",
                "MedNeXt L k5", "STU-Net S", "STU-Net B", "STU-Net L", "SwinUNETR", "SwinUNETRV2", "nnFormer",
                "CoTr", "No-Mamba Base", "U-Mamba Bot", "U-Mamba Enc", "A3DS SegResNet", "A3DS DiNTS",
                "A3DS SwinUNETR"],
    "kind": ["CNN"] * 9 + ["Transformer"] * 4 + ["CNN", "Mamba", "Mamba", "CNN", "CNN", "Transformer"],
    "in nnU-Net": [True] * 16 + [False] * 3,
    "BraTS21 Dice": [91.24, 91.26, 91.13, 91.18, 91.35, 91.50, 90.55, 90.85, 91.26, 90.68, 90.74, 90.22, 90.73,
                     91.26, 91.26, 90.91, 90.79, 87.75, 89.90],
}).set_index("network")
revisited["vs nnU-Net (org.)"] = (revisited["BraTS21 Dice"] - revisited.loc["nnU-Net (org.)", "BraTS21 Dice"]).round(2)
inside = revisited[revisited["in nnU-Net"]]
print(f"inside the nnU-Net framework ({len(inside)} networks): from {inside['vs nnU-Net (org.)'].min():+.2f} to "
      f"{inside['vs nnU-Net (org.)'].max():+.2f} Dice points around the plain nnU-Net's "
      f"{revisited.loc['nnU-Net (org.)', 'BraTS21 Dice']:.2f}; "
      f"{(inside['vs nnU-Net (org.)'].abs() <= 0.5).sum()} of them within 0.5 points")
outside = revisited[~revisited["in nnU-Net"]]
print(f"outside it ({len(outside)}, Auto3DSeg): from {outside['vs nnU-Net (org.)'].min():+.2f} to "
      f"{outside['vs nnU-Net (org.)'].max():+.2f}")
revisited.sort_values("BraTS21 Dice", ascending=False)

# %% [markdown]
# Read the two lines above the table: on BraTS 2021, inside one framework
# with the same training, changing the network moves the mean Dice by the
# range printed there. The paper's conclusion is that the recipe around the
# network (the framework, the training, enough compute) matters more than
# the architecture; the winners' changes above are of that kind.

# %% [markdown]
# ## 2. Regions instead of classes
#
# The course's network, like the assignment's, has three sigmoid outputs
# for the three **exclusive** classes edema, non-enhancing tumour and
# enhancing tumour. The challenge scores the **nested** regions: whole
# tumour WT = {1, 2, 3}, tumour core TC = {2, 3}, enhancing tumour ET = {3}.
# A voxel the network cannot place between edema and core gets two middling
# class probabilities, perhaps both under 0.5: background, a hole in the
# tumour. With region outputs the same voxel is sure to be WT - only the
# inner boundary is in doubt.

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
model = utils.load_model(model_path, compile=False)
plan = plan_for_model(model_path)
data_dir = get_dataset(plan.dataset or config.dataset, plan.mode or config.mode)
val_ids = list(plan.validation_cases) or prepare_data(config, progress=False)[3]
case = load_case(data_dir, val_ids[0])
print(f"model {model_path.parent.name}/{model_path.name}: {plan.output_kind} outputs; "
      f"{len(val_ids)} held-out case(s), first {case.case_id} {case.image.shape}")

# %% alt="One axial slice: the label map in the course colours, then the three nested region masks WT, TC and ET in white."
z = tumour_center(case.label, case.label.shape)[2]
cmap, norm = label_colormap()
fig, axes = plt.subplots(1, 4, figsize=(14, 3.6))
axes[0].imshow(take_slice(case.label, 2, z), cmap=cmap, norm=norm, origin="lower", interpolation="nearest")
axes[0].set_title("label map (classes)")
label_legend(axes[0], loc="lower left", bbox_to_anchor=(0.0, -0.45))
for ax, region in zip(axes[1:], REGION_ORDER):
    ax.imshow(take_slice(np.isin(case.label, REGIONS[region]), 2, z), cmap="gray", origin="lower",
              interpolation="nearest")
    ax.set_title(f"{region} = labels {set(REGIONS[region])}")
for ax in axes:
    ax.set_axis_off()
plt.show()

# %% [markdown]
# ### Exercise 1: `label_to_regions`
#
# Build the region targets of a label map: a float32 array `(x, y, z, 3)`
# whose channels are, in this order, WT (labels 1, 2, 3), TC (2, 3) and ET
# (3). Each channel is 1.0 inside its region and 0.0 outside; the regions
# are nested, so a voxel of label 3 is 1 in all three channels.
#
# Expected output for a line of voxels with labels `[0, 1, 2, 3]`:
# `[[0, 0, 0], [1, 0, 0], [1, 1, 0], [1, 1, 1]]` (float32).

# %%
def label_to_regions(label):
    """Region targets of a label map, channels WT, TC, ET (float32, channels-last)."""
    ### BEGIN SOLUTION
    # Hint: np.isin(label, (2, 3)) is True where the label is 2 or 3.
    # Hint: np.stack([...], axis=-1) puts the channels last; .astype(np.float32) for the loss.
    label = np.asarray(label)
    return np.stack([np.isin(label, REGIONS[r]) for r in REGION_ORDER], axis=-1).astype(np.float32)
    ### END SOLUTION


# %% tags=["check"]
check_label_to_regions(label_to_regions)

# %% [markdown]
# ### Exercise 2: `regions_to_label`
#
# A region network predicts three probabilities per voxel. Rebuild the label
# map **hierarchically**, outermost region first, as nnU-Net does
# (`regions_class_order`): a voxel whose WT probability is above `threshold`
# is edema (1); if its TC probability is above it too, non-enhancing tumour
# (2); if its ET probability is above it as well, enhancing tumour (3). A
# region never leaks outside the one that encloses it: a voxel with only its
# ET probability above the threshold is background. Return integers (uint8)
# of shape `(x, y, z)`.
#
# Expected output for the voxels `[[0.9, 0.8, 0.7], [0.9, 0.2, 0.9], [0.2, 0.1, 0.9]]`
# with threshold 0.5: `[3, 1, 0]`.

# %%
def regions_to_label(regions, threshold=0.5):
    """Label map (uint8) from region probabilities (..., 3) in the order WT, TC, ET."""
    ### BEGIN SOLUTION
    # Hint: a voxel is core only where it is WT too: combine the masks with &.
    # Hint: the label is the number of nested regions the voxel is in.
    inside = np.asarray(regions) > threshold
    wt = inside[..., 0]
    tc = wt & inside[..., 1]
    et = tc & inside[..., 2]
    return (wt.astype(np.uint8) + tc + et).astype(np.uint8)
    ### END SOLUTION


# %% tags=["check"]
check_regions_to_label(regions_to_label)

# %% [markdown]
# Why not `argmax`? For a voxel inside the enhancing tumour every region
# holds it, and the outermost is usually the surest:

# %%
voxel = np.array([[0.95, 0.85, 0.75]])
print(f"probabilities WT, TC, ET = {voxel[0].tolist()}: argmax + 1 says label {int(voxel.argmax(-1)[0] + 1)} "
      f"({CLASS_NAMES[int(voxel.argmax(-1)[0])]}), the hierarchy says label "
      f"{int(utils.regions_to_label(voxel)[0])} ({CLASS_NAMES[int(utils.regions_to_label(voxel)[0]) - 1]})")
round_trip = np.array_equal(utils.regions_to_label(utils.label_to_regions(case.label)), case.label)
print(f"label map -> regions -> label map gives back {case.case_id}'s label map exactly: {round_trip}")

# %% [markdown]
# ## 3. Comparing two models honestly
#
# A mean Dice over six cases moves by a few points from one training run to
# the next. To say that a change helps, compare the two models **on the same
# cases**: the per-case differences, their mean, and how sure we are of that
# mean.
#
# - The **paired bootstrap**: draw the cases with replacement 10,000 times,
#   take the mean difference each time; the middle 95% of those means is the
#   interval. If it contains 0, the data does not say which is better.
# - The **Wilcoxon signed-rank test** (`scipy.stats.wilcoxon`): could
#   differences like these come from two equally good models? With six cases
#   its smallest possible two-sided p-value is 2/64 = 0.03: six cases can
#   only show a large, consistent effect.
#
# `utils.evaluation.stats.paired_difference` computes both and
# `paired_verdict` states the verdict: a difference counts only when the
# interval excludes 0 **and** its size is above a tolerance (here
# `DICE_TOLERANCE`).
#
# A first change to judge, one that costs no training: the course's
# post-processing, **keeping only the largest connected tumour**
# (`keep_largest_component`), against the raw prediction of lesson 05's
# model, on its held-out cases.

# %%
predictions = {}
for case_id in val_ids:
    held_out = load_case(data_dir, case_id)
    label, _ = predict_case(model, held_out.image, progress=False, plan=plan)
    predictions[case_id] = (held_out.label, label, held_out.spacing)
variants = {"raw": {c: p for c, (_, p, _) in predictions.items()},
            "largest component": {c: keep_largest_component(p) for c, (_, p, _) in predictions.items()}}


def dice_table(labels: dict) -> pd.DataFrame:
    """Per-case legacy Dice of WT, TC, ET for ``{case_id: predicted label map}``."""
    pairs = [(c, predictions[c][0], labels[c], predictions[c][2]) for c in labels]
    table = evaluate_cases(pairs, with_hd95=False, lesion_wise=False).drop(index=["mean", "median"])
    return table[[f"Dice {r}" for r in REGION_ORDER]]


def compare(first: str, second: str, tables: dict) -> pd.DataFrame:
    """Paired comparison of two variants per region: means, mean difference, interval, p-value, verdict."""
    rows = {}
    for region in REGION_ORDER:
        column = f"Dice {region}"
        diff = (tables[first][column] - tables[second][column]).to_numpy()
        result = paired_difference(diff, seed=SEED)
        rows[region] = {first: tables[first][column].mean(), second: tables[second][column].mean(),
                        "difference": result.mean, "95% low": result.low, "95% high": result.high,
                        "Wilcoxon p": result.p_value, "n": result.n,
                        "verdict": paired_verdict(result, DICE_TOLERANCE, names=(first, second))}
    return pd.DataFrame(rows).T


tables = {name: dice_table(labels) for name, labels in variants.items()}
print(f"{len(val_ids)} held-out case(s); tolerance {DICE_TOLERANCE} Dice")
compare("largest component", "raw", tables)

# %% [markdown]
# The last column is the answer this data gives, computed from the interval
# and the tolerance; "no clear difference" is a result too.
#
# ## 4. Where the misses are, and which label became which
#
# Dice says how much is wrong, not where. Each whole-tumour voxel the model
# misses is either on the **rim** (at most `RIM_VOXELS` voxels from the true
# tumour's edge: a boundary drawn a little too tight, the kind of
# disagreement two annotators have) or in the **interior** (deeper: tumour
# the network saw and called background, a hole).
# `utils.evaluation.misses` measures both, and the enclosed holes of the
# prediction.

# %%
misses = pd.DataFrame({c: miss_summary(t, p) for c, (t, p, _) in predictions.items()}).T
per_case = tables["raw"].join(misses)
per_case.loc["mean"] = per_case.mean()
print(f"lesson 05's model (raw prediction) on its {len(val_ids)} held-out case(s); misses on the rim: within "
      f"{RIM_VOXELS} voxels of the true tumour's edge")
per_case.round(3)

# %%
wt_missed = misses["WT misses"].sum()
interior = sum(int((miss_depths(t, p) == INTERIOR_MISS).sum()) for t, p, _ in predictions.values())
share = interior / wt_missed if wt_missed else float("nan")
if wt_missed == 0:
    print("the model misses no whole-tumour voxel on these cases")
else:
    where = "mostly holes inside the tumour" if share > 0.5 else "mostly on the rim"
    print(f"all held-out cases together: {int(wt_missed):,} whole-tumour voxels missed, {share:.0%} of them in "
          f"the interior -> {where}; enclosed holes {misses['enclosed holes'].mean():.2%} of the predicted "
          "tumour on average")

# %% alt="The held-out case with the most missed tumour: FLAIR with the true label map in the course colours, then the prediction, then the misses, rim misses in white and interior misses in yellow."
worst = misses["WT misses"].idxmax()
truth, pred, _ = predictions[worst]
image = load_case(data_dir, worst).image
depths = miss_depths(truth, pred)
z = int(np.argmax((depths > 0).sum(axis=(0, 1)))) if depths.any() else tumour_center(truth, truth.shape)[2]
flair = image[..., 0]
lo, hi = np.percentile(flair[flair > 0], [1, 99])
fig, axes = plt.subplots(1, 3, figsize=(13, 4.4))
for ax, (title, label) in zip(axes, (("ground truth", truth), ("prediction", pred), ("misses", None))):
    ax.imshow(take_slice(flair, 2, z), cmap="gray", vmin=lo, vmax=hi, origin="lower")
    if label is not None:
        ax.imshow(take_slice(label, 2, z), cmap=cmap, norm=norm, alpha=0.5, origin="lower", interpolation="nearest")
    ax.set_title(f"{worst}, slice z={z}: {title}")
    ax.set_axis_off()
axes[2].contour(take_slice(truth > 0, 2, z), levels=[0.5], colors=[CLASS_COLORS[0]], linewidths=1)
for value, colour, name in ((RIM_MISS, "white", "rim miss"), (INTERIOR_MISS, "yellow", "interior miss")):
    mask = take_slice(depths == value, 2, z)
    axes[2].imshow(np.where(mask, 1.0, np.nan), cmap=plt.matplotlib.colors.ListedColormap([colour]),
                   origin="lower", interpolation="nearest")
    axes[2].plot([], [], "s", color=colour, label=f"{name} ({int((depths == value).sum()):,} voxels in 3-D)")
axes[2].plot([], [], "-", color=CLASS_COLORS[0], label="true whole tumour")
axes[2].legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize=8, frameon=False)
label_legend(axes[1])
plt.show()

# %% [markdown]
# The confusion matrix of labels, all held-out voxels pooled: each row is a
# true label, each column what the model said, as a share of the row.
# The diagonal is right; off it, which label was taken for which.

# %% alt="Confusion matrix of the four labels on the held-out cases, rows the truth, shares of each row, labels coloured in the course colours."
confusion = sum(label_confusion(t, p) for t, p, _ in predictions.values())
shares = confusion.div(confusion.sum(axis=1).replace(0, np.nan), axis=0)
fig, ax = plt.subplots(figsize=(6.2, 5))
ax.imshow(shares.fillna(0).to_numpy(), cmap="Greys", vmin=0, vmax=1)
for (i, j), value in np.ndenumerate(shares.to_numpy()):
    ax.text(j, i, "-" if np.isnan(value) else f"{value:.2f}", ha="center", va="center",
            color="white" if value > 0.5 else "black", fontsize=9)
ax.set_xticks(range(4), shares.columns, rotation=30, ha="right")
ax.set_yticks(range(4), shares.index)
for ticks in (ax.get_xticklabels(), ax.get_yticklabels()):
    for k, tick in enumerate(ticks[1:]):
        tick.set_color(CLASS_COLORS[k])
ax.set_xlabel("predicted")
ax.set_ylabel("truth")
ax.set_title("labels: share of each true label")
plt.show()
tumour = shares.iloc[1:]
off = tumour.where(~np.eye(4, dtype=bool)[1:]).stack()
label_from, label_to = off.idxmax()
print(f"right per true label: " + ", ".join(f"{name} {shares.loc[name, name]:.2f}" for name in shares.index[1:]))
print(f"the largest confusion: {off.max():.1%} of the true {label_from} voxels were called {label_to}")

# %% [markdown]
# ## Summary
#
# - The field's numbers come from different data and two Dice families:
#   legacy (one Dice per region and case) up to 2022, lesion-wise since 2023.
# - On BraTS 2021 the architectures inside nnU-Net land close together
#   (section 1 printed the spread); the winners' gains came from region
#   outputs, augmentation, post-processing and ensembles.
# - Region targets are nested channels WT, TC, ET; the label map comes back
#   hierarchically, outermost region first - never by `argmax`.
# - Compare models case by case, with a paired interval and a tolerance; six
#   cases can only show large, consistent effects.
# - Section 4 printed where this model's misses lie (rim or interior) and
#   which labels it confuses.
