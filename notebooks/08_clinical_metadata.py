# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Lesson 08 - From segmentation to the patient: clinical metadata, tumour grade and survival
#
# A segmentation is a means. Clinicians want to know how aggressive a tumour
# is and how long the patient may live. BraTS asked exactly that in its
# survival task (2017-2020), with the patient's age and the extent of
# resection beside the scans. This lesson joins the course's segmentations
# to those clinical tables and asks, with honest cross-validation, how much
# they predict.
#
# **You will learn to**
# - read BraTS 2020's `survival_info.csv` and `name_mapping.csv` as they
#   really come: survival times that are strings, censored patients, unknown
#   resection status, ids without a case folder (exercise 1, `parse_survival`);
# - turn a label map into volumes in mL with the voxel size from the affine
#   (exercise 2, `tumour_volumes_ml`), and into ratios, shape and location
#   features;
# - predict the grade (HGG / LGG) and the BraTS survival class with
#   cross-validation against baselines (the majority class, age alone), with
#   `scikit-learn`;
# - draw Kaplan-Meier curves and fit a Cox model with its concordance index,
#   with `scikit-survival`;
# - measure how much it changes the result to take the features from the
#   course's own predicted segmentations instead of the ground truth.
#
# **Accelerator: CPU**
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](COLAB_URL)

# %%
# Setup: on Colab, install the course package (locally, `make` has done it).
import sys

RELEASE = "COURSE_REF"  # the course release this notebook belongs to; "main" follows the newest course
if "google.colab" in sys.modules:
    import subprocess

    subprocess.run([sys.executable, "-m", "pip", "install", "-q",
                    f"git+https://github.com/COURSE_REPO@{RELEASE}"], check=True)

# %% tags=["imports"]
import re
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import matplotlib.pyplot as plt
import utils  # before keras: it keeps TensorFlow's start-up notices out of the lesson
import keras
from sklearn.dummy import DummyClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import confusion_matrix
from sklearn.model_selection import KFold, RepeatedStratifiedKFold, cross_val_predict, cross_validate
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sksurv.compare import compare_survival
from sksurv.linear_model import CoxPHSurvivalAnalysis
from sksurv.nonparametric import kaplan_meier_estimator
from sksurv.util import Surv

from utils.course.checks import check_parse_survival, check_tumour_volumes_ml
from utils.data.clinical import (FEATURES, SURVIVAL_CLASSES, SURVIVAL_FILE, ClinicalTableError, clinical_tables,
                            match_cases, read_survival_info, survival_class, tumour_features)
from utils.config import course_mode, get_settings, preset, run_dir, use_drive
from utils.data.datasets import list_cases, load_case, load_label
from utils.data.sources import get_dataset
from utils.inference.sliding_window import predict_case
from utils.data.labels import CLASS_NAMES, class_colors
from utils.data.phantom_clinical import phantom_cohort, write_phantom_clinical
from utils.preprocessing.plan import plan_for_model
from utils.training.train import prepare_data, train

# %% tags=["parameters"]
DATASET = "phantom"     # "phantom", or the BraTS 2020 training folder that holds survival_info.csv
MODEL_PATH = None       # None: the best model of lesson 05 for this mode
TRAIN_IF_MISSING = None # None: train the missing model only in ci mode (seconds); True / False: always / never
USE_DRIVE = False       # Colab: data, cache and runs on Google Drive, as in lesson 05
FOLDS, REPEATS = 5, 5   # repeated stratified cross-validation
SEED = 0

# %% [markdown]
# ## 1. The clinical tables as they come
#
# The BraTS 2020 training folder (also the Kaggle copy) holds, beside its 369
# case folders, `name_mapping.csv` (every subject's grade, HGG or LGG, and
# its ids in earlier BraTS years and in TCGA) and `survival_info.csv` (236
# HGG subjects: age, survival in days, extent of resection). Neither MSD
# Task01 nor the course's phantom ships them.
#
# Offline, the phantom writes both tables itself, in the same format, from a
# **stated generative model** (`utils.data.phantom_clinical`): the grade is the
# planted tumour's (a lower-grade phantom tumour has no enhancing tumour);
# age is normal (mean 62, sd 11 for HGG; 42 and 12 for LGG); 80 % of HGG
# patients get a survival row; resection is GTR / STR / unknown with
# probabilities 0.50 / 0.05 / 0.45; the time to death is Weibull with a
# hazard that grows by a factor $e^{0.45}$ per decade of age, $e^{0.25}$ per
# doubling of the tumour core and $e^{0.40}$ after a subtotal resection,
# times an unexplained factor (log-normal, sd 0.5); follow-up ends at a
# uniform time between 300 and 2000 days, and a patient alive then is
# written `ALIVE (N days later)`. The phantom cohort has as many patients as
# the mode sets (`utils.config`); their label maps are drawn without images,
# on a coarser grid of the same field of view.
#
# **On the phantom this lesson shows the method, not medicine**: a model can
# only rediscover the model above.

