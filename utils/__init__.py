"""Shared code of the brain-tumour segmentation course.

Graded-style functions keep the course's names and are importable from here,
e.g. ``from utils import standardize``; each names the lesson that teaches it.
Every error the course raises derives from :class:`CourseError`
(``utils.errors``). Importing the package also registers
the course's loss and metrics with Keras, so ``keras.models.load_model(path)``
works on a saved course model without ``custom_objects``. Processes that only
build data (the phantom's workers) set ``BRATS_COURSE_NO_KERAS=1`` to skip the
Keras import. Before Keras it starts TensorFlow quietly (``utils.backend``),
so a lesson imports ``utils`` first.
"""

from __future__ import annotations

import importlib
import os

__version__ = "0.1.0"  # first: modules imported below may read it

from .config import course_mode, data_root, get_settings, phantom_dir
from .data.clinical import parse_survival, tumour_volumes_ml
from .data.datasets import (
    Case,
    DatasetError,
    detect_layout,
    list_cases,
    load_brats_case,
    load_case,
    load_label,
    load_msd_case,
    read_dataset_json,
    split_cases,
)
from .data.labels import (
    CLASS_COLORS,
    CLASS_NAMES,
    LABEL_NAMES,
    MODALITIES,
    REGION_ORDER,
    REGIONS,
    brats_to_msd,
    label_to_regions,
    msd_to_brats,
    one_hot,
    regions_to_label,
)
from .data.sources import get_dataset
from .errors import CourseError
from .parallel import NO_KERAS_ENV
from .preprocessing.genesis import shuffle_block
from .preprocessing.transforms import (
    PatchSamplingError,
    get_sub_volume,
    sample_foreground_patch,
    standardize,
    standardize_nonzero,
)

if not os.environ.get(NO_KERAS_ENV):
    from .backend import quiet_start

    quiet_start()  # before Keras: TensorFlow's start-up notices stay out of the lessons
    from .evaluation.metrics import compute_class_sens_spec, get_sens_spec_df, region_dice
    from .inference.sliding_window import blend_windows, sliding_window_predict
    from .model.losses import (
        batch_dice_bce_loss,
        dice_bce_loss,
        dice_coefficient,
        single_class_dice_coefficient,
        soft_dice_loss,
    )
    from .model.unet import build_unet, conv_block, load_model, upsampling_block

_LAZY: dict[str, str] = {
    "ensure_phantom": "data.phantom",
    "make_phantom_case": "data.phantom",
    "make_phantom_dataset": "data.phantom",
}


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'utils' has no attribute {name!r}")
    return getattr(importlib.import_module(f".{module}", __name__), name)
