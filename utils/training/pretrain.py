"""Self-supervised pretraining without labels: Models Genesis's restoration task, resumable like training.

The pretext task follows Models Genesis (Zhou et al., MICCAI 2019; Medical
Image Analysis 2021; github.com/MrGiovanni/ModelsGenesis): a patch of an
unlabelled scan is distorted (:mod:`utils.preprocessing.genesis`: non-linear
intensity transform, local pixel shuffling, in-painting or out-painting,
with Models Genesis's rates) and the whole U-Net (encoder *and* decoder) is
trained to restore the original, voxel by voxel (mean squared error), with
random flips (rate 0.4) of both the input and its target. Each patch has four
MRI channels of z-scored intensities: it is distorted in [0, 1] and scaled
back, so the network sees z-scored intensities in pretraining as in
fine-tuning. One difference from Models Genesis: a linear output (it restores
z-scores, not [0, 1] CT intensities, so no sigmoid).

The unlabelled scans (:func:`unlabelled_sources`): the dataset's
``imagesTs`` (the MSD archive's 266 unlabelled cases, the phantom's two), plus
for the phantom ``extra_cases`` generated without labels. A label file is
never opened (a test proves it).

``pretrain(PretrainConfig(...))`` and ``python -m utils.training.pretrain``
run the same code; the run folder is resumable as training's is
(:mod:`utils.training.train`): ``last.keras``, ``best.keras`` (lowest
``val_loss``), ``state.json``, ``config.json``, ``log.csv`` and
``sources.json`` (the volumes it learned from), with an ownership marker and
one writer at a time. Fine-tuning then copies the weights by layer name
(:func:`utils.model.transfer.transfer_weights`): every layer but the head.
"""

from __future__ import annotations

from ..backend import quiet_start

quiet_start()

import argparse
import json
import math
import sys
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import keras
import numpy as np
import pandas as pd
from keras import layers
from keras.utils import PyDataset
from tqdm.auto import tqdm

from ..backend import gpu_count
from ..config import (
    PRETRAIN_PRESETS,
    PretrainConfig,
    add_config_flags,
    data_root,
    get_settings,
    pretrain_preset,
    project_path,
)
from ..data.datasets import list_cases, load_case
from ..data.sources import get_dataset
from ..model.unet import build_unet, load_model
from ..preprocessing.crop import CROP_MARGIN, brain_bbox
from ..preprocessing.genesis import distort
from ..preprocessing.transforms import standardize_nonzero
from ..safety import check_writable, folder_lock, one_line, write_json_atomic
from .train import Checkpoints, EpochLine, check_run_folder, cosine_schedule, prepare_output_dir, recover_run

TOOL = "utils.pretrain"
MONITOR = "val_loss"
HEAD = "restoration"
"""Name of the restoration head (the segmentation U-Net's is ``probabilities``): the one layer never transferred."""
RESUMABLE_CHANGES = ("epochs", "workers", "verbose", "output_dir")


# ----------------------------------------------------------------------------
# Unlabelled volumes and their restoration batches
# ----------------------------------------------------------------------------


def unlabelled_phantom(mode: str, cases: int, progress: bool = True) -> Path:
    """Build (once) ``cases`` extra phantom cases without labels, beside the mode's phantom (another seed)."""
    from ..data.phantom import make_phantom_dataset

    settings = get_settings(mode)
    folder = data_root() / f"{settings.phantom_dir_name}-unlabelled"
    return make_phantom_dataset(
        folder, n_train=0, n_test=cases, shape=settings.phantom_shape, seed=1, progress=progress
    )


def unlabelled_sources(config: PretrainConfig, progress: bool = True) -> list[tuple[Path, str]]:
    """The unlabelled volumes ``(dataset folder, case id)`` pretraining reads: ``imagesTs`` only.

    For the phantom: its ``imagesTs`` plus ``extra_cases`` generated without
    labels; for the MSD data (or a dataset folder in the MSD layout): its
    ``imagesTs``. At most ``max_volumes`` in all.
    """
    folder = get_dataset(config.dataset, config.mode)
    sources = [(folder, c) for c in list_cases(folder, subset="test")]
    if config.dataset == "phantom" and config.extra_cases > 0:
        extra = unlabelled_phantom(config.mode, config.extra_cases, progress)
        sources += [(extra, c) for c in list_cases(extra, subset="test")]
    if config.max_volumes:
        sources = sources[: config.max_volumes]
    if not sources:
        raise ValueError(f"no unlabelled volumes (imagesTs) in {folder}; pretraining needs some")
    return sources


