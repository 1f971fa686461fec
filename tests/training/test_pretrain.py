"""Self-supervised pretraining (issue 30): the Models Genesis distortions, the unlabelled data
(labels never read), the resumable run folder and its command line, and the fine-tuning experiment."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from utils.config import pretrain_preset
from utils.data.phantom import make_phantom_dataset
from utils.preprocessing.genesis import (
    distort,
    in_paint,
    local_pixel_shuffling,
    nonlinear_intensity,
    out_paint,
    shuffle_block,
    to_unit,
)
from utils.safety import UnsafeWriteError
from utils.training import pretrain as pretrain_module
from utils.training.finetune import (
    efficiency_table,
    label_efficiency_split,
    pretraining_gain,
    score_model,
    scoring_regions,
    training_cases,
)
from utils.training.pretrain import HEAD, main, pretrain, restoration_unet, unlabelled_sources


def _patch(seed=0, shape=(12, 10, 8, 4)):
    return np.random.default_rng(seed).random(shape).astype(np.float32)


# ----------------------------------------------------------------------------
# Distortions
# ----------------------------------------------------------------------------


def test_shuffle_block_shuffles_each_channel_inside_the_block_only():
    x = np.arange(12 * 10 * 8 * 4, dtype=np.float32).reshape(12, 10, 8, 4)
    out = shuffle_block(x, (2, 3, 1), (4, 3, 5), seed=5)
    inside = (slice(2, 6), slice(3, 6), slice(1, 6))
    outside = np.ones(x.shape[:3], bool)
    outside[inside] = False
    assert out.shape == x.shape and out.dtype == x.dtype
    np.testing.assert_array_equal(out[outside], x[outside])
    for c in range(4):  # each channel keeps its own values, in another order
        assert sorted(out[inside][..., c].ravel()) == sorted(x[inside][..., c].ravel())
        assert not np.array_equal(out[inside][..., c], x[inside][..., c])
    orders = [np.argsort(out[inside][..., c].ravel()) for c in range(4)]
    assert not all(np.array_equal(orders[0], o) for o in orders[1:])  # channels shuffled independently
    np.testing.assert_array_equal(out, shuffle_block(x, (2, 3, 1), (4, 3, 5), seed=5))  # the seed decides
    assert not np.array_equal(out, shuffle_block(x, (2, 3, 1), (4, 3, 5), seed=6))
    np.testing.assert_array_equal(x, np.arange(x.size, dtype=np.float32).reshape(x.shape))  # input untouched


def test_nonlinear_intensity_is_monotonic_per_channel_and_stays_in_the_unit_range():
    x = _patch(1)
    rng = np.random.default_rng(3)
    out = nonlinear_intensity(x, rng)
    assert out.min() >= 0 and out.max() <= 1
    for c in range(4):
        order = np.argsort(x[..., c].ravel())
        values = out[..., c].ravel()[order]
        assert np.all(np.diff(values) >= -1e-6) or np.all(np.diff(values) <= 1e-6)
    directions = set()
    for seed in range(20):  # increasing and, half of the time, decreasing curves
        y = nonlinear_intensity(x[..., :1], np.random.default_rng(seed))
        directions.add(bool(np.corrcoef(x[..., 0].ravel(), y[..., 0].ravel())[0, 1] > 0))
    assert directions == {True, False}


def test_local_pixel_shuffling_moves_values_only_within_small_blocks():
    x = _patch(2, (20, 20, 10, 4))
    out = local_pixel_shuffling(x, np.random.default_rng(0), blocks=1)
    for c in range(4):
        np.testing.assert_allclose(np.sort(out[..., c].ravel()), np.sort(x[..., c].ravel()))
    many = local_pixel_shuffling(x, np.random.default_rng(0))
    changed = np.any(many != x, axis=-1)
    assert 0.05 < changed.mean() < 0.95  # many small blocks, not the whole patch
    assert np.all(np.isin(many, x))  # nothing new: every value comes from the patch


def test_in_painting_and_out_painting_follow_models_genesis():
    x = np.full((21, 21, 14, 4), 0.5, np.float32)
    inpainted = in_paint(x, np.random.default_rng(1))
    noisy = inpainted != 0.5
    assert 0 < noisy.mean() < 0.9 and inpainted.min() >= 0 and inpainted.max() <= 1
    outpainted = out_paint(x, np.random.default_rng(1))
    kept = np.all(outpainted == 0.5, axis=-1)
    # noise everywhere except windows of 3/7 to 4/7 of each axis
    assert 0.05 < kept.mean() < 0.9
    box = np.argwhere(kept)
    assert np.all(box.max(axis=0) - box.min(axis=0) + 1 >= np.array([9, 9, 6]))


def test_distort_keeps_each_channel_in_its_own_intensity_range():
    patch = np.random.default_rng(4).normal(size=(16, 16, 16, 4)).astype(np.float32) * [1, 2, 3, 4]
    for seed in range(6):
        out, applied = distort(patch, np.random.default_rng(seed), pretrain_preset("ci"))
        assert out.shape == patch.shape and out.dtype == np.float32
        lo, hi = patch.min(axis=(0, 1, 2)), patch.max(axis=(0, 1, 2))
        assert np.all(out.min(axis=(0, 1, 2)) >= lo - 1e-4) and np.all(out.max(axis=(0, 1, 2)) <= hi + 1e-4)
        assert set(applied) <= {"local pixel shuffling", "non-linear intensity", "in-painting", "out-painting"}
    unit, low, span = to_unit(patch)
    np.testing.assert_allclose(unit * span + low, patch, atol=1e-5)


# ----------------------------------------------------------------------------
# Unlabelled data, the run folder and the command line
# ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """Course data in a private folder (ci mode), with a tiny phantom whose label files are garbage:
    reading any of them would fail. Built once for the module's tests."""
    root = tmp_path_factory.mktemp("pretrain")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("COURSE_DATA_DIR", str(root / "data"))
        patch.setenv("COURSE_MODE", "ci")
        folder = make_phantom_dataset(root / "phantom", n_train=2, n_test=1, shape=(40, 40, 24), progress=False)
        for label in (folder / "labelsTr").glob("*.nii.gz"):
            label.chmod(0o644)
            label.write_bytes(b"not a NIfTI file: pretraining must never read a label")
        patch.setattr(pretrain_module, "get_dataset", lambda name, mode=None: folder)
        yield root


