"""Training: one function and one command line with the same parameters.

``train(TrainConfig(...))`` (lesson 05) and ``python -m utils.training.train ...`` run
the same code: build or reuse the phantom / MSD data, split cases by seed,
build the training cache, stream augmented patches, fit a U-Net with soft Dice
(or Dice + BCE), validate on held-out cases, and keep, in the output folder:

* ``last.keras`` (every epoch) and ``best.keras`` (best ``val_pooled_dice``:
  hard Dice pooled over the validation patches, see ``losses.PooledDice``),
  written atomically - a run killed mid-write never loses a checkpoint;
* ``state.json`` (epochs done, best score), ``config.json`` (the
  parameters, and under ``precision`` the dtype policy the session trained in)
  and ``plan.json`` (the run-folder contract prediction reads: preprocessing,
  window, output kind, split; :mod:`utils.preprocessing.plan`);
* ``log.csv`` (one row per epoch, appended across resumed runs) and
  ``tensorboard/``.

Run the same command again and it resumes from ``last.keras`` with the epoch
count, the optimizer state, the learning-rate schedule and the log. Each epoch
is committed in an order that survives a kill at any instant: no ``log.csv``
row is lost and no epoch is trained twice without saying so
(:class:`Checkpoints`, :func:`recover_run`). The output folder carries an
ownership marker: a non-empty folder that training did not create (the
checkout, ``notebooks/``, home) is refused, and ``--no-resume`` moves only an
earlier run aside, never deleting anything. A run that already has its
epochs is reused as it is (ask for more epochs to continue it). The mode and
its presets live in ``utils.config``.
On a GPU it turns on mixed precision; such a model still predicts, and its
run resumes, on a machine without a GPU, in float32 with the same weights
(``utils.model.load_model``). With several GPUs (TensorFlow) it
trains under ``tf.distribute.MirroredStrategy``, and on several machines,
when ``TF_CONFIG`` names several workers, under
``MultiWorkerMirroredStrategy``: ``batch_size`` is then per replica and only
the chief writes the run folder (:mod:`utils.training.distribute`).
"""

from __future__ import annotations

# First, before Keras: a spawned data worker (utils.parallel) re-imports the module that `python -m` ran,
# so this keeps TensorFlow's start-up notices out of each worker too, as `import utils` does in this process.
from ..backend import quiet_start

quiet_start()

import argparse
import contextlib
import csv
import json
import math
import os
import sys
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import keras
import numpy as np
import pandas as pd

from ..backend import gpu_count
from ..config import PRESETS, VALIDATION_FOREGROUND_FRACTION, TrainConfig, add_config_flags, data_root, preset, run_dir
from ..data.datasets import list_cases, split_cases
from ..data.sources import get_dataset
from ..inference.sliding_window import evaluate_model
from ..model.losses import (
    DICE_METRICS,
    batch_dice_bce_loss,
    dice_bce_loss,
    dice_coefficient,
    pooled_dice_metrics,
    soft_dice_loss,
)
from ..model.unet import configured_unet, dtype_policy_of, dtype_policy_scope, load_model, saved_dtype_policy
from ..preprocessing.plan import OUTPUT_KINDS, make_plan, read_plan, write_plan
from ..safety import (
    OwnedFiles,
    UnsafeWriteError,
    atomic_path,
    check_target,
    check_writable,
    file_record,
    folder_lock,
    is_empty_folder,
    matches_record,
    one_line,
    read_json_object,
    relock_moved,
    write_bytes_atomic,
    write_json_atomic,
)
from . import distribute
from .augment import check_augmentation
from .cache import CacheError, TrainingCache, build_cache
from .pipeline import PatchDataset, PatchSampler

LOSSES = {"dice": soft_dice_loss, "dice_bce": dice_bce_loss, "batch_dice_bce": batch_dice_bce_loss}
MONITOR = "val_pooled_dice"  # Dice pooled over the validation patches (see losses.PooledDice)
# Parameters that may change when a run is resumed; any other change is refused.
RESUMABLE_CHANGES = ("epochs", "workers", "verbose", "early_stopping_patience", "output_dir")
ADDED_FIELDS = {"mode": None, "augmentation": "basic", "outputs": "classes"}
"""Fields newer than some run folders, with the value every run had before the field existed: a
``config.json`` without one resumes when the value asked for is that one (None: any value)."""
PENDING = ".last.pending.keras"
"""The next ``last.keras`` while an epoch is being committed (see :class:`Checkpoints`)."""
TOOL = "utils.train"


