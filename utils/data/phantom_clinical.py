"""Phantom patients: a clinical cohort in the BraTS 2020 format, from a stated generative model.

Each phantom patient ``i`` is the phantom's case ``i`` (:mod:`utils.data.phantom`,
the same seed, so ``PHANTOM_001`` ... are the cases the phantom dataset
holds): its label map is drawn (:func:`utils.data.phantom.make_phantom_label`, no
images) and its clinical record follows from the planted tumour and a few
draws of its own. The model, in full (every number is a constant below):

* **Grade** - the planted tumour's: lower-grade (LGG, about 20 %) tumours
  have no enhancing tumour and thinner edema; all others are HGG. So on the
  phantom, unlike in patients, "no enhancing voxel" means LGG.
* **Age** (years, 3 decimals as BraTS writes it) - normal, mean 62 and
  standard deviation 11 for HGG, mean 42 and 12 for LGG, kept in 18..89.
* **Who has a survival row** - as in BraTS 2020, HGG only, and of those a
  random 80 % (236 of 293 in BraTS 2020).
* **Extent of resection** - GTR (gross total) with probability 0.50, STR
  (subtotal) 0.05, unknown 0.45 (written ``NA``; the true status behind an
  ``NA`` is GTR or STR with the same odds as the known ones, and it acts on
  the hazard all the same).
* **Survival** (days from diagnosis to death) - a Weibull proportional-
  hazards model, shape 1.4, with a median of 420 days for a 60-year-old
  whose tumour core is 20 mL and who had a gross total resection. The log
  hazard ratio is ``0.45 per decade of age above 60 + 0.25 per doubling of
  the tumour-core volume above 20 mL + 0.40 if subtotal resection + 0.5 x a
  standard normal draw`` (what the record does not hold: treatment,
  molecular markers, general health).
* **Censoring** - follow-up ends at a uniform time between 300 and 2000
  days (at least 1 day to death); a patient still alive then gets ``ALIVE (N days later)``, as one
  BraTS 2020 patient has.

:func:`phantom_cohort` draws the label maps and features;
:func:`phantom_clinical_tables` draws the records (reproducible from the
seed: patient ``i`` depends only on ``(seed, i)``, not on the cohort size);
:func:`write_phantom_clinical` writes ``survival_info.csv`` and
``name_mapping.csv``, which :mod:`utils.data.clinical` reads like the real ones.
On the phantom, a model can only find this model: it shows the method, not
medicine.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from ..parallel import default_workers, map_in_processes
from .clinical import NAME_MAPPING_COLUMNS, NAME_MAPPING_FILE, SURVIVAL_COLUMNS, SURVIVAL_FILE, feature_table

CLINICAL_VERSION = 1
AGE_MEAN_SD = {"HGG": (62.0, 11.0), "LGG": (42.0, 12.0)}
AGE_RANGE = (18.0, 89.0)
SURVIVAL_ROW_SHARE = 0.8
RESECTION_P = {"GTR": 0.50, "STR": 0.05, "NA": 0.45}
WEIBULL_SHAPE = 1.4
MEDIAN_DAYS = 420.0
"""Median survival of the reference patient: 60 years, tumour core 20 mL, gross total resection."""
LOG_HAZARD = {"per_decade": 0.45, "per_core_doubling": 0.25, "subtotal": 0.40, "unexplained_sd": 0.5}
REFERENCE_AGE, REFERENCE_CORE_ML = 60.0, 20.0
FOLLOW_UP_DAYS = (300.0, 2000.0)


def case_id(index: int) -> str:
    """The id of phantom patient ``index`` (0-based): the phantom dataset's ``PHANTOM_001`` ..."""
    return f"PHANTOM_{index + 1:03d}"


def _label_task(task: tuple) -> tuple[str, np.ndarray, np.ndarray, str]:
    from .phantom import case_seed, make_phantom_label

    index, seed, shape = task
    label, affine, grade = make_phantom_label(case_seed(seed, index), shape)
    return case_id(index), label, affine, grade


def _features_task(task: tuple) -> tuple[str, dict, str]:
    cid, label, affine, grade = _label_task(task)
    row = feature_table([(cid, label, affine)]).iloc[0].to_dict()
    return cid, row, grade