# %% tags=["run-config"]
use_drive(USE_DRIVE)
settings = get_settings()
config = preset()
model_path = Path(MODEL_PATH) if MODEL_PATH else run_dir(config) / "best.keras"
print(f"mode {course_mode()}: model {model_path}")

# %%
if DATASET == "phantom":
    cohort = phantom_cohort(settings.clinical_cases, settings.clinical_shape, seed=SEED)
    tables_dir = write_phantom_clinical(Path(tempfile.mkdtemp(prefix="phantom-clinical-")), cohort, seed=SEED)
    print(f"{len(cohort)} phantom patients, label maps on a {settings.clinical_shape} grid; "
          f"tables written to {tables_dir}")
else:
    tables_dir = get_dataset(DATASET)
    cohort = None
    print(f"clinical tables of {tables_dir}")

# %% [markdown]
# The first lines of `survival_info.csv`, as text:

# %%
print("\n".join((tables_dir / SURVIVAL_FILE).read_text().splitlines()[:8]))

# %% [markdown]
# Two things in there stop a naive `pd.read_csv(...).astype(float)`:
#
# - `Survival_days` is a number of days, **or** a string such as
#   `ALIVE (361 days later)`: that patient was alive at the last follow-up.
#   Their time of death is unknown, only that it is later than 361 days: a
#   **censored** time. Dropping them, or taking 361 as their death, biases
#   every estimate towards short survival.
# - `Extent_of_Resection` is `GTR` (gross total), `STR` (subtotal) or `NA`
#   (not known - not "no resection").
#
# ### Exercise 1: `parse_survival`
#
# Parse one `Survival_days` cell into `(days, event)`: `days` a float,
# `event` True when the death was observed (a number of days), False for
# `ALIVE (N days later)` (censored at N days). The cell may be a string with
# spaces around it or a number. Anything else - an empty cell, `NA`, text, a
# negative number - raises `ValueError`.
#
# Expected: `"289"` → `(289.0, True)`, `"ALIVE (361 days later)"` →
# `(361.0, False)`, `""` → `ValueError`.

# %%
def parse_survival(value):
    """Parse one Survival_days cell of survival_info.csv.

    Args:
        value: a number of days (int, float or str) or "ALIVE (N days later)".

    Returns:
        (days, event): float days, and True if the death was observed
        (False: alive at `days`, a censored time).

    Raises:
        ValueError: for anything else.
    """
    ### BEGIN SOLUTION
    # Hint: re.fullmatch(r"ALIVE \((\d+) days later\)", text) finds the censored cells
    # Hint: float(text) raises ValueError for text; check the days are not negative
    text = str(value).strip()
    alive = re.fullmatch(r"ALIVE \((\d+(?:\.\d+)?) days later\)", text)
    if alive:
        return float(alive.group(1)), False
    days = float(text)
    if not np.isfinite(days) or days < 0:
        raise ValueError(f"expected a number of days >= 0; found {text!r}")
    return days, True
    ### END SOLUTION

# %% tags=["check"]
check_parse_survival(parse_survival)

# %% [markdown]
# `utils.data.clinical` reads both tables with it (`utils.parse_survival`), checks
# every cell, and refuses what it cannot read **naming the file and the
# line** - here a copy of the table with one cell spoiled:

# %%
names, survival = clinical_tables(tables_dir)
broken = Path(tempfile.mkdtemp(prefix="broken-")) / SURVIVAL_FILE
lines = (tables_dir / SURVIVAL_FILE).read_text().splitlines()
cells = lines[3].split(",")
cells[2] = "about a year"
broken.write_text("\n".join([*lines[:3], ",".join(cells), *lines[4:]]) + "\n")
try:
    read_survival_info(broken)