@dataclass
class TrainResult:
    """What :func:`train` leaves behind."""

    model: keras.Model
    history: pd.DataFrame
    output_dir: Path
    train_cases: list[str]
    val_cases: list[str]
    seconds: float
    initial_epoch: int = 0
    data_dir: Path | None = None
    extra: dict = field(default_factory=dict)


# ----------------------------------------------------------------------------
# Callbacks: atomic checkpoints, resumable schedule and early stopping
# ----------------------------------------------------------------------------


def save_atomic(model: keras.Model, path: Path) -> None:
    """Save ``model`` to ``path`` via a temporary file and a rename."""
    with atomic_path(path) as tmp:
        model.save(tmp)


def append_log_row(path: Path, epoch: int, logs: dict) -> None:
    """Append one epoch's row to ``log.csv`` and flush it to disk (fsync).

    The columns are fixed by the first row (``epoch`` then the sorted metric
    names), as Keras' CSVLogger does; a missing value is written as ``NA``.
    """
    fields = None
    if path.is_file() and path.stat().st_size:
        with open(path, newline="") as fh:
            fields = next(csv.reader(fh), None)
    new = not fields
    if new:
        fields = ["epoch", *sorted(logs)]
    row = {"epoch": epoch, **{k: float(v) if np.ndim(v) == 0 else v for k, v in logs.items()}}
    with open(path, "a", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=fields, restval="NA", extrasaction="ignore")
        if new:
            writer.writeheader()
        writer.writerow(row)
        fh.flush()
        os.fsync(fh.fileno())


class Checkpoints(keras.callbacks.Callback):
    """Commit each epoch: ``log.csv`` row, ``best.keras``, ``state.json``, ``last.keras``.

    The order makes a kill at any instant recoverable (:func:`recover_run`):
    the next ``last.keras`` is first written in full as :data:`PENDING`; then
    the log row is appended (fsync), ``best.keras`` replaced on improvement,
    and ``state.json`` written - that is the commit, it names the pending file
    with its size - and last the pending file becomes ``last.keras``. A run
    resumed after a kill finishes the rename, or, if the epoch was not
    committed, drops its log row and says that the epoch is trained again.
    ``state.json`` also accumulates the training time over resumed runs.
    Put it after the callbacks that add to ``logs`` (learning rate). ``greater``: whether a higher
    ``monitor`` is better (a Dice; False for a loss, as in pretraining).
    """

    def __init__(
        self,
        output_dir: Path,
        monitor: str = MONITOR,
        best: float | None = None,
        seconds: float = 0.0,
        greater: bool = True,
    ):
        super().__init__()
        self.output_dir, self.monitor, self.greater = output_dir, monitor, greater
        self.best = (-math.inf if greater else math.inf) if best is None else best
        self.previous_seconds, self.start = seconds, time.perf_counter()

    def on_train_begin(self, logs=None):
        self.start = time.perf_counter()

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch_start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        logs = logs if logs is not None else {}
        # wall time of the epoch (training steps and validation), logged so a lesson can tell warm-up from steady state
        logs["epoch_seconds"] = time.perf_counter() - getattr(self, "epoch_start", self.start)
        pending = self.output_dir / PENDING
        save_atomic(self.model, pending)
        append_log_row(self.output_dir / "log.csv", epoch, logs)
        value = logs.get(self.monitor)
        improved = value is not None and (float(value) > self.best if self.greater else float(value) < self.best)
        if improved:
            self.best = float(value)
            save_atomic(self.model, self.output_dir / "best.keras")
        previous = _read_state(self.output_dir)
        write_json_atomic(
            self.output_dir / "state.json",
            {
                "epochs_done": epoch + 1,
                "best": self.best,
                "monitor": self.monitor,
                "best_epoch": epoch + 1 if improved else previous.get("best_epoch"),
                "seconds": round(self.previous_seconds + time.perf_counter() - self.start, 1),
                "pending": file_record(pending, hashed=False),
            },
        )
        os.replace(pending, self.output_dir / "last.keras")


