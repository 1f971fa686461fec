"""Checks of the exercises: the public ones the lessons call, and the grader's API.

A check runs the learner's function on small inputs, prints one line per test
(which passed, and for a failure what was expected, what came back and, when
the wrong value matches a known mistake, that mistake), and ends with "All
public tests passed" - or raises :class:`ExerciseCheckError` naming the failed
tests (one line in a notebook). Checks test behaviour and numbers, never layer
class names or how a correct answer draws its random numbers.

:func:`run_check` is the one entry point: ``check_<name>(fn)`` in a lesson is
``run_check(name, fn)``; a grader calls ``run_check(name, fn,
variant="grading", record=True)`` and gets :class:`TestResult` objects, on
inputs the lessons never print.

:data:`EXERCISES` lists every graded function with its check, its reference
in ``utils`` and inputs on which a notebook's solution must agree with the
reference (``tests/test_exercises.py`` uses it).
"""

from __future__ import annotations

import contextlib
import importlib
import io
import random
import signal
import sysconfig
import threading
import traceback
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

PASS, FAIL = "\u2714", "\u2718"
VARIANTS = ("public", "grading")
TIME_LIMIT_S = 120
"""Seconds one test may run in ``record`` mode before it is recorded as failed."""
SEED = 1234
"""``np.random`` and ``random`` are seeded with this for every check (then restored), so checks are deterministic."""


class ExerciseCheckError(AssertionError):
    """One or more tests of an exercise failed.

    In a notebook IPython shows only its one line (``_render_traceback_``):
    the ✔/✘ lines above it already say what failed, and a traceback through
    the checks' internals would only hide them.
    """

    def _render_traceback_(self) -> list[str]:
        return [f"{type(self).__name__}: {self}"]


@dataclass
class TestResult:
    """The outcome of one test of a check.

    Attributes:
        description: what the test checks (the text after ✔/✘).
        passed: whether it passed.
        detail: for a failure, the explanation (expected vs got, the likely
            mistake, or the learner's line that raised); "" when passed.
    """

    __test__ = False  # not a pytest test class

    description: str
    passed: bool
    detail: str = ""


class Mismatch(AssertionError):
    """A test's expected and actual values differ.

    Attributes:
        what: what was compared. expected, got: the values.
        hint: the likely mistake, when the wrong value matches a known one.
    """

    def __init__(self, what: str, expected: Any, got: Any, hint: str = ""):
        super().__init__(what)
        self.what, self.expected, self.got, self.hint = what, expected, got, hint

    def explain(self) -> str:
        lines = [self.what, f"expected: {_fmt(self.expected)}", f"got:      {_fmt(self.got)}"]
        where = _where_different(self.expected, self.got)
        if where:
            lines.append(where)
        if self.hint:
            lines.append(f"likely mistake: {self.hint}")
        return "\n".join(lines)


class _TimeLimit(BaseException):
    """A test ran past :data:`TIME_LIMIT_S` (BaseException: a learner's ``except Exception`` cannot swallow it)."""


_SMALL = 12  # arrays up to this many values are printed whole


def _fmt(value: Any) -> str:
    """A value for a ✘ line: small arrays whole, large ones summarised (shape, dtype, a few values)."""
    if isinstance(value, np.ndarray):
        with np.printoptions(precision=4, suppress=True, threshold=_SMALL, edgeitems=2, linewidth=100):
            if value.size <= _SMALL:
                return " ".join(np.array2string(value, separator=", ").split())
            flat = np.array2string(value.ravel()[:4], separator=", ")
            return f"array of shape {value.shape}, dtype {value.dtype}, starting {flat[:-1]}, ...]"
    if isinstance(value, float):
        return f"{value:.4g}"
    text = repr(value)
    return text if len(text) <= 200 else text[:200] + " ..."


def _where_different(expected: Any, got: Any) -> str:
    """For two same-shape arrays too large to print: how many values differ and the first one."""
    if not (isinstance(expected, np.ndarray) and isinstance(got, np.ndarray)):
        return ""
    if expected.shape != got.shape or expected.size <= _SMALL:
        return ""
    try:
        bad = ~np.isclose(np.asarray(got, dtype=np.float64), np.asarray(expected, dtype=np.float64), atol=1e-4,
                          equal_nan=True)
    except (TypeError, ValueError):
        return ""
    if not bad.any():
        return ""
    first = tuple(int(i) for i in np.argwhere(bad)[0])
    return (f"differ at {int(bad.sum())} of {bad.size} positions; first at index {first}: "
            f"expected {expected[first]:.4g}, got {got[first]:.4g}")


_LIBRARY_DIRS = tuple({str(Path(p).resolve()) for key in ("stdlib", "platstdlib", "purelib", "platlib")
                       if (p := sysconfig.get_paths().get(key))}) + (str(Path(__file__).resolve().parent),)


def _is_library(filename: str) -> bool:
    if filename.startswith("<frozen") or "site-packages" in filename or "dist-packages" in filename:
        return True
    try:
        resolved = str(Path(filename).resolve())
    except (OSError, ValueError):
        return False
    return resolved.startswith(_LIBRARY_DIRS)


def _learner_line(err: BaseException) -> str:
    """The learner's line that led to ``err``: the last frame outside site-packages, the stdlib and ``utils``."""
    frames = [f for f in traceback.extract_tb(err.__traceback__) if not _is_library(f.filename)]
    if not frames:
        return ""
    frame = frames[-1]
    code = f": {frame.line.strip()}" if frame.line else ""
    return f"(your line {frame.lineno}{code})"


class _Run:
    """Runs one exercise's tests, collects :class:`TestResult` and (unless recording) prints them."""

    def __init__(self, name: str, record: bool):
        self.name, self.record = name, record
        self.results: list[TestResult] = []
        self.not_written = ""
        self._say(f"Checking {name}()")

    def _say(self, text: str) -> None:
        if not self.record:
            print(text)

    def _fail(self, description: str, detail: str) -> bool:
        self.results.append(TestResult(description, False, detail))
        self._say(f"  {FAIL} {description}" + "".join(f"\n      {line}" for line in detail.splitlines()))
        return False

    def test(self, description: str, body: Callable[[], None]) -> bool:
        """Run one test; True if it passed."""
        if self.not_written:
            self.results.append(TestResult(description, False, self.not_written))
            return False
        try:
            with self._time_limit():
                body()
        except NotImplementedError as err:
            self.not_written = f"your function is not written yet: {err}"
            self.results.append(TestResult(description, False, self.not_written))
            self._say(f"  {FAIL} {self.not_written}")
            return False
        except Mismatch as err:
            return self._fail(description, err.explain())
        except AssertionError as err:
            return self._fail(description, str(err))
        except _TimeLimit:
            return self._fail(description, f"stopped after {TIME_LIMIT_S} s: an endless loop?")
        except Exception as err:  # the learner's code raised: show where
            where = _learner_line(err)
            if where:
                return self._fail(description, f"your function raised {type(err).__name__}: {err}\n{where}")
            return self._fail(description, f"{type(err).__name__} while checking what your function "
                                           f"returned: {err}")
        self.results.append(TestResult(description, True, ""))
        self._say(f"  {PASS} {description}")
        return True

    @contextlib.contextmanager
    def _time_limit(self):
        usable = (self.record and hasattr(signal, "setitimer")
                  and threading.current_thread() is threading.main_thread())
        if not usable:
            yield
            return

        def stop(signum, frame):
            raise _TimeLimit()

        previous = signal.signal(signal.SIGALRM, stop)
        signal.setitimer(signal.ITIMER_REAL, TIME_LIMIT_S)
        try:
            yield
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous)

    def finish(self) -> None:
        """Print the summary; raise :class:`ExerciseCheckError` if a test failed."""
        total = len(self.results)
        failed = [r.description for r in self.results if not r.passed]
        if self.not_written.startswith("your function is not written yet"):
            raise ExerciseCheckError(f"{self.name}() is not written yet: replace the "
                                     "NotImplementedError between START and END CODE HERE")
        if self.not_written:
            raise ExerciseCheckError(self.not_written)
        if failed:
            print(f"{total - len(failed)} of {total} public tests passed.")
            raise ExerciseCheckError(
                f"{len(failed)} public test(s) of {self.name}() failed: " + "; ".join(failed)
            )
        print(f"All public tests passed ({total} of {total}).")


