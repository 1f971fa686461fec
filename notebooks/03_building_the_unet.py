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
# # Lesson 03 - Building the 3D U-Net
#
# The U-Net is the workhorse of medical image segmentation. We build it from
# two blocks you write yourself, then look at what it costs and what it sees.
#
# **You will learn to**
# - explain the contracting path, the expanding path and the skip connections;
# - write the convolution block (exercise 1, `conv_block`) and the
#   up-sampling block (exercise 2, `upsampling_block`) in Keras 3;
# - count parameters and activation memory, and compute the receptive field;
# - run an (untrained) forward pass on a phantom patch.
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
from keras import layers

from utils import get_dataset, get_settings, list_cases, load_case
from utils.course.checks import check_conv_block, check_upsampling_block
from utils.data.labels import CLASS_NAMES
from utils.model.unet import activation_memory_mb, build_unet, level_table, pool_sizes, receptive_field
from utils.preprocessing.transforms import sample_foreground_patch, standardize_nonzero
from utils.visualization.figures import label_colormap, plot_unet_levels

# %% tags=["parameters"]
DATASET = "phantom"
DEPTH = 4            # resolution levels (3 poolings), as in the assignment
BASE_FILTERS = 32    # filters at the first level, doubling per level
SEED = 0

# %%
settings = get_settings()
PATCH = settings.patch_shape
keras.utils.set_random_seed(SEED)
print(f"Keras {keras.__version__} on {keras.backend.backend()}; mode {settings.mode}, patch {PATCH}")

# %% [markdown]
# ## 1. The idea
#
# A segmentation network must answer two questions for every voxel: **what**
# is here (that needs context - a wide view of the surroundings) and
# **exactly where** are its borders (that needs full resolution).
#
# - The **contracting path** (encoder) repeats two 3x3x3 convolutions and a
#   2x2x2 max-pooling. Each pooling halves the size and the next level doubles
#   the filters: fewer, richer voxels that see a wider region.
# - The **expanding path** (decoder) up-samples back to full size.
# - **Skip connections** hand each encoder level's full-detail features to
#   the decoder level of the same size, which concatenates them with the
#   up-sampled context. Without them, borders come out blurred: the decoder
#   would have to recover detail that pooling threw away.
# - A final 1x1x1 convolution with a **sigmoid** gives, per voxel, one
#   independent probability per class (edema, non-enhancing, enhancing).

# %% alt="Diagram of the U-Net levels: feature-map size and channels of each encoder and decoder level."
fig = plot_unet_levels(build_unet((*PATCH, 4), depth=DEPTH, base_filters=BASE_FILTERS))
plt.show()

# %% [markdown]
# ## 2. Exercise 1: `conv_block`
#
# Write the block every level uses: **two** 3D convolutions with `filters`
# filters, kernel 3 and `padding="same"` (so the size does not change), each
# followed by a ReLU. With `normalization="batch"` put a
# `layers.BatchNormalization()` between each convolution and its ReLU, with
# `normalization="instance"` a `layers.GroupNormalization(groups=-1)` (one
# group per channel is instance normalization). A normalization layer has its
# own offset, so then the convolutions need no bias: `use_bias=normalization is None`.
#
# Use the functional API: each layer is called on the tensor, `x = layers.Conv3D(...)(x)`
# (a `keras.Sequential` of layers, or `keras.ops.relu`, works too: the check
# gives your block known weights and compares what it computes).
# Ignore `name` or use it to prefix the layer names.

# %%
def conv_block(x, filters, normalization=None, name=None):
    """Two 3x3x3 convolutions, each followed by optional normalization and ReLU.

    Args:
        x: input tensor (batch, x, y, z, channels).
        filters: number of filters of both convolutions.
        normalization: None, "batch" or "instance".
        name: optional prefix for layer names.

    Returns:
        Output tensor (batch, x, y, z, filters).
    """
    ### BEGIN SOLUTION
    # Hint: loop twice: Conv3D -> (normalization) -> Activation("relu").
    for _ in range(2):
        x = layers.Conv3D(filters, 3, padding="same", use_bias=normalization is None)(x)
        if normalization == "batch":
            x = layers.BatchNormalization()(x)
        elif normalization == "instance":
            x = layers.GroupNormalization(groups=-1)(x)
        x = layers.Activation("relu")(x)
    return x
    ### END SOLUTION

