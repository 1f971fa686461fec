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
# # Lesson 05 - Training the U-Net
#
# Everything so far comes together: cached, standardized cases, a fast patch
# pipeline, the U-Net and the soft Dice loss - trained, validated on held-out
# cases, checkpointed, and resumable when Colab cuts the session.
#
# **You will learn to**
# - get the real MSD data once (download with resume and md5 check, safe extraction);
# - preprocess cases once into a memory-mapped training cache;
# - stream augmented, foreground-oversampled patches in parallel;
# - train with checkpoints, logs, a learning-rate schedule and resume;
# - read learning curves and check a prediction.
#
# **Accelerator: GPU** - on Colab choose *Runtime > Change runtime type > T4 GPU*.
# Without a GPU the lesson trains a small model on the phantom (the `cpu`
# mode, about ten minutes on two cores).
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](COLAB_URL)

# %%
# Setup: on Colab, install the course package (locally, `make` has done it).
import sys

if "google.colab" in sys.modules:
    import subprocess

    subprocess.run([sys.executable, "-m", "pip", "install", "-q",
                    "git+https://github.com/COURSE_REPO"], check=True)

# %% tags=["imports"]
import os
import time
from dataclasses import asdict

import numpy as np
import pandas as pd
import matplotlib.pyplot as plt
import keras

import utils
from utils import course_mode, data_root
from utils.download import fetch_msd
from utils.inference import evaluate_model
from utils.labels import CLASS_NAMES
from utils.pipeline import PatchDataset, PatchSampler
from utils.train import gpu_count, prepare_data, preset, train
from utils.viz import label_colormap, label_legend

# %% tags=["parameters"]
MODE = None          # None: $COURSE_MODE (cpu by default; ci in the test suite; gpu on Colab)
DATASET = None       # None: the mode's default ("phantom"); "msd" for the real data
USE_DRIVE = False    # Colab: keep data and checkpoints on Google Drive (survives a cut session)
OVERRIDES = {}       # any TrainConfig field, e.g. {"epochs": 50, "batch_size": 4}

# %% [markdown]
# ## 1. Three modes, one knob
#
# | mode | where | data | model | budget |
# |---|---|---|---|---|
# | `ci` | the test suite | tiny phantom 64x64x40 | depth 3, 4 filters | a few steps |
# | `cpu` | your laptop (default) | full-size phantom | depth 4, 8 filters, at half resolution | ~10 min on 2 cores |
# | `gpu` | Colab T4 | MSD Task01 (or the phantom) | the assignment's: depth 4, 32 filters, 160x160x16 patches | hours |
#
# Every parameter lives in one `TrainConfig`; the command line
# `python -m utils.train --mode gpu --epochs 100` runs the same code with the
# same fields.

# %%
mode = MODE or ("gpu" if gpu_count() and course_mode() != "ci" else course_mode())
if "google.colab" in sys.modules and USE_DRIVE:
    from google.colab import drive

    drive.mount("/content/drive")
    os.environ["COURSE_DATA_DIR"] = "/content/drive/MyDrive/brats-course/data"
overrides = dict(OVERRIDES)
if DATASET:
    overrides["dataset"] = DATASET
if "google.colab" in sys.modules and USE_DRIVE:
    overrides.setdefault("output_dir", f"/content/drive/MyDrive/brats-course/runs/{mode}")
config = preset(mode, **overrides)
print(f"mode {mode}, {gpu_count()} GPU(s), Keras {keras.__version__} on {keras.backend.backend()}")
pd.Series({k: str(v) for k, v in asdict(config).items()}, name="value").to_frame()

# %% [markdown]
# ## 2. The real data (GPU mode)
#
# The MSD Task01 archive is 7 GB. `fetch_msd` downloads it with a progress
# bar, resumes an interrupted download, checks the md5 and extracts it only
# if no member would land outside the data folder (no `../`, no links); the
# macOS `._*` files in the archive are skipped. A second call finds the data
# and returns at once. On Colab, `USE_DRIVE = True` keeps it on Google
# Drive, so the download happens once, not once per session.

# %%
if config.dataset == "msd":
    msd_root = fetch_msd()
    print("MSD data in", msd_root)
