"""Fine-tuning pretrained weights with few labels, against the same network from scratch (lesson 10).

:func:`label_efficiency` trains the course U-Net (:func:`utils.training.train.build_model`:
the same loss, metrics and compilation as lesson 05) on 1, 2, 4, 8 ... labelled
cases, once from random weights ("scratch") and once from pretrained weights
("pretrained": every layer but the new output head copied by name with
:func:`utils.model.transfer.transfer_weights`, then trained at a lower learning
rate), for several seeds, and scores each model on the same held-out cases
(whole-scan Dice of WT, TC and ET). All runs share the validation and
held-out cases; the seed picks which training cases (a random order of the
training pool, the first ``n`` of it) and the network's initial weights and
patch stream. Nothing here is written to disk: the runs are short
experiments, their numbers come back as tables.

Scoring whole scans costs more than a short run's training on a CPU (a
240x240x155 brain is 150 windows of 32 voxels), so the held-out cases can be
scored around their tumour instead (:func:`scoring_regions`'s ``margin``):
both arms on the same regions, read and preprocessed once for all runs.
"""

from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import replace

import keras
import numpy as np
import pandas as pd

from ..config import VALIDATION_FOREGROUND_FRACTION, TrainConfig
from ..data.datasets import load_case
from ..data.labels import REGION_ORDER
from ..evaluation.metrics import evaluate_cases
from ..evaluation.stats import paired_difference, paired_verdict
from ..inference.sliding_window import preprocess_for_model, probabilities_to_labels, sliding_window_predict
from ..model.transfer import transfer_weights
from ..model.unet import configured_unet, load_model
from ..preprocessing.crop import brain_bbox, mask_bbox
from ..preprocessing.plan import Plan, make_plan
from .pipeline import PatchDataset, PatchSampler
from .train import build_model, cosine_schedule

ARMS = ("scratch", "pretrained")
HEAD = "probabilities"
"""The segmentation head: new in every fine-tuned model (the pretrained network's head restored intensities)."""


def label_efficiency_split(case_ids, validation: int, held_out: int, seed: int = 0) -> dict[str, list[str]]:
    """Fixed validation and held-out cases, and the rest as the pool the training cases are drawn from.

    Raises:
        ValueError: fewer cases than validation + held-out + 1.
    """
    case_ids = sorted(case_ids)
    if len(case_ids) < validation + held_out + 1:
        raise ValueError(
            f"need at least {validation + held_out + 1} labelled cases ({validation} validation, {held_out} held out, "
            f"1 to train on); found {len(case_ids)}"
        )
    order = [case_ids[i] for i in np.random.default_rng(seed).permutation(len(case_ids))]
    return {
        "held_out": sorted(order[:held_out]),
        "validation": sorted(order[held_out : held_out + validation]),
        "pool": order[held_out + validation :],
    }


def training_cases(pool: list[str], n: int, seed: int) -> list[str]:
    """The first ``n`` cases of a random order (by ``seed``) of the training pool."""
    if not 1 <= n <= len(pool):
        raise ValueError(f"n must be between 1 and the pool's {len(pool)} cases; found {n}")
    order = np.random.default_rng([seed, 7]).permutation(len(pool))
    return [pool[i] for i in order[:n]]


