"""The check runner: runs one exercise's tests on a learner's function and renders the feedback.

A check runs the learner's function on small inputs, prints one line per test
(which passed, and for a failure what was expected, what came back and, when
the wrong value matches a known mistake, that mistake), and ends with "All
public tests passed" - or raises :class:`ExerciseCheckError` naming the failed
tests (one line in a notebook). Checks test behaviour and numbers, never layer
class names or how a correct answer draws its random numbers.

:func:`run_check` is the one entry point: ``check_<name>(fn)`` in a lesson is
``run_check(name, fn)``; a grader calls ``run_check(name, fn,
variant="grading", record=True)`` and gets :class:`TestResult` objects, on
inputs the lessons never print. The lesson modules register each exercise's
tests with :func:`exercise` into :data:`CHECKS`.
"""

from __future__ import annotations

import contextlib
import io
import random
import signal
import sysconfig
import threading
import traceback
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ...errors import CourseError
from ..wire import snapshot

PASS, FAIL = "\u2714", "\u2718"
VARIANTS = ("public", "grading")
TIME_LIMIT_S = 120
"""Seconds one test may run in ``record`` mode before it is recorded as failed."""
SEED = 1234
"""``np.random`` and ``random`` are seeded with this for every check (then restored), so checks are deterministic."""


Tests = Callable[[Callable, "Run", bool], None]
"""``tests(fn, run, grading)`` runs an exercise's tests through ``run``; ``grading`` selects the grading inputs."""


@dataclass(frozen=True)
class Check:
    """The tests of one graded function and the lesson that teaches it.

    Attributes:
        lesson: the lesson source that holds the exercise, e.g. ``"02_patches_and_standardization"``.
        tests: see :data:`Tests`.
    """

    lesson: str
    tests: Tests


CHECKS: dict[str, Check] = {}
"""Every graded function's tests, by function name (filled by the lesson modules through :func:`exercise`)."""


def exercise(name: str, lesson: str) -> Callable[[Tests], Tests]:
    """Decorator: register ``tests`` as the tests of exercise ``name`` taught in ``lesson``."""

    def register(tests: Tests) -> Tests:
        if name in CHECKS:
            raise ValueError(f"exercise {name!r} is registered twice: {CHECKS[name].lesson} and {lesson}")
        CHECKS[name] = Check(lesson, tests)
        return tests

    return register


class ExerciseCheckError(CourseError, AssertionError):
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
        lines = [self.what, f"expected: {fmt(self.expected)}", f"got:      {fmt(self.got)}"]
        where = _where_different(self.expected, self.got)
        if where:
            lines.append(where)
        if self.hint:
            lines.append(f"likely mistake: {self.hint}")
        return "\n".join(lines)


IN_PLACE_MESSAGE = (
    "your function changed its input arrays in place; leave them unchanged\n"
    "likely mistake: the function writes into its input: work on a copy or a new array"
)


class InPlaceChange(AssertionError):
    """The learner's function changed an input array in place (the test fails with :data:`IN_PLACE_MESSAGE`)."""

    def __init__(self, message: str = IN_PLACE_MESSAGE):
        super().__init__(message)


def _private(value: Any, depth: int = 0) -> Any:
    """``value`` with every NumPy array, list, tuple and dict in it copied (other objects are shared)."""
    if isinstance(value, np.ndarray):
        return value.copy()
    if depth < 32 and type(value) in (list, tuple):
        return type(value)(_private(v, depth + 1) for v in value)
    if depth < 32 and type(value) is dict:
        return {k: _private(v, depth + 1) for k, v in value.items()}
    return value


class _Guarded:
    """The learner's function as the tests call it: on private copies of the checks' arrays.

    A check's own arrays (its inputs, from which it computes the expected
    values, and its module-level constants) never reach the learner's code; a
    call that changes the copies it got raises :class:`InPlaceChange`, so the
    test fails with the same message in a notebook and in the grader (which
    reports a change made in the kernel the same way).
    """

    def __init__(self, fn: Callable):
        self.fn = fn
        self.__name__ = getattr(fn, "__name__", "function")
        self.__wrapped__ = fn

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        args, kwargs = _private(args), _private(kwargs)
        watched = (args, tuple(kwargs.values()))
        before = snapshot(watched)
        out = self.fn(*args, **kwargs)
        if snapshot(watched) != before:
            raise InPlaceChange()
        return out

    def __getattr__(self, name: str) -> Any:
        return getattr(self.fn, name)


