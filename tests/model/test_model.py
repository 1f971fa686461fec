"""The U-Net builder (3-D and 2-D), its adaptive pooling, and .keras round trips."""

import keras
import numpy as np
import pytest

import utils
from utils.model.losses import CLASS_DICE_METRICS, dice_bce_loss, dice_coefficient, soft_dice_loss
from utils.model.unet import build_unet, level_table, pool_sizes, receptive_field


def _conv_params(k, cin, cout, bias=True):
    return k * cin * cout + (cout if bias else 0)


def test_default_3d_unet_matches_a_hand_count():
    model = build_unet()
    assert model.input.shape[1:] == (160, 160, 16, 4)
    assert model.output.shape[1:] == (160, 160, 16, 3)
    expected, cin = 0, 4
    filters = [32, 64, 128, 256]
    for f in filters:  # encoder and bottom: two 3x3x3 convolutions
        expected += _conv_params(27, cin, f) + _conv_params(27, f, f)
        cin = f
    for f in reversed(filters[:-1]):  # decoder: transpose 2x2x2, concat, two convolutions
        expected += _conv_params(8, cin, f) + _conv_params(27, 2 * f, f) + _conv_params(27, f, f)
        cin = f
    expected += _conv_params(1, 32, 3)
    assert model.count_params() == expected == 5_602_371
    assert model.layers[-1].activation.__name__ == "sigmoid"
    table = level_table(model)
    assert table.loc["bottom", "output shape"] == (20, 20, 2, 256)
    assert table.loc["total", "parameters"] == expected


def test_2d_unet_from_the_same_builder():
    model = build_unet((240, 240, 4), depth=4, base_filters=32)
    assert model.output.shape[1:] == (240, 240, 3)
    assert [type(layer).__name__ for layer in model.layers].count("Conv2D") == 15
    assert not any("3D" in type(layer).__name__ for layer in model.layers)
    x = np.random.default_rng(0).normal(size=(1, 240, 240, 4)).astype(np.float32)
    y = model.predict(x, verbose=0)
    assert y.shape == (1, 240, 240, 3) and 0 <= y.min() and y.max() <= 1


def test_pooling_adapts_and_bad_shapes_are_refused():
    assert pool_sizes((160, 160, 16), 4) == [(2, 2, 2)] * 3
    assert pool_sizes((160, 160, 16), 5) == [(2, 2, 2)] * 3 + [(2, 2, 1)]
    assert pool_sizes((64, 64, 4), 4) == [(2, 2, 2), (2, 2, 1), (2, 2, 1)]
    model = build_unet((32, 32, 8, 4), depth=5, base_filters=4)
    assert model.output.shape[1:] == (32, 32, 8, 3)
    with pytest.raises(
        ValueError,
        match=r"axis 0 has 75 voxels at level 1, which cannot be halved cleanly; "
        r"with depth 4 use sizes divisible by 8 \(e.g. 144 or 152\)",
    ):
        build_unet((150, 160, 16, 4), depth=4)
    with pytest.raises(ValueError, match="depth must be at least 2"):
        build_unet(depth=1)
    with pytest.raises(ValueError, match=r"input_shape must be \(x, y, z, C\) or \(x, y, C\)"):
        build_unet((16, 4))
    with pytest.raises(ValueError, match="normalization must be one of"):
        build_unet((16, 16, 16, 4), normalization="layer")


@pytest.mark.parametrize(
    "normalization,upsampling", [("batch", "transpose"), ("instance", "upsample"), (None, "upsample")]
)
def test_options_build_and_run(normalization, upsampling):
    model = build_unet((16, 16, 8, 4), depth=3, base_filters=4, normalization=normalization, upsampling=upsampling)
    names = [type(layer).__name__ for layer in model.layers]
    assert ("BatchNormalization" in names) == (normalization == "batch")
    assert ("GroupNormalization" in names) == (normalization == "instance")
    assert ("UpSampling3D" in names) == (upsampling == "upsample")
    y = model.predict(np.ones((2, 16, 16, 8, 4), np.float32), verbose=0)
    assert y.shape == (2, 16, 16, 8, 3)


def test_receptive_field():
    # depth 2: 2 convs (5), pool (+1 -> 6), 2 convs at stride 2 (+8 -> 14), 2 convs at stride 1 (+4 -> 18)
    assert receptive_field(2) == 18
    assert receptive_field(4) > receptive_field(3) > receptive_field(2)


def test_keras_round_trip_without_custom_objects(tmp_path):
    model = build_unet((16, 16, 8, 4), depth=3, base_filters=4)
    model.compile(optimizer="adam", loss=soft_dice_loss, metrics=[dice_coefficient, *CLASS_DICE_METRICS])
    x = np.random.default_rng(1).normal(size=(2, 16, 16, 8, 4)).astype(np.float32)
    y = (np.random.default_rng(2).random((2, 16, 16, 8, 3)) < 0.2).astype(np.float32)
    model.fit(x, y, epochs=1, verbose=0)
    path = tmp_path / "unet.keras"
    model.save(path)
    loaded = keras.models.load_model(path)  # no custom_objects: the loss and metrics are registered
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-6)
    assert loaded.loss is soft_dice_loss
    results = loaded.evaluate(x, y, verbose=0, return_dict=True)
    assert {"loss", "dice_coefficient", "dice_edema", "dice_non_enhancing", "dice_enhancing"} <= set(results)
    assert utils.load_model(path).count_params() == model.count_params()
    other = build_unet((16, 16, 8, 4), depth=3, base_filters=4)
    other.compile(optimizer="adam", loss=dice_bce_loss)
    other.save(tmp_path / "bce.keras")
    assert keras.models.load_model(tmp_path / "bce.keras").loss is dice_bce_loss
