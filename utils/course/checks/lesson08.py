"""Checks of lesson 08 (clinical metadata): tumour_volumes_ml, parse_survival."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from .runner import Mismatch, Run, exercise, expect_equal, run_check

LESSON = "08_clinical_metadata"
_REGIONS = {"WT": (1, 2, 3), "TC": (2, 3), "ET": (3,)}
_ORDER = ("WT", "TC", "ET")


def _volumes(label: np.ndarray, voxel_mm3: float, regions=_REGIONS) -> dict[str, float]:
    return {r: float(np.isin(label, v).sum() * voxel_mm3 / 1000.0) for r, v in regions.items()}


def _rotated(spacing, degrees: float, flip_x: bool = False) -> np.ndarray:
    """An oblique affine: voxel axes scaled by ``spacing``, rotated about z, x flipped if asked."""
    t = np.deg2rad(degrees)
    rot = np.array([[np.cos(t), -np.sin(t), 0.0], [np.sin(t), np.cos(t), 0.0], [0.0, 0.0, 1.0]])
    affine = np.eye(4)
    affine[:3, :3] = rot @ np.diag(spacing)
    if flip_x:
        affine[:3, 0] *= -1
    affine[:3, 3] = (-90.0, 126.0, -72.0)
    return affine


def _expect_volumes(what: str, label: np.ndarray, affine: np.ndarray, got: Any) -> None:
    if not hasattr(got, "keys"):
        raise AssertionError(f"expected a dict {{'WT': ..., 'TC': ..., 'ET': ...}}; got {type(got).__name__}")
    expect_equal("keys", sorted(_ORDER), sorted(got))
    voxel = abs(np.linalg.det(affine[:3, :3]))
    expected = _volumes(label, voxel)
    values = np.array([float(got[r]) for r in _ORDER])
    want = np.array([expected[r] for r in _ORDER])
    if np.allclose(values, want, rtol=1e-6, atol=1e-9):
        return
    diagonal = float(np.prod(np.diag(affine)[:3]))
    mistakes = {
        "each region is one label (TC is {2, 3} and WT {1, 2, 3}: the regions are nested)": _volumes(
            label, voxel, {"WT": (1,), "TC": (2,), "ET": (3,)}
        ),
        "a count of voxels, not a volume: multiply by the voxel's volume from the affine": _volumes(label, 1000.0),
        "mm³, not mL: 1 mL is 1000 mm³": {r: v * 1000.0 for r, v in expected.items()},
        "the product of the affine's diagonal is the voxel volume only for an axis-aligned affine with positive "
        "axes: use abs(np.linalg.det(affine[:3, :3]))": _volumes(label, diagonal),
        "the voxel volume is |det|, never negative: a flipped axis makes the determinant negative": _volumes(
            label, -voxel
        ),
        "the sum of the label values, not the number of voxels": {
            r: float(np.where(np.isin(label, v), label, 0).sum() * voxel / 1000.0) for r, v in _REGIONS.items()
        },
    }
    hint = "; or ".join(
        text
        for text, wrong in mistakes.items()
        if np.allclose(values, [wrong[r] for r in _ORDER], rtol=1e-6, atol=1e-9)
    )
    raise Mismatch(f"{what}: [WT, TC, ET] in mL", np.round(want, 6), np.round(values, 6), hint)


@exercise("tumour_volumes_ml", LESSON)
def _tumour_volumes_tests(tumour_volumes_ml: Callable, run: Run, grading: bool) -> None:
    """Tests of ``tumour_volumes_ml`` (lesson 08, exercise 2)."""
    label = np.zeros((9, 8, 5) if grading else (8, 6, 4), np.uint8)
    label[1:7, 1:6, 0:4] = 1
    label[2:5, 2:4, 1:3] = 2
    label[3, 2, 1] = 3
    label[4, 3, 2] = 3
    if grading:
        label[6, 1, 0] = 3

    def iso():
        affine = np.diag([1.0, 1.0, 1.0, 1.0])
        _expect_volumes("1 mm voxels", label, affine, tumour_volumes_ml(label, affine))

    def aniso():
        spacing = (2.0, 1.5, 3.0) if grading else (2.0, 1.0, 4.0)
        affine = np.diag([*spacing, 1.0])
        affine[:3, 3] = (-100.0, -120.0, -60.0)
        _expect_volumes(f"voxels of {spacing} mm (a translation too)", label, affine, tumour_volumes_ml(label, affine))

    def oblique():
        spacing = (1.2, 0.9, 2.5) if grading else (1.5, 1.5, 3.0)
        affine = _rotated(spacing, 35.0 if grading else 30.0, flip_x=True)
        _expect_volumes(
            f"an oblique affine (voxels {spacing} mm, rotated about z, x flipped)",
            label,
            affine,
            tumour_volumes_ml(label, affine),
        )

    def empty():
        zero = np.zeros((5, 4, 3) if grading else (4, 4, 2), np.uint8)
        zero[0, 0, 0] = 1  # edema only: no core, no enhancing tumour
        affine = np.diag([2.0, 2.0, 2.0, 1.0])
        _expect_volumes("edema only: TC and ET are 0 mL", zero, affine, tumour_volumes_ml(zero, affine))

    def int_labels():
        rng = run.rng(80)
        shape = (7, 9, 6) if grading else (6, 7, 5)
        random_label = rng.integers(0, 4, size=shape).astype(np.int64)
        affine = np.diag([0.9, 1.1, 1.3, 1.0]) if grading else np.diag([1.0, 1.2, 2.0, 1.0])
        _expect_volumes("a random int64 label map", random_label, affine, tumour_volumes_ml(random_label, affine))

    run.test("nested regions WT {1,2,3}, TC {2,3}, ET {3} with 1 mm voxels", iso)
    run.test("the voxel volume comes from the affine", aniso)
    run.test("an oblique affine with a flipped axis", oblique)
    run.test("empty regions are 0 mL", empty)
    run.test("random label map", int_labels)


def _expect_survival(what: str, value: Any, expected: tuple[float, bool], got: Any) -> None:
    if not isinstance(got, tuple | list) or len(got) != 2:
        raise AssertionError(f"{what}: expected a pair (days, event); got {got!r}")
    days, event = got
    try:
        days = float(days)
    except (TypeError, ValueError):
        raise AssertionError(f"{what}: days must be a number; got {days!r}") from None
    if not isinstance(event, bool | np.bool_):
        raise AssertionError(f"{what}: event must be True or False; got {event!r}")
    if abs(days - expected[0]) > 1e-9 or bool(event) != expected[1]:
        hint = ""
        if abs(days - expected[0]) <= 1e-9 and isinstance(value, str) and "ALIVE" in value.upper():
            hint = "an ALIVE patient's death was not observed: event is False (a censored time)"
        elif abs(days - expected[0]) <= 1e-9:
            hint = "a number of days is a death that was observed: event is True"
        raise Mismatch(f"{what}: (days, event)", expected, (days, bool(event)), hint)


@exercise("parse_survival", LESSON)
def _parse_survival_tests(parse_survival: Callable, run: Run, grading: bool) -> None:
    """Tests of ``parse_survival`` (lesson 08, exercise 1)."""
    deaths = [("1283", 1283.0), (77, 77.0), ("412.0", 412.0)] if grading else [("289", 289.0), (150, 150.0)]
    alive = [("ALIVE (1147 days later)", 1147.0)] if grading else [("ALIVE (361 days later)", 361.0)]

    def numbers():
        for value, days in deaths:
            _expect_survival(f"parse_survival({value!r})", value, (days, True), parse_survival(value))

    def censored():
        for value, days in alive:
            _expect_survival(f"parse_survival({value!r})", value, (days, False), parse_survival(value))

    def spaces():
        value = " 95 " if grading else " 603 "
        _expect_survival(f"parse_survival({value!r})", value, (float(value), True), parse_survival(value))

    def invalid():
        for value in ["", "unknown", "-5"] if grading else ["", "NA", "-1"]:
            try:
                got = parse_survival(value)
            except ValueError:
                continue
            raise AssertionError(f"parse_survival({value!r}) must raise ValueError; it returned {got!r}")

    run.test("a number of days: the death was observed", numbers)
    run.test("'ALIVE (N days later)': alive at N days, censored", censored)
    run.test("spaces around a number", spaces)
    run.test("anything else raises ValueError", invalid)


# The public checks the lesson calls


def check_tumour_volumes_ml(tumour_volumes_ml: Callable) -> None:
    """Public tests of ``tumour_volumes_ml``: prints ✔/✘ lines, raises ExerciseCheckError on failure."""
    run_check("tumour_volumes_ml", tumour_volumes_ml)


def check_parse_survival(parse_survival: Callable) -> None:
    """Public tests of ``parse_survival``: prints ✔/✘ lines, raises ExerciseCheckError on failure."""
    run_check("parse_survival", parse_survival)
