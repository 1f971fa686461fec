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
        bad = ~np.isclose(np.asarray(got, dtype=np.float64), np.asarray(expected, dtype=np.float64), atol=1e-4)
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
        if self.not_written:
            raise ExerciseCheckError(f"{self.name}() is not written yet: replace the "
                                     "NotImplementedError between START and END CODE HERE")
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
            returns garbage gives failed results); if False (the notebooks),
            print the ✔/✘ lines and raise :class:`ExerciseCheckError` on failure.

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
    """Public tests of ``get_sub_volume`` (lesson 02, exercise 1)."""
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


# ----------------------------------------------------------------------------
# Lesson 02, exercise 2: standardize
# ----------------------------------------------------------------------------

def _standardize_tests(standardize: Callable, run: _Run, grading: bool) -> None:
    """Public tests of ``standardize`` (lesson 02, exercise 2)."""
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


# ----------------------------------------------------------------------------
# Lesson 03: the U-Net blocks
# ----------------------------------------------------------------------------

def _keras():
    import keras

    return keras


def _layer_types(model) -> list[str]:
    return [type(layer).__name__ for layer in model.layers if type(layer).__name__ != "InputLayer"]


def _conv_block_tests(conv_block: Callable, run: _Run, grading: bool) -> None:
    """Public tests of ``conv_block`` (lesson 03, exercise 1)."""
    keras = _keras()

    def build(normalization=None, shape=(8, 8, 8, 4), filters=16):
        inp = keras.Input(shape)
        out = conv_block(inp, filters, normalization=normalization)
        if out is None:
            raise AssertionError("conv_block returned None: return the block's output tensor")
        return keras.Model(inp, out)

    def shape():
        model = build()
        _expect_equal("output shape for input (None, 8, 8, 8, 4) and 16 filters", (None, 8, 8, 8, 16),
                      tuple(model.output.shape))

    def params():
        model = build()
        _expect_equal("parameters: (3*3*3*4*16 + 16) + (3*3*3*16*16 + 16)", 8672, model.count_params())
        convs = [layer for layer in model.layers if type(layer).__name__ == "Conv3D"]
        _expect_equal("number of Conv3D layers", 2, len(convs))
        _expect_equal("kernel sizes and padding", [((3, 3, 3), "same")] * 2,
                      [(tuple(c.kernel_size), c.padding) for c in convs])

    def relu():
        model = build()
        x = np.random.default_rng(0).normal(size=(2, 8, 8, 8, 4)).astype(np.float32)
        y = np.asarray(model.predict(x, verbose=0))
        if y.min() < 0:
            raise Mismatch("ReLU after each convolution: no negative outputs", ">= 0", float(y.min()))
        if not (y > 0).any():
            raise AssertionError("all outputs are 0: is the ReLU applied to the right tensor?")

    def batch_norm():
        model = build("batch")
        _expect_equal("with normalization='batch': convolutions without bias "
                      "(1728 + 6912) plus 2 BatchNormalization layers (4 x 16 each)", 8768, model.count_params())
        types = _layer_types(model)
        _expect_equal("layer order", ["Conv3D", "BatchNormalization", "Activation", "Conv3D",
                                      "BatchNormalization", "Activation"],
                      [t if t != "ReLU" else "Activation" for t in types])

    def instance_norm():
        model = build("instance")
        _expect_equal("with normalization='instance': no conv bias, 2 GroupNormalization(groups=-1) "
                      "layers (2 x 16 each)", 8704, model.count_params())

    run.test("keeps the spatial size and outputs `filters` channels", shape)
    run.test("two 3x3x3 'same' convolutions with bias", params)
    run.test("ReLU activations", relu)
    run.test("batch normalization between convolution and ReLU", batch_norm)
    run.test("instance normalization", instance_norm)


