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
# # Lesson 02 - Patches and standardization
#
# A whole MRI volume does not fit through a 3D U-Net on a 16 GB GPU such as
# Colab's T4, and its raw intensities mean different things from scanner to scanner. We fix both:
# we train on **patches** and feed the network **standardized** intensities.
#
# **You will learn to**
# - work out the memory a 3D U-Net needs for a whole volume and for a patch;
# - cut a random patch that actually contains tumour (exercise 1, `get_sub_volume`);
# - standardize intensities per channel and slice (exercise 2, `standardize`);
# - compare this with the brain-mask standardization and the foreground
#   oversampling that nnU-Net and MONAI use today.
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

import utils
from utils import get_dataset, get_settings, list_cases, load_case
from utils.data.datasets import dataset_volume_table
from utils.course.checks import check_get_sub_volume, check_standardize
from utils.data.labels import CLASS_NAMES, MODALITIES
from utils.preprocessing.transforms import compare_samplers, sample_foreground_patch, standardize_nonzero
from utils.visualization.figures import label_colormap, label_legend

# %% tags=["parameters"]
DATASET = "phantom"     # "phantom" or "msd"
CASE = None             # a case id (e.g. "PHANTOM_003"); None: the largest tumour of the first 20 cases
N_PATCHES = 40          # patches drawn per sampler in section 5
SEED = 0

# %%
settings = get_settings()
PATCH = settings.patch_shape  # (160, 160, 16) as in the original assignment; smaller in CI mode
data_dir = get_dataset(DATASET)
case_ids = list_cases(data_dir)
if CASE is None:  # the assignment's patches need 5% tumour: take a case with plenty of it
    volumes = dataset_volume_table(data_dir, case_ids[:20]).drop(index=["mean", "median"])
    CASE = volumes["Whole tumour"].idxmax()
case = load_case(data_dir, CASE)
image, label = case.image, case.label
print(f"mode {settings.mode}: case {case.case_id}, image {image.shape}, patch {PATCH}, "
      f"whole tumour {int((label > 0).sum()):,} voxels ({(label > 0).sum() / np.prod(PATCH):.0%} of a patch)")

# %% [markdown]
# ## 1. Why patches?
#
# Training keeps every intermediate feature map of the forward pass in memory
# for the backward pass. Take the course's 3D U-Net (lesson 03): depth 4, that
# is four resolution levels and three poolings, with 32 filters at the first
# level, doubling at each level down to 256 at the bottom. Per level it keeps
# two convolution outputs and their two ReLU outputs and, above the bottom,
# the pooled map on the way down and, on the way up, the up-sampled map, the
# concatenation with the skip and two more convolutions with their ReLUs; add
# the input and the output. Let's count those floats for one whole
# 240x240x155 volume and for one 160x160x16 patch.

# %%
def unet_activation_gb(shape, depth=4, base_filters=32, channels=4, n_labels=3, bytes_per_value=4):
    """Rough memory of the layer outputs a 3D U-Net keeps for backpropagation.

    ``depth`` counts resolution levels, as in ``utils.build_unet``: ``depth - 1`` poolings.
    """
    voxels = np.prod(shape)
    total = voxels * (channels + n_labels)     # input and output
    for level in range(depth):
        n = voxels / 8 ** level                # each pooling halves every axis
        f = base_filters * 2 ** level
        total += 2 * 2 * n * f                 # two convolutions + ReLUs on the way down (or at the bottom)
        if level < depth - 1:
            total += n / 8 * f                 # the pooled map
            total += n * f + n * 2 * f + 2 * 2 * n * f  # up-sampled, concatenated, two convolutions + ReLUs
    return total * bytes_per_value / 1e9


memory = pd.DataFrame({
    "input": ["whole volume 240x240x155x4", "patch 160x160x16x4"],
    "input MB": [240 * 240 * 155 * 4 * 4 / 1e6, 160 * 160 * 16 * 4 * 4 / 1e6],
    "feature maps GB (batch 1)": [unet_activation_gb((240, 240, 155)), unet_activation_gb((160, 160, 16))],
}).set_index("input")
volume_gb, patch_gb = memory["feature maps GB (batch 1)"]
print(f"feature maps for one sample: whole volume {volume_gb:.1f} GB, patch {patch_gb * 1000:.0f} MB")
memory.round(2)

