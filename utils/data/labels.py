"""Label and channel conventions shared by every lesson.

Image channels follow the Medical Segmentation Decathlon (MSD) Task01 order and
label maps the MSD values. BraTS files use other label values; they are mapped
on load: BraTS 2020/2021 with :func:`brats_to_msd`, BraTS 2023+ with
:func:`brats2023_to_msd`.
"""

from __future__ import annotations

import os

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

PALETTE_ENV = "COURSE_PALETTE"
"""The one colour setting: ``course`` (default) or ``colorblind``."""

PALETTES = {
    "course": {
        "classes": ((1.0, 0.0, 0.0), (0.0, 0.8, 0.0), (0.0, 0.3, 1.0)),
        "class_words": ("red", "green", "blue"),
        "errors": ((1.0, 0.55, 0.0), (0.0, 0.9, 0.9)),
        "error_words": ("orange", "cyan"),
    },
    # Okabe & Ito, "Color Universal Design" (2008): yellow #F0E442, vermilion #D55E00 and sky blue
    # #56B4E9 for the classes (they differ in lightness too, so they stay apart under protanopia,
    # deuteranopia and tritanopia); reddish purple #CC79A7 and blue #0072B2 for the errors.
    "colorblind": {
        "classes": ((240 / 255, 228 / 255, 66 / 255), (213 / 255, 94 / 255, 0.0), (86 / 255, 180 / 255, 233 / 255)),
        "class_words": ("yellow", "vermilion", "sky blue"),
        "errors": ((204 / 255, 121 / 255, 167 / 255), (0.0, 114 / 255, 178 / 255)),
        "error_words": ("reddish purple", "blue"),
    },
}
"""Label colours (RGB in 0-1) by palette: the three classes, then the whole-tumour false
positives and false negatives, each with the words that name them."""

CLASS_COLORS = PALETTES["course"]["classes"]
"""The course colours (edema red, non-enhancing green, enhancing blue); figures use :func:`palette`."""


def palette(name: str | None = None) -> dict:
    """The label colours every figure, viewer and report draws with.

    Args:
        name: ``"course"`` or ``"colorblind"``; default ``$COURSE_PALETTE``, else ``"course"``.

    Returns:
        ``{"name", "classes", "class_words", "errors", "error_words"}``: RGB tuples in 0-1
        (edema, non-enhancing, enhancing; false positive, false negative) and their colour names.

    Raises:
        ValueError: for another name.
    """
    chosen = (name if name is not None else os.environ.get(PALETTE_ENV, "") or "course").strip().lower()
    if chosen not in PALETTES:
        source = "palette" if name is not None else f"${PALETTE_ENV}"
        raise ValueError(f"{source} must be one of {sorted(PALETTES)}; found {chosen!r}")
    return {"name": chosen, **PALETTES[chosen]}


def class_colors(name: str | None = None) -> tuple[tuple[float, float, float], ...]:
    """RGB (0-1) of edema, non-enhancing and enhancing tumour in the chosen palette (:func:`palette`)."""
    return palette(name)["classes"]


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


REGION_ORDER = ("WT", "TC", "ET")
"""Channel order of region targets and region outputs: nested, outermost first."""


def label_to_regions(label: np.ndarray) -> np.ndarray:
    """Region targets of a label map: the nested BraTS regions as channels.

    Region-based training (nnU-Net, BraTS 2020) asks the network for the
    regions the challenge scores instead of the three exclusive classes:
    whole tumour {1, 2, 3}, tumour core {2, 3} and enhancing tumour {3}.
    Taught in lesson 09, exercise 1.

    Args:
        label: integer array ``(x, y, z)`` with MSD values in ``0..3``.

    Returns:
        float32 array ``(x, y, z, 3)``, channels in :data:`REGION_ORDER`.

    Raises:
        ValueError: if the label map holds a value outside ``0..3``.
    """
    label = np.asarray(label)
    found = np.unique(label)
    unexpected = sorted(set(found.tolist()) - set(LABEL_NAMES))
    if unexpected:
        raise ValueError(f"expected MSD label values {sorted(LABEL_NAMES)}; found unexpected values {unexpected}")
    return np.stack([np.isin(label, REGIONS[r]) for r in REGION_ORDER], axis=-1).astype(np.float32)


def regions_to_label(regions: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    """Label map from region probabilities, built hierarchically.

    Like nnU-Net's ``regions_class_order``: every voxel whose whole-tumour
    probability passes the threshold is edema (1), those whose core
    probability also passes become non-enhancing (2), and those whose
    enhancing probability passes as well become enhancing (3). A region is
    therefore always inside the one that encloses it.
    Taught in lesson 09, exercise 2.

    Args:
        regions: array ``(..., 3)`` of probabilities in :data:`REGION_ORDER`.
        threshold: probability above which a voxel is in a region.

    Returns:
        uint8 label map of shape ``regions.shape[:-1]``.

    Raises:
        ValueError: if the last axis does not hold three regions.
    """
    regions = np.asarray(regions)
    if regions.ndim < 1 or regions.shape[-1] != len(REGION_ORDER):
        raise ValueError(
            f"expected region probabilities with {len(REGION_ORDER)} channels {REGION_ORDER} on the last axis; "
            f"found shape {regions.shape}"
        )
    inside = regions > threshold
    wt = inside[..., 0]
    tc = wt & inside[..., 1]
    et = tc & inside[..., 2]
    return (wt.astype(np.uint8) + tc + et).astype(np.uint8)
