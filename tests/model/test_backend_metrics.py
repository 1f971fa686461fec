"""TensorFlow start-up filtering, the pooled Dice that selects best.keras, and its learning curves."""

from __future__ import annotations

import numpy as np
import pytest

from utils.backend import filter_startup_lines
from utils.model.losses import PooledDice, pooled_dice_metrics

NOTICES = """WARNING: All log messages before absl::InitializeLog() is called are written to STDERR
I0000 00:00:1795312717.740834    5970 port.cc:153] oneDNN custom operations are on. You may see slightly different numerical results.
I0000 00:00:1795312717.741863    5970 cudart_stub.cc:31] Could not find cuda drivers on your machine, GPU will not be used.
I0000 00:00:1795312717.945110    5970 cpu_feature_guard.cc:227] This TensorFlow binary is optimized to use available CPU instructions in performance-critical operations.
To enable the following instructions: AVX2 AVX512F FMA, in other operations, rebuild TensorFlow with the appropriate compiler flags.
E0000 00:00:1795312725.466109    5970 cuda_platform.cc:52] failed call to cuInit: INTERNAL: CUDA error: Failed call to cuInit: UNKNOWN ERROR (303)
"""


def test_startup_notices_are_dropped_and_real_errors_kept():
    real = "E0000 00:00:1.0 1 some_op.cc:12] Could not load dynamic library 'libcudnn.so.9'\n"
    assert filter_startup_lines(NOTICES) == ""
    assert (
        filter_startup_lines(NOTICES + real + "Traceback (most recent call last):\n")
        == real + "Traceback (most recent call last):\n"
    )


def test_cuinit_error_is_kept_on_a_machine_with_a_driver():
    cuinit = NOTICES.splitlines(keepends=True)[-1]
    assert filter_startup_lines(cuinit) == cuinit  # no "could not find cuda drivers": a real error


def _one_hot(labels: np.ndarray) -> np.ndarray:
    return np.stack([labels == k for k in (1, 2, 3)], axis=-1).astype("float32")


def test_pooled_dice_pools_over_patches_and_ignores_classes_absent_from_both():
    truth = np.zeros((2, 4, 4, 2), np.int64)
    truth[0, :2, :2, :] = 1  # patch 0: 8 voxels of edema, no other class
    truth[1, :2, :, :] = 3  # patch 1: 16 voxels of enhancing tumour
    pred = np.zeros_like(truth)
    pred[0, :2, :1, :] = 1  # 4 of the 8 edema voxels
    pred[1, :2, :, :] = 3
    pred[1, 3, 3, 0] = 1  # one false-positive edema voxel in patch 1
    y_true, y_pred = _one_hot(truth), _one_hot(pred) * 0.9  # probabilities above the threshold
    metric = PooledDice(0)
    metric.update_state(y_true[:1], y_pred[:1])
    metric.update_state(y_true[1:], y_pred[1:])
    # edema pooled over both patches: 2 * 4 / (8 + 5)
    assert float(metric.result()) == pytest.approx(8 / 13, abs=1e-6)
    mean = PooledDice()
    mean.update_state(y_true, y_pred)
    # classes: edema 8/13, non-enhancing absent everywhere (1, BraTS convention), enhancing 1
    assert float(mean.result()) == pytest.approx((8 / 13 + 1 + 1) / 3, abs=1e-6)
    mean.reset_state()
    mean.update_state(y_true, np.zeros_like(y_pred))
    assert float(mean.result()) == pytest.approx(1 / 3, abs=1e-6)  # only the absent class scores 1


def test_pooled_dice_metric_names_match_the_training_log():
    assert [m.name for m in pooled_dice_metrics()] == [
        "pooled_dice",
        "pooled_dice_edema",
        "pooled_dice_non_enhancing",
        "pooled_dice_enhancing",
    ]


def test_learning_curves_use_the_class_colours_and_label_their_axes():
    import matplotlib

    matplotlib.use("Agg")
    import pandas as pd
    from matplotlib.colors import to_rgb

    from utils.data.labels import CLASS_COLORS, CLASS_NAMES
    from utils.visualization.figures import plot_learning_curves

    keys = ["loss", "val_loss", "val_pooled_dice"] + [
        f"val_{kind}_{k}" for kind in ("dice", "pooled_dice") for k in ("edema", "non_enhancing", "enhancing")
    ]
    history = pd.DataFrame({"epoch": [0, 1, 2], **{k: [0.2, 0.5, 0.6] for k in keys}})
    fig = plot_learning_curves(history, "dice_bce", best_epoch=3)
    loss_ax, dice_ax = fig.axes
    colours = {line.get_label(): to_rgb(line.get_color()) for line in dice_ax.get_lines()}
    for name, colour in zip(CLASS_NAMES, CLASS_COLORS):
        assert colours[f"{name}, pooled"] == colour and colours[f"{name}, mean per patch"] == colour
    assert loss_ax.get_ylabel() == "loss (dice_bce)" and dice_ax.get_ylabel() == "validation Dice"
    assert loss_ax.get_xlabel() == dice_ax.get_xlabel() == "epoch"