# %% [markdown]
# A whole volume needs more feature-map memory for a single sample than a
# 16 GB Colab T4 holds, before adding the weights, their gradients, the
# optimizer state and the convolution workspace; a patch needs under 1 GB -
# the same count lesson 03 takes layer by layer from the built network.
# Patches also give many different training samples per case. The price: the
# network sees less context, and at prediction time we must stitch patch
# predictions back together (lesson 06).
#
# ## 2. Exercise 1: `get_sub_volume`
#
# Most of a volume is healthy brain or empty space. A patch drawn anywhere is
# almost all background, with little or no tumour, and teaches the network
# little, so the original assignment keeps drawing until a patch holds enough
# tumour:
#
# 1. draw a corner `(start_x, start_y, start_z)` uniformly, so that the patch
#    stays inside the volume: `start_x` is one of `0 .. orig_x - output_x`
#    (**both ends included**: `np.random.randint(0, orig_x - output_x + 1)`);
# 2. cut `X = image[start_x:start_x + output_x, ..., :]` (all channels) and the
#    same window of `label`;
# 3. one-hot encode the label window into `num_classes` channels, channel k
#    being 1 where the label is k (`np.eye(num_classes)[label_window]` or a
#    comparison with `np.arange(num_classes)`): the number of channels
#    comes from `num_classes`, never from the labels, since a patch may well
#    lack a class;
# 4. the background share is the mean of channel 0; if it is **below**
#    `background_threshold`, return `X` and the one-hot labels **without the
#    background channel**, `y[..., 1:]`;
# 5. after `max_tries` draws without success, raise a `ValueError` that says so.
#
# Shapes are channels-last: `X` is `(output_x, output_y, output_z, 4)` and `y`
# is `(output_x, output_y, output_z, 3)`.

# %%
def get_sub_volume(image, label, orig_x=240, orig_y=240, orig_z=155, output_x=160, output_y=160,
                   output_z=16, num_classes=4, max_tries=1000, background_threshold=0.95):
    """Extract a random sub-volume that is not mostly background.

    Args:
        image: (orig_x, orig_y, orig_z, channels) array.
        label: (orig_x, orig_y, orig_z) integer labels 0..num_classes-1.
        orig_x, orig_y, orig_z: size of the volume.
        output_x, output_y, output_z: size of the patch.
        num_classes: number of labels, background included.
        max_tries: draws before giving up.
        background_threshold: accept a patch whose background share is below this.

    Returns:
        X: (output_x, output_y, output_z, channels) patch of the image.
        y: (output_x, output_y, output_z, num_classes - 1) one-hot labels, background dropped.
    """
    ### BEGIN SOLUTION
    # Hint: np.random.randint(low, high) excludes high.
    # Hint: (label_patch[..., None] == np.arange(num_classes)) one-hot encodes.
    for _ in range(max_tries):
        start_x = np.random.randint(0, orig_x - output_x + 1)
        start_y = np.random.randint(0, orig_y - output_y + 1)
        start_z = np.random.randint(0, orig_z - output_z + 1)
        window = (slice(start_x, start_x + output_x),
                  slice(start_y, start_y + output_y),
                  slice(start_z, start_z + output_z))
        y = (label[window][..., None] == np.arange(num_classes)).astype(np.float32)
        if y[..., 0].mean() < background_threshold:
            X = np.array(image[window], dtype=np.float32)
            return X, y[..., 1:]
    raise ValueError(f"no patch with background below {background_threshold} in {max_tries} tries")
    ### END SOLUTION

# %% tags=["check"]
check_get_sub_volume(get_sub_volume)

# %% [markdown]
# From here on the lesson uses the tested reference, `utils.get_sub_volume`,
# so it runs even if your version is unfinished. It does the same and also
# rejects bad input with a clear message (a patch larger than the volume,
# mismatched shapes, labels outside `0..num_classes-1`, NaN in the image).

