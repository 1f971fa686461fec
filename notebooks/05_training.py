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
# mode); section 5 prints how long that took on your machine.
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
import shutil
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pandas as pd
import matplotlib.pyplot as plt
import utils  # before keras: it keeps TensorFlow's start-up notices out of the lesson
import keras

from utils.config import course_mode, gpu_count, preset, run_dir, use_drive
from utils.training.distribute import current_cluster, parse_tf_config, strategy_kind
from utils.data.download import fetch_msd
from utils.inference.sliding_window import evaluate_model, probabilities_to_labels
from utils.preprocessing.plan import read_plan
from utils.data.labels import CLASS_NAMES
from utils.evaluation.metrics import lesion_wise_region
from utils.model.unet import T4_FP16_PEAK_TFLOPS, T4_MEMORY_GB, T4_UTILISATION, TRAINING_HOLDS, gpu_run_estimate
from utils.training.pipeline import PatchDataset, PatchSampler
from utils.training.train import prepare_data, train
from utils.visualization.figures import curve_channels, label_colormap, label_legend, plot_learning_curves

# %% tags=["parameters"]
DATASET = None       # None: the mode's default ("phantom"); "msd" for the real data
USE_DRIVE = False    # Colab: data, cache and runs on Google Drive (set it alike in lessons 05, 06 and 07)
OVERRIDES = {}       # any TrainConfig field, e.g. {"epochs": 50, "batch_size": 4}

# %% [markdown]
# ## 1. Three modes, one knob
#
# | mode | where | data | model | budget |
# |---|---|---|---|---|
# | `ci` | the test suite | tiny phantom 64x64x40 | depth 3, 4 filters | a few steps |
# | `cpu` | no GPU visible (default) | full-size phantom | depth 4, 8 filters, 3 x 64x64x32 patches | 10 epochs of 30 steps |
# | `gpu` | a GPU visible (Colab T4) | MSD Task01 (or the phantom) | the assignment's: depth 4, 32 filters, 160x160x16 patches | 100 epochs of 250 steps |
#
# The `cpu` mode trains the U-Net of lesson 03 as it is, at full
# resolution - only narrower (8 base filters instead of 32, so each
# convolution has a sixteenth of the weights) and on smaller patches; it
# holds out 6 of its 16 phantom cases to judge the result; section 5 prints
# how long a step took in your run, after warm-up and over the whole run.
# (`build_unet(..., downsample=2)` would run the network
# at half resolution, about twice as fast per step, for a blurrier
# segmentation; the course does not need it.)
#
# One function, `utils.config.course_mode()`, picks the mode: the
# environment variable `COURSE_MODE` if it is set, otherwise `gpu` when
# Keras sees a GPU (Colab sets no variable), otherwise `cpu`. Lessons 06 and
# 07 and the command line ask the same function, so they find this lesson's
# run. Every parameter lives in one `TrainConfig` (`utils.config.preset`);
# `python -m utils.training.train` runs the same code with the same fields.
#
# On Colab, `USE_DRIVE = True` keeps data, training cache and runs on Google
# Drive (`utils.config.use_drive` sets `COURSE_DATA_DIR`): a cut session
# loses nothing. Set it in lessons 06 and 07 too.

# %% tags=["run-config"]
use_drive(USE_DRIVE)
mode = course_mode()
overrides = dict(OVERRIDES)
if DATASET:
    overrides["dataset"] = DATASET
config = preset(mode, **overrides)
checkpoint = run_dir(config) / "best.keras"
print(f"mode {mode} ({gpu_count()} GPU), Keras {keras.__version__} on {keras.backend.backend()}; "
      f"run folder {run_dir(config)}")
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
# validation by a fixed seed, stratified: cases with and without enhancing
# tumour are held out in the proportion the data has them.

# %%
data_dir, cache, train_ids, val_ids = prepare_data(config)
print(f"{len(train_ids)} training cases, {len(val_ids)} validation cases: {val_ids}")
manifest = pd.DataFrame(cache.manifest["cases"]).set_index("case_id")
manifest[["shape", "crop_box", "voxels"]].head()

