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
import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import matplotlib.pyplot as plt
import utils  # before keras: it keeps TensorFlow's start-up notices out of the lesson
import keras

from utils.course.checks import check_label_to_regions, check_regions_to_label
from utils.config import course_mode, preset, run_dir, use_drive
from utils.data.datasets import list_cases, load_case
from utils.data.labels import CLASS_NAMES, REGION_ORDER, REGIONS, class_colors
from utils.data.phantom import ensure_shifted_phantom
from utils.evaluation.metrics import INTERIOR_DEPTH, evaluate_cases, whole_tumour_errors
from utils.evaluation.misses import INTERIOR_MISS, RIM_MISS, label_confusion, miss_depths
from utils.evaluation.stats import paired_difference, paired_verdict
from utils.inference.postprocessing import BRATS2023_MIN_SIZES_MM3, PostProcessing
from utils.inference.sliding_window import predict_case
from utils.preprocessing.plan import plan_for_model
from utils.training.train import prepare_data, train
from utils.visualization.figures import label_colormap, label_legend, take_slice, tumour_center

# %% tags=["parameters"]
USE_DRIVE = False        # Colab: data, cache and runs on Google Drive, as in lesson 05
EPOCH_SHARE = 0.3        # each ablation model trains this share of the preset's epochs (all alike; 1.0: the full budget)
OVERLAP = 0.25           # sliding-window overlap of every prediction here (lesson 06 uses 0.5: slower, a little better)
MIRROR_ABLATION = None   # None: only in ci mode (test-time mirroring costs 8 predictions per case)
DICE_TOLERANCE = 0.01    # a paired Dice difference smaller than this is "no clear difference"
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
# MONAI's tutorial trains region outputs too (three sigmoids for TC, WT and
# ET); its low ET shows what a single model without the rest of the recipe
# reaches on MSD Task01.
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
epochs = max(1, round(EPOCH_SHARE * config.epochs))
mirror_ablation = course_mode() == "ci" if MIRROR_ABLATION is None else MIRROR_ABLATION
print(f"mode {course_mode()}: each ablation model trains {epochs} of the preset's {config.epochs} epochs "
      f"({config.steps_per_epoch} steps each); runs under {run_dir(config).parent / (config.mode + '-lesson09')}")

# %%
data_dir, cache, train_ids, val_ids = prepare_data(config, progress=False)
case = load_case(data_dir, val_ids[0])
print(f"{len(train_ids)} training and {len(val_ids)} held-out case(s); first held-out {case.case_id} "
      f"{case.image.shape}")

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
# ## 4. The ablation: one change at a time
#
# The same preset, the same cases, the same seed; each model differs from
# the one before it by one change, as nnU-Net's BraTS paper built its entry:
#
# 1. **baseline**: the course's class outputs and its basic augmentation
#    (flips, an intensity scale and shift);
# 2. **+ region outputs** (`TrainConfig.outputs = "regions"`);
# 3. **+ nnU-Net augmentation** (`TrainConfig.augmentation = "nnunet"`:
#    batchgenerators' rotation and scaling, noise, blur, brightness,
#    contrast, gamma, simulated low resolution, mirroring);
# 4. **+ post-processing**, fixed in advance, never tuned on these cases:
#    the BraTS 2023 winner's smallest components, removed per region;
# 5. **+ test-time mirroring** (the mean over the 8 flips of each window),
#    when `MIRROR_ABLATION` allows it.
#
# The budget is stated above: each model trains the same share of the
# preset's epochs (a run folder that already holds that training is reused).

# %%
VARIANTS = {  # every setting named: the presets themselves now train region outputs with nnU-Net augmentation
    "baseline": {"outputs": "classes", "augmentation": "basic"},
    "+ region outputs": {"outputs": "regions", "augmentation": "basic"},
    "+ nnU-Net augmentation": {"outputs": "regions", "augmentation": "nnunet"},
}


