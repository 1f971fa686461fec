"""The course mode, every preset that follows from it, and where files live.

One function decides the mode, :func:`course_mode`:

1. ``$COURSE_MODE`` if it is set (``ci``, ``cpu`` or ``gpu``);
2. otherwise ``gpu`` when the Keras backend sees a GPU (Colab with a GPU
   runtime sets no variable);
3. otherwise ``cpu``.

Everything sized by the mode is here: :func:`get_settings` (the phantom
dataset and the patch lessons 02-03 cut) and :func:`preset` (the training
run: patch, model, budget, run folder). Lessons 05, 06 and 07, the command
line (``python -m utils.training.train``) and ``make demo`` all go through them, so
they agree on the run and its checkpoints.

* ``ci``  - a tiny phantom (64x64x40) and a handful of steps, so the test suite
  executes every notebook in minutes on two CPU cores;
* ``cpu`` - full-size (240x240x155) phantom cases and a short training run of
  the lesson-03 U-Net at full resolution, narrow (8 base filters), on
  batches of three 64x64x32 patches; 6 of the 16 labelled cases are held out;
* ``gpu`` - the assignment-size model (32 filters, 160x160x16 patches).

Where files live: one setting, ``$COURSE_DATA_DIR``. Unset, data and the
training cache go to ``data/`` and runs to ``runs/`` of the course checkout
(``./data`` and ``./runs`` outside one). Set, all three live under it
(``$COURSE_DATA_DIR/phantom``, ``.../cache``, ``.../runs/gpu``): on Colab,
:func:`use_drive` points it at Google Drive, so a cut session resumes its
training and lesson 06 finds the model.

Nothing rewrites notebook text: the same cells run in every mode.
"""

from __future__ import annotations

import os
import sys
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from .backend import gpu_count

MODE_ENV = "COURSE_MODE"
DATA_ENV = "COURSE_DATA_DIR"
MODES = ("ci", "cpu", "gpu")
DRIVE_DIR = "/content/drive/MyDrive/brats-course"
"""Where :func:`use_drive` keeps data, cache and runs on Colab."""

BRATS_SHAPE = (240, 240, 155)
TINY_SHAPE = (64, 64, 40)
ASSIGNMENT_PATCH = (160, 160, 16)
"""The original assignment's patch: the default of every patch and window, and the gpu preset's."""
FOREGROUND_FRACTION = 0.33
"""Share of training patches centred on tumour (nnU-Net's third): the default of every sampler and of
:class:`TrainConfig`; the cpu preset asks for less (issue 14)."""
AUGMENTATIONS = ("basic", "nnunet")
"""Training-patch augmentation pipelines (``TrainConfig.augmentation``; :mod:`utils.training.augment`):
``basic`` flips every axis and scales/shifts each channel's intensity; ``nnunet`` is nnU-Net's
(batchgenerators: rotation, scaling, noise, blur, brightness, contrast, low resolution, gamma, mirroring)."""
VALIDATION_FOREGROUND_FRACTION = 0.5
"""Share of validation patches centred on tumour, in every mode: half, so ``val_pooled_dice`` sees
tumour and healthy brain alike whatever share the training draws."""

NIFTI_MAX_MB = 1024
"""Most voxel data (MB, decompressed) one NIfTI file may hold before the course refuses to read it:
a 240x240x155x4 float32 BraTS case is 143 MB, so this is about seven of them. A header that
declares more, or a ``.nii.gz`` that decompresses to more, is refused before anything is allocated."""

MODEL_CONFIG_MAX_MB = 64
"""Largest ``config.json`` (MB, uncompressed) a ``.keras`` archive may hold (Keras writes the layer graph there: kilobytes)."""

MODEL_MAX_MB = 4096
"""Largest total size (MB, uncompressed) of the members of a ``.keras`` archive (weights and config; far above any course U-Net)."""

LOCK_WAIT_SECONDS = 0.0
"""How long a command waits for another course command to finish with its output folder before refusing."""