def _upsampling_block_tests(upsampling_block: Callable, run: _Run, grading: bool) -> None:
    """Public tests of ``upsampling_block`` (lesson 03, exercise 2)."""
    keras = _keras()

    def build(x_shape=(4, 4, 4, 32), skip_shape=(8, 8, 8, 16), **kwargs):
        x, skip = keras.Input(x_shape), keras.Input(skip_shape)
        out = upsampling_block(x, skip, 16, **kwargs)
        if out is None:
            raise AssertionError("upsampling_block returned None: return the block's output tensor")
        return keras.Model([x, skip], out)

    def shape():
        model = build()
        _expect_equal("output shape: the skip's spatial size with 16 channels", (None, 8, 8, 8, 16),
                      tuple(model.output.shape))

    def params():
        model = build()
        _expect_equal("parameters: transposed conv (2*2*2*32*16 + 16) + conv block on 16 + 16 = 32 "
                      "channels (3*3*3*32*16 + 16) + (3*3*3*16*16 + 16)", 24880, model.count_params())
        types = _layer_types(model)
        if "Conv3DTranspose" not in types or "Concatenate" not in types:
            raise Mismatch("layers used", "Conv3DTranspose, Concatenate, Conv3D x2", types)

    def pool_size():
        model = build(x_shape=(4, 4, 8, 32), pool_size=(2, 2, 1))
        _expect_equal("with pool_size=(2, 2, 1) only x and y are doubled", (None, 8, 8, 8, 16),
                      tuple(model.output.shape))
        _expect_equal("parameters with a (2, 2, 1) transposed kernel", 2064 + 13840 + 6928, model.count_params())

    def uses_skip():
        model = build()
        rng = np.random.default_rng(1)
        x = rng.normal(size=(1, 4, 4, 4, 32)).astype(np.float32)
        a = np.asarray(model.predict([x, rng.normal(size=(1, 8, 8, 8, 16)).astype(np.float32)], verbose=0))
        b = np.asarray(model.predict([x, rng.normal(size=(1, 8, 8, 8, 16)).astype(np.float32)], verbose=0))
        if np.allclose(a, b):
            raise AssertionError("the output does not change with the skip tensor: concatenate it")

    def normalization():
        model = build(normalization="batch")
        _expect_equal("normalization is passed on to the conv block (batch: no conv bias, 2 x 64 BN "
                      "parameters)", 4112 + 13824 + 6912 + 128, model.count_params())

    run.test("output has the skip's spatial size and `filters` channels", shape)
    run.test("transposed convolution, concatenation, conv block", params)
    run.test("pool_size sets the up-sampling factor per axis", pool_size)
    run.test("the skip connection reaches the output", uses_skip)
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


_P1 = np.array([[1.0, 0.0], [0.0, 1.0]])
_L1 = np.array([[1.0, 1.0], [0.0, 0.0]])
_L2 = np.array([[1.0, 1.0], [0.0, 1.0]])


def _single_class_dice_coefficient_tests(fn: Callable, run: _Run, grading: bool) -> None:
    """Public tests of ``single_class_dice_coefficient`` (lesson 04, exercise 1)."""
    pred, label1, label2 = _P1[..., None], _L1[..., None], _L2[..., None]
    run.test("pred [[1,0],[0,1]], label [[1,1],[0,0]], epsilon=1: (2*1 + 1) / (2 + 2 + 1)",
             lambda: _expect_close("dice", 0.6, _numpy(fn(label1, pred, epsilon=1))))
    run.test("pred [[1,0],[0,1]], label [[1,1],[0,1]], epsilon=1: (2*2 + 1) / (3 + 2 + 1)",
             lambda: _expect_close("dice", 5 / 6, _numpy(fn(label2, pred, epsilon=1))))
    run.test("both empty, default epsilon: Dice is 1 (nothing to find, nothing found)",
             lambda: _expect_close("dice", 1.0, _numpy(fn(np.zeros((2, 2, 1)), np.zeros((2, 2, 1))))))
    run.test("no overlap, default epsilon: Dice is about 0",
             lambda: _expect_close("dice", 0.0, _numpy(fn(label1, 1 - label2)), atol=1e-4))


