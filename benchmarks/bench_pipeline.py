"""Patches per second: from the memory-mapped cache vs decoding NIfTI per sample, each augmentation
pipeline against the training step rate of the cpu preset on this machine.

All of it runs in this process on the same full-size phantom cases. The sampler rates (with the
``basic`` augmentation, the one before issue 26, and with nnU-Net's from batchgenerators) and the
training step are measured in interleaved rounds, medians printed, so a change in the machine's
load hits all of them alike. Prints the rates and their ratios; the pipeline must supply at least
3x what training consumes.
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np

from utils.config import AUGMENTATIONS, preset
from utils.data.datasets import load_case
from utils.preprocessing.transforms import sample_foreground_patch, standardize_nonzero
from utils.training.train import build_model, prepare_data

TARGET = 3.0
"""The pipeline must supply at least this multiple of what a training step consumes."""


def rate(fn, n: int, first: int = 0) -> float:
    start = time.perf_counter()
    for i in range(first, first + n):
        fn(i)
    return n / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--patches", type=int, default=40, help="patches per sampler round")
    parser.add_argument("--steps", type=int, default=5, help="training steps per round")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    config = preset("cpu")
    data_dir, cache, train_ids, _ = prepare_data(config, progress=False)
    from utils.training.pipeline import PatchSampler

    samplers = {
        name: PatchSampler(cache, train_ids, config.patch_shape, config.foreground_fraction, augmentation=name)
        for name in AUGMENTATIONS
    }

    def from_nifti(i):
        rng = np.random.default_rng(i)
        case = load_case(data_dir, train_ids[i % len(train_ids)])
        sample_foreground_patch(standardize_nonzero(case.image), case.label, config.patch_shape, rng=rng)

    nifti = rate(from_nifti, max(4, args.patches // 8))
    model = build_model(config)
    sampler = samplers["basic"]
    X = np.stack([sampler.sample(np.random.default_rng(i))[0] for i in range(config.batch_size)])
    Y = np.stack([sampler.sample(np.random.default_rng(i))[1] for i in range(config.batch_size)])
    model.train_on_batch(X, Y)
    for s in samplers.values():  # warm up (imports, first page faults)
        s.sample(np.random.default_rng(10**6))
    rates = {name: [] for name in AUGMENTATIONS}
    steps = []
    for r in range(args.rounds):  # interleaved, so that the machine's load hits every rate alike
        for name, s in samplers.items():
            rates[name].append(rate(lambda i, s=s: s.sample(np.random.default_rng(i)), args.patches, r * args.patches))
        steps.append(rate(lambda i: model.train_on_batch(X, Y), args.steps) * config.batch_size)
    step = float(np.median(steps))
    print(f"cpu preset, phantom {data_dir}, patch {config.patch_shape}, batch {config.batch_size}")
    print(f"medians of {args.rounds} interleaved rounds ({args.patches} patches, {args.steps} steps each)")
    print(f"decode NIfTI + standardize + sample (baseline)  {nifti:8.2f} patches/s")
    for name in AUGMENTATIONS:
        r = float(np.median(rates[name]))
        label = "before" if name == "basic" else "after"
        print(
            f"cache + {name:6s} augmentation ({label:6s})         {r:8.2f} patches/s   x{r / nifti:.0f} the baseline, "
            f"x{r / step:.1f} what training consumes ({'ok' if r / step >= TARGET else 'BELOW'} the x{TARGET:.0f} target)"
        )
    print(f"training consumes                                {step:8.2f} patches/s")


if __name__ == "__main__":
    main()
