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
# # Lesson 10 - Transfer learning: pretrain without labels, fine-tune with a few
#
# Labels are the expensive part of medical imaging: a radiologist outlines a
# brain tumour in 3-D in an hour or more, while scans pile up unlabelled. The
# MSD Task01 archive of lesson 05 holds 484 labelled training cases and 266
# unlabelled ones (`imagesTs`), and a hospital starting a new protocol has
# scans but few annotations. This lesson pretrains the course U-Net on
# unlabelled scans, fine-tunes it with 1, 2, 4 and 8 labelled cases, and
# measures whether that beats the same network trained from scratch.
#
# **You will learn to**
# - pretrain a whole 3-D U-Net without labels with a published pretext task,
#   Models Genesis's restoration of distorted patches, and write one of its
#   distortions (exercise 1, `shuffle_block`);
# - load someone else's weights into a network whose head differs: match
#   layers by name, see what Keras's `skip_mismatch` does, and check that the
#   weights really arrived;
# - run a fair label-efficiency experiment (same validation and held-out
#   cases, several seeds) and read its curve, including when pretraining
#   does not help.
#
# **Accelerator: CPU** (a GPU runs the larger budget of the gpu mode)
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
import re
import time
import warnings
from dataclasses import replace

import numpy as np
import pandas as pd
import matplotlib.pyplot as plt
import utils  # before keras: it keeps TensorFlow's start-up notices out of the lesson
import keras

from utils.course.checks import check_shuffle_block
from utils.config import course_mode, preset, pretrain_preset, transfer_budget
from utils.data.labels import MODALITIES, REGION_ORDER, class_colors
from utils.model.transfer import layer_weights, transfer_weights, weights_changed
from utils.model.unet import load_model
from utils.preprocessing.genesis import (distort, in_paint, local_pixel_shuffling, nonlinear_intensity, out_paint,
                                         to_unit)
from utils.training.finetune import efficiency_table, label_efficiency, label_efficiency_split, pretraining_gain
from utils.training.pretrain import load_unlabelled, pretrain, unlabelled_sources
from utils.training.train import build_model, prepare_data

# %% tags=["parameters"]
DATASET = "phantom"   # the labelled data: "phantom" or "msd" (lesson 05 downloads it)
SEED = 0              # the split of validation and held-out cases
DICE_TOLERANCE = 0.01  # a paired Dice difference smaller than this is "no clear difference"

# %% [markdown]
# ## 1. Why pretrain, and on what
#
# A network trained on 2 labelled scans has seen little brain; one trained
# first on many scans, even without labels, may already know what healthy
# tissue, ventricles and oedema-like bright regions look like, and need fewer
# labels to learn where tumours are. Two ways to use unlabelled scans:
#
# - **someone else's pretrained weights** (section 4): a network trained on
#   other data (often CT, often another task), loaded into yours;
# - **self-supervised pretraining** on your own unlabelled scans: a *pretext
#   task* whose answer comes from the image itself.
#
# This lesson follows **Models Genesis** (Zhou et al., MICCAI 2019; Medical
# Image Analysis 2021), whose pretext task trains the *whole* U-Net, decoder
# included: a patch is distorted and the network restores the original, voxel
# by voxel (mean squared error). Its four distortions, as its authors' code
# defines them:
#
# - **non-linear intensity transform**: every intensity goes through a random
#   monotonic Bézier curve (increasing, or half of the time decreasing): to
#   undo it the network must know what each tissue should look like;
# - **local pixel shuffling**: voxels are shuffled within many small blocks
#   (up to a tenth of the patch per axis): texture goes, shapes stay;
# - **in-painting**: up to five boxes replaced by noise; **out-painting**:
#   everything replaced by noise except a few windows: the network infers
#   what it cannot see from the context.
#
# Models Genesis works on single-channel CT in [0, 1]. Here each patch has
# four MRI channels of z-scores: each channel is scaled to [0, 1], distorted as
# its own image and scaled back (`utils.preprocessing.genesis`), and the head is
# linear (z-scores are not in [0, 1]).
#
# The unlabelled scans: the dataset's `imagesTs` (the phantom has 2 such
# cases) plus, for the phantom, extra cases generated *without* labels
# (`utils.training.pretrain.unlabelled_sources`). No label file is ever opened
# (a test of the package proves it).

