"""Public checks for the exercises, called in the cell after each exercise.

A check runs the learner's function on small hand-made inputs, prints one line
per test (which passed, and for a failure what was expected and what came
back), and ends with "All public tests passed" - or raises
:class:`ExerciseCheckError` naming the failed tests. Checks test behaviour,
never how a correct answer draws its random numbers.

:data:`EXERCISES` lists every graded function with its check, its reference
in ``utils`` and inputs on which a notebook's solution must agree with the
reference (``tests/test_exercises.py`` uses it).
"""

from __future__ import annotations

import importlib
import traceback
import warnings
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

PASS, FAIL = "\u2714", "\u2718"


class ExerciseCheckError(AssertionError):
    """One or more public tests of an exercise failed."""


class Mismatch(AssertionError):
    """A test's expected and actual values differ."""

    def __init__(self, what: str, expected: Any, got: Any):
        super().__init__(what)
        self.what, self.expected, self.got = what, expected, got


def _fmt(value: Any) -> str:
    if isinstance(value, np.ndarray):
        with np.printoptions(precision=4, suppress=True, threshold=40, edgeitems=3):
            text = np.array2string(value, separator=", ")
        return text.replace("\n", "\n" + " " * 16)
    return repr(value)


class _Run:
    """Collects the results of one exercise's tests and prints them."""

    def __init__(self, name: str):
        self.name, self.passed, self.failed = name, 0, []
        self.not_written = False
        print(f"Checking {name}()")

    def test(self, description: str, body: Callable[[], None]) -> bool:
        if self.not_written:
            self.failed.append(description)
            return False
        try:
            body()
        except NotImplementedError as err:
            self.failed.append(description)
            self.not_written = True
            print(f"  {FAIL} your function is not written yet: {err}")
            return False
        except Mismatch as err:
            self.failed.append(description)
            print(f"  {FAIL} {description}\n      {err.what}\n      expected: {_fmt(err.expected)}"
                  f"\n      got:      {_fmt(err.got)}")
            return False
        except AssertionError as err:
            self.failed.append(description)
            print(f"  {FAIL} {description}\n      {err}")
            return False
        except Exception as err:  # the learner's code raised: show where
            self.failed.append(description)
            frames = [f for f in traceback.extract_tb(err.__traceback__) if f.filename != __file__]
            where = f"\n      (line {frames[-1].lineno}: {frames[-1].line})" if frames else ""
            print(f"  {FAIL} {description}\n      your function raised {type(err).__name__}: {err}{where}")
            return False
        self.passed += 1
        print(f"  {PASS} {description}")
        return True

    def finish(self) -> None:
        total = self.passed + len(self.failed)
        if self.not_written:
            raise ExerciseCheckError(f"{self.name}() is not written yet: replace the "
                                     "NotImplementedError between START and END CODE HERE")
        if self.failed:
            print(f"{self.passed} of {total} public tests passed.")
            raise ExerciseCheckError(
                f"{len(self.failed)} public test(s) of {self.name}() failed: " + "; ".join(self.failed)
            )
        print(f"All public tests passed ({total} of {total}).")


def _expect_equal(what: str, expected: Any, got: Any) -> None:
    if expected != got:
        raise Mismatch(what, expected, got)


def _expect_close(what: str, expected: np.ndarray, got: np.ndarray, atol: float = 1e-4) -> None:
    got = np.asarray(got)
    if got.shape != np.shape(expected):
        raise Mismatch(f"{what} (shape)", np.shape(expected), got.shape)
    if not np.allclose(got, expected, atol=atol, equal_nan=False):
        raise Mismatch(what, np.asarray(expected), got)


# ----------------------------------------------------------------------------
# Lesson 02, exercise 1: get_sub_volume
# ----------------------------------------------------------------------------

def _coded_image(shape: tuple[int, int, int], channels: int = 4) -> np.ndarray:
    """Every voxel holds a number that encodes its own position (x, y, z, c)."""
    x, y, z, c = np.meshgrid(*[np.arange(n) for n in (*shape, channels)], indexing="ij")
    return (((x * 100 + y) * 100 + z) * 10 + c).astype(np.float32)


def _decode_start(X: np.ndarray) -> tuple[int, int, int]:
    code = int(round(float(X[0, 0, 0, 0]))) // 10
    return code // 10000, (code // 100) % 100, code % 100