# %% [markdown]
# ## 4. The input pipeline
#
# `PatchSampler` cuts a patch from a memory-mapped case - a share of them
# centred on a tumour voxel of a random class (foreground oversampling), the
# rest anywhere, up to half a patch past the border (as nnU-Net does; kept
# inside, patches would rarely reach the cerebellum and the temporal poles) -
# flips it on random axes and jitters each channel's intensity.
# `PatchDataset` is a `keras.utils.PyDataset`: Keras prepares batches in
# worker threads while the model trains on the previous one. Batch `i` of
# epoch `e` depends only on `(seed, e, i)`: runs are reproducible and a
# resumed run sees the batches it would have seen.

# %% alt="Four augmented training patches: FLAIR slices above, their labels over FLAIR in the course colours below."
sampler = PatchSampler(cache, train_ids, config.patch_shape, config.foreground_fraction, outputs=config.outputs)
demo = PatchDataset(sampler, batch_size=4, steps=4, seed=config.seed)
batches = [demo[i] for i in range(len(demo))]
print("batch:", batches[0][0].shape, batches[0][0].dtype, batches[0][1].shape, batches[0][1].dtype)
X = np.concatenate([b[0] for b in batches])
y = np.concatenate([b[1] for b in batches])
brain_share = np.any(X != 0, axis=-1).mean(axis=(1, 2, 3))   # patches may stick out of the brain, zero-padded
shown = np.argsort(-brain_share, kind="stable")[:4]
print(f"{len(X)} patches of the first {len(demo)} batches hold {brain_share.mean():.0%} brain on average "
      f"(the rest is the background around the brain or padding past the border); shown: the 4 with the most "
      f"brain ({', '.join(f'{brain_share[i]:.0%}' for i in shown)})")
X, y = X[shown], y[shown]

z = X.shape[3] // 2
fig, axes = plt.subplots(2, 4, figsize=(12, 6))
for i in range(4):
    axes[0, i].imshow(X[i, :, :, z, 0].T, cmap="gray", origin="lower")
    labels = probabilities_to_labels(y[i, :, :, z], output_kind=config.outputs)  # targets back to labels 0-3
    axes[1, i].imshow(X[i, :, :, z, 0].T, cmap="gray", origin="lower")
    axes[1, i].imshow(labels.T, cmap=label_colormap(alpha=0.6)[0], norm=label_colormap()[1],
                      origin="lower", interpolation="nearest")
for ax in axes.ravel():
    ax.set_axis_off()
axes[0, 0].set_title("FLAIR, augmented patches", loc="left")
axes[1, 0].set_title("their labels over FLAIR", loc="left")
label_legend(axes[1, 3])
fig.tight_layout()
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
# by default; the CPU preset pools the Dice over the batch, lesson 04) and the
# per-class Dice metrics, and fits it with:
#
# - validation on patches of the held-out cases after every epoch;
# - `last.keras` every epoch and `best.keras` at the best validation Dice
#   (`val_pooled_dice`, section 6 explains which Dice), each written to a
#   temporary file and renamed, so a crash never leaves a broken checkpoint;
# - `log.csv` (appended across resumed runs) and TensorBoard logs;
# - a cosine learning-rate schedule (a function of the epoch number, so it
#   continues correctly after a resume), optional early stopping;
# - on a GPU, mixed precision (float16 compute, float32 weights and loss);
#   with several GPUs or machines, a `tf.distribute` strategy (section 11).
#
# If the run folder already holds a finished run (you ran this lesson
# before), `train` trains nothing: it says so and reuses the run. Ask for
# more epochs (`OVERRIDES = {"epochs": ...}`) to continue it, or call
# `train(config, resume=False)` to start over (the old run is moved aside,
# not deleted).