except ClinicalTableError as err:
    print(f"ClinicalTableError: {err}")

# %%
print(f"name_mapping.csv: {len(names)} subjects, grades {names['grade'].value_counts().to_dict()}")
print(f"survival_info.csv: {len(survival)} subjects ({survival['event'].sum()} deaths observed, "
      f"{(~survival['event']).sum()} alive at their last follow-up: censored); "
      f"resection {survival['resection'].fillna('NA').value_counts().to_dict()}")
print(f"grades of the subjects with a survival row: {names.loc[survival.index, 'grade'].value_counts().to_dict()}")

# %% [markdown]
# The tables name subjects; the dataset has case folders. They need not
# agree: a table may list subjects whose folder you do not have, and a
# folder may have no row. Match them, and say what is left out.

# %%
data_dir = get_dataset(DATASET)
folders = list_cases(data_dir)
matched = match_cases(names, folders)
print(f"{data_dir.name}: {len(folders)} case folders; {len(matched['matched'])} subjects of name_mapping.csv "
      f"have one, {len(matched['no_case_folder'])} do not (e.g. {matched['no_case_folder'][:2]}), "
      f"{len(matched['no_row'])} folders have no row")

# %% [markdown]
# On the phantom, most patients have no case folder on purpose: the dataset
# holds the images of the first few (as many as the mode trains on), and
# the cohort's other patients exist only as label maps. On real data every
# feature below needs the subject's segmentation, so a subject without a
# folder drops out.
#
# ## 2. Features from the segmentation
#
# ### Exercise 2: `tumour_volumes_ml`
#
# The volume of each BraTS region in millilitres: whole tumour WT = labels
# {1, 2, 3}, tumour core TC = {2, 3}, enhancing tumour ET = {3}. One voxel's
# volume in mm³ is the absolute determinant of the affine's 3x3 part - the
# product of the voxel sizes when the axes are aligned, and still right when
# the scan is oblique or an axis is flipped. 1 mL = 1000 mm³.
#
# Expected: a label map with 10 voxels of label 1, 4 of label 2 and 2 of
# label 3, voxels of 2 x 2 x 2.5 mm → `{"WT": 0.16, "TC": 0.06, "ET": 0.02}`.

# %%
def tumour_volumes_ml(label, affine):
    """Volume in mL of the BraTS regions of a label map.

    Args:
        label: (x, y, z) integer label map, MSD values (1 edema, 2 non-enhancing, 3 enhancing).
        affine: 4x4 voxel-to-mm matrix.

    Returns:
        {"WT": ..., "TC": ..., "ET": ...} in mL.
    """
    ### BEGIN SOLUTION
    # Hint: abs(np.linalg.det(affine[:3, :3])) is one voxel's volume in mm³
    # Hint: np.isin(label, (2, 3)).sum() counts the voxels of the tumour core
    voxel_ml = abs(np.linalg.det(np.asarray(affine, dtype=float)[:3, :3])) / 1000.0
    regions = {"WT": (1, 2, 3), "TC": (2, 3), "ET": (3,)}
    return {name: float(np.isin(label, values).sum() * voxel_ml) for name, values in regions.items()}
    ### END SOLUTION

# %% tags=["check"]
check_tumour_volumes_ml(tumour_volumes_ml)

# %% [markdown]
# `utils.data.clinical.tumour_features` adds, from the same label map: the ratios
# enhancing / core and core / whole; `foci`, the connected pieces of the
# whole tumour; `extent_mm`, how far it reaches along an axis; its centroid
# in mm from the middle of the grid, and `midline_mm`, the centroid's
# distance to the middle sagittal plane - the brain's midline when the scans
# are registered to an atlas, as BraTS's (and the phantom's) are. On the
# phantom the cohort's features came with it; on real data they are computed
# here from each subject's ground-truth label.

# %%
if cohort is not None:
    features = cohort[list(FEATURES)]
else:
    rows = {}
    for case_id in matched["matched"]:
        label, spacing = load_label(data_dir, case_id)
        rows[case_id] = tumour_features(label, np.diag([*spacing, 1.0]))
    features = pd.DataFrame.from_dict(rows, orient="index")[list(FEATURES)]
