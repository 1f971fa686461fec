"""The U-Net, in Keras 3, channels-last, for 3-D patches and 2-D slices.

One builder serves both: ``build_unet((160, 160, 16, 4))`` is the assignment's
3D U-Net, ``build_unet((240, 240, 4))`` the 2D U-Net of the BraTS 2020
notebooks. ``depth`` counts resolution levels (4 levels = 3 poolings), as in
the assignment.
"""

from __future__ import annotations

import contextlib
import json
import math
import zipfile
from pathlib import Path

import keras
import numpy as np
import pandas as pd
from keras import layers, ops

from ..backend import gpu_count
from ..config import ASSIGNMENT_PATCH
from ..errors import CourseError
from . import losses  # noqa: F401  (registers the course's loss and metrics, so load_model finds them)

NORMALIZATIONS = (None, "batch", "instance")
UPSAMPLINGS = ("transpose", "upsample")
MIN_POOLED_SIZE = 2
"""An axis is halved only while the result keeps at least this many voxels."""


def _spatial_dims(x) -> int:
    dims = len(x.shape) - 2
    if dims not in (2, 3):
        raise ValueError(f"expected a batch of 2-D or 3-D images (B, x, y[, z], C); found shape {tuple(x.shape)}")
    return dims


def conv_block(x, filters: int, normalization: str | None = None, name: str | None = None):
    """Two 3x3(x3) convolutions, each followed by optional normalization and ReLU.

    Taught in lesson 03, exercise 1.

    Args:
        x: a Keras tensor ``(B, x, y, z, C)`` or ``(B, x, y, C)``.
        filters: output channels of both convolutions.
        normalization: None, ``"batch"`` or ``"instance"`` (GroupNormalization
            with one group per channel). With normalization the convolutions
            have no bias (the normalization's offset replaces it).
        name: prefix of the layer names.

    Returns:
        The block's output tensor: same spatial size, ``filters`` channels.
    """
    if normalization not in NORMALIZATIONS:
        raise ValueError(f"normalization must be one of {NORMALIZATIONS}; found {normalization!r}")
    dims = _spatial_dims(x)
    conv = layers.Conv3D if dims == 3 else layers.Conv2D
    prefix = f"{name}_" if name else ""
    for i in (1, 2):
        x = conv(filters, 3, padding="same", use_bias=normalization is None, name=f"{prefix}conv{i}" if name else None)(
            x
        )
        if normalization == "batch":
            x = layers.BatchNormalization(name=f"{prefix}bn{i}" if name else None)(x)
        elif normalization == "instance":
            x = layers.GroupNormalization(groups=-1, name=f"{prefix}in{i}" if name else None)(x)
        x = layers.Activation("relu", name=f"{prefix}relu{i}" if name else None)(x)
    return x


def upsampling_block(
    x,
    skip,
    filters: int,
    pool_size=None,
    normalization: str | None = None,
    upsampling: str = "transpose",
    name: str | None = None,
):
    """Up-sample ``x`` to the size of ``skip``, concatenate them, then a conv block.

    Taught in lesson 03, exercise 2.

    Args:
        x: the coarser tensor from the level below.
        skip: the encoder tensor of this level (the skip connection).
        filters: channels of the up-sampled tensor and of the conv block.
        pool_size: factor per axis (default 2 on every axis).
        normalization: as in :func:`conv_block`.
        upsampling: ``"transpose"`` (a learned transposed convolution, kernel =
            stride = pool_size) or ``"upsample"`` (repeat voxels, then a 3x3x3
            convolution).
        name: prefix of the layer names.

    Returns:
        The output tensor: the spatial size of ``skip``, ``filters`` channels.
    """
    if upsampling not in UPSAMPLINGS:
        raise ValueError(f"upsampling must be one of {UPSAMPLINGS}; found {upsampling!r}")
    dims = _spatial_dims(x)
    pool_size = tuple(pool_size) if pool_size is not None else (2,) * dims
    prefix = f"{name}_" if name else ""
    if upsampling == "transpose":
        transpose = layers.Conv3DTranspose if dims == 3 else layers.Conv2DTranspose
        x = transpose(filters, pool_size, strides=pool_size, name=f"{prefix}up" if name else None)(x)
    else:
        up = layers.UpSampling3D if dims == 3 else layers.UpSampling2D
        conv = layers.Conv3D if dims == 3 else layers.Conv2D
        x = up(pool_size, name=f"{prefix}up" if name else None)(x)
        x = conv(filters, 3, padding="same", name=f"{prefix}upconv" if name else None)(x)
    x = layers.Concatenate(axis=-1, name=f"{prefix}concat" if name else None)([x, skip])
    return conv_block(x, filters, normalization, name=name)


