"""The grader's wire format: values to and from a grading kernel, as JSON that cannot run code.

The grader (:mod:`utils.course.grade`) calls a learner's function in the learner's
sandboxed kernel with :func:`encode`-d arguments and :func:`decode`-s what
comes back. Only plain data crosses: ``None``, booleans, numbers, text, lists,
tuples, dicts with text keys, NumPy arrays of numbers or booleans (raw bytes,
never pickles), tensors (as arrays, rebuilt with the receiver's
``tensor`` function) and pandas DataFrames of numbers (columns, index, values).
Anything else travels as a description of its type, which the receiver cannot
mistake for a value. :func:`decode` bounds sizes and depth, so hostile JSON
gives a :class:`WireError`, never a crash or a huge allocation.
"""

from __future__ import annotations

import base64
import json
import sys
from collections.abc import Callable
from typing import Any

import numpy as np

MAX_DEPTH = 32
MAX_BYTES = 64 << 20  # largest array decoded
_KINDS = "biuf"  # bool, signed, unsigned, float


try:
    from ..errors import CourseError
except ImportError:  # the grading kernel's copy of this module stands alone (utils.course.sandbox.WIRE)

    class CourseError(Exception):  # noqa: N818 - stands for utils.errors.CourseError
        """The course's error base (stand-in)."""


class WireError(CourseError, ValueError):
    """A message that is not in the wire format (or too large, or too deep)."""


class Opaque:
    """A value of a type the wire does not carry: only its type name and a short text came across."""

    def __init__(self, type_name: str, text: str):
        self.type_name, self.text = type_name[:100], text[:200]

    def __repr__(self) -> str:
        return f"<{self.type_name}: {self.text}>"


def _is_tensor(value: Any) -> bool:
    if "keras" not in sys.modules or isinstance(value, np.ndarray):
        return False
    from keras import ops

    try:
        return bool(ops.is_tensor(value))
    except Exception:  # noqa: BLE001 - a strange object is simply not a tensor
        return False


def _array(value: np.ndarray) -> dict:
    value = np.array(value, order="C", copy=True)  # (ascontiguousarray would make a 0-d array 1-d)
    if value.dtype.kind not in _KINDS:
        raise WireError(f"arrays of dtype {value.dtype} are not carried")
    return {"dtype": value.dtype.str, "shape": list(value.shape), "data": base64.b64encode(value.tobytes()).decode()}


def _to(value: Any, depth: int) -> Any:
    if depth > MAX_DEPTH:
        raise WireError(f"nested deeper than {MAX_DEPTH} levels")
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, np.generic):
        return {"int": str(value)} if isinstance(value, int) else {"float": repr(float(value))}
    if isinstance(value, (np.ndarray, np.generic)):
        if np.asarray(value).dtype.kind not in _KINDS:
            return {"opaque": [f"numpy {np.asarray(value).dtype} array", ""]}
        return {"nd": _array(np.asarray(value)), "scalar": isinstance(value, np.generic)}
    if isinstance(value, (list, tuple)):
        return {type(value).__name__ if type(value) in (list, tuple) else "list": [_to(v, depth + 1) for v in value]}
    if isinstance(value, dict) and all(isinstance(k, str) for k in value):
        return {"dict": {k: _to(v, depth + 1) for k, v in value.items()}}
    if _is_tensor(value):
        from keras import ops

        return {"tensor": _array(np.asarray(ops.convert_to_numpy(value)))}
    if type(value).__name__ == "DataFrame" and type(value).__module__.startswith("pandas"):
        try:
            values = np.asarray(value.to_numpy(dtype=float))
            return {
                "df": {
                    "columns": [_to(_plain(c), depth + 1) for c in value.columns],
                    "index": [_to(_plain(i), depth + 1) for i in value.index],
                    "values": _array(values),
                }
            }
        except (TypeError, ValueError):
            pass
    try:
        text = repr(value)
    except Exception:  # noqa: BLE001 - a hostile __repr__
        text = ""
    return {"opaque": [f"{type(value).__module__}.{type(value).__name__}", text[:200]]}


def _plain(label: Any) -> Any:
    return label.item() if isinstance(label, np.generic) else label


def encode(value: Any) -> str:
    """``value`` as wire JSON text."""
    return json.dumps(_to(value, 0))