def trained_variant(name: str, overrides: dict):
    """Train (or reuse) one ablation model; return ``(model, plan, training seconds)``."""
    folder_name = name.strip("+ ").replace(" ", "-").lower()
    variant = preset(**overrides, epochs=epochs, verbose=0,
                     output_dir=str(run_dir(config).parent / f"{config.mode}-lesson09" / folder_name))
    folder = run_dir(variant)
    recorded = json.loads((folder / "config.json").read_text()) if (folder / "config.json").is_file() else {}
    other = {k: recorded[k] for k, v in overrides.items() if k in recorded and recorded[k] != v}
    if other:
        raise ValueError(f"{folder} holds a run trained with {other}, not {overrides}: move or delete that folder "
                         "(it is yours) to train this variant again")
    state = folder / "state.json"
    done = json.loads(state.read_text()).get("epochs_done", 0) if state.is_file() else 0
    if done < variant.epochs or not (folder / "best.keras").is_file():
        train(variant, progress=False)
    seconds = json.loads(state.read_text()).get("seconds", float("nan"))
    checkpoint = folder / "best.keras"
    return utils.load_model(checkpoint, compile=False), plan_for_model(checkpoint), seconds


logging.getLogger("tensorflow").setLevel(logging.ERROR)  # three models in one process: TensorFlow's retracing notes
models = {name: trained_variant(name, overrides) for name, overrides in VARIANTS.items()}
for name, (model, plan, seconds) in models.items():
    print(f"{name}: {plan.output_kind} outputs, trained {seconds:.0f} s")

# %%
truths = {c: load_case(data_dir, c) for c in val_ids}


def predict_cases(model, plan, cases: dict, mirror: bool = False) -> dict:
    """``{case_id: label map}`` for the given loaded cases."""
    return {c: predict_case(model, case.image, overlap=OVERLAP, mirror=mirror, progress=False, plan=plan)[0]
            for c, case in cases.items()}


def dice_table(labels: dict, cases: dict) -> pd.DataFrame:
    """Per-case legacy Dice of WT, TC, ET."""
    pairs = [(c, cases[c].label, labels[c], cases[c].spacing) for c in labels]
    table = evaluate_cases(pairs, with_hd95=False, lesion_wise=False).drop(index=["mean", "median"])
    return table[[f"Dice {r}" for r in REGION_ORDER]]


post = PostProcessing(min_sizes_mm3=dict(BRATS2023_MIN_SIZES_MM3))
steps = {name: predict_cases(model, plan, truths) for name, (model, plan, _) in models.items()}
last_model, last_plan, _ = models["+ nnU-Net augmentation"]
steps["+ post-processing"] = {c: post.apply(label, truths[c].spacing)
                              for c, label in steps["+ nnU-Net augmentation"].items()}
if mirror_ablation:
    mirrored = predict_cases(last_model, last_plan, truths, mirror=True)
    steps["+ test-time mirroring"] = {c: post.apply(label, truths[c].spacing) for c, label in mirrored.items()}
tables = {name: dice_table(labels, truths) for name, labels in steps.items()}
print(f"post-processing: {post.describe()}")

# %%
def interior_share(labels: dict, cases: dict) -> float:
    """Share of all whole-tumour misses (pooled over the cases) that lie in the interior."""
    errors = [whole_tumour_errors(cases[c].label, labels[c]) for c in labels]
    missed = sum(e["misses"] for e in errors)
    return sum(e["interior_misses"] for e in errors) / missed if missed else float("nan")


trained_seconds = {name: seconds for name, (_, _, seconds) in models.items()}
ablation = pd.DataFrame({
    name: {**{f"{r} mean": table[f"Dice {r}"].mean() for r in REGION_ORDER},
           **{f"{r} sd": table[f"Dice {r}"].std(ddof=1) if len(table) > 1 else float("nan") for r in REGION_ORDER},
           "interior misses": interior_share(steps[name], truths),
           "training s": trained_seconds.get(name, trained_seconds["+ nnU-Net augmentation"])}
    for name, table in tables.items()
}).T
print(f"held-out Dice, {len(val_ids)} case(s), each row adds one change to the row above; 'interior misses': "
      f"share of the whole-tumour misses {INTERIOR_DEPTH} voxels or more inside the true tumour")
ablation.round(3)

# %% [markdown]
# Before reading a Dice difference, check that each model predicts each
# region at all. A model that never outputs tumour core scores TC Dice 0 on
# every case with a core: comparing it with another model measures how far
# its training got, not what its method does. For each model, the number of
# held-out cases in which it predicts at least one voxel of each region (the
# first row: the cases whose truth has the region):

# %%
UNTRAINED = "reflects an untrained output, not the method"