@keras.saving.register_keras_serializable(package="brats_course")
class LinearUpsampling(layers.Layer):
    """Up-sample by 2 on every spatial axis with (bi/tri)linear interpolation.

    Half-voxel aligned (like ``align_corners=False``), edges replicated; built
    from ``keras.ops`` slicing, so it is cheap and runs on every backend.
    """

    def call(self, x):
        for axis in range(1, len(x.shape) - 1):
            n = x.shape[axis]
            index = np.arange(n)
            prev = ops.take(x, np.maximum(index - 1, 0), axis=axis)
            nxt = ops.take(x, np.minimum(index + 1, n - 1), axis=axis)
            pair = ops.stack([0.75 * x + 0.25 * prev, 0.75 * x + 0.25 * nxt], axis=axis + 1)
            shape = [-1, *x.shape[1:]]
            shape[axis] = 2 * n
            x = ops.reshape(pair, shape)
        return x

    def compute_output_shape(self, input_shape):
        return (input_shape[0], *[None if s is None else 2 * s for s in input_shape[1:-1]], input_shape[-1])


def pool_sizes(spatial_shape, depth: int = 4) -> list[tuple[int, ...]]:
    """Pooling factor per axis at each of the ``depth - 1`` downsamplings.

    An axis is halved while the result keeps at least :data:`MIN_POOLED_SIZE`
    voxels; a shorter axis is left as it is (factor 1), so a 160x160x16 patch
    goes through depth 4 and a 160x160x8 one too (z stops at 2).

    Raises:
        ValueError: when an axis that must be halved has an odd size.
    """
    sizes = list(spatial_shape)
    if any(s is None for s in sizes):
        raise ValueError(f"the U-Net needs a fixed input size; found {tuple(spatial_shape)}")
    out = []
    for level in range(depth - 1):
        factors = []
        for axis, size in enumerate(sizes):
            if size // 2 < MIN_POOLED_SIZE:
                factors.append(1)
                continue
            if size % 2:
                multiple = 2 ** (depth - 1)
                raise ValueError(
                    f"input shape {tuple(spatial_shape)}: axis {axis} has {size} voxels at level {level}, "
                    f"which cannot be halved cleanly; with depth {depth} use sizes divisible by {multiple} "
                    f"(e.g. {math.floor(spatial_shape[axis] / multiple) * multiple} or "
                    f"{math.ceil(spatial_shape[axis] / multiple) * multiple})"
                )
            factors.append(2)
            sizes[axis] = size // 2
        out.append(tuple(factors))
    return out