else:
    print(f"dataset: {config.dataset} (set DATASET = 'msd' for the real data)")

# %% [markdown]
# ## 3. The training cache
#
# Decoding a compressed 240x240x155x4 volume takes about a second, and
# training draws thousands of patches. So each case is processed **once**:
# cropped to its brain, standardized over the brain (lesson 02), stored as
# float16 in a `.npy` file that NumPy maps into memory without reading it,
# with a list of tumour voxel positions for foreground sampling. The
# manifest records the preprocessing parameters; change them and the cache
# is rebuilt rather than silently reused. Cases are split into training and
# validation by a fixed seed.

# %%
data_dir, cache, train_ids, val_ids = prepare_data(config)
print(f"{len(train_ids)} training cases, {len(val_ids)} validation cases: {val_ids}")
manifest = pd.DataFrame(cache.manifest["cases"]).set_index("case_id")
manifest[["shape", "crop_box", "voxels"]].head()

# %% [markdown]
# ## 4. The input pipeline
#
# `PatchSampler` cuts a patch from a memory-mapped case - a share of them
# centred on a tumour voxel of a random class (foreground oversampling) -
# flips it on random axes and jitters each channel's intensity.
# `PatchDataset` is a `keras.utils.PyDataset`: Keras prepares batches in
# worker threads while the model trains on the previous one. Batch `i` of
# epoch `e` depends only on `(seed, e, i)`: runs are reproducible and a
# resumed run sees the batches it would have seen.

# %%
sampler = PatchSampler(cache, train_ids, config.patch_shape, config.foreground_fraction)
demo = PatchDataset(sampler, batch_size=4, steps=1, seed=config.seed)
X, y = demo[0]
print("batch:", X.shape, X.dtype, y.shape, y.dtype)

z = X.shape[3] // 2
fig, axes = plt.subplots(2, 4, figsize=(12, 6))
for i in range(4):
    axes[0, i].imshow(X[i, :, :, z, 0].T, cmap="gray", origin="lower")
    labels = np.where(y[i, :, :, z].any(-1), y[i, :, :, z].argmax(-1) + 1, 0)
    axes[1, i].imshow(labels.T, cmap=label_colormap()[0], norm=label_colormap()[1],
                      origin="lower", interpolation="nearest")
for ax in axes.ravel():
    ax.set_axis_off()
axes[0, 0].set_title("FLAIR, augmented patches", loc="left")
plt.show()

start = time.perf_counter()
n = 8
for i in range(n):
    sampler.sample(np.random.default_rng(i))
print(f"{n / (time.perf_counter() - start):.1f} patches/s from the cache, one thread "
      "(benchmarks/bench_pipeline.py compares this with decoding NIfTI files)")

# %% [markdown]
# ## 5. Train
#
# `train(config)` compiles the U-Net with the loss of the config (Dice + BCE
# by default, lesson 04) and the per-class Dice metrics, and fits it with:
#
# - validation on patches of the held-out cases after every epoch;
# - `last.keras` every epoch and `best.keras` at the best validation Dice,
#   each written to a temporary file and renamed, so a crash never leaves a
#   broken checkpoint;
# - `log.csv` (appended across resumed runs) and TensorBoard logs;
# - a cosine learning-rate schedule (a function of the epoch number, so it
#   continues correctly after a resume), optional early stopping;
# - on a GPU, mixed precision (float16 compute, float32 weights and loss);
#   with several GPUs, `tf.distribute.MirroredStrategy`.

# %%
result = train(config)
print(f"trained epochs {result.initial_epoch}..{len(result.history)} in {result.seconds:.0f} s -> {result.output_dir}")

# %% [markdown]
# ## 6. Learning curves

# %%
history = result.history
fig, axes = plt.subplots(1, 2, figsize=(12, 3.8))
axes[0].plot(history["epoch"] + 1, history["loss"], label="training")
axes[0].plot(history["epoch"] + 1, history["val_loss"], label="validation")
axes[0].set_title(f"loss ({config.loss})")
for key, name in zip(("dice_edema", "dice_non_enhancing", "dice_enhancing"), CLASS_NAMES):
    line, = axes[1].plot(history["epoch"] + 1, history["val_" + key], label=f"{name} (val)")
    axes[1].plot(history["epoch"] + 1, history[key], color=line.get_color(), linestyle=":", alpha=0.6)
