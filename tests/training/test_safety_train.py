"""Training never moves or fills a folder it did not make, never loses a log.csv row,
and never trains an epoch twice silently after a kill (issue 11)."""

from __future__ import annotations

import json
import os

import keras
import numpy as np
import pytest

import utils.training.train as train_module
from utils.safety import OWNER_FILE
from utils.training.train import PENDING, Checkpoints, prepare_output_dir, preset, recover_run
from utils.training.train import main as train_main


def _tree(root):
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture()
def env(tmp_path, monkeypatch):
    monkeypatch.setenv("COURSE_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("COURSE_MODE", "ci")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    (tmp_path / "home").mkdir()
    return tmp_path


def test_checkout_root_lessons_and_home_are_refused(env, capsys, monkeypatch):
    checkout = env / "course"
    (checkout / ".git").mkdir(parents=True)
    (checkout / "notebooks").mkdir()
    (checkout / "notebooks" / "01_lesson.ipynb").write_text("{}")
    (checkout / "pyproject.toml").write_text("[project]")
    monkeypatch.chdir(checkout)
    before = _tree(checkout)
    for target, reason in (
        (".", "root of a git checkout"),
        ("notebooks", "not a training run folder"),
        (str(env / "home"), "home folder"),
        ("/", "filesystem root"),
    ):
        for extra in ([], ["--no-resume"]):
            assert train_main(["--output-dir", target, "--epochs", "1", *extra]) == 2, target
            err = capsys.readouterr().err
            assert reason in err and err.count("\n") == 1, err
    assert _tree(checkout) == before and sorted(p.name for p in checkout.iterdir()) == [
        ".git",
        "notebooks",
        "pyproject.toml",
    ]


def test_output_dir_that_is_a_file(env, capsys):
    afile = env / "results.csv"
    afile.write_text("keep")
    assert train_main(["--output-dir", str(afile), "--epochs", "1"]) == 2
    assert "is a file" in capsys.readouterr().err and afile.read_text() == "keep"


def test_no_resume_moves_only_our_runs_aside(env):
    config = preset("ci", output_dir=str(env / "run"))
    run = prepare_output_dir(env / "run", config, resume=True)
    assert (run / OWNER_FILE).is_file()
    (run / "state.json").write_text('{"epochs_done": 1}')
    prepare_output_dir(env / "run", config, resume=False)
    moved = [p for p in env.iterdir() if p.name.startswith("run-old-")]
    assert len(moved) == 1 and json.loads((moved[0] / "state.json").read_text()) == {"epochs_done": 1}
    assert (env / "run").is_dir() and not (env / "run" / "state.json").exists()


def _model():
    keras.utils.set_random_seed(0)
    return keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])


def _epoch(saver, model, epoch, score):
    model.set_weights([w + 1 for w in model.get_weights()])
    saver.on_epoch_end(epoch, {"loss": 1.0 - score, "val_pooled_dice": score, "learning_rate": 1e-3})


def _run_after_one_epoch(env):
    """A run folder whose checkpoint callback has committed epoch 0: ``(folder, model, callback)``."""
    out = env / "run"
    out.mkdir()
    model = _model()
    saver = Checkpoints(out)
    saver.set_model(model)
    _epoch(saver, model, 0, 0.5)
    return out, model, saver


def test_kill_after_logging_before_commit_drops_the_row_and_says_so(env, monkeypatch, capsys):
    out, model, saver = _run_after_one_epoch(env)
    committed = [w.copy() for w in model.get_weights()]

    def killed(*args, **kwargs):
        raise KeyboardInterrupt("killed before state.json")

    monkeypatch.setattr(train_module, "write_json_atomic", killed)
    with pytest.raises(KeyboardInterrupt):
        _epoch(saver, model, 1, 0.6)
    monkeypatch.undo()
    assert len((out / "log.csv").read_text().splitlines()) == 3  # header, epoch 0, the uncommitted epoch 1
    state = recover_run(out)
    message = capsys.readouterr().out
    assert state["epochs_done"] == 1
    assert "epoch 2" in message and "trained again" in message and "dropped" in message
    lines = (out / "log.csv").read_text().splitlines()
    assert lines[0] == "epoch,epoch_seconds,learning_rate,loss,val_pooled_dice"
    assert [l.split(",")[0] for l in lines[1:]] == ["0"]
    assert not (out / PENDING).exists()
    for a, b in zip(keras.models.load_model(out / "last.keras").get_weights(), committed):
        np.testing.assert_array_equal(a, b)


def test_kill_after_commit_before_rename_keeps_the_epoch(env, monkeypatch, capsys):
    out, model, saver = _run_after_one_epoch(env)
    real_replace = train_module.os.replace

    def killed(src, dst):
        if os.path.basename(src) == PENDING:
            raise KeyboardInterrupt("killed before the rename")
        return real_replace(src, dst)

    monkeypatch.setattr(train_module.os, "replace", killed)
    with pytest.raises(KeyboardInterrupt):
        _epoch(saver, model, 1, 0.6)
    monkeypatch.undo()
    state = recover_run(out)
    assert state["epochs_done"] == 2 and capsys.readouterr().out == ""
    assert [l.split(",")[0] for l in (out / "log.csv").read_text().splitlines()[1:]] == ["0", "1"]
    for a, b in zip(keras.models.load_model(out / "last.keras").get_weights(), model.get_weights()):
        np.testing.assert_array_equal(a, b)  # the committed epoch 2 weights


def test_torn_log_line_is_dropped(env, capsys):
    out = env / "run"
    out.mkdir()
    (out / "state.json").write_text('{"epochs_done": 2}')
    (out / "log.csv").write_text("epoch,loss\n0,0.9\n1,0.8\n2,0.")
    recover_run(out)
    assert (out / "log.csv").read_text() == "epoch,loss\n0,0.9\n1,0.8\n"
    assert "dropped" in capsys.readouterr().out