def _from_array(spec: Any) -> np.ndarray:
    if not isinstance(spec, dict) or set(spec) != {"dtype", "shape", "data"}:
        raise WireError("malformed array")
    try:
        dtype = np.dtype(str(spec["dtype"]))
    except TypeError:
        raise WireError(f"unknown dtype {str(spec['dtype'])[:40]!r}") from None
    shape = spec["shape"]
    if dtype.kind not in _KINDS or dtype.hasobject:
        raise WireError(f"arrays of dtype {dtype} are not carried")
    if not (isinstance(shape, list) and len(shape) <= 16 and all(type(n) is int and 0 <= n < 1 << 40 for n in shape)):
        raise WireError("malformed array shape")
    if not isinstance(spec["data"], str) or len(spec["data"]) > MAX_BYTES * 4 // 3 + 4:
        raise WireError("array data missing or over the size limit")
    size = int(np.prod(shape, dtype=object)) * dtype.itemsize
    if size > MAX_BYTES:
        raise WireError("array over the size limit")
    try:
        raw = base64.b64decode(spec["data"], validate=True)
    except ValueError:
        raise WireError("array data is not base64") from None
    if len(raw) != size:
        raise WireError(f"array data holds {len(raw)} bytes; its shape and dtype need {size}")
    return np.frombuffer(raw, dtype=dtype).reshape(shape).copy()


def _from(data: Any, depth: int, tensor: Callable[[np.ndarray], Any] | None) -> Any:
    if depth > MAX_DEPTH:
        raise WireError(f"nested deeper than {MAX_DEPTH} levels")
    if data is None or isinstance(data, (bool, str)):
        return data
    if not isinstance(data, dict) or not data:
        raise WireError(f"unexpected {type(data).__name__}")
    kind = next(iter(data))
    body = data[kind]
    if kind == "int" and isinstance(body, str) and len(body) < 400:
        return int(body)
    if kind == "float" and isinstance(body, str) and len(body) < 40:
        return float(body)
    if kind in ("list", "tuple") and isinstance(body, list):
        items = [_from(v, depth + 1, tensor) for v in body]
        return items if kind == "list" else tuple(items)
    if kind == "dict" and isinstance(body, dict):
        return {str(k): _from(v, depth + 1, tensor) for k, v in body.items()}
    if kind == "nd":
        array = _from_array(body)
        return array[()] if data.get("scalar") is True and array.ndim == 0 else array
    if kind == "tensor":
        array = _from_array(body)
        return tensor(array) if tensor else array
    if kind == "df" and isinstance(body, dict):
        import pandas as pd

        if not (isinstance(body.get("columns"), list) and isinstance(body.get("index"), list)):
            raise WireError("a table's columns and index must be lists")
        columns = [_from(c, depth + 1, None) for c in body["columns"]]
        index = [_from(i, depth + 1, None) for i in body["index"]]
        values = _from_array(body.get("values"))
        if values.shape != (len(index), len(columns)):
            raise WireError("table values do not match its rows and columns")
        return pd.DataFrame(values, index=index, columns=columns)
    if kind == "opaque" and isinstance(body, list) and len(body) == 2:
        return Opaque(str(body[0]), str(body[1]))
    raise WireError(f"unknown value kind {str(kind)[:40]!r}")


def decode(text: str | bytes, tensor: Callable[[np.ndarray], Any] | None = None) -> Any:
    """The value :func:`encode` wrote (``tensor(array)`` rebuilds tensors; plain arrays without it).

    Raises:
        WireError: not wire JSON, too deep, or too large.
    """
    if len(text) > 2 * MAX_BYTES:
        raise WireError("message over the size limit")
    try:
        data = json.loads(text)
    except (ValueError, RecursionError) as err:
        raise WireError(f"not JSON: {str(err)[:100]}") from None
    try:
        return _from(data, 0, tensor)
    except WireError:
        raise
    except (ArithmeticError, LookupError, TypeError, ValueError, RecursionError, MemoryError) as err:
        # whatever else a hostile structure trips (a table's columns that are not a list, a shape NumPy refuses)
        raise WireError(f"not a value of the wire format ({type(err).__name__}: {str(err)[:100]})") from None


# ----------------------------------------------------------------------------
# The kernel's side: answer one call from the grader
# ----------------------------------------------------------------------------

MIME = "application/x-course-grade+json"
"""The display-data type of a call's answer (the grader reads only this output of the call's cell)."""


def keras_tensor(array: np.ndarray) -> Any:
    """``array`` as a tensor of Keras' backend (how both sides rebuild the tensors that cross)."""
    from keras import ops

    return ops.convert_to_tensor(array)


def _raised(err: BaseException) -> list[str]:
    """``[type name, message, "(your line N: code)", nearest builtin base]`` of the learner's exception."""
    import traceback

    line = ""
    for frame in traceback.extract_tb(err.__traceback__):
        name = frame.filename
        if "site-packages" in name or "/lib/python" in name or name.startswith("<frozen") or "/course/" in name:
            continue
        line = f"(your line {frame.lineno}: {frame.line.strip()})" if frame.line else f"(your line {frame.lineno})"
    base = next(c.__name__ for c in type(err).__mro__ if c.__module__ == "builtins")
    return [type(err).__name__, str(err)[:1000], line, base]