def cases_with_region(labels: dict) -> pd.Series:
    """How many of the label maps hold at least one voxel of each region."""
    return pd.Series({r: sum(bool(np.isin(label, REGIONS[r]).any()) for label in labels.values())
                      for r in REGION_ORDER})


def region_presence(labels_by_model: dict, cases: dict) -> pd.DataFrame:
    """Per model, the cases with any predicted voxel of each region; the first row is the truth."""
    rows = {"truth": cases_with_region({c: case.label for c, case in cases.items()})}
    rows.update({name: cases_with_region(labels) for name, labels in labels_by_model.items()})
    return pd.DataFrame(rows).T


def never_predicted(presence: pd.DataFrame) -> dict:
    """``{model: [regions it predicts in no case although the truth has them]}``, models with none left out."""
    found = {name: [r for r in REGION_ORDER if presence.loc[name, r] == 0 < presence.loc["truth", r]]
             for name in presence.index[1:]}
    return {name: regions for name, regions in found.items() if regions}


presence = region_presence(steps, truths)
missing = never_predicted(presence)
print(f"held-out cases (of {len(val_ids)}) with at least one predicted voxel of each region:")
print(presence.to_string())
for name, regions in missing.items():
    print(f"{name} predicts no {' and no '.join(regions)} in any held-out case: an untrained output")
if not missing:
    print("every model predicts every region the truth has in at least one case")

# %%
def compare(first: str, second: str, tables: dict, presence: pd.DataFrame) -> pd.DataFrame:
    """Paired comparison of two rows per region: mean difference, interval, p-value, verdict.

    A region that one of the two models predicts in no case (``presence``)
    gets the verdict that the comparison reflects an untrained output.
    """
    missing = never_predicted(presence)
    rows = {}
    for region in REGION_ORDER:
        column = f"Dice {region}"
        result = paired_difference((tables[first][column] - tables[second][column]).to_numpy(), seed=SEED)
        verdict = paired_verdict(result, DICE_TOLERANCE, names=(first.lstrip("+ "), second.lstrip("+ ")))
        blank = [name.lstrip("+ ") for name in (first, second) if region in missing.get(name, [])]
        if blank:
            verdict = (f"{UNTRAINED}: {' and '.join(blank)} predicts no {region} in any case "
                       f"(the numbers: {verdict})")
        rows[f"{first} vs {second}: {region}"] = {
            "difference": round(result.mean, 3), "95% low": round(result.low, 3), "95% high": round(result.high, 3),
            "Wilcoxon p": round(result.p_value, 3), "n": result.n, "verdict": verdict}
    return pd.DataFrame(rows).T


names = list(tables)
verdicts = pd.concat([compare(names[i], names[i - 1], tables, presence) for i in range(1, len(names))])
verdicts

# %%
untrained = verdicts[verdicts["verdict"].str.startswith(UNTRAINED)]
supported = verdicts[verdicts["verdict"].str.contains("better") & ~verdicts.index.isin(untrained.index)]
print(f"{len(supported)} of {len(verdicts)} paired comparisons show a difference the data supports "
      f"(interval excluding 0, more than {DICE_TOLERANCE} Dice, both models predicting the region):")
for index, row in supported.iterrows():
    print(f"  {index}: {row['verdict']}")
if supported.empty and verdicts["verdict"].str.startswith("no verdict").all():
    print(f"  none: {len(val_ids)} held-out case(s) are too few for any verdict")
elif supported.empty:
    print("  none: on these cases and this budget no change is distinguishable from the noise between cases")
if not untrained.empty:
    print(f"{len(untrained)} of {len(verdicts)} compare a region that one model predicts in no case: they measure "
          "how far training got at this budget, not the method:")
    for index in untrained.index:
        print(f"  {index}")

# %% [markdown]
# Read the verdict column, not the means: a mean that moves by a few
# hundredths with an interval across 0 is noise between cases and training
# runs. The budget here is a share of the preset's, so a change that needs
# longer training (region outputs must learn three nested boundaries;
# augmentation makes the task harder before it helps) can lose here and win
# with the full budget - and a model that predicts a region nowhere has
# simply not learnt it yet.
#
# ### The course's own full-budget measurement
#
# The same ablation at the cpu preset's full budget was measured once by
# `benchmarks/ablation.py` (issue 26), on the same six held-out cases and six
# shifted cases, with one training seed. Like section 1's numbers, it is
# stored here with its source rather than recomputed (it took about half an
# hour of training on a shared, busy 2-core machine; the training seconds
# are wall time under that load). One seed: a difference smaller than the
# sd between cases is not evidence either way.

