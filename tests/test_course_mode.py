"""One mode everywhere: lessons 05 to 08 resolve the same preset and checkpoint."""

from __future__ import annotations

import json
from dataclasses import asdict

import numpy as np
import pytest

import utils.config as config_module
from utils.config import course_mode, get_settings, preset, project_path, run_dir

import notebooks as nbtools

RUN_LESSONS = (
    "05_training",
    "06_whole_scan_prediction",
    "07_bonus_2d_unet",
    "08_clinical_metadata",
    "09_what_wins_brats",
)
CHECKPOINT_NAMES = {  # the lessons that use lesson 05's checkpoint (09 trains its own ablation runs beside it)
    "05_training": "checkpoint",
    "06_whole_scan_prediction": "model_path",
    "07_bonus_2d_unet": "checkpoint",
    "08_clinical_metadata": "model_path",
}


def _resolve(lesson_name: str, **parameters) -> dict:
    """Run a solution notebook's imports, parameters and run-config cells; return its namespace.

    ``parameters`` replace values of the parameters cell, as a learner edits it.
    """
    lesson = next(lesson for lesson in nbtools.lessons() if lesson.name == lesson_name)
    cells = json.loads(lesson.solution.read_text())["cells"]
    namespace: dict = {}
    wanted = ("imports", "parameters", "run-config")
    for tag in wanted:
        chosen = [c for c in cells if tag in c.get("metadata", {}).get("tags", [])]
        assert len(chosen) == 1, f"{lesson_name}: expected one cell tagged {tag!r}, found {len(chosen)}"
        exec("".join(chosen[0]["source"]), namespace)
        if tag == "parameters":
            assert set(parameters) <= set(namespace), (
                f"{lesson_name} has no parameter {set(parameters) - set(namespace)}"
            )
            namespace.update(parameters)
    return namespace


@pytest.fixture()
def no_mode(monkeypatch):
    monkeypatch.delenv("COURSE_MODE", raising=False)
    monkeypatch.delenv("COURSE_DATA_DIR", raising=False)
    return monkeypatch


def test_mode_follows_env_then_gpu_then_cpu(no_mode):
    no_mode.setattr(config_module, "gpu_count", lambda: 0)
    assert course_mode() == "cpu"
    no_mode.setattr(config_module, "gpu_count", lambda: 1)
    assert course_mode() == "gpu"
    no_mode.setenv("COURSE_MODE", "ci")
    assert course_mode() == "ci"
    no_mode.setenv("COURSE_MODE", "tpu")
    with pytest.raises(ValueError, match="COURSE_MODE must be one of ci, cpu, gpu; found 'tpu'"):
        course_mode()


@pytest.mark.parametrize("drive", [False, True], ids=["checkout", "COURSE_DATA_DIR"])
@pytest.mark.parametrize("gpus", [0, 1], ids=["no-gpu", "gpu"])
def test_lessons_05_to_07_agree_on_preset_and_checkpoint(no_mode, tmp_path, gpus, drive):
    no_mode.setattr(config_module, "gpu_count", lambda: gpus)
    if drive:
        no_mode.setenv("COURSE_DATA_DIR", str(tmp_path / "drive"))
    expected_mode = "gpu" if gpus else "cpu"
    expected_dir = (tmp_path / "drive" / "runs" / expected_mode) if drive else project_path(f"runs/{expected_mode}")
    resolved = {}
    for name in RUN_LESSONS:
        namespace = _resolve(name)
        resolved[name] = (asdict(namespace["config"]), namespace.get(CHECKPOINT_NAMES.get(name, ""), None))
    configs = {name: cfg for name, (cfg, _) in resolved.items()}
    checkpoints = {name: path for name, (_, path) in resolved.items() if name in CHECKPOINT_NAMES}
    assert all(cfg == asdict(preset(expected_mode)) for cfg in configs.values()), configs
    assert set(checkpoints.values()) == {expected_dir / "best.keras"}, checkpoints
    assert run_dir(preset(expected_mode)) == expected_dir


def test_data_and_runs_share_one_setting(no_mode, tmp_path):
    no_mode.setenv("COURSE_DATA_DIR", str(tmp_path))
    assert config_module.data_root() == tmp_path.resolve()
    assert run_dir(preset("ci")) == tmp_path.resolve() / "runs" / "ci"
    assert project_path(tmp_path / "elsewhere") == tmp_path / "elsewhere"


def test_cpu_demo_trains_the_lesson_03_unet_at_full_resolution_and_holds_out_six_cases():
    """The CPU demo's model is lesson 03's U-Net (no half-resolution trick, no XLA), judged on >= 6 cases."""
    from utils.data.datasets import split_cases

    config, settings = preset("cpu"), get_settings("cpu")
    assert config.downsample == 1 and config.jit_compile != "on"
    ids = [f"PHANTOM_{i:03d}" for i in range(1, settings.phantom_train + 1)]
    train_ids, val_ids = split_cases(ids, config.val_fraction, config.seed)
    assert len(val_ids) >= 6 and len(train_ids) >= 10, (len(train_ids), len(val_ids))


