"""Patches per second: from the memory-mapped cache vs decoding NIfTI per sample,
and against the training step rate on this machine.

All three run in this process on the same full-size phantom cases. Prints
the rates and their ratios.
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np

from utils.config import get_settings, preset
from utils.data.datasets import load_case
from utils.preprocessing.transforms import sample_foreground_patch, standardize_nonzero
from utils.training.train import build_model, prepare_data


def rate(fn, n: int) -> float:
    start = time.perf_counter()
    for i in range(n):
        fn(i)
    return n / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--patches", type=int, default=40)
    parser.add_argument("--steps", type=int, default=5)
    args = parser.parse_args()
    config = preset("cpu")
    data_dir, cache, train_ids, _ = prepare_data(config, progress=False)
    from utils.training.pipeline import PatchSampler

    sampler = PatchSampler(cache, train_ids, config.patch_shape, config.foreground_fraction)
    cached = rate(lambda i: sampler.sample(np.random.default_rng(i)), args.patches)

    def from_nifti(i):
        rng = np.random.default_rng(i)
        case = load_case(data_dir, train_ids[i % len(train_ids)])
        sample_foreground_patch(standardize_nonzero(case.image), case.label, config.patch_shape, rng=rng)

    nifti = rate(from_nifti, max(4, args.patches // 8))
    model = build_model(config)
    X = np.stack([sampler.sample(np.random.default_rng(i))[0] for i in range(config.batch_size)])
    Y = np.stack([sampler.sample(np.random.default_rng(i))[1] for i in range(config.batch_size)])
    model.train_on_batch(X, Y)
    step = rate(lambda i: model.train_on_batch(X, Y), args.steps) * config.batch_size
    print(f"{get_settings().mode} phantom, patch {config.patch_shape}, batch {config.batch_size}")
    print(f"decode NIfTI + standardize + sample (baseline) {nifti:8.2f} patches/s")
    print(
        f"memory-mapped cache + augmentation              {cached:8.2f} patches/s   x{cached / nifti:.0f} the baseline"
    )
    print(
        f"training consumes                               {step:8.2f} patches/s   the cache feeds x{cached / step:.0f} that"
    )


if __name__ == "__main__":
    main()
