"""Label and channel conventions shared by every lesson.

Image channels follow the Medical Segmentation Decathlon (MSD) Task01 order and
label maps the MSD values. BraTS files use other label values; they are mapped
on load: BraTS 2020/2021 with :func:`brats_to_msd`, BraTS 2023+ with
:func:`brats2023_to_msd`.
"""

from __future__ import annotations

import numpy as np

MODALITIES = ("FLAIR", "T1w", "T1gd", "T2w")
"""Channel order of every image array ``(x, y, z, 4)``."""

LABEL_NAMES = {
    0: "background",
    1: "edema",
    2: "non-enhancing tumor",
    3: "enhancing tumour",
}
"""MSD Task01 label values (as written in its ``dataset.json``)."""

NUM_CLASSES = 4
CLASS_NAMES = ("Edema", "Non-enhancing tumour", "Enhancing tumour")
"""One-hot targets drop the background: channel k holds label k + 1."""

CLASS_COLORS = ((1.0, 0.0, 0.0), (0.0, 0.8, 0.0), (0.0, 0.3, 1.0))
"""Edema red, non-enhancing green, enhancing blue."""

REGIONS = {"WT": (1, 2, 3), "TC": (2, 3), "ET": (3,)}
"""BraTS evaluation regions: whole tumour, tumour core, enhancing tumour."""

REGION_NAMES = {"WT": "whole tumour", "TC": "tumour core", "ET": "enhancing tumour"}

BRATS_TO_MSD = {0: 0, 1: 2, 2: 1, 4: 3}
"""BraTS 1 necrotic/non-enhancing core -> 2, 2 edema -> 1, 4 enhancing -> 3."""

MSD_TO_BRATS = {msd: brats for brats, msd in BRATS_TO_MSD.items()}

BRATS2023_TO_MSD = {0: 0, 1: 2, 2: 1, 3: 3}
"""BraTS 2023+ 1 non-enhancing tumour core (NETC) -> 2, 2 surrounding FLAIR
hyperintensity (SNFH, edema) -> 1, 3 enhancing tumour -> 3."""

BRATS2023_REFUSED_LABELS = {
    4: "resection cavity (RC) of the BraTS 2024+ post-treatment glioma data: the course's three "
    "pre-treatment classes have no place for it, and mapping it to tumour or background would "
    "mislabel it; use pre-treatment cases (e.g. the BraTS 2023 GLI training data)",
}
"""BraTS 2023+ label values the course refuses, with the reason."""


def _remap(label: np.ndarray, mapping: dict[int, int], convention: str) -> np.ndarray:
    label = np.asarray(label)
    found = np.unique(label)
    unexpected = sorted(set(found.tolist()) - set(mapping))
    if unexpected:
        raise ValueError(f"expected {convention} label values {sorted(mapping)}; found unexpected values {unexpected}")
    lut = np.zeros(max(mapping) + 1, dtype=np.uint8)
    for src, dst in mapping.items():
        lut[src] = dst
    return lut[label.astype(np.intp)]


def brats_to_msd(label: np.ndarray) -> np.ndarray:
    """Map a BraTS 2020/2021 label map (0, 1, 2, 4) to the MSD values (0-3).

    Args:
        label: integer array with values in {0, 1, 2, 4}.

    Returns:
        uint8 array of the same shape: edema 2 -> 1, core 1 -> 2, enhancing 4 -> 3.

    Raises:
        ValueError: if another value occurs.
    """
    return _remap(label, BRATS_TO_MSD, "BraTS")


def brats2023_to_msd(label: np.ndarray) -> np.ndarray:
    """Map a BraTS 2023+ label map (0-3: NETC, SNFH, ET) to the MSD values (0-3).

    Args:
        label: integer array with values in {0, 1, 2, 3}.

    Returns:
        uint8 array of the same shape: edema (SNFH) 2 -> 1, core (NETC) 1 -> 2,
        enhancing 3 -> 3.

    Raises:
        ValueError: if another value occurs; label 4 (resection cavity) is
            refused with its reason.
    """
    label = np.asarray(label)
    refused = [int(v) for v in BRATS2023_REFUSED_LABELS if np.any(label == v)]
    if refused:
        reasons = "; ".join(f"label {v} is the {BRATS2023_REFUSED_LABELS[v]}" for v in refused)
        raise ValueError(f"expected BraTS 2023+ label values {sorted(BRATS2023_TO_MSD)}; found {refused}: {reasons}")
    return _remap(label, BRATS2023_TO_MSD, "BraTS 2023+")


def msd_to_brats(label: np.ndarray) -> np.ndarray:
    """Map an MSD label map (0-3) back to the BraTS values (0, 1, 2, 4)."""
    return _remap(label, MSD_TO_BRATS, "MSD")


def region_mask(label: np.ndarray, region: str) -> np.ndarray:
    """Return the boolean mask of a BraTS region (``"WT"``, ``"TC"`` or ``"ET"``)."""
    if region not in REGIONS:
        raise ValueError(f"region must be one of {list(REGIONS)}; found {region!r}")
    return np.isin(label, REGIONS[region])


def one_hot(label: np.ndarray, num_classes: int = NUM_CLASSES) -> np.ndarray:
    """One-hot encode a label map without its background channel.

    Args:
        label: integer array ``(x, y, z)`` with values in ``0..num_classes-1``.
        num_classes: number of labels including background.

    Returns:
        float32 array ``(x, y, z, num_classes - 1)``; channel k is label k + 1.
    """
    label = np.asarray(label)
    classes = np.arange(1, num_classes, dtype=label.dtype if label.dtype.kind in "iu" else np.int64)
    return (label[..., None] == classes).astype(np.float32)