def finetune_run(
    config: TrainConfig,
    cache,
    train_ids: list[str],
    val_ids: list[str],
    pretrained=None,
    learning_rate: float | None = None,
    reuse: keras.Model | None = None,
) -> tuple[keras.Model, pd.DataFrame, float]:
    """Train one U-Net of ``config`` on ``train_ids`` (from scratch, or from ``pretrained``'s weights).

    Args:
        config: the training parameters (patch, model, budget, seed).
        cache: the :class:`utils.training.cache.TrainingCache` holding the cases.
        train_ids, val_ids: the cases to train and validate on.
        pretrained: ``None`` (random weights) or a model / ``.keras`` path whose
            layers are copied by name (all but the head).
        learning_rate: overrides ``config.learning_rate`` (fine-tuning's is lower).
        reuse: a model :func:`build_model` compiled for ``config`` earlier: it gets
            new random weights and a reset optimizer, exactly as a new model
            would, but Keras need not trace its training step again (seconds
            per run on a CPU).

    Returns:
        ``(model, history, seconds)``: one history row per epoch (``epoch``,
        ``loss``, ``val_loss``, ``val_pooled_dice`` ...).
    """
    config = replace(config, learning_rate=learning_rate or config.learning_rate)
    keras.utils.set_random_seed(config.seed)
    if reuse is None:
        model = build_model(config)
    else:
        model = reuse
        model.set_weights(configured_unet(config).get_weights())  # the weights build_model would draw
        for variable in model.optimizer.variables:  # Adam's step count and moments back to a new optimizer's
            variable.assign(np.zeros(variable.shape, variable.dtype))
    if pretrained is not None:
        transfer_weights(model, pretrained, skip=(HEAD,))
    train_data = PatchDataset(
        PatchSampler(cache, train_ids, config.patch_shape, config.foreground_fraction, outputs=config.outputs),
        config.batch_size,
        config.steps_per_epoch,
        seed=config.seed,
        workers=config.workers,
    )
    val_data = PatchDataset(
        PatchSampler(
            cache, val_ids, config.patch_shape, VALIDATION_FOREGROUND_FRACTION, augment=False, outputs=config.outputs
        ),
        config.batch_size,
        config.validation_steps,
        seed=config.seed + 1,
        fixed=True,
        workers=config.workers,
    )
    start = time.perf_counter()
    fit = model.fit(
        train_data,
        validation_data=val_data,
        epochs=config.epochs,
        callbacks=[keras.callbacks.LearningRateScheduler(cosine_schedule(config.learning_rate, config.epochs))],
        verbose=0,
    )
    seconds = time.perf_counter() - start
    history = pd.DataFrame(fit.history)
    history.insert(0, "epoch", np.arange(1, len(history) + 1))
    return model, history, seconds


def scoring_regions(data_dir, case_ids, plan: Plan, margin: int | None = None) -> dict[str, tuple]:
    """The held-out cases as every run scores them: ``{case: (image, label, spacing)}``, read and preprocessed once.

    Each case is cropped to the brain and preprocessed as whole-case prediction
    does (:func:`utils.inference.sliding_window.predict_probabilities`: the
    plan's crop margin and intensity scheme, its statistics over the whole
    brain), so with ``margin=None`` the scores equal whole-scan ones (the
    label is 0 outside the brain). With ``margin``, each is then cut to the
    tumour's bounding box plus ``margin`` voxels per side: a few windows
    instead of the whole brain's, but a false positive farther than
    ``margin`` from the tumour no longer counts.

    Raises:
        ValueError: a negative margin.
    """
    if margin is not None and margin < 0:
        raise ValueError(f"margin must be None (the whole brain) or >= 0 voxels; found {margin}")
    regions = {}
    for case_id in case_ids:
        case = load_case(data_dir, case_id)
        brain = tuple(slice(a, b) for a, b in brain_bbox(case.image, margin=plan.crop_margin))
        image, label = preprocess_for_model(case.image[brain], plan), np.asarray(case.label[brain])
        if margin is not None:
            tumour = tuple(slice(a, b) for a, b in mask_bbox(label > 0, margin))
            image, label = image[tumour], label[tumour]
        regions[case_id] = (np.ascontiguousarray(image, np.float32), np.ascontiguousarray(label), case.spacing)
    return regions


def score_model(model, regions: dict[str, tuple], plan: Plan, overlap: float = 0.0) -> pd.DataFrame:
    """Dice of WT, TC and ET on each of :func:`scoring_regions`'s regions (one row per case).

    Prediction as :func:`utils.inference.sliding_window.predict_case` (the
    plan's window, Gaussian blending, its output kind, threshold 0.5).
    """
    pairs = []
    for case_id, (image, label, spacing) in regions.items():
        probabilities = sliding_window_predict(model, image, window=plan.window, overlap=overlap, progress=False)
        pairs.append((case_id, label, probabilities_to_labels(probabilities, output_kind=plan.output_kind), spacing))
    table = evaluate_cases(pairs, with_hd95=False, lesion_wise=False)
    table = table.drop(index=[i for i in ("mean", "median") if i in table.index])
    return table[[f"Dice {r}" for r in REGION_ORDER]].rename(columns=lambda c: c.removeprefix("Dice "))