def recover_run(output_dir: Path) -> dict:
    """Bring a run folder killed mid-commit back to its last committed epoch.

    * ``state.json`` committed epoch N but the rename did not happen: the
      pending checkpoint becomes ``last.keras``.
    * The epoch was not committed: the pending checkpoint is dropped.
    * ``log.csv`` rows of epochs after the committed ones (and a torn last
      line) are dropped, with a message, so no epoch is logged or trained
      twice silently.

    Returns:
        The state (``{}`` for a new run).
    """
    output_dir = Path(output_dir)
    state = _read_state(output_dir)
    done = int(state.get("epochs_done", 0))
    pending = output_dir / PENDING
    if pending.is_file():
        if matches_record(pending, state.get("pending") or {}):
            os.replace(pending, output_dir / "last.keras")
        else:
            pending.unlink()
            print(f"epoch {done + 1} of {output_dir} was interrupted before it was committed; it is trained again")
    log = output_dir / "log.csv"
    if log.is_file():
        text = log.read_text()
        lines = text.splitlines(keepends=True)
        keep, dropped = lines[:1], []
        width = len(next(csv.reader(lines[:1]), []))
        for line in lines[1:]:
            cells = next(csv.reader([line]), [])
            complete = line.endswith("\n") and len(cells) == width
            try:
                epoch = int(float(cells[0]))
            except (ValueError, IndexError):
                epoch = None
            if complete and epoch is not None and epoch < done:
                keep.append(line)
            else:
                dropped.append(epoch + 1 if epoch is not None else "?")
        if dropped:
            write_bytes_atomic(log, "".join(keep).encode())
            print(
                f"log.csv of {output_dir}: dropped the row(s) of uncommitted epoch(s) {dropped} "
                f"(the run was killed after logging); training resumes after epoch {done}"
            )
    return state


class EpochLine(keras.callbacks.Callback):
    """One short line per epoch: time, losses and the Dice that selects ``best.keras``.

    Keras's own ``verbose=2`` prints every metric (20 of them here) on one
    very long line; the learning curves show those.
    """

    def __init__(self, epochs: int):
        super().__init__()
        self.epochs, self.start = epochs, time.perf_counter()

    def on_epoch_begin(self, epoch, logs=None):
        self.start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        parts = [f"{key} {float(logs[key]):.4f}" for key in ("loss", "val_loss", MONITOR) if key in logs]
        print(
            f"epoch {epoch + 1}/{self.epochs} - {time.perf_counter() - self.start:.0f} s - " + " - ".join(parts),
            flush=True,
        )


class TimeBudget(keras.callbacks.Callback):
    """Stop training once ``seconds`` of wall time have passed (checked after each batch)."""

    def __init__(self, seconds: float):
        super().__init__()
        self.seconds, self.start = seconds, time.perf_counter()

    def on_train_begin(self, logs=None):
        self.start = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        if time.perf_counter() - self.start > self.seconds:
            self.model.stop_training = True


class ResumableEarlyStopping(keras.callbacks.EarlyStopping):
    """EarlyStopping that starts from the best score of the run it resumes."""

    def __init__(self, initial_best: float | None = None, **kwargs):
        super().__init__(**kwargs)
        self.initial_best = initial_best

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)
        if self.initial_best is not None and math.isfinite(self.initial_best):
            self.best = self.initial_best


def cosine_schedule(base_lr: float, epochs: int, floor: float = 0.02):
    """Learning rate of epoch ``e``: cosine from ``base_lr`` down to ``floor * base_lr``."""

    def schedule(epoch, lr=None):
        progress = min(epoch / max(epochs, 1), 1.0)
        return float(base_lr * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))))

    return schedule


def _read_config(output_dir: Path) -> dict:
    path = Path(output_dir) / "config.json"
    return read_json_object(path, "run configuration") if path.is_file() else {}


def _read_state(output_dir: Path) -> dict:
    path = Path(output_dir) / "state.json"
    return read_json_object(path, "training state") if path.is_file() else {}


# ----------------------------------------------------------------------------
# Training
# ----------------------------------------------------------------------------


def is_run_folder(folder: Path, tool: str = TOOL) -> bool:
    """True if ``folder`` was made by :func:`train` (or by ``tool``: its marker, or a run from before markers existed)."""
    owned = OwnedFiles(folder, tool)
    if owned.exists:
        return read_json_object(owned.path, "ownership marker").get("tool") == tool
    return (folder / "config.json").is_file() and (folder / "state.json").is_file()


