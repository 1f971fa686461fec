"""What the gpu preset's run costs on Colab's free T4, from the model and a measurement on this CPU.

    .venv/bin/python benchmarks/bench_gpu_cost.py [--sizes 32x32x16 64x64x16]

1. From the model (``utils.model.unet.training_cost``): the gpu preset's network
   at its patch and batch under mixed precision (``mixed_float16``): the
   layer outputs backprop keeps (float16: 2 bytes a value), the weights,
   gradients and Adam moments, and the FLOPs of one training step.
2. Measured: the peak resident memory of training steps on this CPU
   (float32, the gpu preset's network and batch) at two small patches, each
   in a fresh process. The difference of the two peaks over the difference
   of their layer-output estimates is the ratio of what training really holds
   to the layer outputs (it cancels the runtime's fixed memory); the float16
   estimate at the full patch is scaled by it.
3. The T4 step time: step FLOPs over an assumed sustained throughput
   (``utils.model.unet.T4_UTILISATION`` of the 65 TFLOPS float16 peak, with its
   source), then the 100 x 250-step run with its validation.

Prints ratios and the inputs of every figure; nothing here needs a GPU.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

GB = 1e9


def measure(patch) -> dict:
    """In this (fresh) process: peak RSS of two float32 training steps of the gpu preset's network on ``patch``."""
    import keras
    import numpy as np

    from utils.config import preset
    from utils.model.losses import dice_bce_loss
    from utils.model.unet import build_unet, training_cost

    config = preset("gpu")
    model = build_unet(
        (*patch, 4), depth=config.depth, base_filters=config.base_filters, normalization=config.normalization
    )
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss=dice_bce_loss, jit_compile=False)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(config.batch_size, *patch, 4)).astype("float32")
    y = (rng.random((config.batch_size, *patch, 3)) > 0.9).astype("float32")
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    model.train_on_batch(x, y)  # traces and allocates
    start = time.perf_counter()
    model.train_on_batch(x, y)
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    cost = training_cost(model, config.batch_size)
    return {"patch": list(patch), "peak": peak, "before": before, "seconds": seconds, **cost}


def _measure_in_fresh_process(patch) -> dict:
    code = f"import json, bench_gpu_cost as b; print(json.dumps(b.measure({tuple(patch)!r})))"
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=__file__.rsplit("/", 1)[0], capture_output=True, text=True, check=True
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", nargs=2, default=["32x32x16", "64x64x16"], help="two small patches to measure")
    args = parser.parse_args(argv)
    import utils  # noqa: F401  (quiet TensorFlow start)
    from utils.config import preset
    from utils.model.unet import T4_FP16_PEAK_TFLOPS, T4_MEMORY_GB, T4_UTILISATION, TRAINING_HOLDS, gpu_run_estimate

    config = preset("gpu")
    small, large = (tuple(int(v) for v in size.split("x")) for size in args.sizes)
    a, b = _measure_in_fresh_process(small), _measure_in_fresh_process(large)
    holds = (b["peak"] - a["peak"]) / (b["activation_bytes"] - a["activation_bytes"])
    est = gpu_run_estimate(config, holds=holds)
    print(
        f"gpu preset: depth {config.depth}, {config.base_filters} filters, {config.normalization} normalization, "
        f"batch {config.batch_size} x {config.patch_shape}, {est['parameters']:,} parameters, mixed_float16"
    )
    print(f"  layer outputs (float16) {est['activation_bytes'] / GB:.2f} GB per step")
    print(f"  weights + gradients + Adam {est['parameter_bytes'] / GB:.2f} GB")
    print(f"  FLOPs per training step {est['step_flops'] / 1e12:.2f} TFLOP")
    print("measured on this CPU (float32, fresh process each, peak RSS over two training steps):")
    for m in (a, b):
        print(
            f"  patch {tuple(m['patch'])}: peak {m['peak'] / GB:.2f} GB (before training {m['before'] / GB:.2f} GB), "
            f"layer outputs {m['activation_bytes'] / GB:.2f} GB, step {m['seconds']:.1f} s "
            f"= {m['step_flops'] / m['seconds'] / 1e9:.0f} GFLOPS"
        )
    print(
        f"  peak growth / layer-output growth = {holds:.2f} (utils.model.unet.TRAINING_HOLDS, what the lesson uses: "
        f"{TRAINING_HOLDS})"
    )
    need = est["memory_bytes"]
    print(
        f"T4 memory: {holds:.2f} x {est['activation_bytes'] / GB:.2f} GB + {est['parameter_bytes'] / GB:.2f} GB "
        f"= {need / GB:.1f} GB of {T4_MEMORY_GB:.0f} GB ({need / GB / T4_MEMORY_GB:.0%})"
    )
    print(
        f"T4 time: {est['step_flops'] / 1e12:.2f} TFLOP / ({T4_UTILISATION:.0%} of {T4_FP16_PEAK_TFLOPS:.0f} TFLOPS) "
        f"= {est['step_seconds']:.2f} s per step; {config.epochs} x ({config.steps_per_epoch} training + "
        f"{config.validation_steps} validation steps at a third) = {est['hours']:.1f} h "
        f"(at half that throughput {2 * est['hours']:.1f} h)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