# %%
result = train(config)
state = json.loads((result.output_dir / "state.json").read_text())
if result.initial_epoch >= config.epochs:
    print(f"reused the finished run in {result.output_dir}: {len(result.history)} epochs, "
          f"{state['seconds']:.0f} s of training in all")
else:
    print(f"trained epochs {result.initial_epoch + 1}..{len(result.history)} in {result.seconds:.0f} s "
          f"-> {result.output_dir}" + (f" ({state['seconds']:.0f} s of training over all sessions)"
                                       if result.initial_epoch else ""))
if "epoch_seconds" in result.history and result.history["epoch_seconds"].notna().all():
    per_step = result.history["epoch_seconds"] / config.steps_per_epoch   # validation included
    later = per_step.iloc[1:] if len(per_step) > 1 else per_step
    print(f"seconds per training step (the epoch's validation included): {per_step.sum() / len(per_step):.2f} "
          f"over the whole run, {later.median():.2f} after warm-up (median of epochs 2 on; epoch 1 also builds "
          f"the graph and starts the workers: {per_step.iloc[0]:.2f})")

# %% [markdown]
# ## 6. Learning curves, and which Dice to trust
#
# Keras reports the soft Dice metrics of lesson 04 as a **mean over
# patches**: one Dice per patch and class, then averaged. A validation patch
# often lacks a class - a patch of pure edema has no enhancing tumour. If
# the network predicts even a few voxels of that class there, the patch
# scores about 0 for it (the epsilon is tiny); if it predicts exactly
# nothing, about 1. So the mean per patch mixes real overlap with many
# near-0 and near-1 scores, and stays far below what the model achieves on
# whole cases.
#
# `best.keras` is chosen by a Dice that means what it says: `val_pooled_dice`
# (`utils.model.losses.PooledDice`) thresholds the prediction at 0.5 and adds up
# intersections and sizes over **all** validation patches of the epoch, as
# if they were one volume, before dividing. A class missing from a patch
# then adds its false positives and nothing else. Below, solid lines are
# pooled Dice, dotted lines the mean per patch; the dashed line marks the
# epoch of `best.keras`.

# %% alt="Learning curves: training and validation loss per epoch; validation Dice per class, pooled over patches (solid) and mean per patch (dotted), with the best.keras epoch marked."
history = result.history
best_epoch = int(history["val_pooled_dice"].idxmax()) + 1
fig = plot_learning_curves(history, config.loss, best_epoch)
plt.show()
at_best = history.iloc[best_epoch - 1]
below = int((history["val_loss"] < history["loss"]).sum())
print(f"validation loss below training loss in {below} of {len(history)} epochs" + (
    f": the training patches are augmented (flips, intensity jitter) and {config.foreground_fraction:.0%} of them "
    "are centred on tumour, the validation patches are not augmented and 50% are centred on tumour - an easier "
    "mix, not a sign that the model does better on unseen cases" if below > len(history) / 2 else ""))
channels = curve_channels(history)  # the classes, or the regions WT / TC / ET of a region-based run
pd.DataFrame({"mean per patch (soft)": [at_best[f"val_dice_{k}"] for k, _, _ in channels],
              "pooled over patches": [at_best[f"val_pooled_dice_{k}"] for k, _, _ in channels]},
             index=[name for _, name, _ in channels]).round(3).rename_axis(
                 f"validation Dice, epoch {best_epoch} (best.keras)")

# %% [markdown]
# ## 7. A prediction on a validation patch

# %% alt="A validation patch: FLAIR, ground truth and prediction of best.keras in the course colours."
best = utils.load_model(result.output_dir / "best.keras")  # on a machine without a GPU: in float32
val_sampler = PatchSampler(cache, val_ids, config.patch_shape, foreground_fraction=1.0, augment=False,
                           outputs=config.outputs)