def phantom_cohort(n: int, shape: tuple[int, int, int], seed: int = 0, workers: int | None = None) -> pd.DataFrame:
    """Tumour features and planted grade of phantom patients ``0 .. n-1``.

    Args:
        n: patients. shape: the grid their label maps are drawn on (always
            240x240x155 mm: volumes in mL do not depend on it, beyond
            partial voxels). seed: the phantom dataset's seed (0).
        workers: processes (default: up to the CPUs, at most 4).

    Returns:
        one row per patient (index ``case_id``): :data:`utils.data.clinical.FEATURES`
        and ``planted_grade`` (``"HGG"`` / ``"LGG"``).
    """
    if n < 1:
        raise ValueError(f"need at least one patient; found n={n}")
    tasks = [(i, int(seed), tuple(int(s) for s in shape)) for i in range(n)]
    rows, grades = {}, {}
    for cid, row, grade in map_in_processes(_features_task, tasks, workers or default_workers(max(1, n // 50))):
        rows[cid], grades[cid] = row, "HGG" if grade == "high" else "LGG"
    table = pd.DataFrame.from_dict(rows, orient="index").rename_axis("case_id")
    table["planted_grade"] = pd.Series(grades)
    return table


def _patient_rng(seed: int, index: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([int(seed), int(index), CLINICAL_VERSION]))


def phantom_clinical_tables(cohort: pd.DataFrame, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Draw the clinical records of a cohort from the generative model (module docstring).

    Args:
        cohort: :func:`phantom_cohort`'s table (uses ``planted_grade`` and ``TC_ml``),
            its rows in patient order.
        seed: the records' seed; patient ``i`` depends only on ``(seed, i)``.

    Returns:
        ``(survival_info, name_mapping)``: the two tables with BraTS 2020's
        columns and cell texts (``Survival_days`` a number or
        ``ALIVE (N days later)``, ``Extent_of_Resection`` GTR / STR / NA).
    """
    survival, names = [], []
    median_scale = MEDIAN_DAYS / np.log(2.0) ** (1.0 / WEIBULL_SHAPE)
    for index, (cid, row) in enumerate(cohort.iterrows()):
        rng = _patient_rng(seed, index)
        grade = str(row["planted_grade"])
        mean, sd = AGE_MEAN_SD[grade]
        age = float(np.clip(rng.normal(mean, sd), *AGE_RANGE))
        has_row = rng.random() < SURVIVAL_ROW_SHARE
        resection = rng.choice(list(RESECTION_P), p=list(RESECTION_P.values()))
        known = {k: p for k, p in RESECTION_P.items() if k != "NA"}
        true_resection = (
            resection
            if resection != "NA"
            else rng.choice(list(known), p=np.divide(list(known.values()), sum(known.values())))
        )
        core = max(float(row["TC_ml"]), 0.5)
        log_hr = (
            LOG_HAZARD["per_decade"] * (age - REFERENCE_AGE) / 10.0
            + LOG_HAZARD["per_core_doubling"] * np.log2(core / REFERENCE_CORE_ML)
            + LOG_HAZARD["subtotal"] * (true_resection == "STR")
            + LOG_HAZARD["unexplained_sd"] * rng.standard_normal()
        )
        # Weibull PH: S(t) = exp(-(t / scale)^k * exp(log_hr)); invert at an exponential draw
        death = median_scale * (rng.exponential() / np.exp(log_hr)) ** (1.0 / WEIBULL_SHAPE)
        follow_up = rng.uniform(*FOLLOW_UP_DAYS)
        names.append({"Grade": grade, **{c: "NA" for c in NAME_MAPPING_COLUMNS[1:5]}, "BraTS_2020_subject_ID": cid})
        if grade != "HGG" or not has_row:
            continue
        days = f"{max(round(death), 1)}" if death <= follow_up else f"ALIVE ({round(follow_up)} days later)"
        survival.append(
            {"Brats20ID": cid, "Age": f"{age:.3f}", "Survival_days": days, "Extent_of_Resection": resection}
        )
    return (
        pd.DataFrame(survival, columns=list(SURVIVAL_COLUMNS)),
        pd.DataFrame(names, columns=list(NAME_MAPPING_COLUMNS)),
    )


def write_phantom_clinical(folder: Path | str, cohort: pd.DataFrame, seed: int = 0) -> Path:
    """Write ``survival_info.csv`` and ``name_mapping.csv`` of a phantom cohort into ``folder``.

    Each file is written to a temporary name and renamed (a reader never sees
    half a file). Files already there are never replaced.

    Returns:
        ``folder``.

    Raises:
        FileExistsError: ``folder`` already holds one of the two files.
    """
    folder = Path(folder)
    targets = [folder / SURVIVAL_FILE, folder / NAME_MAPPING_FILE]
    existing = [str(p) for p in targets if p.exists() or p.is_symlink()]
    if existing:
        raise FileExistsError(f"{', '.join(existing)} already exist(s); write the phantom's tables to a new folder")
    folder.mkdir(parents=True, exist_ok=True)
    for table, target in zip(phantom_clinical_tables(cohort, seed), targets):
        partial = target.with_name(f".{target.name}.partial-{os.getpid()}")
        table.to_csv(partial, index=False, na_rep="NA")
        os.replace(partial, target)
    return folder
