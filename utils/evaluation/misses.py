"""Where a segmentation goes wrong: a map of the rim and interior misses, and which label became which.

:func:`utils.evaluation.metrics.whole_tumour_errors` counts the whole-tumour
misses and says how many lie in the interior (``INTERIOR_DEPTH`` voxels or
more inside the true tumour: holes) rather than on its rim (a boundary drawn
a little too tight), and how much of the predicted tumour is enclosed holes.
This module adds the pictures' inputs:

* :func:`miss_depths`: the same classification, voxel by voxel, as a map to
  draw (its interior voxels are exactly ``whole_tumour_errors``'s
  ``interior_misses``);
* :func:`label_confusion`: voxel counts of each true label against each
  predicted label, the confusion matrix of the four MSD labels.

Taught in lesson 09.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import ndimage

from ..data.labels import CLASS_NAMES, NUM_CLASSES
from .metrics import INTERIOR_DEPTH

NO_MISS, RIM_MISS, INTERIOR_MISS = 0, 1, 2


def _check_pair(truth_label, pred_label) -> tuple[np.ndarray, np.ndarray]:
    truth, pred = np.asarray(truth_label), np.asarray(pred_label)
    if truth.shape != pred.shape or truth.ndim != 3:
        raise ValueError(f"expected two label maps (x, y, z) of one shape; found {truth.shape} and {pred.shape}")
    return truth, pred


def miss_depths(truth_label, pred_label, depth: int = INTERIOR_DEPTH) -> np.ndarray:
    """Classify each missed whole-tumour voxel as a rim or an interior miss.

    The depth of a tumour voxel is its Euclidean distance, in voxels, to the
    nearest voxel outside the true whole tumour (1 on the outermost layer), as
    in :func:`utils.evaluation.metrics.whole_tumour_errors`.

    Args:
        truth_label, pred_label: label maps ``(x, y, z)`` (0 background).
        depth: misses this deep or deeper are interior misses, the others rim misses.

    Returns:
        uint8 map: :data:`NO_MISS` (0), :data:`RIM_MISS` (1), :data:`INTERIOR_MISS` (2).
    """
    truth, pred = _check_pair(truth_label, pred_label)
    tumour = truth > 0
    missed = tumour & ~(pred > 0)
    out = np.zeros(truth.shape, np.uint8)
    if not missed.any():
        return out
    inside = ndimage.distance_transform_edt(tumour)
    out[missed & (inside < depth)] = RIM_MISS
    out[missed & (inside >= depth)] = INTERIOR_MISS
    return out


def label_confusion(truth_label, pred_label) -> pd.DataFrame:
    """Voxel counts of each true label (rows) against each predicted label (columns), MSD labels 0-3.

    Raises:
        ValueError: for maps of different shapes or a value outside 0-3.
    """
    truth, pred = _check_pair(truth_label, pred_label)
    n = NUM_CLASSES
    for name, label in (("truth", truth), ("prediction", pred)):
        if label.size and (label.min() < 0 or label.max() >= n):
            raise ValueError(f"expected {name} label values 0..{n - 1}; found {sorted(np.unique(label).tolist())}")
    counts = np.bincount(truth.astype(np.int64).ravel() * n + pred.astype(np.int64).ravel(), minlength=n * n)
    names = ["Background", *CLASS_NAMES]
    table = pd.DataFrame(counts.reshape(n, n), index=names, columns=names)
    table.index.name, table.columns.name = "truth", "predicted"
    return table