def run_check(exercise: str, fn: Callable, *, variant: str = "public", record: bool = False) -> list[TestResult]:
    """Run the tests of one exercise on a learner's function.

    Args:
        exercise: the graded function's name, a key of :data:`EXERCISES` (e.g. ``"soft_dice_loss"``).
        fn: the learner's function.
        variant: ``"public"`` runs exactly the lesson's check; ``"grading"`` the
            same tests on other inputs, shapes and seeds (never shown in the
            lessons), so an answer hard-coded to the lesson's outputs fails.
        record: if True, print nothing and raise nothing (a function that
            raises, never returns within :data:`TIME_LIMIT_S` per test, or
            returns garbage gives failed results; the time limit needs the
            main thread on a POSIX system, elsewhere there is none); if False
            (the notebooks), print the ✔/✘ lines and raise
            :class:`ExerciseCheckError` on failure.

    Returns:
        One :class:`TestResult` per test, in order.

    Raises:
        KeyError / ValueError: an unknown exercise or variant (whatever ``record``).
        ExerciseCheckError: a test failed and ``record`` is False.
    """
    if exercise not in EXERCISES:
        raise KeyError(f"unknown exercise {exercise!r}; known: {sorted(EXERCISES)}")
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {VARIANTS}; found {variant!r}")
    run = _Run(exercise, record)
    if not callable(fn):
        run.not_written = f"{exercise} is not a function: found {type(fn).__name__} (did its cell run?)"
        run._say(f"  {FAIL} {run.not_written}")
    np_state, py_state = np.random.get_state(), random.getstate()
    np.random.seed(SEED + (variant == "grading"))
    random.seed(SEED + (variant == "grading"))
    quiet = io.StringIO()
    try:
        with contextlib.ExitStack() as stack:
            if record:
                stack.enter_context(contextlib.redirect_stdout(quiet))
                stack.enter_context(contextlib.redirect_stderr(quiet))
                stack.enter_context(warnings.catch_warnings())
                warnings.simplefilter("ignore")
            try:
                EXERCISES[exercise].tests(fn, run, variant == "grading")
            except Exception as err:  # a bug outside any single test: record it, never lose the results
                if not record:
                    raise
                run.results.append(TestResult("the check ran to the end", False,
                                              f"the check stopped: {type(err).__name__}: {err}"))
    finally:
        np.random.set_state(np_state)
        random.setstate(py_state)
    if not record:
        run.finish()
    return run.results


def _expect_equal(what: str, expected: Any, got: Any, hint: str = "") -> None:
    if expected != got:
        raise Mismatch(what, expected, got, hint)


def _expect_close(what: str, expected: Any, got: Any, atol: float = 1e-4, hint: str = "") -> None:
    got = np.asarray(got)
    if got.shape != np.shape(expected):
        raise Mismatch(f"{what} (shape)", np.shape(expected), got.shape, hint)
    if not np.allclose(got, expected, atol=atol, equal_nan=False):
        raise Mismatch(what, np.asarray(expected), got, hint)


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


def _get_sub_volume_tests(get_sub_volume: Callable, run: _Run, grading: bool) -> None:
    """Tests of ``get_sub_volume`` (lesson 02, exercise 1).

    Volumes and patches are not square in x and y (so swapping them shows),
    and no label holds the top class 3 (so a one-hot encoding that takes its
    number of classes from the data, not from ``num_classes``, shows).
    """
    shape, out = ((6, 9, 5), (3, 5, 3)) if grading else ((7, 5, 4), (4, 3, 2))
    starts_max = tuple(s - o for s, o in zip(shape, out))
    image = _coded_image(shape)
    label = np.zeros(shape, dtype=np.uint8)
    label[2:, 1:, 1:] = 1                       # edema
    label[3:, 2:4, 1:] = 2                      # non-enhancing core
    if grading:
        label[:2, 5:, :2] = 2

    def call(lab=label, img=image, orig=shape, size=out, max_tries=1000, threshold=0.95):
        result = get_sub_volume(img, lab, *orig, *size, num_classes=4, max_tries=max_tries,
                                background_threshold=threshold)
        if not (isinstance(result, (tuple, list)) and len(result) == 2):
            raise AssertionError(f"expected the pair (X, y); got {type(result).__name__} "
                                 "(a missing return, or no ValueError when no patch qualifies?)")
        return np.asarray(result[0]), np.asarray(result[1])

    results = {}

    def shapes():
        results["X"], results["y"] = call()
        X, y = results["X"], results["y"]
        _expect_equal("X shape (x, y, z, channels)", (*out, 4), X.shape,
                      "x and y swapped (output_y used for x?)" if X.shape[:2] == out[1::-1] else "")
        hint = ""
        if y.shape[-1] == 2:
            hint = ("the one-hot encoding took its number of classes from the label (no voxel is 3 here): "
                    "pass num_classes")
        elif y.shape[-1] == 4:
            hint = "the background channel is still there: return y[..., 1:]"
        _expect_equal("y shape (x, y, z, classes without background)", (*out, 3), y.shape, hint)

    def x_is_a_window():
        X = results.get("X")
        if X is None:
            raise AssertionError("skipped: no patch came back")
        sx, sy, sz = _decode_start(X)
        if not all(0 <= s <= m for s, m in zip((sx, sy, sz), starts_max)):
            raise AssertionError(f"X[0, 0, 0] does not come from a valid corner of the volume (found {sx, sy, sz})")
        ox, oy, oz = out
        _expect_close(f"X must be image[sx:sx+{ox}, sy:sy+{oy}, sz:sz+{oz}, :] (all channels)",
                      image[sx:sx + ox, sy:sy + oy, sz:sz + oz], X)

    def y_matches_x():
        X, y = results.get("X"), results.get("y")
        if X is None:
            raise AssertionError("skipped: no patch came back")
        sx, sy, sz = _decode_start(X)
        window = label[sx:sx + out[0], sy:sy + out[1], sz:sz + out[2]]
        expected = (window[..., None] == np.arange(1, 4)).astype(np.float32)
        got = np.asarray(y, dtype=np.float32)
        hint = ""
        if got.shape == expected.shape and np.allclose(got[..., 0], window == 0):
            hint = "channel 0 is the background: drop it with y[..., 1:]"
        _expect_close("y[..., k] must be 1 where the label is k + 1 (channel 0 = edema, background dropped)",
                      expected, got, hint=hint)

    def threshold_respected():
        for _ in range(25):
            _, y = call(threshold=0.6)
            bg = 1.0 - np.asarray(y, dtype=np.float64).sum(axis=-1).mean()
            if not bg < 0.6:
                raise Mismatch("an accepted patch must have a background share below the threshold 0.6",
                               "< 0.6", round(float(bg), 3))

    def threshold_exclusive():
        # the patch is the whole volume, whose background share equals the threshold exactly
        small = (5, 4, 2) if grading else (4, 3, 2)
        share = 0.75 if grading else 0.5
        lab = np.zeros(small, dtype=np.uint8)
        lab.reshape(-1)[: int(round(np.prod(small) * (1 - share)))] = 1
        try:
            got = call(lab=lab, img=_coded_image(small), orig=small, size=small, max_tries=5, threshold=share)
        except ValueError:
            return
        raise Mismatch(f"background share {share} with background_threshold={share}: the patch is rejected "
                       "(a ValueError), as the share must be below the threshold",
                       "ValueError", f"a patch of shape {got[0].shape}",
                       "<= instead of < in the background test")

    def every_corner():
        everywhere = np.ones(shape, dtype=np.uint8)
        seen = {_decode_start(call(lab=everywhere)[0]) for _ in range(600)}
        valid = {(a, b, c) for a in range(starts_max[0] + 1) for b in range(starts_max[1] + 1)
                 for c in range(starts_max[2] + 1)}
        missing, outside = sorted(valid - seen), sorted(seen - valid)
        if not missing and not outside:
            return
        lines = [f"600 patches from a volume that is tumour everywhere: every corner from (0, 0, 0) to "
                 f"{starts_max} (orig - output) should come up; {len(seen)} different ones did"]
        if missing:
            lines.append(f"never drawn: {len(missing)} of {len(valid)}, e.g. {missing[:3]}")
        if outside:
            lines.append(f"drawn although the patch does not fit there: {outside[:3]}")
        if len(seen) == 1:
            lines.append("likely mistake: the corner is not drawn at random")
        elif outside:
            lines.append("likely mistake: x and y swapped (a start drawn with orig_y - output_y used for x?)")
        elif all(any(s == m for s, m in zip(c, starts_max)) for c in missing) and \
                not any(any(s == m for s, m in zip(c, starts_max)) for c in seen):
            lines.append("likely mistake: the last start position (orig - output) is never drawn: "
                         "np.random.randint(low, high) excludes high")
        raise AssertionError("\n".join(lines))

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
    run.test("a background share equal to the threshold is rejected (below means <)", threshold_exclusive)
    run.test("the corner is random and every corner is possible, the far one included", every_corner)
    run.test("raises ValueError when no patch qualifies", gives_up_clearly)


# ----------------------------------------------------------------------------
# Lesson 02, exercise 2: standardize
# ----------------------------------------------------------------------------

def _standardized(image: np.ndarray) -> np.ndarray:
    """Per (z, channel) slice (x - mean) / population std; constant slices 0."""
    image = np.asarray(image, np.float64)
    mean = image.mean(axis=(0, 1), keepdims=True)
    std = image.std(axis=(0, 1), keepdims=True)
    return np.divide(image - mean, std, out=np.zeros_like(image), where=std > 1e-12)


def _standardize_mistakes(image: np.ndarray) -> dict[str, np.ndarray]:
    image = np.asarray(image, np.float64)

    def by(axes, ddof=0):
        mean = image.mean(axis=axes, keepdims=True)
        std = image.std(axis=axes, keepdims=True, ddof=ddof)
        with np.errstate(all="ignore"):
            return np.divide(image - mean, std, out=np.zeros_like(image), where=std > 1e-12)

    return {"the sample std (ddof=1); use the population std (np.std's default, ddof=0)": by((0, 1), ddof=1),
            "statistics over the whole volume, not per z-slice and channel": by((0, 1, 2, 3)),
            "statistics per channel over all z, not per z-slice": by((0, 1, 2)),
            "statistics per z-slice over all channels, not per channel": by((0, 1, 3)),
            "statistics over the wrong axes (per x-slice?)": by((1, 2))}