# %% tags=["run-config"]
mode = course_mode()
budget = transfer_budget()
pre_config = pretrain_preset()
print(f"mode {mode}: pretraining run folder {pre_config.output_dir} (under the data folder)")

# %%
sources = unlabelled_sources(pre_config, progress=False)
print(f"mode {mode}: {len(sources)} unlabelled volumes for pretraining: "
      + ", ".join(f"{folder.name}/{case}" for folder, case in sources))

# %% [markdown]
# ## 2. The distortions, on one patch
#
# One patch of the first unlabelled volume, the FLAIR channel on its middle
# slice: the original, each distortion alone, and a draw of the full recipe
# (each distortion applied with Models Genesis's probability).

# %% alt="One FLAIR slice of an unlabelled patch and the Models Genesis distortions of it: non-linear intensity curve, local pixel shuffling, in-painting, out-painting and the combined input the network restores."
volume = load_unlabelled(*sources[0])
patch_shape = np.array(pre_config.patch_shape)
corner = (np.array(volume.shape[:3]) - patch_shape) // 2
patch = np.asarray(volume[tuple(slice(c, c + p) for c, p in zip(corner, patch_shape))], np.float32)
unit, low, span = to_unit(patch)
rng = np.random.default_rng(SEED)
views = {
    "original": patch,
    "local pixel shuffling": local_pixel_shuffling(unit, rng) * span + low,
    "non-linear intensity": nonlinear_intensity(unit, rng) * span + low,
    "in-painting": in_paint(unit, rng) * span + low,
    "out-painting": out_paint(unit, rng) * span + low,
}
combined, applied = distort(patch, np.random.default_rng(SEED + 1), pre_config)
views["recipe: " + " + ".join(applied)] = combined
z = patch.shape[2] // 2
fig, axes = plt.subplots(1, len(views), figsize=(2.6 * len(views), 3))
for ax, (name, view) in zip(axes, views.items()):
    ax.imshow(view[:, :, z, 0].T, cmap="gray", origin="lower", vmin=patch[..., 0].min(), vmax=patch[..., 0].max())
    ax.set_title(name.replace(" + ", "\n+ "), fontsize=8)
    ax.axis("off")
fig.suptitle(f"Models Genesis distortions of a {pre_config.patch_shape} patch ({MODALITIES[0]}, slice z={z})")
plt.tight_layout()
plt.show()

# %% [markdown]
# ### Exercise 1: `shuffle_block`
#
# Write one block of local pixel shuffling. Return a **copy** of `patch`
# `(x, y, z, C)` in which the voxels of the block
# `patch[x0:x0+bx, y0:y0+by, z0:z0+bz]` are shuffled, **each channel with its
# own random order** (each channel is its own image, as Models Genesis's CT);
# everything outside the block is unchanged, the input is not modified, and
# the order comes from `np.random.default_rng(seed)`: the same seed gives the
# same result.
#
# Expected: outside the block, `result == patch`; inside it, each channel holds
# the same values as before in another order; `shuffle_block(p, s, n, 7)`
# twice gives the same array, with seed 8 another.

# %%
def shuffle_block(patch, start, size, seed):
    """Shuffle the voxels of one block of a patch, each channel on its own.

    Args:
        patch: array (x, y, z, C).
        start: the block's corner (x0, y0, z0).
        size: the block's size (bx, by, bz).
        seed: seed of the random order.

    Returns:
        A new array like patch, its block shuffled per channel.
    """
    ### BEGIN SOLUTION
    # Hint: rng = np.random.default_rng(seed); out = patch.copy()
    # Hint: block.reshape(-1, C) has one row per voxel; rng.permuted(..., axis=0) shuffles each column on its own
    rng = np.random.default_rng(seed)
    window = tuple(slice(s, s + n) for s, n in zip(start, size))
    out = np.array(patch, copy=True)
    block = patch[window]
    voxels = block.reshape(-1, block.shape[-1])
    out[window] = rng.permuted(voxels, axis=0).reshape(block.shape)
    return out
    ### END SOLUTION