data = features.join(names[["grade"]], how="inner")
print(f"{len(data)} subjects with features and a grade")
data.groupby("grade")[list(FEATURES)].median().T.round(2)

# %% alt="Volumes of edema, non-enhancing and enhancing tumour in HGG and LGG subjects, one dot per subject, in the course's class colours."
parts = {"edema": data["WT_ml"] - data["TC_ml"], "non-enhancing": data["TC_ml"] - data["ET_ml"],
         "enhancing": data["ET_ml"]}
fig, axes = plt.subplots(1, 3, figsize=(12, 3.4), sharey=False)
rng = np.random.default_rng(SEED)
for ax, (name, values), colour in zip(axes, parts.items(), class_colors()):
    for k, grade in enumerate(("HGG", "LGG")):
        v = values[data["grade"] == grade]
        ax.scatter(k + rng.uniform(-0.2, 0.2, len(v)), v, s=8, color=colour, alpha=0.6)
        ax.hlines(v.median(), k - 0.3, k + 0.3, color="black")
    ax.set_xticks([0, 1], [f"HGG (n={(data['grade'] == 'HGG').sum()})", f"LGG (n={(data['grade'] == 'LGG').sum()})"])
    ax.set_title(name, color=colour)
    ax.set_xlabel("grade")
    ax.set_ylabel("volume (mL)")
fig.suptitle("tumour compartments by grade (black: median)", fontsize=10)
plt.tight_layout()
plt.show()

# %% [markdown]
# ## 3. Grade from the segmentation
#
# Can the features tell HGG from LGG? Every score below is
# cross-validated: the model is fitted on 4/5 of the subjects and scored on
# the fifth it never saw, for each fifth, with the split repeated
# `REPEATS` times (folds keep the HGG / LGG proportion). The table gives the
# mean over the folds and their standard deviation. Two baselines: always
# the majority class, and a model on the whole-tumour volume alone. (Age is
# in `survival_info.csv`, which has HGG subjects only, so it cannot help
# here.)
#
# Balanced accuracy is the mean of the sensitivities of the two classes
# (0.5 for a constant answer, however unbalanced the classes); AUC is the
# probability that a random HGG subject scores above a random LGG one.

# %%
X_all = data[list(FEATURES)].copy()
for column in ("WT_ml", "TC_ml", "ET_ml"):
    X_all[column] = np.log1p(X_all[column])  # volumes span two orders of magnitude
X_all = X_all.fillna(X_all.median())
y_grade = (data["grade"] == "HGG").astype(int)
folds = RepeatedStratifiedKFold(n_splits=FOLDS, n_repeats=REPEATS, random_state=SEED)


def logistic():
    return make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))


def cv_scores(model, X, y, cv, scoring):
    scores = cross_validate(model, X, y, cv=cv, scoring=scoring)
    return {name: f"{scores[f'test_{name}'].mean():.3f} ± {scores[f'test_{name}'].std():.3f}" for name in scoring}


no_et = [c for c in FEATURES if c not in ("ET_ml", "ET_over_TC")]
grade_models = {
    "majority class (baseline)": (DummyClassifier(strategy="most_frequent"), ["WT_ml"]),
    "whole-tumour volume alone (baseline)": (logistic(), ["WT_ml"]),
    "all features": (logistic(), list(FEATURES)),
    "all but the enhancing features": (logistic(), no_et),
}
grade_table = pd.DataFrame({name: cv_scores(model, X_all[cols], y_grade, folds, ["balanced_accuracy", "roc_auc"])
                            for name, (model, cols) in grade_models.items()}).T
grade_table

# %%
def mean_of(cell):
    return float(cell.split(" ± ")[0])


def spread_of(cell):
    return float(cell.split(" ± ")[1])


best = max(grade_table.index, key=lambda name: mean_of(grade_table.loc[name, "balanced_accuracy"]))
base = grade_table.loc["whole-tumour volume alone (baseline)", "balanced_accuracy"]
gap = mean_of(grade_table.loc[best, "balanced_accuracy"]) - mean_of(base)
drop = mean_of(grade_table.loc["all features", "balanced_accuracy"]) - mean_of(
    grade_table.loc["all but the enhancing features", "balanced_accuracy"])
