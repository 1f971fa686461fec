"""The maintainers' registry of graded functions (used only by the tests).

:data:`EXERCISES` lists every graded function with the lesson that teaches it,
its public check, its reference in ``utils`` and inputs on which a notebook's
solution must agree with the reference (``tests/course/test_exercises.py`` uses it to
catch drift between a lesson's solution and the package). The learner-facing
tests themselves live in ``utils.course.checks`` (:data:`utils.course.checks.CHECKS`).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass

import keras
import numpy as np
from keras import ops

import utils.course.checks
from utils.course.checks import CHECKS
from utils.inference.sliding_window import gaussian_weights


@dataclass(frozen=True)
class Exercise:
    """A graded function: its public check, its reference, and a drift test.

    Attributes:
        name: the graded function's name.
        reference: ``"module:function"`` in ``utils``.
        agree: ``agree(solution, reference)`` raises AssertionError when a
            notebook's solution and the reference behave differently.
    """

    name: str
    reference: str
    agree: Callable[[Callable, Callable], None]

    @property
    def lesson(self) -> str:
        """The lesson source that holds the exercise (from ``utils.course.checks``)."""
        return CHECKS[self.name].lesson

    @property
    def check(self) -> Callable[[Callable], None]:
        """The public check the lesson calls, ``check_<name>(fn)``."""
        return getattr(utils.course.checks, f"check_{self.name}")

    def reference_function(self) -> Callable:
        module, name = self.reference.split(":")
        return getattr(importlib.import_module(module), name)


def _numpy(value) -> np.ndarray:
    if hasattr(value, "to_numpy"):
        return value.to_numpy(dtype=float)
    return np.asarray(ops.convert_to_numpy(value), dtype=np.float64)


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
                results.append([_numpy(o) for o in out])
            expected, got = results
            assert len(expected) == len(got), f"input {i}: {len(got)} outputs, reference has {len(expected)}"
            for e, g in zip(expected, got):
                np.testing.assert_allclose(g, e, atol=1e-4, equal_nan=True, err_msg=f"input {i}")

    return agree


def _same_block(build_inputs: Callable, calls: list[dict]):
    """Drift test for Keras blocks: same structure, and same outputs with the same weights."""

    def agree(solution: Callable, reference: Callable) -> None:
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
            np.testing.assert_allclose(
                sol.predict(data, verbose=0),
                ref.predict(data, verbose=0),
                atol=1e-4,
                err_msg=f"{kwargs}: outputs differ with the same weights",
            )

    return agree


def _sub_volume_inputs():
    rng = np.random.default_rng(5)
    cases = []
    for shape, out, thr in (((12, 10, 8), (6, 6, 4), 0.95), ((9, 9, 9), (9, 3, 5), 0.8)):
        image = rng.normal(size=(*shape, 4)).astype(np.float32)
        label = np.zeros(shape, dtype=np.uint8)
        label[2:8, 3:7, 1:6] = rng.integers(0, 4, size=(6, 4, 5))
        cases.append(((image, label, *shape, *out), {"num_classes": 4, "max_tries": 500, "background_threshold": thr}))
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
        return [
            ((label, pred), {}),
            ((label, (pred > 0.5).astype(np.float32)), {"epsilon": 1.0}),
            ((np.zeros(shape), np.zeros(shape)), {}),
        ]

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
        return tuple(keras.Input(shape) for shape in shapes)

    return build


def _blend_inputs():
    rng = np.random.default_rng(9)
    starts = [(a, b, c) for a in (0, 4, 8) for b in (0, 3, 6) for c in (0, 2)]
    preds = rng.random((len(starts), 6, 5, 4, 3))
    return [((preds, starts, (14, 11, 6)), {}), ((preds, starts, (14, 11, 6), gaussian_weights((6, 5, 4))), {})]


def _region_inputs():
    rng = np.random.default_rng(10)
    truth = rng.integers(0, 4, size=(8, 7, 5)).astype(np.uint8)
    pred = rng.integers(0, 4, size=(8, 7, 5)).astype(np.uint8)
    return [((truth, pred), {}), ((truth, truth), {}), ((np.zeros_like(truth), pred % 2), {})]


def _volume_inputs():
    rng = np.random.default_rng(11)
    label = rng.integers(0, 4, size=(9, 8, 6)).astype(np.uint8)
    oblique = np.array([[0.0, -1.2, 0.0, 90.0], [0.9, 0.0, 0.0, -126.0], [0.0, 0.0, 2.5, -72.0], [0, 0, 0, 1.0]])
    return [((label, np.eye(4)), {}), ((label, np.diag([-1.0, -1.0, 1.0, 1.0])), {}), ((label, oblique), {})]


def _survival_inputs():
    return [(("289",), {}), ((77,), {}), (("ALIVE (361 days later)",), {}), ((" 1283 ",), {})]


def _label_inputs():
    rng = np.random.default_rng(12)
    label = rng.integers(0, 4, size=(7, 6, 5)).astype(np.uint8)
    return [((label,), {}), ((label.astype(np.int64),), {}), ((np.zeros((3, 4, 2), np.uint8),), {})]


def _region_probability_inputs():
    rng = np.random.default_rng(13)
    wt = rng.random((6, 5, 4))
    probs = np.stack([wt, wt * rng.random(wt.shape) * 1.2, rng.random(wt.shape)], axis=-1).astype(np.float32)
    return [((probs,), {}), ((probs, 0.3), {}), ((probs,), {"threshold": 0.7})]


def _shuffle_inputs():
    patch = np.random.default_rng(12).normal(size=(10, 9, 8, 4)).astype(np.float32)
    return [
        ((patch, (1, 2, 3), (4, 3, 2), 5), {}),
        ((patch, (0, 0, 0), (10, 9, 8), 6), {}),
        ((patch[..., :2], (3, 3, 3), (2, 5, 4), 7), {}),
    ]


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
    "get_sub_volume": Exercise(
        "get_sub_volume",
        "utils.preprocessing.transforms:get_sub_volume",
        _same_outputs(_sub_volume_inputs, seeded=True),
    ),
    "standardize": Exercise(
        "standardize", "utils.preprocessing.transforms:standardize", _same_outputs(_standardize_inputs)
    ),
    "conv_block": Exercise(
        "conv_block",
        "utils.model.unet:conv_block",
        _same_block(
            _block_inputs((8, 8, 8, 4)),
            [{"filters": 8}, {"filters": 8, "normalization": "batch"}, {"filters": 4, "normalization": "instance"}],
        ),
    ),
    "upsampling_block": Exercise(
        "upsampling_block",
        "utils.model.unet:upsampling_block",
        _same_block(
            _block_inputs((4, 4, 4, 16), (8, 8, 8, 8)), [{"filters": 8}, {"filters": 8, "normalization": "batch"}]
        ),
    ),
    "single_class_dice_coefficient": Exercise(
        "single_class_dice_coefficient",
        "utils.model.losses:single_class_dice_coefficient",
        _same_outputs(_dice_inputs(batch=False)),
    ),
    "dice_coefficient": Exercise(
        "dice_coefficient", "utils.model.losses:dice_coefficient", _same_outputs(_dice_inputs(batch=True))
    ),
    "soft_dice_loss": Exercise(
        "soft_dice_loss", "utils.model.losses:soft_dice_loss", _same_outputs(_dice_inputs(batch=True))
    ),
    "compute_class_sens_spec": Exercise(
        "compute_class_sens_spec",
        "utils.evaluation.metrics:compute_class_sens_spec",
        _same_outputs(_sens_spec_inputs(with_class=True)),
    ),
    "get_sens_spec_df": Exercise(
        "get_sens_spec_df",
        "utils.evaluation.metrics:get_sens_spec_df",
        _same_outputs(_sens_spec_inputs(with_class=False)),
    ),
    "blend_windows": Exercise(
        "blend_windows", "utils.inference.sliding_window:blend_windows", _same_outputs(_blend_inputs)
    ),
    "region_dice": Exercise("region_dice", "utils.evaluation.metrics:region_dice", _same_dicts(_region_inputs)),
    "parse_survival": Exercise("parse_survival", "utils.data.clinical:parse_survival", _same_outputs(_survival_inputs)),
    "tumour_volumes_ml": Exercise(
        "tumour_volumes_ml", "utils.data.clinical:tumour_volumes_ml", _same_dicts(_volume_inputs)
    ),
    "label_to_regions": Exercise(
        "label_to_regions", "utils.data.labels:label_to_regions", _same_outputs(_label_inputs)
    ),
    "regions_to_label": Exercise(
        "regions_to_label", "utils.data.labels:regions_to_label", _same_outputs(_region_probability_inputs)
    ),
    "shuffle_block": Exercise(
        "shuffle_block", "utils.preprocessing.genesis:shuffle_block", _same_outputs(_shuffle_inputs)
    ),
}