@dataclass(frozen=True)
class Settings:
    """Data sizes of one course mode.

    Attributes:
        mode: ``"ci"``, ``"cpu"`` or ``"gpu"``.
        phantom_shape: grid of the phantom volumes ``(x, y, z)``.
        phantom_train: number of labelled phantom cases (``imagesTr``).
        phantom_test: number of unlabelled phantom cases (``imagesTs``).
        phantom_dir_name: folder under the data root that holds this phantom
            (one per mode: switching modes never rebuilds another mode's data).
        patch_shape: the patch lessons 02 and 03 cut and build for (the
            assignment's 160x160x16); the training patch is
            ``preset(mode).patch_shape``.
        clinical_cases: phantom patients of lesson 08's clinical cohort
            (label maps only, as many as BraTS 2020's 369 outside ci mode).
        clinical_shape: the grid their label maps are drawn on (same field
            of view, so volumes in mL agree with the phantom's).
        shifted_cases: labelled cases of the shifted-scanner test set
            (``phantom-shifted``: as many as the cpu preset holds out).
    """

    mode: str
    phantom_shape: tuple[int, int, int]
    phantom_train: int
    phantom_test: int
    phantom_dir_name: str
    patch_shape: tuple[int, int, int]
    clinical_cases: int = 369
    clinical_shape: tuple[int, int, int] = (96, 96, 62)
    shifted_cases: int = 6


_SETTINGS = {
    "ci": Settings("ci", TINY_SHAPE, 6, 1, "phantom-ci", (16, 16, 16), 80, TINY_SHAPE, shifted_cases=2),
    "cpu": Settings("cpu", BRATS_SHAPE, 16, 2, "phantom", ASSIGNMENT_PATCH),
    "gpu": Settings("gpu", BRATS_SHAPE, 24, 2, "phantom-gpu", ASSIGNMENT_PATCH),
}


@dataclass
class TrainConfig:
    """Every training parameter (the CLI ``python -m utils.training.train`` has one flag per field).

    ``output_dir`` is the run folder; a relative one is resolved by
    :func:`run_dir` (under ``$COURSE_DATA_DIR`` when set, else the checkout).
    The command line makes ``--output-dir`` absolute first: there a relative
    path means the current folder, as usual.
    """

    mode: str = "cpu"  # the preset it came from; it sizes the phantom ("phantom" dataset) and names its folder
    dataset: str = "phantom"  # "phantom", "msd", or the path of a dataset folder (any layout)
    output_dir: str = "runs/cpu"
    patch_shape: tuple[int, int, int] = ASSIGNMENT_PATCH
    batch_size: int = 2  # per replica: with several GPUs or workers a step trains on batch_size x replicas
    epochs: int = 20
    steps_per_epoch: int = 50
    validation_steps: int = 8
    learning_rate: float = 1e-3
    lr_schedule: str = "cosine"  # "cosine", "plateau" or "constant"
    depth: int = 4
    base_filters: int = 32
    normalization: str | None = None  # None, "batch" or "instance"
    downsample: int = 1  # 2: the U-Net works at half resolution (build_unet)
    loss: str = "dice_bce"  # "dice", "dice_bce" or "batch_dice_bce" (Dice pooled over the batch)
    # "classes": one sigmoid per tumour class (edema, non-enhancing, enhancing; the assignment's convention);
    # "regions": one per nested BraTS region (WT, TC, ET; nnU-Net's region-based training). plan.json records it.
    outputs: str = "classes"
    foreground_fraction: float = FOREGROUND_FRACTION
    augmentation: str = "basic"  # one of AUGMENTATIONS: "basic" (flips, intensity scale/shift) or "nnunet"
    val_fraction: float = 0.2
    max_cases: int | None = None  # use only the first N labelled cases
    early_stopping_patience: int = 0  # 0: off
    mixed_precision: str = "auto"  # "auto" (on a GPU), "on", "off"
    jit_compile: str = "auto"  # "auto", "on", "off"
    workers: int = 2
    seed: int = 0
    verbose: int = 2  # 2: one short line per epoch, 1: Keras progress bar, 0: quiet


