"""What a GPU run does, run on a CPU: the gpu preset's network trained with mixed precision and XLA,
then used (predicted, reported, resumed) in fresh processes without XLA and without a GPU, as on
Colab after the GPU quota runs out."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest

from utils.backend import gpu_count
from utils.config import preset
from utils.data.datasets import find_msd_file, list_cases, load_case
from utils.inference.sliding_window import predict_case
from utils.model.unet import build_unet, dtype_policy_of, dtype_policy_scope, load_model, saved_dtype_policy
from utils.visualization.report import main as report_main
from utils.visualization.report import read_report

ROOT = Path(__file__).resolve().parents[2]
PATCH = (16, 16, 8)  # the smallest patch the gpu preset's depth-4 U-Net takes; two steps of one patch
NOISE = ("absl::InitializeLog", "oneDNN custom operations", "cudart_stub", "cpu_feature_guard")
# Same weights, float16 compute (XLA on the CPU) against float32: measured max probability difference
# 2e-3 on a whole phantom case (float16 keeps ~3 significant digits)
MAX_PROBABILITY_DIFFERENCE = 0.01
MIN_LABEL_AGREEMENT = 0.999


def _run(args: list[str], env: dict) -> subprocess.CompletedProcess:
    done = subprocess.run([sys.executable, "-m", *args], cwd=ROOT, env=env, capture_output=True, text=True)
    assert done.returncode == 0, f"{args[0]} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    assert not [n for n in NOISE if n in done.stderr], f"start-up noise from {args[0]}:\n{done.stderr[-2000:]}"
    return done


@pytest.fixture(scope="module")
def gpu_run(tmp_path_factory, phantom_root):
    """A run of the gpu preset's architecture, trained as a GPU trains: mixed_float16 and XLA on."""
    tmp = tmp_path_factory.mktemp("gpu-run")
    env = {**os.environ, "COURSE_DATA_DIR": str(tmp / "data"), "PYTHONPATH": str(ROOT)}
    env.pop("COURSE_MODE", None)
    run = tmp / "run"
    train = [
        "utils.training.train", "--mode", "gpu", "--dataset", str(phantom_root), "--output-dir", str(run),
        "--patch-shape", *map(str, PATCH), "--batch-size", "1", "--epochs", "1", "--steps-per-epoch", "2",
        "--validation-steps", "1", "--mixed-precision", "on", "--jit-compile", "on", "--workers", "1",
    ]  # fmt: skip
    done = _run(train, env)
    return run, env, train, done


def test_gpu_preset_trained_with_mixed_precision_predicts_and_reports_on_cpu(gpu_run, phantom_root, tmp_path):
    run, env, _, _ = gpu_run
    gpu = preset("gpu")
    config = json.loads((run / "config.json").read_text())
    assert (config["depth"], config["base_filters"], config["normalization"]) == (4, 32, "instance")
    assert (gpu.depth, gpu.base_filters, gpu.normalization) == (4, 32, "instance"), "the test follows the preset"
    assert config["precision"]["dtype_policy"] == "mixed_float16" and config["jit_compile"] == "on"
    assert saved_dtype_policy(run / "best.keras") == "mixed_float16"

    # a fresh process, no XLA (a CPU's default), no GPU: prediction; then the report of that case
    case_id = list_cases(phantom_root)[0]
    image = find_msd_file(phantom_root / "imagesTr", case_id)
    label = find_msd_file(phantom_root / "labelsTr", case_id)
    seg = tmp_path / "pred" / f"{case_id}.nii.gz"
    predict = [
        "utils.inference.predict",
        "--model",
        str(run / "best.keras"),
        "--input",
        str(image),
        "--output",
        str(seg),
    ]
    done = _run([*predict, "--overlap", "0"], env)
    assert f"{case_id}: wrote {seg}" in done.stdout and seg.is_file()
    assert "trained with mixed precision (mixed_float16); no GPU here, so it runs in float32" in done.stdout
    html = tmp_path / "case.html"  # the report reads files only (no model): in this process
    assert (
        report_main(["--image", str(image), "--segmentation", str(seg), "--truth", str(label), "--out", str(html)]) == 0
    )
    assert list(read_report(html))[-3:] == ["segmentation", "ground truth", "errors"]


