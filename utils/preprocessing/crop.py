"""The crop to the brain: its bounding box and the margin kept around it (the cache and prediction share it).

:func:`mask_bbox` is the bounding box of any 3-D mask (lesson 10 scores held-out cases around the tumour's)."""

from __future__ import annotations

import numpy as np

CROP_MARGIN = 2
"""Voxels kept around the brain's bounding box: by the cache, and by whole-case prediction (the same crop).
A trained run records the margin it used in its ``plan.json`` (:mod:`utils.preprocessing.plan`)."""


def brain_bbox(image: np.ndarray, margin: int = 0) -> tuple[tuple[int, int], ...]:
    """``((x0, x1), (y0, y1), (z0, z1))`` of the nonzero voxels, widened by ``margin``."""
    return mask_bbox(np.any(image != 0, axis=-1), margin)


def mask_bbox(mask: np.ndarray, margin: int = 0) -> tuple[tuple[int, int], ...]:
    """``((x0, x1), (y0, y1), (z0, z1))`` of the true voxels of a 3-D mask, widened by ``margin``
    (clipped to the volume); the whole volume when the mask is empty."""
    mask = np.asarray(mask, bool)
    if not mask.any():
        return tuple((0, s) for s in mask.shape[:3])
    box = []
    for axis in range(3):
        other = tuple(a for a in range(3) if a != axis)
        present = np.flatnonzero(mask.any(axis=other))
        box.append((max(int(present[0]) - margin, 0), min(int(present[-1]) + 1 + margin, mask.shape[axis])))
    return tuple(box)
