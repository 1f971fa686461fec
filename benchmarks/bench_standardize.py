"""Vectorized standardize() against the original per-slice loop, full-size case.

Prints the best-of-N wall time of each and their ratio. Both run in this
process on the same array; the results are checked to agree first.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from utils.config import BRATS_SHAPE
from utils.data.phantom import make_phantom_case
from utils.preprocessing.transforms import standardize, standardize_nonzero


def standardize_slices_loop(image: np.ndarray) -> np.ndarray:
    """The original assignment's per-slice loop: the baseline (and tests/preprocessing/test_preprocessing.py's oracle).

    Same result as :func:`standardize`, one ``(channel, z)`` slice at a time.
    """
    image = np.asarray(image, dtype=np.float32)
    out = np.zeros_like(image)
    for c in range(image.shape[3]):
        for z in range(image.shape[2]):
            sl = image[:, :, z, c]
            centred = sl - sl.mean(dtype=np.float64)
            std = sl.std(dtype=np.float64)
            if std != 0:
                out[:, :, z, c] = centred / std
    return out


def best_of(fn, arg, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn(arg)
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    image = make_phantom_case(0, BRATS_SHAPE)[0].astype(np.float32)
    np.testing.assert_allclose(standardize(image), standardize_slices_loop(image), atol=1e-4)
    loop = best_of(standardize_slices_loop, image, args.repeats)
    vec = best_of(standardize, image, args.repeats)
    nonzero = best_of(standardize_nonzero, image, args.repeats)
    print(f"image {image.shape} float32, best of {args.repeats}")
    print(f"per-slice loop (baseline)   {loop * 1000:8.1f} ms")
    print(f"standardize (vectorized)    {vec * 1000:8.1f} ms   speed-up x{loop / vec:.1f}")
    print(f"standardize_nonzero (brain) {nonzero * 1000:8.1f} ms   speed-up x{loop / nonzero:.1f}")


if __name__ == "__main__":
    main()