def prepare_output_dir(output_dir: Path, config, resume: bool, tool: str = TOOL) -> Path:
    """Check, create or move aside the run folder; return it.

    A non-empty folder that :func:`train` did not create is refused (with
    ``resume`` or without), as are the filesystem root, the home folder and a
    git checkout's root. ``resume=False`` moves an earlier run aside (renamed
    ``<name>-old-<time>``); nothing is deleted. ``config`` is a :class:`TrainConfig` (or the
    dataclass of another tool, e.g. pretraining's, with its ``tool`` name in the ownership marker).

    Raises:
        UnsafeWriteError: the folder is refused. ValueError: it holds a run
            with other parameters (resume).
    """
    used = check_run_folder(output_dir, tool)
    if used and not resume:
        moved = output_dir.with_name(f"{output_dir.name}-old-{time.strftime('%Y%m%d-%H%M%S')}")
        output_dir.rename(moved)
        output_dir.mkdir(parents=True, exist_ok=True)
        relock_moved(output_dir)  # the lock went with the old run: hold the new folder
        print(f"resume=False: the previous run in {output_dir} was moved to {moved}")
    elif used and (output_dir / "last.keras").is_file():
        _check_resume(output_dir, config)
    output_dir.mkdir(parents=True, exist_ok=True)
    owned = OwnedFiles(output_dir, tool)
    if not owned.exists:
        owned.save()
    return output_dir


def check_run_folder(output_dir: Path, tool: str = TOOL) -> bool:
    """Refuse a run folder no flag unlocks, or a non-empty one that :func:`train` (``tool``) did not make; return whether it is used."""
    check_target(output_dir, "--output-dir")
    if output_dir.exists() and not output_dir.is_dir():
        raise UnsafeWriteError(f"--output-dir {output_dir} is a file, not a folder")
    used = output_dir.is_dir() and not is_empty_folder(output_dir)
    if used and not is_run_folder(output_dir, tool):
        raise UnsafeWriteError(
            f"refusing to use --output-dir {output_dir}: it is not empty and is not a training run folder "
            "(no ownership marker); choose a new or empty folder"
        )
    return used


def _check_resume(output_dir: Path, config) -> None:
    path = output_dir / "config.json"
    if not path.is_file():
        return
    saved = read_json_object(path, "run configuration")
    current = json.loads(json.dumps(asdict(config)))
    changed = {}
    for k, v in current.items():
        old = saved.get(k, ADDED_FIELDS.get(k))  # a field the run predates: the value it had then
        if k in RESUMABLE_CHANGES or (k not in saved and k in ADDED_FIELDS and old is None):
            continue
        if old != v:  # e.g. a classes run is never resumed with region targets
            changed[k] = (old, v)
    if changed:
        details = ", ".join(f"{k}: {old!r} -> {new!r}" for k, (old, new) in changed.items())
        raise ValueError(
            f"{output_dir} holds a run with other parameters ({details}); choose another output_dir, "
            "or resume=False (--no-resume) to start over there"
        )


def prepare_data(config: TrainConfig, progress: bool = True, reuse: bool = False):
    """Dataset, split and training cache for ``config``.

    Args:
        config: the parameters.
        progress: progress bars.
        reuse: open the cache as it is when it holds every case, without
            touching it (a non-chief worker, after the chief built it on the
            shared filesystem); otherwise, or when that fails, build it.

    The split is the one the run folder's ``plan.json`` records when it has
    one for this dataset (a resumed run, lessons 06 and 07 after lesson 05),
    else a new stratified split by ``config.seed``.

    Returns:
        ``(data_dir, cache, train_ids, val_ids)``.
    """
    data_dir = get_dataset(config.dataset, config.mode)
    case_ids = list_cases(data_dir)
    if config.max_cases:
        case_ids = case_ids[: config.max_cases]
    cache_dir = data_root() / "cache" / data_dir.name
    cache = None
    if reuse:
        with contextlib.suppress(CacheError):
            cache = TrainingCache(cache_dir)
        if cache is not None and set(case_ids) - set(cache.case_ids):
            cache = None
    if cache is None:
        cache = build_cache(data_dir, cache_dir, case_ids, progress=progress)
    plan = read_plan(run_dir(config))
    recorded = plan is not None and (plan.mode, plan.dataset) == (config.mode, str(config.dataset))
    if recorded and set(plan.train_cases + plan.validation_cases) <= set(case_ids):
        return data_dir, cache, list(plan.train_cases), list(plan.validation_cases)
    # held-out cases with and without enhancing tumour in the data's proportion (ET Dice
    # of a case without it is 1 or 0, so their share sways the mean)
    has_et = {c: cache.voxels(c)[3] > 0 for c in case_ids}
    train_ids, val_ids = split_cases(case_ids, config.val_fraction, config.seed, strata=has_et)
    return data_dir, cache, train_ids, val_ids