print(f"best: {best}, balanced accuracy {grade_table.loc[best, 'balanced_accuracy']}: "
      f"{gap:+.3f} over the volume-alone baseline, "
      f"{'more' if gap > spread_of(base) else 'less'} than one standard deviation of the folds ({spread_of(base):.3f})")
print(f"without the enhancing features the balanced accuracy changes by {-drop:+.3f}: "
      f"{'they carry most of the signal' if drop > 0.1 else 'the other features make up for them'}")

# %% [markdown]
# Where the errors are: one cross-validated prediction per subject (the
# first repetition's folds), against the true grade.

# %%
one_round = RepeatedStratifiedKFold(n_splits=FOLDS, n_repeats=1, random_state=SEED)
predicted = np.zeros(len(y_grade), int)
for train_idx, test_idx in one_round.split(X_all, y_grade):
    predicted[test_idx] = logistic().fit(X_all.iloc[train_idx], y_grade.iloc[train_idx]).predict(X_all.iloc[test_idx])
pd.DataFrame(confusion_matrix(y_grade, predicted, labels=[1, 0]), index=["true HGG", "true LGG"],
             columns=["predicted HGG", "predicted LGG"])

# %% [markdown]
# On the phantom, enhancement **is** the grade: every lower-grade phantom
# tumour was planted without enhancing tumour, so the enhancing features
# separate the classes by construction. Real gliomas are not that tidy: some
# lower-grade tumours enhance and some glioblastomas hardly do, and the
# grade is a pathologist's call on tissue, not a property of the scan.
#
# ## 4. Survival
#
# BraTS scored survival as three classes: short (< 10 months, 300 days),
# mid (10-15 months) and long (> 15 months, 450 days). A censored patient
# has a class only when they were still alive after 450 days (long); one
# censored earlier could still fall in any class, so the classifiers below
# leave them out (the survival models of 4.2 use them).

# %%
surv = survival.join(features, how="inner")
surv["resection_STR"] = (surv["resection"] == "STR").astype(float)
surv["resection_NA"] = surv["resection"].isna().astype(float)
known = surv["event"] | (surv["survival_days"] > 450)
surv["survival_class"] = np.where(known, survival_class(surv["survival_days"]), None)
classed = surv[known]
print(f"{len(surv)} subjects with survival and features; {len(classed)} have a known BraTS class "
      f"({(~known).sum()} censored before 450 days left out): "
      f"{classed['survival_class'].value_counts().reindex(SURVIVAL_CLASSES).to_dict()}")

# %% [markdown]
# ### 4.1 Three survival classes: accuracy against the baselines

# %%
X_surv = surv.drop(columns=["survival_days", "event", "resection", "line", "survival_class"]).copy()
for column in ("WT_ml", "TC_ml", "ET_ml"):
    X_surv[column] = np.log1p(X_surv[column])
X_surv = X_surv.fillna(X_surv.median())
tumour = list(FEATURES)
clinical = ["age", "resection_STR", "resection_NA"]
class_models = {
    "majority class (baseline)": (DummyClassifier(strategy="most_frequent"), ["age"]),
    "age alone (baseline)": (logistic(), ["age"]),
    "tumour features alone": (logistic(), tumour),
    "age + resection + tumour features": (logistic(), clinical + tumour),
}
class_folds = RepeatedStratifiedKFold(n_splits=FOLDS, n_repeats=REPEATS, random_state=SEED)
y_class = classed["survival_class"].astype(str)
class_table = pd.DataFrame({name: cv_scores(model, X_surv.loc[classed.index, cols], y_class, class_folds,
                                            ["accuracy", "balanced_accuracy"])
                            for name, (model, cols) in class_models.items()}).T
class_table

# %%
best = max(class_table.index, key=lambda name: mean_of(class_table.loc[name, "accuracy"]))
age_acc = class_table.loc["age alone (baseline)", "accuracy"]
gain = mean_of(class_table.loc[best, "accuracy"]) - mean_of(age_acc)
print(f"chance with three balanced classes: 0.333; majority class: "
      f"{class_table.loc['majority class (baseline)', 'accuracy']}")