@pytest.fixture()
def corrupt_labels_phantom(env):
    return env / "phantom"


def _config(env, run="pretrain", **overrides):
    values = dict(output_dir=str(env / "runs" / run), extra_cases=1, verbose=0)
    return pretrain_preset("ci", **(values | overrides))


def test_pretraining_reads_images_only_never_a_label(corrupt_labels_phantom, env, monkeypatch):
    import utils.data.datasets as datasets

    opened = []
    real = datasets.load_nifti
    monkeypatch.setattr(datasets, "load_nifti", lambda path, *a, **k: opened.append(str(path)) or real(path, *a, **k))
    sources = unlabelled_sources(_config(env), progress=False)
    assert [c for _, c in sources] == ["PHANTOM_003", "PHANTOM_001"]
    extra = sources[1][0]
    assert (
        not list((extra / "labelsTr").glob("*")) and json.loads((extra / "dataset.json").read_text())["training"] == []
    )
    result = pretrain(_config(env, "labels", epochs=1), progress=False)
    assert opened and not any("labelsTr" in p for p in opened), opened
    assert all("imagesTs" in p for p in opened)
    assert len(result.history) == 1 and (result.output_dir / "best.keras").is_file()


def test_pretraining_resumes_refuses_other_parameters_and_foreign_folders(corrupt_labels_phantom, env, capsys):
    first = pretrain(_config(env, "resume", epochs=1), progress=False)
    again = pretrain(_config(env, "resume", epochs=2), progress=False)
    assert again.initial_epoch == 1 and list(again.history["epoch"]) == [0, 1]
    state = json.loads((first.output_dir / "state.json").read_text())
    assert state["epochs_done"] == 2 and state["monitor"] == "val_loss"
    with pytest.raises(ValueError, match="other parameters .*learning_rate"):
        pretrain(_config(env, "resume", epochs=3, learning_rate=0.5), progress=False)
    foreign = env / "thesis"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(UnsafeWriteError, match="not empty"):
        pretrain(_config(env, output_dir=str(foreign)), progress=False)
    assert (foreign / "notes.txt").read_text() == "mine"
    # the command line runs the same code with the same parameters, and resumes the same folder
    out = first.output_dir
    args = ["--mode", "ci", "--output-dir", str(out), "--extra-cases", "1", "--verbose", "0"]
    assert main([*args, "--epochs", "3"]) == 0
    assert json.loads((out / "state.json").read_text())["epochs_done"] == 3
    assert main([*args, "--epochs", "3", "--learning-rate", "0.5"]) == 2
    assert "other parameters" in capsys.readouterr().err


