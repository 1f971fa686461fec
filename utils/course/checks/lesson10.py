"""Checks of lesson 10 (transfer learning): shuffle_block, the block of Models Genesis's local pixel shuffling.

The answer is random, so the tests check what every correct answer shares,
never which order it drew: outside the block nothing changes; inside it each
channel keeps its own values, in a new order; each channel has its own order;
the seed decides the order. Each voxel of the inputs holds a value no other
voxel holds, and each channel its own range of values, so where every value
came from can be traced.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from .runner import Mismatch, Run, exercise, run_check

LESSON = "10_transfer_learning"


def _traceable(shape, rng: np.random.Generator) -> np.ndarray:
    """A float32 patch whose values are all different, channel ``c`` in ``[1000 c, 1000 c + 1000)``."""
    voxels = int(np.prod(shape[:3]))
    channels = [1000.0 * c + rng.permutation(voxels) * (999.0 / voxels) for c in range(shape[3])]
    return np.stack([v.reshape(shape[:3]) for v in channels], axis=-1).astype(np.float32)


def _window(start, size) -> tuple[slice, ...]:
    return tuple(slice(int(s), int(s) + int(n)) for s, n in zip(start, size))


def _as_array(got: Any, patch: np.ndarray) -> np.ndarray:
    if not isinstance(got, np.ndarray):
        raise AssertionError(f"expected a NumPy array like the patch; got {type(got).__name__}")
    if got.shape != patch.shape:
        raise Mismatch("the shape of the result", patch.shape, got.shape)
    if got.dtype != patch.dtype:
        raise Mismatch(
            "the dtype of the result", patch.dtype, got.dtype, "the result must be a copy of the patch: keep its dtype"
        )
    return got


def _slabs_only(block: np.ndarray, got: np.ndarray) -> bool:
    """Whether ``got`` is ``block`` with whole slabs along the first axis reordered (and something moved)."""
    if np.array_equal(block, got) or block.shape[0] < 2:
        return False
    original = sorted(block[i].tobytes() for i in range(block.shape[0]))
    return original == sorted(got[i].tobytes() for i in range(got.shape[0]))


def _expect_shuffled(what: str, patch: np.ndarray, start, size, got: Any) -> None:
    """Every property a correct ``shuffle_block(patch, start, size, seed)`` has; a Mismatch naming the first broken one."""
    got = _as_array(got, patch)
    window = _window(start, size)
    outside = np.ones(patch.shape[:3], bool)
    outside[window] = False
    changed = int(np.any(got[outside] != patch[outside], axis=-1).sum())
    if changed:
        whole = all(
            sorted(got[..., c].ravel()) == sorted(patch[..., c].ravel()) for c in range(patch.shape[-1])
        ) and not np.array_equal(got[window], patch[window])
        block_edge = tuple(slice(int(s), int(s) + int(n) + 1) for s, n in zip(start, size))
        beyond = np.ones(patch.shape[:3], bool)
        beyond[block_edge] = False
        hint = ""
        if whole and not np.any(got[beyond] != patch[beyond]):
            hint = "the block is one voxel too large on some axis: patch[s:s + n] holds n voxels (no + 1)"
        elif whole:
            hint = "values moved across the whole patch: shuffle only patch[x0:x0+bx, y0:y0+by, z0:z0+bz]"
        raise Mismatch(f"{what}: voxels outside the block that changed", 0, changed, hint)
    block, new = patch[window], got[window]
    channels = block.shape[-1]
    for c in range(channels):
        if sorted(new[..., c].ravel()) != sorted(block[..., c].ravel()):
            mixed = sorted(new.ravel()) == sorted(block.ravel())
            hint = (
                "values moved between channels: shuffle the voxels (rows of block.reshape(-1, C)), "
                "each channel's values stay in that channel"
                if mixed
                else ""
            )
            raise Mismatch(
                f"{what}: channel {c} inside the block holds its own values, reordered",
                "the same values",
                "other values",
                hint,
            )
    if np.array_equal(new, block):
        raise Mismatch(
            f"{what}: the block's voxels in a new order",
            "a new order",
            "the original order",
            "the block came back unchanged: was the shuffled copy written back into the result? "
            "(or the block cut with a wrong end: it is patch[x0:x0 + bx, ...])",
        )
    if _slabs_only(block, new):
        raise Mismatch(
            f"{what}: the block's voxels in a new order",
            "voxels shuffled one by one",
            "whole slabs along x moved",
            "rng.shuffle / np.random.shuffle of a 4-D block only reorders its first axis: "
            "flatten the voxels first (block.reshape(-1, C))",
        )
    # trace each channel's order: where did every voxel's value come from?
    orders = []
    for c in range(channels):
        source = np.argsort(block[..., c].ravel())
        rank = np.searchsorted(block[..., c].ravel()[source], new[..., c].ravel())
        orders.append(source[rank])
    if channels > 1 and all(np.array_equal(orders[0], o) for o in orders[1:]):
        raise Mismatch(
            f"{what}: each channel in its own random order",
            "different orders",
            "one order shared by every channel",
            "one permutation moved every channel together: draw a new order for each channel",
        )


@exercise("shuffle_block", LESSON)
def _shuffle_block_tests(shuffle_block: Callable, run: Run, grading: bool) -> None:
    """Tests of ``shuffle_block`` (lesson 10, exercise 1)."""
    rng = run.rng(100)
    shape = (13, 11, 9, 4) if grading else (12, 10, 8, 4)
    patch = _traceable(shape, rng)
    if run.hidden:
        size = tuple(int(rng.integers(3, 6)) for _ in range(3))
        start = tuple(int(rng.integers(1, s - n)) for s, n in zip(shape[:3], size))
    else:
        start, size = ((3, 2, 2), (5, 4, 3)) if grading else ((2, 3, 1), (4, 3, 5))
    seed = 21 if grading else 7

    def interior():
        _expect_shuffled(
            f"shuffle_block(patch, {start}, {size}, {seed})",
            patch,
            start,
            size,
            shuffle_block(patch, start, size, seed),
        )

    def corner():
        end = tuple(s - n for s, n in zip(shape[:3], (4, 3, 3)))
        for where, edge in (("(0, 0, 0)", (0, 0, 0)), (f"{end} (touching the far edges)", end)):
            got = shuffle_block(patch, edge, (4, 3, 3), seed)
            _expect_shuffled(f"a block at {where}", patch, edge, (4, 3, 3), got)

    def two_channels():
        small = _traceable((9, 8, 7, 2), run.rng(101))
        _expect_shuffled(
            "a 2-channel patch", small, (1, 1, 1), (4, 4, 3), shuffle_block(small, (1, 1, 1), (4, 4, 3), seed)
        )

    def seeded():
        first = shuffle_block(patch, start, size, seed)
        again = shuffle_block(patch, start, size, seed)
        if not np.array_equal(np.asarray(first), np.asarray(again)):
            raise Mismatch(
                f"two calls with seed={seed}",
                "the same result",
                "different results",
                "the order must come from the seed: rng = np.random.default_rng(seed)",
            )
        other = shuffle_block(patch, start, size, seed + 1)
        if np.array_equal(np.asarray(first), np.asarray(other)):
            shuffled = not np.array_equal(np.asarray(first), patch)  # else the seed had nothing to decide
            raise Mismatch(
                f"seed={seed} and seed={seed + 1}",
                "different orders",
                "the same order",
                "the seed argument is not used: rng = np.random.default_rng(seed)" if shuffled else "",
            )

    run.test("only the block changes, each channel keeps its values in a new order", interior)
    run.test("blocks at the patch's corners", corner)
    run.test("any number of channels", two_channels)
    run.test("the seed decides the order", seeded)


def check_shuffle_block(shuffle_block: Callable) -> None:
    """Public tests of ``shuffle_block``: prints ✔/✘ lines, raises ExerciseCheckError on failure."""
    run_check("shuffle_block", shuffle_block)