def test_float16_and_float32_paths_give_the_same_segmentation(gpu_run, phantom_root):
    """The saved mixed-precision model (float16 compute, XLA on the CPU) against its float32 rebuild."""
    run, _, _, _ = gpu_run
    float32 = load_model(run / "best.keras", compile=False)  # no GPU here: rebuilt in float32
    mixed = load_model(run / "best.keras", compile=False, precision="saved")
    assert dtype_policy_of(float32) == "float32" and dtype_policy_of(mixed) == "mixed_float16"
    for a, b in zip(mixed.weights, float32.weights, strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    mixed.jit_compile = True  # TensorFlow's CPU kernels lack float16 MaxPool3D; XLA compiles it
    case = load_case(phantom_root, list_cases(phantom_root)[0])
    labels16, probs16 = predict_case(mixed, case.image, overlap=0, largest_component=False, progress=False)
    labels32, probs32 = predict_case(float32, case.image, overlap=0, largest_component=False, progress=False)
    difference = float(np.abs(probs16 - probs32).max())
    agreement = float((labels16 == labels32).mean())
    print(f"float16 (XLA) vs float32: max probability difference {difference:.2e}, label agreement {agreement:.6f}")
    assert difference <= MAX_PROBABILITY_DIFFERENCE and agreement >= MIN_LABEL_AGREEMENT, (difference, agreement)


def test_mixed_precision_run_resumes_on_cpu_in_float32(gpu_run, tmp_path):
    run, env, train, _ = gpu_run
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    args = [copy if a == str(run) else a for a in train]
    args[args.index("--epochs") + 1] = "2"
    done = _run([str(a) for a in args], env)
    assert "was trained with mixed precision (mixed_float16); no GPU is visible, so training continues in float32" in (
        done.stdout
    )
    assert "resuming" in done.stdout and "epoch 2/2" in done.stdout
    assert json.loads((copy / "state.json").read_text())["epochs_done"] == 2
    assert json.loads((copy / "config.json").read_text())["precision"]["trained_in"] == ["mixed_float16", "float32"]
    resumed = load_model(copy / "last.keras")
    assert dtype_policy_of(resumed) == "float32"
    assert int(resumed.optimizer.iterations.numpy()) == 4, "the optimizer's step count went on from 2 (state kept)"


def test_mixed_precision_on_a_cpu_without_xla_is_refused_in_one_line(phantom_root, tmp_path, monkeypatch):
    from utils.training.train import train

    monkeypatch.setenv("COURSE_DATA_DIR", str(tmp_path / "data"))
    config = preset("ci", dataset=str(phantom_root), output_dir=str(tmp_path / "run"), mixed_precision="on")
    with pytest.raises(ValueError, match=r"mixed_precision='on' without a GPU needs jit_compile='on'"):
        train(config, progress=False)


@pytest.mark.skipif(gpu_count() > 0, reason="the crash is a CPU's: no float16 MaxPool3D kernel")
def test_a_mixed_precision_model_crashes_on_a_cpu_as_saved_and_runs_rebuilt_in_float32(tmp_path):
    """The crash of issue 32 (a GPU-trained model on a CPU, no XLA) and its fix, on a tiny network."""
    with dtype_policy_scope("mixed_float16"):
        model = build_unet((16, 16, 8, 4), depth=2, base_filters=4)
    path = tmp_path / "mixed.keras"
    model.save(path)
    x = np.random.default_rng(0).normal(size=(1, 16, 16, 8, 4)).astype("float32")
    with pytest.raises(Exception, match="No OpKernel was registered to support Op 'MaxPool3D'"):
        load_model(path, compile=False, precision="saved").predict_on_batch(x)
    rebuilt = load_model(path, compile=False)
    assert dtype_policy_of(rebuilt) == "float32" and keras.config.dtype_policy().name == "float32"
    probabilities = np.asarray(rebuilt.predict_on_batch(x))
    assert probabilities.dtype == np.float32 and probabilities.shape == (1, 16, 16, 8, 3)