def _dice_coefficient_tests(fn: Callable, run: _Run, grading: bool) -> None:
    """Public tests of ``dice_coefficient`` (lesson 04, exercise 2)."""
    batch_pred = np.stack([_P1, _P1], axis=-1)[None, :, :, None, :]      # (1, 2, 2, 1, 2)
    batch_label = np.stack([_L1, _L2], axis=-1)[None, :, :, None, :]
    run.test("one sample, two classes (Dice 0.6 and 0.8333), epsilon=1: their mean",
             lambda: _expect_close("dice", (0.6 + 5 / 6) / 2, _numpy(fn(batch_label, batch_pred, epsilon=1))))
    two_pred = np.zeros((2, 2, 2, 1, 1))
    two_label = np.zeros((2, 2, 2, 1, 1))
    two_pred[0, :, :, 0, 0] = _L2   # sample 0: perfect
    two_label[0, :, :, 0, 0] = _L2
    two_label[1, :, :, 0, 0] = _L1  # sample 1: nothing predicted
    expected = (1.0 + (0 + 1) / (2 + 0 + 1)) / 2
    run.test("per sample, then the mean: samples with Dice 1.0 and 1/3 (epsilon=1) give 0.6667 "
             "(pooling the batch would give 7/9)",
             lambda: _expect_close("dice", expected, _numpy(fn(two_label, two_pred, epsilon=1))))


def _soft_dice_loss_tests(fn: Callable, run: _Run, grading: bool) -> None:
    """Public tests of ``soft_dice_loss`` (lesson 04, exercise 3)."""
    pred = _P1[None, :, :, None, None]
    label = _L1[None, :, :, None, None]
    run.test("hard pred [[1,0],[0,1]], label [[1,1],[0,0]], epsilon=1: 1 - 3/5",
             lambda: _expect_close("loss", 0.4, _numpy(fn(label, pred, epsilon=1))))
    half = 0.5 * pred
    run.test("soft pred [[0.5,0],[0,0.5]]: the denominator squares the predictions, "
             "1 - (2*0.5 + 1) / (0.5 + 2 + 1)",
             lambda: _expect_close("loss", 1 - 2 / 3.5, _numpy(fn(label, half, epsilon=1))))
    two_pred = np.concatenate([pred, np.ones_like(pred)], axis=-1)
    two_label = np.concatenate([label, label], axis=-1)
    expected = 1 - (3 / 5 + (2 * 2 + 1) / (4 + 2 + 1)) / 2
    run.test("two classes: one minus the mean of the per-class soft Dice",
             lambda: _expect_close("loss", expected, _numpy(fn(two_label, two_pred, epsilon=1))))
    run.test("a perfect prediction has (almost) zero loss",
             lambda: _expect_close("loss", 0.0, _numpy(fn(label, label)), atol=1e-4))


_SENS_PRED = np.array([[1, 0], [0, 1]])[..., None]
_SENS_LABEL = np.array([[1, 1], [0, 0]])[..., None]


def _compute_class_sens_spec_tests(fn: Callable, run: _Run, grading: bool) -> None:
    """Public tests of ``compute_class_sens_spec`` (lesson 04, exercise 4)."""

    def pair(result):
        if not (isinstance(result, tuple) and len(result) == 2):
            raise AssertionError(f"expected the tuple (sensitivity, specificity); got {result!r}")
        return np.array([float(result[0]), float(result[1])])

    run.test("TP=1, FN=1, FP=1, TN=1: sensitivity 0.5, specificity 0.5",
             lambda: _expect_close("(sensitivity, specificity)", np.array([0.5, 0.5]),
                                   pair(fn(_SENS_PRED, _SENS_LABEL, 0))))
    pred = np.array([[1, 0, 0], [1, 1, 1], [0, 0, 1]])[..., None]
    label = np.array([[1, 0, 0], [1, 0, 1], [0, 1, 0]])[..., None]
    run.test("TP=3, FN=1, FP=2, TN=3: sensitivity 3/4, specificity 3/5",
             lambda: _expect_close("(sensitivity, specificity)", np.array([0.75, 0.6]),
                                   pair(fn(pred, label, 0))))
    stacked_p = np.concatenate([_SENS_PRED, pred[:2, :2]], axis=-1)
    stacked_l = np.concatenate([_SENS_LABEL, label[:2, :2]], axis=-1)
    run.test("class_num selects the channel on the last axis: channel 1 has TP=2, FN=0, FP=1, TN=1",
             lambda: _expect_close("(sensitivity, specificity)", np.array([1.0, 0.5]),
                                   pair(fn(stacked_p, stacked_l, 1))))

    def undefined():
        result = pair(fn(np.zeros((2, 2, 1)), np.zeros((2, 2, 1)), 0))
        if not np.isnan(result[0]) or result[1] != 1.0:
            raise Mismatch("no positive voxel in the label: sensitivity is undefined (NaN), specificity 1",
                           "(nan, 1.0)", tuple(result))

    run.test("a zero denominator gives NaN", undefined)


