"""Checks of lesson 04 (soft Dice loss and metrics): Dice, soft Dice loss, sensitivity and specificity."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from keras import ops

from ...data.labels import CLASS_NAMES
from .runner import Mismatch, Run, exercise, expect_close, expect_equal, fmt, run_check

LESSON = "04_soft_dice_loss"


def _numpy(value) -> np.ndarray:
    try:
        return np.asarray(ops.convert_to_numpy(value), dtype=np.float64)
    except Exception:  # already numpy / python
        return np.asarray(value, dtype=np.float64)


def _dice(
    t: np.ndarray,
    p: np.ndarray,
    axis,
    eps: float,
    squares: bool = False,
    num_eps: float | None = None,
    den_eps: float | None = None,
    reduce: str = "sum",
    square_numerator: bool = False,
) -> np.ndarray:
    """(2 * sum(t * p) + eps) / (sum(t) + sum(p) + eps) over ``axis`` (squared sums with ``squares``).

    ``reduce="mean"`` and ``square_numerator`` compute two mistakes: means for
    sums, and 2 * sum(t² p²) in the numerator.
    """
    t, p = np.asarray(t, np.float64), np.asarray(p, np.float64)
    num_eps = eps if num_eps is None else num_eps
    den_eps = eps if den_eps is None else den_eps
    total = getattr(np, reduce)
    tp = (t * p) ** 2 if square_numerator else t * p
    num = 2.0 * total(tp, axis=axis) + num_eps
    den = (
        (total(t * t, axis=axis) + total(p * p, axis=axis)) if squares else (total(t, axis=axis) + total(p, axis=axis))
    )
    with np.errstate(divide="ignore", invalid="ignore"):
        return num / (den + den_eps)


def _dice_mistakes(
    t: np.ndarray, p: np.ndarray, eps: float, *, soft: bool, loss: bool, batch: bool
) -> dict[str, float]:
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
        (
            "no squares in the denominator: the soft Dice divides by sum(p²) + sum(y²)"
            if soft
            else "squares in the denominator: the plain Dice divides by sum(y_true) + sum(y_pred), unsquared"
        ): score(squares=not soft),
        ("returns the Dice, not the loss 1 - Dice" if loss else "returns 1 - Dice (a loss), not the Dice"): 1.0 - right,
        "epsilon only in the denominator (add it to the numerator too)": score(num_eps=0.0),
        "epsilon only in the numerator (add it to the denominator too)": score(den_eps=0.0),
        "2 * (sum + epsilon) in the numerator: epsilon is added once, after the 2 *": score(num_eps=2 * eps),
        "means where the formula has sums (ops.mean for ops.sum)": score(reduce="mean"),
    }
    if soft:
        out["the numerator squares too: it is 2 * sum(y * p), only the denominator squares"] = score(
            square_numerator=True
        )
    if eps != 1e-5:
        out["the epsilon argument is not used (a fixed 1e-5?)"] = score(num_eps=1e-5, den_eps=1e-5)
    if not batch:
        out["z is not summed (axis=(0, 1), then the mean over z): sum over x, y and z, axis=(0, 1, 2)"] = score(
            axis=(0, 1)
        )
    if batch:
        per_sample = np.mean(_dice(t, p, spatial, eps, soft), axis=-1)
        pooled = score(axis=(0, *spatial))
        out[
            f"the batch is pooled: the per-sample {what} values are "
            f"{np.round(1 - per_sample if loss else per_sample, 4).tolist()}, mean {right:.4g}; "
            f"summing over the samples too gives {pooled:.4g}"
        ] = pooled
        out["z is not summed (axis=(1, 2)): sum over all three spatial axes, axis=(1, 2, 3)"] = score(axis=(1, 2))
        out["the classes are pooled (summed over the last axis too): Dice per sample and class, then the mean"] = score(
            axis=(1, 2, 3, 4)
        )
    return out


def _hint(got: Any, expected: float, mistakes: dict[str, float]) -> str:
    """The explanation of the mistakes whose value matches ``got`` (and not the right answer)."""
    try:
        value = float(np.asarray(got, dtype=np.float64))
    except (TypeError, ValueError):
        return ""
    found = [
        text
        for text, wrong in mistakes.items()
        if np.isfinite(wrong) and abs(wrong - expected) > 1e-4 and abs(value - wrong) <= 1e-4
    ]
    return "; or ".join(found)


def _right(t: np.ndarray, p: np.ndarray, eps: float, *, soft: bool, loss: bool, batch: bool) -> float:
    """The right (soft) Dice or loss of (t, p): per (sample and) class over x, y, z, then the mean."""
    value = float(np.mean(_dice(t, p, (1, 2, 3) if batch else (0, 1, 2), eps, soft)))
    return 1.0 - value if loss else value


SEPARATION = 5e-4
"""How far (5x the checks' tolerance) a test's right value stays from a constant 0.5 and from each common mistake."""


def _gaps(t: np.ndarray, p: np.ndarray, eps: float, kw: dict) -> tuple[float, list[float]]:
    """The right value on (t, p) and how far each common mistake (in :func:`_dice_mistakes`' order) is from it."""
    right = _right(t, p, eps, **kw)
    return right, [abs(wrong - right) for wrong in _dice_mistakes(t, p, eps, **kw).values()]


def _redrawn(draw: Callable[[], Any], cases: Callable[[Any], list[tuple]], lesson: Any) -> Any:
    """``draw()`` until each case ``(t, p, eps, kw)`` that ``cases`` builds from the draw tells the right value
    apart: at least :data:`SEPARATION` from 0.5 (what a stub or a cheat returns) and from every common mistake.

    A mistake may come that close only in a case where it does on ``lesson`` (the lesson's own draw): there the
    test cannot tell it apart at all (0/1 masks square to themselves, one sample cannot be pooled, an epsilon of
    1e-5 does not show), and another test of the exercise catches it. A draw that already tells everything apart
    is kept as it is, so the lesson's and the fixed grading seeds keep their inputs.
    """
    blind = [{i for i, g in enumerate(_gaps(*case)[1]) if not g > SEPARATION} for case in cases(lesson)]

    def tells_apart(k: int, case: tuple) -> bool:
        right, gaps = _gaps(*case)
        return abs(right - 0.5) > SEPARATION and all(i in blind[k] or not g <= SEPARATION for i, g in enumerate(gaps))

    for _ in range(1000):
        drawn = draw()
        if all(tells_apart(k, case) for k, case in enumerate(cases(drawn))):
            return drawn
    raise RuntimeError("no draw of 1000 tells the right value from 0.5 and the common mistakes")  # a bug of the check


def _expect_dice(
    what: str, t: np.ndarray, p: np.ndarray, eps: float, got: Any, *, soft: bool, loss: bool, batch: bool
) -> None:
    """``got`` must be the (soft) Dice or loss of (t, p); on a mismatch name the likely mistake."""
    mistakes = _dice_mistakes(t, p, eps, soft=soft, loss=loss, batch=batch)
    expected = _right(t, p, eps, soft=soft, loss=loss, batch=batch)
    got = _numpy(got)
    if got.shape != () and got.size == 1 and np.isclose(float(got.ravel()[0]), expected, atol=1e-4):
        raise Mismatch(f"{what}: the value is right, but one number is expected, not an array", (), got.shape)
    if got.shape != ():
        raise Mismatch(
            f"{what} (shape: one number expected)", (), got.shape, _shape_hint(t, p, eps, got, soft, loss, batch)
        )
    expect_close(what, expected, got, hint=_hint(got, expected, mistakes))


def _shape_hint(t: np.ndarray, p: np.ndarray, eps: float, got: np.ndarray, soft: bool, loss: bool, batch: bool) -> str:
    """The mistake whose (non-scalar) value ``got`` is, recomputed on the same inputs; "" if none."""
    spatial = (1, 2, 3) if batch else (0, 1, 2)

    def value(axis):
        d = _dice(t, p, axis, eps, soft)
        return 1.0 - d if loss else d

    candidates = {"z is not summed: one value per z-slice came back": value(spatial[:2])}
    if batch:
        per = value(spatial)  # (batch, classes)
        candidates["one value per sample and class came back: return their mean"] = per
        candidates["one value per class came back (mean over the samples only): return the mean over both"] = per.mean(
            axis=0
        )
        candidates["one value per sample came back (mean over the classes only): return the mean over both"] = per.mean(
            axis=-1
        )
    found = [
        text
        for text, wrong in candidates.items()
        if np.shape(wrong) == got.shape and np.allclose(got, wrong, atol=1e-4)
    ]
    return "; or ".join(found)


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
for _constant in (_P1, _L1, _L2, _P1G, _L1G, _L2G):
    _constant.flags.writeable = False  # shared by every check run: nothing may write into them (or their views)


def _masks(rng: np.random.Generator, n: int, shape: tuple[int, int] = (2, 3)) -> list[np.ndarray]:
    """``n`` different 0/1 masks, each with a 0 and a 1."""
    while True:
        masks = [(rng.random(shape) < 0.5).astype(np.float64) for _ in range(n)]
        if all(0 < m.sum() < m.size for m in masks) and len({m.tobytes() for m in masks}) == n:
            return masks


_Case = tuple[np.ndarray, np.ndarray, float, dict]
"""(label, prediction, epsilon, the ``soft``/``loss``/``batch`` keywords): one test's inputs (:func:`_redrawn`)."""


def _hand_made(
    run: Run, cases: Callable[[np.ndarray, np.ndarray, np.ndarray], list[_Case]]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The hand-made masks (pred, label 1, label 2): the lesson's, other ones for grading, or, with the grader's
    per-run seed, masks drawn until the ``cases`` an exercise builds from them tell the right value apart
    (:func:`_redrawn`, as well as the lesson's masks do)."""
    if run.hidden:
        rng = run.rng(1)
        return _redrawn(lambda: tuple(_masks(rng, 3)), lambda m: cases(*m), lesson=(_P1, _L1, _L2))
    return (_P1G, _L1G, _L2G) if run.grading else (_P1, _L1, _L2)


def _soft_batch_tests(
    fn: Callable,
    run: Run,
    seed: int,
    shapes: tuple[tuple[int, ...], tuple[int, ...]],
    kw: dict,
    summary: str,
    emptied: Callable[[np.ndarray, np.ndarray], _Case],
    emptied_summary: str,
) -> tuple[np.ndarray, np.ndarray]:
    """Test ``fn`` on a random soft batch (the lesson's shape, or the grading one), epsilon=1, then on the case
    ``emptied`` makes of it (a class emptied, default epsilon); the batch is drawn so that both tell the right
    value apart (:func:`_redrawn`). Returns the batch (label, prediction)."""
    rng = run.rng(seed)
    lesson = _soft(np.random.default_rng(seed), shapes[0])
    t, q = _redrawn(lambda: _soft(rng, shapes[run.grading]), lambda tq: [(*tq, 1.0, kw), emptied(*tq)], lesson=lesson)
    what = "loss" if kw["loss"] else "Dice"
    run.test(
        f"a {t.shape} batch of soft predictions, epsilon=1: {summary}",
        lambda: _expect_dice(what, t, q, 1.0, fn(t, q, epsilon=1), **kw),
    )
    et, eq, eps, _ = emptied(t, q)
    run.test(emptied_summary, lambda: _expect_dice(what, et, eq, eps, fn(et, eq), **kw))
    return t, q


def _without_class(a: np.ndarray, k: int) -> np.ndarray:
    """A copy of ``a`` whose class ``k`` (last axis) is empty."""
    out = a.copy()
    out[..., k] = 0.0
    return out


_SINGLE = {"soft": False, "loss": False, "batch": False}
_BATCH = {"soft": False, "loss": False, "batch": True}
_LOSS = {"soft": True, "loss": True, "batch": True}


def _single_class_cases(p: np.ndarray, l1: np.ndarray, l2: np.ndarray) -> list[_Case]:
    """The hand-made tests of ``single_class_dice_coefficient``: pred against each label, epsilon=1."""
    return [(label[..., None], p[..., None], 1.0, _SINGLE) for label in (l1, l2)]


def _dice_coefficient_cases(p: np.ndarray, l1: np.ndarray, l2: np.ndarray) -> list[_Case]:
    """The hand-made tests of ``dice_coefficient``: one sample with two classes (pred against each label), and
    two samples of one class (label 2 found perfectly, label 1 not at all); epsilon=1."""
    two_classes = np.stack([l1, l2], axis=-1)[None, :, :, None, :], np.stack([p, p], axis=-1)[None, :, :, None, :]
    two_label = np.stack([l2, l1])[..., None, None]
    two_pred = np.stack([l2, np.zeros_like(l1)])[..., None, None]
    return [(*two_classes, 1.0, _BATCH), (two_label, two_pred, 1.0, _BATCH)]


def _soft_dice_loss_cases(p: np.ndarray, l1: np.ndarray, l2: np.ndarray) -> list[_Case]:
    """The hand-made tests of ``soft_dice_loss``: a hard pred, then half of it, against label 1; epsilon=1."""
    label, pred = l1[None, :, :, None, None], p[None, :, :, None, None]
    return [(label, pred, 1.0, _LOSS), (label, 0.5 * pred, 1.0, _LOSS)]


@exercise("single_class_dice_coefficient", LESSON)
def _single_class_dice_coefficient_tests(fn: Callable, run: Run, grading: bool) -> None:
    """Tests of ``single_class_dice_coefficient`` (lesson 04, exercise 1)."""
    masks = _hand_made(run, _single_class_cases)
    for label, p, _, _ in _single_class_cases(*masks):
        tp, tl, pp = int((label * p).sum()), int(label.sum()), int(p.sum())
        what = f"Dice = {_dice(label, p, (0, 1, 2), 1.0):.4g}"
        run.test(
            f"pred {p[..., 0].astype(int).tolist()}, label {label[..., 0].astype(int).tolist()}, epsilon=1: "
            f"(2*{tp} + 1) / ({tl} + {pp} + 1)",
            lambda t=label, p=p, what=what: _expect_dice(what, t, p, 1.0, fn(t, p, epsilon=1), **_SINGLE),
        )
    rng = run.rng(40)
    t, q = _redrawn(
        lambda: _soft(rng, (4, 3, 5) if grading else (3, 4, 2)),
        lambda tq: [(*tq, 1.0, _SINGLE)],
        lesson=_soft(np.random.default_rng(40), (3, 4, 2)),
    )
    run.test(
        f"soft predictions on a {t.shape} volume, epsilon=1: sums over x, y and z, no squares",
        lambda: _expect_dice("Dice", t, q, 1.0, fn(t, q, epsilon=1), **_SINGLE),
    )

    def axis_argument():
        bt, bq = _soft(rng, (2, 3, 5, 4) if not grading else (3, 4, 2, 5))
        got = _numpy(fn(bt, bq, axis=(1, 2, 3), epsilon=1))
        expect_close(
            "with axis=(1, 2, 3) on a (batch, x, y, z) array: one Dice per sample",
            _dice(bt, bq, (1, 2, 3), 1.0),
            got,
            hint="the axis argument is not used" if got.shape == () else "",
        )

    run.test("the axis argument selects the summed axes", axis_argument)
    empty = np.zeros((3, 2, 2) if grading else (2, 2, 2))
    run.test(
        "both empty, default epsilon: Dice is 1 (nothing to find, nothing found)",
        lambda: _expect_dice("Dice", empty, empty, 1e-5, fn(empty, empty), **_SINGLE),
    )
    l1 = masks[1][..., None]
    run.test(
        "no overlap, default epsilon: Dice is about 0",
        lambda: _expect_dice("Dice", l1, 1 - l1, 1e-5, fn(l1, 1 - l1), **_SINGLE),
    )


@exercise("dice_coefficient", LESSON)
def _dice_coefficient_tests(fn: Callable, run: Run, grading: bool) -> None:
    """Tests of ``dice_coefficient`` (lesson 04, exercise 2)."""
    p, l1, l2 = _hand_made(run, _dice_coefficient_cases)
    (batch_label, batch_pred, _, kw), (two_label, two_pred, _, _) = _dice_coefficient_cases(p, l1, l2)
    d1, d2 = (_dice(lab, p, (0, 1), 1.0) for lab in (l1, l2))
    run.test(
        f"one sample, two classes (Dice {d1:.4g} and {d2:.4g}), epsilon=1: their mean",
        lambda: _expect_dice("Dice", batch_label, batch_pred, 1.0, fn(batch_label, batch_pred, epsilon=1), **kw),
    )
    s1 = float(np.mean(_dice(two_label[1], two_pred[1], (0, 1, 2), 1.0)))
    run.test(
        f"per sample, then the mean: samples with Dice 1.0 and {s1:.4g} (epsilon=1) give {(1 + s1) / 2:.4g}",
        lambda: _expect_dice("Dice", two_label, two_pred, 1.0, fn(two_label, two_pred, epsilon=1), **kw),
    )
    _soft_batch_tests(
        fn,
        run,
        42,
        ((2, 5, 4, 6, 3), (3, 4, 6, 5, 2)),  # batch, x, y, z and classes all differ
        kw,
        "Dice per sample and class over x, y, z, then the mean",
        lambda t, q: (_without_class(t, 0), _without_class(q, 0), 1e-5, kw),
        "default epsilon: a class empty in both label and prediction counts as Dice 1",
    )


@exercise("soft_dice_loss", LESSON)
def _soft_dice_loss_tests(fn: Callable, run: Run, grading: bool) -> None:
    """Tests of ``soft_dice_loss`` (lesson 04, exercise 3)."""
    p, l1, l2 = _hand_made(run, _soft_dice_loss_cases)
    (label, pred, _, kw), (_, half, _, _) = _soft_dice_loss_cases(p, l1, l2)
    hard = 1 - float(_dice(label, pred, (1, 2, 3), 1.0, True)[0, 0])
    run.test(
        f"hard pred {p.astype(int).tolist()}, label {l1.astype(int).tolist()}, epsilon=1: {hard:.4g}",
        lambda: _expect_dice("loss", label, pred, 1.0, fn(label, pred, epsilon=1), **kw),
    )
    soft = 1 - float(_dice(label, half, (1, 2, 3), 1.0, True)[0, 0])
    run.test(
        f"soft pred {(0.5 * p).tolist()}: the denominator squares the predictions, {soft:.4g}",
        lambda: _expect_dice("loss", label, half, 1.0, fn(label, half, epsilon=1), **kw),
    )
    t, q = _soft_batch_tests(
        fn,
        run,
        44,
        ((3, 5, 4, 6, 2), (2, 4, 6, 5, 3)),
        kw,
        "one minus the mean over samples and classes",
        lambda t, q: (_without_class(t, 1), _without_class(t, 1), 1e-5, kw),
        "a perfect prediction has (almost) zero loss, even with a class empty in both (default epsilon)",
    )

    def trains_keras():
        # A loss is only useful if Keras can differentiate it: NumPy turns the tensors into plain arrays.
        got = fn(ops.convert_to_tensor(t, "float32"), ops.convert_to_tensor(q, "float32"), epsilon=1)
        if not ops.is_tensor(got):
            raise Mismatch(
                "on Keras tensors the loss must come back as a tensor",
                "a tensor",
                f"{type(got).__module__}.{type(got).__name__}",
                "NumPy (np.sum, .sum(), np.asarray) drops the gradient Keras trains with; "
                "use ops.sum, ops.square and ops.mean",
            )
        _expect_dice("loss", t, q, 1.0, got, **kw)

    run.test("on Keras tensors it returns a Keras tensor, so Keras can train with it", trains_keras)


def _pair(result: Any) -> np.ndarray:
    """(sensitivity, specificity) from a tuple, list or array of two numbers."""
    try:
        values = [float(v) for v in result]
    except (TypeError, ValueError):
        raise AssertionError(f"expected the pair (sensitivity, specificity); got {fmt(result)}") from None
    if len(values) != 2:
        raise AssertionError(f"expected the pair (sensitivity, specificity); got {len(values)} values")
    return np.array(values)


def _sens_spec(pred: np.ndarray, label: np.ndarray, k: int) -> dict[str, float]:
    p, t = pred[..., k].astype(bool), label[..., k].astype(bool)
    tp, tn, fp, fn = (p & t).sum(), (~p & ~t).sum(), (p & ~t).sum(), (~p & t).sum()
    ratio = lambda a, b: a / b if b else np.nan  # noqa: E731
    return {
        "tp": tp,
        "tn": tn,
        "fp": fp,
        "fn": fn,
        "sens": ratio(tp, tp + fn),
        "spec": ratio(tn, tn + fp),
        "prec": ratio(tp, tp + fp),
        "npv": ratio(tn, tn + fn),
    }


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
    raise Mismatch(
        f"(sensitivity, specificity) with TP={s['tp']}, FN={s['fn']}, FP={s['fp']}, TN={s['tn']}",
        expected,
        got,
        "; ".join(hints),
    )


@exercise("compute_class_sens_spec", LESSON)
def _compute_class_sens_spec_tests(fn: Callable, run: Run, grading: bool) -> None:
    """Tests of ``compute_class_sens_spec`` (lesson 04, exercise 4)."""
    # (x, y, z, classes) as the docstring says: a hand-made slice, z = 1, one class
    if run.hidden:  # the grader's per-run seed: a hand-made slice the source does not show
        pred1, label1 = (m.astype(np.int64)[..., None, None] for m in _masks(run.rng(1), 2))
    elif grading:
        pred1 = np.array([[1, 1, 0], [0, 1, 0]])[..., None, None]
        label1 = np.array([[1, 0, 0], [1, 1, 1]])[..., None, None]
    else:
        pred1 = np.array([[1, 0], [0, 1]])[..., None, None]
        label1 = np.array([[1, 1], [0, 0]])[..., None, None]
    s = _sens_spec(pred1, label1, 0)
    run.test(
        f"TP={s['tp']}, FN={s['fn']}, FP={s['fp']}, TN={s['tn']}: sensitivity {s['sens']:.4g}, "
        f"specificity {s['spec']:.4g}",
        lambda: _expect_sens_spec(pred1, label1, 0, fn(pred1, label1, 0)),
    )
    rng = run.rng(46)
    shape = (5, 4, 6, 3) if grading else (5, 4, 2, 3)  # x, y, z and the classes differ
    pred = (rng.random(shape) < 0.5).astype(np.int64)
    label = (rng.random(shape) < 0.4).astype(np.int64)
    k = 2 if grading else 1
    s = _sens_spec(pred, label, k)
    run.test(
        f"0/1 integer arrays {shape}, class_num={k} (the channel on the last axis): "
        f"TP={s['tp']}, FN={s['fn']}, FP={s['fp']}, TN={s['tn']}",
        lambda: _expect_sens_spec(pred, label, k, fn(pred, label, k)),
    )

    def undefined():
        zeros = np.zeros((2, 3, 2, 2) if grading else (2, 2, 2, 1), dtype=np.int64)
        got = _pair(fn(zeros, zeros, 0))
        if not np.isnan(got[0]) or not np.isclose(got[1], 1.0):
            raise Mismatch(
                "no positive voxel in the label: sensitivity is undefined (NaN), specificity 1",
                np.array([np.nan, 1.0]),
                got,
            )
        ones = np.ones_like(zeros)
        got = _pair(fn(ones, ones, 0))
        if not np.isclose(got[0], 1.0) or not np.isnan(got[1]):
            raise Mismatch(
                "no negative voxel in the label: sensitivity 1, specificity undefined (NaN)",
                np.array([1.0, np.nan]),
                got,
            )

    run.test("a zero denominator gives NaN", undefined)


@exercise("get_sens_spec_df", LESSON)
def _get_sens_spec_df_tests(fn: Callable, run: Run, grading: bool) -> None:
    """Tests of ``get_sens_spec_df`` (lesson 04, exercise 5)."""
    rng = run.rng(48)
    shape = (5, 7, 4, 3) if grading else (6, 5, 4, 3)
    label = (rng.random(shape) < 0.3).astype(np.uint8)
    pred = label.copy()
    pred[:2] = 1 - pred[:2]
    pred[..., 1] = rng.random(shape[:3]) < 0.5
    tables = {}

    def layout():
        table = fn(pred, label)
        tables["t"] = table
        if not hasattr(table, "columns") or not hasattr(table, "index"):
            raise AssertionError(f"expected a pandas DataFrame; got {type(table).__name__}")
        hint = (
            "the table is transposed: classes are the columns, Sensitivity / Specificity the rows"
            if list(table.index) == list(CLASS_NAMES)
            else ""
        )
        expect_equal("columns", list(CLASS_NAMES), list(table.columns), hint)
        expect_equal("rows", ["Sensitivity", "Specificity"], list(table.index))

    def values():
        table = tables.get("t")
        if table is None or not hasattr(table, "to_numpy"):
            raise AssertionError("skipped: no table came back")
        expected = np.array([[_sens_spec(pred, label, k)[key] for k in range(3)] for key in ("sens", "spec")])
        got = np.asarray(table.loc[["Sensitivity", "Specificity"], list(CLASS_NAMES)].to_numpy(dtype=float))
        hint = "sensitivity and specificity are swapped" if np.allclose(got, expected[::-1], atol=1e-4) else ""
        expect_close("values (rounded to 4 decimals is fine)", expected, got, atol=1e-4, hint=hint)

    run.test("a DataFrame with the three classes as columns, Sensitivity / Specificity as rows", layout)
    run.test("values match TP / (TP + FN) and TN / (TN + FP) per class", values)


# The public checks the lesson calls


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
