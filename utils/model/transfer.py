"""Someone else's weights in your model: transfer by layer name, and proof that they arrived.

A pretrained network and the one you fine-tune rarely share a head: the
restoration U-Net of lesson 10 ends in 4 intensity channels, the segmentation
U-Net in 3 tumour classes. :func:`transfer_weights` copies, layer by layer,
the weights of every layer whose **name** and weight shapes agree, and says
which layers arrived and which were skipped (and why). :func:`layer_weights`
snapshots a model's weights so that :func:`weights_changed` can show, per
layer, that the copy really happened (the weights differ from before and
equal the source's).

Keras 3's own ``model.load_weights("x.weights.h5", skip_mismatch=True)``
matches layers **by position** (the file keys each layer by its class and
index, ``layers/conv3d_5``, not by its name) and skips, with a warning, a
layer whose number or shapes of weights differ. It works when the two
networks have the same layers in the same order; name matching also works
when layers were added or removed. A ``.keras`` archive holds the layer
names (its ``config.json``), so :func:`transfer_weights` takes a model or a
``.keras`` file.

Taught in lesson 10 (transfer learning).
"""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import pandas as pd

from ..errors import CourseError


class TransferError(CourseError, ValueError):
    """Weights that cannot be transferred (nothing matched, or not a model file)."""


def _source_model(source) -> keras.Model:
    if isinstance(source, keras.Model):
        return source
    path = Path(source)
    if path.suffix != ".keras":
        raise TransferError(
            f"expected a keras.Model or a .keras file (its layer names are needed to match layers by name); "
            f"found {path}. A .weights.h5 file keys layers by position: load it with "
            "model.load_weights(path, skip_mismatch=True) into a network with the same layer order"
        )
    if not path.is_file():
        raise TransferError(f"weights file not found: {path}")
    from .unet import load_model  # the course's checked loader (archive size limits, custom layers)

    return load_model(path, compile=False)


def layer_weights(model: keras.Model) -> dict[str, list[np.ndarray]]:
    """A copy of the weights of every layer that has weights, by layer name."""
    return {layer.name: [np.array(w) for w in layer.get_weights()] for layer in model.layers if layer.weights}


def transfer_weights(target: keras.Model, source, skip: tuple[str, ...] = ()) -> pd.DataFrame:
    """Copy into ``target`` the weights of every ``source`` layer with the same name and weight shapes.

    Args:
        target: the model to initialise (changed in place).
        source: a ``keras.Model`` or the path of a ``.keras`` file.
        skip: names of layers never copied (e.g. a head you want new).

    Returns:
        One row per ``target`` layer that has weights: ``layer``, ``status``
        (``"loaded"``, ``"skipped: not in source"``, ``"skipped: shapes differ"``
        or ``"skipped: asked"``), ``weights`` (number of values) and ``detail``.

    Raises:
        TransferError: not a model or ``.keras`` file, or no layer matched.
    """
    model = _source_model(source)
    by_name = {layer.name: layer for layer in model.layers if layer.weights}
    rows = []
    for layer in target.layers:
        if not layer.weights:
            continue
        size = int(sum(np.prod(w.shape) for w in layer.weights))
        theirs = by_name.get(layer.name)
        if layer.name in skip:
            status, detail = "skipped: asked", ""
        elif theirs is None:
            status, detail = "skipped: not in source", ""
        else:
            mine_shapes = [tuple(w.shape) for w in layer.weights]
            their_shapes = [tuple(w.shape) for w in theirs.weights]
            if mine_shapes != their_shapes:
                status, detail = "skipped: shapes differ", f"target {mine_shapes}, source {their_shapes}"
            else:
                layer.set_weights(theirs.get_weights())
                status, detail = "loaded", ""
        rows.append({"layer": layer.name, "status": status, "weights": size, "detail": detail})
    table = pd.DataFrame(rows, columns=["layer", "status", "weights", "detail"])
    if not (table["status"] == "loaded").any():
        raise TransferError(
            f"no layer of {getattr(source, 'name', source)} matched the target by name and shape; "
            f"target layers: {', '.join(table['layer'][:5])}..."
        )
    return table


def weights_changed(before: dict[str, list[np.ndarray]], model: keras.Model, source=None) -> pd.DataFrame:
    """Per layer: did its weights change since ``before`` (:func:`layer_weights`), and do they equal ``source``'s?

    Args:
        before: the snapshot taken before the transfer.
        model: the model after it.
        source: optionally the source model (or ``.keras`` path) to compare with.

    Returns:
        One row per layer with weights: ``layer``, ``changed`` (bool),
        ``equals_source`` (bool, or None without a source / a layer it lacks)
        and ``max_abs_change``.
    """
    after = layer_weights(model)
    theirs = layer_weights(_source_model(source)) if source is not None else {}
    rows = []
    for name, values in after.items():
        old = before.get(name, [])
        same_shapes = len(old) == len(values) and all(a.shape == b.shape for a, b in zip(old, values))
        change = max((float(np.max(np.abs(a - b))) for a, b in zip(old, values)), default=0.0) if same_shapes else None
        equal = None
        if name in theirs and len(theirs[name]) == len(values):
            equal = all(a.shape == b.shape and np.array_equal(a, b) for a, b in zip(theirs[name], values))
        rows.append(
            {
                "layer": name,
                "changed": bool(change is None or change > 0),
                "equals_source": equal,
                "max_abs_change": change,
            }
        )
    return pd.DataFrame(rows, columns=["layer", "changed", "equals_source", "max_abs_change"])
