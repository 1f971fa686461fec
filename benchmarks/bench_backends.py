"""Training step time of the course's models on each installed Keras backend.

Each backend runs in its own process (``KERAS_BACKEND`` is read once, at
import). In each, the same models train on the same random batch: a few
warm-up steps (tracing, compilation), then the median of the timed steps.
The table gives seconds per step and the ratio to TensorFlow measured in the
same run, so the choice of backend and settings stays measured:

    python benchmarks/bench_backends.py                  # every installed backend
    python benchmarks/bench_backends.py --steps 5 --models cpu
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

BACKENDS = ("tensorflow", "torch", "jax")
ROOT = Path(__file__).resolve().parent.parent

# name -> (training preset, overrides of that preset, batch size). The variants of the
# cpu preset are measured only where they differ from the preset as it stands.
MODELS = {
    "cpu": ("cpu", {}, None),  # the CPU demo's model and patch, as configured
    "cpu-full-res": ("cpu", {"downsample": 1}, None),  # the same network at full resolution
    "cpu-half-res": ("cpu", {"downsample": 2}, None),  # ... or at half resolution
    "assignment": ("gpu", {}, 1),  # 160x160x16, 32 base filters, batch 1
}


def _distinct(models: list[str]) -> list[str]:
    """``models`` without the variants whose configuration equals an earlier entry's."""
    from utils.config import preset

    seen, kept = {}, []
    for name in models:
        mode, overrides, batch = MODELS[name]
        key = (repr(preset(mode, **overrides)), batch)
        if key in seen:
            print(f"{name:<14}same as {seen[key]}; skipped")
            continue
        seen[key] = name
        kept.append(name)
    return kept


def _worker(models: list[str], steps: int, warmup: int) -> None:
    """Runs inside one backend's process: print one JSON line per model."""
    import time

    import numpy as np

    from utils.config import preset
    from utils.training.train import build_model

    for name in models:
        mode, overrides, batch = MODELS[name]
        config = preset(mode, jit_compile="off", **overrides)
        batch = batch or config.batch_size
        model = build_model(config)
        rng = np.random.default_rng(0)
        x = rng.normal(size=(batch, *config.patch_shape, 4)).astype("float32")
        y = (rng.random((batch, *config.patch_shape, 3)) > 0.9).astype("float32")
        for _ in range(warmup):
            model.train_on_batch(x, y)
        times = []
        for _ in range(steps):
            start = time.perf_counter()
            model.train_on_batch(x, y)
            times.append(time.perf_counter() - start)
        print(
            "RESULT "
            + json.dumps(
                {
                    "model": name,
                    "batch": batch,
                    "patch": list(config.patch_shape),
                    "params": int(model.count_params()),
                    "seconds": float(np.median(times)),
                }
            ),
            flush=True,
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--steps", type=int, default=5, help="timed steps per model (median reported)")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--backends", nargs="+", default=list(BACKENDS), choices=list(BACKENDS))
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        _worker(args.models, args.steps, args.warmup)
        return

    args.models = _distinct(args.models)
    results: dict[str, dict[str, dict]] = {}
    for backend in args.backends:
        if importlib.util.find_spec(backend) is None:
            print(f"{backend:<11} not installed; skipped")
            continue
        env = dict(
            os.environ,
            KERAS_BACKEND=backend,
            TF_CPP_MIN_LOG_LEVEL="3",
            PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
        )
        cmd = [
            sys.executable,
            __file__,
            "--worker",
            "--steps",
            str(args.steps),
            "--warmup",
            str(args.warmup),
            "--models",
            *args.models,
        ]
        run = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
        rows = [json.loads(line[7:]) for line in run.stdout.splitlines() if line.startswith("RESULT ")]
        if run.returncode != 0 or not rows:
            tail = (run.stderr.strip().splitlines() or ["(no output)"])[-1]
            print(f"{backend:<11} failed: {tail}")
            continue
        results[backend] = {row["model"]: row for row in rows}

    baseline = results.get("tensorflow", {})
    print(f"\n{'model':<14}{'batch x patch':<20}{'params':>10}  " + "".join(f"{b:>22}" for b in results))
    for name in args.models:
        any_row = next((r[name] for r in results.values() if name in r), None)
        if any_row is None:
            continue
        shape = f"{any_row['batch']} x {'x'.join(map(str, any_row['patch']))}"
        cells = []
        for rows in results.values():
            if name not in rows:
                cells.append(f"{'-':>22}")
                continue
            sec = rows[name]["seconds"]
            ratio = f" (x{sec / baseline[name]['seconds']:.2f})" if name in baseline else ""
            cells.append(f"{sec:>10.3f} s/step{ratio:>6}"[-22:].rjust(22))
        print(f"{name:<14}{shape:<20}{any_row['params']:>10,}  " + "".join(cells))
    print("\nratios: seconds per step against TensorFlow in this run (x1.00 = TensorFlow)")


if __name__ == "__main__":
    main()