# %% tags=["check"]
check_shuffle_block(shuffle_block)

# %% [markdown]
# `utils.training.pretrain` shuffles many such blocks per patch with the
# package's `utils.shuffle_block` logic (`local_pixel_shuffling`: Models
# Genesis's density, 10 000 blocks per 64x64x32 cube, scaled to the patch).
#
# ## 3. Pretraining
#
# `pretrain(config)` (or `python -m utils.training.pretrain --mode cpu` with the
# same parameters) trains the restoration U-Net: the course U-Net of the
# mode (same depth, filters and normalization as the fine-tuned one) with a
# 4-channel linear head named `restoration`. Its run folder is resumable like
# lesson 05's: run the cell again and it continues, or reuses a finished run.
# The last unlabelled volume is kept aside to measure the restoration on a
# scan it never trained on (`val_loss`).

# %%
print(f"pretraining: {pre_config.epochs} epochs x {pre_config.steps_per_epoch} steps of {pre_config.batch_size} "
      f"patches {pre_config.patch_shape}, U-Net depth {pre_config.depth}, {pre_config.base_filters} base filters")
pretrained = pretrain(pre_config, progress=False)
pretrain_seconds = pretrained.total_seconds
log = pretrained.history
print(f"pretraining took {pretrain_seconds:.0f} s of training; val_loss (MSE of the restoration, in z-score units²) "
      f"{log['val_loss'].iloc[0]:.3f} after epoch 1, {log['val_loss'].min():.3f} at best")

# %% alt="Left, the restoration loss per epoch (training and validation); right, one slice of a distorted patch, the pretrained network's restoration and the original."
# the patch of section 2, distorted by a new draw of the recipe, and what the pretrained network makes of it
restored_input, _ = distort(patch, np.random.default_rng(SEED + 5), pre_config)
original = patch
restored = load_model(pretrained.output_dir / "best.keras", compile=False).predict(restored_input[None], verbose=0)[0]
fig, axes = plt.subplots(1, 4, figsize=(13, 3.2))
axes[0].plot(log["epoch"] + 1, log["loss"], label="training")
axes[0].plot(log["epoch"] + 1, log["val_loss"], label="validation (unseen volume)")
axes[0].set(xlabel="epoch", ylabel="MSE", title="restoration loss")
axes[0].legend()
for ax, (name, view) in zip(axes[1:], (("distorted input", restored_input), ("restored", restored),
                                        ("original", original))):
    ax.imshow(view[:, :, z, 0].T, cmap="gray", origin="lower", vmin=original[..., 0].min(),
              vmax=original[..., 0].max())
    ax.set_title(name)
    ax.axis("off")
plt.tight_layout()
plt.show()
error = {name: float(np.mean((view - original) ** 2)) for name, view in (("input", restored_input), ("restored", restored))}
print(f"on this patch: MSE of the distorted input {error['input']:.3f}, of the restoration {error['restored']:.3f} "
      f"({'better' if error['restored'] < error['input'] else 'not better'} than the input)")

# %% [markdown]
# ## 4. Loading weights into a network whose head differs
#
# The segmentation U-Net ends in `probabilities` (3 sigmoid channels); the
# pretrained one in `restoration` (4 linear channels). Every other layer has
# the same name and the same weight shapes, because both come from the same
# builder (`utils.model.unet.build_unet`). `transfer_weights(model, source)`
# copies the weights of every layer whose name and shapes agree and returns
# what arrived and what was skipped; `weights_changed` proves it: a layer that
# arrived has new weights, equal to the source's.