PRESETS = {
    "ci": TrainConfig(
        mode="ci",
        output_dir="runs/ci",
        patch_shape=(32, 32, 16),
        batch_size=2,
        epochs=2,
        steps_per_epoch=3,
        validation_steps=1,
        depth=3,
        base_filters=4,
        workers=1,
        outputs="regions",  # as the cpu preset, so the test suite runs the lessons' region-based path
    ),
    "cpu": TrainConfig(
        mode="cpu",
        output_dir="runs/cpu",
        patch_shape=(64, 64, 32),  # three of them per step cost what two 80x80x32 did, and saw more places
        batch_size=3,
        epochs=10,
        steps_per_epoch=30,
        validation_steps=4,
        learning_rate=3e-3,
        depth=4,
        base_filters=8,
        normalization="instance",
        loss="batch_dice_bce",  # Dice pooled over the batch (nnU-Net's batch Dice): fewer far false positives
        # more patches of healthy brain than nnU-Net's third: with 0.33 this short run left scattered false-positive
        # edema in the cortex (held-out Dice WT 0.720 against 0.803 with 0.2; issue 14)
        foreground_fraction=0.2,
        val_fraction=0.375,
        workers=1,
        # region outputs (WT, TC, ET) and nnU-Net's augmentation (issue 26, benchmarks/ablation.py, one seed, 6
        # held-out and 6 shifted-scanner cases): mean region Dice 0.791 -> 0.798 held-out and 0.575 -> 0.611
        # shifted; whole-tumour misses inside the tumour 40% -> 0.7% of the misses, enclosed holes 1.9% -> 0.0%
        outputs="regions",
        augmentation="nnunet",
    ),
    "gpu": TrainConfig(
        mode="gpu",
        output_dir="runs/gpu",
        patch_shape=ASSIGNMENT_PATCH,
        batch_size=4,
        epochs=100,
        steps_per_epoch=250,
        validation_steps=30,
        learning_rate=1e-3,
        depth=4,
        base_filters=32,
        normalization="instance",
    ),
}


@dataclass
class PretrainConfig:
    """Every parameter of self-supervised pretraining (``python -m utils.training.pretrain``; lesson 10).

    The network is the segmentation U-Net of the same ``depth``, ``base_filters``
    and ``normalization`` with a 4-channel linear head that restores the
    distorted patch (Models Genesis, Zhou et al. 2019/2021). The distortion
    rates are Models Genesis's defaults.
    """

    mode: str = "cpu"
    dataset: str = "phantom"  # "phantom" (its imagesTs + extra_cases generated unlabelled cases), "msd" or a folder
    extra_cases: int = 4  # phantom only: unlabelled cases generated beside it (labels never written)
    max_volumes: int | None = 24  # volumes held in memory (about 55 MB each at full size)
    output_dir: str = "runs/pretrain-cpu"
    patch_shape: tuple[int, int, int] = (64, 64, 32)  # Models Genesis's cube
    batch_size: int = 2
    epochs: int = 10
    steps_per_epoch: int = 50
    validation_steps: int = 4
    learning_rate: float = 1e-3
    depth: int = 4
    base_filters: int = 32
    normalization: str | None = "instance"
    nonlinear_rate: float = 0.9
    local_rate: float = 0.5
    paint_rate: float = 0.9
    inpaint_rate: float = 0.2  # of the painted patches; the others are out-painted
    flip_rate: float = 0.4
    workers: int = 1
    seed: int = 0
    verbose: int = 2


PRETRAIN_PRESETS = {
    "ci": PretrainConfig(
        mode="ci",
        extra_cases=2,
        output_dir="runs/pretrain-ci",
        patch_shape=(16, 16, 16),
        epochs=2,
        steps_per_epoch=3,
        validation_steps=1,
        depth=3,
        base_filters=4,
        normalization=None,
    ),
    # lesson 10 on two CPU cores: a smaller cube than Models Genesis's, the cpu preset's narrow U-Net
    "cpu": PretrainConfig(
        mode="cpu",
        extra_cases=4,
        output_dir="runs/pretrain-cpu",
        patch_shape=(32, 32, 32),
        batch_size=2,
        epochs=8,
        steps_per_epoch=20,
        validation_steps=3,
        learning_rate=2e-3,
        depth=4,
        base_filters=8,
        normalization="instance",
    ),
    "gpu": PretrainConfig(
        mode="gpu",
        extra_cases=16,
        output_dir="runs/pretrain-gpu",
        patch_shape=(64, 64, 32),
        batch_size=6,
        epochs=100,
        steps_per_epoch=200,
        validation_steps=20,
        depth=4,
        base_filters=32,
        normalization="instance",
    ),
}


