"""Every exercise: its public check fails on the learner stub and passes on the
reference and on the notebook's solution, and the solution agrees with the
reference in ``utils`` (no drift between the two)."""

from __future__ import annotations

import contextlib
import io
import re

import jupytext
import numpy as np
import pytest

from utils.course.checks import ExerciseCheckError

import notebooks as nbtools
from exercise_registry import EXERCISES


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
    for cell in nb.cells:  # in notebook order, so a later exercise may call an earlier one
        if cell.cell_type == "code" and nbtools.START_HERE in cell.source:
            exec(compile(cell.source, f"<{lesson.name} {version}>", "exec"), namespace)
            for name in nbtools.DEF.findall(cell.source):
                if name in EXERCISES:
                    graded[name] = namespace[name]
    return graded


GRADED = [
    (lesson, name) for lesson in nbtools.lessons() for name, _ in nbtools.solution_blocks(lesson.source.read_text())
]


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
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(ExerciseCheckError, match="not written yet"):
        EXERCISES[name].check(stub)
    assert "your function is not written yet" in out.getvalue()
    assert "All public tests passed" not in out.getvalue()


@pytest.mark.parametrize("lesson,name", GRADED, ids=[n for _, n in GRADED])
def test_solution_passes_and_agrees_with_the_reference(lesson, name):
    """The solution notebook's own check cell (as it runs there, after the lesson's imports) passes."""
    exercise = EXERCISES[name]
    solution = _graded_cells(lesson, "solution")[name]
    cell = _check_cell(lesson, name)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(cell, f"<{lesson.name} check cell>", "exec"), solution.__globals__)
    assert "All public tests passed" in out.getvalue()
    exercise.agree(solution, exercise.reference_function())


def _check_cell(lesson: nbtools.Lesson, name: str) -> str:
    """The source of the cell tagged ``check`` that calls ``check_<name>``."""
    nb = jupytext.reads(nbtools.solution_source(lesson.source.read_text()), fmt="py:percent")
    cells = [
        cell.source
        for cell in nb.cells
        if nbtools.CHECK_TAG in cell.metadata.get("tags", []) and re.search(rf"\bcheck_{name}\(", cell.source)
    ]
    assert len(cells) == 1, f"{lesson.name}: {len(cells)} check cells call check_{name}"
    return cells[0]


def test_a_wrong_answer_fails_with_expected_and_got():
    def off_by_one(
        image,
        label,
        orig_x=240,
        orig_y=240,
        orig_z=155,
        output_x=160,
        output_y=160,
        output_z=16,
        num_classes=4,
        max_tries=1000,
        background_threshold=0.95,
    ):
        for _ in range(max_tries):
            s = [
                np.random.randint(0, o - p) if o > p else 0
                for o, p in ((orig_x, output_x), (orig_y, output_y), (orig_z, output_z))
            ]
            w = tuple(slice(a, a + p) for a, p in zip(s, (output_x, output_y, output_z)))
            y = (label[w][..., None] == np.arange(num_classes)).astype(np.float32)
            if y[..., 0].mean() < background_threshold:
                return image[w], y[..., 1:]
        raise ValueError("none")

    out = io.StringIO()
    # the one-line summary names the first failed test's finding
    with contextlib.redirect_stdout(out), pytest.raises(ExerciseCheckError, match="first: never drawn in 1200 patches"):
        EXERCISES["get_sub_volume"].check(off_by_one)
    text = out.getvalue()
    assert "far one included" in text and "randint(low, high) excludes high" in text
    assert "All public tests passed" not in text


def test_check_does_not_depend_on_the_order_of_random_draws():
    """A correct answer that draws z, then y, then x - or uses a Generator - passes."""
    rng = np.random.default_rng(123)

    def other_order(
        image,
        label,
        orig_x=240,
        orig_y=240,
        orig_z=155,
        output_x=160,
        output_y=160,
        output_z=16,
        num_classes=4,
        max_tries=1000,
        background_threshold=0.95,
    ):
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


def _fails(name, fn, match):
    """The check fails, its one line names the first finding, and a failed test's line matches ``match``."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(ExerciseCheckError, match="failed; first: "):
        EXERCISES[name].check(fn)
    text = out.getvalue()
    assert any(re.search(match, line) for line in text.splitlines() if line.lstrip().startswith("\u2718")), text
    return text


def test_common_mistakes_of_lesson_04_fail():
    from keras import ops

    def pooled_dice(y_true, y_pred, axis=(1, 2, 3), epsilon=0.00001):  # ignores the batch axis
        num = 2.0 * ops.sum(y_true * y_pred, axis=(0, 1, 2, 3)) + epsilon
        return ops.mean(num / (ops.sum(y_true, axis=(0, 1, 2, 3)) + ops.sum(y_pred, axis=(0, 1, 2, 3)) + epsilon))

    text = _fails("dice_coefficient", pooled_dice, "per sample, then the mean")
    assert "expected: 0.6667" in text and "got:      0.7778" in text

    def no_squares(y_true, y_pred, axis=(1, 2, 3), epsilon=0.00001):
        num = 2.0 * ops.sum(y_true * y_pred, axis=axis) + epsilon
        return 1.0 - ops.mean(num / (ops.sum(y_pred, axis=axis) + ops.sum(y_true, axis=axis) + epsilon))

    _fails("soft_dice_loss", no_squares, "squares the predictions")

    def zero_not_nan(pred, label, class_num):
        p, t = pred[..., class_num] == 1, label[..., class_num] == 1
        tp, tn, fp, fn = (p & t).sum(), (~p & ~t).sum(), (p & ~t).sum(), (~p & t).sum()
        return tp / max(tp + fn, 1), tn / max(tn + fp, 1)

    _fails("compute_class_sens_spec", zero_not_nan, "zero denominator gives NaN")


def test_common_mistakes_of_lesson_03_fail():
    from keras import layers

    def one_conv(x, filters, normalization=None, name=None):
        return layers.Conv3D(filters, 3, padding="same", activation="relu")(x)

    assert "expected: 3800" in _fails("conv_block", one_conv, "two 3x3x3")

    def no_skip(x, skip, filters, pool_size=(2, 2, 2), normalization=None, name=None):
        up = layers.Conv3DTranspose(filters, pool_size, strides=pool_size)(x)
        return layers.Conv3D(filters, 3, padding="same", activation="relu")(up)

    _fails("upsampling_block", no_skip, "concatenates the skip")


@pytest.mark.parametrize("lesson,name", GRADED, ids=[name for _, name in GRADED])
def test_each_reference_says_which_lesson_and_exercise_teach_it(lesson, name):
    headings = re.findall(r"^# #+ .*?Exercise (\d+): `(\w+)`", lesson.source.read_text(), re.MULTILINE)
    number = {fn: k for k, fn in headings}[name]
    taught = f"Taught in lesson {lesson.name[:2]}, exercise {number}."
    assert taught in (EXERCISES[name].reference_function().__doc__ or ""), f"{name}: its docstring lacks {taught!r}"