# %%
seg_config = preset(patch_shape=budget.patch_shape, batch_size=budget.batch_size, depth=pre_config.depth,
                    base_filters=pre_config.base_filters, normalization=pre_config.normalization,
                    epochs=budget.epochs, steps_per_epoch=budget.steps_per_epoch,
                    validation_steps=budget.validation_steps, learning_rate=budget.learning_rate)
model = build_model(seg_config)
before = layer_weights(model)
report = transfer_weights(model, pretrained.output_dir / "best.keras")
print(report["status"].value_counts().to_string())
print(report[report["status"] != "loaded"].to_string(index=False))
proof = weights_changed(before, model, pretrained.output_dir / "best.keras")
arrived = proof[proof["equals_source"] == True]  # noqa: E712 - None for the head
print(f"{len(arrived)} of {len(proof)} layers with weights now equal the pretrained ones "
      f"({int(proof['changed'].sum())} changed); the new head: "
      + ", ".join(f"{r.layer} changed={r.changed}" for r in proof.itertuples() if r.equals_source is not True))

# %% [markdown]
# **Keras's own loader.** `model.load_weights("x.weights.h5", skip_mismatch=True)`
# matches layers **by position**, not by name: a Keras 3 weights file keys each
# layer by its class and index (`layers/conv3d_5`), and `skip_mismatch=True`
# skips, with a warning, a layer whose number or shapes of weights differ.
# That is right here because the two networks have the same layers in the
# same order; after adding or removing a layer, positions shift and names are
# the safer key (a `.keras` archive stores the names). Both ways, compare:

# %%
h5 = pretrained.output_dir / "restoration.weights.h5"
load_model(pretrained.output_dir / "best.keras", compile=False).save_weights(h5)
by_position = build_model(seg_config)
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    by_position.load_weights(h5, skip_mismatch=True)
skipped = sorted(set(re.findall(r"<\w+ name=(\w+)", " ".join(str(w.message) for w in caught))))
same = [name for name, values in layer_weights(by_position).items()
        if all(np.array_equal(a, b) for a, b in zip(values, layer_weights(model)[name]))]
print(f"load_weights(skip_mismatch=True) warned about: {', '.join(skipped) or 'no named layer'}; "
      f"{len(same)} of {len(proof)} layers equal the by-name transfer "
      f"({'the same layers arrived' if len(same) == len(arrived) else 'they differ'})")

# %% [markdown]
# **Pretrained weights you can download** (this lesson downloads nothing):
# Models Genesis's own (3-D U-Net on chest CT, Keras and PyTorch, one input
# channel); MONAI's model zoo (`brats_mri_segmentation`: a SegResNet trained on
# BraTS, PyTorch); the BraTS winners' published nnU-Net checkpoints (PyTorch).
# Converting one to Keras means: rebuilding its architecture layer for layer,
# mapping names, transposing each kernel (PyTorch stores `(out, in, d, h, w)`,
# Keras `(d, h, w, in, out)`), matching the normalization layers and their
# statistics, the input channels (one CT channel vs four MRI ones: repeat or
# average the first convolution's kernel) and the intensity preprocessing
# they were trained with - then checking, as above, that every weight arrived.
#
# ## 5. Fine-tuning with 1, 2, 4 and 8 labelled cases
#
# The experiment (`utils.training.finetune.label_efficiency`): fixed
# validation and held-out cases; for each number of labelled cases and each
# seed, the seed draws which training cases (the first *n* of a random order,
# so more labels add cases) and the network's initial weights; then the same
# U-Net is trained twice with the same budget, **from scratch** and **from the
# pretrained weights** (a new head, the rest copied, a lower learning rate),
# and both are scored on the held-out cases (Dice of WT, TC, ET).
#
# Scoring costs: the brain of a 240x240x155 phantom scan (about 145x181x155
# voxels) is 150 windows of 32 voxels, for each held-out case after each of
# the 16 runs. So in the cpu (and ci) mode each held-out case is scored on its
# tumour's bounding box plus a margin (`score_margin` voxels per side, a few
# dozen windows), cut once for all runs, and the time saved goes to training.
# The Dice is then "around the tumour": a false positive farther than the
# margin from it does not count, so these numbers are at least as high as
# whole-scan ones (every tumour voxel is inside the region; only false
# positives drop out); both arms are scored on the same regions, so the
# comparison stays fair. The gpu mode scores the whole brain.