def test_each_mode_has_its_own_phantom_folder(no_mode, tmp_path):
    no_mode.setenv("COURSE_DATA_DIR", str(tmp_path))
    folders = {mode: config_module.phantom_dir(mode) for mode in config_module.MODES}
    assert len(set(folders.values())) == len(folders), folders
    assert folders["cpu"] == tmp_path / "phantom"  # the folder cpu-mode data already lives in is kept


def test_the_mode_travels_from_the_preset_to_the_phantom(no_mode, monkeypatch):
    """``--mode cpu`` on a machine whose own mode is another trains on the cpu phantom (issue 23)."""
    import utils.data.phantom as phantom_module
    from utils.training import train as train_module

    no_mode.setenv("COURSE_MODE", "ci")  # the machine's mode
    asked = []

    def fake_ensure_phantom(mode=None, progress=True):
        asked.append(mode)
        raise RuntimeError("stop after the dataset is chosen")

    monkeypatch.setattr(phantom_module, "ensure_phantom", fake_ensure_phantom)
    config = preset("cpu")
    assert config.mode == "cpu" and all(preset(m).mode == m for m in config_module.MODES)
    with pytest.raises(RuntimeError, match="stop after"):
        train_module.prepare_data(config, progress=False)
    assert asked == ["cpu"]


def test_a_run_folder_from_before_the_mode_was_recorded_still_resumes(tmp_path):
    from utils.training.train import prepare_output_dir

    config = preset("ci", output_dir=str(tmp_path / "run"))
    run = tmp_path / "run"
    run.mkdir()
    old = {k: v for k, v in json.loads(json.dumps(asdict(config))).items() if k != "mode"}
    (run / "config.json").write_text(json.dumps(old))
    (run / "state.json").write_text("{}")
    (run / "last.keras").write_bytes(b"")
    assert prepare_output_dir(run, config, resume=True) == run
    (run / "config.json").write_text(json.dumps(dict(old, depth=5)))
    with pytest.raises(ValueError, match="depth"):
        prepare_output_dir(run, config, resume=True)


def test_gpu_session_trains_cpu_session_predicts(no_mode, tmp_path, phantom_root):
    """Colab: lesson 05 trains on a GPU runtime into Drive (mixed precision, XLA); the quota runs out;
    on a CPU runtime lesson 06, given that model, loads it (in float32) and segments a case."""
    import utils
    from utils.data.datasets import list_cases, load_case
    from utils.inference.sliding_window import predict_case
    from utils.model.unet import dtype_policy_of, saved_dtype_policy
    from utils.training.train import train

    no_mode.setenv("COURSE_DATA_DIR", str(tmp_path / "drive"))
    no_mode.setattr(config_module, "gpu_count", lambda: 1)  # the GPU session
    gpu_session = _resolve("05_training")
    assert gpu_session["config"].mixed_precision == "auto" and gpu_session["checkpoint"].parent.name == "gpu"
    # what lesson 05 runs there, on the tiny phantom and network (a GPU turns "auto" into both of these)
    config = preset("ci", output_dir=gpu_session["config"].output_dir, dataset=str(phantom_root), epochs=1)
    config.mixed_precision, config.jit_compile, config.steps_per_epoch, config.verbose = "on", "on", 1, 0
    train(config, progress=False)
    checkpoint = gpu_session["checkpoint"]
    assert saved_dtype_policy(checkpoint) == "mixed_float16"

    no_mode.setattr(config_module, "gpu_count", lambda: 0)  # the CPU session: lesson 06 pointed at that model
    cpu_session = _resolve("06_whole_scan_prediction", MODEL_PATH=str(checkpoint))
    assert cpu_session["model_path"] == checkpoint
    model = utils.load_model(cpu_session["model_path"], compile=False)
    assert dtype_policy_of(model) == "float32"
    case = load_case(phantom_root, list_cases(phantom_root)[0])
    labels, probabilities = predict_case(model, case.image, overlap=0, progress=False)
    assert labels.shape == case.image.shape[:3] and np.isfinite(probabilities).all()


@pytest.mark.parametrize("mode", config_module.MODES)
def test_lesson_10_pretrains_the_training_unet_of_its_mode(no_mode, mode):
    """Lesson 10 (issue 30): its pretraining and fine-tuning budgets follow the mode, and the pretrained
    network is that mode's training U-Net (same depth, filters, normalization), so every layer but the head transfers."""
    from utils.config import pretrain_preset, transfer_budget
    from utils.model.unet import pool_sizes

    no_mode.setenv("COURSE_MODE", mode)
    namespace = _resolve("10_transfer_learning")
    pre, budget, train = namespace["pre_config"], namespace["budget"], preset(mode)
    assert pre == pretrain_preset(mode) and budget == transfer_budget(mode) and pre.mode == mode
    assert (pre.depth, pre.base_filters, pre.normalization) == (train.depth, train.base_filters, train.normalization)
    # the same pooling at every level: the transposed convolutions' kernels have the same shapes
    assert pool_sizes(pre.patch_shape, pre.depth) == pool_sizes(budget.patch_shape, pre.depth)
    assert project_path(pre.output_dir) != run_dir(train)  # never lesson 05's run folder
