"""Shared code of the brain-tumour segmentation course.

Graded-style functions keep the course's names and are importable from here,
e.g. ``from utils import standardize``. Modules that need Keras are imported on
first use, so data tools stay light (and phantom workers start fast).
"""

from __future__ import annotations

import importlib

from .config import course_mode, data_root, get_settings, phantom_dir
from .data import (
    Case,
    DatasetError,
    detect_layout,
    get_dataset,
    list_cases,
    load_label,
    load_brats_case,
    load_case,
    load_msd_case,
    read_dataset_json,
    split_cases,
)
from .labels import (
    CLASS_COLORS,
    CLASS_NAMES,
    LABEL_NAMES,
    MODALITIES,
    REGIONS,
    brats_to_msd,
    msd_to_brats,
    one_hot,
)

from .preprocessing import (
    PatchSamplingError,
    get_sub_volume,
    sample_foreground_patch,
    standardize,
    standardize_nonzero,
)

__version__ = "0.1.0"

_LAZY: dict[str, str] = {
    "ensure_phantom": "phantom",
    "make_phantom_case": "phantom",
    "make_phantom_dataset": "phantom",
}


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'utils' has no attribute {name!r}")
    return getattr(importlib.import_module(f".{module}", __name__), name)
