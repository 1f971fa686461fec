"""Evaluation of label maps: per-class Dice / sensitivity / specificity, and the
BraTS regions with Dice and the 95th-percentile Hausdorff distance (HD95), in
two families:

* **legacy** (BraTS up to 2022): one Dice and one HD95 per region over the
  whole scan (:func:`region_scores`);
* **lesion-wise** (BraTS 2023+ ranking): each connected lesion of the truth is
  scored on its own, missed lesions and false-positive blobs count as Dice 0 /
  HD95 374 mm, and the case score is their mean (:func:`lesion_wise_scores`).

Both families' tables (``HD95 WT`` and ``LW HD95 WT`` ...) use the HD95 the
BraTS 2023 organisers rank by (``method="surfels"``, the default of
:func:`hd95`): the surface-distance definition of DeepMind's
``surface-distance`` package, which their lesion-wise script bundles. Two
other definitions stay available because lesson 06 compares them:

* ``"surfels"`` (the tables): the surface is made of surface elements on the
  corners between voxels (a grid offset by half a voxel), one per 2x2x2 block
  that is partly inside, each weighted by its area in mm^2 (marching-cubes
  triangles scaled by the voxel spacing, DeepMind's lookup table). Each
  direction's 95th percentile is the distance at which the cumulative surface
  area first reaches 95% (no interpolation); HD95 is the larger direction;
* ``"voxels"`` (the course's former default): the surface is the
  mask voxels with a 6-neighbour outside, at voxel centres, each counting
  once; the larger of the two directed 95th percentiles, interpolated
  between distances (``np.percentile``);
* ``"pooled"``: the same voxel-centre surfaces with both directions'
  distances pooled into one 95th percentile, as in medpy and ``panoptica``,
  on which the BraTS 2024+ package ``brats-evaluation`` is built.

On 1 mm voxels ``"surfels"`` and ``"voxels"`` mostly agree within a fraction
of a millimetre, but where a far-off part of the surface holds about 5% of
it, counting voxels or weighing area puts the percentile on either side (a
case of benchmarks/compare_official_metrics.py reads 36.4 against 1.0 mm).
On anisotropic voxels they part routinely, by about a millimetre in that
benchmark's 1x1x2 and 1x1x3 mm cases (a tumour one 3 mm slice off: ET
1.414 mm against 2.000 mm). Two reasons: voxel centres sit half a voxel
inside the mask - half a slice along the thick axis, half a pixel in-plane -
while surface elements lie on the boundary itself; and counting voxels gives
every boundary voxel one vote, although with 3 mm slices a voxel's side
faces have three times the area of its top and bottom faces.

Empty masks, documented once and used everywhere (the BraTS convention):

* ground truth and prediction both empty: Dice 1, HD95 0 - nothing to find,
  nothing found;
* exactly one empty: Dice 0, HD95 = the diagonal of the volume in mm (the
  worst possible distance; 373.13 mm on the 240x240x155 1 mm grid), so
  a missed or hallucinated region is penalised rather than dropped. (The
  organisers' 2023 script reports 374 mm for such a legacy HD95; their
  lesion-wise scores, and the course's, give 374 mm to a missed lesion and to
  a false-positive blob.)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np
import pandas as pd
from scipy import ndimage
from surface_distance.lookup_tables import ENCODE_NEIGHBOURHOOD_3D_KERNEL, create_table_neighbour_code_to_surface_area

from ..data.labels import CLASS_NAMES, REGIONS, one_hot


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
    return mask & ~ndimage.binary_erosion(
        mask, structure=ndimage.generate_binary_structure(mask.ndim, 1), border_value=0
    )


HD95_METHODS = ("surfels", "voxels", "pooled")
"""``"surfels"``: DeepMind's area-weighted surface elements, the BraTS 2023 organisers' (the tables);
``"voxels"``: voxel-centre surfaces, larger directed percentile; ``"pooled"``: medpy / panoptica."""


@lru_cache(maxsize=32)
def _surfel_area_table(spacing: tuple[float, float, float]) -> np.ndarray:
    """Area in mm^2 of the surface in each of the 256 configurations of a 2x2x2 block (DeepMind's table)."""
    table = np.asarray(create_table_neighbour_code_to_surface_area(spacing), float)
    table.flags.writeable = False
    return table


def _surfels(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Neighbourhood code of every 2x2x2 block of voxels of ``mask``, and where the surface passes.

    The mask is padded with one empty voxel on every side, so a mask touching
    the volume's edge is closed there. Block ``(i, j, k)`` holds the padded
    voxels ``[i:i+2, j:j+2, k:k+2]``: its centre is the corner its eight
    voxels share, half a voxel off the voxel centres. Its code has one bit per voxel
    (weights ``ENCODE_NEIGHBOURHOOD_3D_KERNEL``, 128 for the lowest corner);
    the surface passes through the blocks that are neither empty (0) nor full (255).
    """
    padded = np.pad(mask, 1).astype(np.uint8)
    n = tuple(s - 1 for s in padded.shape)
    code = np.zeros(n, np.uint8)
    for offset in np.ndindex(2, 2, 2):
        weight = np.uint8(ENCODE_NEIGHBOURHOOD_3D_KERNEL[offset])
        code += padded[tuple(slice(o, o + m) for o, m in zip(offset, n))] * weight
    return code, (code != 0) & (code != 255)


def _area_percentile(distances: np.ndarray, areas: np.ndarray, percent: float) -> float:
    """The distance at which the cumulative surface area (sorted by distance) first reaches ``percent``."""
    order = np.lexsort((areas, distances))  # by distance, then area
    distances, areas = distances[order], areas[order]
    cumulative = np.cumsum(areas) / np.sum(areas)
    return float(distances[min(int(np.searchsorted(cumulative, percent / 100.0)), len(distances) - 1)])


def _surfel_hd95(truth: np.ndarray, pred: np.ndarray, spacing: tuple[float, float, float]) -> float:
    """HD95 on surface elements, weighted by area (both masks non-empty)."""
    box = ndimage.find_objects((truth | pred).astype(np.uint8))[0]
    code_t, border_t = _surfels(truth[box])
    code_p, border_p = _surfels(pred[box])
    areas = _surfel_area_table(spacing)
    to_pred = ndimage.distance_transform_edt(~border_p, sampling=spacing)[border_t]
    to_truth = ndimage.distance_transform_edt(~border_t, sampling=spacing)[border_p]
    return max(
        _area_percentile(to_pred, areas[code_t[border_t]], 95),
        _area_percentile(to_truth, areas[code_p[border_p]], 95),
    )


def hd95(truth: np.ndarray, pred: np.ndarray, spacing=(1.0, 1.0, 1.0), method: str = "surfels") -> float:
    """95th-percentile symmetric Hausdorff distance between two masks, in mm.

    Args:
        truth, pred: boolean 3-D masks of one shape.
        spacing: voxel size in mm.
        method: ``"surfels"`` (default, the course's tables and the BraTS 2023
            organisers' definition): surface elements between voxels weighted
            by their area, the distance where the cumulative area reaches 95%,
            the larger of the two directions; ``"voxels"``: surface voxels (a
            6-neighbour outside) at voxel centres, the larger of the two
            directed 95th percentiles (interpolated); ``"pooled"``: the same
            voxels, both directions' distances in one 95th percentile (medpy,
            panoptica / BraTS 2024+). See the module docstring for why they
            differ, most on anisotropic voxels.

    Returns:
        HD95 in mm. Empty masks: see the module docstring.
    """
    if method not in HD95_METHODS:
        raise ValueError(f"method must be one of {HD95_METHODS}; found {method!r}")
    truth, pred = np.asarray(truth, bool), np.asarray(pred, bool)
    if truth.shape != pred.shape:
        raise ValueError(f"mask shapes differ: {truth.shape} and {pred.shape}")
    spacing = tuple(float(s) for s in spacing)
    if len(spacing) != truth.ndim:
        raise ValueError(f"spacing must give one size per mask axis ({truth.ndim}); found {spacing}")
    if not truth.any() and not pred.any():
        return 0.0
    if not truth.any() or not pred.any():
        return float(np.sqrt(np.sum((np.asarray(truth.shape) * np.asarray(spacing)) ** 2)))
    if method == "surfels":
        if truth.ndim != 3:
            raise ValueError(f"method 'surfels' needs 3-D masks; found shape {truth.shape}")
        return _surfel_hd95(truth, pred, spacing)
    s_truth, s_pred = _surface(truth), _surface(pred)
    to_truth = ndimage.distance_transform_edt(~s_truth, sampling=spacing)[s_pred]
    to_pred = ndimage.distance_transform_edt(~s_pred, sampling=spacing)[s_truth]
    if method == "pooled":
        return float(np.percentile(np.concatenate([to_truth, to_pred]), 95))
    return float(max(np.percentile(to_truth, 95), np.percentile(to_pred, 95)))


# ----------------------------------------------------------------------------
# Lesion-wise scores (BraTS 2023+)
# ----------------------------------------------------------------------------

LESION_MISS_HD95 = 374.0
"""HD95 (mm) of a missed lesion or a false-positive blob in the lesion-wise scores."""

LESION_WISE_PARAMS = {
    "GLI": (3, 50.0),
    "SSA": (3, 50.0),
    "PED": (3, 50.0),
    "MEN": (1, 50.0),
    "MET": (1, 2.0),
}
"""Per BraTS 2023 sub-challenge: (dilation iterations, lesion volume threshold in mm^3),
from the organisers' script. The course scores gliomas: ``GLI``."""

_CONNECTIVITY_26 = ndimage.generate_binary_structure(3, 3)
_DILATION_18 = ndimage.generate_binary_structure(3, 2)


@dataclass
class LesionWiseResult:
    """Lesion-wise scores of one region of one case.

    Attributes:
        dice: mean Dice over the truth lesions above the volume threshold and
            the false-positive blobs (which score 0).
        hd95: the same mean of HD95 (missed lesions and false positives 374 mm).
        n_tp: truth lesions (above the threshold) that a predicted blob touches.
        n_fn: truth lesions (above the threshold) that nothing touches.
        n_fp: predicted blobs that touch no truth lesion.
        lesions: per truth lesion ``(volume mm^3, dice, hd95, counted)``.
    """

    dice: float
    hd95: float
    n_tp: int
    n_fn: int
    n_fp: int
    lesions: list[tuple[float, float, float, bool]] = field(default_factory=list)


def _crop(masks: list[np.ndarray], pad: int) -> tuple[slice, ...]:
    """Bounding box of the union of ``masks``, grown by ``pad`` voxels (clipped)."""
    union = np.logical_or.reduce(masks)
    box = ndimage.find_objects(union.astype(np.uint8))[0]
    return tuple(slice(max(0, s.start - pad), min(n, s.stop + pad)) for s, n in zip(box, union.shape))


def lesion_wise_region(
    truth: np.ndarray,
    pred: np.ndarray,
    spacing=(1.0, 1.0, 1.0),
    dilation: int = 3,
    min_volume: float = 50.0,
    hd95_method: str = "surfels",
) -> LesionWiseResult:
    """Lesion-wise Dice and HD95 of two masks, as the BraTS 2023 organisers define them.

    1. Truth lesions are the 26-connected components of the truth; lesions
       whose dilations (``dilation`` iterations of the 18-neighbour cross)
       touch are merged into one, so a lesion and its close satellite count once.
    2. Predicted blobs are the 26-connected components of the prediction. A
       truth lesion is matched by every blob that touches the lesion dilated
       ``dilation`` times; its Dice and HD95 are taken against the union of
       those blobs (Dice 0, HD95 374 mm if none: the organisers' script turns
       the infinite distance to a missing surface into 374 mm, just over the
       373.13 mm diagonal of the BraTS grid). HD95 is :func:`hd95` with
       ``hd95_method``; the default is the organisers' definition.
    3. Truth lesions of ``min_volume`` mm^3 or less are left out of the score
       (detected or not); blobs that match no lesion are false positives,
       each scoring Dice 0 and HD95 374 mm.
    4. The case score is the mean over counted lesions and false positives;
       with neither (both masks empty) Dice is 1 and HD95 0.

    Args:
        truth, pred: boolean masks of one shape (one region, e.g. WT).
        spacing: voxel size in mm (volumes and distances).
        dilation: dilation iterations (3 for gliomas).
        min_volume: lesion volume threshold in mm^3 (50 for gliomas).
        hd95_method: ``"surfels"`` (the organisers') or another of :data:`HD95_METHODS`, see :func:`hd95`.

    Returns:
        A :class:`LesionWiseResult`.
    """
    truth, pred = np.asarray(truth, bool), np.asarray(pred, bool)
    if truth.shape != pred.shape or truth.ndim != 3:
        raise ValueError(f"expected two 3-D masks of one shape; found {truth.shape} and {pred.shape}")
    voxel = float(np.prod(np.asarray(spacing, float)))
    pred_cc, _ = ndimage.label(pred, _CONNECTIVITY_26)
    dilated = ndimage.binary_dilation(truth, _DILATION_18, iterations=dilation) if dilation else truth
    merged_cc, n_lesions = ndimage.label(dilated, _CONNECTIVITY_26)
    lesion_ids = np.where(truth, merged_cc, 0)  # truth voxels labelled by their merged lesion
    matched_all: set[int] = set()
    lesions, dice_sum, hd_sum, n_tp, n_fn = [], 0.0, 0.0, 0, 0
    for j, box in enumerate(ndimage.find_objects(lesion_ids), start=1):
        if box is None:
            continue
        box = tuple(slice(max(0, s.start - dilation), min(n, s.stop + dilation)) for s, n in zip(box, truth.shape))
        lesion_box = lesion_ids[box] == j
        reach = ndimage.binary_dilation(lesion_box, _DILATION_18, iterations=dilation) if dilation else lesion_box
        ids = np.unique(pred_cc[box][reach])
        ids = ids[ids > 0]
        matched_all.update(ids.tolist())
        lesion = lesion_ids == j
        volume = float(lesion.sum()) * voxel
        if len(ids):
            blobs = np.isin(pred_cc, ids)
            crop = _crop([lesion, blobs], 1)
            d = dice_score(lesion[crop], blobs[crop])
            h = hd95(lesion[crop], blobs[crop], spacing, hd95_method)
        else:
            d, h = 0.0, LESION_MISS_HD95
        counted = volume > min_volume
        lesions.append((volume, d, h, counted))
        if counted:
            dice_sum, hd_sum = dice_sum + d, hd_sum + h
            n_tp, n_fn = n_tp + bool(len(ids)), n_fn + (not len(ids))
    n_fp = int(pred_cc.max()) - len(matched_all)
    n = n_tp + n_fn + n_fp
    if n == 0:
        return LesionWiseResult(1.0, 0.0, 0, 0, 0, lesions)
    return LesionWiseResult(dice_sum / n, (hd_sum + LESION_MISS_HD95 * n_fp) / n, n_tp, n_fn, n_fp, lesions)


def lesion_wise_scores(
    truth_label: np.ndarray,
    pred_label: np.ndarray,
    spacing=(1.0, 1.0, 1.0),
    challenge: str = "GLI",
    hd95_method: str = "surfels",
) -> dict[str, float]:
    """Lesion-wise Dice and HD95 of the BraTS regions (the 2023+ ranking metrics).

    Args:
        truth_label, pred_label: label maps in the MSD values.
        spacing: voxel size in mm.
        challenge: key of :data:`LESION_WISE_PARAMS` (dilation, volume threshold).
        hd95_method: ``"surfels"`` (the tables, the organisers') or another of :data:`HD95_METHODS`.

    Returns:
        ``{"LW Dice WT": ..., "LW Dice TC": ..., "LW Dice ET": ..., "LW HD95 WT": ...}``.
    """
    truth_label, pred_label = np.asarray(truth_label), np.asarray(pred_label)
    if truth_label.shape != pred_label.shape:
        raise ValueError(f"label shapes differ: {truth_label.shape} and {pred_label.shape}")
    if challenge not in LESION_WISE_PARAMS:
        raise ValueError(f"challenge must be one of {sorted(LESION_WISE_PARAMS)}; found {challenge!r}")
    dilation, min_volume = LESION_WISE_PARAMS[challenge]
    scores = {}
    for region, values in REGIONS.items():
        result = lesion_wise_region(
            np.isin(truth_label, values), np.isin(pred_label, values), spacing, dilation, min_volume, hd95_method
        )
        scores[f"LW Dice {region}"], scores[f"LW HD95 {region}"] = result.dice, result.hd95
    return scores


def region_dice(truth_label: np.ndarray, pred_label: np.ndarray) -> dict[str, float]:
    """Dice of the BraTS regions: ``{"WT": ..., "TC": ..., "ET": ...}``.

    Taught in lesson 06, exercise 2.

    WT = labels {1, 2, 3}, TC = {2, 3}, ET = {3}. A region empty in both maps
    scores 1.0; empty in exactly one, 0.0.
    """
    truth_label, pred_label = np.asarray(truth_label), np.asarray(pred_label)
    if truth_label.shape != pred_label.shape:
        raise ValueError(f"label shapes differ: {truth_label.shape} and {pred_label.shape}")
    return {
        region: dice_score(np.isin(truth_label, values), np.isin(pred_label, values))
        for region, values in REGIONS.items()
    }


def region_scores(
    truth_label: np.ndarray,
    pred_label: np.ndarray,
    spacing=(1.0, 1.0, 1.0),
    with_hd95: bool = True,
    lesion_wise: bool = False,
) -> dict[str, float]:
    """Dice (and HD95, IoU) of the BraTS regions WT {1,2,3}, TC {2,3}, ET {3}.

    Args:
        truth_label, pred_label: label maps in the MSD values.
        spacing: voxel size in mm.
        with_hd95: also the HD95 columns (``"surfels"``, the organisers' definition, see :func:`hd95`).
        lesion_wise: also the lesion-wise columns of :func:`lesion_wise_scores`
            (glioma parameters; without ``with_hd95`` only ``LW Dice``).

    Returns:
        ``{"Dice WT": ..., "Dice TC": ..., "Dice ET": ..., "HD95 WT": ..., "IoU WT": ...}``
        (plus ``"LW Dice WT"``, ``"LW HD95 WT"`` ... with ``lesion_wise``).
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
    if lesion_wise:
        lw = lesion_wise_scores(truth_label, pred_label, spacing)
        scores.update({k: v for k, v in lw.items() if with_hd95 or "HD95" not in k})
    return scores


INTERIOR_DEPTH = 2
"""A missed voxel this many voxels or more inside the true whole tumour is an interior miss, not a rim."""


def whole_tumour_errors(truth_label: np.ndarray, pred_label: np.ndarray, depth: int = INTERIOR_DEPTH) -> dict:
    """Where the whole-tumour errors of a label map sit: interior misses and enclosed holes.

    * ``misses``: true tumour voxels predicted as background (false negatives);
    * ``interior_misses``: those ``depth`` or more voxels inside the true tumour
      (Euclidean distance in voxels to the nearest non-tumour voxel; the
      tumour's outer layer is at 1): holes in the prediction, not a thin rim
      along its border;
    * ``interior_miss_share``: their share of the misses (0 without misses);
    * ``predicted``: predicted tumour voxels; ``holes``: background voxels the
      predicted tumour encloses in 3-D (:func:`scipy.ndimage.binary_fill_holes`);
      ``hole_share``: ``holes / predicted`` (0 without a prediction).
    """
    truth, pred = np.asarray(truth_label) > 0, np.asarray(pred_label) > 0
    if truth.shape != pred.shape:
        raise ValueError(f"label shapes differ: {truth.shape} and {pred.shape}")
    misses = truth & ~pred
    n_misses = int(misses.sum())
    interior = int((ndimage.distance_transform_edt(truth)[misses] >= depth).sum()) if n_misses else 0
    n_pred = int(pred.sum())
    holes = int((ndimage.binary_fill_holes(pred) & ~pred).sum()) if n_pred else 0
    return {
        "misses": n_misses,
        "interior_misses": interior,
        "interior_miss_share": interior / n_misses if n_misses else 0.0,
        "predicted": n_pred,
        "holes": holes,
        "hole_share": holes / n_pred if n_pred else 0.0,
    }


def compute_class_sens_spec(pred, label, class_num):
    """Sensitivity and specificity of one class.

    Taught in lesson 04, exercise 4.

    Args:
        pred: binary prediction, channels-last ``(..., C)``.
        label: binary ground truth of the same shape.
        class_num: the channel to evaluate.

    Returns:
        ``(sensitivity, specificity)`` as floats: TP / (TP + FN) and
        TN / (TN + FP). A ratio whose denominator is 0 is undefined and comes
        back as NaN (no positive voxels in ``label`` for the sensitivity, no
        negative voxels for the specificity); pandas skips NaN in means.
    """
    pred, label = np.asarray(pred), np.asarray(label)
    if pred.shape != label.shape:
        raise ValueError(f"pred shape {pred.shape} differs from label shape {label.shape}")
    p = pred[..., class_num].astype(bool)
    t = label[..., class_num].astype(bool)
    tp = np.sum(p & t)
    tn = np.sum(~p & ~t)
    fp = np.sum(p & ~t)
    fn = np.sum(~p & t)
    sensitivity = tp / (tp + fn) if tp + fn > 0 else np.nan
    specificity = tn / (tn + fp) if tn + fp > 0 else np.nan
    return float(sensitivity), float(specificity)


def get_sens_spec_df(pred, label):
    """Sensitivity and specificity of each class as a table.

    Taught in lesson 04, exercise 5.

    Args:
        pred, label: binary ``(..., 3)`` arrays (edema, non-enhancing, enhancing).

    Returns:
        DataFrame with columns Edema / Non-enhancing tumour / Enhancing tumour and
        rows Sensitivity / Specificity, rounded to 4 decimals.
    """
    table = pd.DataFrame(index=["Sensitivity", "Specificity"], columns=list(CLASS_NAMES), dtype=float)
    for class_num, name in enumerate(CLASS_NAMES):
        table.loc[:, name] = compute_class_sens_spec(pred, label, class_num)
    return table.round(4)


def class_scores(truth_label: np.ndarray, pred_label: np.ndarray) -> pd.DataFrame:
    """Per-class Dice, sensitivity and specificity of two label maps (the assignment's table).

    Returns:
        DataFrame, columns the three classes, rows Dice / Sensitivity /
        Specificity (NaN where a denominator is 0, see ``compute_class_sens_spec``).
    """
    truth, pred = one_hot(truth_label).astype(bool), one_hot(pred_label).astype(bool)
    table = pd.DataFrame(index=["Dice", "Sensitivity", "Specificity"], columns=list(CLASS_NAMES), dtype=float)
    for k, name in enumerate(CLASS_NAMES):
        table.loc["Dice", name] = dice_score(truth[..., k], pred[..., k])
        table.loc[["Sensitivity", "Specificity"], name] = compute_class_sens_spec(pred, truth, k)
    return table.round(4)


def evaluate_cases(pairs, with_hd95: bool = True, lesion_wise: bool = True, with_classes: bool = False) -> pd.DataFrame:
    """One row of region scores per case, then ``mean`` and ``median`` rows.

    Args:
        pairs: iterable of ``(case_id, truth_label, pred_label, spacing)``.
        with_hd95: also the HD95 columns (``"surfels"``, the organisers' definition).
        lesion_wise: also the lesion-wise columns (``LW Dice WT`` ...).
        with_classes: also the Dice of each class (``Dice Edema`` ...) and
            their mean (``Dice mean (classes)``).
    """
    rows = {}
    for case_id, t, p, spacing in pairs:
        rows[case_id] = region_scores(t, p, spacing, with_hd95, lesion_wise)
        if with_classes:
            for k, name in enumerate(CLASS_NAMES, start=1):
                rows[case_id][f"Dice {name}"] = dice_score(t == k, p == k)
    table = pd.DataFrame.from_dict(rows, orient="index")
    if with_classes:
        table["Dice mean (classes)"] = table[[f"Dice {n}" for n in CLASS_NAMES]].mean(axis=1)
    table = pd.concat([table, table.agg(["mean", "median"])]).round(4)
    table.index.name = "case"
    return table