print(f"best: {best}, accuracy {class_table.loc[best, 'accuracy']}; "
      + ("that is the age baseline itself" if best == "age alone (baseline)" else
         f"{gain:+.3f} over age alone, {'more' if gain > spread_of(age_acc) else 'within'} than one standard "
         f"deviation of the folds ({spread_of(age_acc):.3f})"))

# %% [markdown]
# ### 4.2 Kaplan-Meier curves and a Cox model
#
# Classes throw information away: a patient who died at 299 days is
# "short" and one at 301 "mid". Survival analysis uses the times
# themselves, censored ones included. The **Kaplan-Meier** estimate is the
# fraction still alive at each time: at each time of death it is multiplied
# by the share of the patients then at risk who survive it; a censored
# patient counts as at risk until their last follow-up and then leaves.
# Below: older against younger patients (split at the median age), and
# large against small tumour cores (split at the median volume), with 95 %
# confidence bands, a tick where a patient was censored, and the log-rank
# test of whether the curves differ.

# %% alt="Kaplan-Meier survival curves with 95% confidence bands: patients above against below the median age, and tumour cores above against below the median volume."
y_surv = Surv.from_arrays(event=surv["event"].to_numpy(), time=surv["survival_days"].to_numpy())
splits = {"age": surv["age"], "tumour core (mL)": surv["TC_ml"]}
fig, axes = plt.subplots(1, 2, figsize=(12, 4), sharey=True)
km_rows = {}
for ax, (what, values) in zip(axes, splits.items()):
    cut = float(values.median())
    groups = np.where(values > cut, f"{what} > {cut:.1f}", f"{what} <= {cut:.1f}")
    for group, colour in zip(sorted(set(groups)), ("tab:purple", "tab:orange")):
        mask = groups == group
        time, alive, (low, high) = kaplan_meier_estimator(surv["event"].to_numpy()[mask],
                                                        surv["survival_days"].to_numpy()[mask], conf_type="log-log")
        ax.step(time, alive, where="post", color=colour, label=f"{group} (n={mask.sum()})")
        ax.fill_between(time, low, high, step="post", color=colour, alpha=0.2)
        censored = surv["survival_days"].to_numpy()[mask & ~surv["event"].to_numpy()]
        ax.plot(censored, alive[np.searchsorted(time, censored, side="right") - 1], "|", color=colour, ms=8)
        below = time[alive <= 0.5]
        km_rows[group] = {"patients": int(mask.sum()), "deaths": int(surv["event"].to_numpy()[mask].sum()),
                          "median survival (days)": float(below[0]) if len(below) else np.nan}
    chi2, p_value = compare_survival(y_surv, groups)
    ax.set_title(f"split at the median {what}: log-rank p = {p_value:.2g}", fontsize=10)
    ax.set_xlabel("days since diagnosis")
    ax.legend(fontsize=8)
axes[0].set_ylabel("fraction alive (Kaplan-Meier)")
plt.tight_layout()
plt.show()
pd.DataFrame(km_rows).T

# %% [markdown]
# The **Cox model** says how the hazard - the instantaneous risk of death -
# changes with each feature: hazard ratio $e^{\beta}$ per unit. Its score is
# the **concordance index** (C): of the pairs of patients whose order of
# death is known, the share in which the model gives the higher risk to the
# one who died first. 0.5 is a coin, 1 a perfect ranking. Cross-validated,
# like everything above.

# %%
cox_sets = {
    "age alone (baseline)": ["age"],
    "tumour features alone": tumour,
    "age + resection + tumour core volume": clinical + ["TC_ml"],
    "age + resection + all tumour features": clinical + tumour,
}
cox_folds = [fold for r in range(REPEATS) for fold in KFold(FOLDS, shuffle=True, random_state=SEED + r).split(X_surv)]


def cox_c(columns):
    scores = cross_validate(CoxPHSurvivalAnalysis(alpha=0.1), X_surv[columns], y_surv, cv=cox_folds)["test_score"]
    return scores.mean(), scores.std()


cox_table = pd.DataFrame({name: dict(zip(("C mean", "C sd"), cox_c(cols))) for name, cols in cox_sets.items()}).T
cox_table.round(3)

# %% [markdown]
# Which features carry the signal? Each feature alone (its cross-validated
# C), and the hazard ratio of each in the full model fitted on all patients
# (per standard deviation of the feature, so they compare).