# %%
FULL_BUDGET_SOURCE = ("benchmarks/ablation.py (issue 26; benchmarks/README.md), 2026-12-06: the cpu preset's full "
                      "10 epochs, seed 0 (one seed), 6 held-out cases of the cpu phantom and 6 cases of "
                      "phantom-shifted; Dice mean and sd over the cases; interior and holes pooled over the cases")
FULL_BUDGET_NOTES = {
    "baseline": "no post-processing step: keeps the largest tumour (the course's rule before issue 26)",
    "+ post-processing": "the rule chosen on separate tuning cases: largest tumour only, so the same as the line above",
    "(regions + post, no aug)": "a side line: region outputs and their chosen post-processing, no nnU-Net augmentation",
    "+ ensemble of 2 seeds": "mean probabilities of the augmented model and a second seed of it",
}
FULL_BUDGET_COLUMNS = ["WT", "WT sd", "TC", "TC sd", "ET", "ET sd", "interior", "holes"]
FULL_BUDGET_ROWS = {  # configuration: held-out values, shifted values (FULL_BUDGET_COLUMNS each), training s
    "baseline": ([0.856, 0.047, 0.733, 0.194, 0.785, 0.116, 0.397, 0.0189],
                 [0.646, 0.318, 0.523, 0.299, 0.556, 0.342, 0.521, 0.0154], 289),
    "+ region-based": ([0.893, 0.042, 0.747, 0.211, 0.834, 0.099, 0.071, 0.0052],
                       [0.708, 0.347, 0.529, 0.308, 0.417, 0.342, 0.308, 0.0009], 540),
    "+ augmentation": ([0.896, 0.035, 0.704, 0.240, 0.793, 0.123, 0.007, 0.0000],
                       [0.702, 0.345, 0.604, 0.326, 0.528, 0.359, 0.256, 0.0001], 218),
    "+ post-processing": ([0.896, 0.035, 0.704, 0.240, 0.793, 0.123, 0.007, 0.0000],
                          [0.702, 0.345, 0.604, 0.326, 0.528, 0.359, 0.256, 0.0001], 218),
    "(regions + post, no aug)": ([0.859, 0.055, 0.746, 0.214, 0.817, 0.105, 0.071, 0.0048],
                                 [0.683, 0.271, 0.670, 0.181, 0.684, 0.192, 0.274, 0.0014], 540),
    "+ ensemble of 2 seeds": ([0.905, 0.033, 0.733, 0.262, 0.773, 0.128, 0.005, 0.0002],
                              [0.711, 0.350, 0.556, 0.329, 0.359, 0.302, 0.237, 0.0001], 383),
}
# the lesson's models that match a full-budget line (the lesson's post-processing rule differs from the line's)
FULL_BUDGET_LINE = {"baseline": "baseline", "+ region outputs": "+ region-based",
                    "+ nnU-Net augmentation": "+ augmentation"}
full_budget = pd.concat({
    "held-out": pd.DataFrame({k: v[0] for k, v in FULL_BUDGET_ROWS.items()}, index=FULL_BUDGET_COLUMNS).T,
    "shifted": pd.DataFrame({k: v[1] for k, v in FULL_BUDGET_ROWS.items()}, index=FULL_BUDGET_COLUMNS).T,
}, axis=1)
full_budget[("", "training s")] = [v[2] for v in FULL_BUDGET_ROWS.values()]
print(f"source: {FULL_BUDGET_SOURCE}")
for line, note in FULL_BUDGET_NOTES.items():
    print(f"  {line}: {note}")
full_budget

# %% [markdown]
# The lesson's reduced-budget models against the full-budget lines, change
# by change, on the held-out cases: the difference of the means for each
# region (and for the interior share of the misses, where lower is better),
# whether the two budgets move in the same direction, and whether the
# full-budget difference is larger than the sd between cases.

# %%
def direction(difference: float, tolerance: float) -> int:
    """+1 up, -1 down, 0 within the tolerance."""
    return 0 if abs(difference) <= tolerance else int(np.sign(difference))