def _expect_standardized(what: str, image: np.ndarray, got: Any, index=np.s_[...]) -> None:
    expected = _standardized(image)
    out = np.asarray(got)
    hint = ""
    if out.shape == expected.shape:
        if not np.issubdtype(out.dtype, np.floating):
            hint = (f"the output has the integer dtype {out.dtype} of the input, so the fractions are cut off: "
                    "make the output a float array")
        else:
            hint = "; or ".join(text for text, wrong in _standardize_mistakes(image).items()
                                if np.allclose(out, wrong, atol=1e-3))
            if not hint and np.isnan(out).any():
                hint = "NaN where a slice is constant (std 0): leave those slices at 0"
    _expect_close(what, expected[index], out[index] if out.shape == expected.shape else out, atol=1e-3, hint=hint)


def _standardize_tests(standardize: Callable, run: _Run, grading: bool) -> None:
    """Tests of ``standardize`` (lesson 02, exercise 2)."""
    a = np.arange(1, 10).reshape(3, 3) if not grading else np.array([[2, 4, 4], [4, 5, 5], [7, 9, 0]])
    image = np.zeros((3, 3, 2, 2), dtype=np.float32)
    image[:, :, 0, 0] = a
    image[:, :, 1, 0] = 100 * a + (0 if not grading else 7)     # other slice, other scale
    image[:, :, 0, 1] = 7.0 if not grading else -3.0             # constant: zero variance
    image[:, :, 1, 1] = [[0, 0, 0], [0, 4, 0], [0, 0, 0]] if not grading else [[0, 1, 0], [0, 0, 0], [0, 1, 0]]
    original = image.copy()

    def result() -> np.ndarray:
        out = standardize(image.copy())
        if out is None:
            raise AssertionError("standardize returned None: return the standardized array")
        return np.asarray(out)

    def shape():
        _expect_equal("output shape", image.shape, result().shape)

    mean, std = a.mean(), a.std()
    run.test("returns an array of the input's shape", shape)
    run.test(f"hand-made slice matches (x - mean) / std: mean {mean:.4g}, population std {std:.4g} (ddof=0)",
             lambda: _expect_standardized("channel 0, slice z=0", image, result(), np.s_[:, :, 0, 0]))
    run.test("statistics per z-slice, not per volume: slice z=1 (100x larger) gives the same values",
             lambda: _expect_standardized("channel 0, slice z=1", image, result(), np.s_[:, :, 1, 0]))
    run.test("statistics per channel",
             lambda: _expect_standardized("channel 1, slice z=1", image, result(), np.s_[:, :, 1, 1]))

    def zero_variance():
        with warnings.catch_warnings(record=True) as caught, np.errstate(all="warn"):
            warnings.simplefilter("always")
            out = result()
        if caught:
            raise AssertionError(f"no warning expected; got {caught[0].category.__name__}: {caught[0].message}")
        _expect_standardized("a constant slice becomes all zeros (no NaN)", image, out, np.s_[:, :, 0, 1])

    def int16_input():
        rng = np.random.default_rng(21 if grading else 20)
        vol = rng.integers(0, 900, size=(7, 6, 3, 4) if grading else (6, 5, 4, 4)).astype(np.int16)
        _expect_standardized("int16 input (as the real files are): float values", vol, standardize(vol.copy()))

    def random_volume():
        rng = np.random.default_rng(23 if grading else 22)
        vol = rng.normal(300.0, 50.0, size=(9, 7, 4, 3) if grading else (8, 7, 5, 4)).astype(np.float32)
        vol[:, :, 1, 2] = 123.0
        _expect_standardized("every slice", vol, standardize(vol.copy()))

    def input_untouched():
        data = original.copy()
        standardize(data)
        _expect_close("the input array must not be modified", original, data,
                      hint="the function writes into its input: work on a copy or a new array")

    run.test("zero-variance slices give 0, without warnings or NaN", zero_variance)
    run.test("integer input gives float output with the right values", int16_input)
    run.test("every slice of a random volume has mean 0 and std 1", random_volume)
    run.test("the input is left unchanged", input_untouched)


# ----------------------------------------------------------------------------
# Lesson 03: the U-Net blocks
# ----------------------------------------------------------------------------
#
# The blocks are judged by what they compute, not by their layer classes:
# the check gives the learner's model known weights (each kernel found by its
# shape, biases 0, normalization at its initial state) and compares the output
# with the same block computed in NumPy. Sequential sub-models, keras.ops.relu,
# either concatenation order: anything that computes the block passes.

_NORM_EPS = 1e-3  # Keras' default epsilon of BatchNormalization and GroupNormalization


def _keras():
    import keras

    return keras