def check_get_sub_volume(get_sub_volume: Callable) -> None:
    """Public tests of ``get_sub_volume`` (lesson 02, exercise 1)."""
    run = _Run("get_sub_volume")
    shape, out = (6, 6, 4), (4, 4, 2)
    image = _coded_image(shape)
    label = np.zeros(shape, dtype=np.uint8)
    label[2:6, 2:6, 2:4] = 3
    label[2:4, 2:4, 2:4] = 2
    label[4:6, 4:6, 2:4] = 1

    def call(lab=label, max_tries=1000, threshold=0.95, img=image):
        result = get_sub_volume(img, lab, *shape, *out, num_classes=4, max_tries=max_tries,
                                background_threshold=threshold)
        if not (isinstance(result, tuple) and len(result) == 2):
            raise AssertionError(f"expected the tuple (X, y); got {type(result).__name__} "
                                 "(a missing return, or no ValueError when no patch qualifies?)")
        return result

    results = {}

    def shapes():
        results["X"], results["y"] = (np.asarray(r) for r in call())
        _expect_equal("X shape (x, y, z, channels)", (4, 4, 2, 4), results["X"].shape)
        _expect_equal("y shape (x, y, z, classes without background)", (4, 4, 2, 3), results["y"].shape)

    def x_is_a_window():
        X = results.get("X")
        if X is None:
            raise AssertionError("skipped: no patch came back")
        sx, sy, sz = _decode_start(X)
        if not (0 <= sx <= 2 and 0 <= sy <= 2 and 0 <= sz <= 2):
            raise AssertionError(f"X[0, 0, 0] does not come from a valid corner of the volume (found {sx, sy, sz})")
        _expect_close("X must be image[sx:sx+4, sy:sy+4, sz:sz+2, :]",
                      image[sx:sx + 4, sy:sy + 4, sz:sz + 2], X)

    def y_matches_x():
        X, y = results.get("X"), results.get("y")
        if X is None:
            raise AssertionError("skipped: no patch came back")
        sx, sy, sz = _decode_start(X)
        window = label[sx:sx + 4, sy:sy + 4, sz:sz + 2]
        expected = (window[..., None] == np.arange(1, 4)).astype(np.float32)
        _expect_close("y[..., k] must be 1 where the label is k + 1 (channel 0 = edema, background dropped); "
                      "showing y[..., 0, 0]", expected[..., 0, 0], y[..., 0, 0])
        _expect_close("all channels of y", expected, y)

    def threshold_respected():
        for _ in range(25):
            X, y = call(threshold=0.6)
            bg = 1.0 - np.asarray(y).sum(axis=-1).mean()
            if not bg < 0.6:
                raise Mismatch("an accepted patch must have a background share below the threshold 0.6",
                               "< 0.6", round(float(bg), 3))

    def last_position_reachable():
        only = np.zeros(shape, dtype=np.uint8)
        only[2:6, 2:6, 2:4] = 1  # only the patch in the far corner is all tumour
        what = ("the only qualifying patch starts at (orig - output) = (2, 2, 2): "
                "draw starts with np.random.randint(0, orig - output + 1)")
        try:
            X, _ = call(lab=only, threshold=0.01)
        except ValueError as err:
            raise Mismatch(what, (2, 2, 2), f"ValueError: {err} (the last corner was never drawn)") from None
        _expect_equal("the only qualifying patch starts at (orig - output) = (2, 2, 2): "
                      "draw starts with np.random.randint(0, orig - output + 1)",
                      (2, 2, 2), _decode_start(np.asarray(X)))

    def random_positions():
        everywhere = np.ones(shape, dtype=np.uint8)
        starts = {_decode_start(np.asarray(call(lab=everywhere)[0])) for _ in range(30)}
        if len(starts) < 2:
            raise Mismatch("the corner must be drawn at random; 30 calls gave one position",
                           "several positions", sorted(starts))

    def gives_up_clearly():
        empty = np.zeros(shape, dtype=np.uint8)
        try:
            result = get_sub_volume(image, empty, *shape, *out, num_classes=4, max_tries=20,
                                    background_threshold=0.95)
        except ValueError:
            return
        raise Mismatch("with no qualifying patch, raise a ValueError after max_tries",
                       "ValueError", f"returned {type(result).__name__}")

    run.test("returns (X, y) with channels-last shapes", shapes)
    run.test("X is a window of the image, all 4 channels", x_is_a_window)
    run.test("y is the one-hot label of the same window, background dropped", y_matches_x)
    run.test("accepted patches have background below the threshold", threshold_respected)
    run.test("every corner is possible, the last one included", last_position_reachable)
    run.test("the corner is random", random_positions)
    run.test("raises ValueError when no patch qualifies", gives_up_clearly)
    run.finish()


# ----------------------------------------------------------------------------
# Lesson 02, exercise 2: standardize
# ----------------------------------------------------------------------------