held = full_budget["held-out"]
steps_compared = [(new, old) for old, new in zip(names, names[1:])
                  if new in FULL_BUDGET_LINE and old in FULL_BUDGET_LINE]
agreement = {}
for new, old in steps_compared:
    full_new, full_old = held.loc[FULL_BUDGET_LINE[new]], held.loc[FULL_BUDGET_LINE[old]]
    for measure in (*REGION_ORDER, "interior"):
        if measure == "interior":
            reduced = ablation.loc[new, "interior misses"] - ablation.loc[old, "interior misses"]
            full, sd, tolerance = full_new["interior"] - full_old["interior"], float("nan"), 0.05
        else:
            reduced = ablation.loc[new, f"{measure} mean"] - ablation.loc[old, f"{measure} mean"]
            full = full_new[measure] - full_old[measure]
            sd, tolerance = max(full_new[f"{measure} sd"], full_old[f"{measure} sd"]), DICE_TOLERANCE
        region = "WT" if measure == "interior" else measure  # interior misses are whole-tumour misses
        blank = [n.lstrip("+ ") for n in (new, old) if region in missing.get(n, [])]
        same = direction(reduced, tolerance) == direction(full, tolerance)
        agreement[f"{new} vs {old}: {measure}"] = {
            "reduced budget": round(float(reduced), 3), "full budget": round(float(full), 3),
            "full-budget sd": round(float(sd), 3),
            "full budget beyond its sd": "-" if np.isnan(sd) else bool(abs(full) > sd),
            "direction": ("untrained: " + " and ".join(blank) + f" predicts no {region}") if blank
            else ("agrees" if same else "differs")}
agreement = pd.DataFrame(agreement).T
if agreement.empty:
    print("none of the lesson's comparisons has a full-budget line")
else:
    trained = agreement[~agreement["direction"].str.startswith("untrained")]
    print(f"{(trained['direction'] == 'agrees').sum()} of the {len(trained)} comparisons with a trained output on "
          f"both sides move in the same direction at both budgets (a change within {DICE_TOLERANCE} Dice, or 0.05 "
          f"of the interior share, counts as no move); {len(agreement) - len(trained)} involve a region a "
          "reduced-budget model never predicts")
    beyond = agreement[agreement["full budget beyond its sd"].eq(True)]
    print(f"full-budget Dice differences larger than the sd between cases: {len(beyond)} of "
          f"{int(agreement['full budget beyond its sd'].ne('-').sum())}"
          + (": " + ", ".join(beyond.index) if len(beyond) else ""))
agreement

# %% [markdown]
# Read the last two columns together. Where the reduced budget left a model
# blind to a region, its line says nothing about the method; the full-budget
# line is the measurement to read for it - and with one seed and six cases,
# even that is a direction, not a proof, wherever its difference is inside
# the sd.
#
# ## 5. Where the misses are, and which label became which
#
# Dice says how much is wrong, not where. Each whole-tumour voxel a model
# misses is either on the **rim** (the outer layer of the true tumour: a
# boundary drawn a little too tight, the kind of disagreement two annotators
# have) or in the **interior** (`INTERIOR_DEPTH` voxels or more inside:
# tumour the network saw and called background, a hole).
# `utils.evaluation.metrics.whole_tumour_errors` counts both and the holes
# the predicted tumour encloses (`hole_share`, of the predicted tumour;
# lesson 06 prints the same numbers). Before and after region outputs, per
# case:

# %%
before, after = "baseline", "+ region outputs"
COLUMNS = ["misses", "interior_misses", "interior_miss_share", "hole_share"]
misses = pd.concat({name: pd.DataFrame({c: whole_tumour_errors(truths[c].label, steps[name][c])
                                        for c in val_ids}).T[COLUMNS].astype(float)
                    for name in (before, after)}, axis=1)
misses.loc["mean"] = misses.mean()
misses.round(3)

# %%
per_case_interior = {name: misses.drop(index="mean")[(name, "interior_miss_share")] for name in (before, after)}
result = paired_difference((per_case_interior[after] - per_case_interior[before]).to_numpy(), seed=SEED)
verdict = paired_verdict(result, 0.05, higher_is_better=False, names=("region outputs", "class outputs"))
print(f"interior share of the whole-tumour misses, pooled: {before} {interior_share(steps[before], truths):.0%}, "
      f"{after} {interior_share(steps[after], truths):.0%}; per case, region - class outputs: mean "
      f"{result.mean:+.3f}, 95% interval [{result.low:+.3f}, {result.high:+.3f}] -> {verdict} (tolerance 0.05)")

