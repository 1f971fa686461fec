"""Where a segmentation goes wrong: misses inside the tumour or on its rim, holes, and which label became which.

A Dice of 0.8 says how much is wrong, not where. Two pictures tell the causes
apart:

* :func:`miss_depths` / :func:`miss_summary`: each whole-tumour voxel the
  prediction misses is either on the **rim** (within ``rim`` voxels of the
  true tumour's edge: a boundary drawn a little too tight, which any
  annotator disagreement also produces) or in the **interior** (deeper: the
  network saw tumour and called it background, a hole). Enclosed holes of
  the predicted tumour (background it surrounds on every side) are counted
  too.
* :func:`label_confusion`: voxel counts of each true label against each
  predicted label, the confusion matrix of the four MSD labels.

Taught in lesson 09.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import ndimage

from ..data.labels import CLASS_NAMES, NUM_CLASSES

RIM_VOXELS = 2
"""A missed whole-tumour voxel within this many voxels of the true tumour's edge is a rim miss; deeper, interior."""

NO_MISS, RIM_MISS, INTERIOR_MISS = 0, 1, 2


def _check_pair(truth_label, pred_label) -> tuple[np.ndarray, np.ndarray]:
    truth, pred = np.asarray(truth_label), np.asarray(pred_label)
    if truth.shape != pred.shape or truth.ndim != 3:
        raise ValueError(f"expected two label maps (x, y, z) of one shape; found {truth.shape} and {pred.shape}")
    return truth, pred


def miss_depths(truth_label, pred_label, rim: int = RIM_VOXELS) -> np.ndarray:
    """Classify each missed whole-tumour voxel as a rim or an interior miss.

    The depth of a tumour voxel is its Euclidean distance, in voxels, to the
    nearest voxel outside the true whole tumour (1 on the outermost layer).

    Args:
        truth_label, pred_label: label maps ``(x, y, z)`` (0 background).
        rim: misses at depth ``<= rim`` are rim misses, deeper ones interior.

    Returns:
        uint8 map: :data:`NO_MISS` (0), :data:`RIM_MISS` (1), :data:`INTERIOR_MISS` (2).
    """
    truth, pred = _check_pair(truth_label, pred_label)
    tumour = truth > 0
    missed = tumour & ~(pred > 0)
    out = np.zeros(truth.shape, np.uint8)
    if not missed.any():
        return out
    depth = ndimage.distance_transform_edt(np.pad(tumour, 1))[1:-1, 1:-1, 1:-1]  # padded: the volume's edge is outside
    out[missed & (depth <= rim)] = RIM_MISS
    out[missed & (depth > rim)] = INTERIOR_MISS
    return out


def enclosed_holes(label) -> np.ndarray:
    """Background voxels that the predicted whole tumour encloses on every side (3-D hole filling)."""
    tumour = np.asarray(label) > 0
    return ndimage.binary_fill_holes(tumour) & ~tumour


def miss_summary(truth_label, pred_label, rim: int = RIM_VOXELS) -> dict[str, float]:
    """Where the whole-tumour misses are, as numbers.

    Returns:
        ``{"WT misses": voxels missed, "interior share": share of them deeper
        than ``rim`` voxels (NaN when nothing is missed), "rim share": the rest,
        "enclosed holes": enclosed hole voxels over the predicted tumour's
        voxels (0 when nothing is predicted)}``.
    """
    depths = miss_depths(truth_label, pred_label, rim)
    missed = int((depths > 0).sum())
    interior = int((depths == INTERIOR_MISS).sum())
    predicted = int((np.asarray(pred_label) > 0).sum())
    holes = int(enclosed_holes(pred_label).sum())
    return {
        "WT misses": float(missed),
        "interior share": interior / missed if missed else float("nan"),
        "rim share": (missed - interior) / missed if missed else float("nan"),
        "enclosed holes": holes / predicted if predicted else 0.0,
    }


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
