"""Checks of the exercises: the public ones the lessons call, and the grader's API.

``from utils.course.checks import check_standardize`` in a lesson; ``run_check(name,
fn, variant="grading", record=True)`` in the grader (:mod:`utils.course.grade`).

- :mod:`.runner` runs one exercise's tests and renders the feedback (✔/✘
  lines, expected vs got, the likely mistake, the learner's line that raised);
  :data:`CHECKS` maps each graded function to its tests and lesson.
- :mod:`.lesson02`, :mod:`.lesson03`, :mod:`.lesson04`, :mod:`.lesson06`, :mod:`.lesson08`,
  :mod:`.lesson09`, :mod:`.lesson10`: the
  tests of each lesson's exercises and the ``check_<name>`` functions it calls.

The maintainers' registry (each exercise's reference in ``utils`` and the
drift test between a notebook's solution and it) is ``tests/course/exercise_registry.py``.
"""

from __future__ import annotations

from .lesson02 import check_get_sub_volume, check_standardize
from .lesson03 import check_conv_block, check_upsampling_block
from .lesson04 import (
    check_compute_class_sens_spec,
    check_dice_coefficient,
    check_get_sens_spec_df,
    check_single_class_dice_coefficient,
    check_soft_dice_loss,
)
from .lesson06 import check_blend_windows, check_region_dice
from .lesson08 import check_parse_survival, check_tumour_volumes_ml
from .lesson09 import check_label_to_regions, check_regions_to_label
from .lesson10 import check_shuffle_block
from .runner import CHECKS, TIME_LIMIT_S, VARIANTS, Check, ExerciseCheckError, TestResult, run_check

__all__ = [
    "CHECKS",
    "TIME_LIMIT_S",
    "VARIANTS",
    "Check",
    "ExerciseCheckError",
    "TestResult",
    "run_check",
    "check_get_sub_volume",
    "check_standardize",
    "check_conv_block",
    "check_upsampling_block",
    "check_single_class_dice_coefficient",
    "check_dice_coefficient",
    "check_soft_dice_loss",
    "check_compute_class_sens_spec",
    "check_get_sens_spec_df",
    "check_blend_windows",
    "check_region_dice",
    "check_tumour_volumes_ml",
    "check_parse_survival",
    "check_label_to_regions",
    "check_regions_to_label",
    "check_shuffle_block",
]