def snapshot(value: Any, depth: int = 0) -> Any:
    """A comparable copy of the arrays, lists, tuples and dicts in ``value`` (arrays by dtype, shape and bytes; NaN
    equals itself): a function changed its arguments in place when their snapshots before and after differ."""
    if isinstance(value, np.ndarray):
        return ("nd", value.dtype.str, value.shape, value.tobytes())
    if depth < MAX_DEPTH and isinstance(value, (list, tuple)):
        return (type(value).__name__, tuple(snapshot(v, depth + 1) for v in value))
    if depth < MAX_DEPTH and isinstance(value, dict):
        return ("dict", tuple((repr(k), snapshot(v, depth + 1)) for k, v in value.items()))
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return ("float", repr(value))
    return ("object", id(value))


def answer(request: str, namespace: dict) -> None:
    """Run in the learner's kernel: call the function the grader names on the arguments it sends.

    ``request`` is wire JSON of ``{"name", "args", "kwargs", "seed"}`` (or
    ``{"probe": name}`` to ask what ``name`` is). The answer is published as
    display data of type :data:`MIME`: ``{"ok": value}`` or ``{"raised": [type,
    message, line]}``, whether the function changed its arguments in place
    (``changed``: the grader fails that call) and the warnings it emitted. Whatever runs here is the learner's: the grader
    trusts none of it beyond "this is what the function returned".
    """
    import difflib
    import random
    import warnings

    from IPython.display import publish_display_data

    req = decode(request, tensor=keras_tensor)
    if "probe" in req:
        name = req["probe"]
        fn = namespace.get(name)
        defined = [
            k
            for k, v in namespace.items()
            if callable(v) and not k.startswith("_") and getattr(v, "__module__", None) == "__main__"
        ]
        reply = {
            "defined": fn is not None,
            "callable": callable(fn),
            "type": type(fn).__name__,
            "module": str(getattr(fn, "__module__", "") or ""),
            "close": difflib.get_close_matches(name, defined, n=3, cutoff=0.6),
        }
    elif "run" in req:
        reply = _run_model(req)
    else:
        if req.get("seed") is not None:
            np.random.seed(req["seed"])
            random.seed(req["seed"])
        # tuples: a function that walks up to this frame cannot change what the answer is built from
        fn, build, args, kwargs = namespace[req["name"]], req.get("build"), tuple(req["args"]), req["kwargs"]
        watched = (args, tuple(kwargs.values()))  # the objects the function gets (never the kwargs dict itself)
        before = snapshot(watched)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                if build:
                    reply = _build_model(fn, build, list(args), kwargs)
                else:
                    reply = {"ok": fn(*args, **kwargs)}
            except Exception as err:  # noqa: BLE001 - the learner's error goes back to the grader
                reply = {"raised": _raised(err)}
        reply["changed"] = snapshot(watched) != before  # only whether: the grader never takes these values
        reply["warnings"] = [[w.category.__name__, str(w.message)[:300]] for w in caught[:5]]
    try:
        text = encode(reply)
    except Exception as err:  # noqa: BLE001 - e.g. an array of strings
        text = encode({"raised": ["TypeError", f"the value cannot be sent to the grader: {err}", ""]})
    publish_display_data({MIME: text})


# Keras blocks (lesson 03): the grader holds a stand-in layer with the same weights; the model lives here.
_MODELS: list[Any] = []


def _build_model(fn: Callable, build: list, args: list, kwargs: dict) -> dict:
    """Call ``fn`` on symbolic inputs of the shapes the grader gives (at the argument positions it gives).

    Returns ``{"model": id, "output_shape", "weights": [[name, shape, trainable], ...]}``
    (the model kept here for :func:`_run_model`), or ``{"ok": value}`` when ``fn``
    does not return a Keras tensor.
    """
    import keras

    inputs = []
    for index, shape in build:
        inputs.append(keras.Input(tuple(shape)))
        args[index] = inputs[-1]
    out = fn(*args, **kwargs)
    if not isinstance(out, keras.KerasTensor):
        return {"ok": out}
    model = keras.Model(inputs if len(inputs) > 1 else inputs[0], out)
    _MODELS.append(model)
    weights = [
        [str(getattr(v, "name", "")).split("/")[-1].split(":")[0], [int(d) for d in v.shape], bool(v.trainable)]
        for v in model.weights
    ]
    return {"model": len(_MODELS) - 1, "output_shape": list(out.shape), "weights": weights}


def _run_model(req: dict) -> dict:
    """Set the weights the grader sends on a model of :func:`_build_model` and return its output on the inputs."""
    from keras import ops

    try:
        model = _MODELS[int(req["run"])]
        for variable, value in zip(model.weights, req["weights"]):
            variable.assign(value)
        inputs = req["inputs"]
        out = model(inputs if len(inputs) > 1 else inputs[0], training=bool(req["training"]))
        return {"ok": np.asarray(ops.convert_to_numpy(out))}
    except Exception as err:  # noqa: BLE001 - the learner's model failed: their error goes back
        return {"raised": _raised(err)}
