"""Training end to end in CI mode: checkpoints, log, resume after a crash, refusal
to mix runs; the atomic checkpoint; the predict command line."""

import json
import shutil

import keras
import nibabel as nib
import numpy as np
import pytest

from utils.inference.predict import main as predict_main
from utils.training.train import Checkpoints, preset, train
from utils.training.train import main as train_main


@pytest.fixture()
def workdir(tmp_path, monkeypatch):
    monkeypatch.setenv("COURSE_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("COURSE_MODE", "ci")
    return tmp_path


class _Crash(keras.callbacks.Callback):
    """Kill the run in the middle of epoch ``epoch`` (0-based)."""

    def __init__(self, epoch):
        super().__init__()
        self.crash_epoch, self.current = epoch, 0

    def on_epoch_begin(self, epoch, logs=None):
        self.current = epoch

    def on_train_batch_end(self, batch, logs=None):
        if self.current == self.crash_epoch and batch == 1:
            raise KeyboardInterrupt("simulated crash mid-epoch")


def test_train_crash_and_resume(workdir, capsys):
    config = preset("ci", output_dir=str(workdir / "run"), epochs=3, verbose=0)
    with pytest.raises(KeyboardInterrupt):
        train(config, progress=False, callbacks=[_Crash(epoch=1)])
    out = workdir / "run"
    state = json.loads((out / "state.json").read_text())
    assert state["epochs_done"] == 1
    assert keras.models.load_model(out / "last.keras").count_params() > 0
    assert not list(out.glob(".*tmp*")), "no half-written checkpoint left"
    result = train(config, progress=False)
    assert result.initial_epoch == 1
    assert result.history["epoch"].tolist() == [0, 1, 2], "the log continues the epoch count"
    assert (result.history["epoch_seconds"] > 0).all(), "each epoch's wall time is logged (lesson 05 prints it)"
    assert json.loads((out / "state.json").read_text())["epochs_done"] == 3
    assert (out / "best.keras").is_file() and (out / "tensorboard").is_dir()
    assert len(result.train_cases) + len(result.val_cases) == 6 and set(result.train_cases).isdisjoint(result.val_cases)
    capsys.readouterr()
    again = train(config, progress=False)  # nothing left to do
    assert again.initial_epoch == 3 and len(again.history) == 3
    assert (
        "already holds a finished run (3 epochs, 3 asked for): nothing to train, reusing it" in capsys.readouterr().out
    )
    moved = workdir / "moved"  # a run folder moved elsewhere (e.g. to Drive) resumes there
    shutil.copytree(out, moved)
    more = train(preset("ci", output_dir=str(moved), epochs=4, verbose=0), progress=False)
    assert more.initial_epoch == 3 and more.history["epoch"].tolist() == [0, 1, 2, 3]
    assert len(train(config, progress=False).history) == 3, "the original run is untouched"
    with pytest.raises(ValueError, match=r"holds a run with other parameters \(patch_shape"):
        train(preset("ci", output_dir=str(out), patch_shape=(32, 32, 8), verbose=0), progress=False)


def test_checkpoint_write_is_atomic(workdir, monkeypatch):
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    out = workdir / "ckpt"
    out.mkdir()
    saver = Checkpoints(out)
    saver.set_model(model)
    saver.on_epoch_end(0, {"val_pooled_dice": 0.5})
    good = keras.models.load_model(out / "last.keras").get_weights()

    def broken_save(self, path, *args, **kwargs):
        with open(path, "wb") as fh:
            fh.write(b"half a file")
        raise OSError("disk full")

    monkeypatch.setattr(keras.Model, "save", broken_save)
    model.set_weights([w + 1 for w in model.get_weights()])
    with pytest.raises(OSError, match="disk full"):
        saver.on_epoch_end(1, {"val_pooled_dice": 0.6})
    monkeypatch.undo()
    for a, b in zip(keras.models.load_model(out / "last.keras").get_weights(), good):
        np.testing.assert_array_equal(a, b)  # the previous checkpoint survived intact


def test_train_cli_and_predict_cli(workdir, capsys):
    args = ["--mode", "ci", "--output-dir", str(workdir / "cli"), "--epochs", "1", "--verbose", "0"]
    assert train_main([*args, "--augmentation", "nnunet"]) == 0  # nnU-Net's augmentation in a real fit (issue 26)
    assert json.loads((workdir / "cli" / "config.json").read_text())["augmentation"] == "nnunet"
    model = workdir / "cli" / "best.keras"
    assert model.is_file()
    data = workdir / "data" / "phantom-ci"
    source = data / "imagesTr" / "PHANTOM_001.nii.gz"
    seg = workdir / "seg.nii.gz"
    assert predict_main(["--model", str(model), "--input", str(source), "--output", str(seg)]) == 0
    img, out = nib.load(source), nib.load(seg)
    np.testing.assert_array_equal(out.affine, img.affine)
    assert out.shape == img.shape[:3] and out.get_data_dtype() == np.uint8
    assert predict_main(["--model", str(model), "--input", str(source), "--output", str(seg)]) == 2
    assert "exists" in capsys.readouterr().err
    assert predict_main(["--model", str(model), "--input", str(source), "--output", str(source)]) == 2
    assert "refusing to overwrite the input" in capsys.readouterr().err
    results = workdir / "preds"
    assert predict_main(["--model", str(model), "--input-dir", str(data), "--output-dir", str(results)]) == 0
    table = (results / "metrics.csv").read_text().splitlines()
    assert table[0].startswith("case,Dice WT") and len(table) == 1 + 6 + 2  # 6 labelled cases, mean, median
    assert len(list(results.glob("PHANTOM_*.nii.gz"))) == 7  # 6 training + 1 test case
    # a model with other input channels
    other = keras.Sequential([keras.Input((32, 32, 16, 2)), keras.layers.Conv3D(3, 1, activation="sigmoid")])
    other.save(workdir / "two.keras")
    assert (
        predict_main(
            ["--model", str(workdir / "two.keras"), "--input", str(source), "--output", str(workdir / "x.nii.gz")]
        )
        == 2
    )
    assert "expects 2 input channels; the case has 4" in capsys.readouterr().err


def test_jit_compile_auto_is_off_on_a_cpu(monkeypatch):
    """XLA measured 4.5-8x slower per step on a CPU: "auto" must not turn it on there."""
    import utils.training.train as train_module

    monkeypatch.setattr(train_module, "gpu_count", lambda: 0)
    model = train_module.build_model(preset("ci"))
    assert model.jit_compile is False
    monkeypatch.setattr(train_module, "gpu_count", lambda: 1)
    assert train_module.build_model(preset("ci", jit_compile="off")).jit_compile is False
    assert train_module.build_model(preset("ci", jit_compile="on")).jit_compile is True


def test_a_run_from_an_older_course_version_is_not_silently_reused(workdir):
    config = preset("ci", output_dir=str(workdir / "old-run"))
    train(config, progress=False)
    state_path = workdir / "old-run" / "state.json"
    state = json.loads(state_path.read_text())
    state["monitor"] = "val_dice_coefficient"  # what runs saved before the pooled Dice chose best.keras
    state_path.write_text(json.dumps(state))
    with pytest.raises(ValueError, match="older version of the course.*resume=False"):
        train(config, progress=False)
    again = train(config, resume=False, progress=False)
    assert again.initial_epoch == 0 and "val_pooled_dice" in again.history.columns