# %%
np.random.seed(SEED)
X, y = utils.get_sub_volume(image, label, *image.shape[:3], *PATCH)
print("X:", X.shape, " y:", y.shape)
print("share of each class in the patch:",
      {name: f"{share:.1%}" for name, share in zip(CLASS_NAMES, y.mean(axis=(0, 1, 2)))})

# %% alt="Four sequences of a training patch (FLAIR, T1w, T1gd, T2w) and its labels over FLAIR in the course colours."
def show_patch(X, y, title, z=None):
    """Each sequence of a patch, and its labels, at slice z."""
    z = X.shape[2] // 2 if z is None else z
    label_map = np.where(y.any(axis=-1), y.argmax(axis=-1) + 1, 0)
    cmap, norm = label_colormap()
    fig, axes = plt.subplots(1, 5, figsize=(15, 3.2))
    for c, name in enumerate(MODALITIES):
        axes[c].imshow(X[:, :, z, c].T, cmap="gray", origin="lower")
        axes[c].set_title(name)
    axes[4].imshow(X[:, :, z, 0].T, cmap="gray", origin="lower")
    axes[4].imshow(label_map[:, :, z].T, cmap=cmap, norm=norm, alpha=0.5, origin="lower",
                   interpolation="nearest")
    axes[4].set_title("labels")
    label_legend(axes[4])
    for ax in axes:
        ax.set_axis_off()
    fig.suptitle(title)
    fig.tight_layout()
    plt.show()


show_patch(X, y, f"a {PATCH} patch, middle slice")

# %% [markdown]
# ## 3. Exercise 2: `standardize`
#
# Raw MRI intensities have no unit: the same tissue reads 400 on one scanner
# and 1200 on another. Networks train best on inputs of a fixed scale, so the
# assignment standardizes each **channel** of each **z-slice** of a patch:
#
# $$x' = \frac{x - \mu_{c,z}}{\sigma_{c,z}}$$
#
# with $\mu_{c,z}$ and $\sigma_{c,z}$ the mean and the **population** standard
# deviation (`np.std`'s default, ddof=0) of that slice. A slice with
# $\sigma = 0$ (all one value, e.g. empty space) cannot be divided: leave it
# at 0, without a warning or NaN. The real files store `int16`: return a
# float array (an output that keeps the input's integer dtype cuts every
# standardized value to a whole number), and leave the input unchanged.
#
# Vectorize: `image.mean(axis=(0, 1), keepdims=True)` gives all the slice
# means at once, shape `(1, 1, z, C)`, and broadcasting does the rest. No loop
# over slices or channels is needed, and none over voxels ever is.

# %%
def standardize(image):
    """Standardize each channel of each z-slice to mean 0 and std 1.

    Args:
        image: (x, y, z, channels) array.

    Returns:
        float32 array of the same shape; zero-variance slices are all 0.
    """
    ### BEGIN SOLUTION
    # Hint: np.divide(a, b, out=np.zeros_like(a), where=b > 0) divides only where b > 0.
    image = np.asarray(image, dtype=np.float32)
    mean = image.mean(axis=(0, 1), keepdims=True)
    std = image.std(axis=(0, 1), keepdims=True)
    centred = image - mean
    return np.divide(centred, std, out=np.zeros_like(centred), where=std > 0)
    ### END SOLUTION

# %% tags=["check"]
check_standardize(standardize)

# %% [markdown]
# What standardization does to the patch: every sequence now lives on the same
# scale, centred on 0.

# %% alt="Histograms of each sequence's intensities in the patch, raw (top row) and standardized (bottom row)."
X_std = utils.standardize(X)
fig, axes = plt.subplots(2, 4, figsize=(14, 5))
for c, name in enumerate(MODALITIES):
    axes[0, c].hist(X[..., c].ravel(), bins=60, color="0.4")
    axes[0, c].set_title(f"{name} raw")
    axes[1, c].hist(X_std[..., c].ravel(), bins=60, color="tab:blue")
    axes[1, c].set_title(f"{name} standardized")
for ax in axes[0]:
    ax.set_xlabel("raw intensity")
for ax in axes[1]:
    ax.set_xlabel("standardized intensity (sd)")
