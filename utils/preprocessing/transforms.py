"""Patches and intensity standardization (lesson 02).

Graded-style references: :func:`get_sub_volume` and :func:`standardize` keep
the names and defaults of the original assignment, channels-last. Beyond it:
:func:`standardize_nonzero` (brain-mask z-score, as nnU-Net and MONAI do on
skull-stripped MRI) and :func:`sample_foreground_patch` (nnU-Net-style
foreground oversampling). :func:`patch_corner` and :func:`cut_patch` are the
course's one sampling rule: the reference sampler keeps patches inside the
volume, the training sampler (:class:`utils.training.pipeline.PatchSampler`)
lets random ones overhang; :data:`INTENSITY_SCHEMES` names the intensity
schemes a run's plan can record.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..config import ASSIGNMENT_PATCH, FOREGROUND_FRACTION
from ..data.labels import CLASS_NAMES, NUM_CLASSES, one_hot
from ..errors import CourseError


class PatchSamplingError(CourseError, ValueError):
    """No patch met the background threshold within ``max_tries``."""


@dataclass(frozen=True)
class Patch:
    """A sampled patch and how it was found.

    Attributes:
        X: image patch ``(px, py, pz, C)``.
        y: one-hot labels without background ``(px, py, pz, num_classes - 1)``.
        start: corner of the patch in the volume ``(x, y, z)``.
        tries: how many candidate positions were drawn.
    """

    X: np.ndarray
    y: np.ndarray
    start: tuple[int, int, int]
    tries: int


def _check_channels_last(image: np.ndarray) -> None:
    if image.ndim != 4:
        raise ValueError(f"expected a channels-last image (x, y, z, C); found shape {image.shape}")


def _check_patch_inputs(
    image: np.ndarray,
    label: np.ndarray,
    patch_shape: tuple[int, int, int],
    num_classes: int,
    orig_shape: tuple[int, int, int] | None = None,
) -> None:
    image, label = np.asarray(image), np.asarray(label)
    _check_channels_last(image)
    if label.shape != image.shape[:3]:
        raise ValueError(f"label shape {label.shape} does not match image shape {image.shape[:3]}")
    if orig_shape is not None and tuple(orig_shape) != image.shape[:3]:
        raise ValueError(f"orig_x, orig_y, orig_z = {tuple(orig_shape)} but the image is {image.shape[:3]}")
    if any(p > s for p, s in zip(patch_shape, image.shape[:3])) or min(patch_shape) < 1:
        raise ValueError(f"patch {tuple(patch_shape)} does not fit in the volume {image.shape[:3]}")
    if label.size and (label.min() < 0 or label.max() >= num_classes):
        bad = sorted(set(np.unique(label).tolist()) - set(range(num_classes)))
        raise ValueError(f"label values must be in 0..{num_classes - 1}; found {bad}")
    if not np.all(np.isfinite(image)):
        raise ValueError(f"image holds {int((~np.isfinite(image)).sum())} NaN/Inf values")


def rejection_sample(
    image: np.ndarray,
    label: np.ndarray,
    patch_shape=ASSIGNMENT_PATCH,
    num_classes: int = NUM_CLASSES,
    max_tries: int = 1000,
    background_threshold: float = 0.95,
    rng: np.random.Generator | None = None,
) -> Patch:
    """Draw patch corners uniformly until the background share is below the threshold.

    Args:
        image: ``(x, y, z, C)``. label: ``(x, y, z)`` integers in ``0..num_classes-1``.
        patch_shape: ``(px, py, pz)``.
        num_classes: labels including background.
        max_tries: give up after this many draws.
        background_threshold: accept a patch whose background share is below this.
        rng: a numpy Generator; None uses the global ``np.random`` (as the
            original assignment does).

    Returns:
        A :class:`Patch`.

    Raises:
        ValueError: on bad input. PatchSamplingError: if no draw qualifies.
    """
    _check_patch_inputs(image, label, patch_shape, num_classes)
    return _rejection_loop(image, label, patch_shape, num_classes, max_tries, background_threshold, rng)


def _rejection_loop(image, label, patch_shape, num_classes, max_tries, background_threshold, rng) -> Patch:
    """The sampling loop of :func:`rejection_sample`, on inputs already checked."""
    draw = np.random.randint if rng is None else rng.integers
    for tries in range(1, max_tries + 1):
        start = tuple(int(draw(0, s - p + 1)) for s, p in zip(image.shape[:3], patch_shape))
        window = tuple(slice(s, s + p) for s, p in zip(start, patch_shape))
        patch_label = label[window]
        if np.mean(patch_label == 0) < background_threshold:
            return Patch(np.array(image[window], dtype=np.float32), one_hot(patch_label, num_classes), start, tries)
    raise PatchSamplingError(
        f"no {tuple(patch_shape)} patch with background below {background_threshold:.0%} in {max_tries} tries"
    )


def get_sub_volume(
    image,
    label,
    orig_x=240,
    orig_y=240,
    orig_z=155,
    output_x=160,
    output_y=160,
    output_z=16,
    num_classes=4,
    max_tries=1000,
    background_threshold=0.95,
):
    """Extract a random patch that is not mostly background.

    Taught in lesson 02, exercise 1.

    Draws a corner uniformly (every position that keeps the patch inside the
    volume is possible) and accepts the patch when the share of background
    voxels is below ``background_threshold``.

    Args:
        image: ``(orig_x, orig_y, orig_z, C)`` intensities.
        label: ``(orig_x, orig_y, orig_z)`` integers in ``0..num_classes-1``.
        orig_x, orig_y, orig_z: size of the volume.
        output_x, output_y, output_z: size of the patch.
        num_classes: labels including background.
        max_tries: draws before giving up.
        background_threshold: largest accepted share of background voxels (exclusive).

    Returns:
        ``(X, y)``: X ``(output_x, output_y, output_z, C)`` float32 and y
        ``(output_x, output_y, output_z, num_classes - 1)``, the one-hot labels
        without the background channel.

    Raises:
        PatchSamplingError (a ValueError): if no patch qualifies in ``max_tries``.
        ValueError: if the patch is larger than the volume, the shapes
            disagree, a label is outside ``0..num_classes-1`` or the image has NaN.
    """
    patch_shape = (output_x, output_y, output_z)
    _check_patch_inputs(image, label, patch_shape, num_classes, (orig_x, orig_y, orig_z))
    patch = _rejection_loop(image, label, patch_shape, num_classes, max_tries, background_threshold, None)
    return patch.X, patch.y


def sample_foreground_patch(
    image: np.ndarray,
    label: np.ndarray,
    patch_shape=ASSIGNMENT_PATCH,
    num_classes: int = NUM_CLASSES,
    foreground_fraction: float = FOREGROUND_FRACTION,
    rng: np.random.Generator | None = None,
) -> Patch:
    """nnU-Net-style sampling: some patches centred on tumour, the rest anywhere.

    With probability ``foreground_fraction`` the patch is centred on a voxel of
    a tumour class chosen at random among the classes present (so rare
    classes are seen as often as common ones); otherwise its corner is drawn
    uniformly. Either way one draw suffices: no rejection loop.

    Args:
        image, label, patch_shape, num_classes: as in :func:`rejection_sample`.
        foreground_fraction: share of patches forced onto the tumour, in [0, 1].
        rng: numpy Generator (default: a fresh unseeded one).

    Returns:
        A :class:`Patch` with ``tries == 1``.
    """
    _check_patch_inputs(image, label, patch_shape, num_classes)
    check_foreground_fraction(foreground_fraction)
    rng = np.random.default_rng() if rng is None else rng
    present = [k for k in range(1, num_classes) if np.any(label == k)]

    def draw_centre(rng):  # a voxel of a tumour class chosen at random among those present
        voxels = np.flatnonzero(label == present[rng.integers(len(present))])
        return np.array(np.unravel_index(voxels[rng.integers(len(voxels))], label.shape))

    start = patch_corner(label.shape, patch_shape, rng, foreground_fraction, draw_centre if present else None)
    X, patch_label = cut_patch(image, label, start, patch_shape)
    return Patch(X, one_hot(patch_label, num_classes), tuple(int(s) for s in start), 1)


def check_foreground_fraction(foreground_fraction: float) -> None:
    if not 0.0 <= foreground_fraction <= 1.0:
        raise ValueError(f"foreground_fraction must be in [0, 1]; found {foreground_fraction}")


def patch_corner(
    volume_shape,
    patch_shape,
    rng: np.random.Generator,
    foreground_fraction: float = FOREGROUND_FRACTION,
    draw_centre=None,
    overhang: bool = False,
) -> np.ndarray:
    """The corner of one patch: the one sampling rule of the course (lesson 02 and training).

    With probability ``foreground_fraction`` (when ``draw_centre`` is given)
    the patch is centred on the voxel ``draw_centre(rng)`` returns, moved
    inside the volume as far as it fits; otherwise the corner is uniform.

    Args:
        volume_shape, patch_shape: ``(x, y, z)``.
        rng: numpy Generator.
        foreground_fraction: share of patches centred on tumour, in [0, 1].
        draw_centre: ``rng -> (x, y, z)`` voxel of tumour (None: the case has none).
        overhang: a uniform patch may stick out of the volume by up to half its
            size (zero-padded by :func:`cut_patch`), as nnU-Net's do in training:
            with patches kept inside, a voxel near the border would fall in far
            fewer patches than a central one. Lesson 02's reference keeps them
            inside (False).

    Returns:
        int array ``(3,)``, possibly negative or beyond the volume when the
        patch is larger than it or ``overhang`` is set.
    """
    shape, patch = np.asarray(volume_shape), np.asarray(patch_shape)
    if draw_centre is not None and rng.random() < foreground_fraction:
        start = np.asarray(draw_centre(rng)) - patch // 2
        return np.clip(start, np.minimum(0, shape - patch), np.maximum(0, shape - patch))
    reach = patch // 2 if overhang else np.zeros_like(patch)
    return np.array([rng.integers(min(0, s - p) - h, max(0, s - p) + h + 1) for s, p, h in zip(shape, patch, reach)])


def cut_patch(image: np.ndarray, label: np.ndarray, start, patch_shape) -> tuple[np.ndarray, np.ndarray]:
    """``(X float32 (*patch, C), label uint8 (*patch))`` at corner ``start``, zero where it leaves the volume."""
    patch_shape = tuple(int(p) for p in patch_shape)
    X = np.zeros((*patch_shape, image.shape[-1]), dtype=np.float32)
    lab = np.zeros(patch_shape, dtype=np.uint8)
    src = tuple(slice(max(int(a), 0), min(int(a) + p, s)) for a, p, s in zip(start, patch_shape, label.shape))
    dst = tuple(slice(sl.start - int(a), sl.stop - int(a)) for sl, a in zip(src, start))
    X[dst] = image[src]
    lab[dst] = label[src]
    return X, lab


def standardize(image):
    """Standardize each channel of each z-slice to mean 0 and std 1.

    Taught in lesson 02, exercise 2.

    Vectorized: the means and (population) standard deviations of all
    ``(channel, z)`` slices are computed at once. A slice with zero variance
    (e.g. empty background) becomes all zeros, without warnings or NaN.

    Args:
        image: ``(x, y, z, C)`` array.

    Returns:
        float32 array of the same shape.

    Raises:
        ValueError: if the image is not 4-D or holds NaN/Inf.
    """
    image = np.asarray(image, dtype=np.float32)
    _check_channels_last(image)
    if not np.all(np.isfinite(image)):
        raise ValueError(f"image holds {int((~np.isfinite(image)).sum())} NaN/Inf values")
    # One column per (z, channel) slice; sums accumulate in float64 so that
    # 57,600-voxel slices keep float32 precision.
    flat = image.reshape(-1, image.shape[2] * image.shape[3])
    mean = flat.mean(axis=0, dtype=np.float64)
    mean_sq = np.einsum("ij,ij->j", flat, flat, dtype=np.float64) / flat.shape[0]
    std = np.sqrt(np.maximum(mean_sq - mean**2, 0.0))
    # a spread below float32 resolution of the mean is a constant slice
    varies = std > 1e-7 * np.maximum(np.abs(mean), np.finfo(np.float32).tiny)
    scale = np.divide(1.0, std, out=np.zeros_like(std), where=varies)
    out = (flat - mean.astype(np.float32)) * scale.astype(np.float32)
    return out.reshape(image.shape)


def standardize_nonzero(image: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """Z-score each channel over the brain only; the background stays 0.

    This is what nnU-Net and MONAI (``NormalizeIntensity(nonzero=True,
    channel_wise=True)``) do for skull-stripped MRI: statistics come from
    the brain, not from the zeros around it, and the whole volume shares them,
    so a slice near the top of the head is scaled like one through the middle.

    Args:
        image: ``(x, y, z, C)``.
        mask: ``(x, y, z)`` brain mask (default: voxels nonzero in any channel).

    Returns:
        float32 array of the same shape; zero outside the mask.
    """
    image = np.asarray(image, dtype=np.float32)
    _check_channels_last(image)
    if not np.all(np.isfinite(image)):
        raise ValueError(f"image holds {int((~np.isfinite(image)).sum())} NaN/Inf values")
    mask = np.any(image != 0, axis=-1) if mask is None else np.asarray(mask, dtype=bool)
    if mask.shape != image.shape[:3]:
        raise ValueError(f"mask shape {mask.shape} does not match image shape {image.shape[:3]}")
    out = np.zeros_like(image)
    if not mask.any():
        return out
    inside = image[mask]  # (n, C)
    mean = inside.mean(axis=0, dtype=np.float64)
    std = inside.std(axis=0, dtype=np.float64)
    std[std == 0] = 1.0
    out[mask] = ((inside - mean) / std).astype(np.float32)
    return out


def compare_samplers(
    cases,
    n_patches: int = 50,
    patch_shape=ASSIGNMENT_PATCH,
    foreground_fraction: float = FOREGROUND_FRACTION,
    background_threshold: float = 0.95,
    max_tries: int = 1000,
    seed: int = 0,
):
    """Rejection sampling against foreground oversampling on the same cases.

    Args:
        cases: iterable of ``(image, label)`` pairs.
        n_patches: patches drawn per method (spread evenly over the cases).
        patch_shape, foreground_fraction, background_threshold, max_tries: see
            the two samplers.
        seed: both methods are deterministic given it.

    Returns:
        pandas DataFrame with one row per method: draws per patch (mean and
        max), share of patches that contain tumour, and the mean share of each
        class in the patches.
    """
    cases = list(cases)
    rows = {}
    for method in ("rejection (assignment)", "foreground oversampling (nnU-Net)"):
        rng = np.random.default_rng(seed)
        tries, shares, with_tumour, failed = [], [], 0, 0
        for i in range(n_patches):
            image, label = cases[i % len(cases)]
            try:
                if method.startswith("rejection"):
                    patch = rejection_sample(
                        image,
                        label,
                        patch_shape,
                        max_tries=max_tries,
                        background_threshold=background_threshold,
                        rng=rng,
                    )
                else:
                    patch = sample_foreground_patch(
                        image, label, patch_shape, foreground_fraction=foreground_fraction, rng=rng
                    )
            except PatchSamplingError:
                failed += 1
                tries.append(max_tries)
                continue
            tries.append(patch.tries)
            share = patch.y.reshape(-1, patch.y.shape[-1]).mean(axis=0)
            shares.append(share)
            with_tumour += int(share.sum() > 0)
        mean_share = np.mean(shares, axis=0) if shares else np.full(len(CLASS_NAMES), np.nan)
        rows[method] = {
            "draws per patch (mean)": float(np.mean(tries)),
            "draws per patch (max)": int(np.max(tries)),
            "failed": failed,
            "patches with tumour": with_tumour / n_patches,
            **{f"{name} share": float(s) for name, s in zip(CLASS_NAMES, mean_share)},
        }
    return pd.DataFrame(rows).T.round(4)


INTENSITY_SCHEMES = {"nonzero_zscore": standardize_nonzero}
DEFAULT_INTENSITY = "nonzero_zscore"
"""The intensity scheme the course trains with (brain-mask z-score per channel)."""
"""The intensity schemes a run can train with, by the name its plan (and its cache) records.
(The model's ``normalization`` is another thing: a layer inside the U-Net.)"""
