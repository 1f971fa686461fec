"""Weight transfer into a model whose head differs (issue 30): by layer name, with a report and a proof."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from utils.config import pretrain_preset
from utils.model.transfer import TransferError, layer_weights, transfer_weights, weights_changed
from utils.model.unet import build_unet
from utils.training.pretrain import HEAD, restoration_unet


@pytest.fixture(scope="module")
def pair():
    config = pretrain_preset("ci", normalization="instance")
    source = restoration_unet(config)
    for layer in source.layers:  # weights no fresh initialisation could give, so an arrival is unmistakable
        if layer.weights:
            layer.set_weights([np.full(w.shape, 0.125, w.dtype) for w in layer.get_weights()])
    return config, source


def _segmentation(config, **kwargs):
    return build_unet((*config.patch_shape, 4), depth=config.depth, base_filters=config.base_filters,
                      normalization=config.normalization, **kwargs)  # fmt: skip


def test_every_layer_but_the_head_arrives_and_the_proof_says_so(pair, tmp_path):
    config, source = pair
    target = _segmentation(config)
    before = layer_weights(target)
    report = transfer_weights(target, source)
    status = dict(zip(report["layer"], report["status"]))
    assert status.pop("probabilities") == "skipped: not in source"
    assert set(status.values()) == {"loaded"} and len(status) == len(before) - 1
    proof = weights_changed(before, target, source).set_index("layer")
    assert (
        proof.drop(index="probabilities")["changed"].all() and proof.drop(index="probabilities")["equals_source"].all()
    )
    assert not proof.loc["probabilities", "changed"] and proof.loc["probabilities", "equals_source"] is None
    # the same from a .keras file, which keeps the layer names
    path = tmp_path / "pretrained.keras"
    source.save(path)
    again = _segmentation(config)
    report = transfer_weights(again, path, skip=("enc0_conv1",))
    assert dict(zip(report["layer"], report["status"]))["enc0_conv1"] == "skipped: asked"
    assert np.array_equal(
        again.get_layer("bottom_conv2").get_weights()[0], target.get_layer("bottom_conv2").get_weights()[0]
    )


def test_keras_load_weights_by_position_with_skip_mismatch_agrees_here(pair, tmp_path):
    config, source = pair
    h5 = tmp_path / "restoration.weights.h5"
    source.save_weights(h5)
    by_position = _segmentation(config)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        by_position.load_weights(h5, skip_mismatch=True)
    assert any("probabilities" in str(w.message) for w in caught)  # the head's shapes differ: skipped, with a warning
    by_name = _segmentation(config)
    transfer_weights(by_name, source)
    for name, values in layer_weights(by_name).items():
        if name != "probabilities":
            assert all(np.array_equal(a, b) for a, b in zip(values, layer_weights(by_position)[name])), name
    with pytest.raises(TransferError, match="by position.*skip_mismatch=True"):
        transfer_weights(by_name, h5)


def test_shapes_that_differ_are_skipped_and_nothing_matching_is_an_error(pair):
    config, source = pair
    wider = build_unet((*config.patch_shape, 4), depth=config.depth, base_filters=config.base_filters * 2,
                       normalization=config.normalization)  # fmt: skip
    with pytest.raises(TransferError, match="no layer .* matched"):
        transfer_weights(wider, source)
    assert HEAD not in {layer.name for layer in wider.layers}