def _get_sens_spec_df_tests(fn: Callable, run: _Run, grading: bool) -> None:
    """Public tests of ``get_sens_spec_df`` (lesson 04, exercise 5)."""
    from .labels import CLASS_NAMES

    rng = np.random.default_rng(4)
    label = (rng.random((6, 6, 4, 3)) < 0.3).astype(np.uint8)
    pred = label.copy()
    pred[:2] = 1 - pred[:2]
    tables = {}

    def layout():
        table = fn(pred, label)
        tables["t"] = table
        _expect_equal("columns", list(CLASS_NAMES), list(table.columns))
        _expect_equal("rows", ["Sensitivity", "Specificity"], list(table.index))

    def values():
        table = tables.get("t")
        if table is None:
            raise AssertionError("skipped: no table came back")
        expected = np.zeros((2, 3))
        for k in range(3):
            p, t = pred[..., k].astype(bool), label[..., k].astype(bool)
            expected[0, k] = (p & t).sum() / t.sum()
            expected[1, k] = (~p & ~t).sum() / (~t).sum()
        _expect_close("values (rounded to 4 decimals is fine)", expected,
                      table.to_numpy(dtype=float), atol=1e-4)

    run.test("a DataFrame with the three classes as columns, Sensitivity / Specificity as rows", layout)
    run.test("values match TP / (TP + FN) and TN / (TN + FP) per class", values)


# ----------------------------------------------------------------------------
# Lesson 06: stitching windows, region Dice
# ----------------------------------------------------------------------------

def _blend_windows_tests(blend_windows: Callable, run: _Run, grading: bool) -> None:
    """Public tests of ``blend_windows`` (lesson 06, exercise 1)."""

    def two_windows():
        # a 6x1x1 volume, windows of 4 at x = 0 and x = 2; they overlap on x = 2, 3
        preds = np.array([np.full((4, 1, 1, 1), 1.0), np.full((4, 1, 1, 1), 3.0)])
        out = np.asarray(blend_windows(preds, [(0, 0, 0), (2, 0, 0)], (6, 1, 1)))
        _expect_close("constant weights: overlapping voxels get the mean (1 + 3) / 2 = 2; showing out[:, 0, 0, 0]",
                      np.array([1.0, 1.0, 2.0, 2.0, 3.0, 3.0]), out[:, 0, 0, 0])

    def weighted():
        preds = np.array([np.full((4, 1, 1, 1), 1.0), np.full((4, 1, 1, 1), 3.0)])
        w = np.array([1.0, 3.0, 3.0, 1.0]).reshape(4, 1, 1)
        out = np.asarray(blend_windows(preds, [(0, 0, 0), (2, 0, 0)], (6, 1, 1), w))
        expected = np.array([1.0, 1.0, (3 * 1 + 1 * 3) / 4, (1 * 1 + 3 * 3) / 4, 3.0, 3.0])
        _expect_close("weights [1, 3, 3, 1]: x=2 gets (3*1 + 1*3) / (3 + 1), x=3 gets (1*1 + 3*3) / (1 + 3)",
                      expected, out[:, 0, 0, 0])

    def identity():
        rng = np.random.default_rng(0)
        volume = rng.normal(size=(10, 8, 6, 2))
        starts = [(a, b, c) for a in (0, 3, 6) for b in (0, 4) for c in (0, 2)]
        preds = np.stack([volume[a:a + 4, b:b + 4, c:c + 4] for a, b, c in starts])
        weights = rng.uniform(0.1, 1.0, size=(4, 4, 4))
        out = np.asarray(blend_windows(preds, starts, (10, 8, 6), weights))
        _expect_close("windows cut from a volume blend back into that volume, whatever the weights "
                      "(showing out[:, 0, 0, 0])", volume[:, 0, 0, 0], out[:, 0, 0, 0])
        _expect_close("the whole volume", volume, out)

    run.test("constant weights average the overlap", two_windows)
    run.test("weights make a weighted average", weighted)
    run.test("an identity prediction is reproduced exactly", identity)


