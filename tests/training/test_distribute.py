"""Training beyond one device: strategy choice from TF_CONFIG and GPUs, each replica's
batches, and two local CPU workers training one run on the loopback address (issue 18)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from utils.training.distribute import Cluster, distributed_patches, parse_tf_config, strategy_kind

REPO = Path(__file__).resolve().parents[2]


def _tf_config(workers: list[str], task: str = "worker", index: int = 0, chief: list[str] | None = None) -> str:
    cluster = {"worker": workers, **({"chief": chief} if chief else {})}
    return json.dumps({"cluster": cluster, "task": {"type": task, "index": index}})


def test_strategy_follows_tf_config_and_gpus():
    two = parse_tf_config(_tf_config(["a:1", "b:2"], index=1))
    assert two == Cluster(workers=2, task_type="worker", task_index=1) and not two.is_chief
    assert parse_tf_config(_tf_config(["a:1", "b:2"])).is_chief, "worker 0 is the chief when there is no chief task"
    with_chief = parse_tf_config(_tf_config(["b:2"], task="chief", chief=["a:1"]))
    assert with_chief.workers == 2 and with_chief.is_chief
    assert not parse_tf_config(_tf_config(["b:2"], index=0, chief=["a:1"])).is_chief
    assert parse_tf_config(None) is None and parse_tf_config("") is None
    assert parse_tf_config(_tf_config(["a:1"])) is None, "one worker is not a cluster"
    assert strategy_kind(None, gpus=0) == "default" and strategy_kind(None, gpus=1) == "default"
    assert strategy_kind(None, gpus=4) == "mirrored"
    assert strategy_kind(two, gpus=0) == "multi_worker" and strategy_kind(two, gpus=8) == "multi_worker"
    assert strategy_kind(None, gpus=4, backend="jax") == "default"
    with pytest.raises(ValueError, match="needs the TensorFlow backend"):
        strategy_kind(two, gpus=0, backend="jax")


@pytest.mark.parametrize(
    "text, message",
    [
        ("{not json", "must be JSON"),
        (_tf_config(["a:1", "b:2"], task="ps"), "chief/worker tasks"),
        (_tf_config(["a:1", "b:2"], index=5), "is not in the cluster"),
    ],
)
def test_bad_tf_config_is_a_clear_error(text, message):
    with pytest.raises(ValueError, match=message):
        parse_tf_config(text)


class _Stream:
    """Stands for a PatchDataset: batch ``i`` of epoch ``e`` is filled with ``1000 e + i``."""

    fixed = False

    def batch(self, index, epoch=None):
        value = 1000 * (epoch or 0) + index
        return np.full((2, 3), value, np.float32), np.full((2, 1), -value, np.float32)


def test_replicas_draw_the_single_device_stream_and_resume_it():
    import tensorflow as tf

    strategy = tf.distribute.get_strategy()  # one replica: step s of epoch e is batch s of epoch e
    data = distributed_patches(strategy, _Stream(), steps=3, initial_epoch=2, parallel=2)
    seen = [int(x[0, 0]) for x, _ in (batch for batch, _ in zip(data, range(5)))]
    assert seen == [2000, 2001, 2002, 3000, 3001]
    fixed = _Stream()
    fixed.fixed = True
    seen = [
        int(x[0, 0]) for x, _ in (batch for batch, _ in zip(distributed_patches(strategy, fixed, steps=2), range(5)))
    ]
    assert seen == [0, 1, 0, 1, 0], "validation repeats its batches every epoch"


def _free_ports(n: int) -> list[int]:
    sockets = [socket.socket() for _ in range(n)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def _run_workers(tmp_path: Path, args: list[str], timeout: float = 240) -> list[str]:
    """Run ``python -m utils.training.train`` as two workers of one cluster; return their outputs (both must succeed)."""
    ports = _free_ports(2)
    workers = [f"127.0.0.1:{p}" for p in ports]
    scratch = tmp_path / "tmp"
    scratch.mkdir(exist_ok=True)
    env = {
        **os.environ,
        "COURSE_DATA_DIR": str(tmp_path / "data"),
        "COURSE_MODE": "ci",
        "PYTHONPATH": str(REPO),
        "TMPDIR": str(scratch),
        "CUDA_VISIBLE_DEVICES": "-1",
        "TF_CPP_MIN_LOG_LEVEL": "2",
    }
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "utils.training.train", *args],
            env={**env, "TF_CONFIG": _tf_config(workers, index=i)},
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        for i in range(2)
    ]
    outputs = []
    try:
        for proc in procs:
            outputs.append(proc.communicate(timeout=timeout)[0])
    finally:
        for proc in procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    for i, (proc, out) in enumerate(zip(procs, outputs)):
        print(f"--- worker {i} (exit {proc.returncode})\n{out}")
        assert proc.returncode == 0, f"worker {i} failed:\n{out[-3000:]}"
    assert not list(scratch.iterdir()), "the non-chief worker removes its scratch folder"
    return outputs


def test_two_local_workers_train_and_resume_one_run(tmp_path, phantom_root):
    run = tmp_path / "data" / "runs" / "two"
    common = ["--dataset", str(phantom_root), "--output-dir", str(run), "--steps-per-epoch", "2"]
    chief, other = _run_workers(tmp_path, ["--epochs", "1", *common])
    assert (
        "distributed training on 2 workers (worker 0 here): 2 replicas, batch_size 2 per replica, "
        "4 patches per step" in chief
    )
    assert "epoch 1/1" in chief and "epoch 1/1" not in other, "only the chief prints the epoch lines"
    assert [p.name for p in (tmp_path / "data" / "runs").iterdir()] == ["two"], "exactly one run folder"
    assert {"best.keras", "last.keras", "state.json", "log.csv", "config.json"} <= {p.name for p in run.iterdir()}
    assert json.loads((run / "state.json").read_text())["epochs_done"] == 1
    first = pd.read_csv(run / "log.csv")
    assert len(first) == 1 and np.isfinite(first["val_pooled_dice"]).all()
    # both workers trained the same model: their summaries (from the synchronised metrics) agree
    summary = [out.strip().splitlines()[-1].split("last epoch:")[1] for out in (chief, other)]
    assert summary[0] == summary[1] and "val_pooled_dice" in summary[0]

    chief, other = _run_workers(tmp_path, ["--epochs", "2", *common])
    assert "resuming" in chief and "after epoch 1" in chief and "after epoch 1" in other
    log = pd.read_csv(run / "log.csv")
    assert list(log["epoch"]) == [0, 1] and json.loads((run / "state.json").read_text())["epochs_done"] == 2
    assert log.iloc[0].equals(first.iloc[0]), "the first epoch's row is kept"
    assert [p.name for p in (tmp_path / "data" / "runs").iterdir()] == ["two"]


MIRRORED_SCRIPT = """
import sys
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
import utils.training.train as train_module
from utils.training import distribute
# stands for a machine with two GPUs: two logical CPUs under the strategy train() picks for 2 GPUs
train_module.gpu_count = lambda: 2
distribute.make_strategy = lambda kind: tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"]) if kind == "mirrored" else None
config = train_module.preset("ci", dataset=sys.argv[1], output_dir=sys.argv[2], epochs=1, steps_per_epoch=2,
                             mixed_precision="off", jit_compile="off")
result = train_module.train(config, progress=False)
print("epochs logged:", len(result.history))
"""


def test_two_replicas_on_one_machine_train_one_run(tmp_path, phantom_root):
    env = {
        **os.environ,
        "COURSE_DATA_DIR": str(tmp_path / "data"),
        "COURSE_MODE": "ci",
        "PYTHONPATH": str(REPO),
        "CUDA_VISIBLE_DEVICES": "-1",
        "TF_CPP_MIN_LOG_LEVEL": "2",
    }
    env.pop("TF_CONFIG", None)
    run = tmp_path / "data" / "runs" / "mirrored"
    proc = subprocess.run(
        [sys.executable, "-c", MIRRORED_SCRIPT, str(phantom_root), str(run)],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    print(proc.stdout, proc.stderr[-2000:])
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (
        "distributed training on MirroredStrategy: 2 replicas, batch_size 2 per replica, 4 patches per step"
        in proc.stdout
        and "epochs logged: 1" in proc.stdout
    )
    assert json.loads((run / "state.json").read_text())["epochs_done"] == 1 and (run / "best.keras").is_file()