def _from_preset(base, what: str, overrides: dict):
    """A fresh copy of the preset ``base`` (a config dataclass) with ``overrides`` applied.

    Raises:
        ValueError: for a parameter the config does not have (``what`` names the config in the message).
    """
    config = type(base)(**asdict(base))
    for key, value in overrides.items():
        if not hasattr(config, key):
            raise ValueError(f"unknown {what} parameter {key!r}; expected one of {sorted(asdict(config))}")
        setattr(config, key, tuple(value) if key == "patch_shape" else value)
    return config


def pretrain_preset(mode: str | None = None, **overrides) -> PretrainConfig:
    """The pretraining configuration of ``mode`` (default: :func:`course_mode`), with overrides.

    Raises:
        ValueError: for an unknown mode or parameter.
    """
    return _from_preset(PRETRAIN_PRESETS[_check_mode(mode)], "pretraining", overrides)


@dataclass(frozen=True)
class TransferBudget:
    """Lesson 10's fine-tuning experiment in one mode: scratch vs pretrained on 1, 2, 4, 8 labelled cases.

    Every run trains the training preset's U-Net of the mode (the pretraining
    preset's depth, filters and normalization) on ``patch_shape`` patches for
    ``epochs`` x ``steps_per_epoch`` steps; the pretrained arm at
    ``finetune_learning_rate``. ``overlap``: the held-out evaluation's sliding window;
    ``score_margin``: held-out Dice on each case's tumour bounding box plus this
    many voxels (None: the whole brain; :func:`utils.training.finetune.scoring_regions`).
    """

    sizes: tuple[int, ...]
    seeds: tuple[int, ...]
    validation_cases: int
    held_out_cases: int
    patch_shape: tuple[int, int, int]
    batch_size: int
    epochs: int
    steps_per_epoch: int
    validation_steps: int
    learning_rate: float
    finetune_learning_rate: float
    overlap: float = 0.0
    score_margin: int | None = None


TRANSFER_BUDGETS = {
    "ci": TransferBudget((1, 2), (0,), 1, 2, (16, 16, 16), 2, 2, 2, 1, 1e-3, 5e-4, score_margin=4),
    # two busy CPU cores, about 9 minutes for the whole lesson: 32-voxel cubes, 120 steps per run; the held-out
    # cases scored around their tumour (16 voxels around its box: ~30 windows, not the whole brain's 150)
    "cpu": TransferBudget((1, 2, 4, 8), (0, 1), 2, 4, (32, 32, 32), 2, 6, 20, 2, 3e-3, 1e-3, score_margin=16),
    "gpu": TransferBudget((1, 2, 4, 8), (0, 1, 2), 2, 6, (64, 64, 32), 4, 20, 50, 8, 1e-3, 5e-4, 0.5),
}


def transfer_budget(mode: str | None = None) -> TransferBudget:
    """Lesson 10's fine-tuning budget for ``mode`` (default: :func:`course_mode`)."""
    return TRANSFER_BUDGETS[_check_mode(mode)]


def course_mode() -> str:
    """The course mode: ``$COURSE_MODE`` if set, else ``gpu`` when Keras sees a GPU, else ``cpu``.

    Raises:
        ValueError: if the variable holds something other than ci/cpu/gpu.
    """
    mode = os.environ.get(MODE_ENV, "").strip().lower()
    if not mode:
        return "gpu" if gpu_count() > 0 else "cpu"
    if mode not in MODES:
        raise ValueError(f"{MODE_ENV} must be one of {', '.join(MODES)}; found {mode!r}.")
    return mode


def _check_mode(mode: str | None) -> str:
    mode = course_mode() if mode is None else mode
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}; found {mode!r}.")
    return mode


def get_settings(mode: str | None = None) -> Settings:
    """Return the data sizes for ``mode`` (default: :func:`course_mode`)."""
    return _SETTINGS[_check_mode(mode)]


def preset(mode: str | None = None, **overrides) -> TrainConfig:
    """The training configuration of ``mode`` (default: :func:`course_mode`), with overrides.

    Raises:
        ValueError: for an unknown mode or parameter.
    """
    return _from_preset(PRESETS[_check_mode(mode)], "training", overrides)