def test_restoration_unet_shares_every_layer_name_but_its_head_with_the_segmentation_unet():
    from utils.model.unet import build_unet

    config = pretrain_preset("ci")
    restore = restoration_unet(config)
    seg = build_unet((*config.patch_shape, 4), depth=config.depth, base_filters=config.base_filters)
    mine = {layer.name for layer in restore.layers if layer.weights}
    theirs = {layer.name for layer in seg.layers if layer.weights}
    assert mine - theirs == {HEAD} and theirs - mine == {"probabilities"}
    assert restore.output_shape == (None, *config.patch_shape, 4)


# ----------------------------------------------------------------------------
# The fine-tuning experiment's bookkeeping
# ----------------------------------------------------------------------------


def test_label_efficiency_split_fixes_validation_and_held_out_cases_for_every_run():
    ids = [f"C{i:02d}" for i in range(16)]
    split = label_efficiency_split(ids, validation=2, held_out=4)
    assert split == label_efficiency_split(list(reversed(ids)), 2, 4)
    assert len(split["held_out"]) == 4 and len(split["validation"]) == 2 and len(split["pool"]) == 10
    assert not set(split["held_out"]) & set(split["validation"]) and not set(split["pool"]) & set(split["held_out"])
    for seed in (0, 1):
        sets = [training_cases(split["pool"], n, seed) for n in (1, 2, 4, 8)]
        assert all(set(a) < set(b) for a, b in zip(sets, sets[1:]))  # nested: more labels add cases
    assert training_cases(split["pool"], 4, 0) != training_cases(split["pool"], 4, 1)
    with pytest.raises(ValueError, match="at least 7 labelled cases"):
        label_efficiency_split(ids[:6], 2, 4)


def test_efficiency_table_and_gain_are_computed_from_the_scores():
    rows = []
    for n, bonus in ((1, 0.2), (2, -0.1)):
        for seed in (0, 1):
            for case, base in (("a", 0.4), ("b", 0.6)):
                rows.append({"arm": "scratch", "n": n, "seed": seed, "case": case, "WT": base, "TC": base, "ET": base})
                rows.append(
                    {
                        "arm": "pretrained",
                        "n": n,
                        "seed": seed,
                        "case": case,
                        "WT": base + bonus,
                        "TC": base,
                        "ET": base,
                    }
                )
    scores = pd.DataFrame(rows)
    table = efficiency_table(scores)
    assert table.loc[(1, "pretrained"), ("WT", "mean")] == pytest.approx(0.7)
    assert table.loc[(1, "scratch"), ("WT", "sd")] == pytest.approx(np.std([0.4, 0.6, 0.4, 0.6], ddof=1), abs=1e-3)
    gain = pretraining_gain(scores).set_index(["n", "region"])
    assert gain.loc[(1, "WT"), "gain"] == pytest.approx(0.2) and gain.loc[(1, "WT"), "wins"] == 4
    assert gain.loc[(2, "WT"), "gain"] == pytest.approx(-0.1) and gain.loc[(2, "WT"), "wins"] == 0
    assert gain.loc[(2, "TC"), "gain"] == pytest.approx(0.0) and gain.loc[(2, "TC"), "pairs"] == 4
    assert gain.loc[(1, "WT"), "verdict"] == "pretrained better by 0.200"
    assert gain.loc[(2, "WT"), "verdict"] == "scratch better by 0.100"
    assert gain.loc[(2, "TC"), "verdict"].startswith("no clear difference")
    assert gain.loc[(1, "WT"), "low"] == pytest.approx(0.2) == gain.loc[(1, "WT"), "high"]  # every pair differs by 0.2