# %%
data_dir, cache, train_ids, val_ids = prepare_data(replace(seg_config, dataset=DATASET), progress=False)
split = label_efficiency_split(train_ids + val_ids, budget.validation_cases, budget.held_out_cases, seed=SEED)
sizes = [n for n in budget.sizes if n <= len(split["pool"])]
print(f"{len(split['pool'])} cases to draw training cases from; validation {split['validation']}; "
      f"held out {split['held_out']}")
print(f"each run: {budget.epochs} epochs x {budget.steps_per_epoch} steps of {budget.batch_size} patches "
      f"{budget.patch_shape}; learning rate {budget.learning_rate} from scratch, "
      f"{budget.finetune_learning_rate} fine-tuning; n = {sizes}, seeds {list(budget.seeds)}")
print("held-out Dice scored on " + ("the whole brain" if budget.score_margin is None else
      f"each case's tumour bounding box + {budget.score_margin} voxels per side"))
start = time.perf_counter()
scores, curves = label_efficiency(seg_config, data_dir, cache, split, pretrained.output_dir / "best.keras",
                                  sizes=sizes, seeds=budget.seeds,
                                  finetune_learning_rate=budget.finetune_learning_rate, overlap=budget.overlap,
                                  score_margin=budget.score_margin)
finetune_seconds = time.perf_counter() - start

# %% [markdown]
# The label-efficiency table: held-out Dice per region, mean and sd over the
# held-out cases and the seeds, for each number of labelled cases. And the
# training times:

# %%
table = efficiency_table(scores)
print(table.to_string())
runs = scores.drop_duplicates(["arm", "n", "seed"])
times = runs.groupby(["n", "arm"])["seconds"].mean().unstack("arm").round(1)
print(f"\ntraining seconds per run, mean over {len(budget.seeds)} seed(s) (the first run of each arm also traces "
      f"the network's steps); pretraining {pretrain_seconds:.0f} s, all {len(runs)} fine-tuning runs with their "
      f"evaluation {finetune_seconds:.0f} s")
print(times.to_string())

# %% alt="Held-out Dice of each region against the number of labelled training cases, pretrained (solid) and from scratch (dashed), with the spread over cases and seeds."
fig, axes = plt.subplots(1, 3, figsize=(13, 3.6), sharey=True)
for ax, region, color in zip(axes, REGION_ORDER, class_colors()):
    for arm, style in (("pretrained", "-o"), ("scratch", "--s")):
        part = table.xs(arm, level="arm")
        ax.errorbar(part.index, part[(region, "mean")], yerr=part[(region, "sd")].fillna(0), fmt=style,
                    color=color, alpha=1.0 if arm == "pretrained" else 0.6, capsize=3, label=arm)
    ax.set(xscale="log", xticks=sizes, xticklabels=sizes, xlabel="labelled training cases", title=region)
    ax.minorticks_off()  # only the numbers of cases tried on the log axis
    ax.legend()
axes[0].set_ylabel("held-out Dice (mean ± sd)")
fig.suptitle("Label efficiency: pretrained vs from scratch (colours: the class at each region's border)")
plt.tight_layout()
plt.show()

# %% [markdown]
# Learning curves: the validation Dice (pooled over the validation patches)
# per epoch, mean over seeds. If pretraining speeds up convergence, the solid
# curves rise earlier than the dashed ones.