# %%
single = {column: cox_c([column]) for column in clinical + tumour}
full = clinical + tumour
scaled = (X_surv[full] - X_surv[full].mean()) / X_surv[full].std().replace(0, 1)
cox = CoxPHSurvivalAnalysis(alpha=0.1).fit(scaled, y_surv)
signal = pd.DataFrame({"C alone": {k: v[0] for k, v in single.items()},
                       "C alone sd": {k: v[1] for k, v in single.items()},
                       "hazard ratio per sd (full model)": dict(zip(full, np.exp(cox.coef_)))})
signal = signal.sort_values("C alone", ascending=False)
signal.round(3)

# %%
top = signal.index[: 3].tolist()
best_cox = cox_table["C mean"].idxmax()
c_age, c_best = cox_table.loc["age alone (baseline)"], cox_table.loc[best_cox]
strongest = ", ".join(f"{t} (C {signal.loc[t, 'C alone']:.3f})" for t in top)
print(f"strongest single features: {strongest}")
if best_cox == "age alone (baseline)":
    print(f"no model beats age alone (C {c_age['C mean']:.3f} ± {c_age['C sd']:.3f})")
else:
    gain = c_best["C mean"] - c_age["C mean"]
    print(f"best: {best_cox}, C {c_best['C mean']:.3f} ± {c_best['C sd']:.3f}, against age alone "
          f"{c_age['C mean']:.3f} ± {c_age['C sd']:.3f}: {gain:+.3f}, "
          f"{'more' if gain > c_age['C sd'] else 'less'} than one standard deviation of the folds")

# %% [markdown]
# ## 5. Ground truth or the course's own segmentation?
#
# In practice nobody draws the tumour by hand before asking the model: the
# features come from an automatic segmentation. How much does that change
# them, and the predictions made from them? We take lesson 05's model (as
# lesson 06 does), predict its held-out cases, and compute the features from
# the prediction and from the ground truth.

# %%
train_now = course_mode() == "ci" if TRAIN_IF_MISSING is None else TRAIN_IF_MISSING
if not model_path.is_file() and train_now:
    print(f"{model_path} not found: training it first, as lesson 05 does")
    trained = train(config)
    print(f"trained {len(trained.history)} epochs in {trained.seconds:.0f} s")
if model_path.is_file() and DATASET == "phantom":
    model = keras.models.load_model(model_path)
    plan = plan_for_model(model_path)  # the run's plan.json: its preprocessing and its held-out cases
    val_ids = list(plan.validation_cases) or prepare_data(config, progress=False)[3]
    pairs = {}
    for case_id in val_ids:
        case = load_case(data_dir, case_id)
        pred, _ = predict_case(model, case.image, largest_component=True, progress=False, plan=plan)
        pairs[case_id] = {"truth": tumour_features(case.label, case.affine),
                          "predicted": tumour_features(pred, case.affine)}
    print(f"model {model_path.name} of mode {course_mode()}: {len(pairs)} held-out cases predicted")
elif DATASET != "phantom":
    pairs = {}
    print("on real data: predict the cases with `python -m utils.inference.predict` (lesson 06), then compare as below")
else:
    pairs = {}
    print(f"no model at {model_path}: run lesson 05 first (or set TRAIN_IF_MISSING = True); comparison skipped")

# %%
if pairs:
    rows = {}
    for case_id, both in pairs.items():
        for region in ("WT", "TC", "ET"):
            t, p = both["truth"][f"{region}_ml"], both["predicted"][f"{region}_ml"]
            rows[(case_id, region)] = {"truth (mL)": t, "predicted (mL)": p, "difference (mL)": p - t}
    volumes = pd.DataFrame(rows).T
    relative = (volumes["difference (mL)"].abs() / volumes["truth (mL)"].clip(lower=0.1)).groupby(level=1).mean()
    for region in ("WT", "TC", "ET"):
        d = volumes.xs(region, level=1)["difference (mL)"].abs()
        print(f"{region}: mean |predicted - truth| {d.mean():.2f} mL (largest {d.max():.2f}), "
              f"{relative[region]:.0%} of the true volume")
    print(f"largest relative error: {relative.idxmax()}")
    display(volumes.round(2))

