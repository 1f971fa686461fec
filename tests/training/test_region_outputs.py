"""Region-based outputs (issue 26): WT / TC / ET targets through the pipeline, the loss and metrics on them,
the run folder's output kind (old folders mean classes), prediction and ensembles of such models."""

import json
import shutil
from dataclasses import replace

import nibabel as nib
import numpy as np
import pytest

from utils.config import preset
from utils.data.labels import label_to_regions, one_hot
from utils.inference.postprocessing import (
    PostProcessing,
    PostProcessingError,
    keep_largest_component,
    read_postprocessing,
    write_postprocessing,
)
from utils.inference.predict import choose_for_run
from utils.inference.predict import main as predict_main
from utils.inference.sliding_window import predict_case, probabilities_to_labels
from utils.model.losses import batch_dice_bce_loss, dice_bce_loss, pooled_dice_metrics
from utils.preprocessing.plan import PLAN_FILE, PlanError, default_plan, make_plan, read_plan, write_plan
from utils.training.cache import build_cache
from utils.training.pipeline import PatchSampler
from utils.training.train import train
from utils.visualization.report import run_description


@pytest.fixture()
def workdir(tmp_path, monkeypatch):
    monkeypatch.setenv("COURSE_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("COURSE_MODE", "ci")
    return tmp_path


def test_region_targets_through_the_pipeline(phantom_root, tmp_path):
    cache = build_cache(phantom_root, tmp_path / "cache", progress=False)
    args = (cache, cache.case_ids, (32, 32, 16))
    classes = PatchSampler(*args, foreground_fraction=1.0, outputs="classes")
    regions = PatchSampler(*args, foreground_fraction=1.0, outputs="regions")
    totals = np.zeros(3)
    for seed in range(6):  # the same draws (and augmentation): only the targets differ
        X1, y_classes = classes.sample(np.random.default_rng(seed))
        X2, y_regions = regions.sample(np.random.default_rng(seed))
        np.testing.assert_array_equal(X1, X2)
        assert y_regions.shape == y_classes.shape and y_regions.dtype == np.float32
        edema, core, enhancing = (y_classes[..., k] for k in range(3))
        np.testing.assert_array_equal(y_regions[..., 0], edema + core + enhancing)  # WT
        np.testing.assert_array_equal(y_regions[..., 1], core + enhancing)  # TC
        np.testing.assert_array_equal(y_regions[..., 2], enhancing)  # ET
        totals += y_regions.sum(axis=(0, 1, 2))
    assert totals[0] > totals[1] > totals[2] > 0, "tumour-centred patches hold nested regions"
    with pytest.raises(ValueError, match="outputs must be one of"):
        PatchSampler(*args, outputs="labels")


def test_loss_and_metrics_on_regions():
    label = np.zeros((1, 8, 8, 8), np.uint8)
    label[0, 2:6, 2:6, 2:6] = 1
    label[0, 3:5, 3:5, 3:5] = 2
    label[0, 3, 3, 3] = 3
    regions, classes = label_to_regions(label), one_hot(label)
    for loss in (dice_bce_loss, batch_dice_bce_loss):
        perfect = float(loss(regions, np.clip(regions, 1e-4, 1 - 1e-4)))
        # a class-channel answer against region targets: the core and enhancing voxels are missing from WT and TC
        wrong = float(loss(regions, np.clip(classes, 1e-4, 1 - 1e-4)))
        assert perfect < 0.01 < wrong
    names = [m.name for m in pooled_dice_metrics("regions")]
    assert names == ["pooled_dice", "pooled_dice_wt", "pooled_dice_tc", "pooled_dice_et"]
    metric = pooled_dice_metrics("regions")[1]
    metric.update_state(regions, regions)
    assert float(metric.result()) == pytest.approx(1.0)


def test_plan_round_trip_and_old_run_folders(tmp_path):
    config = preset("ci", outputs="regions")
    write_plan(tmp_path, make_plan(config, ["a"], ["b"]))
    assert read_plan(tmp_path).output_kind == "regions"
    assert make_plan(preset("ci"), ["a"], ["b"]).output_kind == "classes"
    old = default_plan((32, 32, 16)).to_json()
    del old["output_kind"]  # a run folder written without the field
    (tmp_path / PLAN_FILE).write_text(json.dumps(old))
    assert read_plan(tmp_path).output_kind == "classes"


def test_hierarchical_reconstruction():
    # WT, TC, ET probabilities: ET or TC without WT is nothing; ET without TC is only WT
    probs = np.array([[0.9, 0.1, 0.1], [0.9, 0.8, 0.1], [0.9, 0.8, 0.7], [0.1, 0.9, 0.9], [0.9, 0.2, 0.9]], np.float32)
    np.testing.assert_array_equal(probabilities_to_labels(probs, output_kind="regions"), [1, 2, 3, 0, 1])
    np.testing.assert_array_equal(probabilities_to_labels(probs, output_kind="classes"), [1, 2, 3, 3, 3])
    with pytest.raises(ValueError, match="3 region channels"):
        probabilities_to_labels(np.zeros((4, 2)), output_kind="regions")


class _Constant:
    """A stand-in model: every window predicts the same three probabilities."""

    input_shape = (None, 8, 8, 8, 4)

    def __init__(self, values):
        self.values = np.asarray(values, np.float32)

    def predict_on_batch(self, batch):
        return np.broadcast_to(self.values, (*batch.shape[:4], 3)).copy()


def test_ensemble_is_the_mean_and_needs_one_output_kind():
    image = np.zeros((12, 12, 10, 4), np.float32)
    image[2:10, 2:10, 2:8] = 1.0
    regions = replace(default_plan(window=(8, 8, 8)), output_kind="regions")
    a, b = _Constant([0.9, 0.7, 0.1]), _Constant([0.7, 0.5, 0.5])
    label, probs = predict_case([a, b], image, plan=[regions, regions], progress=False)
    np.testing.assert_allclose(probs[5, 5, 5], [0.8, 0.6, 0.3], atol=1e-6)
    assert label[5, 5, 5] == 2, "WT and TC pass, ET (0.3) does not: core"
    classes = default_plan(window=(8, 8, 8))
    with pytest.raises(PlanError, match="different output kinds"):
        predict_case([a, b], image, plan=[regions, classes], progress=False)
    with pytest.raises(ValueError, match="as many plans"):
        predict_case([a, b], image, plan=[regions], progress=False)


def test_train_and_predict_a_region_model(workdir, phantom_root, capsys):
    regions = train(
        preset("ci", output_dir=str(workdir / "regions"), outputs="regions", epochs=1, verbose=0), progress=False
    )
    assert read_plan(regions.output_dir).output_kind == "regions"
    assert {"pooled_dice_wt", "val_pooled_dice_et", "dice_tc"} <= set(regions.history.columns)
    assert json.loads((regions.output_dir / "config.json").read_text())["outputs"] == "regions"
    assert "region outputs WT / TC / ET" in run_description(regions.output_dir, "x")
    source = workdir / "data" / "phantom-ci" / "imagesTr" / "PHANTOM_001.nii.gz"
    model = str(regions.output_dir / "best.keras")
    seg = workdir / "seg.nii.gz"
    assert predict_main(["--model", model, "--input", str(source), "--output", str(seg), "--probabilities"]) == 0
    written = np.asarray(nib.load(seg).dataobj)
    probs = np.asarray(nib.load(workdir / "seg_probabilities.nii.gz").dataobj)
    expected = keep_largest_component(probabilities_to_labels(probs, output_kind="regions"))
    np.testing.assert_array_equal(written, expected)  # rebuilt hierarchically, then the largest tumour
    ensemble = workdir / "ensemble.nii.gz"
    assert predict_main(["--model", model, "--model", model, "--input", str(source), "--output", str(ensemble)]) == 0
    assert "ensemble of 2 runs (regions)" in capsys.readouterr().out
    np.testing.assert_array_equal(np.asarray(nib.load(ensemble).dataobj), written)  # the mean of one model twice
    classes = workdir / "classes"  # the same network, its run folder saying "classes"
    classes.mkdir()
    shutil.copy(model, classes / "best.keras")
    write_plan(classes, replace(read_plan(regions.output_dir), output_kind="classes"))
    mixed = ["--model", model, "--model", str(classes / "best.keras")]
    assert predict_main([*mixed, "--input", str(source), "--output", str(workdir / "x.nii.gz")]) == 2
    assert "different output kinds" in capsys.readouterr().err
    # post-processing chosen on validation cases of another dataset, never the run's held-out ones
    plan = read_plan(regions.output_dir)
    with pytest.raises(PostProcessingError, match="held-out"):
        choose_for_run(regions.output_dir, workdir / "data" / "phantom-ci", plan.validation_cases[:1], progress=False)
    assert predict_main(["--model", model, "--choose-postprocessing", str(phantom_root)]) == 0
    assert "recorded in" in capsys.readouterr().out
    recorded = json.loads((regions.output_dir / "postprocessing.json").read_text())
    assert recorded["chosen_on"]["cases"] == [f"PHANTOM_00{i}" for i in range(1, 6)] and read_postprocessing(
        regions.output_dir
    ) == PostProcessing(recorded["largest_component"], recorded["min_sizes_mm3"], recorded["et_to_core_mm3"])
    # the predict command applies the run's choice (here one that turns every enhancing voxel into core)
    write_postprocessing(regions.output_dir, PostProcessing(et_to_core_mm3=1e12), {"test": True}, [])
    post = workdir / "post.nii.gz"
    assert predict_main(["--model", model, "--input", str(source), "--output", str(post)]) == 0
    assert "enhancing tumour under 1e+12 mm^3 relabelled core" in capsys.readouterr().out
    assert not (np.asarray(nib.load(post).dataobj) == 3).any()
