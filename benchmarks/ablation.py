"""Ablation of what won BraTS (issue 26): one line per change, cumulative, held-out and shifted data side by side.

Each ``--line "NAME=RUN[,RUN...][:post][:mirror]"`` predicts, at full size, with
the run folder(s) named (several: an ensemble, the mean of their
probabilities), then scores:

* the run's held-out cases (the ``validation_cases`` of its ``plan.json``:
  the cases lessons 05-07 score; every line must share them) in ``--data``;
* every labelled case of ``--shifted`` (a test set outside the training
  ranges), when given.

Per set: Dice WT / TC / ET (mean and sd over the cases, BraTS convention for
empty regions), the interior-miss share (whole-tumour false negatives two or
more voxels inside the true tumour, pooled over the cases) and the
enclosed-hole share of the predicted tumour (pooled), from
:func:`utils.evaluation.metrics.whole_tumour_errors`; then the training
time (``state.json``, summed over an ensemble's runs).

Post-processing: a line without ``:post`` keeps the largest tumour (the
course's rule before issue 26); with ``:post`` it applies the first run
folder's ``postprocessing.json``, chosen first on ``--tune`` (a labelled
dataset that is neither the runs' training nor held-out data) when the run
has none. ``:mirror``: test-time mirroring (8 flips, 8x the time).

Every run (and every member of an ensemble) must hold out the same cases. A
second seed of a run splits the cases by its own seed, so give it the first
run's split before training: a run folder holding only the ownership marker
of ``utils.train`` and the first run's ``plan.json`` (training reads the
split from it).

Probabilities are cached (float16) in ``--cache-dir``, keyed by model file,
dataset, case and mirroring, so the lines can be computed one call at a time
and the table printed at the end without predicting again::

    python benchmarks/ablation.py --data /tmp/demo/data/phantom --shifted SHIFTED --tune TUNE \\
        --cache-dir /tmp/ablation --line "baseline=/tmp/demo/runs/cpu" --line "+ region-based=runs/regions"
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np

from utils.data.datasets import list_cases, load_case
from utils.data.labels import REGION_ORDER
from utils.evaluation.metrics import region_dice, whole_tumour_errors
from utils.inference.postprocessing import (
    PostProcessing,
    check_validation_cases,
    choose_postprocessing,
    read_postprocessing,
    write_postprocessing,
)
from utils.inference.sliding_window import ensemble_kind, predict_probabilities, probabilities_to_labels
from utils.model.unet import load_model
from utils.preprocessing.plan import read_plan
from utils.safety import read_json_object

LARGEST = PostProcessing(largest_component=True)
"""The post-processing of a line without ``:post``: the largest tumour only (the course's rule before issue 26)."""


def parse_line(text: str) -> tuple[str, list[Path], bool, bool]:
    """``"NAME=RUN[,RUN][:post][:mirror]"`` -> ``(name, runs, post, mirror)``."""
    if "=" not in text:
        raise SystemExit(f"--line {text!r}: expected NAME=RUN[,RUN...][:post][:mirror]")
    name, rest = text.split("=", 1)
    parts = rest.split(":")
    flags = set(parts[1:])
    unknown = flags - {"post", "mirror"}
    if unknown:
        raise SystemExit(f"--line {text!r}: unknown option(s) {sorted(unknown)}; expected post, mirror")
    return name.strip(), [Path(p).expanduser() for p in parts[0].split(",")], "post" in flags, "mirror" in flags


class Predictions:
    """Whole-case probabilities of one model, cached on disk as float16."""

    def __init__(self, run: Path, cache_dir: Path):
        self.run, self.cache_dir = run, cache_dir
        self.model_path = run / "best.keras"
        self.plan = read_plan(run)
        stat = self.model_path.stat()
        self.key = hashlib.sha1(f"{self.model_path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}".encode()).hexdigest()[
            :12
        ]
        self._model = None

    def probabilities(self, data_dir: Path, case_id: str, image, mirror: bool) -> np.ndarray:
        tag = hashlib.sha1(f"{Path(data_dir).resolve()}|{case_id}|{mirror}".encode()).hexdigest()[:12]
        path = self.cache_dir / f"{self.key}-{tag}.npy"
        if path.is_file():
            return np.load(path).astype(np.float32)
        if self._model is None:
            self._model = load_model(self.model_path, compile=False)
        start = time.perf_counter()
        probs = predict_probabilities(self._model, image, mirror=mirror, progress=False, plan=self.plan)
        print(
            f"  predicted {case_id} with {self.run.name}{' (mirrored)' if mirror else ''} "
            f"in {time.perf_counter() - start:.0f} s",
            file=sys.stderr,
            flush=True,
        )
        tmp = path.with_suffix(".partial.npy")
        stored = probs.astype(np.float16)  # what a later call reads back: every call sees the same numbers
        np.save(tmp, stored)
        os.replace(tmp, path)
        return stored.astype(np.float32)


def predict_labels(members: list[Predictions], data_dir: Path, case, mirror: bool, post: PostProcessing):
    kind = ensemble_kind([m.plan for m in members])
    probs = None
    for member in members:
        p = member.probabilities(data_dir, case.case_id, case.image, mirror)
        probs = p if probs is None else probs + p
    raw = probabilities_to_labels(probs / len(members), output_kind=kind)
    return raw, post.apply(raw, case.spacing)


def score_set(members, data_dir: Path, case_ids, mirror: bool, post: PostProcessing) -> dict:
    dice, misses, interior, predicted, holes = [], 0, 0, 0, 0
    for case_id in case_ids:
        case = load_case(data_dir, case_id)
        _, label = predict_labels(members, data_dir, case, mirror, post)
        scores = region_dice(case.label, label)
        dice.append([scores[r] for r in REGION_ORDER])
        errors = whole_tumour_errors(case.label, label)
        misses += errors["misses"]
        interior += errors["interior_misses"]
        predicted += errors["predicted"]
        holes += errors["holes"]
    dice = np.array(dice)
    return {
        "mean": dice.mean(axis=0),
        "sd": dice.std(axis=0, ddof=1) if len(dice) > 1 else np.zeros(3),
        "interior": interior / misses if misses else 0.0,
        "holes": holes / predicted if predicted else 0.0,
        "n": len(dice),
    }


def ensure_postprocessing(members, tune: Path | None, mirror: bool) -> PostProcessing:
    """The first run's recorded choice; chosen on ``tune`` (and recorded) when it has none."""
    run = members[0].run
    post = read_postprocessing(run)
    if post is not None:
        return post
    if tune is None:
        raise SystemExit(f"{run} has no postprocessing.json: give --tune (labelled validation cases) to choose one")
    case_ids = list_cases(tune)
    check_validation_cases(members[0].plan, tune, case_ids)
    cases = []
    for case_id in case_ids:
        case = load_case(tune, case_id)
        raw, _ = predict_labels(members[:1], tune, case, mirror, PostProcessing())
        cases.append((case.label, raw, case.spacing))
    choice, trials = choose_postprocessing(cases)
    chosen_on = {"dataset": str(tune.resolve()), "cases": case_ids, "mirror": mirror, "model": "best.keras"}
    write_postprocessing(run, choice, chosen_on, trials)
    print(
        f"  post-processing of {run} chosen on {len(case_ids)} validation cases of {tune}: {choice.describe()}",
        file=sys.stderr,
        flush=True,
    )
    return choice


def training_seconds(runs) -> float:
    return sum(float(read_json_object(r / "state.json", "training state").get("seconds", 0.0)) for r in runs)


COLUMNS = f"{'WT':<12}{'TC':<12}{'ET':<12}{'interior':>9}{'holes':>7}"


def fmt(stats: dict | None) -> str:
    if stats is None:
        return f"{'(no shifted set)':<{len(COLUMNS)}}"
    dice = "".join(f"{m:.3f}±{s:.3f} " for m, s in zip(stats["mean"], stats["sd"]))
    return f"{dice}{stats['interior']:>9.1%}{stats['holes']:>7.2%}"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", required=True, type=Path, help="the dataset the runs trained on (held-out cases)")
    parser.add_argument("--shifted", type=Path, default=None, help="a labelled shifted test set (all its cases)")
    parser.add_argument(
        "--tune", type=Path, default=None, help="labelled validation cases to choose post-processing on"
    )
    parser.add_argument("--cache-dir", required=True, type=Path, help="where predicted probabilities are cached")
    parser.add_argument("--line", action="append", required=True, help="NAME=RUN[,RUN...][:post][:mirror]")
    args = parser.parse_args(argv)
    args.cache_dir.mkdir(parents=True, exist_ok=True)
    lines = [parse_line(text) for text in args.line]
    models: dict[Path, Predictions] = {}
    held_out = None
    rows = []
    for name, runs, post_flag, mirror in lines:
        members = [models.setdefault(r.resolve(), Predictions(r, args.cache_dir)) for r in runs]
        for member in members:  # one held-out set for every line and every member of an ensemble
            cases = tuple(member.plan.validation_cases)
            held_out = cases if held_out is None else held_out
            if cases != held_out:
                raise SystemExit(f"{member.run} holds out {cases}, the first run {held_out}: the runs must share them")
        post = ensure_postprocessing(members, args.tune, mirror) if post_flag else LARGEST
        start = time.perf_counter()
        held = score_set(members, args.data, held_out, mirror, post)
        shifted = score_set(members, args.shifted, list_cases(args.shifted), mirror, post) if args.shifted else None
        rows.append((name, held, shifted, training_seconds(runs), post))
        print(f"  {name}: scored in {time.perf_counter() - start:.0f} s", file=sys.stderr, flush=True)
    print(
        f"held-out: {len(held_out)} cases of {args.data} ({', '.join(held_out)}); "
        + (f"shifted: {rows[0][2]['n']} cases of {args.shifted}" if args.shifted else "no shifted set")
    )
    print(
        "Dice WT / TC / ET as mean±sd over the cases; interior = share of the whole-tumour misses 2+ voxels "
        "inside the true tumour; holes = enclosed holes / predicted tumour (both pooled over the cases)"
    )
    print(f"{'':<24}| {'held-out Dice':<{len(COLUMNS)}} | {'shifted Dice':<{len(COLUMNS)}} |")
    print(f"{'configuration':<24}| {COLUMNS} | {COLUMNS} | train s")
    for name, held, shifted, seconds, _ in rows:
        print(f"{name:<24}| {fmt(held)} | {fmt(shifted)} | {seconds:7.0f}")
    for name, *_, post in rows:
        print(f"post-processing of {name!r}: {post.describe()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