# %% tags=["check"]
check_conv_block(conv_block)

# %% [markdown]
# ## 3. Exercise 2: `upsampling_block`
#
# One decoder level:
#
# 1. up-sample `x` with a `layers.Conv3DTranspose(filters, pool_size, strides=pool_size)`
#    - a learned up-sampling that multiplies each axis by its `pool_size`
#    factor, back to the size of `skip`;
# 2. concatenate the result with `skip` on the channel axis
#    (`layers.Concatenate(axis=-1)`);
# 3. apply your `conv_block` with `filters` and `normalization`.
#
# `pool_size` is per axis: the builder uses `(2, 2, 1)` where an axis was too
# short to pool (section 5).

# %%
def upsampling_block(x, skip, filters, pool_size=(2, 2, 2), normalization=None, name=None):
    """Up-sample x, concatenate with the skip tensor, then a conv block.

    Args:
        x: tensor from the level below (batch, x, y, z, channels).
        skip: encoder tensor of this level, pool_size times larger.
        filters: channels of the up-sampled tensor and of the conv block.
        pool_size: up-sampling factor per axis.
        normalization: None, "batch" or "instance".
        name: optional prefix for layer names.

    Returns:
        Output tensor with the spatial size of skip and `filters` channels.
    """
    ### BEGIN SOLUTION
    # Hint: layers.Concatenate(axis=-1)([up, skip]) stacks the channels.
    up = layers.Conv3DTranspose(filters, pool_size, strides=pool_size)(x)
    merged = layers.Concatenate(axis=-1)([up, skip])
    return conv_block(merged, filters, normalization)
    ### END SOLUTION

# %% tags=["check"]
check_upsampling_block(upsampling_block)

# %% [markdown]
# ## 4. The whole network
#
# `utils.build_unet` stacks the tested references of the two blocks: `DEPTH`
# levels, max-pooling between them, the decoder, and the sigmoid output. It
# builds the assignment's network by default - input 160x160x16x4, depth 4,
# 32 base filters - and, from the same code, the 2D U-Net of the BraTS 2020
# notebooks (one axial slice at a time, input 240x240x4). (The assignment's
# network also doubled the filters inside each level; we follow the original
# U-Net, same filters for both convolutions of a level.)

# %%
model = build_unet((160, 160, 16, 4), depth=DEPTH, base_filters=BASE_FILTERS)
model_2d = build_unet((240, 240, 4), depth=DEPTH, base_filters=BASE_FILTERS)
level_table(model)

# %% [markdown]
# Keras' own summary is long (one line per layer); here is the first level
# only. Every layer of an `enc`/`dec` block shows up in the table above.

# %%
model.summary(line_length=90, layer_range=("image", "enc0_pool"))

# %%
comparison = pd.DataFrame({
    "input": [str(model.input.shape[1:]), str(model_2d.input.shape[1:])],
    "parameters": [model.count_params(), model_2d.count_params()],
    "weights MB (float32)": [model.count_params() * 4 / 1e6, model_2d.count_params() * 4 / 1e6],
    "activations MB per sample": [activation_memory_mb(model), activation_memory_mb(model_2d)],
}, index=["3D U-Net (patch)", "2D U-Net (slice)"]).round(1)
comparison

# %% [markdown]
# The 3D network has about three times the parameters (a 3x3x3 kernel holds
# 27 weights per channel pair, a 3x3 one 9), and each training sample's
# activations take several hundred MB - the 780 MB lesson 02 estimated by
# hand - which the batch size multiplies: a batch of 8 patches holds over
# 6 GB of activations, before their gradients. The 2D network sees one slice and no neighbours above or below it.
#
# ## 5. What the network sees
#
# The **receptive field** is the region of the input that can influence one
# output voxel. Each 3x3x3 convolution widens it by 2 voxels times the
# current stride, each pooling doubles the stride.