# %% alt="Validation pooled Dice and validation loss per epoch, mean over seeds, for each number of labelled cases, pretrained (solid) and from scratch (dashed)."
mean_curves = curves.groupby(["arm", "n", "epoch"])[["val_pooled_dice", "val_loss"]].mean().reset_index()
fig, axes = plt.subplots(1, 2, figsize=(12, 3.6))
shades = plt.cm.viridis(np.linspace(0, 0.85, len(sizes)))
for n, shade in zip(sizes, shades):
    for arm, style in (("pretrained", "-"), ("scratch", "--")):
        part = mean_curves[(mean_curves["n"] == n) & (mean_curves["arm"] == arm)]
        axes[0].plot(part["epoch"], part["val_pooled_dice"], style, color=shade, label=f"{arm}, n={n}")
        axes[1].plot(part["epoch"], part["val_loss"], style, color=shade)
axes[0].set(xlabel="epoch", ylabel="validation pooled Dice", title="learning curves (solid: pretrained)")
axes[1].set(xlabel="epoch", ylabel="validation loss")
axes[0].legend(fontsize=7, ncol=2)
plt.tight_layout()
plt.show()

# %% [markdown]
# ## 6. What the numbers say
#
# The verdicts below are computed from the scores, pair by pair: for each
# number of labelled cases and region, the pretrained Dice minus the scratch
# one on the same seed and held-out case, its mean with a bootstrap interval
# (the paired statistics of lessons 07 and 09), and in how many pairs
# pretraining won. A difference counts only when its interval excludes 0 and
# it is larger than a hundredth of Dice.

# %%
gain = pretraining_gain(scores, tolerance=DICE_TOLERANCE)
for row in gain.itertuples():
    print(f"n={row.n} {row.region}: gain {row.gain:+.3f} [{row.low:+.3f}, {row.high:+.3f}] "
          f"(pretrained won {row.wins} of {row.pairs} pairs) - {row.verdict}")
helped = gain[gain["verdict"].str.startswith("pretrained better")]
hurt = gain[gain["verdict"].str.startswith("scratch better")]
print(f"\nPretraining helped in {len(helped)} of {len(gain)} (n, region) cells"
      + (f" (n = {sorted(set(helped['n']))})" if len(helped) else "")
      + f" and hurt in {len(hurt)}" + (f" (n = {sorted(set(hurt['n']))})" if len(hurt) else "") + "; "
      f"the rest show no difference these {int(gain['pairs'].max())} pairs support.")
first = mean_curves[mean_curves["epoch"] == 1].groupby("arm")["val_pooled_dice"].mean()
start_gap = first["pretrained"] - first["scratch"]
start_verdict = ("pretraining started faster" if start_gap > 0.01 else "pretraining started slower" if start_gap < -0.01
                 else "no difference in the start")
print(f"after one epoch the validation Dice (mean over n and seeds) was {first['pretrained']:.3f} pretrained vs "
      f"{first['scratch']:.3f} from scratch: {start_verdict}")

# %% [markdown]
# **How far to trust this.** The budgets are small on purpose, so that the
# cpu mode runs in about ten minutes on two CPU cores: pretraining sees a few
# hundred 32-voxel patches (8 x 20 steps of 2), each fine-tuning run 6 x 20
# steps of 2 patches (about a fifteenth of the voxels lesson 05's cpu run trains on), four
# held-out cases scored around their tumours, two seeds (so each verdict's
# pairs count every case twice, and its interval is narrower than that of as
# many independent cases); in ci mode
# everything is tiny and the numbers mean nothing. Models
# Genesis pretrained for days on hundreds of CT scans, and its gains were
# largest with few labels and a target task close to the pretraining data.
# With a small budget, pretraining can also *hurt* (the pretrained features
# may fit restoration, not segmentation, and a lower learning rate moves them
# slowly) - which is why the table, not a belief, decides. On a GPU
# (`COURSE_MODE=gpu`, or Colab) the gpu budget pretrains for 100 x 200 steps
# on 64x64x32 cubes and fine-tunes for 20 x 50 steps, three seeds; on the MSD
# data (`DATASET = "msd"`, `pretrain_preset(dataset="msd")`), the 266
# `imagesTs` scans are the unlabelled set.
#
# **Next steps.** Freeze the encoder for the first epochs (then unfreeze at a
# lower learning rate), pretrain longer, or try another pretext task (masked
# image modelling, contrastive learning) with the same experiment.