@contextlib.contextmanager
def _quiet_tensorflow():
    """TensorFlow's warning that a function was traced again (each new model traces its steps) stays out of the lesson."""
    logger = logging.getLogger("tensorflow")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def label_efficiency(
    config: TrainConfig,
    data_dir,
    cache,
    split: dict[str, list[str]],
    pretrained,
    sizes=(1, 2, 4, 8),
    seeds=(0, 1),
    finetune_learning_rate: float | None = None,
    overlap: float = 0.0,
    score_margin: int | None = None,
    progress: bool = True,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Scratch vs pretrained, for each number of labelled cases and seed, scored on the held-out cases.

    Args:
        config: training parameters of every run (its ``seed`` is replaced by each of ``seeds``).
        data_dir: the labelled dataset (for whole-scan evaluation).
        cache: its training cache.
        split: :func:`label_efficiency_split`'s ``pool``, ``validation`` and ``held_out``.
        pretrained: the pretrained model or its ``.keras`` path.
        sizes: numbers of labelled training cases.
        seeds: seeds of the repeats.
        finetune_learning_rate: the pretrained arm's learning rate (default: ``config``'s).
        overlap: sliding-window overlap of the held-out evaluation.
        score_margin: score each held-out case on its tumour's bounding box
            plus this many voxels (:func:`scoring_regions`); None: the whole brain.
        progress: one line per run.

    Returns:
        ``(scores, curves)``: one row per run and held-out case (``arm``,
        ``n``, ``seed``, ``case``, ``WT``, ``TC``, ``ET``, ``seconds``), and one
        row per run and epoch (``arm``, ``n``, ``seed`` and the history).
    """
    if not isinstance(pretrained, keras.Model):  # read the file once: every run copies from the same weights
        pretrained = load_model(pretrained, compile=False)
    scores, curves, compiled = [], [], {}
    plan = make_plan(config, split["pool"], split["validation"])
    held_out = scoring_regions(data_dir, split["held_out"], plan, score_margin)  # read once, not per run
    for n in sizes:
        for seed in seeds:
            train_ids = training_cases(split["pool"], n, seed)
            for arm in ARMS:
                run = replace(config, seed=int(seed))
                with _quiet_tensorflow():
                    model, history, seconds = finetune_run(
                        run,
                        cache,
                        train_ids,
                        split["validation"],
                        pretrained if arm == "pretrained" else None,
                        finetune_learning_rate if arm == "pretrained" else None,
                        reuse=compiled.get(arm),
                    )
                compiled[arm] = model
                cases = score_model(model, held_out, plan, overlap)
                for case, row in cases.iterrows():
                    scores.append(
                        {
                            "arm": arm,
                            "n": n,
                            "seed": seed,
                            "case": case,
                            **row.astype(float).to_dict(),
                            "seconds": seconds,
                        }
                    )
                curves.append(history.assign(arm=arm, n=n, seed=seed))
                if progress:
                    mean = cases.mean()
                    print(
                        f"{arm:10} n={n} seed={seed}: trained {seconds:.0f} s; held-out Dice "
                        + " ".join(f"{r} {mean[r]:.3f}" for r in REGION_ORDER),
                        flush=True,
                    )
    return pd.DataFrame(scores), pd.concat(curves, ignore_index=True)


def efficiency_table(scores: pd.DataFrame) -> pd.DataFrame:
    """Held-out Dice per region: mean and sd over cases and seeds, per number of labelled cases and arm."""
    grouped = scores.groupby(["n", "arm"])[list(REGION_ORDER)]
    table = pd.concat({"mean": grouped.mean(), "sd": grouped.std(ddof=1)}, axis=1)
    table = table.swaplevel(0, 1, axis=1)[[(r, s) for r in REGION_ORDER for s in ("mean", "sd")]]
    return table.round(3)


def pretraining_gain(scores: pd.DataFrame, tolerance: float = 0.01) -> pd.DataFrame:
    """Per number of labelled cases and region: pretrained minus scratch, paired, with its verdict.

    A pair is one (n, seed, held-out case) scored by both arms. The interval is the
    bootstrap interval of the mean paired difference (:func:`utils.evaluation.stats.paired_difference`,
    resampling the pairs) and the verdict :func:`utils.evaluation.stats.paired_verdict`'s: a
    difference counts only when the interval excludes 0 and it is larger than ``tolerance``.

    Returns:
        one row per (n, region): ``gain`` (mean difference), ``low``/``high`` (its interval),
        ``wins`` (pairs pretraining won), ``pairs`` and ``verdict``.
    """
    wide = scores.pivot_table(index=["n", "seed", "case"], columns="arm", values=list(REGION_ORDER))
    rows = []
    for n, part in wide.groupby(level="n"):
        for region in REGION_ORDER:
            diff = (part[(region, "pretrained")] - part[(region, "scratch")]).dropna()
            result = paired_difference(diff.to_numpy())
            rows.append(
                {
                    "n": n,
                    "region": region,
                    "gain": result.mean,
                    "low": result.low,
                    "high": result.high,
                    "wins": int((diff > 0).sum()),
                    "pairs": int(diff.size),
                    "verdict": paired_verdict(result, tolerance, names=("pretrained", "scratch")),
                }
            )
    return pd.DataFrame(rows)