def check_standardize(standardize: Callable) -> None:
    """Public tests of ``standardize`` (lesson 02, exercise 2)."""
    run = _Run("standardize")
    image = np.zeros((3, 3, 2, 2), dtype=np.float32)
    image[:, :, 0, 0] = np.arange(1, 10).reshape(3, 3)           # mean 5, population std 2.582
    image[:, :, 1, 0] = 100 * np.arange(1, 10).reshape(3, 3)     # other slice, other scale
    image[:, :, 0, 1] = 7.0                                       # constant: zero variance
    image[:, :, 1, 1] = [[0, 0, 0], [0, 4, 0], [0, 0, 0]]
    original = image.copy()

    def result() -> np.ndarray:
        out = standardize(image.copy())
        if out is None:
            raise AssertionError("standardize returned None: return the standardized array")
        return np.asarray(out)

    def shape():
        _expect_equal("output shape", image.shape, result().shape)

    def hand_made_values():
        out = result()
        expected = ((np.arange(1, 10) - 5) / np.sqrt(60 / 9)).reshape(3, 3)
        _expect_close("channel 0, slice z=0: (x - mean) / std with the population std (ddof=0)",
                      expected, out[:, :, 0, 0])

    def per_slice():
        out = result()
        _expect_close("each z-slice is standardized on its own: slice z=1 (100x larger) gives the same values",
                      out[:, :, 0, 0], out[:, :, 1, 0])

    def per_channel():
        out = result()
        expected = np.where(image[:, :, 1, 1] > 0, np.sqrt(8.0), -1 / np.sqrt(8.0))
        _expect_close("channel 1, slice z=1", expected, out[:, :, 1, 1])

    def zero_variance():
        with warnings.catch_warnings(record=True) as caught, np.errstate(all="warn"):
            warnings.simplefilter("always")
            out = result()
        if caught:
            raise AssertionError(f"no warning expected; got {caught[0].category.__name__}: {caught[0].message}")
        _expect_close("a constant slice becomes all zeros (no NaN)", np.zeros((3, 3)), out[:, :, 0, 1])

    def random_volume():
        rng = np.random.default_rng(0)
        vol = rng.normal(300.0, 50.0, size=(8, 7, 5, 4)).astype(np.float32)
        out = np.asarray(standardize(vol))
        _expect_close("mean of every (z, channel) slice", np.zeros((5, 4)), out.mean(axis=(0, 1)), atol=1e-3)
        _expect_close("std of every (z, channel) slice", np.ones((5, 4)), out.std(axis=(0, 1)), atol=1e-3)

    def input_untouched():
        data = original.copy()
        standardize(data)
        _expect_close("the input array must not be modified", original, data)

    run.test("returns an array of the input's shape", shape)
    run.test("hand-made slice matches (x - mean) / std", hand_made_values)
    run.test("statistics per z-slice, not per volume", per_slice)
    run.test("statistics per channel", per_channel)
    run.test("zero-variance slices give 0, without warnings or NaN", zero_variance)
    run.test("every slice of a random volume has mean 0 and std 1", random_volume)
    run.test("the input is left unchanged", input_untouched)
    run.finish()


# ----------------------------------------------------------------------------
# The registry
# ----------------------------------------------------------------------------

@dataclass(frozen=True)
class Exercise:
    """A graded function: its public check, its reference and drift inputs.

    Attributes:
        lesson: the lesson source that holds it, e.g. ``"02_patches_and_standardization"``.
        check: the public check, called with the learner's function.
        reference: ``"module:function"`` in ``utils``.
        drift_inputs: builds ``[(args, kwargs), ...]`` on which a notebook
            solution must return what the reference returns.
        seeded: reseed ``np.random`` before each call (random functions).
    """

    lesson: str
    check: Callable[[Callable], None]
    reference: str
    drift_inputs: Callable[[], list[tuple[tuple, dict]]]
    seeded: bool = False

    def reference_function(self) -> Callable:
        module, name = self.reference.split(":")
        return getattr(importlib.import_module(module), name)


def _sub_volume_inputs():
    rng = np.random.default_rng(5)
    cases = []
    for shape, out, thr in (((12, 10, 8), (6, 6, 4), 0.95), ((9, 9, 9), (9, 3, 5), 0.8)):
        image = rng.normal(size=(*shape, 4)).astype(np.float32)
        label = np.zeros(shape, dtype=np.uint8)
        label[2:8, 3:7, 1:6] = rng.integers(0, 4, size=(6, 4, 5))
        cases.append(((image, label, *shape, *out), {"num_classes": 4, "max_tries": 500,
                                                     "background_threshold": thr}))
    return cases


def _standardize_inputs():
    rng = np.random.default_rng(6)
    vol = rng.gamma(2.0, 100.0, size=(10, 9, 6, 4)).astype(np.float32)
    vol[:, :, 0] = 0.0
    vol[:3] = 0.0
    return [((vol,), {}), ((rng.normal(size=(4, 4, 3, 2)),), {})]


EXERCISES: dict[str, Exercise] = {
    "get_sub_volume": Exercise("02_patches_and_standardization", check_get_sub_volume,
                               "utils.preprocessing:get_sub_volume", _sub_volume_inputs, seeded=True),
    "standardize": Exercise("02_patches_and_standardization", check_standardize,
                            "utils.preprocessing:standardize", _standardize_inputs),
}