# %% alt="The held-out case with the most missed tumour, one axial slice, for the baseline and the region model: FLAIR with the true whole tumour outlined in red, rim misses in white and interior misses in yellow."
worst = misses.drop(index="mean")[(before, "misses")].idxmax()
truth = truths[worst].label
flair = truths[worst].image[..., 0]
depths = {name: miss_depths(truth, steps[name][worst]) for name in (before, after)}
z = int(np.argmax(sum((d > 0).sum(axis=(0, 1)) for d in depths.values())))
lo, hi = np.percentile(flair[flair > 0], [1, 99])
fig, axes = plt.subplots(1, 2, figsize=(11, 4.6))
for ax, name in zip(axes, (before, after)):
    ax.imshow(take_slice(flair, 2, z), cmap="gray", vmin=lo, vmax=hi, origin="lower")
    ax.contour(take_slice(truth > 0, 2, z), levels=[0.5], colors=[class_colors()[0]], linewidths=1)
    for value, colour in ((RIM_MISS, "white"), (INTERIOR_MISS, "yellow")):
        mask = take_slice(depths[name] == value, 2, z)
        ax.imshow(np.where(mask, 1.0, np.nan), cmap=plt.matplotlib.colors.ListedColormap([colour]),
                  origin="lower", interpolation="nearest")
    counts = {v: int((depths[name] == v).sum()) for v in (RIM_MISS, INTERIOR_MISS)}
    ax.set_title(f"{name}: {worst}, z={z}\nrim misses {counts[RIM_MISS]:,}, interior {counts[INTERIOR_MISS]:,} "
                 "(3-D)", fontsize=10)
    ax.set_axis_off()
handles = [plt.Line2D([], [], color=class_colors()[0], label="true whole tumour"),
           plt.Line2D([], [], marker="s", ls="", color="white", markeredgecolor="0.5", label="rim miss"),
           plt.Line2D([], [], marker="s", ls="", color="yellow", label="interior miss")]
axes[1].legend(handles=handles, loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize=8, frameon=False)
plt.show()

# %% [markdown]
# ## 6. Another scanner: the shifted test set
#
# A model is trained on one hospital's scans and used on the next one's. The
# course's generator can build cases from a scanner it never trained on:
# `get_dataset("phantom-shifted")` draws every acquisition setting (tumour
# contrast, gamma, intensity scale, bias field, noise, through-plane blur)
# **outside** the training ranges, with new tumours (`data/README.md` lists
# the ranges). The same anatomy: nothing else is available offline.

# %%
shifted_dir = ensure_shifted_phantom(config.mode, progress=False)  # what get_dataset("phantom-shifted") returns
shifted = {c: load_case(shifted_dir, c) for c in list_cases(shifted_dir)}
print(f"{len(shifted)} shifted case(s) in {shifted_dir.name}")

# %% alt="FLAIR and T1gd of a held-out training-scanner case beside a shifted-scanner case, each with its own grey scale, the label outlines in the course colours."
shown = [("training scanner", truths[val_ids[0]]), ("shifted scanner", next(iter(shifted.values())))]
fig, axes = plt.subplots(2, 2, figsize=(9, 8.5))
for row, (title, shown_case) in enumerate(shown):
    zc = tumour_center(shown_case.label, shown_case.label.shape)[2]
    for col, channel in enumerate((0, 2)):
        ax = axes[row, col]
        image = shown_case.image[..., channel]
        lo, hi = np.percentile(image[image > 0], [0.5, 99.5])
        ax.imshow(take_slice(image, 2, zc), cmap="gray", vmin=lo, vmax=hi, origin="lower")
        for k, colour in enumerate(class_colors()):
            ax.contour(take_slice(shown_case.label == k + 1, 2, zc), levels=[0.5], colors=[colour], linewidths=0.8)
        ax.set_title(f"{title} ({shown_case.case_id}): {('FLAIR', 'T1gd')[col]}", fontsize=10)
        ax.set_axis_off()
label_legend(axes[0, 1])
plt.show()