def build_model(config: TrainConfig) -> keras.Model:
    """The U-Net of ``config``, compiled with its loss and the Dice metrics."""
    model = configured_unet(config)
    # XLA on a CPU measured 4.5-8x slower per training step (issue 18): "auto" means off
    # there, whatever Keras's own "auto" would pick on a given version; on a GPU Keras decides.
    jit = {"auto": "auto" if gpu_count() else False, "on": True, "off": False}[str(config.jit_compile)]
    model.compile(
        optimizer=keras.optimizers.Adam(config.learning_rate),
        loss=LOSSES[config.loss],
        metrics=[dice_coefficient, *DICE_METRICS[config.outputs], *pooled_dice_metrics(config.outputs)],
        jit_compile=jit,
    )
    return model


def train(
    config: TrainConfig,
    resume: bool = True,
    progress: bool = True,
    callbacks: list[keras.callbacks.Callback] | None = None,
) -> TrainResult:
    """Train (or resume training) a U-Net as ``config`` says, holding the run folder's lock throughout.

    One writer per run folder: a second training into a folder another
    process is training in is refused in one line naming that process
    (:func:`utils.safety.folder_lock`). The folder is checked (protected
    places, a folder that is not a run) and must be writable before anything
    starts. Arguments and result: see :func:`_train`.
    """
    check_augmentation(config.augmentation)  # before the run folder is made
    cluster = distribute.current_cluster()
    if cluster is not None and not cluster.is_chief:  # workers read what the chief writes, under its lock
        return _train(config, resume, progress, callbacks)
    output_dir = run_dir(config)
    check_run_folder(output_dir)
    check_writable(output_dir, "the run folder")
    with folder_lock(output_dir, TOOL):
        return _train(config, resume, progress, callbacks)