# %%
for d in (2, 3, 4, 5):
    print(f"depth {d}: receptive field {receptive_field(d):3d} voxels per pooled axis")

# %% [markdown]
# At depth 4 an output voxel can see 96 voxels across (96 mm at the 1 mm
# voxels of BraTS) - roughly a whole tumour with its edema. Along z the patch
# has only 16 slices, so context there is limited by the patch, not the
# network.
#
# **Pooling adapts.** The builder halves an axis only while it keeps at
# least 2 voxels, and refuses a size it cannot halve cleanly:

# %%
print("160x160x16, depth 4:", pool_sizes((160, 160, 16), depth=4))
print("160x160x16, depth 5:", pool_sizes((160, 160, 16), depth=5), "<- z stops at 2")
try:
    build_unet((150, 150, 16, 4), depth=4)
except ValueError as err:
    print("150x150x16:", err)

# %% [markdown]
# ## 6. A forward pass
#
# An untrained network on a standardized phantom patch: the weights are
# random, so the sigmoid outputs hover around 0.5 - it knows nothing yet.
# Lesson 05 trains it.

# %% alt="A FLAIR input patch, the three target masks over it in the course colours, and the three probability maps of the untrained network with a probability colour bar."
data_dir = get_dataset(DATASET)
case = load_case(data_dir, list_cases(data_dir)[0])
patch = sample_foreground_patch(standardize_nonzero(case.image), case.label, PATCH, foreground_fraction=1.0,
                                rng=np.random.default_rng(SEED))
net = build_unet((*PATCH, 4), depth=DEPTH, base_filters=BASE_FILTERS)
probabilities = net.predict(patch.X[None], verbose=0)[0]
print("input", patch.X.shape, "-> output", probabilities.shape,
      f"range {probabilities.min():.3f} .. {probabilities.max():.3f}")

z = PATCH[2] // 2
cmap, norm = label_colormap()
fig, axes = plt.subplots(2, 4, figsize=(13, 7), layout="constrained")
axes[0, 0].imshow(patch.X[:, :, z, 0].T, cmap="gray", origin="lower")
axes[0, 0].set_title("FLAIR (input)")
axes[1, 0].axis("off")
for k, name in enumerate(CLASS_NAMES):
    # each target mask over FLAIR in its class's course colour
    axes[0, k + 1].imshow(patch.X[:, :, z, 0].T, cmap="gray", origin="lower")
    axes[0, k + 1].imshow((patch.y[:, :, z, k] * (k + 1)).T, cmap=cmap, norm=norm, alpha=0.8, origin="lower",
                          interpolation="nearest")
    axes[0, k + 1].set_title(f"target:\n{name}", fontsize=10)
    im = axes[1, k + 1].imshow(probabilities[:, :, z, k].T, cmap="magma", origin="lower", vmin=0, vmax=1)
    axes[1, k + 1].set_title(f"untrained output:\n{name}", fontsize=10)
for ax in axes.ravel():
    if ax.axison:
        ax.set_xlabel("x (voxels)")
        ax.set_ylabel("y (voxels)")
fig.colorbar(im, ax=axes[1, 1:].tolist(), shrink=0.8, label="probability", location="bottom")
plt.show()

# %% [markdown]
# ## Summary
#
# - Encoder levels: two 3x3x3 convolutions + ReLU, then 2x2x2 max-pooling.
#   Decoder levels: transposed convolution, concatenation with the skip,
#   two convolutions. Output: 1x1x1 convolution + sigmoid, one channel per class.
# - The default 3D U-Net has about 5.6 M parameters; a 160x160x16 patch needs
#   several hundred MB of activations per sample, a whole volume more than a
#   16 GB GPU holds (lesson 02).
# - Depth sets the receptive field; pooling stops on axes that are too short.
#
# **Next:** lesson 04 - the loss that teaches this network although almost
# every voxel is background.