for ax in axes[:, 0]:
    ax.set_ylabel("voxels")
for ax in axes.ravel():
    ax.set_yticks([])
fig.tight_layout()
plt.show()
# + 0.0 turns a rounded -0.0 into 0.0
print("per-slice mean of channel 0:", np.round(X_std[..., 0].mean(axis=(0, 1)), 3)[:6] + 0.0, "...")
print("per-slice std of channel 0: ", np.round(X_std[..., 0].std(axis=(0, 1)), 3)[:6] + 0.0, "...")

# %% [markdown]
# ## 4. Better on skull-stripped data: standardize over the brain
#
# Look at the histograms again: a tall spike sits at the value the empty
# space outside the brain maps to. Per-slice statistics mix the brain with
# that empty space, so:
#
# - the same tissue gets a different value in every slice (a slice through
#   the top of the head is mostly empty, its mean is near 0 and its brain
#   voxels are blown up);
# - the background becomes a negative number the network has to learn to ignore.
#
# nnU-Net and MONAI (`NormalizeIntensity(nonzero=True, channel_wise=True)`)
# take the mean and standard deviation of each channel **over the brain
# voxels of the whole volume** and leave the background at 0. In the course
# we use `utils.standardize_nonzero` for training (lesson 05).

# %% alt="Log-scale FLAIR histograms of a whole case standardized per z-slice and over the brain, all voxels against brain voxels."
full_slice = utils.standardize(image)
full_brain = standardize_nonzero(image)
brain = np.any(image != 0, axis=-1)
healthy = brain & (label == 0)

fig, axes = plt.subplots(1, 2, figsize=(12, 3.5), sharey=True)
for ax, data, title in ((axes[0], full_slice, "per channel and z-slice (assignment)"),
                        (axes[1], full_brain, "per channel over the brain (nnU-Net / MONAI)")):
    ax.hist(data[..., 0].ravel(), bins=120, range=(-5, 8), color="0.6", label="all voxels")
    ax.hist(data[..., 0][brain], bins=120, range=(-5, 8), color="tab:blue", alpha=0.7, label="brain")
    ax.set_title(f"FLAIR, {title}", fontsize=10)
    ax.set_yscale("log")
    ax.set_xlabel("standardized FLAIR (sd)")
    ax.legend()
axes[0].set_ylabel("voxels (log scale)")
fig.tight_layout()
plt.show()

# %% [markdown]
# The same healthy tissue should read the same number in every slice. Take
# five slices spread over the brain, each holding at least half as many
# healthy brain voxels as the fullest slice (so every median below rests on
# many voxels), and compare the median FLAIR of their healthy tissue:

# %%
healthy_per_slice = healthy.sum(axis=(0, 1))
z_levels = np.flatnonzero(healthy_per_slice >= healthy_per_slice.max() / 2)
picks = z_levels[np.linspace(0, len(z_levels) - 1, 5).astype(int)]
rows = []
for z in picks:
    m = healthy[:, :, z]
    rows.append({"z": int(z), "healthy brain voxels": int(m.sum()),
                 "raw FLAIR": float(np.median(image[:, :, z, 0][m])),
                 "per-slice z-score": float(np.median(full_slice[:, :, z, 0][m])),
                 "brain z-score": float(np.median(full_brain[:, :, z, 0][m]))})
tissue = pd.DataFrame(rows).set_index("z")
spread = tissue.max() - tissue.min()
print(f"spread (max - min) over these slices: raw FLAIR {spread['raw FLAIR']:.1f}, per-slice z-score "
      f"{spread['per-slice z-score']:.2f}, brain z-score {spread['brain z-score']:.2f}")
tissue.round(2)

# %% [markdown]
# Both z-scores are in standard deviations, so their spreads compare
# directly. The brain z-score is the raw value minus one number, divided by
# one number, for the whole volume: it varies from slice to slice only as
# much as the raw tissue does. Per-slice standardization adds its own
# variation on top - the slices with less brain get the largest values -
# so its spread is the larger one.