def _conv3d_same(x: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """A 3x3x3 'same' convolution (cross-correlation, as Keras) of (B, X, Y, Z, C) with (3, 3, 3, C, F)."""
    b, nx, ny, nz, _ = x.shape
    padded = np.pad(x, ((0, 0), (1, 1), (1, 1), (1, 1), (0, 0)))
    out = np.zeros((b, nx, ny, nz, kernel.shape[-1]))
    for i in range(3):
        for j in range(3):
            for k in range(3):
                out += padded[:, i:i + nx, j:j + ny, k:k + nz] @ kernel[i, j, k]
    return out


def _transpose_conv(x: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """A transposed convolution with kernel = strides = p: (B, X, Y, Z, C), (p1, p2, p3, F, C) -> (B, p1 X, ...)."""
    b, nx, ny, nz, _ = x.shape
    p1, p2, p3, f, _ = kernel.shape
    out = np.einsum("bxyzc,ijkfc->bxiyjzkf", x, kernel)
    return out.reshape(b, nx * p1, ny * p2, nz * p3, f)


def _normalize(h: np.ndarray, normalization: str | None) -> np.ndarray:
    if normalization is None:
        return h
    axes = (0, 1, 2, 3) if normalization == "batch" else (1, 2, 3)  # batch: over the batch; instance: per sample
    mean, var = h.mean(axis=axes, keepdims=True), h.var(axis=axes, keepdims=True)
    return (h - mean) / np.sqrt(var + _NORM_EPS)


def _block_np(x: np.ndarray, k1: np.ndarray, k2: np.ndarray, normalization: str | None) -> np.ndarray:
    for kernel in (k1, k2):
        x = np.maximum(_normalize(_conv3d_same(x, kernel), normalization), 0.0)
    return x


def _random_kernels(rng: np.random.Generator, *shapes: tuple[int, ...]) -> list[np.ndarray]:
    """3x3x3 kernels whose outputs have about unit variance (std 1 / sqrt(fan-in)), so a wrong activation shows."""
    return [rng.normal(size=s) / np.sqrt(27 * s[3]) for s in shapes]


def _weight_name(variable) -> str:
    return str(getattr(variable, "name", "")).split("/")[-1].split(":")[0]


def _set_known_weights(model, kernels: dict[tuple[int, ...], np.ndarray], what: str) -> None:
    """Give ``model`` known weights: each 5-D kernel by its shape; biases and offsets 0, scales 1."""
    shapes = [tuple(int(d) for d in v.shape) for v in model.weights if len(v.shape) == 5]
    if sorted(shapes) != sorted(kernels):
        raise Mismatch(f"convolution kernels (x, y, z, in, out) of {what}", sorted(kernels), sorted(shapes),
                       _kernel_hint(sorted(kernels), sorted(shapes)))
    for v in model.weights:
        shape = tuple(int(d) for d in v.shape)
        name = _weight_name(v)
        if len(shape) == 5:
            v.assign(kernels[shape].astype(np.float32))
        elif name in ("bias", "beta", "moving_mean"):
            v.assign(np.zeros(shape, np.float32))
        elif name in ("gamma", "moving_variance"):
            v.assign(np.ones(shape, np.float32))


def _kernel_hint(expected: list[tuple], got: list[tuple]) -> str:
    if len(got) != len(expected):
        return f"{len(got)} convolutions where {len(expected)} are expected"
    if any(g[:3] != e[:3] for g, e in zip(got, expected)):
        return "wrong kernel size (the conv block uses 3, the transposed convolution pool_size)"
    return "a convolution sees the wrong number of input channels (the skip not concatenated?)"


def _predict(model, inputs, training: bool) -> np.ndarray:
    from keras import ops

    return np.asarray(ops.convert_to_numpy(model(inputs, training=training)), dtype=np.float64)


def _expect_block(what: str, expected: np.ndarray | list[np.ndarray], got: np.ndarray, hint_fn=None) -> None:
    """``got`` must match ``expected`` (or one of several equally right answers)."""
    options = expected if isinstance(expected, list) else [expected]
    if any(got.shape == e.shape and np.allclose(got, e, rtol=1e-2, atol=1e-2) for e in options):
        return
    if got.shape != options[0].shape:
        raise Mismatch(f"{what} (shape)", options[0].shape, got.shape)
    raise Mismatch(what, options[0], got, hint_fn(got) if hint_fn else "")


def _activation_hint(got: np.ndarray) -> str:
    if got.min() < -1e-6:
        return "negative outputs: the block must end with a ReLU"
    if not np.any(got == 0):
        return "no output is exactly 0, as a ReLU gives for negative inputs: another activation (sigmoid, softplus)?"
    return ""


def _conv_block_tests(conv_block: Callable, run: _Run, grading: bool) -> None:
    """Tests of ``conv_block`` (lesson 03, exercise 1)."""
    keras = _keras()
    shape, f = ((5, 6, 4, 3), 8) if grading else ((6, 6, 4, 4), 10)
    cin = shape[-1]
    rng = np.random.default_rng(31 if grading else 30)
    k1, k2 = _random_kernels(rng, (3, 3, 3, cin, f), (3, 3, 3, f, f))
    x = rng.normal(size=(2, *shape)).astype(np.float32)
    x[1] = 3.0 * x[1] + 1.0  # the two samples have other statistics
    x[..., 0] += 2.0         # and so have the channels
    models = {}

    def build(normalization):
        if normalization not in models:
            models[normalization] = None
            inp = keras.Input(shape)
            out = conv_block(inp, f, normalization=normalization)
            if out is None:
                raise AssertionError("conv_block returned None: return the block's output tensor")
            models[normalization] = keras.Model(inp, out)
        if models[normalization] is None:
            raise AssertionError(f"skipped: the block with normalization={normalization!r} could not be built")
        return models[normalization]

    def out_shape():
        _expect_equal(f"output shape for input (None, {', '.join(map(str, shape))}) and {f} filters",
                      (None, *shape[:3], f), tuple(build(None).output.shape),
                      "padding='same' keeps the size")

    conv_params = 27 * cin * f + 27 * f * f

    def params():
        got = build(None).count_params()
        hint = "no bias: without normalization the convolutions keep theirs" if got == conv_params else ""
        _expect_equal(f"parameters: (3*3*3*{cin}*{f} + {f}) + (3*3*3*{f}*{f} + {f})", conv_params + 2 * f, got,
                      hint)

    def computes(normalization, training):
        def body():
            model = build(normalization)
            _set_known_weights(model, {k1.shape: k1, k2.shape: k2}, "conv_block")
            expected = _block_np(x.astype(np.float64), k1, k2, normalization)

            def hint(got):
                text = _activation_hint(got)
                if text or normalization is None:
                    return text or "conv -> ReLU -> conv -> ReLU: is the first ReLU missing?"
                other = "instance" if normalization == "batch" else "batch"
                if np.allclose(got, _block_np(x.astype(np.float64), k1, k2, other), rtol=1e-2, atol=1e-2):
                    return f"this is {other} normalization"
                return (f"{normalization} normalization normalizes each channel over "
                        + ("the batch and all voxels" if normalization == "batch" else
                           "the voxels of each sample (LayerNormalization or GroupNormalization with other "
                           "groups normalize across channels)")
                        + ", between the convolution and its ReLU")

            _expect_block("output of the block with known weights (kernels random, biases 0)", expected,
                          _predict(model, x, training), hint)

        return body

    def norm_params(normalization, per_layer):
        def body():
            expected, got = conv_params + 2 * per_layer * f, build(normalization).count_params()
            hint = ""
            if got == expected + 2 * f:
                hint = "with normalization the convolutions have no bias (use_bias=normalization is None)"
            elif got == conv_params + 2 * f:
                hint = f"no normalization layer with normalization={normalization!r}"
            _expect_equal(f"parameters with normalization={normalization!r}: convolutions without bias "
                          f"({conv_params}) plus 2 x {per_layer} x {f} normalization parameters", expected, got, hint)

        return body

    run.test("keeps the spatial size and outputs `filters` channels", out_shape)
    run.test("two 3x3x3 convolutions with bias", params)
    run.test("computes conv -> ReLU -> conv -> ReLU (negative values become 0)", computes(None, False))
    run.test("normalization='batch': BatchNormalization without conv bias", norm_params("batch", 4))
    run.test("batch normalization between each convolution and its ReLU (statistics over the batch)",
             computes("batch", True))
    run.test("normalization='instance': one group per channel, without conv bias", norm_params("instance", 2))
    run.test("instance normalization: each channel of each sample normalized on its own", computes("instance", False))


def _upsampling_block_tests(upsampling_block: Callable, run: _Run, grading: bool) -> None:
    """Tests of ``upsampling_block`` (lesson 03, exercise 2)."""
    keras = _keras()
    if grading:
        x_shape, skip_shape, f, cases = (3, 2, 2, 6), (6, 4, 4, 5), 4, [None, (2, 1, 2)]
    else:
        x_shape, skip_shape, f, cases = (4, 4, 4, 32), (8, 8, 8, 16), 16, [None, (2, 2, 1)]
    cx, cs = x_shape[-1], skip_shape[-1]
    rng = np.random.default_rng(33 if grading else 32)
    models = {}

    def build(pool_size, normalization=None):
        key = (pool_size, normalization)
        if key not in models:
            models[key] = None
            factor = (2, 2, 2) if pool_size is None else pool_size
            xs = tuple(s // p for s, p in zip(skip_shape[:3], factor)) + (cx,)
            x, skip = keras.Input(xs), keras.Input(skip_shape)
            kwargs = {} if pool_size is None else {"pool_size": list(pool_size) if grading else pool_size}
            if normalization:
                kwargs["normalization"] = normalization
            out = upsampling_block(x, skip, f, **kwargs)
            if out is None:
                raise AssertionError("upsampling_block returned None: return the block's output tensor")
            models[key] = keras.Model([x, skip], out)
        if models[key] is None:
            raise AssertionError("skipped: the block could not be built")
        return models[key]

    def out_shape(pool_size):
        def body():
            _expect_equal(f"output shape: the skip's spatial size with {f} channels",
                          (None, *skip_shape[:3], f), tuple(build(pool_size).output.shape))

        return body

    def params(pool_size):
        p = (2, 2, 2) if pool_size is None else pool_size
        n = int(np.prod(p))
        transposed, conv1, conv2 = n * f * cx + f, 27 * (f + cs) * f + f, 27 * f * f + f

        def body():
            got = build(pool_size).count_params()
            hint = ""
            if got == transposed + 27 * f * f + f + conv2:
                hint = "the skip is not concatenated: the conv block should see filters + skip channels"
            elif got == conv1 + conv2 + 27 * cx * f + f:
                hint = "up-sampling with a 3x3x3 kernel: the transposed convolution has kernel = strides = pool_size"
            _expect_equal(f"parameters: transposed conv {p} ({n}*{f}*{cx} + {f}) + conv block on {f} + {cs} "
                          f"channels (27*{f + cs}*{f} + {f}) + (27*{f}*{f} + {f})",
                          transposed + conv1 + conv2, got, hint)

        return body

    def computes(pool_size):
        def body():
            model = build(pool_size)
            p = (2, 2, 2) if pool_size is None else pool_size
            k1, k2 = _random_kernels(rng, (3, 3, 3, f + cs, f), (3, 3, 3, f, f))
            kt = rng.normal(size=(*p, f, cx)) / np.sqrt(cx)  # unit-variance up-sampled values
            _set_known_weights(model, {kt.shape: kt, k1.shape: k1, k2.shape: k2}, "upsampling_block")
            xs = tuple(int(d) for d in model.inputs[0].shape[1:])
            x = rng.normal(size=(2, *xs)).astype(np.float32)
            skip = rng.normal(size=(2, *skip_shape)).astype(np.float32)
            up = _transpose_conv(x.astype(np.float64), kt)
            # either concatenation order is right (the same kernel then reads the channels in that order)
            options = [_block_np(np.concatenate(pair, -1), k1, k2, None) for pair in ((up, skip), (skip, up))]
            got = _predict(model, [x, skip], False)

            def hint(got):
                relu_up = np.maximum(up, 0.0)
                for pair in ((relu_up, skip), (skip, relu_up)):
                    if got.shape == options[0].shape and np.allclose(
                            got, _block_np(np.concatenate(pair, -1), k1, k2, None), rtol=1e-2, atol=1e-2):
                        return "an activation on the transposed convolution: it up-samples linearly"
                return _activation_hint(got)

            _expect_block(f"output with known weights, pool_size={p}", options, got, hint)

        return body

    def normalization():
        got = build(None, "batch").count_params()
        plain = 8 * f * cx + f + 27 * (f + cs) * f + f + 27 * f * f + f
        _expect_equal("parameters with normalization='batch': the conv block without bias, with 2 x 4 x "
                      f"{f} BatchNormalization parameters", plain - 2 * f + 8 * f, got,
                      "normalization is not passed on to conv_block" if got == plain else "")

    default, other = cases
    run.test("output has the skip's spatial size and `filters` channels", out_shape(default))
    run.test("transposed convolution (kernel = stride = pool_size), concatenation, conv block", params(default))
    run.test("up-samples linearly, concatenates the skip, then conv block (known weights)", computes(default))
    run.test(f"pool_size={other} sets the up-sampling factor per axis", out_shape(other))
    run.test(f"pool_size={other}: parameters and output", lambda: (params(other)(), computes(other)()))
    run.test("normalization is applied in the conv block", normalization)


# ----------------------------------------------------------------------------
# Lesson 04: Dice, soft Dice loss, sensitivity and specificity
# ----------------------------------------------------------------------------

def _numpy(value) -> np.ndarray:
    try:
        from keras import ops

        return np.asarray(ops.convert_to_numpy(value), dtype=np.float64)
    except Exception:  # already numpy / python
        return np.asarray(value, dtype=np.float64)


def _dice(t: np.ndarray, p: np.ndarray, axis, eps: float, squares: bool = False, num_eps: float | None = None,
          den_eps: float | None = None) -> np.ndarray:
    """(2 * sum(t * p) + eps) / (sum(t) + sum(p) + eps) over ``axis`` (squared sums with ``squares``)."""
    t, p = np.asarray(t, np.float64), np.asarray(p, np.float64)
    num_eps = eps if num_eps is None else num_eps
    den_eps = eps if den_eps is None else den_eps
    num = 2.0 * (t * p).sum(axis=axis) + num_eps
    den = ((t * t).sum(axis=axis) + (p * p).sum(axis=axis)) if squares else (t.sum(axis=axis) + p.sum(axis=axis))
    with np.errstate(divide="ignore", invalid="ignore"):
        return num / (den + den_eps)


def _dice_mistakes(t: np.ndarray, p: np.ndarray, eps: float, *, soft: bool, loss: bool,
                   batch: bool) -> dict[str, float]:
    """What the common Dice mistakes return on (t, p): ``{explanation: value}``.

    ``batch``: (B, x, y, z, C) inputs reduced over (1, 2, 3), then averaged;
    otherwise one (x, y, z) volume reduced over (0, 1, 2).
    """
    spatial = (1, 2, 3) if batch else (0, 1, 2)

    def score(axis=spatial, squares=soft, **kw) -> float:
        value = float(np.mean(_dice(t, p, axis, eps, squares, **kw)))
        return 1.0 - value if loss else value

    right = score()
    what = "loss" if loss else "Dice"
    out = {
        ("no squares in the denominator: the soft Dice divides by sum(p²) + sum(y²)" if soft else
         "squares in the denominator: the plain Dice divides by sum(y_true) + sum(y_pred), unsquared"):
            score(squares=not soft),
        ("returns the Dice, not the loss 1 - Dice" if loss else "returns 1 - Dice (a loss), not the Dice"):
            1.0 - right,
        "epsilon only in the denominator (add it to the numerator too)": score(num_eps=0.0),
        "epsilon only in the numerator (add it to the denominator too)": score(den_eps=0.0),
        "2 * (sum + epsilon) in the numerator: epsilon is added once, after the 2 *": score(num_eps=2 * eps),
    }
    if eps != 1e-5:
        out["the epsilon argument is not used (a fixed 1e-5?)"] = score(num_eps=1e-5, den_eps=1e-5)
    if batch:
        per_sample = np.mean(_dice(t, p, spatial, eps, soft), axis=-1)
        pooled = score(axis=(0, *spatial))
        out[f"the batch is pooled: the per-sample {what} values are "
            f"{np.round(1 - per_sample if loss else per_sample, 4).tolist()}, mean {right:.4g}; "
            f"summing over the samples too gives {pooled:.4g}"] = pooled
        out["z is not summed (axis=(1, 2)): sum over all three spatial axes, axis=(1, 2, 3)"] = score(axis=(1, 2))
        out["the classes are pooled (summed over the last axis too): Dice per sample and class, then the mean"] = \
            score(axis=(1, 2, 3, 4))
    return out


def _hint(got: Any, expected: float, mistakes: dict[str, float]) -> str:
    """The explanation of the mistakes whose value matches ``got`` (and not the right answer)."""
    try:
        value = float(np.asarray(got, dtype=np.float64))
    except (TypeError, ValueError):
        return ""
    found = [text for text, wrong in mistakes.items()
             if np.isfinite(wrong) and abs(wrong - expected) > 1e-4 and abs(value - wrong) <= 1e-4]
    return "; or ".join(found)


def _expect_dice(what: str, t: np.ndarray, p: np.ndarray, eps: float, got: Any, *, soft: bool, loss: bool,
                 batch: bool) -> None:
    """``got`` must be the (soft) Dice or loss of (t, p); on a mismatch name the likely mistake."""
    mistakes = _dice_mistakes(t, p, eps, soft=soft, loss=loss, batch=batch)
    axis = (1, 2, 3) if batch else (0, 1, 2)
    expected = float(np.mean(_dice(t, p, axis, eps, soft)))
    expected = 1.0 - expected if loss else expected
    got = _numpy(got)
    if got.shape != ():
        hint = ("z is not summed: one value per z-slice came back" if got.shape[-1:] == t.shape[2:3] and not batch
                else "return one number: the mean over samples and classes" if batch else "")
        raise Mismatch(f"{what} (shape: one number expected)", (), got.shape, hint)
    _expect_close(what, expected, got, hint=_hint(got, expected, mistakes))


def _soft(rng: np.random.Generator, shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """A 0/1 label and soft predictions in (0, 1) that overlap it.

    Along the first axis (the samples of a batch) the tumour shrinks and the
    prediction worsens, so that per-sample and pooled Dice differ clearly.
    """
    n = shape[0]
    share = np.linspace(0.6, 0.15, n).reshape(n, *[1] * (len(shape) - 1))
    good = np.linspace(0.7, 0.1, n).reshape(share.shape)
    label = (rng.random(shape) < share).astype(np.float32)
    pred = np.clip(good * label + 0.5 * rng.random(shape), 0.02, 0.98).astype(np.float32)
    return label, pred


_P1 = np.array([[1.0, 0.0], [0.0, 1.0]])
_L1 = np.array([[1.0, 1.0], [0.0, 0.0]])
_L2 = np.array([[1.0, 1.0], [0.0, 1.0]])
# grading: other small hand-made masks
_P1G = np.array([[0.0, 1.0, 1.0], [1.0, 0.0, 0.0]])
_L1G = np.array([[0.0, 1.0, 0.0], [1.0, 1.0, 1.0]])
_L2G = np.array([[1.0, 1.0, 1.0], [0.0, 0.0, 0.0]])


def _hand_made(grading: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return (_P1G, _L1G, _L2G) if grading else (_P1, _L1, _L2)


def _single_class_dice_coefficient_tests(fn: Callable, run: _Run, grading: bool) -> None:
    """Tests of ``single_class_dice_coefficient`` (lesson 04, exercise 1)."""
    p, l1, l2 = (a[..., None] for a in _hand_made(grading))
    rng = np.random.default_rng(41 if grading else 40)
    kw = {"soft": False, "loss": False, "batch": False}

    def hand(label):
        d = _dice(label, p, (0, 1, 2), 1.0)
        return lambda: _expect_dice(f"Dice = {d:.4g}", label, p, 1.0, fn(label, p, epsilon=1), **kw)

    for label in (l1, l2):
        tp, tl, pp = int((label * p).sum()), int(label.sum()), int(p.sum())
        run.test(f"pred {p[..., 0].astype(int).tolist()}, label {label[..., 0].astype(int).tolist()}, epsilon=1: "
                 f"(2*{tp} + 1) / ({tl} + {pp} + 1)", hand(label))
    t, q = _soft(rng, (4, 3, 3) if grading else (3, 4, 2))
    run.test(f"soft predictions on a {t.shape} volume, epsilon=1: sums over x, y and z, no squares",
             lambda: _expect_dice("Dice", t, q, 1.0, fn(t, q, epsilon=1), **kw))

    def axis_argument():
        bt, bq = _soft(rng, (2, 3, 2, 2) if not grading else (3, 2, 3, 2))
        got = _numpy(fn(bt, bq, axis=(1, 2, 3), epsilon=1))
        _expect_close("with axis=(1, 2, 3) on a (batch, x, y, z) array: one Dice per sample",
                      _dice(bt, bq, (1, 2, 3), 1.0), got,
                      hint="the axis argument is not used" if got.shape == () else "")

    run.test("the axis argument selects the summed axes", axis_argument)
    empty = np.zeros((3, 2, 2) if grading else (2, 2, 2))
    run.test("both empty, default epsilon: Dice is 1 (nothing to find, nothing found)",
             lambda: _expect_dice("Dice", empty, empty, 1e-5, fn(empty, empty), **kw))
    run.test("no overlap, default epsilon: Dice is about 0",
             lambda: _expect_dice("Dice", l1, 1 - l1, 1e-5, fn(l1, 1 - l1), **kw))


def _dice_coefficient_tests(fn: Callable, run: _Run, grading: bool) -> None:
    """Tests of ``dice_coefficient`` (lesson 04, exercise 2)."""
    p, l1, l2 = _hand_made(grading)
    kw = {"soft": False, "loss": False, "batch": True}
    batch_pred = np.stack([p, p], axis=-1)[None, :, :, None, :]
    batch_label = np.stack([l1, l2], axis=-1)[None, :, :, None, :]
    d1, d2 = (_dice(lab, p, (0, 1), 1.0) for lab in (l1, l2))
    run.test(f"one sample, two classes (Dice {d1:.4g} and {d2:.4g}), epsilon=1: their mean",
             lambda: _expect_dice("Dice", batch_label, batch_pred, 1.0,
                                  fn(batch_label, batch_pred, epsilon=1), **kw))
    two_pred = np.zeros((2, *p.shape, 1, 1))
    two_label = np.zeros((2, *p.shape, 1, 1))
    two_pred[0, ..., 0, 0] = l2   # sample 0: perfect
    two_label[0, ..., 0, 0] = l2
    two_label[1, ..., 0, 0] = l1  # sample 1: nothing predicted
    s1 = float(np.mean(_dice(two_label[1], two_pred[1], (0, 1, 2), 1.0)))
    run.test(f"per sample, then the mean: samples with Dice 1.0 and {s1:.4g} (epsilon=1) give "
             f"{(1 + s1) / 2:.4g}",
             lambda: _expect_dice("Dice", two_label, two_pred, 1.0, fn(two_label, two_pred, epsilon=1), **kw))
    rng = np.random.default_rng(43 if grading else 42)
    t, q = _soft(rng, (3, 3, 2, 3, 2) if grading else (2, 3, 3, 2, 2))
    run.test(f"a {t.shape} batch of soft predictions, epsilon=1: Dice per sample and class over x, y, z, then the mean",
             lambda: _expect_dice("Dice", t, q, 1.0, fn(t, q, epsilon=1), **kw))
    t0 = t.copy()
    t0[..., 0] = 0.0
    q0 = q.copy()
    q0[..., 0] = 0.0
    run.test("default epsilon: a class empty in both label and prediction counts as Dice 1",
             lambda: _expect_dice("Dice", t0, q0, 1e-5, fn(t0, q0), **kw))


def _soft_dice_loss_tests(fn: Callable, run: _Run, grading: bool) -> None:
    """Tests of ``soft_dice_loss`` (lesson 04, exercise 3)."""
    p, l1, l2 = _hand_made(grading)
    kw = {"soft": True, "loss": True, "batch": True}
    pred, label = p[None, :, :, None, None], l1[None, :, :, None, None]
    hard = 1 - float(_dice(label, pred, (1, 2, 3), 1.0, True)[0, 0])
    run.test(f"hard pred {p.astype(int).tolist()}, label {l1.astype(int).tolist()}, epsilon=1: {hard:.4g}",
             lambda: _expect_dice("loss", label, pred, 1.0, fn(label, pred, epsilon=1), **kw))
    half = 0.5 * pred
    soft = 1 - float(_dice(label, half, (1, 2, 3), 1.0, True)[0, 0])
    run.test(f"soft pred {(0.5 * p).tolist()}: the denominator squares the predictions, {soft:.4g}",
             lambda: _expect_dice("loss", label, half, 1.0, fn(label, half, epsilon=1), **kw))
    rng = np.random.default_rng(45 if grading else 44)
    t, q = _soft(rng, (3, 2, 3, 3, 3) if grading else (2, 3, 3, 2, 2))
    run.test(f"a {t.shape} batch of soft predictions, epsilon=1: one minus the mean over samples and classes",
             lambda: _expect_dice("loss", t, q, 1.0, fn(t, q, epsilon=1), **kw))
    t0 = t.copy()
    t0[..., 1] = 0.0
    run.test("a perfect prediction has (almost) zero loss, even with a class empty in both (default epsilon)",
             lambda: _expect_dice("loss", t0, t0, 1e-5, fn(t0, t0), **kw))


def _pair(result: Any) -> np.ndarray:
    """(sensitivity, specificity) from a tuple, list or array of two numbers."""
    try:
        values = [float(v) for v in result]
    except (TypeError, ValueError):
        raise AssertionError(f"expected the pair (sensitivity, specificity); got {_fmt(result)}") from None
    if len(values) != 2:
        raise AssertionError(f"expected the pair (sensitivity, specificity); got {len(values)} values")
    return np.array(values)


def _sens_spec(pred: np.ndarray, label: np.ndarray, k: int) -> dict[str, float]:
    p, t = pred[..., k].astype(bool), label[..., k].astype(bool)
    tp, tn, fp, fn = (p & t).sum(), (~p & ~t).sum(), (p & ~t).sum(), (~p & t).sum()
    ratio = lambda a, b: a / b if b else np.nan  # noqa: E731
    return {"tp": tp, "tn": tn, "fp": fp, "fn": fn, "sens": ratio(tp, tp + fn), "spec": ratio(tn, tn + fp),
            "prec": ratio(tp, tp + fp), "npv": ratio(tn, tn + fn)}


def _expect_sens_spec(pred: np.ndarray, label: np.ndarray, k: int, got: Any) -> None:
    s = _sens_spec(pred, label, k)
    expected = np.array([s["sens"], s["spec"]])
    got = _pair(got)
    if np.allclose(got, expected, atol=1e-4, equal_nan=True):
        return
    hints = []
    if np.allclose(got, expected[::-1], atol=1e-4, equal_nan=True):
        hints.append("sensitivity and specificity are swapped")
    if np.isclose(got[0], s["prec"], atol=1e-4) and not np.isclose(s["prec"], s["sens"], atol=1e-4):
        hints.append("TP / (TP + FP) is the precision; the sensitivity divides by TP + FN (the label's positives)")
    if np.isclose(got[1], s["npv"], atol=1e-4) and not np.isclose(s["npv"], s["spec"], atol=1e-4):
        hints.append("TN / (TN + FN) is not the specificity; it divides by TN + FP (the label's negatives)")
    raise Mismatch(f"(sensitivity, specificity) with TP={s['tp']}, FN={s['fn']}, FP={s['fp']}, TN={s['tn']}",
                   expected, got, "; ".join(hints))


def _compute_class_sens_spec_tests(fn: Callable, run: _Run, grading: bool) -> None:
    """Tests of ``compute_class_sens_spec`` (lesson 04, exercise 4)."""
    if grading:
        pred1 = np.array([[1, 1, 0], [0, 1, 0]])[..., None]
        label1 = np.array([[1, 0, 0], [1, 1, 1]])[..., None]
    else:
        pred1 = np.array([[1, 0], [0, 1]])[..., None]
        label1 = np.array([[1, 1], [0, 0]])[..., None]
    s = _sens_spec(pred1, label1, 0)
    run.test(f"TP={s['tp']}, FN={s['fn']}, FP={s['fp']}, TN={s['tn']}: sensitivity {s['sens']:.4g}, "
             f"specificity {s['spec']:.4g}", lambda: _expect_sens_spec(pred1, label1, 0, fn(pred1, label1, 0)))
    rng = np.random.default_rng(47 if grading else 46)
    shape = (4, 3, 3, 3) if grading else (3, 4, 2, 3)
    pred = (rng.random(shape) < 0.5).astype(np.int64)
    label = (rng.random(shape) < 0.4).astype(np.int64)
    k = 2 if grading else 1
    s = _sens_spec(pred, label, k)
    run.test(f"0/1 integer arrays {shape}, class_num={k} (the channel on the last axis): "
             f"TP={s['tp']}, FN={s['fn']}, FP={s['fp']}, TN={s['tn']}",
             lambda: _expect_sens_spec(pred, label, k, fn(pred, label, k)))

    def undefined():
        zeros = np.zeros((2, 3, 2, 2) if grading else (2, 2, 2, 1), dtype=np.int64)
        got = _pair(fn(zeros, zeros, 0))
        if not np.isnan(got[0]) or not np.isclose(got[1], 1.0):
            raise Mismatch("no positive voxel in the label: sensitivity is undefined (NaN), specificity 1",
                           np.array([np.nan, 1.0]), got)
        ones = np.ones_like(zeros)
        got = _pair(fn(ones, ones, 0))
        if not np.isclose(got[0], 1.0) or not np.isnan(got[1]):
            raise Mismatch("no negative voxel in the label: sensitivity 1, specificity undefined (NaN)",
                           np.array([1.0, np.nan]), got)

    run.test("a zero denominator gives NaN", undefined)


def _get_sens_spec_df_tests(fn: Callable, run: _Run, grading: bool) -> None:
    """Tests of ``get_sens_spec_df`` (lesson 04, exercise 5)."""
    from .labels import CLASS_NAMES

    rng = np.random.default_rng(49 if grading else 48)
    shape = (5, 4, 3, 3) if grading else (6, 6, 4, 3)
    label = (rng.random(shape) < 0.3).astype(np.uint8)
    pred = label.copy()
    pred[:2] = 1 - pred[:2]
    pred[..., 1] = (rng.random(shape[:3]) < 0.5)
    tables = {}

    def layout():
        table = fn(pred, label)
        tables["t"] = table
        if not hasattr(table, "columns") or not hasattr(table, "index"):
            raise AssertionError(f"expected a pandas DataFrame; got {type(table).__name__}")
        hint = ("the table is transposed: classes are the columns, Sensitivity / Specificity the rows"
                if list(table.index) == list(CLASS_NAMES) else "")
        _expect_equal("columns", list(CLASS_NAMES), list(table.columns), hint)
        _expect_equal("rows", ["Sensitivity", "Specificity"], list(table.index))

    def values():
        table = tables.get("t")
        if table is None or not hasattr(table, "to_numpy"):
            raise AssertionError("skipped: no table came back")
        expected = np.array([[_sens_spec(pred, label, k)[key] for k in range(3)] for key in ("sens", "spec")])
        got = np.asarray(table.loc[["Sensitivity", "Specificity"], list(CLASS_NAMES)].to_numpy(dtype=float))
        hint = "sensitivity and specificity are swapped" if np.allclose(got, expected[::-1], atol=1e-4) else ""
        _expect_close("values (rounded to 4 decimals is fine)", expected, got, atol=1e-4, hint=hint)

    run.test("a DataFrame with the three classes as columns, Sensitivity / Specificity as rows", layout)
    run.test("values match TP / (TP + FN) and TN / (TN + FP) per class", values)


# ----------------------------------------------------------------------------
# Lesson 06: stitching windows, region Dice
# ----------------------------------------------------------------------------

def _blend(preds: np.ndarray, starts, shape, weights=None) -> np.ndarray:
    """The weighted average of overlapping windows, voxel by voxel (the expected values)."""
    window = preds.shape[1:4]
    weights = np.ones(window) if weights is None else np.asarray(weights, np.float64)
    total = np.zeros((*shape, preds.shape[-1]))
    norm = np.zeros(shape)
    for (a, b, c), pred in zip(starts, preds):
        total[a:a + window[0], b:b + window[1], c:c + window[2]] += pred * weights[..., None]
        norm[a:a + window[0], b:b + window[1], c:c + window[2]] += weights
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
    out = {"each window overwrites the previous one: add the windows up, then divide": last,
           "the sum is not divided by the sum of the weights": total,
           "divided by the number of windows, not by the sum of their weights": total / count[..., None]}
    if weights is not None:
        out["the weights are not used"] = _blend(preds, starts, shape)
    return out


def _expect_blend(what: str, preds, starts, shape, weights, got) -> None:
    expected = _blend(preds, starts, shape, weights)
    got = np.asarray(got, dtype=np.float64)
    hint = ""
    if got.shape == expected.shape and not np.allclose(got, expected, atol=1e-4):
        hint = "; or ".join(text for text, wrong in _blend_mistakes(preds, starts, shape, weights).items()
                            if np.allclose(got, wrong, atol=1e-4))
        if expected.shape[1:] == (1, 1, 1):  # a line of voxels: show it as one
            expected, got, what = expected.ravel(), got.ravel(), f"{what}; showing out[:, 0, 0, 0]"
    _expect_close(what, expected, got, hint=hint)


def _grid(shape, window, step) -> list[tuple[int, int, int]]:
    """Window corners every ``step`` voxels, the last one flush with the far edge: every voxel covered."""
    axes = [sorted(set(range(0, n - w + 1, s)) | {n - w}) for n, w, s in zip(shape, window, step)]
    return [(a, b, c) for a in axes[0] for b in axes[1] for c in axes[2]]


def _blend_windows_tests(blend_windows: Callable, run: _Run, grading: bool) -> None:
    """Tests of ``blend_windows`` (lesson 06, exercise 1)."""
    n, w, step = (7, 5, 2) if grading else (6, 4, 2)
    lo, hi = (2.0, 5.0) if grading else (1.0, 3.0)
    starts1 = [(0, 0, 0), (n - w, 0, 0)]
    preds1 = np.array([np.full((w, 1, 1, 1), lo), np.full((w, 1, 1, 1), hi)])

    def two_windows():
        out = blend_windows(preds1, starts1, (n, 1, 1))
        expected = _blend(preds1, starts1, (n, 1, 1))
        _expect_blend(f"constant weights: overlapping voxels get the mean ({lo:g} + {hi:g}) / 2; "
                      f"expected out[:, 0, 0, 0] = {np.round(expected[:, 0, 0, 0], 4).tolist()}",
                      preds1, starts1, (n, 1, 1), None, out)

    ramp = (np.array([1.0, 2.0, 4.0, 2.0, 1.0]) if grading else np.array([1.0, 3.0, 3.0, 1.0])).reshape(w, 1, 1)

    def weighted():
        out = blend_windows(preds1, starts1, (n, 1, 1), ramp)
        _expect_blend(f"weights {ramp.ravel().tolist()}: each voxel gets sum(weight * prediction) / sum(weight)",
                      preds1, starts1, (n, 1, 1), ramp, out)

    def identity():
        rng = np.random.default_rng(61 if grading else 60)
        shape, win = ((11, 9, 7), (5, 4, 3)) if grading else ((10, 8, 6), (4, 3, 2))
        volume = rng.normal(size=(*shape, 3 if grading else 2))
        starts = _grid(shape, win, (3, 2, 2))
        preds = np.stack([volume[a:a + win[0], b:b + win[1], c:c + win[2]] for a, b, c in starts])
        weights = rng.uniform(0.1, 1.0, size=win)
        out = blend_windows(preds, starts, shape, weights)
        _expect_close(f"windows {win} cut from a {shape} volume blend back into that volume, whatever the "
                      "weights (corners are (x, y, z); windows are not cubes)", volume, np.asarray(out, np.float64))

    def several_channels():
        rng = np.random.default_rng(63 if grading else 62)
        shape, win = ((8, 6, 5), (4, 3, 3)) if grading else ((6, 5, 4), (3, 3, 2))
        starts = _grid(shape, win, (2, 2, 2))
        preds = rng.random((len(starts), *win, 3))
        weights = rng.uniform(0.1, 1.0, size=win)
        _expect_blend(f"{len(starts)} random {win} windows with 3 channels and random weights", preds, starts,
                      shape, weights, blend_windows(preds, starts, shape, weights))

    run.test("constant weights average the overlap", two_windows)
    run.test("weights make a weighted average", weighted)
    run.test("an identity prediction is reproduced exactly", identity)
    run.test("random windows, several channels", several_channels)


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
    _expect_equal("keys", ["ET", "TC", "WT"], sorted(got))
    expected = _region_dice_np(truth, pred)
    values = np.array([float(got[r]) for r in _REGIONS])
    want = np.array([expected[r] for r in _REGIONS])
    if np.allclose(values, want, atol=1e-4, equal_nan=False):
        return
    mistakes = {
        "each region is one label (TC is {2, 3} and WT {1, 2, 3}: the regions are nested)":
            _region_dice_np(truth, pred, {"WT": (1,), "TC": (2,), "ET": (3,)}),
        "Jaccard |A∩B| / |A∪B|, not Dice 2|A∩B| / (|A| + |B|)":
            {r: d / (2 - d) for r, d in expected.items()},
        "a region empty in both maps must score 1": _region_dice_np(truth, pred, empty=0.0),
    }
    hint = "; or ".join(text for text, wrong in mistakes.items()
                        if np.allclose(values, [wrong[r] for r in _REGIONS], atol=1e-4, equal_nan=True))
    if not hint and np.isnan(values).any():
        hint = "NaN is 0 / 0: a region empty in both maps scores 1.0"
    raise Mismatch(f"{what}: [WT, TC, ET]", want, values, hint)


def _region_dice_tests(region_dice: Callable, run: _Run, grading: bool) -> None:
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
        pred[pred == 3] = 2            # enhancing called core
        pred[4:6, 4:6] = 1             # extra edema
    d = _region_dice_np(truth, pred)
    run.test(f"nested regions WT {{1,2,3}}, TC {{2,3}}, ET {{3}}: WT {d['WT']:.4g}, TC {d['TC']:.4g} "
             f"(2 and 3 both count), ET {d['ET']:.4g} (missed)",
             lambda: _expect_regions("Dice", truth, pred, region_dice(truth, pred)))

    def empty():
        zero = np.zeros((5, 3, 2) if grading else (4, 4, 2), np.uint8)
        _expect_regions("all regions empty in both: Dice 1 each", zero, zero, region_dice(zero, zero))
        some = zero.copy()
        some[1, 1, 1] = 3 if grading else 1
        _expect_regions("a region empty in the prediction only: Dice 0", some, zero, region_dice(some, zero))

    def random_maps():
        rng = np.random.default_rng(65 if grading else 64)
        shape = (9, 7, 4) if grading else (8, 6, 5)
        t = rng.integers(0, 4, size=shape).astype(np.uint8)
        p = np.where(rng.random(shape) < 0.7, t, rng.integers(0, 4, size=shape)).astype(np.uint8)
        _expect_regions("random label maps", t, p, region_dice(t, p))

    run.test("empty regions: 1 if empty in both, 0 if in one", empty)
    run.test(f"random label maps", random_maps)


# ----------------------------------------------------------------------------
# The public checks the lessons call
# ----------------------------------------------------------------------------

def check_get_sub_volume(get_sub_volume: Callable) -> None:
    """Public tests of ``get_sub_volume``: prints ✔/✘ lines, raises ExerciseCheckError on failure."""
    run_check("get_sub_volume", get_sub_volume)


def check_standardize(standardize: Callable) -> None:
    """Public tests of ``standardize``: prints ✔/✘ lines, raises ExerciseCheckError on failure."""
    run_check("standardize", standardize)


def check_conv_block(conv_block: Callable) -> None:
    """Public tests of ``conv_block``: prints ✔/✘ lines, raises ExerciseCheckError on failure."""
    run_check("conv_block", conv_block)


def check_upsampling_block(upsampling_block: Callable) -> None:
    """Public tests of ``upsampling_block``: prints ✔/✘ lines, raises ExerciseCheckError on failure."""
    run_check("upsampling_block", upsampling_block)


def check_single_class_dice_coefficient(single_class_dice_coefficient: Callable) -> None:
    """Public tests of ``single_class_dice_coefficient``: prints ✔/✘ lines, raises ExerciseCheckError on failure."""
    run_check("single_class_dice_coefficient", single_class_dice_coefficient)


def check_dice_coefficient(dice_coefficient: Callable) -> None:
    """Public tests of ``dice_coefficient``: prints ✔/✘ lines, raises ExerciseCheckError on failure."""
    run_check("dice_coefficient", dice_coefficient)


def check_soft_dice_loss(soft_dice_loss: Callable) -> None:
    """Public tests of ``soft_dice_loss``: prints ✔/✘ lines, raises ExerciseCheckError on failure."""
    run_check("soft_dice_loss", soft_dice_loss)


def check_compute_class_sens_spec(compute_class_sens_spec: Callable) -> None:
    """Public tests of ``compute_class_sens_spec``: prints ✔/✘ lines, raises ExerciseCheckError on failure."""
    run_check("compute_class_sens_spec", compute_class_sens_spec)


def check_get_sens_spec_df(get_sens_spec_df: Callable) -> None:
    """Public tests of ``get_sens_spec_df``: prints ✔/✘ lines, raises ExerciseCheckError on failure."""
    run_check("get_sens_spec_df", get_sens_spec_df)


def check_blend_windows(blend_windows: Callable) -> None:
    """Public tests of ``blend_windows``: prints ✔/✘ lines, raises ExerciseCheckError on failure."""
    run_check("blend_windows", blend_windows)


def check_region_dice(region_dice: Callable) -> None:
    """Public tests of ``region_dice``: prints ✔/✘ lines, raises ExerciseCheckError on failure."""
    run_check("region_dice", region_dice)


# ----------------------------------------------------------------------------
# The registry
# ----------------------------------------------------------------------------

@dataclass(frozen=True)
class Exercise:
    """A graded function: its public check, its tests, its reference, and a drift test.

    Attributes:
        lesson: the lesson source that holds it, e.g. ``"02_patches_and_standardization"``.
        check: the public check the lesson calls, ``check_<name>(fn)``.
        tests: ``tests(fn, run, grading)`` runs the tests through ``run``;
            ``grading`` selects the grading inputs (see :func:`run_check`).
        reference: ``"module:function"`` in ``utils``.
        agree: ``agree(solution, reference)`` raises AssertionError when a
            notebook's solution and the reference behave differently.
    """

    lesson: str
    check: Callable[[Callable], None]
    tests: Callable[[Callable, _Run, bool], None]
    reference: str
    agree: Callable[[Callable, Callable], None]

    def reference_function(self) -> Callable:
        module, name = self.reference.split(":")
        return getattr(importlib.import_module(module), name)


def _same_outputs(inputs: Callable[[], list[tuple[tuple, dict]]], seeded: bool = False):
    """Drift test: equal outputs on the given inputs (np.random reseeded per call if ``seeded``)."""

    def agree(solution: Callable, reference: Callable) -> None:
        for i, (args, kwargs) in enumerate(inputs()):
            results = []
            for fn in (reference, solution):
                if seeded:
                    np.random.seed(100 + i)
                out = fn(*args, **kwargs)
                out = out if isinstance(out, tuple) else (out,)
                results.append([_numpy(o) if not hasattr(o, "to_numpy") else o.to_numpy(dtype=float) for o in out])
            expected, got = results
            assert len(expected) == len(got), f"input {i}: {len(got)} outputs, reference has {len(expected)}"
            for e, g in zip(expected, got):
                np.testing.assert_allclose(g, e, atol=1e-4, equal_nan=True, err_msg=f"input {i}")

    return agree


def _same_block(build_inputs: Callable, calls: list[dict]):
    """Drift test for Keras blocks: same structure, and same outputs with the same weights."""

    def agree(solution: Callable, reference: Callable) -> None:
        keras = _keras()
        rng = np.random.default_rng(0)
        for kwargs in calls:
            models = []
            for fn in (reference, solution):
                inputs = build_inputs()
                out = fn(*inputs, **kwargs)
                models.append(keras.Model(list(inputs) if len(inputs) > 1 else inputs[0], out))
            ref, sol = models
            assert ref.count_params() == sol.count_params(), f"{kwargs}: parameter counts differ"
            assert tuple(ref.output.shape) == tuple(sol.output.shape), f"{kwargs}: output shapes differ"
            sol.set_weights(ref.get_weights())
            data = [rng.normal(size=(2, *t.shape[1:])).astype(np.float32) for t in ref.inputs]
            data = data if len(data) > 1 else data[0]
            np.testing.assert_allclose(sol.predict(data, verbose=0), ref.predict(data, verbose=0), atol=1e-4,
                                       err_msg=f"{kwargs}: outputs differ with the same weights")

    return agree


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


def _dice_inputs(batch: bool):
    def inputs():
        rng = np.random.default_rng(7)
        shape = (2, 6, 5, 4, 3) if batch else (6, 5, 4)
        label = (rng.random(shape) < 0.3).astype(np.float32)
        pred = rng.random(shape).astype(np.float32)
        return [((label, pred), {}), ((label, (pred > 0.5).astype(np.float32)), {"epsilon": 1.0}),
                ((np.zeros(shape), np.zeros(shape)), {})]

    return inputs


def _sens_spec_inputs(with_class: bool):
    def inputs():
        rng = np.random.default_rng(8)
        label = (rng.random((6, 5, 4, 3)) < 0.3).astype(np.uint8)
        pred = (rng.random((6, 5, 4, 3)) < 0.3).astype(np.uint8)
        label[..., 2] = 0  # an absent class: NaN sensitivity
        if with_class:
            return [((pred, label, k), {}) for k in range(3)]
        return [((pred, label), {})]

    return inputs


def _block_inputs(*shapes):
    def build():
        keras = _keras()
        return tuple(keras.Input(shape) for shape in shapes)

    return build


_L02, _L03, _L04 = "02_patches_and_standardization", "03_building_the_unet", "04_soft_dice_loss"
_L06 = "06_whole_scan_prediction"


def _blend_inputs():
    rng = np.random.default_rng(9)
    starts = [(a, b, c) for a in (0, 4, 8) for b in (0, 3, 6) for c in (0, 2)]
    preds = rng.random((len(starts), 6, 5, 4, 3))
    from .inference import gaussian_weights

    return [((preds, starts, (14, 11, 6)), {}), ((preds, starts, (14, 11, 6), gaussian_weights((6, 5, 4))), {})]


def _region_inputs():
    rng = np.random.default_rng(10)
    truth = rng.integers(0, 4, size=(8, 7, 5)).astype(np.uint8)
    pred = rng.integers(0, 4, size=(8, 7, 5)).astype(np.uint8)
    return [((truth, pred), {}), ((truth, truth), {}), ((np.zeros_like(truth), pred % 2), {})]


def _same_dicts(inputs):
    """Drift test for functions returning ``{region: value}``."""

    def agree(solution: Callable, reference: Callable) -> None:
        for i, (args, kwargs) in enumerate(inputs()):
            expected, got = reference(*args, **kwargs), solution(*args, **kwargs)
            assert set(expected) == set(got), f"input {i}: keys {sorted(got)} vs {sorted(expected)}"
            for key in expected:
                np.testing.assert_allclose(float(got[key]), float(expected[key]), atol=1e-6, err_msg=f"{i} {key}")

    return agree
EXERCISES: dict[str, Exercise] = {
    "get_sub_volume": Exercise(_L02, check_get_sub_volume, _get_sub_volume_tests, "utils.preprocessing:get_sub_volume",
                               _same_outputs(_sub_volume_inputs, seeded=True)),
    "standardize": Exercise(_L02, check_standardize, _standardize_tests, "utils.preprocessing:standardize",
                            _same_outputs(_standardize_inputs)),
    "conv_block": Exercise(_L03, check_conv_block, _conv_block_tests, "utils.model:conv_block",
                           _same_block(_block_inputs((8, 8, 8, 4)),
                                       [{"filters": 8}, {"filters": 8, "normalization": "batch"},
                                        {"filters": 4, "normalization": "instance"}])),
    "upsampling_block": Exercise(_L03, check_upsampling_block, _upsampling_block_tests, "utils.model:upsampling_block",
                                 _same_block(_block_inputs((4, 4, 4, 16), (8, 8, 8, 8)),
                                             [{"filters": 8}, {"filters": 8, "normalization": "batch"}])),
    "single_class_dice_coefficient": Exercise(_L04, check_single_class_dice_coefficient,
                                              _single_class_dice_coefficient_tests,
                                              "utils.losses:single_class_dice_coefficient",
                                              _same_outputs(_dice_inputs(batch=False))),
    "dice_coefficient": Exercise(_L04, check_dice_coefficient, _dice_coefficient_tests, "utils.losses:dice_coefficient",
                                 _same_outputs(_dice_inputs(batch=True))),
    "soft_dice_loss": Exercise(_L04, check_soft_dice_loss, _soft_dice_loss_tests, "utils.losses:soft_dice_loss",
                               _same_outputs(_dice_inputs(batch=True))),
    "compute_class_sens_spec": Exercise(_L04, check_compute_class_sens_spec, _compute_class_sens_spec_tests,
                                        "utils.losses:compute_class_sens_spec",
                                        _same_outputs(_sens_spec_inputs(with_class=True))),
    "get_sens_spec_df": Exercise(_L04, check_get_sens_spec_df, _get_sens_spec_df_tests, "utils.losses:get_sens_spec_df",
                                 _same_outputs(_sens_spec_inputs(with_class=False))),
    "blend_windows": Exercise(_L06, check_blend_windows, _blend_windows_tests, "utils.inference:blend_windows",
                              _same_outputs(_blend_inputs)),
    "region_dice": Exercise(_L06, check_region_dice, _region_dice_tests, "utils.metrics:region_dice",
                            _same_dicts(_region_inputs)),
}
