"""Whole-case inference on a full 240x240x155 case on this CPU.

With the same model (by default the CPU demo's, built from
``utils.config.preset("cpu")``, so it follows that preset), compares: the
original assignment's tile loop (non-overlapping windows, one per call), the
sliding window as first written (kept below as the baseline: float64 sums, a
stacked copy of each batch, a weighted temporary per window, the normalizer
summed window by window) and ``utils.inference.sliding_window.sliding_window_predict``
(float32 in place, the normalizer from 1-D sums). Both sliding windows place
the same windows (50 % overlap, Gaussian weights, batches of 4). Reported:
the time of each, and the share of the sliding window's time spent outside
the model (cutting, weighting, stitching). Runs are interleaved and the
medians printed, so a busy machine slows every variant alike:

    python benchmarks/bench_inference.py               # cpu preset, 3 rounds
    python benchmarks/bench_inference.py --preset gpu --repeats 1
"""

from __future__ import annotations

import argparse
import itertools
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np

from utils.config import BRATS_SHAPE, PRESETS, preset
from utils.data.phantom import make_phantom_case
from utils.inference.sliding_window import (
    gaussian_weights,
    preprocess_for_model,
    sliding_window_predict,
    tile_predict,
    window_starts,
)
from utils.model.unet import build_unet
from utils.training.train import build_model


def original_sliding_window(predict_fn, image: np.ndarray, window, overlap: float, batch_size: int) -> np.ndarray:
    """The baseline: the sliding window as first written in this course (same windows and weights)."""
    weights = gaussian_weights(window)
    shape = image.shape[:3]
    starts = list(itertools.product(*[window_starts(s, w, overlap) for s, w in zip(shape, window)]))
    output, norm = None, np.zeros(shape, dtype=np.float64)
    for i in range(0, len(starts), batch_size):
        chunk = starts[i : i + batch_size]
        batch = np.stack([image[a : a + window[0], b : b + window[1], c : c + window[2]] for a, b, c in chunk])
        pred = np.asarray(predict_fn(batch.astype(np.float32, copy=False)), dtype=np.float32)
        if output is None:
            output = np.zeros((*shape, pred.shape[-1]), dtype=np.float64)
        for (a, b, c), p in zip(chunk, pred):
            region = (slice(a, a + window[0]), slice(b, b + window[1]), slice(c, c + window[2]))
            output[region] += p * weights[..., None]
            norm[region] += weights
    output /= norm[..., None]
    return output.astype(np.float32)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--preset",
        default="cpu",
        choices=list(PRESETS),
        help="use the model and patch of this training preset (default: the CPU demo's)",
    )
    parser.add_argument(
        "--base-filters",
        type=int,
        default=None,
        help="instead of the preset's model, a plain U-Net of this width on --window",
    )
    parser.add_argument("--window", type=int, nargs=3, default=[160, 160, 16])
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3, help="interleaved rounds (medians reported)")
    args = parser.parse_args()
    image = preprocess_for_model(make_phantom_case(0, BRATS_SHAPE)[0].astype(np.float32))
    if args.base_filters is None:
        config = preset(args.preset)
        window = tuple(config.patch_shape)
        model = build_model(config)
        label = f"the {args.preset} preset's U-Net (downsample={config.downsample})"
    else:
        window = tuple(args.window)
        model = build_unet((*window, 4), base_filters=args.base_filters)
        label = f"U-Net with {args.base_filters} base filters"
    model_time = [0.0]

    def timed(batch):
        start = time.perf_counter()
        out = model.predict_on_batch(batch)
        model_time[0] += time.perf_counter() - start
        return out

    def run(name: str):
        model_time[0] = 0.0
        start = time.perf_counter()
        if name == "tiles":
            out = tile_predict(None, image, window, predict_fn=timed)
        elif name == "original":
            out = original_sliding_window(timed, image, window, 0.5, args.batch_size)
        else:
            out = sliding_window_predict(
                None, image, window, overlap=0.5, batch_size=args.batch_size, progress=False, predict_fn=timed
            )
        total = time.perf_counter() - start
        return out, total, model_time[0]

    model.predict_on_batch(np.zeros((args.batch_size, *window, 4), np.float32))  # build / trace
    model.predict_on_batch(np.zeros((1, *window, 4), np.float32))
    names = ("tiles", "original", "now")
    times: dict[str, list[tuple[float, float]]] = {name: [] for name in names}
    difference = 0.0
    for _ in range(args.repeats):
        outputs = {}
        for name in names:
            outputs[name], total, inside = run(name)
            times[name].append((total, inside))
        difference = max(difference, float(np.abs(outputs["original"] - outputs["now"]).max()))

    windows = np.prod([len(window_starts(s, w, 0.5)) for s, w in zip(image.shape[:3], window)])
    print(f"case {image.shape}, window {window}, {label}, {model.count_params():,} parameters")
    print(f"{windows} windows at 50% overlap, batch {args.batch_size}; medians of {args.repeats} interleaved rounds")
    print(f"{'':<52}{'total':>8}{'model':>8}{'outside':>9}{'share':>8}")
    rows = {
        "tiles": "tile loop, no overlap, 1 window per call (assignment)",
        "original": "sliding window, original (float64, copies)",
        "now": "sliding window, utils.inference.sliding_window",
    }
    for name in names:
        total, model_s, outside, share = (
            float(np.median(values)) for values in zip(*[(t, m, t - m, (t - m) / t) for t, m in times[name]])
        )
        print(f"{rows[name]:<52}{total:7.2f}s{model_s:7.2f}s{outside:8.2f}s{share:8.1%}")
    print(f"largest difference between the two sliding windows' outputs: {difference:.1e}")


if __name__ == "__main__":
    main()