def load_unlabelled(folder: Path, case_id: str) -> np.ndarray:
    """One unlabelled volume as training sees it: cropped to the brain (the cache's margin), z-scored, float16."""
    image = load_case(folder, case_id, subset="test").image
    box = brain_bbox(image, margin=CROP_MARGIN)
    return standardize_nonzero(image[tuple(slice(a, b) for a, b in box)]).astype(np.float16)


class RestorationDataset(PyDataset):
    """Batches ``(distorted, original)`` of random patches of unlabelled volumes, deterministic by ``(seed, epoch, index)``."""

    def __init__(
        self,
        volumes: list[np.ndarray],
        config: PretrainConfig,
        steps: int,
        seed: int = 0,
        fixed: bool = False,
        initial_epoch: int = 0,
    ):
        super().__init__(workers=config.workers, use_multiprocessing=False, max_queue_size=8)
        if not volumes:
            raise ValueError("RestorationDataset needs at least one volume")
        self.volumes, self.config, self.steps = volumes, config, steps
        self.seed, self.fixed, self.epoch = seed, fixed, initial_epoch

    def __len__(self) -> int:
        return self.steps

    def pair(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """One ``(distorted, original)`` patch pair."""
        volume = self.volumes[rng.integers(len(self.volumes))]
        patch_shape = np.array(self.config.patch_shape)
        shape = np.array(volume.shape[:3])
        start = [rng.integers(0, max(s - p, 0) + 1) for s, p in zip(shape, patch_shape)]
        patch = np.asarray(volume[tuple(slice(s, s + p) for s, p in zip(start, patch_shape))], np.float32)
        short = patch_shape - np.array(patch.shape[:3])  # a volume smaller than the patch: zero-padded
        if short.any():
            patch = np.pad(patch, [(0, int(n)) for n in short] + [(0, 0)])
        for _ in range(3):  # Models Genesis: up to three flips
            if rng.random() >= self.config.flip_rate:
                break
            patch = np.flip(patch, axis=int(rng.integers(3)))
        patch = np.ascontiguousarray(patch)
        distorted, _ = distort(patch, rng, self.config)
        return distorted, patch

    def __getitem__(self, index: int):
        if not 0 <= index < self.steps:
            raise IndexError(f"batch {index} out of range 0..{self.steps - 1}")
        epoch = 0 if self.fixed else self.epoch
        rng = np.random.default_rng(np.random.SeedSequence([self.seed, epoch, index]))
        pairs = [self.pair(rng) for _ in range(self.config.batch_size)]
        return np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs])

    def on_epoch_end(self) -> None:
        if not self.fixed:
            self.epoch += 1


# ----------------------------------------------------------------------------
# The network and the pretraining run
# ----------------------------------------------------------------------------


def restoration_unet(config: PretrainConfig) -> keras.Model:
    """The segmentation U-Net of ``config``'s size with a linear 4-channel head named :data:`HEAD` (uncompiled)."""
    seg = build_unet((*config.patch_shape, 4), depth=config.depth, base_filters=config.base_filters,
                     normalization=config.normalization)  # fmt: skip
    features = seg.get_layer("probabilities").input
    restored = layers.Conv3D(4, 1, dtype="float32", name=HEAD)(features)
    return keras.Model(seg.input, restored, name="restoration_unet")


@dataclass
class PretrainResult:
    """What :func:`pretrain` leaves behind."""

    model: keras.Model
    history: pd.DataFrame
    output_dir: Path
    sources: list[str]
    seconds: float
    initial_epoch: int = 0
    total_seconds: float = 0.0  # the training time of all its sessions (state.json), a reused run's included


def pretrain(config: PretrainConfig, resume: bool = True, progress: bool = True) -> PretrainResult:
    """Pretrain (or resume pretraining) the restoration U-Net as ``config`` says, holding the run folder's lock.

    Args:
        config: the parameters.
        resume: continue from ``output_dir/last.keras`` if it is there (a
            finished run is reused as it is); False moves an earlier run aside.
        progress: progress bars while the phantom is built and volumes load.

    Returns:
        A :class:`PretrainResult` (``output_dir/best.keras`` holds the lowest ``val_loss``).

    Raises:
        ValueError: a run with other parameters in ``output_dir``, or no volumes.
        UnsafeWriteError: the folder is refused (not a pretraining run, protected).
    """
    output_dir = project_path(config.output_dir)
    check_run_folder(output_dir, TOOL)
    check_writable(output_dir, "the pretraining run folder")
    with folder_lock(output_dir, TOOL):
        return _pretrain(config, output_dir, resume, progress)