class _TimeLimit(BaseException):
    """A test ran past :data:`TIME_LIMIT_S` (BaseException: a learner's ``except Exception`` cannot swallow it)."""


_SMALL = 12  # arrays up to this many values are printed whole


def fmt(value: Any) -> str:
    """A value for a ✘ line: small arrays whole, large ones summarised (shape, dtype, a few values)."""
    if isinstance(value, np.generic) or (isinstance(value, np.ndarray) and value.ndim == 0):
        value = value.item()  # a NumPy scalar reads like a Python number
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
        bad = ~np.isclose(
            np.asarray(got, dtype=np.float64), np.asarray(expected, dtype=np.float64), atol=1e-4, equal_nan=True
        )
    except (TypeError, ValueError):
        return ""
    if not bad.any():
        return ""
    first = tuple(int(i) for i in np.argwhere(bad)[0])
    return (
        f"differ at {int(bad.sum())} of {bad.size} positions; first at index {first}: "
        f"expected {expected[first]:.4g}, got {got[first]:.4g}"
    )


_LIBRARY_DIRS = tuple(
    {
        str(Path(p).resolve())
        for key in ("stdlib", "platstdlib", "purelib", "platlib")
        if (p := sysconfig.get_paths().get(key))
    }
) + (str(Path(__file__).resolve().parents[2]),)


def _is_library(filename: str) -> bool:
    if filename.startswith("<frozen") or "site-packages" in filename or "dist-packages" in filename:
        return True
    try:
        resolved = str(Path(filename).resolve())
    except (OSError, ValueError):
        return False
    return resolved.startswith(_LIBRARY_DIRS)


def _named(err: BaseException) -> str:
    """The learner's exception class name, at most 60 characters."""
    name = type(err).__name__
    return name if len(name) <= 60 else name[:57] + "..."


def _short(err: BaseException, limit: int = 500) -> str:
    """The learner's exception message, at most ``limit`` characters."""
    try:
        text = str(err)
    except Exception:  # noqa: BLE001 - a hostile __str__
        text = "(its message could not be shown)"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _learner_line(err: BaseException) -> str:
    """The learner's line that led to ``err``: the last frame outside site-packages, the stdlib and ``utils``."""
    frames = [f for f in traceback.extract_tb(err.__traceback__) if not _is_library(f.filename)]
    if not frames:
        return ""
    frame = frames[-1]
    code = f": {frame.line.strip()}" if frame.line else ""
    return f"(your line {frame.lineno}{code})"


class Run:
    """Runs one exercise's tests, collects :class:`TestResult` and (unless recording) prints them."""

    def __init__(
        self, name: str, record: bool, grading: bool = False, seed: int | None = None, time_limit: bool = True
    ):
        self.name, self.record, self.grading, self.seed = name, record, grading, seed
        self.time_limit = time_limit
        self.results: list[TestResult] = []
        self.not_written = ""
        self._say(f"Checking {name}()")

    def rng(self, public_seed: int) -> np.random.Generator:
        """The random generator of a test: ``public_seed`` for the public variant; for the grading variant
        ``public_seed + 1``, or one drawn from the grader's per-run seed when it gave one (never in the source)."""
        if not self.grading:
            return np.random.default_rng(public_seed)
        if self.seed is None:
            return np.random.default_rng(public_seed + 1)
        return np.random.default_rng([self.seed, public_seed])

    @property
    def hidden(self) -> bool:
        """Whether this is a grading run with a per-run seed: hand-made inputs are then drawn at random too."""
        return self.grading and self.seed is not None

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
        except InPlaceChange as err:
            return self._fail(description, str(err))
        except AssertionError as err:
            if getattr(err, "learner_line", None) is not None or _learner_line(err):
                # the learner's own assert (in the notebook, or from the kernel): theirs, never the check's verdict
                where = getattr(err, "learner_line", None) or _learner_line(err)
                return self._fail(description, f"your function raised {_named(err)}: {_short(err)}\n{where}".rstrip())
            return self._fail(description, str(err))
        except _TimeLimit:
            return self._fail(description, f"stopped after {TIME_LIMIT_S} s: an endless loop?")
        except Exception as err:  # the learner's code raised: show where
            where = getattr(err, "learner_line", None) or _learner_line(err)
            if where:
                return self._fail(description, f"your function raised {_named(err)}: {_short(err)}\n{where}")
            return self._fail(description, f"{type(err).__name__} while checking what your function returned: {err}")
        self.results.append(TestResult(description, True, ""))
        self._say(f"  {PASS} {description}")
        return True

    @contextlib.contextmanager
    def _time_limit(self):
        usable = (
            self.record
            and self.time_limit
            and hasattr(signal, "setitimer")
            and threading.current_thread() is threading.main_thread()
        )
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
            raise ExerciseCheckError(
                f"{self.name}() is not written yet: replace the NotImplementedError between START and END CODE HERE"
            )
        if self.not_written:
            raise ExerciseCheckError(self.not_written)
        if failed:
            print(f"{total - len(failed)} of {total} public tests passed.")
            first = next(r for r in self.results if not r.passed)
            raise ExerciseCheckError(
                f"{len(failed)} of {total} public tests of {self.name}() failed; first: {_finding(first)}"
            )
        print(f"All public tests passed ({total} of {total}).")