axes[1].set_title("soft Dice per class (dotted: training)")
for ax in axes:
    ax.set_xlabel("epoch")
    ax.legend(fontsize=8)
fig.tight_layout()
plt.show()

# %% [markdown]
# ## 7. A prediction on a validation patch

# %%
best = keras.models.load_model(result.output_dir / "best.keras")
val_sampler = PatchSampler(cache, val_ids, config.patch_shape, foreground_fraction=1.0, augment=False)
Xv, yv = val_sampler.sample(np.random.default_rng(0))
pv = best.predict(Xv[None], verbose=0)[0]
z = int(np.argmax(yv.sum(axis=(0, 1, 3))))
fig, axes = plt.subplots(1, 3, figsize=(11, 3.8))
cmap, norm = label_colormap()
axes[0].imshow(Xv[:, :, z, 0].T, cmap="gray", origin="lower")
axes[0].set_title("FLAIR")
for ax, labels, title in ((axes[1], yv, "ground truth"), (axes[2], (pv > 0.5).astype(np.float32), "prediction")):
    merged = np.zeros(labels.shape[:2], dtype=np.uint8)
    for k in range(3):
        merged = np.where(labels[:, :, z, k] > 0, k + 1, merged)
    ax.imshow(Xv[:, :, z, 0].T, cmap="gray", origin="lower")
    ax.imshow(merged.T, cmap=cmap, norm=norm, alpha=0.5, origin="lower", interpolation="nearest")
    ax.set_title(title)
for ax in axes:
    ax.set_axis_off()
label_legend(axes[2])
plt.show()

# %% [markdown]
# ## 8. Whole held-out cases
#
# Patch scores flatter or punish depending on where the patches fall. The
# real test is a whole scan: lesson 06 explains the sliding-window
# prediction used here. Region Dice for whole tumour (WT), tumour core (TC)
# and enhancing tumour (ET), and the Dice of each class:

# %%
scores, _ = evaluate_model(best, data_dir, val_ids, with_hd95=False)
scores[["Dice WT", "Dice TC", "Dice ET", *[f"Dice {n}" for n in CLASS_NAMES], "Dice mean (classes)"]]

# %% [markdown]
# ## 9. Resuming a cut session
#
# Colab disconnects idle or long sessions. With `USE_DRIVE = True` the
# checkpoints live on Drive: reconnect, run the notebook again from the top,
# and `train(config)` finds `last.keras` and `state.json`, reloads the model
# *with its optimizer state*, and continues at the next epoch - the log,
# the learning-rate schedule and the best score carry on. (Change a
# parameter that shapes the run, like the patch size, and it refuses, rather
# than mixing two runs in one folder.) The same from the command line:
# `python -m utils.train --mode gpu` again.
#
# Here we ask for one more epoch than was trained: the call resumes.

# %%
more = train(preset(mode, **dict(overrides, epochs=config.epochs + 1)))
print(f"resumed after epoch {more.initial_epoch}; the log now has {len(more.history)} epochs")

# %% [markdown]
# ## 10. What to expect on a GPU
#
# In `gpu` mode (Colab T4, MSD data, the assignment's network, 160x160x16
# patches, batch 4, 250 steps per epoch, mixed precision) an epoch takes a
# few minutes and 100 epochs most of a day of Colab sessions - which is why
# resume matters. Published 3D U-Nets trained this way on BraTS reach whole
# tumour Dice around 0.85-0.90, tumour core 0.75-0.85 and enhancing tumour
# 0.70-0.80 (nnU-Net, with 5x the training, about 0.91 / 0.85 / 0.80).
# The phantom is easier than real gliomas: its tumours are smoother and
# their contrasts cleaner.
#
# ## Summary
#
# - Preprocess once into a memory-mapped cache; sample patches from it with
#   foreground oversampling and augmentation, in parallel, deterministically.
# - Checkpoint atomically, log every epoch, and make the schedule a function
#   of the epoch: then a cut session simply resumes.
# - Judge the model on whole held-out cases, not on patches.
#
# **Next:** lesson 06 predicts whole scans, exports NIfTI and evaluates with
# the BraTS metrics.
