"""Checks of lesson 03 (building the U-Net): conv_block, upsampling_block."""

from __future__ import annotations

from collections.abc import Callable

import keras
import numpy as np
from keras import ops

from .runner import Mismatch, Run, exercise, expect_equal, run_check

LESSON = "03_building_the_unet"


# The blocks are judged by what they compute, not by their layer classes:
# the check gives the learner's model known weights (each kernel found by its
# shape, biases 0, normalization at its initial state) and compares the output
# with the same block computed in NumPy. Sequential sub-models, keras.ops.relu,
# either concatenation order: anything that computes the block passes.

_NORM_EPS = 1e-3  # Keras' default epsilon of BatchNormalization and GroupNormalization


def _conv3d_same(x: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """A 3x3x3 'same' convolution (cross-correlation, as Keras) of (B, X, Y, Z, C) with (3, 3, 3, C, F)."""
    b, nx, ny, nz, _ = x.shape
    padded = np.pad(x, ((0, 0), (1, 1), (1, 1), (1, 1), (0, 0)))
    out = np.zeros((b, nx, ny, nz, kernel.shape[-1]))
    for i in range(3):
        for j in range(3):
            for k in range(3):
                out += padded[:, i : i + nx, j : j + ny, k : k + nz] @ kernel[i, j, k]
    return out


def _transpose_conv(x: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """A transposed convolution with kernel = strides = p: (B, X, Y, Z, C), (p1, p2, p3, F, C) -> (B, p1 X, ...)."""
    b, nx, ny, nz, _ = x.shape
    p1, p2, p3, f, _ = kernel.shape
    out = np.einsum("bxyzc,ijkfc->bxiyjzkf", x, kernel)
    return out.reshape(b, nx * p1, ny * p2, nz * p3, f)


_NORM_AXES = {
    "batch": (0, 1, 2, 3),  # each channel over the batch and all voxels
    "instance": (1, 2, 3),  # each channel of each sample over its voxels
    "layer": (1, 2, 3, 4),  # each sample over its voxels and channels (LayerNormalization, one group)
}


def _normalize(h: np.ndarray, normalization: str | None) -> np.ndarray:
    if normalization is None:
        return h
    axes = _NORM_AXES[normalization]
    mean, var = h.mean(axis=axes, keepdims=True), h.var(axis=axes, keepdims=True)
    return (h - mean) / np.sqrt(var + _NORM_EPS)


def _block_np(
    x: np.ndarray,
    k1: np.ndarray,
    k2: np.ndarray,
    normalization: str | None,
    first_relu: bool = True,
    relu_first: bool = False,
) -> np.ndarray:
    """conv -> normalization -> ReLU, twice (``first_relu=False``: no first ReLU; ``relu_first``: ReLU before the normalization)."""
    for i, kernel in enumerate((k1, k2)):
        x = _conv3d_same(x, kernel)
        relu = first_relu or i == 1
        if relu and relu_first:
            x = _normalize(np.maximum(x, 0.0), normalization)
        else:
            x = _normalize(x, normalization)
            x = np.maximum(x, 0.0) if relu else x
    return x


def _random_kernels(rng: np.random.Generator, *shapes: tuple[int, ...]) -> list[np.ndarray]:
    """3x3x3 kernels whose outputs have about unit variance (std 1 / sqrt(fan-in)), so a wrong activation shows."""
    return [rng.normal(size=s) / np.sqrt(27 * s[3]) for s in shapes]


def _weight_name(variable) -> str:
    return str(getattr(variable, "name", "")).split("/")[-1].split(":")[0]


def _set_known_weights(
    model, kernels: dict[tuple[int, ...], np.ndarray], what: str, skip_hint: list[tuple] | None = None
) -> None:
    """Give ``model`` known weights: each 5-D kernel by its shape; biases and offsets 0, scales 1."""
    shapes = [tuple(int(d) for d in v.shape) for v in model.weights if len(v.shape) == 5]
    if sorted(shapes) != sorted(kernels):
        raise Mismatch(
            f"convolution kernels (x, y, z, in, out) of {what}",
            sorted(kernels),
            sorted(shapes),
            _kernel_hint(sorted(kernels), sorted(shapes), skip_hint),
        )
    for v in model.weights:
        shape = tuple(int(d) for d in v.shape)
        name = _weight_name(v)
        if len(shape) == 5:
            v.assign(kernels[shape].astype(np.float32))
        elif name in ("bias", "beta", "moving_mean"):
            v.assign(np.zeros(shape, np.float32))
        elif name in ("gamma", "moving_variance"):
            v.assign(np.ones(shape, np.float32))


def _kernel_hint(expected: list[tuple], got: list[tuple], skip_hint: list[tuple] | None) -> str:
    """What differs between the kernel shapes; the skip mistake only when its kernel shape is there."""
    if len(got) != len(expected):
        return f"{len(got)} convolutions where {len(expected)} are expected"
    if any(g[:3] != e[:3] for g, e in zip(got, expected)):
        return "a kernel size differs (the conv block uses 3, the transposed convolution pool_size)"
    if skip_hint is not None and sorted(skip_hint) == got:
        return "the first convolution sees only the up-sampled channels: the skip is not concatenated"
    return ""


def _predict(model, inputs, training: bool) -> np.ndarray:
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


@exercise("conv_block", LESSON)
def _conv_block_tests(conv_block: Callable, run: Run, grading: bool) -> None:
    """Tests of ``conv_block`` (lesson 03, exercise 1)."""
    # x, y, z, the input channels and the filters all differ, so no two can be confused unseen
    shape, f = ((5, 6, 4, 3), 8) if grading else ((7, 6, 5, 4), 10)
    cin = shape[-1]
    rng = run.rng(30)
    k1, k2 = _random_kernels(rng, (3, 3, 3, cin, f), (3, 3, 3, f, f))
    x = rng.normal(size=(2, *shape)).astype(np.float32)
    x[1] = 3.0 * x[1] + 1.0  # the two samples have other statistics
    x[..., 0] += 2.0  # and so have the channels
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
        got = tuple(build(None).output.shape)
        expect_equal(
            f"output shape for input (None, {', '.join(map(str, shape))}) and {f} filters",
            (None, *shape[:3], f),
            got,
            "each axis is 4 shorter: padding='valid'; padding='same' keeps the size"
            if got[1:4] == tuple(n - 4 for n in shape[:3])
            else "",
        )

    conv_params = 27 * cin * f + 27 * f * f

    def params():
        got = build(None).count_params()
        hint = "no bias: without normalization the convolutions keep theirs" if got == conv_params else ""
        expect_equal(f"parameters: (3*3*3*{cin}*{f} + {f}) + (3*3*3*{f}*{f} + {f})", conv_params + 2 * f, got, hint)

    def computes(normalization, training):
        def body():
            model = build(normalization)
            _set_known_weights(model, {k1.shape: k1, k2.shape: k2}, "conv_block")
            expected = _block_np(x.astype(np.float64), k1, k2, normalization)

            def hint(got):
                # name a mistake only when the block computed exactly what that mistake computes
                xs = x.astype(np.float64)
                mistakes = {
                    "the first ReLU is missing: conv -> ReLU -> conv -> ReLU": _block_np(
                        xs, k1, k2, normalization, first_relu=False
                    ),
                }
                if normalization is not None:
                    mistakes["the ReLU comes before the normalization: normalize first, then ReLU"] = _block_np(
                        xs, k1, k2, normalization, relu_first=True
                    )
                    for other, text in (
                        ("batch", "this is batch normalization (statistics over the batch)"),
                        ("instance", "this is instance normalization (each sample on its own)"),
                        (
                            "layer",
                            "the channels are normalized together (LayerNormalization, or GroupNormalization "
                            "with fewer groups than channels): one group per channel",
                        ),
                    ):
                        if other != normalization:
                            mistakes[text] = _block_np(xs, k1, k2, other)
                found = [
                    text
                    for text, wrong in mistakes.items()
                    if got.shape == wrong.shape and np.allclose(got, wrong, rtol=1e-2, atol=1e-2)
                ]
                return "; or ".join(found) or _activation_hint(got)

            _expect_block(
                "output of the block with known weights (kernels random, biases 0)",
                expected,
                _predict(model, x, training),
                hint,
            )

        return body

    def norm_params(normalization, per_layer):
        def body():
            expected, got = conv_params + 2 * per_layer * f, build(normalization).count_params()
            hint = ""
            if got == expected + 2 * f:
                hint = "with normalization the convolutions have no bias (use_bias=normalization is None)"
            elif got == conv_params + 2 * f:
                hint = f"no normalization layer with normalization={normalization!r}"
            expect_equal(
                f"parameters with normalization={normalization!r}: convolutions without bias "
                f"({conv_params}) plus 2 x {per_layer} x {f} normalization parameters",
                expected,
                got,
                hint,
            )

        return body

    run.test("keeps the spatial size and outputs `filters` channels", out_shape)
    run.test("two 3x3x3 convolutions with bias", params)
    run.test("computes conv -> ReLU -> conv -> ReLU (negative values become 0)", computes(None, False))
    run.test("normalization='batch': BatchNormalization without conv bias", norm_params("batch", 4))
    run.test(
        "batch normalization between each convolution and its ReLU (statistics over the batch)", computes("batch", True)
    )
    run.test("normalization='instance': one group per channel, without conv bias", norm_params("instance", 2))
    run.test("instance normalization: each channel of each sample normalized on its own", computes("instance", False))


@exercise("upsampling_block", LESSON)
def _upsampling_block_tests(upsampling_block: Callable, run: Run, grading: bool) -> None:
    """Tests of ``upsampling_block`` (lesson 03, exercise 2)."""
    # the channels of x, of the skip and `filters` differ, and so do the x, y and z sizes
    if grading:
        x_shape, skip_shape, f, cases = (3, 2, 5, 6), (6, 4, 10, 5), 7, [None, (1, 2, 2)]
    else:
        x_shape, skip_shape, f, cases = (4, 3, 5, 12), (8, 6, 10, 6), 10, [None, (2, 2, 1)]
    cx, cs = x_shape[-1], skip_shape[-1]
    rng = run.rng(32)
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
            expect_equal(
                f"output shape: the skip's spatial size with {f} channels",
                (None, *skip_shape[:3], f),
                tuple(build(pool_size).output.shape),
            )

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
            expect_equal(
                f"parameters: transposed conv {p} ({n}*{f}*{cx} + {f}) + conv block on {f} + {cs} "
                f"channels (27*{f + cs}*{f} + {f}) + (27*{f}*{f} + {f})",
                transposed + conv1 + conv2,
                got,
                hint,
            )

        return body

    def computes(pool_size):
        def body():
            model = build(pool_size)
            p = (2, 2, 2) if pool_size is None else pool_size
            k1, k2 = _random_kernels(rng, (3, 3, 3, f + cs, f), (3, 3, 3, f, f))
            kt = rng.normal(size=(*p, f, cx)) / np.sqrt(cx)  # unit-variance up-sampled values
            _set_known_weights(
                model,
                {kt.shape: kt, k1.shape: k1, k2.shape: k2},
                "upsampling_block",
                skip_hint=[kt.shape, (3, 3, 3, f, f), k2.shape],
            )
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
                        got, _block_np(np.concatenate(pair, -1), k1, k2, None), rtol=1e-2, atol=1e-2
                    ):
                        return "an activation on the transposed convolution: it up-samples linearly"
                return _activation_hint(got)

            _expect_block(f"output with known weights, pool_size={p}", options, got, hint)

        return body

    def normalization():
        got = build(None, "batch").count_params()
        plain = 8 * f * cx + f + 27 * (f + cs) * f + f + 27 * f * f + f
        expect_equal(
            "parameters with normalization='batch': the conv block without bias, with 2 x 4 x "
            f"{f} BatchNormalization parameters",
            plain - 2 * f + 8 * f,
            got,
            "normalization is not passed on to conv_block" if got == plain else "",
        )

    default, other = cases
    run.test("output has the skip's spatial size and `filters` channels", out_shape(default))
    run.test("transposed convolution (kernel = stride = pool_size), concatenation, conv block", params(default))
    run.test("up-samples linearly, concatenates the skip, then conv block (known weights)", computes(default))
    run.test(f"pool_size={other} sets the up-sampling factor per axis", out_shape(other))
    run.test(f"pool_size={other}: parameters and output", lambda: (params(other)(), computes(other)()))
    run.test("normalization is applied in the conv block", normalization)


# The public checks the lesson calls


def check_conv_block(conv_block: Callable) -> None:
    """Public tests of ``conv_block``: prints ✔/✘ lines, raises ExerciseCheckError on failure."""
    run_check("conv_block", conv_block)


def check_upsampling_block(upsampling_block: Callable) -> None:
    """Public tests of ``upsampling_block``: prints ✔/✘ lines, raises ExerciseCheckError on failure."""
    run_check("upsampling_block", upsampling_block)
