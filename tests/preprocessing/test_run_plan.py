"""The run-folder contract (issue 23): training writes ``plan.json``; prediction and the split follow it."""

import json
import shutil

import nibabel as nib
import numpy as np
import pytest

import utils.preprocessing.crop as crop_module
import utils.preprocessing.transforms as transforms_module
from utils.data.labels import MODALITIES
from utils.inference.predict import main as predict_main
from utils.preprocessing.plan import PLAN_FILE, PlanError, default_plan, read_plan
from utils.preprocessing.transforms import INTENSITY_SCHEMES
from utils.training.train import prepare_data, preset, train


@pytest.fixture()
def workdir(tmp_path, monkeypatch):
    monkeypatch.setenv("COURSE_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("COURSE_MODE", "ci")
    return tmp_path


def _probabilities(model, source, out):
    args = ["--model", str(model), "--input", str(source), "--output", str(out), "--probabilities"]
    assert predict_main(args) == 0
    return np.asarray(nib.load(str(out).replace(".nii.gz", "_probabilities.nii.gz")).dataobj)


def test_training_records_the_plan_and_the_recorded_settings_win(workdir, monkeypatch, capsys):
    config = preset("ci", output_dir=str(workdir / "run"), epochs=1, verbose=0)
    result = train(config, progress=False)
    run = workdir / "run"
    recorded = json.loads((run / PLAN_FILE).read_text())
    shown = ["plan.json: " + json.dumps({k: v for k, v in recorded.items() if not k.endswith("_cases")})]
    assert recorded["channels"] == list(MODALITIES) and recorded["output_kind"] == "classes"
    assert recorded["intensity"] == "nonzero_zscore" and recorded["crop_margin"] == 2 and recorded["mode"] == "ci"
    assert recorded["patch_shape"] == recorded["window"] == list(config.patch_shape)
    assert recorded["labels"] == [1, 2, 3]
    assert (recorded["train_cases"], recorded["validation_cases"]) == (result.train_cases, result.val_cases)

    source = workdir / "data" / "phantom-ci" / "imagesTr" / "PHANTOM_001.nii.gz"
    before = _probabilities(run / "best.keras", source, workdir / "before.nii.gz")

    # the defaults change after training: another crop margin, another intensity scheme, another split seed
    monkeypatch.setattr(crop_module, "CROP_MARGIN", 9)
    monkeypatch.setitem(INTENSITY_SCHEMES, "minmax", lambda image: image / max(float(image.max()), 1e-6))
    monkeypatch.setattr(transforms_module, "DEFAULT_INTENSITY", "minmax")
    assert (default_plan().crop_margin, default_plan().intensity) == (9, "minmax")
    capsys.readouterr()
    after = _probabilities(run / "best.keras", source, workdir / "after.nii.gz")
    assert "note: no plan.json" not in capsys.readouterr().out
    np.testing.assert_array_equal(after, before)  # the recorded settings win
    shown.append(f"recorded plan, defaults changed: max |after - before| = {np.abs(after - before).max():.3g}")

    alone = workdir / "alone"  # the same model without its run folder: today's (changed) defaults, with a note
    alone.mkdir()
    shutil.copy(run / "best.keras", alone / "best.keras")
    capsys.readouterr()
    bare = _probabilities(alone / "best.keras", source, workdir / "bare.nii.gz")
    note = [line for line in capsys.readouterr().out.splitlines() if line.startswith("note:")]
    assert len(note) == 1 and "minmax, crop margin 9" in note[0], note
    assert np.abs(bare - before).max() > 1e-3  # the defaults did change what prediction does
    shown += [note[0], f"no plan, defaults changed: max |bare - before| = {np.abs(bare - before).max():.3g}"]

    # the split: lessons 06/07 and a resumed run read the recorded one, even with another seed
    _, _, train_ids, val_ids = prepare_data(preset("ci", output_dir=str(run), seed=7), progress=False)
    assert (train_ids, val_ids) == (result.train_cases, result.val_cases)
    shown.append(f"split with seed 7 asked for: the recorded one, validation {val_ids}")
    with capsys.disabled():  # the figures for the closing note (pytest -s shows them)
        print("\n" + "\n".join(shown))


def test_a_plan_the_course_cannot_follow_is_refused(tmp_path):
    good = default_plan((32, 32, 16)).to_json()
    (tmp_path / PLAN_FILE).write_text(json.dumps(good))
    assert read_plan(tmp_path).window == (32, 32, 16)
    for change, message in [
        ({"output_kind": "probabilities"}, "output kind 'probabilities' is unknown"),
        ({"intensity": "histogram"}, "intensity scheme 'histogram' is unknown"),
        ({"channels": ["T1w", "FLAIR", "T1gd", "T2w"]}, "the course reads the channels"),
    ]:
        (tmp_path / PLAN_FILE).write_text(json.dumps(good | change))
        with pytest.raises(PlanError, match=message):
            read_plan(tmp_path)
    (tmp_path / PLAN_FILE).write_text(json.dumps({"intensity": "nonzero_zscore"}))
    with pytest.raises(PlanError, match="not a course run plan"):
        read_plan(tmp_path)
    assert read_plan(tmp_path / "nowhere") is None
