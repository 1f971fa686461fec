"""Evaluation of label maps: per-class Dice / sensitivity / specificity, and the
BraTS regions with Dice and the 95th-percentile Hausdorff distance (HD95).

Empty masks, documented once and used everywhere (the BraTS convention):

* ground truth and prediction both empty: Dice 1, HD95 0 - nothing to find,
  nothing found;
* exactly one empty: Dice 0, HD95 = the diagonal of the volume in mm (the
  worst possible distance; 373.13 mm on the 240x240x155 1 mm grid), so
  a missed or hallucinated region is penalised rather than dropped.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import ndimage

from .labels import CLASS_NAMES, REGIONS


def dice_score(truth: np.ndarray, pred: np.ndarray) -> float:
    """Dice of two boolean masks; 1.0 when both are empty."""
    truth, pred = np.asarray(truth, bool), np.asarray(pred, bool)
    total = truth.sum() + pred.sum()
    return 1.0 if total == 0 else float(2.0 * np.logical_and(truth, pred).sum() / total)


def jaccard_score(truth: np.ndarray, pred: np.ndarray) -> float:
    """Intersection over union of two boolean masks; 1.0 when both are empty."""
    truth, pred = np.asarray(truth, bool), np.asarray(pred, bool)
    union = np.logical_or(truth, pred).sum()
    return 1.0 if union == 0 else float(np.logical_and(truth, pred).sum() / union)


def _surface(mask: np.ndarray) -> np.ndarray:
    return mask & ~ndimage.binary_erosion(mask, structure=ndimage.generate_binary_structure(mask.ndim, 1),
                                          border_value=0)


def hd95(truth: np.ndarray, pred: np.ndarray, spacing=(1.0, 1.0, 1.0)) -> float:
    """95th-percentile symmetric Hausdorff distance between two masks, in mm.

    Surfaces are the mask voxels with a 6-neighbour outside the mask; the
    distance of each surface voxel of one mask to the other's surface comes
    from a Euclidean distance transform with the voxel spacing. HD95 is the
    larger of the two directed 95th percentiles. Empty masks: see the module
    docstring.
    """
    truth, pred = np.asarray(truth, bool), np.asarray(pred, bool)
    if truth.shape != pred.shape:
        raise ValueError(f"mask shapes differ: {truth.shape} and {pred.shape}")
    if not truth.any() and not pred.any():
        return 0.0
    if not truth.any() or not pred.any():
        return float(np.sqrt(np.sum((np.asarray(truth.shape) * np.asarray(spacing, float)) ** 2)))
    s_truth, s_pred = _surface(truth), _surface(pred)
    to_truth = ndimage.distance_transform_edt(~s_truth, sampling=spacing)
    to_pred = ndimage.distance_transform_edt(~s_pred, sampling=spacing)
    return float(max(np.percentile(to_truth[s_pred], 95), np.percentile(to_pred[s_truth], 95)))


def region_dice(truth_label: np.ndarray, pred_label: np.ndarray) -> dict[str, float]:
    """Dice of the BraTS regions: ``{"WT": ..., "TC": ..., "ET": ...}``.

    WT = labels {1, 2, 3}, TC = {2, 3}, ET = {3}. A region empty in both maps
    scores 1.0; empty in exactly one, 0.0.
    """
    truth_label, pred_label = np.asarray(truth_label), np.asarray(pred_label)
    if truth_label.shape != pred_label.shape:
        raise ValueError(f"label shapes differ: {truth_label.shape} and {pred_label.shape}")
    return {region: dice_score(np.isin(truth_label, values), np.isin(pred_label, values))
            for region, values in REGIONS.items()}


def region_scores(truth_label: np.ndarray, pred_label: np.ndarray, spacing=(1.0, 1.0, 1.0),
                  with_hd95: bool = True) -> dict[str, float]:
    """Dice (and HD95, IoU) of the BraTS regions WT {1,2,3}, TC {2,3}, ET {3}.

    Returns:
        ``{"Dice WT": ..., "Dice TC": ..., "Dice ET": ..., "HD95 WT": ..., "IoU WT": ...}``.
    """
    truth_label, pred_label = np.asarray(truth_label), np.asarray(pred_label)
    if truth_label.shape != pred_label.shape:
        raise ValueError(f"label shapes differ: {truth_label.shape} and {pred_label.shape}")
    scores = {}
    for region, values in REGIONS.items():
        t, p = np.isin(truth_label, values), np.isin(pred_label, values)
        scores[f"Dice {region}"] = dice_score(t, p)
        scores[f"IoU {region}"] = jaccard_score(t, p)
        if with_hd95:
            scores[f"HD95 {region}"] = hd95(t, p, spacing)
    return scores


def class_scores(truth_label: np.ndarray, pred_label: np.ndarray) -> pd.DataFrame:
    """Per-class Dice, sensitivity and specificity of two label maps (the assignment's table).

    Returns:
        DataFrame, columns the three classes, rows Dice / Sensitivity /
        Specificity (NaN where a denominator is 0, see ``compute_class_sens_spec``).
    """
    from .losses import compute_class_sens_spec

    truth = np.stack([truth_label == k for k in (1, 2, 3)], axis=-1)
    pred = np.stack([pred_label == k for k in (1, 2, 3)], axis=-1)
    table = pd.DataFrame(index=["Dice", "Sensitivity", "Specificity"], columns=list(CLASS_NAMES), dtype=float)
    for k, name in enumerate(CLASS_NAMES):
        table.loc["Dice", name] = dice_score(truth[..., k], pred[..., k])
        table.loc[["Sensitivity", "Specificity"], name] = compute_class_sens_spec(pred, truth, k)
    return table.round(4)


def evaluate_cases(pairs, with_hd95: bool = True) -> pd.DataFrame:
    """One row of region scores per case, then ``mean`` and ``median`` rows.

    Args:
        pairs: iterable of ``(case_id, truth_label, pred_label, spacing)``.
    """
    rows = {case_id: region_scores(t, p, spacing, with_hd95) for case_id, t, p, spacing in pairs}
    table = pd.DataFrame.from_dict(rows, orient="index")
    table = pd.concat([table, table.agg(["mean", "median"])]).round(4)
    table.index.name = "case"
    return table
