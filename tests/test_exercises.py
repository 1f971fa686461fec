"""Every exercise: its public check fails on the learner stub and passes on the
reference and on the notebook's solution, and the solution agrees with the
reference in ``utils`` (no drift between the two)."""

from __future__ import annotations

import contextlib
import io

import jupytext
import numpy as np
import pytest

from utils import notebooks as nbtools
from utils.checks import EXERCISES, ExerciseCheckError


def _graded_cells(lesson: nbtools.Lesson, version: str) -> dict[str, tuple[str, dict]]:
    """``{function name: (cell source, namespace after the lesson's imports)}``."""
    text = lesson.source.read_text()
    text = nbtools.learner_source(text) if version == "learner" else nbtools.solution_source(text)
    nb = jupytext.reads(text, fmt="py:percent")
    namespace: dict = {}
    for cell in nb.cells:
        if "imports" in cell.metadata.get("tags", []):
            exec(compile(cell.source, f"<{lesson.name} imports>", "exec"), namespace)
    graded = {}
    for cell in nb.cells:
        if cell.cell_type == "code" and nbtools.START_HERE in cell.source:
            ns = dict(namespace)
            exec(compile(cell.source, f"<{lesson.name} {version}>", "exec"), ns)
            for name in nbtools._DEF.findall(cell.source):
                if name in EXERCISES:
                    graded[name] = ns[name]
    return graded


GRADED = [(lesson, name) for lesson in nbtools.lessons()
          for name, _ in nbtools.solution_blocks(lesson.source.read_text())]


def _run_check(check, fn) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        check(fn)
    return out.getvalue()


def test_every_exercise_is_registered_and_every_registered_one_is_taught():
    taught = {name for _, name in GRADED}
    assert taught == set(EXERCISES), f"taught {sorted(taught)} vs registered {sorted(EXERCISES)}"
    for lesson, name in GRADED:
        assert EXERCISES[name].lesson == lesson.name
        assert f"check_{name}({name})" in lesson.source.read_text(), f"{name}: no check cell"


@pytest.mark.parametrize("name", sorted(EXERCISES))
def test_graded_functions_are_importable_from_the_top_level(name):
    import utils

    assert getattr(utils, name) is EXERCISES[name].reference_function()


@pytest.mark.parametrize("name", sorted(EXERCISES))
def test_check_passes_on_the_reference(name):
    exercise = EXERCISES[name]
    assert "All public tests passed" in _run_check(exercise.check, exercise.reference_function())


@pytest.mark.parametrize("lesson,name", GRADED, ids=[n for _, n in GRADED])
def test_check_fails_on_the_learner_stub(lesson, name):
    stub = _graded_cells(lesson, "learner")[name]
    with pytest.raises(NotImplementedError):
        EXERCISES[name].drift_inputs() and stub(*EXERCISES[name].drift_inputs()[0][0])
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(ExerciseCheckError, match="not written yet"):
        EXERCISES[name].check(stub)
    assert "your function is not written yet" in out.getvalue()


@pytest.mark.parametrize("lesson,name", GRADED, ids=[n for _, n in GRADED])
def test_solution_passes_and_agrees_with_the_reference(lesson, name):
    exercise = EXERCISES[name]
    solution = _graded_cells(lesson, "solution")[name]
    assert "All public tests passed" in _run_check(exercise.check, solution)
    reference = exercise.reference_function()
    for i, (args, kwargs) in enumerate(exercise.drift_inputs()):
        if exercise.seeded:
            np.random.seed(100 + i)
        expected = reference(*args, **kwargs)
        if exercise.seeded:
            np.random.seed(100 + i)
        got = solution(*args, **kwargs)
        expected = expected if isinstance(expected, tuple) else (expected,)
        got = got if isinstance(got, tuple) else (got,)
        assert len(got) == len(expected)
        for e, g in zip(expected, got):
            np.testing.assert_allclose(np.asarray(g), np.asarray(e), atol=1e-4,
                                       err_msg=f"{name}: notebook solution and utils reference drifted (input {i})")


def test_a_wrong_answer_fails_with_expected_and_got():
    def off_by_one(image, label, orig_x=240, orig_y=240, orig_z=155, output_x=160, output_y=160,
                   output_z=16, num_classes=4, max_tries=1000, background_threshold=0.95):
        for _ in range(max_tries):
            s = [np.random.randint(0, o - p) if o > p else 0
                 for o, p in ((orig_x, output_x), (orig_y, output_y), (orig_z, output_z))]
            w = tuple(slice(a, a + p) for a, p in zip(s, (output_x, output_y, output_z)))
            y = (label[w][..., None] == np.arange(num_classes)).astype(np.float32)
            if y[..., 0].mean() < background_threshold:
                return image[w], y[..., 1:]
        raise ValueError("none")

    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(ExerciseCheckError, match="last one included"):
        EXERCISES["get_sub_volume"].check(off_by_one)
    text = out.getvalue()
    assert "expected: (2, 2, 2)" in text and "got:" in text and "All public tests passed" not in text


def test_check_does_not_depend_on_the_order_of_random_draws():
    """A correct answer that draws z, then y, then x - or uses a Generator - passes."""
    rng = np.random.default_rng(123)

    def other_order(image, label, orig_x=240, orig_y=240, orig_z=155, output_x=160, output_y=160,
                    output_z=16, num_classes=4, max_tries=1000, background_threshold=0.95):
        for _ in range(max_tries):
            sz = rng.integers(0, orig_z - output_z + 1)
            sy = rng.integers(0, orig_y - output_y + 1)
            sx = rng.integers(0, orig_x - output_x + 1)
            w = (slice(sx, sx + output_x), slice(sy, sy + output_y), slice(sz, sz + output_z))
            onehot = np.eye(num_classes, dtype=np.float32)[label[w]]
            if onehot[..., 0].mean() < background_threshold:
                return image[w], onehot[..., 1:]
        raise ValueError("none")

    assert "All public tests passed" in _run_check(EXERCISES["get_sub_volume"].check, other_order)
