"""Checks of lesson 09 (what wins BraTS): label_to_regions, regions_to_label."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from .runner import Mismatch, Run, exercise, run_check

LESSON = "09_what_wins_brats"
_NESTED = ((1, 2, 3), (2, 3), (3,))  # WT, TC, ET: the channel order of the targets


def _regions(label: np.ndarray, sets=_NESTED) -> np.ndarray:
    return np.stack([np.isin(label, values) for values in sets], axis=-1).astype(np.float32)


def _region_mistakes(label: np.ndarray) -> dict[str, np.ndarray]:
    """Outputs of the mistakes learners make, for the hints (same shape as the right answer)."""
    return {
        "each channel is one label (one-hot classes): the regions are nested, TC is {2, 3} and WT {1, 2, 3}": (
            _regions(label, ((1,), (2,), (3,)))
        ),
        "the channels are in the order ET, TC, WT: the order is WT, TC, ET (outermost first)": _regions(
            label, _NESTED[::-1]
        ),
        "TC is {2, 3} in the MSD labels (2 non-enhancing, 3 enhancing); {1, 3} would hold edema": _regions(
            label, ((1, 2, 3), (1, 3), (3,))
        ),
    }


def _expect_regions(what: str, label: np.ndarray, got: Any) -> None:
    if not isinstance(got, np.ndarray):
        raise AssertionError(f"{what}: expected a NumPy array; got {type(got).__name__}")
    expected = _regions(label)
    if got.shape != expected.shape:
        hint = ""
        if got.shape == (3, *label.shape):
            hint = "the regions are on the first axis: stack them on the last (channels-last, axis=-1)"
        elif got.shape == (*label.shape, 4):
            hint = "a background channel is there: the targets are the three regions WT, TC, ET only"
        raise Mismatch(f"{what} (shape)", expected.shape, got.shape, hint)
    values = np.asarray(got, dtype=np.float64)
    if not np.array_equal(values, expected):
        hint = "; or ".join(text for text, wrong in _region_mistakes(label).items() if np.array_equal(values, wrong))
        raise Mismatch(f"{what}: region channels [WT, TC, ET]", expected, values, hint)
    if got.dtype != np.float32:
        raise Mismatch(
            f"{what} (dtype)",
            "float32",
            str(got.dtype),
            f"{got.dtype} targets: the loss multiplies them with float32 predictions; return .astype(np.float32)",
        )


def _label_all_values(grading: bool) -> np.ndarray:
    label = np.zeros((7, 6, 5) if grading else (6, 5, 4), np.uint8)
    label[1:6, 1:5, 0:4] = 1
    label[2:5, 2:4, 1:3] = 2
    label[3, 2, 1] = 3
    label[4, 3, 2] = 3
    if grading:
        label[6, 0, 4] = 3  # enhancing on its own, outside the core block
    return label


@exercise("label_to_regions", LESSON)
def _label_to_regions_tests(label_to_regions: Callable, run: Run, grading: bool) -> None:
    """Tests of ``label_to_regions`` (lesson 09, exercise 1)."""

    def nested():
        label = _label_all_values(grading)
        _expect_regions("a label map with edema, core and enhancing tumour", label, label_to_regions(label))

    def no_enhancing():
        label = np.zeros((4, 3, 2) if grading else (3, 4, 2), np.uint8)
        label[0, 0, 0] = 1
        label[1, 1, 1] = 2  # edema and non-enhancing tumour, no enhancing: ET empty, and WT still holds the core
        _expect_regions("no enhancing tumour: the ET channel is all 0", label, label_to_regions(label))

    def random_int64():
        rng = run.rng(90)
        label = rng.integers(0, 4, size=(8, 7, 6) if grading else (7, 6, 5)).astype(np.int64)
        _expect_regions("a random int64 label map", label, label_to_regions(label))

    run.test("nested regions WT {1,2,3}, TC {2,3}, ET {3} as channels [WT, TC, ET]", nested)
    run.test("an absent region gives a channel of zeros", no_enhancing)
    run.test("random label map (int64), float32 targets", random_int64)


def _hierarchy(regions: np.ndarray, threshold: float) -> np.ndarray:
    inside = regions > threshold
    wt = inside[..., 0]
    tc = wt & inside[..., 1]
    et = tc & inside[..., 2]
    return wt.astype(np.uint8) + tc + et


def _label_mistakes(regions: np.ndarray, threshold: float) -> dict[str, np.ndarray]:
    inside = regions > threshold
    overwrite = np.zeros(regions.shape[:-1], np.uint8)
    for k in range(3):
        overwrite[inside[..., k]] = k + 1
    return {
        "argmax picks the most probable region, but the regions are nested (a core voxel is also WT, usually with "
        "the highest probability): go from the outermost region inwards": np.where(
            inside.any(axis=-1), regions.argmax(axis=-1) + 1, 0
        ),
        "a voxel is core only if it is also whole tumour, and enhancing only if it is also core: each region must "
        "pass inside the one that encloses it": overwrite,
        "counting the regions that pass ignores the nesting: a voxel with only ET above the threshold is not "
        "tumour": inside.sum(axis=-1),
        "the threshold argument is not used (0.5 instead)": _hierarchy(regions, 0.5),
    }


def _expect_label(what: str, regions: np.ndarray, threshold: float, got: Any) -> None:
    if not isinstance(got, np.ndarray):
        raise AssertionError(f"{what}: expected a NumPy array; got {type(got).__name__}")
    expected = _hierarchy(regions, threshold)
    if got.shape != expected.shape:
        hint = "the label map has no channel axis: one label per voxel" if got.shape == regions.shape else ""
        raise Mismatch(f"{what} (shape)", expected.shape, got.shape, hint)
    values = np.asarray(got, dtype=np.float64)
    if not np.array_equal(values, expected):
        mistakes = _label_mistakes(regions, threshold)
        if threshold == 0.5:
            mistakes.pop("the threshold argument is not used (0.5 instead)")
        hint = "; or ".join(text for text, wrong in mistakes.items() if np.array_equal(values, wrong))
        raise Mismatch(f"{what}: labels", expected, values, hint)
    if got.dtype.kind not in "iu":
        raise Mismatch(
            f"{what} (dtype)",
            "an integer dtype (uint8)",
            str(got.dtype),
            "a label map holds integers 0-3: return .astype(np.uint8)",
        )


def _probabilities(run: Run, grading: bool) -> np.ndarray:
    """Hand-made voxels where each mistake gives another label (shuffled by the grader's per-run seed)."""
    voxels = [
        (0.95, 0.85, 0.75),  # enhancing: argmax says edema
        (0.9, 0.7, 0.2),  # core: argmax says edema
        (0.9, 0.2, 0.1),  # edema
        (0.3, 0.1, 0.05),  # background
        (0.2, 0.1, 0.9),  # ET alone, outside WT: background
        (0.8, 0.3, 0.9),  # ET inside WT but outside TC: edema
        (0.3, 0.8, 0.1),  # TC alone: background
        (0.45, 0.42, 0.4),  # below 0.5, above 0.3
    ]
    if grading:
        voxels = voxels[::-1] + [(0.97, 0.6, 0.55), (0.1, 0.6, 0.7)]
    if run.hidden:
        voxels = [voxels[i] for i in run.rng(92).permutation(len(voxels))]
    return np.array(voxels, np.float64).reshape(2, -1, 1, 3)


@exercise("regions_to_label", LESSON)
def _regions_to_label_tests(regions_to_label: Callable, run: Run, grading: bool) -> None:
    """Tests of ``regions_to_label`` (lesson 09, exercise 2)."""

    def nested():
        probs = _probabilities(run, grading)
        _expect_label("hand-made voxels, threshold 0.5", probs, 0.5, regions_to_label(probs, 0.5))

    def threshold():
        probs = _probabilities(run, grading)
        t = 0.35 if grading else 0.3
        _expect_label(f"the same voxels, threshold {t}", probs, t, regions_to_label(probs, threshold=t))

    def default():
        probs = _probabilities(run, grading)[:, ::-1]
        _expect_label("no threshold given: 0.5", probs, 0.5, regions_to_label(probs))

    def random_probabilities():
        rng = run.rng(91)
        shape = (6, 5, 4) if grading else (5, 4, 3)
        wt = rng.random(shape)
        probs = np.stack([wt, wt * rng.random(shape) * 1.2, wt * rng.random(shape)], axis=-1).astype(np.float32)
        t = 0.4 if grading else 0.45
        _expect_label(f"random float32 probabilities, threshold {t}", probs, t, regions_to_label(probs, t))

    run.test("each region inside the one that encloses it: WT, then TC, then ET", nested)
    run.test("the threshold argument is used", threshold)
    run.test("the default threshold is 0.5", default)
    run.test("random probabilities", random_probabilities)


# The public checks the lesson calls


def check_label_to_regions(label_to_regions: Callable) -> None:
    """Public tests of ``label_to_regions``: prints ✔/✘ lines, raises ExerciseCheckError on failure."""
    run_check("label_to_regions", label_to_regions)


def check_regions_to_label(regions_to_label: Callable) -> None:
    """Public tests of ``regions_to_label``: prints ✔/✘ lines, raises ExerciseCheckError on failure."""
    run_check("regions_to_label", regions_to_label)