def _train(
    config: TrainConfig,
    resume: bool = True,
    progress: bool = True,
    callbacks: list[keras.callbacks.Callback] | None = None,
) -> TrainResult:
    """Train (or resume training) a U-Net as ``config`` says (the run folder already locked by :func:`train`).

    Args:
        config: the parameters.
        resume: continue from ``output_dir/last.keras`` if it is there.
        progress: progress bars for data preparation.
        callbacks: extra Keras callbacks (after the course's own).

    Returns:
        A :class:`TrainResult` (the model holds the last epoch's weights;
        ``output_dir/best.keras`` the best ``val_pooled_dice``).
    """
    if config.loss not in LOSSES:
        raise ValueError(f"loss must be one of {sorted(LOSSES)}; found {config.loss!r}")
    if config.outputs not in OUTPUT_KINDS:
        raise ValueError(f"outputs must be one of {OUTPUT_KINDS}; found {config.outputs!r}")
    if config.lr_schedule not in ("cosine", "plateau", "constant"):
        raise ValueError(f"lr_schedule must be cosine, plateau or constant; found {config.lr_schedule!r}")
    # The strategy first: a multi-worker one must exist before TensorFlow runs anything.
    cluster = distribute.current_cluster()
    keras.utils.set_random_seed(config.seed)
    strategy = distribute.make_strategy(distribute.strategy_kind(cluster, gpu_count(), keras.backend.backend()))
    chief = cluster is None or cluster.is_chief
    output_dir = run_dir(config)
    if chief:  # only the chief checks, creates, moves aside or repairs the run folder and builds the data
        output_dir = prepare_output_dir(output_dir, config, resume)
        state = recover_run(output_dir)
        if resume and state.get("monitor", MONITOR) != MONITOR:
            # A run from an older course version: its model logs other metrics and its best.keras
            # was chosen by another score, so neither reusing nor resuming it would be what it says.
            raise ValueError(
                f"{output_dir} holds a run from an older version of the course (best.keras chosen by "
                f"{state['monitor']}; the course now chooses by {MONITOR}). Pass resume=False (--no-resume) "
                "to move it aside and train again."
            )
        data_dir, cache, train_ids, val_ids = prepare_data(config, progress)
    if cluster is not None:
        distribute.check_same(strategy, 0, "the start (a barrier: the chief has prepared the run folder)")
    if not chief:  # reads what the chief prepared (a shared filesystem)
        state = _read_state(output_dir)
        data_dir, cache, train_ids, val_ids = prepare_data(config, progress=False, reuse=True)
    initial_epoch = int(state.get("epochs_done", 0)) if (output_dir / "last.keras").is_file() else 0
    if cluster is not None:
        distribute.check_same(strategy, initial_epoch, f"the epochs already done in {output_dir}")

    on_gpu = gpu_count() > 0
    mixed = config.mixed_precision == "on" or (config.mixed_precision == "auto" and on_gpu)
    if (
        mixed
        and not on_gpu
        and not initial_epoch
        and config.jit_compile != "on"
        and keras.backend.backend() == "tensorflow"
    ):
        raise ValueError(
            "mixed_precision='on' without a GPU needs jit_compile='on' (TensorFlow has no float16 CPU kernel "
            "for MaxPool3D; XLA compiles one); or train in float32 with mixed_precision='off'"
        )
    # the policy the new model's layers get (a resumed model keeps its own; see load_model)
    with (
        strategy.scope() if strategy else contextlib.nullcontext(),
        dtype_policy_scope("mixed_float16" if mixed else "float32"),
    ):
        if initial_epoch:
            model = load_model(output_dir / "last.keras")
            saved = saved_dtype_policy(output_dir / "last.keras")
            if saved != dtype_policy_of(model):
                print(
                    f"{output_dir}/last.keras was trained with mixed precision ({saved}); no GPU is visible, so "
                    "training continues in float32 with the same weights and optimizer state"
                )
            if initial_epoch >= config.epochs:
                print(
                    f"{output_dir} already holds a finished run ({initial_epoch} epochs, {config.epochs} asked "
                    f"for): nothing to train, reusing it. Ask for more epochs to continue it, or pass "
                    "resume=False (--no-resume) to start over."
                )
            else:
                print(
                    f"resuming {output_dir} after epoch {initial_epoch} (best {state.get('monitor')} "
                    f"{state.get('best', float('nan')):.4f})"
                )
        else:
            model = build_model(config)
    if chief:  # the precision this session trains in, beside the parameters (a field no resume check compares)
        policy = dtype_policy_of(model)
        earlier = _read_config(output_dir).get("precision", {}).get("trained_in", []) if initial_epoch else []
        precision = {
            "dtype_policy": policy,
            "trained_in": [*earlier, policy] if earlier[-1:] != [policy] else earlier,  # every policy, in order
            "inference_without_gpu": "float32: utils.model.unet.load_model rebuilds a mixed-precision model "
            "in float32 with the same weights where no GPU is visible",
        }
        write_json_atomic(
            output_dir / "config.json", {**json.loads(json.dumps(asdict(config))), "precision": precision}
        )
        write_plan(output_dir, make_plan(config, train_ids, val_ids))  # what prediction needs (plan.json)

    replicas = strategy.num_replicas_in_sync if strategy else 1  # each draws its own batches of the streams
    train_data = PatchDataset(
        PatchSampler(
            cache,
            train_ids,
            config.patch_shape,
            config.foreground_fraction,
            augmentation=config.augmentation,
            outputs=config.outputs,
        ),
        config.batch_size,
        config.steps_per_epoch * replicas,
        seed=config.seed,
        initial_epoch=initial_epoch,
        workers=config.workers,
    )
    val_data = PatchDataset(
        PatchSampler(
            cache, val_ids, config.patch_shape, VALIDATION_FOREGROUND_FRACTION, augment=False, outputs=config.outputs
        ),
        config.batch_size,
        config.validation_steps * replicas,
        seed=config.seed + 1,
        fixed=True,
        workers=config.workers,
    )
    if strategy is not None:
        train_data = distribute.distributed_patches(
            strategy, train_data, config.steps_per_epoch, initial_epoch, config.workers
        )
        val_data = distribute.distributed_patches(strategy, val_data, config.validation_steps, parallel=config.workers)
        if cluster is not None:
            distribute.build_on_local_batch(model, strategy)
        if chief:
            print(distribute.describe(strategy, cluster, config.batch_size), flush=True)
    # The other workers run the same callbacks (saving may need every worker) into a scratch folder.
    write_dir = output_dir if chief else cluster.scratch_dir()
    course_callbacks = [keras.callbacks.TensorBoard(str(write_dir / "tensorboard"), write_graph=False)]
    if config.lr_schedule == "cosine":
        course_callbacks.append(
            keras.callbacks.LearningRateScheduler(cosine_schedule(config.learning_rate, config.epochs))
        )
    elif config.lr_schedule == "plateau":
        course_callbacks.append(keras.callbacks.ReduceLROnPlateau(MONITOR, mode="max", factor=0.5, patience=3))
    if config.early_stopping_patience:
        course_callbacks.append(
            ResumableEarlyStopping(
                initial_best=state.get("best"), monitor=MONITOR, mode="max", patience=config.early_stopping_patience
            )
        )
    # last: it commits the epoch (log row, checkpoints, state) with the learning rate the schedulers logged
    course_callbacks.append(
        Checkpoints(write_dir, best=float(state.get("best", -math.inf)), seconds=float(state.get("seconds", 0.0)))
    )
    # a distributed dataset repeats: fit needs to be told where epochs end
    steps = (
        {"steps_per_epoch": config.steps_per_epoch, "validation_steps": config.validation_steps, "shuffle": False}
        if strategy
        else {}
    )
    start = time.perf_counter()
    try:
        if initial_epoch < config.epochs:
            lines = [EpochLine(config.epochs)] if config.verbose == 2 and chief else []
            model.fit(
                train_data,
                validation_data=val_data,
                epochs=config.epochs,
                initial_epoch=initial_epoch,
                callbacks=course_callbacks + lines + list(callbacks or []),
                verbose=1 if config.verbose == 1 and chief else 0,
                **steps,
            )
        seconds = time.perf_counter() - start
        log = (output_dir if chief or initial_epoch >= config.epochs else write_dir) / "log.csv"
        history = pd.read_csv(log) if log.is_file() else pd.DataFrame()
    finally:
        if not chief:
            cluster.remove_scratch(write_dir)
    return TrainResult(model, history, output_dir, train_ids, val_ids, seconds, initial_epoch, data_dir)