def _region_dice_tests(region_dice: Callable, run: _Run, grading: bool) -> None:
    """Public tests of ``region_dice`` (lesson 06, exercise 2)."""
    truth = np.zeros((6, 6, 2), np.uint8)
    truth[0:4, 0:4] = 1
    truth[1:3, 1:3] = 2
    truth[1, 1] = 3
    pred = truth.copy()
    pred[pred == 3] = 2            # enhancing called core
    pred[4:6, 4:6] = 1             # extra edema

    def values():
        out = region_dice(truth, pred)
        got = np.array([float(out[r]) for r in ("WT", "TC", "ET")])
        wt = 2 * 32 / (32 + 40)
        _expect_close("{WT, TC, ET}: WT 2*32/(32+40), TC 1 (2 and 3 both count), ET 0 (missed)",
                      np.array([wt, 1.0, 0.0]), got)

    def empty():
        zero = np.zeros((4, 4, 2), np.uint8)
        out = region_dice(zero, zero)
        got = np.array([float(out[r]) for r in ("WT", "TC", "ET")])
        _expect_close("all regions empty in both: Dice 1 each", np.ones(3), got)
        some = zero.copy()
        some[0, 0, 0] = 1
        out = region_dice(some, zero)
        _expect_close("WT empty in the prediction only: Dice 0", 0.0, float(out["WT"]))

    run.test("nested regions WT {1,2,3}, TC {2,3}, ET {3}", values)
    run.test("empty regions: 1 if empty in both, 0 if in one", empty)




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
    "single_class_dice_coefficient": Exercise(_L04, check_single_class_dice_coefficient, _single_class_dice_coefficient_tests,
                                              "utils.losses:single_class_dice_coefficient",
                                              _same_outputs(_dice_inputs(batch=False))),
    "dice_coefficient": Exercise(_L04, check_dice_coefficient, _dice_coefficient_tests, "utils.losses:dice_coefficient",
                                 _same_outputs(_dice_inputs(batch=True))),
    "soft_dice_loss": Exercise(_L04, check_soft_dice_loss, _soft_dice_loss_tests, "utils.losses:soft_dice_loss",
                               _same_outputs(_dice_inputs(batch=True))),
    "compute_class_sens_spec": Exercise(_L04, check_compute_class_sens_spec, _compute_class_sens_spec_tests, "utils.losses:compute_class_sens_spec",
                                        _same_outputs(_sens_spec_inputs(with_class=True))),
    "get_sens_spec_df": Exercise(_L04, check_get_sens_spec_df, _get_sens_spec_df_tests, "utils.losses:get_sens_spec_df",
                                 _same_outputs(_sens_spec_inputs(with_class=False))),
    "blend_windows": Exercise(_L06, check_blend_windows, _blend_windows_tests, "utils.inference:blend_windows",
                              _same_outputs(_blend_inputs)),
    "region_dice": Exercise(_L06, check_region_dice, _region_dice_tests, "utils.metrics:region_dice", _same_dicts(_region_inputs)),
}
