"""Checks of lesson 02 (patches and standardization): get_sub_volume, standardize."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import numpy as np

from .runner import Mismatch, Run, exercise, expect_close, expect_equal, run_check

LESSON = "02_patches_and_standardization"


def _coded_image(shape: tuple[int, int, int], channels: int = 4) -> np.ndarray:
    """Every voxel holds a number that encodes its own position (x, y, z, c)."""
    x, y, z, c = np.meshgrid(*[np.arange(n) for n in (*shape, channels)], indexing="ij")
    return (((x * 100 + y) * 100 + z) * 10 + c).astype(np.float32)


def _decode_start(X: np.ndarray) -> tuple[int, int, int]:
    code = int(round(float(X[0, 0, 0, 0]))) // 10
    return code // 10000, (code // 100) % 100, code % 100


UNIFORM_ALPHA = 1e-4
"""False-failure rate of the uniformity test: a correct sampler fails it with at most this probability."""
_DRAWS = {False: 1200, True: 1500}  # patches drawn for the corner tests (public, grading)


def _corner_counts(corners: list[tuple[int, int, int]], starts_max: tuple[int, int, int]) -> np.ndarray:
    counts = np.zeros(tuple(m + 1 for m in starts_max), dtype=np.int64)
    for corner in corners:
        counts[corner] += 1
    return counts


def _uniformity(counts: np.ndarray) -> list[tuple[str, float]]:
    """Chi-square p-values of the corner counts against the uniform law: the joint one, then each axis."""
    from scipy import stats

    tests = [("(x, y, z) jointly", stats.chisquare(counts.ravel()).pvalue)]
    for axis, name in enumerate("xyz"):
        marginal = counts.sum(axis=tuple(a for a in range(3) if a != axis))
        if marginal.size > 1:
            tests.append((f"start_{name}", stats.chisquare(marginal).pvalue))
    return tests


def _fits(marginal: np.ndarray, probabilities: np.ndarray, alpha: float) -> bool:
    """Whether counts are consistent with a law (chi-square goodness of fit at level ``alpha``)."""
    from scipy import stats

    expected = probabilities * marginal.sum()
    keep = expected > 0
    if np.any(marginal[~keep]):
        return False
    return stats.chisquare(marginal[keep], expected[keep]).pvalue > alpha


@exercise("get_sub_volume", LESSON)
def _get_sub_volume_tests(get_sub_volume: Callable, run: Run, grading: bool) -> None:
    """Tests of ``get_sub_volume`` (lesson 02, exercise 1).

    No two sizes a learner might confuse are equal: the volume's x, y and z,
    the patch's, and the ranges of the corner (``orig - output``) all differ,
    and no label holds the top class 3 (so a one-hot encoding that takes its
    number of classes from the data, not from ``num_classes``, shows). The
    corners must be uniform: a chi-square test on :data:`_DRAWS` patches, which
    a correct sampler fails with probability at most :data:`UNIFORM_ALPHA`.
    """
    shape, out = ((8, 11, 6), (3, 5, 2)) if grading else ((9, 7, 5), (4, 3, 2))
    starts_max = tuple(s - o for s, o in zip(shape, out))
    image = _coded_image(shape)
    label = np.zeros(shape, dtype=np.uint8)
    label[2:, 1:, 1:] = 1  # edema
    label[3:, 2:4, 1:] = 2  # non-enhancing core
    if grading:
        label[:2, 5:, :2] = 2

    def call(lab=label, img=image, orig=shape, size=out, max_tries=1000, threshold=0.95):
        result = get_sub_volume(
            img, lab, *orig, *size, num_classes=4, max_tries=max_tries, background_threshold=threshold
        )
        if not (isinstance(result, (tuple, list)) and len(result) == 2):
            raise AssertionError(
                f"expected the pair (X, y); got {type(result).__name__} "
                "(a missing return, or no ValueError when no patch qualifies?)"
            )
        X, y = np.asarray(result[0]), np.asarray(result[1])
        if X.ndim == y.ndim == 4 and X.shape[-1] == 3 and y.shape[-1] == img.shape[-1] != 3:
            raise AssertionError(
                f"the pair came back as (y, X): the first array has {X.shape[-1]} channels (the labels), "
                f"the second {y.shape[-1]} (the image); return X, y"
            )
        return X, y

    def window_of(X: np.ndarray, img=image, size=out) -> tuple[int, int, int] | None:
        """The corner X was cut at, if X is a window of ``img`` (None otherwise)."""
        if X.shape != (*size, img.shape[-1]):
            return None
        corner = _decode_start(X)
        if not all(0 <= c <= m for c, m in zip(corner, (n - o for n, o in zip(img.shape, size)))):
            return None
        a, b, c = corner
        if not np.allclose(X, img[a : a + size[0], b : b + size[1], c : c + size[2]]):
            return None
        return corner

    def one_hot(window: np.ndarray, classes: int) -> np.ndarray:
        return (window[..., None] == np.arange(classes)).astype(np.float32)

    results = {}

    def shapes():
        results["X"], results["y"] = call()
        X, y = results["X"], results["y"]
        expect_equal(
            "X shape (x, y, z, channels)",
            (*out, 4),
            X.shape,
            "x and y swapped (output_y used for x?)" if X.shape[:2] == out[1::-1] else "",
        )
        hint = ""
        corner = window_of(X)
        if corner is not None and y.shape[:3] == out:
            a, b, c = corner
            window = label[a : a + out[0], b : b + out[1], c : c + out[2]]
            got = np.asarray(y, dtype=np.float32)
            from_data = one_hot(window, int(window.max()) + 1)[..., 1:]
            if got.shape == from_data.shape and np.allclose(got, from_data):
                hint = (
                    "the one-hot encoding took its number of classes from the label "
                    "(no voxel is 3 here): pass num_classes"
                )
            elif got.shape == (*out, 4) and np.allclose(got, one_hot(window, 4)):
                hint = "the background channel is still there: return y[..., 1:]"
        expect_equal("y shape (x, y, z, classes without background)", (*out, 3), y.shape, hint)

    def x_is_a_window():
        X = results.get("X")
        if X is None:
            raise AssertionError("skipped: no patch came back")
        sx, sy, sz = _decode_start(X)
        if not all(0 <= s <= m for s, m in zip((sx, sy, sz), starts_max)):
            raise AssertionError(f"X[0, 0, 0] does not come from a valid corner of the volume (found {sx, sy, sz})")
        ox, oy, oz = out
        expect_close(
            f"X must be image[sx:sx+{ox}, sy:sy+{oy}, sz:sz+{oz}, :] (all channels)",
            image[sx : sx + ox, sy : sy + oy, sz : sz + oz],
            X,
        )

    def y_matches_x():
        X, y = results.get("X"), results.get("y")
        if X is None:
            raise AssertionError("skipped: no patch came back")
        sx, sy, sz = _decode_start(X)
        window = label[sx : sx + out[0], sy : sy + out[1], sz : sz + out[2]]
        full = one_hot(window, 4)
        expected = full[..., 1:]
        got = np.asarray(y, dtype=np.float32)
        hint = ""
        if got.shape == expected.shape and np.allclose(got, full[..., :-1]):
            hint = "channel 0 is the background: drop it with y[..., 1:], not the last channel"
        expect_close(
            "y[..., k] must be 1 where the label is k + 1 (channel 0 = edema, background dropped)",
            expected,
            got,
            hint=hint,
        )

    def threshold_respected():
        for _ in range(25):
            _, y = call(threshold=0.6)
            bg = 1.0 - np.asarray(y, dtype=np.float64).sum(axis=-1).mean()
            if not bg < 0.6:
                raise Mismatch(
                    "an accepted patch must have a background share below the threshold 0.6",
                    "< 0.6",
                    round(float(bg), 3),
                )

    def threshold_exclusive():
        # the patch is the whole volume, whose background share equals the threshold exactly
        small = (5, 4, 2) if grading else (4, 3, 2)
        share = 0.75 if grading else 0.5
        lab = np.zeros(small, dtype=np.uint8)
        lab.reshape(-1)[: int(round(np.prod(small) * (1 - share)))] = 1
        img = _coded_image(small)
        try:
            got = call(lab=lab, img=img, orig=small, size=small, max_tries=5, threshold=share)
        except ValueError:
            return
        whole = got[0].shape == img.shape and np.allclose(got[0], img)  # the one patch there is, accepted
        raise Mismatch(
            f"background share {share} with background_threshold={share}: the patch is rejected "
            "(a ValueError), as the share must be below the threshold",
            "ValueError",
            f"a patch of shape {got[0].shape}",
            "<= instead of < in the background test" if whole else "",
        )

    n_draws = _DRAWS[grading]

    def corners() -> list[tuple[int, int, int]]:
        """The corners of ``n_draws`` patches from a volume that is tumour everywhere (drawn once)."""
        if "corners" not in results:
            results["corners"] = None
            everywhere = np.ones(shape, dtype=np.uint8)
            found = []
            for _ in range(n_draws):
                X = call(lab=everywhere)[0]
                corner = window_of(X)
                if corner is None:
                    raise AssertionError(
                        f"a patch of shape {X.shape} is not a window image[sx:sx+{out[0]}, sy:sy+{out[1]}, "
                        f"sz:sz+{out[2]}] of a corner inside the volume (corner read from it: {_decode_start(X)})"
                    )
                found.append(corner)
            results["corners"] = found
        if results["corners"] is None:
            raise AssertionError("skipped: the patches of the previous test were not windows of the volume")
        return results["corners"]

    def every_corner():
        found = corners()
        seen = set(found)
        missing = {
            "xyz"[axis]: sorted(set(range(m + 1)) - {c[axis] for c in found}) for axis, m in enumerate(starts_max)
        }
        missing = {name: values for name, values in missing.items() if values}
        if not missing:
            return
        lines = [
            f"never drawn in {n_draws} patches: "
            + "; ".join(f"start_{name} = {', '.join(map(str, values))}" for name, values in missing.items())
            + f" (from a volume that is tumour everywhere, every start 0 .. orig - output {starts_max} should come up)"
        ]
        if len(seen) == 1:
            lines.append("likely mistake: the corner is not drawn at random (the same one came back every time)")
        elif all(values == [starts_max["xyz".index(name)]] for name, values in missing.items()):
            lines.append(
                "only the far start (orig - output) is missing; "
                "likely mistake: np.random.randint(low, high) excludes high"
            )
        raise AssertionError("\n".join(lines))

    def uniform_corners():
        found = corners()
        counts = _corner_counts(found, starts_max)
        failed = [(what, p) for what, p in _uniformity(counts) if p < UNIFORM_ALPHA / 4]
        if not failed:
            return
        lines = [
            f"{n_draws} corners should be uniform over the {counts.size} possible ones; a chi-square test rejects "
            f"that for {', '.join(f'{what} (p = {p:.1e})' for what, p in failed)} "
            f"(a uniform sampler fails this with probability below {UNIFORM_ALPHA:g})"
        ]
        clamped = []
        for axis, name in enumerate("xyz"):
            marginal = counts.sum(axis=tuple(a for a in range(3) if a != axis))
            m = starts_max[axis]
            share = marginal / marginal.sum()
            top = int(np.argmax(share))
            lines.append(
                f"start_{name}: most often {top} ({share[top]:.0%} of the draws; uniform gives {1 / (m + 1):.0%})"
            )
            law = np.full(m + 1, 1.0 / shape[axis])
            law[m] = (shape[axis] - m) / shape[axis]  # randint(0, orig) clamped to orig - output
            if m > 0 and share[m] > 1.5 / (m + 1) and _fits(marginal, law, 1e-3):
                clamped.append(name)
        if clamped:
            lines.append(
                f"likely mistake: the start along {', '.join(clamped)} is drawn from 0 .. orig - 1 and then clamped "
                "to orig - output, so the far corner comes up far too often: draw from 0 .. orig - output directly"
            )
        raise AssertionError("\n".join(lines))

    def gives_up_clearly():
        empty = np.zeros(shape, dtype=np.uint8)
        try:
            result = get_sub_volume(image, empty, *shape, *out, num_classes=4, max_tries=20, background_threshold=0.95)
        except ValueError:
            return
        raise Mismatch(
            "with no qualifying patch, raise a ValueError after max_tries",
            "ValueError",
            f"returned {type(result).__name__}",
        )

    run.test("returns (X, y) with channels-last shapes", shapes)
    run.test("X is a window of the image, all 4 channels", x_is_a_window)
    run.test("y is the one-hot label of the same window, background dropped", y_matches_x)
    run.test("accepted patches have background below the threshold", threshold_respected)
    run.test("a background share equal to the threshold is rejected (below means <)", threshold_exclusive)
    run.test("the corner is random and every start is possible, the far one included", every_corner)
    run.test(f"the corners are uniform (chi-square test, false-failure rate {UNIFORM_ALPHA:g})", uniform_corners)
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

    return {
        "the sample std (ddof=1); use the population std (np.std's default, ddof=0)": by((0, 1), ddof=1),
        "statistics over the whole volume, not per z-slice and channel": by((0, 1, 2, 3)),
        "statistics per channel over all z, not per z-slice": by((0, 1, 2)),
        "statistics per z-slice over all channels, not per channel": by((0, 1, 3)),
        "statistics over the wrong axes (per x-slice?)": by((1, 2)),
    }


def _expect_standardized(what: str, image: np.ndarray, got: Any, index=np.s_[...]) -> None:
    expected = _standardized(image)
    out = np.asarray(got)
    hint = ""
    if out.shape == expected.shape:
        if not np.issubdtype(out.dtype, np.floating):
            hint = (
                f"the output has the integer dtype {out.dtype} of the input, so the fractions are cut off: "
                "make the output a float array"
            )
        else:
            hint = "; or ".join(
                text for text, wrong in _standardize_mistakes(image).items() if np.allclose(out, wrong, atol=1e-3)
            )
            if not hint and np.isnan(out).any():
                hint = "NaN where a slice is constant (std 0): leave those slices at 0"
    expect_close(what, expected[index], out[index] if out.shape == expected.shape else out, atol=1e-3, hint=hint)


@exercise("standardize", LESSON)
def _standardize_tests(standardize: Callable, run: Run, grading: bool) -> None:
    """Tests of ``standardize`` (lesson 02, exercise 2)."""
    a = np.arange(1, 10).reshape(3, 3) if not grading else np.array([[2, 4, 4], [4, 5, 5], [7, 9, 0]])
    if run.hidden:  # the grader's per-run seed: a hand-made slice the source does not show
        a = run.rng(2).permutation(np.arange(9) + run.rng(3).integers(0, 5)).reshape(3, 3)
    image = np.zeros((3, 3, 2, 2), dtype=np.float32)
    image[:, :, 0, 0] = a
    image[:, :, 1, 0] = 100 * a + (0 if not grading else 7)  # other slice, other scale
    image[:, :, 0, 1] = 7.0 if not grading else -3.0  # constant: zero variance
    image[:, :, 1, 1] = [[0, 0, 0], [0, 4, 0], [0, 0, 0]] if not grading else [[0, 1, 0], [0, 0, 0], [0, 1, 0]]
    original = image.copy()

    def result() -> np.ndarray:
        out = standardize(image.copy())
        if out is None:
            raise AssertionError("standardize returned None: return the standardized array")
        return np.asarray(out)

    def shape():
        expect_equal("output shape", image.shape, result().shape)

    mean, std = a.mean(), a.std()
    run.test("returns an array of the input's shape", shape)
    run.test(
        f"hand-made slice matches (x - mean) / std: mean {mean:.4g}, population std {std:.4g} (ddof=0)",
        lambda: _expect_standardized("channel 0, slice z=0", image, result(), np.s_[:, :, 0, 0]),
    )
    run.test(
        "statistics per z-slice, not per volume: slice z=1 (100x larger) gives the same values",
        lambda: _expect_standardized("channel 0, slice z=1", image, result(), np.s_[:, :, 1, 0]),
    )
    run.test(
        "statistics per channel",
        lambda: _expect_standardized("channel 1, slice z=1", image, result(), np.s_[:, :, 1, 1]),
    )

    def zero_variance():
        with warnings.catch_warnings(record=True) as caught, np.errstate(all="warn"):
            warnings.simplefilter("always")
            out = result()
        if caught:
            raise AssertionError(f"no warning expected; got {caught[0].category.__name__}: {caught[0].message}")
        _expect_standardized("a constant slice becomes all zeros (no NaN)", image, out, np.s_[:, :, 0, 1])

    def int16_input():
        rng = run.rng(20)
        vol = rng.integers(0, 900, size=(7, 6, 3, 4) if grading else (6, 5, 4, 4)).astype(np.int16)
        _expect_standardized("int16 input (as the real files are): float values", vol, standardize(vol.copy()))

    def random_volume():
        rng = run.rng(22)
        vol = rng.normal(300.0, 50.0, size=(9, 7, 4, 3) if grading else (8, 7, 5, 4)).astype(np.float32)
        vol[:, :, 1, 2] = 123.0
        _expect_standardized("every slice", vol, standardize(vol.copy()))

    def input_untouched():
        data = original.copy()
        standardize(data)
        expect_close(
            "the input array must not be modified",
            original,
            data,
            hint="the function writes into its input: work on a copy or a new array",
        )

    run.test("zero-variance slices give 0, without warnings or NaN", zero_variance)
    run.test("integer input gives float output with the right values", int16_input)
    run.test("every slice of a random volume has mean 0 and std 1", random_volume)
    run.test("the input is left unchanged", input_untouched)


# The public checks the lesson calls


def check_get_sub_volume(get_sub_volume: Callable) -> None:
    """Public tests of ``get_sub_volume``: prints ✔/✘ lines, raises ExerciseCheckError on failure."""
    run_check("get_sub_volume", get_sub_volume)


def check_standardize(standardize: Callable) -> None:
    """Public tests of ``standardize``: prints ✔/✘ lines, raises ExerciseCheckError on failure."""
    run_check("standardize", standardize)
