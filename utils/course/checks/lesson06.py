"""Checks of lesson 06 (whole-scan prediction): blend_windows, region_dice."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from .runner import Mismatch, Run, exercise, expect_close, expect_equal, run_check

LESSON = "06_whole_scan_prediction"


def _blend(preds: np.ndarray, starts, shape, weights=None) -> np.ndarray:
    """The weighted average of overlapping windows, voxel by voxel (the expected values)."""
    window = preds.shape[1:4]
    weights = np.ones(window) if weights is None else np.asarray(weights, np.float64)
    total = np.zeros((*shape, preds.shape[-1]))
    norm = np.zeros(shape)
    for (a, b, c), pred in zip(starts, preds):
        total[a : a + window[0], b : b + window[1], c : c + window[2]] += pred * weights[..., None]
        norm[a : a + window[0], b : b + window[1], c : c + window[2]] += weights
    return total / norm[..., None]


def _blend_mistakes(preds: np.ndarray, starts, shape, weights) -> dict[str, np.ndarray]:
    window = preds.shape[1:4]
    last = np.zeros((*shape, preds.shape[-1]))
    total = np.zeros_like(last)
    count = np.zeros(shape)
    w = np.ones(window) if weights is None else np.asarray(weights, np.float64)
    for (a, b, c), pred in zip(starts, preds):
        region = (slice(a, a + window[0]), slice(b, b + window[1]), slice(c, c + window[2]))
        last[region] = pred
        total[region] += pred * w[..., None]
        count[region] += 1
    out = {
        "each window overwrites the previous one: add the windows up, then divide": last,
        "the sum is not divided by the sum of the weights": total,
        "divided by the number of windows, not by the sum of their weights": total / count[..., None],
    }
    if weights is not None:
        out["the weights are not used"] = _blend(preds, starts, shape)
    return out


def _expect_blend(what: str, preds, starts, shape, weights, got) -> None:
    expected = _blend(preds, starts, shape, weights)
    got = np.asarray(got, dtype=np.float64)
    hint = ""
    if got.shape == expected.shape and not np.allclose(got, expected, atol=1e-4):
        hint = "; or ".join(
            text
            for text, wrong in _blend_mistakes(preds, starts, shape, weights).items()
            if np.allclose(got, wrong, atol=1e-4)
        )
        if expected.shape[1:] == (1, 1, 1):  # a line of voxels: show it as one
            expected, got, what = expected.ravel(), got.ravel(), f"{what}; showing out[:, 0, 0, 0]"
    expect_close(what, expected, got, hint=hint)


def _grid(shape, window, step) -> list[tuple[int, int, int]]:
    """Window corners every ``step`` voxels, the last one flush with the far edge: every voxel covered."""
    axes = [sorted(set(range(0, n - w + 1, s)) | {n - w}) for n, w, s in zip(shape, window, step)]
    return [(a, b, c) for a in axes[0] for b in axes[1] for c in axes[2]]


def _random_windows(run: Run, seed: int, lesson: tuple, grading: tuple, channels: int) -> tuple:
    """Random windows of ``channels`` channels on a grid (step 2) over a volume, and random weights: the volume
    and window shapes are ``lesson`` (``grading`` in the grading variant). Returns
    (shape, window, starts, predictions, weights)."""
    rng = run.rng(seed)
    shape, win = grading if run.grading else lesson
    starts = _grid(shape, win, (2, 2, 2))
    return shape, win, starts, rng.random((len(starts), *win, channels)), rng.uniform(0.1, 1.0, size=win)


@exercise("blend_windows", LESSON)
def _blend_windows_tests(blend_windows: Callable, run: Run, grading: bool) -> None:
    """Tests of ``blend_windows`` (lesson 06, exercise 1)."""
    n, w, step = (7, 5, 2) if grading else (6, 4, 2)
    lo, hi = (2.0, 5.0) if grading else (1.0, 3.0)
    starts1 = [(0, 0, 0), (n - w, 0, 0)]
    preds1 = np.array([np.full((w, 1, 1, 1), lo), np.full((w, 1, 1, 1), hi)])

    def two_windows():
        out = blend_windows(preds1, starts1, (n, 1, 1))
        expected = _blend(preds1, starts1, (n, 1, 1))
        _expect_blend(
            f"constant weights: overlapping voxels get the mean ({lo:g} + {hi:g}) / 2; "
            f"expected out[:, 0, 0, 0] = {np.round(expected[:, 0, 0, 0], 4).tolist()}",
            preds1,
            starts1,
            (n, 1, 1),
            None,
            out,
        )

    ramp = (np.array([1.0, 2.0, 4.0, 2.0, 1.0]) if grading else np.array([1.0, 3.0, 3.0, 1.0])).reshape(w, 1, 1)

    def weighted():
        out = blend_windows(preds1, starts1, (n, 1, 1), ramp)
        _expect_blend(
            f"weights {ramp.ravel().tolist()}: each voxel gets sum(weight * prediction) / sum(weight)",
            preds1,
            starts1,
            (n, 1, 1),
            ramp,
            out,
        )

    def identity():
        rng = run.rng(60)
        shape, win = ((11, 9, 7), (5, 4, 3)) if grading else ((10, 8, 6), (4, 3, 2))
        volume = rng.normal(size=(*shape, 3 if grading else 2))
        starts = _grid(shape, win, (3, 2, 2))
        preds = np.stack([volume[a : a + win[0], b : b + win[1], c : c + win[2]] for a, b, c in starts])
        weights = rng.uniform(0.1, 1.0, size=win)
        out = blend_windows(preds, starts, shape, weights)
        expect_close(
            f"windows {win} cut from a {shape} volume blend back into that volume, whatever the "
            "weights (corners are (x, y, z); windows are not cubes)",
            volume,
            np.asarray(out, np.float64),
        )

    def several_channels():
        shape, win, starts, preds, weights = _random_windows(run, 62, ((6, 5, 4), (3, 3, 2)), ((8, 6, 5), (4, 3, 3)), 3)
        _expect_blend(
            f"{len(starts)} random {win} windows with 3 channels and random weights",
            preds,
            starts,
            shape,
            weights,
            blend_windows(preds, starts, shape, weights),
        )

    def inputs_untouched():
        shape, win, starts, preds, weights = _random_windows(run, 66, ((6, 7, 5), (3, 4, 2)), ((7, 5, 6), (4, 3, 2)), 2)
        kept = preds.copy(), weights.copy(), list(starts)
        blend_windows(preds, starts, shape, weights)
        for what, before, after in zip(("window_predictions", "weights", "starts"), kept, (preds, weights, starts)):
            if what == "starts":
                expect_equal("the starts must not be modified", before, after)
                continue
            changed = ~np.isclose(np.asarray(after, np.float64), before)
            if changed.any():
                raise Mismatch(
                    f"{what} must not be modified: {int(changed.sum())} of {changed.size} values changed",
                    "unchanged",
                    "changed",
                    "the function writes into its input (e.g. window_predictions[i] *= weights): "
                    "multiply into a new array",
                )

    run.test("constant weights average the overlap", two_windows)
    run.test("weights make a weighted average", weighted)
    run.test("an identity prediction is reproduced exactly", identity)
    run.test("random windows, several channels", several_channels)
    run.test("the inputs are left unchanged", inputs_untouched)


_REGIONS = {"WT": (1, 2, 3), "TC": (2, 3), "ET": (3,)}


def _region_dice_np(truth: np.ndarray, pred: np.ndarray, regions=_REGIONS, empty: float = 1.0) -> dict[str, float]:
    out = {}
    for region, values in regions.items():
        a, b = np.isin(truth, values), np.isin(pred, values)
        total = a.sum() + b.sum()
        out[region] = empty if total == 0 else 2.0 * (a & b).sum() / total
    return out


def _expect_regions(what: str, truth: np.ndarray, pred: np.ndarray, got: Any) -> None:
    if not hasattr(got, "keys"):
        raise AssertionError(f"expected a dict {{'WT': ..., 'TC': ..., 'ET': ...}}; got {type(got).__name__}")
    expect_equal("keys", ["ET", "TC", "WT"], sorted(got))
    expected = _region_dice_np(truth, pred)
    values = np.array([float(got[r]) for r in _REGIONS])
    want = np.array([expected[r] for r in _REGIONS])
    if np.allclose(values, want, atol=1e-4, equal_nan=False):
        return
    mistakes = {
        "each region is one label (TC is {2, 3} and WT {1, 2, 3}: the regions are nested)": _region_dice_np(
            truth, pred, {"WT": (1,), "TC": (2,), "ET": (3,)}
        ),
        "Jaccard |A∩B| / |A∪B|, not Dice 2|A∩B| / (|A| + |B|)": {r: d / (2 - d) for r, d in expected.items()},
        "a region empty in both maps must score 1": _region_dice_np(truth, pred, empty=0.0),
        "a region empty in the truth scores 1 only if the prediction is empty too": {
            r: 1.0 if not np.isin(truth, v).any() else expected[r] for r, v in _REGIONS.items()
        },
    }
    hint = "; or ".join(
        text
        for text, wrong in mistakes.items()
        if np.allclose(values, [wrong[r] for r in _REGIONS], atol=1e-4, equal_nan=True)
    )
    if not hint and np.isnan(values).any():
        hint = "NaN is 0 / 0: a region empty in both maps scores 1.0"
    raise Mismatch(f"{what}: [WT, TC, ET]", want, values, hint)


@exercise("region_dice", LESSON)
def _region_dice_tests(region_dice: Callable, run: Run, grading: bool) -> None:
    """Tests of ``region_dice`` (lesson 06, exercise 2)."""
    if grading:
        truth = np.zeros((7, 5, 3), np.uint8)
        truth[1:6, 0:4, 0:2] = 1
        truth[2:4, 1:3, 0:2] = 2
        truth[2, 1, 0] = 3
        truth[3, 2, 1] = 3
        pred = truth.copy()
        pred[pred == 3] = 2
        pred[6, :, 2] = 1
        pred[1, 0, 0] = 0
    else:
        truth = np.zeros((6, 6, 2), np.uint8)
        truth[0:4, 0:4] = 1
        truth[1:3, 1:3] = 2
        truth[1, 1] = 3
        pred = truth.copy()
        pred[pred == 3] = 2  # enhancing called core
        pred[4:6, 4:6] = 1  # extra edema
    d = _region_dice_np(truth, pred)
    run.test(
        f"nested regions WT {{1,2,3}}, TC {{2,3}}, ET {{3}}: WT {d['WT']:.4g}, TC {d['TC']:.4g} "
        f"(2 and 3 both count), ET {d['ET']:.4g} (missed)",
        lambda: _expect_regions("Dice", truth, pred, region_dice(truth, pred)),
    )

    def empty():
        zero = np.zeros((5, 3, 2) if grading else (4, 4, 2), np.uint8)
        _expect_regions("all regions empty in both: Dice 1 each", zero, zero, region_dice(zero, zero))
        some = zero.copy()
        some[1, 1, 1] = 3 if grading else 1
        _expect_regions("a region empty in the prediction only: Dice 0", some, zero, region_dice(some, zero))
        _expect_regions("a region empty in the truth only: Dice 0", zero, some, region_dice(zero, some))

    def random_maps():
        rng = run.rng(64)
        shape = (9, 7, 4) if grading else (8, 6, 5)
        t = rng.integers(0, 4, size=shape).astype(np.uint8)
        p = np.where(rng.random(shape) < 0.7, t, rng.integers(0, 4, size=shape)).astype(np.uint8)
        _expect_regions("random label maps", t, p, region_dice(t, p))

    run.test("empty regions: 1 if empty in both, 0 if in only one (truth or prediction)", empty)
    run.test("random label maps", random_maps)


# The public checks the lesson calls


def check_blend_windows(blend_windows: Callable) -> None:
    """Public tests of ``blend_windows``: prints ✔/✘ lines, raises ExerciseCheckError on failure."""
    run_check("blend_windows", blend_windows)


def check_region_dice(region_dice: Callable) -> None:
    """Public tests of ``region_dice``: prints ✔/✘ lines, raises ExerciseCheckError on failure."""
    run_check("region_dice", region_dice)
