"""Whole-case inference on a full 240x240x155 case on this CPU.

Compares, with the same model: the original assignment's tile loop
(non-overlapping windows, one per call) and the sliding window (50 % overlap,
Gaussian weights, batched windows); reports the share of the sliding
window's time spent outside the model (padding, cutting, weighting, stitching).
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np

from utils.config import BRATS_SHAPE, preset
from utils.inference import preprocess_for_model, sliding_window_predict, tile_predict
from utils.model import build_unet
from utils.phantom import make_phantom_case
from utils.train import build_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--preset", default="cpu", choices=["ci", "cpu", "gpu"],
                        help="use the model and patch of this training preset (default: the CPU demo's)")
    parser.add_argument("--base-filters", type=int, default=None,
                        help="instead of the preset's model, a plain U-Net of this width on --window")
    parser.add_argument("--window", type=int, nargs=3, default=[160, 160, 16])
    parser.add_argument("--batch-size", type=int, default=4)
    args = parser.parse_args()
    image = preprocess_for_model(make_phantom_case(0, BRATS_SHAPE)[0].astype(np.float32))
    if args.base_filters is None:
        config = preset(args.preset)
        args.window, args.base_filters = list(config.patch_shape), config.base_filters
        model = build_model(config)
        label = f"the {args.preset} preset's U-Net"
    else:
        model = build_unet((*args.window, 4), base_filters=args.base_filters)
        label = f"U-Net with {args.base_filters} base filters"
    model_time = [0.0]

    def timed(batch):
        start = time.perf_counter()
        out = model.predict_on_batch(batch)
        model_time[0] += time.perf_counter() - start
        return out

    model.predict_on_batch(np.zeros((args.batch_size, *args.window, 4), np.float32))  # build / trace
    model.predict_on_batch(np.zeros((1, *args.window, 4), np.float32))
    start = time.perf_counter()
    tile_predict(None, image, tuple(args.window), predict_fn=timed)
    tiles = time.perf_counter() - start
    model_time[0] = 0.0
    start = time.perf_counter()
    sliding_window_predict(None, image, tuple(args.window), overlap=0.5, batch_size=args.batch_size,
                           progress=False, predict_fn=timed)
    sliding = time.perf_counter() - start
    outside = (sliding - model_time[0]) / sliding
    print(f"case {image.shape}, window {tuple(args.window)}, {label} ({model.count_params():,} parameters)")
    print(f"tile loop, no overlap, 1 window per call (assignment) {tiles:7.1f} s")
    print(f"sliding window, 50% overlap, Gaussian, batch {args.batch_size}        {sliding:7.1f} s   "
          f"x{sliding / tiles:.2f} the tile loop's time")
    print(f"share of the sliding window's time outside the model  {outside:7.1%}")


if __name__ == "__main__":
    main()
