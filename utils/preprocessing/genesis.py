"""Models Genesis's distortions of a patch (Zhou et al., MICCAI 2019; Medical Image Analysis 2021).

The pretext task of lesson 10's self-supervised pretraining
(:mod:`utils.training.pretrain`): a patch is distorted and a U-Net learns to
restore it. The definitions follow the authors' code
(github.com/MrGiovanni/ModelsGenesis, ``utils.py``) on arrays
``(x, y, z, C)`` scaled to [0, 1] per channel (:func:`to_unit`); each channel
is its own image (its own Bézier curve, its own shuffles), since Models
Genesis works on single-channel CT:

* :func:`nonlinear_intensity` - every intensity through a random monotonic
  cubic Bézier curve from (0, 0) to (1, 1), increasing or (half the time)
  decreasing;
* :func:`local_pixel_shuffling` - voxels shuffled within many small blocks
  (1 voxel to a tenth of the patch per axis; one block: :func:`shuffle_block`);
* :func:`in_paint` - up to five boxes of a sixth to a third of each axis
  replaced by uniform noise; :func:`out_paint` - the patch replaced by noise
  except one to five windows of three to four sevenths of each axis.

:func:`distort` applies them with the rates of a
:class:`utils.config.PretrainConfig` (Models Genesis's: 0.5 shuffling, 0.9
non-linear, 0.9 painting of which 0.2 in-painting) and scales back.
"""

from __future__ import annotations

import numpy as np

from ..config import PretrainConfig

GENESIS_BLOCKS_PER_VOXEL = 10_000 / (64 * 64 * 32)
"""Models Genesis shuffles 10 000 blocks in a 64x64x32 cube; the same density in any patch."""


def bezier_curve(rng: np.random.Generator, points: int = 1000) -> tuple[np.ndarray, np.ndarray]:
    """A random monotonic intensity curve: a cubic Bézier from (0, 0) to (1, 1), increasing or (half the time) decreasing.

    Returns:
        ``(x, y)``: ``x`` increasing in [0, 1], ``y`` the new intensity of ``x``.
    """
    (x1, y1), (x2, y2) = rng.random((2, 2))
    t = np.linspace(0.0, 1.0, points)
    weights = np.stack([(1 - t) ** 3, 3 * t * (1 - t) ** 2, 3 * t**2 * (1 - t), t**3])
    xs = np.sort(weights.T @ np.array([0.0, x1, x2, 1.0]))
    ys = np.sort(weights.T @ np.array([0.0, y1, y2, 1.0]))
    return xs, (ys if rng.random() < 0.5 else ys[::-1].copy())