def build_unet(
    input_shape=(*ASSIGNMENT_PATCH, 4),
    n_labels: int = 3,
    depth: int = 4,
    base_filters: int = 32,
    normalization: str | None = None,
    upsampling: str = "transpose",
    downsample: int = 1,
    name: str | None = None,
) -> keras.Model:
    """A U-Net with sigmoid outputs, 3-D or 2-D by the length of ``input_shape``.

    Args:
        input_shape: ``(x, y, z, channels)`` for 3-D, ``(x, y, channels)`` for 2-D.
        n_labels: output channels (3: edema, non-enhancing, enhancing).
        depth: resolution levels (>= 2); ``depth - 1`` poolings.
        base_filters: filters at the first level, doubling at each level below.
        normalization: None, ``"batch"`` or ``"instance"``.
        upsampling: ``"transpose"`` or ``"upsample"``.
        downsample: 1 (default) or 2: the U-Net works at half resolution - the
            input is average-pooled by 2, the output logits are up-sampled by
            linear interpolation and refined per voxel by two 1x1 (Dense) layers
            that also see the full-resolution input - for about 8x (3-D) less
            work at the same field of view. The model still maps
            full-resolution patches to full-resolution probabilities. (The
            CPU demo of lesson 05 no longer needs it: measured, the
            full-resolution network steps about 2x slower, not 8x.)
        name: model name (default ``unet3d`` / ``unet2d``).

    Returns:
        An uncompiled ``keras.Model`` mapping ``(B, *input_shape)`` to
        ``(B, *spatial, n_labels)`` probabilities.
    """
    input_shape = tuple(input_shape)
    dims = len(input_shape) - 1
    if dims not in (2, 3):
        raise ValueError(f"input_shape must be (x, y, z, C) or (x, y, C); found {input_shape}")
    if depth < 2:
        raise ValueError(f"depth must be at least 2; found {depth}")
    if downsample not in (1, 2):
        raise ValueError(f"downsample must be 1 or 2; found {downsample}")
    if downsample == 2 and any(s % 2 for s in input_shape[:-1]):
        raise ValueError(f"downsample=2 needs even input sizes; found {input_shape[:-1]}")
    pools = pool_sizes([s // downsample for s in input_shape[:-1]], depth)
    pool_layer = layers.MaxPooling3D if dims == 3 else layers.MaxPooling2D
    avg_layer = layers.AveragePooling3D if dims == 3 else layers.AveragePooling2D
    out_conv = layers.Conv3D if dims == 3 else layers.Conv2D

    inputs = keras.Input(shape=input_shape, name="image")
    x, skips = inputs, []
    if downsample == 2:
        x = avg_layer(2, name="half_resolution")(x)
    for level in range(depth - 1):
        x = conv_block(x, base_filters * 2**level, normalization, name=f"enc{level}")
        skips.append(x)
        x = pool_layer(pools[level], name=f"enc{level}_pool")(x)
    x = conv_block(x, base_filters * 2 ** (depth - 1), normalization, name="bottom")
    for level in reversed(range(depth - 1)):
        x = upsampling_block(
            x, skips[level], base_filters * 2**level, pools[level], normalization, upsampling, name=f"dec{level}"
        )
    if downsample == 2:
        logits = out_conv(n_labels, 1, dtype="float32", name="logits")(x)
        upsampled = LinearUpsampling(dtype="float32", name="full_resolution")(logits)
        # a per-voxel refinement at full resolution: two 1x1 layers see each voxel's own
        # intensities beside the up-sampled logits, and sharpen borders the half-resolution
        # U-Net blurs, for a few operations per voxel
        refine = layers.Concatenate(name="refine_concat")([upsampled, inputs])
        refine = layers.Dense(16, activation="relu", name="refine_dense1")(refine)  # = 1x1 conv, faster on CPU
        refine = layers.Dense(n_labels, dtype="float32", name="refine_dense2")(refine)
        refined = layers.Add(dtype="float32", name="refine_add")([upsampled, refine])
        outputs = layers.Activation("sigmoid", dtype="float32", name="probabilities")(refined)
    else:
        outputs = out_conv(n_labels, 1, activation="sigmoid", dtype="float32", name="probabilities")(x)
    return keras.Model(inputs, outputs, name=name or f"unet{dims}d")


def configured_unet(config) -> keras.Model:
    """The uncompiled U-Net of ``config`` (a ``TrainConfig``: its patch, depth, filters, normalization, downsampling)."""
    return build_unet(
        (*config.patch_shape, 4),
        depth=config.depth,
        base_filters=config.base_filters,
        normalization=config.normalization,
        downsample=config.downsample,
    )


def level_table(model: keras.Model):
    """The model summarised per level: output shape and parameters.

    Returns:
        pandas DataFrame with one row per block (``enc0`` ... ``bottom`` ...
        ``dec0``, ``probabilities``).
    """
    rows: dict[str, dict] = {}
    for layer in model.layers:
        block = layer.name.split("_")[0]
        if block == "image":
            continue
        row = rows.setdefault(block, {"output shape": None, "parameters": 0})
        row["parameters"] += layer.count_params()
        if not layer.name.endswith("_pool"):
            row["output shape"] = tuple(layer.output.shape[1:])
    table = pd.DataFrame(rows).T
    table.loc["total"] = ["", model.count_params()]
    return table


def receptive_field(depth: int = 4, convs_per_level: int = 2, kernel: int = 3) -> int:
    """Receptive field (in voxels, per pooled axis) of the U-Net's output voxel."""
    rf, jump = 1, 1
    for _ in range(depth - 1):
        rf += convs_per_level * (kernel - 1) * jump  # encoder convs at this level
        rf += jump  # 2x2 pooling
        jump *= 2
    rf += convs_per_level * (kernel - 1) * jump  # bottom
    for _ in range(depth - 1):
        jump //= 2
        rf += convs_per_level * (kernel - 1) * jump  # decoder convs
    return rf


def activation_memory_mb(model: keras.Model, batch_size: int = 1, bytes_per_value: int = 4) -> float:
    """Memory of every layer output for one forward pass (kept for backprop), MB."""
    total = 0
    for layer in model.layers:
        for out in layer.output if isinstance(layer.output, (list, tuple)) else [layer.output]:
            total += int(np.prod(out.shape[1:]))
    return total * batch_size * bytes_per_value / 1e6


T4_FP16_PEAK_TFLOPS = 65.0
"""NVIDIA T4 (Colab's free GPU): float16 tensor-core peak, TFLOPS."""
T4_MEMORY_GB = 15.0
"""Memory of Colab's T4 as CUDA reports it, GB."""
T4_UTILISATION = 0.15
"""Share of the T4's peak a convolutional network sustains: NVIDIA's ResNet-50 v1.5 README (DeepLearningExamples)
reports 1198 images/s mixed-precision inference on a T4, x 8.2 GFLOP per image = 9.8 TFLOPS, 15% of peak;
training and 3-D convolutions usually do no better, so read the time as a lower bound."""
BYTES_PER_PARAMETER = 16
"""Training memory per parameter: float32 weight, gradient and Adam's two moments."""


def layer_flops(layer) -> int:
    """Floating-point operations (a multiply-add is 2) of one sample through ``layer``'s forward pass.

    Counts the convolutions, transposed convolutions and dense layers, which
    hold all but a few percent of a U-Net's arithmetic; 0 for other layers.
    """
    kernel = getattr(layer, "kernel", None)
    if kernel is None:
        return 0
    if isinstance(layer, (layers.Conv2DTranspose, layers.Conv3DTranspose)):
        positions = np.prod(layer.input.shape[1:-1])  # each input voxel spreads over a kernel-sized block
    else:
        positions = np.prod(layer.output.shape[1:-1])
    return int(2 * positions * np.prod(kernel.shape))


def training_cost(model: keras.Model, batch_size: int) -> dict:
    """What one training step of ``model`` on ``batch_size`` samples costs, from its layers.

    Returns:
        ``activation_bytes``: every layer output of the batch at its dtype (a
        float16 tensor under mixed precision takes 2 bytes), what backprop
        keeps; ``parameter_bytes``: weights, gradients and Adam moments
        (:data:`BYTES_PER_PARAMETER`); ``step_flops``: forward + backward
        (twice the forward: gradients of inputs and of weights) for the batch.
    """
    activations = 0
    for layer in model.layers:
        for out in layer.output if isinstance(layer.output, (list, tuple)) else [layer.output]:
            activations += int(np.prod(out.shape[1:])) * np.dtype(out.dtype).itemsize
    forward = sum(layer_flops(layer) for layer in model.layers)
    return {
        "activation_bytes": activations * batch_size,
        "parameter_bytes": model.count_params() * BYTES_PER_PARAMETER,
        "step_flops": 3 * forward * batch_size,
    }


TRAINING_HOLDS = 1.09
"""Peak memory of a training step over its layer outputs, measured by ``benchmarks/bench_gpu_cost.py``
(the gpu preset's network, batch 4, float32 on a CPU: peak-RSS growth from 32x32x16 to 64x64x16
patches over the layer-output growth; 2026-12-06). A GPU's allocator and cuDNN workspaces add some."""


def gpu_run_estimate(config, holds: float | None = None) -> dict:
    """Memory and time of the training run ``config`` on a T4 under mixed precision.

    Args:
        config: a ``TrainConfig`` (its network, patch, batch, epochs and steps).
        holds: training's peak memory over the layer outputs (default
            :data:`TRAINING_HOLDS`, measured by ``benchmarks/bench_gpu_cost.py``).

    Returns:
        :func:`training_cost`'s figures and ``memory_bytes`` (``holds`` x the
        layer outputs + parameter memory), ``step_seconds`` (step FLOPs at
        :data:`T4_UTILISATION` of :data:`T4_FP16_PEAK_TFLOPS`) and ``hours``
        (every training step, and the validation steps at a third of a step:
        forward only).
    """
    holds = TRAINING_HOLDS if holds is None else holds
    with dtype_policy_scope("mixed_float16"):
        model = configured_unet(config)
    cost = training_cost(model, config.batch_size)
    step = cost["step_flops"] / (T4_FP16_PEAK_TFLOPS * 1e12 * T4_UTILISATION)
    steps = config.epochs * (config.steps_per_epoch + config.validation_steps / 3)
    return {
        **cost,
        "parameters": model.count_params(),
        "memory_bytes": holds * cost["activation_bytes"] + cost["parameter_bytes"],
        "step_seconds": step,
        "hours": steps * step / 3600,
    }


class ModelLoadError(CourseError, ValueError):
    """A file is not a loadable ``.keras`` model of the course."""


def check_model_archive(path: Path) -> None:
    """Refuse a ``.keras`` archive whose members would inflate past the limits, before Keras reads any of it.

    The sizes are the ones the zip's central directory declares; Python's
    ``zipfile`` (which Keras reads the archive with) never returns more than
    the declared size of a member, so the check bounds what Keras can inflate.
    Limits: :data:`utils.config.MODEL_CONFIG_MAX_MB` for ``config.json`` and
    :data:`utils.config.MODEL_MAX_MB` for all members together.

    Raises:
        ModelLoadError: one line naming the file, the member and the sizes.
    """
    from .. import config  # read at each call

    try:
        with zipfile.ZipFile(path) as archive:
            members = archive.infolist()
    except (zipfile.BadZipFile, OSError) as err:
        raise ModelLoadError(f"could not read the model {path}: not a valid .keras archive ({err})") from err
    for info in members:
        if info.filename == "config.json" and info.file_size > config.MODEL_CONFIG_MAX_MB << 20:
            raise ModelLoadError(
                f"refusing to load the model {path}: its config.json inflates to {info.file_size / 2**20:,.0f} MB, "
                f"more than the limit of {config.MODEL_CONFIG_MAX_MB} MB (utils.config.MODEL_CONFIG_MAX_MB)"
            )
    total = sum(info.file_size for info in members)
    if total > config.MODEL_MAX_MB << 20:
        raise ModelLoadError(
            f"refusing to load the model {path}: its members inflate to {total / 2**20:,.0f} MB in all, "
            f"more than the limit of {config.MODEL_MAX_MB} MB (utils.config.MODEL_MAX_MB)"
        )


def saved_dtype_policy(path) -> str:
    """The compute policy a saved ``.keras`` model's layers carry: ``"mixed_float16"``, ``"float32"`` ...

    Read from the archive's ``config.json`` without building the model: the
    first mixed policy found, else ``"float32"`` (after :func:`check_model_archive`).
    """
    check_model_archive(path)
    with zipfile.ZipFile(path) as archive:
        config = json.loads(archive.read("config.json"))
    names = set()

    def walk(node):
        if isinstance(node, dict):
            if node.get("class_name") == "DTypePolicy" and isinstance(node.get("config"), dict):
                names.add(str(node["config"].get("name")))
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(config)
    mixed = sorted(name for name in names if name.startswith("mixed_"))
    return mixed[0] if mixed else "float32"


def dtype_policy_of(model: keras.Model) -> str:
    """The compute policy of ``model``'s layers: its mixed policy if any layer has one, else ``"float32"``."""
    mixed = sorted({layer.dtype_policy.name for layer in model.layers if layer.dtype_policy.name.startswith("mixed_")})
    return mixed[0] if mixed else "float32"


@contextlib.contextmanager
def dtype_policy_scope(name: str):
    """Keras's global dtype policy set to ``name`` inside the block, restored after it."""
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(name)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


def _float32_layer(layer):
    config = layer.get_config()
    config["dtype"] = "float32"
    return layer.__class__.from_config(config)


def to_float32(model: keras.Model) -> keras.Model:
    """The same network with every layer computing in float32, holding the same weights.

    A model trained with mixed precision (``mixed_float16``) keeps its weights
    in float32 already, so the copy is exact; only the computation changes
    (TensorFlow has no float16 CPU kernel for ``MaxPool3D`` and others). A
    compiled model's copy is compiled with the same optimizer, loss and
    metrics (no loss scaling, XLA as the machine's default) and takes over
    the optimizer's state (step count, learning rate, moments), so training
    resumes where it stopped.

    Raises:
        ModelLoadError: the optimizer state does not match the copy's variables.
    """
    with dtype_policy_scope("float32"):
        clone = keras.models.clone_model(model, clone_function=_float32_layer)
        clone.set_weights(model.get_weights())
        if getattr(model, "compiled", False) and getattr(model, "optimizer", None) is not None:
            clone.compile_from_config(model.get_compile_config())
            source = getattr(model.optimizer, "inner_optimizer", model.optimizer)  # unwrap the loss scaling
            if not source.built:
                return clone
            clone.optimizer.build(clone.trainable_variables)
            pairs = list(zip(source.variables, clone.optimizer.variables))
            if len(source.variables) != len(clone.optimizer.variables) or any(
                a.path != b.path or tuple(a.shape) != tuple(b.shape) for a, b in pairs
            ):
                raise ModelLoadError(
                    f"cannot carry the optimizer state of {model.name} over to float32: its "
                    f"{len(source.variables)} variables do not match the copy's {len(clone.optimizer.variables)}"
                )
            for a, b in pairs:
                b.assign(a)
    return clone


def load_model(path, compile: bool = True, precision: str = "auto") -> keras.Model:
    """Load a ``.keras`` model saved by the course (its loss and metrics are registered).

    Keras ``safe_mode`` stays on: a model with arbitrary code (a ``Lambda``
    layer) is refused rather than executed. The archive's member sizes are
    checked first (:func:`check_model_archive`).

    A model trained with mixed precision (on a GPU, ``mixed_float16``) is
    loaded under that policy (so its loss-scaled optimizer state loads too)
    and, where no GPU is visible, rebuilt in float32 with the same weights
    (:func:`to_float32`): TensorFlow has no float16 CPU kernel for some of
    the U-Net's layers, and a CPU computes float32 faster anyway.

    Args:
        path: the ``.keras`` file.
        compile: restore the optimizer, loss and metrics (to resume training).
        precision: ``"auto"`` (float32 where no GPU is visible, else as
            saved), ``"saved"`` (as saved) or ``"float32"``.

    Raises:
        ModelLoadError: one line naming the file when it is missing, not a
            ``.keras`` archive, damaged, or holds a layer refused by safe mode.
    """
    if precision not in ("auto", "saved", "float32"):
        raise ValueError(f"precision must be auto, saved or float32; found {precision!r}")
    path = Path(path)
    if not path.is_file():
        raise ModelLoadError(f"model not found: {path}")
    if path.suffix != ".keras" or not zipfile.is_zipfile(path):
        raise ModelLoadError(
            f"{path} is not a .keras model (expected the zip archive that model.save() writes with a .keras name)"
        )
    check_model_archive(path)
    try:
        policy = saved_dtype_policy(path)
        with dtype_policy_scope(policy):  # a mixed model's optimizer is loss-scaled: load it as it was saved
            model = keras.models.load_model(path, compile=compile, safe_mode=True)
    except Exception as err:  # Keras raises ValueError, TypeError, KeyError, OSError ... on bad archives
        text = " ".join(str(err).split())
        if "safe_mode" in text or "unsafe" in text.lower() or "lambda" in text.lower():
            raise ModelLoadError(
                f"{path} holds a layer that runs arbitrary code (e.g. a Lambda); refused "
                "because safe mode is on. Load it only if you trust its author."
            ) from err
        raise ModelLoadError(f"could not load the model {path}: {text[:300]}") from err
    if policy != "float32" and (precision == "float32" or (precision == "auto" and not gpu_count())):
        model = to_float32(model)
    return model