# %%
robust = ("+ region outputs", "+ nnU-Net augmentation")
shifted_labels = {name: predict_cases(models[name][0], models[name][1], shifted) for name in robust}
shifted_tables = {name: dice_table(labels, shifted) for name, labels in shifted_labels.items()}
shift = pd.DataFrame({
    name: {**{f"held-out {r}": tables[name][f"Dice {r}"].mean() for r in REGION_ORDER},
           **{f"shifted {r}": shifted_tables[name][f"Dice {r}"].mean() for r in REGION_ORDER},
           **{f"drop {r}": tables[name][f"Dice {r}"].mean() - shifted_tables[name][f"Dice {r}"].mean()
              for r in REGION_ORDER}}
    for name in robust
}).T
print(f"mean Dice on the {len(val_ids)} held-out and the {len(shifted)} shifted case(s); drop = held-out - shifted")
shift.round(3)

# %%
print("on the shifted cases (the same cases for both models, so paired):")
shifted_presence = region_presence(shifted_labels, shifted)
print(f"shifted cases (of {len(shifted)}) with at least one predicted voxel of each region:")
print(shifted_presence.to_string())
shift_verdicts = compare("+ nnU-Net augmentation", "+ region outputs", shifted_tables, shifted_presence)
shift_verdicts

# %%
for region in REGION_ORDER:
    drops = {name: round(float(shift.loc[name, f"drop {region}"]), 3) for name in robust}
    if drops[robust[0]] == drops[robust[1]]:
        smaller = "the same drop at this precision"
    else:
        smaller = f"the smaller drop: {min(drops, key=drops.get).lstrip('+ ')}"
    print(f"{region}: drop without nnU-Net augmentation {drops[robust[0]]:+.3f}, with it {drops[robust[1]]:+.3f} "
          f"-> {smaller}; paired on the shifted cases: "
          f"{shift_verdicts.loc[f'{robust[1]} vs {robust[0]}: {region}', 'verdict']}")
    full_drops = {name: full_budget.loc[FULL_BUDGET_LINE[name], ("held-out", region)]
                  - full_budget.loc[FULL_BUDGET_LINE[name], ("shifted", region)] for name in robust}
    print(f"    full budget (one seed): drop without {full_drops[robust[0]]:+.3f}, with {full_drops[robust[1]]:+.3f} "
          f"-> the smaller drop: {min(full_drops, key=full_drops.get).lstrip('+ ')}")

# %% [markdown]
# What does the model get wrong on the new scanner? The confusion matrix of
# labels on the shifted cases, all voxels pooled: each row a true label, each
# column what the model said, as a share of the row.

# %% alt="Confusion matrix of the four labels on the shifted cases for the model with nnU-Net augmentation, rows the truth, shares of each row, tick labels in the course colours."
confusion = sum(label_confusion(shifted[c].label, shifted_labels[robust[1]][c]) for c in shifted)
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
        tick.set_color(class_colors()[k])
ax.set_xlabel("predicted")
ax.set_ylabel("truth")
ax.set_title(f"shifted cases, {robust[1].lstrip('+ ')}: share of each true label", fontsize=10)
plt.show()
off = shares.iloc[1:].where(~np.eye(4, dtype=bool)[1:]).stack()
label_from, label_to = off.idxmax()
print("right per true label: " + ", ".join(f"{name} {shares.loc[name, name]:.2f}" for name in shares.index[1:]))
print(f"the largest confusion: {off.max():.1%} of the true {label_from} voxels were called {label_to}")
never = [name for name in confusion.columns[1:] if confusion[name].sum() == 0 < confusion.loc[name].sum()]
if never:
    print(f"{robust[1].lstrip('+ ')} predicts no {' and no '.join(never)} voxel in any shifted case: those rows "
          "reflect an untrained output, not the scanner")

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
# - Section 4 printed, change by change, which differences these cases
#   support, and first how many cases each model predicts each region in: a
#   comparison with a model that predicts a region nowhere measures an
#   untrained output, not the method, and the verdicts say so.
# - The course's full-budget measurement (`benchmarks/ablation.py`, one seed,
#   six cases) is the line to read for the methods; section 4 printed where
#   the reduced budget moves the same way and where its differences exceed
#   the sd between cases.
# - Section 5 printed where the misses lie, rim or interior, before and after
#   region outputs; section 6 how much Dice a new scanner costs, with and
#   without nnU-Net augmentation, at both budgets, and which labels it
#   confuses.