def nonlinear_intensity(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Models Genesis's non-linear transform: each channel through its own random Bézier curve (:func:`bezier_curve`)."""
    out = np.empty_like(x)
    for c in range(x.shape[-1]):
        xs, ys = bezier_curve(rng)
        out[..., c] = np.interp(x[..., c], xs, ys)
    return out


def _shuffle_into(out: np.ndarray, source: np.ndarray, start, size, rng: np.random.Generator) -> None:
    """Write into ``out`` the block ``source[start:start+size]`` with its voxels shuffled, each channel on its own."""
    window = tuple(slice(int(s), int(s) + int(n)) for s, n in zip(start, size))
    block = source[window]
    flat = block.reshape(-1, block.shape[-1])
    out[window] = rng.permuted(flat, axis=0).reshape(block.shape)  # one permutation per column (channel)


def shuffle_block(patch: np.ndarray, start, size, seed: int) -> np.ndarray:
    """A copy of ``patch`` with the voxels of one block shuffled, each channel with its own random order.

    Taught in lesson 10, exercise 1.

    Args:
        patch: ``(x, y, z, C)`` array.
        start: the block's corner ``(x0, y0, z0)``.
        size: the block's size ``(bx, by, bz)``.
        seed: seed of the random order (the same seed gives the same result).

    Returns:
        A new array like ``patch``: inside the block, each channel's values
        are permuted among the block's voxels; outside it, unchanged.
    """
    patch = np.asarray(patch)
    out = patch.copy()
    _shuffle_into(out, patch, start, size, np.random.default_rng(seed))
    return out


def local_pixel_shuffling(x: np.ndarray, rng: np.random.Generator, blocks: int | None = None) -> np.ndarray:
    """Models Genesis's local pixel shuffling: many small blocks (1 to a tenth of the patch per axis), each shuffled.

    Each block is cut from the original ``x`` (as Models Genesis does) and
    written, shuffled, into the result; ``blocks`` defaults to Models
    Genesis's density (:data:`GENESIS_BLOCKS_PER_VOXEL`).
    """
    shape = np.array(x.shape[:3])
    out = x.copy()
    count = blocks if blocks is not None else max(1, round(GENESIS_BLOCKS_PER_VOXEL * float(np.prod(shape))))
    biggest = np.maximum(shape // 10, 1)
    sizes = rng.integers(1, biggest + 1, size=(count, 3))
    starts = rng.integers(0, shape - sizes + 1)
    for start, size in zip(starts, sizes):
        _shuffle_into(out, x, start, size, rng)
    return out


def _box(rng: np.random.Generator, shape, low: np.ndarray, high: np.ndarray) -> tuple[slice, ...]:
    """A box of size in [low, high] per axis, at least 3 voxels from the border where it fits (Models Genesis)."""
    shape = np.array(shape)
    size = np.minimum(rng.integers(low, high + 1), shape)
    first = np.minimum(3, shape - size)
    last = np.maximum(first, shape - size - 3)
    start = rng.integers(first, last + 1)
    return tuple(slice(int(s), int(s + n)) for s, n in zip(start, size))


def in_paint(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Models Genesis's in-painting: up to 5 boxes (a sixth to a third of each axis) replaced by uniform noise."""
    shape = np.array(x.shape[:3])
    out = x.copy()
    for _ in range(5):
        if rng.random() >= 0.95:
            break
        box = _box(rng, shape, np.maximum(shape // 6, 1), np.maximum(shape // 3, 1))
        out[box] = rng.random(out[box].shape, dtype=np.float32)
    return out


def out_paint(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Models Genesis's out-painting: noise everywhere but 1 to 5 windows of 3/7 to 4/7 of each axis."""
    shape = np.array(x.shape[:3])
    out = rng.random(x.shape, dtype=np.float32).astype(x.dtype)
    low, high = np.maximum(3 * shape // 7, 1), np.maximum(4 * shape // 7, 1)
    for i in range(5):
        if i and rng.random() >= 0.95:
            break
        box = _box(rng, shape, low, high)
        out[box] = x[box]
    return out


def to_unit(patch: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``patch`` scaled to [0, 1] per channel, with the offset and span that scale it back."""
    low = patch.min(axis=(0, 1, 2))
    span = patch.max(axis=(0, 1, 2)) - low
    span = np.where(span > 0, span, 1.0).astype(np.float32)
    return ((patch - low) / span).astype(np.float32), low.astype(np.float32), span


def distort(patch: np.ndarray, rng: np.random.Generator, config: PretrainConfig | None = None):
    """One Models Genesis input: ``patch`` (z-scored, ``(x, y, z, C)``) distorted as the rates of ``config`` say.

    Returns:
        ``(distorted, applied)``: float32 like ``patch``, and the names of the
        distortions applied, in order.
    """
    config = config or PretrainConfig()
    x, low, span = to_unit(np.asarray(patch, np.float32))
    applied = []
    if rng.random() < config.local_rate:
        x, _ = local_pixel_shuffling(x, rng), applied.append("local pixel shuffling")
    if rng.random() < config.nonlinear_rate:
        x, _ = nonlinear_intensity(x, rng), applied.append("non-linear intensity")
    if rng.random() < config.paint_rate:
        if rng.random() < config.inpaint_rate:
            x, _ = in_paint(x, rng), applied.append("in-painting")
        else:
            x, _ = out_paint(x, rng), applied.append("out-painting")
    return (x * span + low).astype(np.float32), applied