SUMMARY_CHARS = 160
"""The most characters of the first failed test's finding in the one-line summary."""


def _finding(result: TestResult) -> str:
    """The first failed test's finding in one short line: its first detail line (or its description)."""
    lines = [line.strip() for line in result.detail.splitlines() if line.strip()]
    text = lines[0] if lines else result.description
    if len(lines) > 2 and lines[1].startswith("expected:") and lines[2].startswith("got:"):  # a Mismatch
        text = f"{text}: expected {lines[1][len('expected:') :].strip()}, got {lines[2][len('got:') :].strip()}"
    text = " ".join(text.split())
    return text if len(text) <= SUMMARY_CHARS else text[: SUMMARY_CHARS - 3] + "..."


def run_check(
    exercise: str,
    fn: Callable,
    *,
    variant: str = "public",
    record: bool = False,
    seed: int | None = None,
    time_limit: bool = True,
) -> list[TestResult]:
    """Run the tests of one exercise on a learner's function.

    Args:
        exercise: the graded function's name, a key of :data:`CHECKS` (e.g. ``"soft_dice_loss"``).
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

        seed: the grader's per-run seed of the grading variant (its random
            inputs then come from it, not from seeds written in the checks).
        time_limit: enforce :data:`TIME_LIMIT_S` per test in ``record`` mode
            (the grader enforces its own limit on calls into a kernel).

    Returns:
        One :class:`TestResult` per test, in order.

    Raises:
        KeyError / ValueError: an unknown exercise or variant (whatever ``record``).
        ExerciseCheckError: a test failed and ``record`` is False.
    """
    if exercise not in CHECKS:
        raise KeyError(f"unknown exercise {exercise!r}; known: {sorted(CHECKS)}")
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {VARIANTS}; found {variant!r}")
    run = Run(exercise, record, variant == "grading", seed if variant == "grading" else None, time_limit)
    if not callable(fn):
        run.not_written = f"{exercise} is not a function: found {type(fn).__name__} (did its cell run?)"
        run._say(f"  {FAIL} {run.not_written}")
    else:
        fn = _Guarded(fn)
    np_state, py_state = np.random.get_state(), random.getstate()
    global_seed = SEED + (variant == "grading") if run.seed is None else run.seed
    np.random.seed(global_seed)
    random.seed(global_seed)
    quiet = io.StringIO()
    try:
        with contextlib.ExitStack() as stack:
            if record:
                stack.enter_context(contextlib.redirect_stdout(quiet))
                stack.enter_context(contextlib.redirect_stderr(quiet))
                stack.enter_context(warnings.catch_warnings())
                warnings.simplefilter("ignore")
            try:
                CHECKS[exercise].tests(fn, run, variant == "grading")
            except Exception as err:  # a bug outside any single test: record it, never lose the results
                if not record:
                    raise
                run.results.append(
                    TestResult("the check ran to the end", False, f"the check stopped: {type(err).__name__}: {err}")
                )
    finally:
        np.random.set_state(np_state)
        random.setstate(py_state)
    if not record:
        run.finish()
    return run.results


def expect_equal(what: str, expected: Any, got: Any, hint: str = "") -> None:
    """Raise :class:`Mismatch` unless ``expected == got``."""
    if expected != got:
        raise Mismatch(what, expected, got, hint)


def expect_close(what: str, expected: Any, got: Any, atol: float = 1e-4, hint: str = "") -> None:
    """Raise :class:`Mismatch` unless ``got`` has ``expected``'s shape and values (within ``atol``)."""
    got = np.asarray(got)
    if got.shape != np.shape(expected):
        raise Mismatch(f"{what} (shape)", np.shape(expected), got.shape, hint)
    if not np.allclose(got, expected, atol=atol, equal_nan=False):
        raise Mismatch(what, np.asarray(expected), got, hint)