# %% [markdown]
# What those differences do to the models of sections 3 and 4: both are
# fitted on every subject's ground-truth features; then each held-out case
# is scored from its true and from its predicted segmentation. The Cox model
# needs an age: the case's own where it has a survival row, else the median.

# %%
if pairs:
    grade_model = logistic().fit(X_all, y_grade)
    cox_full = CoxPHSurvivalAnalysis(alpha=0.1).fit(X_surv[full], y_surv)

    def as_row(feats, case_id):
        row = pd.DataFrame([feats])[list(FEATURES)]
        for column in ("WT_ml", "TC_ml", "ET_ml"):
            row[column] = np.log1p(row[column])
        row = row.fillna(X_all.median())
        for column in clinical:
            row[column] = surv.loc[case_id, column] if case_id in surv.index else X_surv[column].median()
        return row

    effect = {}
    for case_id, both in pairs.items():
        t, p = as_row(both["truth"], case_id), as_row(both["predicted"], case_id)
        effect[case_id] = {
            "P(HGG) truth": grade_model.predict_proba(t[list(FEATURES)])[0, 1],
            "P(HGG) predicted": grade_model.predict_proba(p[list(FEATURES)])[0, 1],
            "hazard ratio predicted / truth": float(np.exp(cox_full.predict(p[full])[0] - cox_full.predict(t[full])[0])),
        }
    effect = pd.DataFrame(effect).T
    flips = int(((effect["P(HGG) truth"] > 0.5) != (effect["P(HGG) predicted"] > 0.5)).sum())
    ratio = effect["hazard ratio predicted / truth"]
    print(f"grade calls that change: {flips} of {len(effect)}; mean |change of P(HGG)| "
          f"{(effect['P(HGG) predicted'] - effect['P(HGG) truth']).abs().mean():.3f}")
    print(f"Cox risk from the predicted segmentation: hazard ratio to the truth's from {ratio.min():.2f} "
          f"to {ratio.max():.2f} (1.00: no change)")
    display(effect.round(3))

# %% [markdown]
# A few held-out cases are too few to put a spread on these numbers; they
# show the mechanism: every feature inherits the segmentation's errors (the
# line "largest relative error" names the region that suffers most), and
# the models' outputs inherit them in turn. A model meant to run
# on automatic segmentations is better trained on automatic segmentations
# too, so that it learns with the errors it will meet.
#
# ## 6. What this means, and what BraTS found on real patients
#
# On the phantom the models can only find the generative model of section
# 1: age, the tumour core and the resection set the hazard, the enhancement
# sets the grade, and an unexplained factor plus the randomness of the time
# of death keep survival hard to predict, on purpose. The numbers above show
# how to measure, not what is true of gliomas.
#
# On real data the lesson of the BraTS survival task (2017-2020) is
# sobering:
#
# - Bakas et al., 2018, *Identifying the best machine learning algorithms
#   for brain tumor segmentation, progression assessment, and overall
#   survival prediction in the BRATS challenge* (arXiv:1811.02629) reviews
#   the task: the three classes above, scored by accuracy on the patients
#   with a gross total resection.
# - Suter et al., 2018, *Deep learning versus classical regression for brain
#   tumor patient survival prediction* (BrainLes 2018): an ensemble of
#   support vector classifiers reached 72.2 % cross-validated accuracy on
#   the BraTS 2018 training set, 57.1 % on the validation set and 42.9 % on
#   the test set - cross-validation on a small cohort flatters.
# - *A baseline for predicting glioblastoma patient survival time with
#   classical statistical models and primitive features ignoring image
#   information* (BrainLes 2019): their best validation accuracy came from a
#   median regression on the patient's age alone.
# - Sun et al., 2019, *Brain tumor segmentation and survival prediction
#   using multimodal MRI scans with deep learning* (Frontiers in
#   Neuroscience): 61.0 % accuracy, second place in the BraTS 2018 survival
#   task, with a random forest on features selected from 4,524 radiomic
#   features.
#
# Age is among the best single predictors, and three-class accuracy on
# patients the model never saw stays between about 0.4 and 0.6. To run this lesson on BraTS 2020, set `DATASET` to the
# folder that holds `survival_info.csv` and `name_mapping.csv`
# (`data/README.md` says where to get it).