def _pretrain(config: PretrainConfig, output_dir: Path, resume: bool, progress: bool) -> PretrainResult:
    keras.utils.set_random_seed(config.seed)
    output_dir = prepare_output_dir(output_dir, config, resume, tool=TOOL)
    state = recover_run(output_dir)
    sources = unlabelled_sources(config, progress)
    names = [f"{folder.name}/{case}" for folder, case in sources]
    volumes = [load_unlabelled(f, c) for f, c in tqdm(sources, desc="unlabelled", disable=not progress)]
    # the last volume checks the restoration on a scan it never trained on (when there are two or more)
    train_volumes, val_volumes = (volumes[:-1], volumes[-1:]) if len(volumes) > 1 else (volumes, volumes)
    initial_epoch = int(state.get("epochs_done", 0)) if (output_dir / "last.keras").is_file() else 0
    if initial_epoch:
        model = load_model(output_dir / "last.keras")
        if initial_epoch >= config.epochs:
            print(f"{output_dir} already holds a finished pretraining ({initial_epoch} epochs): reusing it")
        else:
            print(
                f"resuming {output_dir} after epoch {initial_epoch} (best {MONITOR} {state.get('best', math.nan):.4f})"
            )
    else:
        model = restoration_unet(config)
        model.compile(
            keras.optimizers.Adam(config.learning_rate), loss="mse", jit_compile="auto" if gpu_count() else False
        )
    write_json_atomic(output_dir / "config.json", json.loads(json.dumps(asdict(config))))
    write_json_atomic(output_dir / "sources.json", {"train": names[: len(train_volumes)], "validation": names[-1:]})
    train_data = RestorationDataset(
        train_volumes, config, config.steps_per_epoch, config.seed, initial_epoch=initial_epoch
    )
    val_data = RestorationDataset(val_volumes, config, config.validation_steps, config.seed + 1, fixed=True)
    callbacks = [
        keras.callbacks.LearningRateScheduler(cosine_schedule(config.learning_rate, config.epochs)),
        Checkpoints(output_dir, MONITOR, state.get("best"), float(state.get("seconds", 0.0)), greater=False),
    ]
    if config.verbose == 2:
        callbacks.append(EpochLine(config.epochs))
    start = time.perf_counter()
    if initial_epoch < config.epochs:
        model.fit(
            train_data,
            validation_data=val_data,
            epochs=config.epochs,
            initial_epoch=initial_epoch,
            callbacks=callbacks,
            verbose=1 if config.verbose == 1 else 0,
        )
    seconds = time.perf_counter() - start
    log = output_dir / "log.csv"
    history = pd.read_csv(log) if log.is_file() else pd.DataFrame()
    total = float(recover_run(output_dir).get("seconds", seconds))
    return PretrainResult(model, history, output_dir, names, seconds, initial_epoch, total)


# ----------------------------------------------------------------------------
# Command line
# ----------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m utils.training.pretrain",
        description="Pretrain the course U-Net without labels (Models Genesis restoration; lesson 10's PretrainConfig).",
    )
    parser.add_argument("--mode", choices=sorted(PRETRAIN_PRESETS), default=None, help="start from this preset")
    parser.add_argument("--no-resume", action="store_true", help="start over (the old run is moved aside)")
    add_config_flags(parser, PretrainConfig, optional_int="max_volumes")
    return parser


def main(argv: list[str] | None = None) -> int:
    """``python -m utils.training.pretrain --mode cpu --epochs 20 --output-dir runs/pretrain``."""
    args = _parser().parse_args(argv)
    overrides = {f.name: getattr(args, f.name) for f in fields(PretrainConfig) if f.name != "mode"}
    overrides = {k: v for k, v in overrides.items() if v is not None}
    if args.output_dir is not None:
        overrides["output_dir"] = str(Path(args.output_dir).expanduser().absolute())
    try:
        config = pretrain_preset(args.mode, **overrides)
        result = pretrain(config, resume=not args.no_resume)
    except (ValueError, OSError) as err:
        print(f"error: {one_line(err)}", file=sys.stderr)
        return 2
    last = result.history.iloc[-1] if len(result.history) else {}
    summary = ", ".join(f"{k} {float(last[k]):.4f}" for k in ("loss", MONITOR) if k in last)
    print(f"done in {result.seconds:.0f} s; {result.output_dir}/best.keras; last epoch: {summary or 'none'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