Xv, yv = val_sampler.sample(np.random.default_rng(0))
pv = best.predict(Xv[None], verbose=0)[0]
z = int(np.argmax(yv.sum(axis=(0, 1, 3))))
fig, axes = plt.subplots(1, 3, figsize=(11, 3.8))
cmap, norm = label_colormap()
axes[0].imshow(Xv[:, :, z, 0].T, cmap="gray", origin="lower")
axes[0].set_title("FLAIR")
for ax, labels, title in ((axes[1], yv, "ground truth"), (axes[2], (pv > 0.5).astype(np.float32), "prediction")):
    merged = probabilities_to_labels(labels[:, :, z], output_kind=config.outputs)
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
# Patch scores depend on where the patches fall. The real test is a whole
# scan: lesson 06 explains the sliding-window prediction used here. The run
# folder's `plan.json`, written when training started, records what
# prediction needs to treat a scan as training did (channels, intensity
# scheme, crop margin, window, output kind) and the split; prediction reads
# it rather than today's defaults. Region Dice for whole tumour (WT), tumour
# core (TC) and enhancing tumour (ET), and the Dice of each class:

# %%
plan = read_plan(run_dir(config))
print(f"plan.json: {plan.intensity}, crop margin {plan.crop_margin}, window {plan.window}, "
      f"held-out cases {list(plan.validation_cases)}")
scores, predictions = evaluate_model(best, data_dir, plan.validation_cases, plan=plan, with_hd95=False,
                                     progress=False)
print(f"these scores: best.keras on each case cropped to the brain's bounding box + {plan.crop_margin} voxels "
      "(predict_case), sliding windows (50% overlap, Gaussian weights, no mirroring), threshold 0.5, no "
      "post-processing (lesson 06 keeps only the largest connected tumour, so its numbers differ)")
scores[["Dice WT", "Dice TC", "Dice ET", *[f"Dice {n}" for n in CLASS_NAMES], "Dice mean (classes)"]]

# %% [markdown]
# A mean over a handful of cases moves when one case changes, so read it
# with its spread: the standard deviation over the held-out cases. On real
# data a model scores the whole tumour best and the enhancing tumour worst
# (section 10); does yours?

# %%
regions = ["Dice WT", "Dice TC", "Dice ET"]
means = scores.loc["mean", regions]
per_case_sd = scores.drop(index=["mean", "median"])[regions].std(ddof=1)
print(f"{len(val_ids)} held-out case(s): " + ", ".join(
    f"{r} {means[r]:.3f}" + (f" (sd {per_case_sd[r]:.3f})" if len(val_ids) > 1 else "") for r in regions))
# BraTS scores a region that is empty in both the truth and the prediction 1, and 0 if only one has it:
# a case without enhancing tumour adds a 1 (or a 0) to the ET mean that says nothing about outlining it
per_case = scores.drop(index=["mean", "median"])
for r, values in (("Dice TC", (2, 3)), ("Dice ET", (3,))):
    present = [cid for cid, (truth, _) in predictions.items() if np.isin(truth, values).any()]
    if len(present) < len(per_case):
        print(f"{r}: {means[r]:.3f} over all {len(per_case)} cases (BraTS convention: a case without the region "
              f"scores 1 if the prediction has none either, else 0), "
              + (f"{per_case.loc[present, r].mean():.3f} over the {len(present)} case(s) that have it"
                 if present else "no case has it"))
ranking = " > ".join(r.split()[-1] for r in means.sort_values(ascending=False).index)
print(f"ranking, best first: {ranking}" + ("  (as on real data)" if ranking == "WT > TC > ET" else
                                           "  (real data: WT > TC > ET)"))

# %% [markdown]
# Where does the whole-tumour Dice go? Count the separate pieces of
# predicted tumour: a piece that touches no true tumour is a false positive
# wherever it lies (`lesion_wise_region`, the BraTS 2023 lesion matching of
# lesson 06).

# %%
pieces = {}
for case_id, (truth, pred) in predictions.items():
    wt = lesion_wise_region(truth > 0, pred > 0)
    pieces[case_id] = {"true lesions found": wt.n_tp, "missed": wt.n_fn, "false-positive pieces": wt.n_fp}
