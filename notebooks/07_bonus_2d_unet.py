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
# Many BraTS notebooks train a **2D** U-Net on axial slices: cheaper, faster,
# and it reuses 2D tooling. What does it lose? We train one on the same
# cases, with the same loss and the same time budget as lesson 05's 3D
# U-Net, and compare them on the same held-out cases.
#
# **You will learn to**
# - read a dataset in the BraTS 2020 layout (labels 1/2/4) into the course convention;
# - sample axial slices, skipping most of the empty ones;
# - predict a volume slice by slice;
# - compare 2D and 3D on Dice, HD95, IoU, size and speed - and see the
#   inter-slice consistency a 2D network lacks.
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
from utils.data import list_cases, load_brats_case, load_case, load_msd_case
from utils.inference import predict_case
from utils.labels import CLASS_NAMES
from utils.losses import CLASS_DICE_METRICS, dice_coefficient
from utils.metrics import region_scores
from utils.model import build_unet
from utils.slices import SliceDataset, SliceSampler, export_brats, predict_slices
from utils.config import preset, run_dir, use_drive
from utils.train import LOSSES, TimeBudget, prepare_data, train
from utils.viz import label_colormap, label_legend, take_slice, tumour_center

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
model_3d = keras.models.load_model(checkpoint)
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
                                                                 progress=False)),
                          ("2D U-Net", lambda img: predict_slices(model_2d, img, largest_component=True))):
        start = time.perf_counter()
        label, _ = predict(case.image)
        elapsed = time.perf_counter() - start
        predictions[(name, case_id)] = label
        rows.append({"model": name, "case": case_id, "seconds": elapsed,
                     **region_scores(case.label, label, case.spacing)})
per_case = pd.DataFrame(rows)
summary = per_case.drop(columns="case").groupby("model", sort=False).mean()
summary["parameters"] = [model_3d.count_params(), model_2d.count_params()]
summary["training s"] = [seconds_3d, seconds_2d]
summary = summary.rename(columns={"seconds": "inference s / case"})
columns = ["Dice WT", "Dice TC", "Dice ET", "HD95 WT", "HD95 TC", "HD95 ET", "IoU WT", "IoU TC", "IoU ET",
           "parameters", "training s", "inference s / case"]
summary[columns].T.round(3)

# %%
fig, axes = plt.subplots(1, 2, figsize=(12, 3.6))
regions = ["WT", "TC", "ET"]
x = np.arange(3)
for i, name in enumerate(summary.index):
    axes[0].bar(x + 0.38 * i, summary.loc[name, [f"Dice {r}" for r in regions]], 0.38, label=name)
    axes[1].bar(x + 0.38 * i, summary.loc[name, [f"HD95 {r}" for r in regions]], 0.38, label=name)
for ax, title in zip(axes, ("Dice (higher is better)", "HD95 in mm (lower is better)")):
    ax.set_xticks(x + 0.19, regions)
    ax.set_title(title)
    ax.legend()
fig.tight_layout()
plt.show()

# %% [markdown]
# ## 5. What a 2D network cannot see
#
# Each slice is segmented on its own, so nothing ties slice z to slice z+1.
# A sagittal cut - across the slices - shows it: the 3D prediction is a
# coherent shape, the 2D one can step and flicker from slice to slice.

# %%
case = load_case(data_dir, val_ids[0])
centre = tumour_center(case.label, case.label.shape)
cmap, norm = label_colormap()
flair = case.image[..., 0]
lo, hi = np.percentile(flair[flair > 0], [1, 99])
fig, axes = plt.subplots(1, 3, figsize=(13, 4))
for ax, (title, label) in zip(axes, (("ground truth", case.label), ("3D U-Net", predictions[("3D U-Net", case.case_id)]),
                                     ("2D U-Net (slice by slice)", predictions[("2D U-Net", case.case_id)]))):
    ax.imshow(take_slice(flair, 0, centre[0]), cmap="gray", vmin=lo, vmax=hi, origin="lower",
              aspect=case.spacing[2] / case.spacing[1])
    ax.imshow(take_slice(label, 0, centre[0]), cmap=cmap, norm=norm, alpha=0.55, origin="lower",
              interpolation="nearest", aspect=case.spacing[2] / case.spacing[1])
    ax.set_title(f"{title}, sagittal")
    ax.set_axis_off()
label_legend(axes[2])
plt.show()

# %%
def slice_jumps(label):
    """Mean share of tumour voxels that change label between neighbouring axial slices."""
    tumour = label > 0
    changed = (label[:, :, 1:] != label[:, :, :-1]) & (tumour[:, :, 1:] | tumour[:, :, :-1])
    return changed.sum() / max(tumour.sum(), 1)


pd.DataFrame({name: [slice_jumps(predictions[(name, c)]) for c in val_ids] for name in summary.index} |
             {"ground truth": [slice_jumps(load_case(data_dir, c).label) for c in val_ids]},
             index=val_ids).round(3)

# %% [markdown]
# ## Summary
#
# - The BraTS loader maps 1/2/4 to the course convention; the export and
#   reload return the labels unchanged.
# - A 2D U-Net is smaller per sample and sees more samples in the same time,
#   but each slice alone: its predictions are less consistent across slices,
#   which HD95 and a sagittal view expose more than Dice.
# - Which wins depends on the data, the budget and the resolution: read the
#   table, not a rule. On the phantom (CPU demo) the 2D network held its own
#   on the whole tumour while the 3D one was better on the tumour core.