def test_mask_bbox_is_the_box_of_the_true_voxels_widened_and_clipped():
    from utils.preprocessing.crop import brain_bbox, mask_bbox

    mask = np.zeros((20, 16, 12), bool)
    mask[5:8, 2:4, 9:11] = True
    assert mask_bbox(mask) == ((5, 8), (2, 4), (9, 11))
    assert mask_bbox(mask, 3) == ((2, 11), (0, 7), (6, 12))  # clipped at 0 and at the volume's end
    assert mask_bbox(np.zeros((4, 5, 6), bool), 2) == ((0, 4), (0, 5), (0, 6))  # empty: the whole volume
    image = np.zeros((20, 16, 12, 2), np.float32)
    image[5:8, 2:4, 9:11, 1] = 1.0
    assert brain_bbox(image, 3) == mask_bbox(mask, 3)


@pytest.fixture(scope="module")
def scored(tmp_path_factory):
    """Two labelled phantom cases, an untrained ci-size regions U-Net and its plan."""
    import keras

    from utils.config import preset
    from utils.data.datasets import list_cases
    from utils.preprocessing.plan import make_plan
    from utils.training.train import build_model

    folder = make_phantom_dataset(tmp_path_factory.mktemp("scored"), n_train=2, n_test=0, shape=(48, 44, 32),
                                  progress=False)  # fmt: skip
    config = preset("ci", patch_shape=(16, 16, 16), outputs="regions")
    keras.utils.set_random_seed(3)
    model = build_model(config)
    ids = list_cases(folder)
    return folder, ids, model, make_plan(config, ids, ids)


def test_scoring_the_whole_brain_equals_whole_scan_prediction(scored):
    """margin None: the regions are the brain crop, preprocessed once, and the Dice is predict_case's on the scan."""
    from utils.data.datasets import load_case
    from utils.evaluation.metrics import evaluate_cases
    from utils.inference.sliding_window import predict_case

    folder, ids, model, plan = scored
    regions = scoring_regions(folder, ids, plan)
    table = score_model(model, regions, plan)
    assert list(table.columns) == ["WT", "TC", "ET"] and list(table.index) == ids
    pairs = []
    for case_id in ids:
        case = load_case(folder, case_id)
        pairs.append(
            (case_id, case.label, predict_case(model, case.image, 0.0, progress=False, plan=plan)[0], case.spacing)
        )
        assert (regions[case_id][1] > 0).sum() == (case.label > 0).sum()  # the crop keeps every tumour voxel
    whole = evaluate_cases(pairs, with_hd95=False, lesion_wise=False)
    assert table["WT"].gt(0).all()  # the untrained network marks some tumour: not 0 = 0 by luck
    for region in ("WT", "TC", "ET"):
        np.testing.assert_allclose(table[region].to_numpy(), whole.loc[ids, f"Dice {region}"].to_numpy(), atol=1e-6)


def test_scoring_around_the_tumour_cuts_its_box_plus_the_margin(scored):
    from utils.data.datasets import load_case
    from utils.preprocessing.crop import brain_bbox, mask_bbox

    folder, ids, model, plan = scored
    brain = scoring_regions(folder, ids, plan)
    near = scoring_regions(folder, ids, plan, margin=2)
    for case_id in ids:
        image, label, _ = brain[case_id]
        box = mask_bbox(label > 0, 2)
        cut = tuple(slice(a, b) for a, b in box)
        assert near[case_id][0].shape == (*[b - a for a, b in box], 4)
        np.testing.assert_array_equal(near[case_id][0], image[cut])  # the brain's statistics, not the box's
        np.testing.assert_array_equal(near[case_id][1], label[cut])
        assert (near[case_id][1] > 0).sum() == (label > 0).sum()
        case = load_case(folder, case_id)
        assert image.shape[:3] == tuple(b - a for a, b in brain_bbox(case.image, plan.crop_margin))
    table = score_model(model, near, plan)
    assert table.shape == (len(ids), 3) and table.notna().all().all()
    with pytest.raises(ValueError, match="margin must be None"):
        scoring_regions(folder, ids, plan, margin=-1)