pieces = pd.DataFrame(pieces).T
print(f"{int(pieces['false-positive pieces'].sum())} predicted pieces in {len(pieces)} held-out cases touch no "
      f"true tumour; {int(pieces['missed'].sum())} true lesions were missed")
pieces

# %% [markdown]
# Each piece that touches no tumour adds to the prediction and nothing to
# the overlap: many of them pull the whole-tumour Dice down however well the
# tumour itself is outlined. Lesson 06 measures them with HD95 and removes
# them by keeping the largest connected tumour.

# %% [markdown]
# The three Dice of `best.keras`, mean of the three classes, side by side:

# %%
pd.Series({"validation patches, mean per patch (soft Dice)": at_best["val_dice_coefficient"],
           "validation patches, pooled (selects best.keras)": at_best["val_pooled_dice"],
           "whole held-out cases (mean over cases)": scores.loc["mean", "Dice mean (classes)"]},
          name="Dice, mean of classes").round(3).to_frame()

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
# `python -m utils.training.train --mode gpu` again.
#
# To see it without touching your run, we copy the run folder and ask the
# copy for one epoch more than it holds: the call resumes after the last
# epoch. (Your run stays as it is, so re-running this lesson gives the same
# answer.)

# %%
with tempfile.TemporaryDirectory() as scratch:
    copy = Path(scratch) / "run-copy"
    shutil.copytree(result.output_dir, copy)
    done = len(pd.read_csv(copy / "log.csv"))
    more = train(preset(mode, **dict(overrides, output_dir=str(copy), epochs=done + 1, verbose=0)))
    print(f"resumed after epoch {more.initial_epoch}; the copy's log now has {len(more.history)} epochs, "
          f"{result.output_dir} still has {len(pd.read_csv(result.output_dir / 'log.csv'))}")

# %% [markdown]
# ## 10. What to expect on a GPU
#
# In `gpu` mode (MSD data, the assignment's network, 160x160x16 patches,
# batch 4, 250 steps per epoch, mixed precision) the run is 100 epochs. What
# that costs on Colab's free GPU, a T4, follows from the network itself: the
# layer outputs one step keeps for backpropagation (float16 under mixed
# precision), the weights with their gradients and Adam's moments, and the
# floating-point operations of a step. Two numbers come from outside this
# lesson: how much memory training really holds beside those layer outputs,
# measured on a CPU by `benchmarks/bench_gpu_cost.py` (`TRAINING_HOLDS`), and
# the share of the T4's float16 peak a convolutional network sustains
# (`T4_UTILISATION`, from NVIDIA's published T4 figures).

# %%
gpu_preset = preset("gpu")
estimate = gpu_run_estimate(gpu_preset)
print(f"gpu preset: {estimate['parameters']:,} parameters, batch {gpu_preset.batch_size} x {gpu_preset.patch_shape}")
print(f"memory: {TRAINING_HOLDS} x {estimate['activation_bytes'] / 1e9:.2f} GB of float16 layer outputs "
      f"+ {estimate['parameter_bytes'] / 1e9:.2f} GB of parameters = {estimate['memory_bytes'] / 1e9:.1f} GB "
      f"of the T4's {T4_MEMORY_GB:.0f} GB ({estimate['memory_bytes'] / 1e9 / T4_MEMORY_GB:.0%})")
print(f"time: {estimate['step_flops'] / 1e12:.2f} TFLOP per step at {T4_UTILISATION:.0%} of "
      f"{T4_FP16_PEAK_TFLOPS:.0f} TFLOPS = {estimate['step_seconds']:.2f} s; {gpu_preset.epochs} epochs of "
      f"{gpu_preset.steps_per_epoch} steps (+ validation) = {estimate['hours']:.1f} h, "
      f"{2 * estimate['hours']:.1f} h at half that speed")