# ----------------------------------------------------------------------------
# Command line
# ----------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m utils.training.train",
        description="Train the course U-Net (the same parameters as lesson 05's TrainConfig).",
    )
    parser.add_argument(
        "--mode",
        choices=sorted(PRESETS),
        default=None,
        help="start from this preset (default: $COURSE_MODE, else gpu when a GPU is visible, else cpu)",
    )
    parser.add_argument("--no-resume", action="store_true", help="start over (the old run is moved aside)")
    parser.add_argument(
        "--evaluate",
        action="store_true",
        help="afterwards, predict the whole validation cases with best.keras and print their scores "
        "(the raw network output, as lesson 05 scores it)",
    )
    add_config_flags(parser, TrainConfig, optional_int="max_cases")
    return parser


def main(argv: list[str] | None = None) -> int:
    """``python -m utils.training.train --mode cpu --epochs 20 --output-dir runs/mine``."""
    args = _parser().parse_args(argv)
    overrides = {
        f.name: getattr(args, f.name)
        for f in fields(TrainConfig)
        if f.name != "mode" and getattr(args, f.name) is not None
    }
    if args.output_dir is not None:  # a path typed on the command line is relative to where it was typed
        overrides["output_dir"] = str(Path(args.output_dir).expanduser().absolute())
    try:
        config = preset(args.mode, **overrides)
        result = train(config, resume=not args.no_resume)
    except (ValueError, OSError, CacheError, distribute.ClusterError) as err:  # refusals, bad data, a run with
        # other parameters, a cluster whose workers cannot meet, a full or read-only disk
        print(f"error: {one_line(err)}", file=sys.stderr)
        return 2
    last = result.history.iloc[-1] if len(result.history) else {}
    summary = ", ".join(
        f"{k} {float(last[k]):.4f}" for k in ("dice_coefficient", "val_dice_coefficient", MONITOR) if k in last
    )
    print(f"done in {result.seconds:.0f} s; {result.output_dir}/best.keras; last epoch: {summary or 'none'}")
    if args.evaluate:
        start = time.perf_counter()
        best = load_model(result.output_dir / "best.keras")
        # the raw network output, as lesson 05 scores it (lesson 06 adds post-processing)
        table, _ = evaluate_model(best, result.data_dir, result.val_cases, plan=read_plan(result.output_dir))
        with pd.option_context("display.width", 200, "display.max_columns", 20):
            print(table.T)
        print(f"evaluated {len(result.val_cases)} held-out cases in {time.perf_counter() - start:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