def use_drive(enabled: bool = True, folder: str = DRIVE_DIR) -> Path | None:
    """On Colab, keep data, cache and runs on Google Drive (sets ``$COURSE_DATA_DIR``).

    Lessons 05, 06 and 07 call it from their ``USE_DRIVE`` parameter, so all
    three find the same run. Elsewhere it does nothing but say so.

    Returns:
        The folder now used for data and runs (None when not enabled).
    """
    if not enabled:
        return None
    if "google.colab" not in sys.modules:
        print(f"USE_DRIVE: not on Colab, keeping data in {data_root()} and runs in {project_path('runs')}")
        return None
    if not Path("/content/drive/MyDrive").is_dir():
        from google.colab import drive  # exists only on Colab

        drive.mount("/content/drive")
    Path(folder).mkdir(parents=True, exist_ok=True)
    os.environ[DATA_ENV] = folder
    print(f"data, cache and runs on Google Drive: {folder}")
    return Path(folder)


def repo_root(start: Path | None = None) -> Path | None:
    """Return the course checkout that contains ``start`` (default: cwd), if any."""
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / "pyproject.toml").is_file() and (folder / "utils").is_dir():
            return folder
    return None


def project_path(path: Path | str) -> Path:
    """Resolve a relative path (e.g. ``runs/cpu``) against ``$COURSE_DATA_DIR`` or the checkout.

    Lessons run with their own folder as working directory (``notebooks/``
    or ``notebooks/solutions/``) and the CLI from the repository root; all of
    them must find the same ``runs/`` folder. With ``$COURSE_DATA_DIR`` set
    (e.g. on Google Drive), runs live beside the data.
    """
    path = Path(path).expanduser()
    if path.is_absolute():
        return path
    env = os.environ.get(DATA_ENV)
    if env:
        return Path(env).expanduser().resolve() / path
    return (repo_root() or Path.cwd()).resolve() / path


def run_dir(config: TrainConfig | None = None) -> Path:
    """The run folder of ``config`` (default: the current mode's preset), resolved."""
    return project_path((config or preset()).output_dir)


def data_root() -> Path:
    """Return the folder that holds the course data.

    ``$COURSE_DATA_DIR`` wins; otherwise ``data/`` in the course checkout
    (found from the working directory, so lessons run from ``notebooks/``
    share it); otherwise ``./data`` (e.g. on Colab after a pip install).
    """
    env = os.environ.get(DATA_ENV)
    if env:
        return Path(env).expanduser().resolve()
    root = repo_root()
    return (root / "data") if root is not None else (Path.cwd() / "data").resolve()


def phantom_dir(mode: str | None = None) -> Path:
    """Return where the phantom dataset for ``mode`` lives."""
    return data_root() / get_settings(mode).phantom_dir_name


def shifted_phantom_dir(mode: str | None = None) -> Path:
    """Return where the shifted-scanner test set for ``mode`` lives (the phantom's folder name + ``-shifted``)."""
    return data_root() / f"{get_settings(mode).phantom_dir_name}-shifted"


def msd_dir() -> Path:
    """Return where the real MSD Task01_BrainTumour folder is expected."""
    return data_root() / "Task01_BrainTumour"


def add_config_flags(parser, config_class, optional_int: str | None = None) -> None:
    """One command-line flag per field of a config dataclass (``--patch-shape X Y Z``, ``--epochs N``, ...).

    Every flag defaults to None (the preset's value stays). ``normalization`` and
    ``optional_int`` (e.g. ``max_cases``) take the word ``none`` for None. The
    ``mode`` field is left out: ``--mode`` picks the preset, which carries it.
    """
    for f in fields(config_class):
        if f.name == "mode":
            continue
        flag = "--" + f.name.replace("_", "-")
        if f.name == "patch_shape":
            parser.add_argument(flag, type=int, nargs=3, metavar=("X", "Y", "Z"), default=None)
        elif f.name in ("normalization", optional_int):
            cast = int if f.name == optional_int else str
            parser.add_argument(flag, type=lambda v, c=cast: None if v.lower() == "none" else c(v), default=None)
        else:
            kind = {"int": int, "float": float, "str": str}.get(str(f.type).split(" ")[0], str)
            parser.add_argument(flag, type=kind, default=None)