# %% [markdown]
# So the run needs about a sixth of the T4's memory, and 1.6 hours if the
# T4 sustains 15% of its peak, about 3 hours at half that: one long free
# session, if Colab grants its GPU that long (the free tier guarantees no GPU
# time, and a session ends after at most 12 hours). Plan for a cut session:
# the time section 5 prints after the first session, divided by the epochs
# done, tells you how many sessions the rest needs - which is why resume
# matters, and why a model trained on the GPU must also run on a CPU:
# `utils.load_model` rebuilds a mixed-precision model in float32 where no GPU
# is visible (lesson 06 uses it).
#
# Published 3D U-Nets trained this way on BraTS reach whole tumour Dice around 0.85-0.90, tumour core 0.75-0.85 and enhancing tumour
# 0.70-0.80 (nnU-Net, with 5x the training, about 0.91 / 0.85 / 0.80).
# The phantom is made hard on purpose, with the difficulties of real
# gliomas: enhancement that is thin, broken, weak in some tumours and absent
# in about a fifth of them, a core that in some cases hardly differs from
# edema, scanner differences, and unlabelled look-alikes that a model must
# learn to leave alone. Section 8 printed where this short run landed and
# whether it keeps the order of real data. The phantom is still one template
# brain: real data brings variation it lacks, so read section 8 as a
# rehearsal, not a forecast.

# %% [markdown]
# ## 11. Beyond one GPU
#
# Training is data parallel: every device (a *replica*) holds a copy of the
# model, trains on its own batch, and the replicas add up their gradients
# (an *all-reduce*) before each update, so the copies stay identical. A
# step then sees `batch_size x replicas` patches: more data per second, not
# a bigger model.
#
# - **Several GPUs in one machine**: `tf.distribute.MirroredStrategy`, one
#   process, one replica per GPU. `train` uses it by itself when it sees more
#   than one GPU.
# - **Several machines**: `tf.distribute.MultiWorkerMirroredStrategy`, one
#   process per machine (a *worker*). Each worker learns the cluster from the
#   `TF_CONFIG` environment variable: the list of workers (`host:port`) and
#   which one it is. Slurm job scripts and Kubernetes operators (Kubeflow's
#   TFJob) set it in every process; then each runs the same command,
#   `python -m utils.training.train --mode gpu`.
#
# What the course code does then (`utils.training.distribute`): `batch_size` is per
# replica; each replica draws its own batches of the same deterministic
# stream, so no two see the same patches and a resumed run continues it.
# Only the *chief* (worker 0) writes the run folder and its checkpoints; the
# other workers save into a temporary folder that they delete, because
# saving can need every worker. All workers must see the same run folder (a
# shared filesystem), and they check that they resume from the same epoch.
# The course's test starts two CPU workers on one machine and trains one run
# with them. Below: which strategy this session gets, and how a worker reads a
# two-machine `TF_CONFIG`.

# %%
print(f"this session: {gpu_count()} GPU, TF_CONFIG {'set' if current_cluster() else 'not set'} "
      f"-> strategy {strategy_kind(current_cluster(), gpu_count(), keras.backend.backend())!r}")
example = json.dumps({"cluster": {"worker": ["node1:12345", "node2:12345"]},
                      "task": {"type": "worker", "index": 1}})
cluster = parse_tf_config(example)
print(f"TF_CONFIG={example}\n-> {cluster.workers} workers, this is {cluster.name}, "
      f"chief: {cluster.is_chief}, strategy {strategy_kind(cluster, 0)!r}")

# %% [markdown]
# ## Summary
#
# - Preprocess once into a memory-mapped cache; sample patches from it with
#   foreground oversampling and augmentation, in parallel, deterministically.
# - Checkpoint atomically, log every epoch, and make the schedule a function
#   of the epoch: then a cut session simply resumes.
# - Judge the model on whole held-out cases, not on patches.
# - More GPUs or machines add replicas, each on its own batch; only the chief
#   writes the run.
#
# **Next:** lesson 06 predicts whole scans, exports NIfTI and evaluates with
# the BraTS metrics.