# %% [markdown]
# ## 5. Better sampling: foreground oversampling
#
# Rejection sampling has two weaknesses. It may need many draws when the
# tumour is small (and gives up when it is tiny), and it never shows the
# network a patch of healthy brain, so the network never learns what "no
# tumour" looks like. nnU-Net instead forces a fixed share of patches (a third)
# to be centred on a tumour voxel - of a class drawn at random, so rare classes
# get their turn - and draws the rest anywhere. One draw per patch, and a
# controlled class balance.

# %%
cases = [load_case(data_dir, cid) for cid in case_ids[:3]]
table = compare_samplers([(c.image, c.label) for c in cases], n_patches=N_PATCHES, patch_shape=PATCH,
                         seed=SEED)
rejection, oversampling = table.iloc[0], table.iloc[1]
print(f"cases {', '.join(c.case_id for c in cases)} (whole tumour "
      f"{', '.join(f'{(c.label > 0).sum() / np.prod(PATCH):.0%}' for c in cases)} of a patch): "
      f"rejection sampling failed on {int(rejection['failed'])} of {N_PATCHES} patches "
      f"({rejection['draws per patch (mean)']:.0f} draws per patch on average); foreground oversampling "
      f"took 1 draw per patch, and {oversampling['patches with tumour']:.0%} of its patches hold tumour")
table.T

# %% [markdown]
# Rejection sampling needs many draws per patch, and it gives up on a patch
# after 1000 draws (`failed`) even when the tumour could fill 5% of a patch:
# a random window rarely lands on it. A case whose tumour cannot fill 5% of a
# patch would never be shown to the network at all. `patches with tumour`
# counts the failures as patches without tumour; every patch it does return
# holds at least 5% tumour by construction. Foreground oversampling returns every
# patch in one draw, whatever the tumour's size, and some of its patches hold
# no tumour - the healthy examples rejection sampling never gives.

# %% alt="The four sequences and labels of a patch whose corner was forced onto the tumour."
rng = np.random.default_rng(SEED)
fg = sample_foreground_patch(image, label, PATCH, foreground_fraction=1.0, rng=rng)
show_patch(fg.X, fg.y, f"foreground-forced patch at corner {fg.start}")

# %% [markdown]
# **What training does differently.** `get_sub_volume` keeps every patch
# inside the volume. Then a voxel near the border lies in far fewer patches
# than a central one, so the network rarely sees the edge of the brain. The
# training sampler of lesson 05 (`utils.training.pipeline.PatchSampler`) lets a random
# patch stick out by up to half a patch on each side, zero-padded, as
# nnU-Net does. For one axis of this case: in how many of the possible patch
# positions does a voxel lie, at the border and at the centre?

# %%
def positions_covering(voxel, size, patch, overhang):
    """How many patch starts (integers from -overhang to size - patch + overhang) put ``voxel`` inside the patch."""
    low, high = -overhang, size - patch + overhang
    return max(0, min(voxel, high) - max(low, voxel - patch + 1) + 1)


size, length = image.shape[0], PATCH[0]
for name, overhang in (("inside only (get_sub_volume)", 0), ("up to half a patch out (training)", length // 2)):
    border = positions_covering(0, size, length, overhang)
    centre = positions_covering(size // 2, size, length, overhang)
    print(f"x axis of {size} voxels, patch {length}, {name}: the border voxel is in {border} patch positions, "
          f"a central voxel in {centre} ({border / centre:.0%} as many)")

# %% [markdown]
# ## Summary
#
# - A whole volume needs more activation memory in a 3D U-Net than a 16 GB GPU
#   holds, a 160x160x16 patch (the assignment's) under 1 GB (section 1): we
#   train on patches.
# - `get_sub_volume` draws patches until one is less than 95% background;
#   `standardize` rescales each channel and slice to mean 0, std 1.
# - On skull-stripped MRI, standardizing over the brain keeps the tissue
#   scale consistent across slices and the background at 0.
# - Foreground oversampling needs one draw per patch and controls the class
#   balance - the sampler lesson 05 trains with, whose random patches may
#   also stick out by half a patch so that border voxels are seen (section 5).
#
# **Next:** lesson 03 builds the 3D U-Net these patches go through.
