"""Clinical tables of BraTS 2020 and tumour features from a label map (lesson 08).

The BraTS 2020 training data ships two tables beside its case folders (the
Kaggle copy keeps them there too):

* ``name_mapping.csv`` - one row per subject: ``Grade`` (HGG / LGG),
  ``BraTS_2017_subject_ID``, ``BraTS_2018_subject_ID``,
  ``TCGA_TCIA_subject_ID``, ``BraTS_2019_subject_ID``,
  ``BraTS_2020_subject_ID`` (``NA`` where a subject had no id that year);
* ``survival_info.csv`` - the subjects with a known outcome (236 of 369, all
  HGG): ``Brats20ID``, ``Age`` (years), ``Survival_days`` and
  ``Extent_of_Resection`` (``GTR`` gross total, ``STR`` subtotal, ``NA``
  unknown). ``Survival_days`` is a number of days from diagnosis to death, or
  a string such as ``ALIVE (361 days later)``: alive at the last follow-up,
  a *censored* time.

:func:`read_survival_info` and :func:`read_name_mapping` read them as they
come and refuse what they cannot read, naming the file and the line.
:func:`match_cases` says which table ids have no case folder and which cases
no row. :func:`tumour_volumes_ml` and :func:`tumour_features` turn a label map
and its affine into the numbers a clinical model uses: region volumes in mL,
ratios, where the tumour sits and how far it reaches.
"""

from __future__ import annotations

import csv
import math
import re
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import ndimage

from ..errors import CourseError

SURVIVAL_FILE = "survival_info.csv"
NAME_MAPPING_FILE = "name_mapping.csv"
SURVIVAL_COLUMNS = ("Brats20ID", "Age", "Survival_days", "Extent_of_Resection")
NAME_MAPPING_COLUMNS = (
    "Grade",
    "BraTS_2017_subject_ID",
    "BraTS_2018_subject_ID",
    "TCGA_TCIA_subject_ID",
    "BraTS_2019_subject_ID",
    "BraTS_2020_subject_ID",
)
GRADES = ("HGG", "LGG")
RESECTIONS = ("GTR", "STR")
MISSING = ("", "NA", "N/A", "NAN")
"""Cell values that mean "not known" (compared upper-case, stripped)."""
SURVIVAL_CLASSES = ("short", "mid", "long")
SURVIVAL_EDGES_DAYS = (300.0, 450.0)
"""The BraTS survival task's classes: short < 10 months (300 days), mid 10-15, long > 15 months (450 days)."""

_ALIVE = re.compile(r"^ALIVE\s*\(\s*(\d+(?:\.\d+)?)\s*DAYS?\s+LATER\s*\)$", re.IGNORECASE)
_REGIONS = {"WT": (1, 2, 3), "TC": (2, 3), "ET": (3,)}


class ClinicalTableError(CourseError, ValueError):
    """A clinical table that cannot be read: the message names the file, the line and what was expected."""


def parse_survival(value) -> tuple[float, bool]:
    """Parse one ``Survival_days`` cell of ``survival_info.csv``.

    Taught in lesson 08, exercise 1.

    Args:
        value: the cell as read: a number of days (``289``, ``"289"``,
            ``"289.0"``), or ``"ALIVE (361 days later)"``.

    Returns:
        ``(days, event)``: the time in days and whether the death was
        observed (False: alive at ``days``, a censored time).

    Raises:
        ValueError: for anything else (empty, negative, not a number).
    """
    text = str(value).strip()
    alive = _ALIVE.match(text)
    if alive:
        return float(alive.group(1)), False
    try:
        days = float(text)
    except ValueError:
        raise ValueError(f"expected a number of days or 'ALIVE (N days later)'; found {text!r}") from None
    if not math.isfinite(days) or days < 0:
        raise ValueError(f"expected a number of days >= 0; found {text!r}")
    return days, True


def survival_class(days) -> np.ndarray:
    """The BraTS class of each survival time: ``"short"`` (< 300 days), ``"mid"`` (300 to 450) or ``"long"`` (> 450)."""
    days = np.asarray(days, dtype=float)
    short, long = SURVIVAL_EDGES_DAYS
    return np.array(SURVIVAL_CLASSES)[np.where(days < short, 0, np.where(days <= long, 1, 2))]


def _read_rows(path: Path, columns: Iterable[str], what: str) -> list[tuple[int, dict[str, str]]]:
    """The rows of a CSV file as ``(line number, {column: text})``; the header must hold ``columns``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} not found: expected the file {path}")
    with path.open(newline="", encoding="utf-8-sig") as handle:  # utf-8-sig: a BOM from a spreadsheet is dropped
        reader = csv.reader(handle)
        try:
            header = [h.strip() for h in next(reader)]
        except StopIteration:
            raise ClinicalTableError(f"{path}: empty file; expected a header {', '.join(columns)}") from None
        except (csv.Error, UnicodeDecodeError) as err:
            raise ClinicalTableError(f"{path}: not a CSV text file ({err})") from None
        missing = [c for c in columns if c not in header]
        if missing:
            raise ClinicalTableError(
                f"{path}, line 1: expected the columns {', '.join(columns)}; missing {', '.join(missing)} "
                f"(found {', '.join(header)})"
            )
        rows = []
        try:
            for cells in reader:
                line = reader.line_num
                if not any(c.strip() for c in cells):
                    continue  # a blank line
                if len(cells) > len(header):
                    raise ClinicalTableError(
                        f"{path}, line {line}: {len(cells)} cells but the header has {len(header)} columns"
                    )
                cells = cells + [""] * (len(header) - len(cells))
                rows.append((line, {h: c.strip() for h, c in zip(header, cells)}))
        except (csv.Error, UnicodeDecodeError) as err:
            raise ClinicalTableError(f"{path}, line {reader.line_num}: cannot read the CSV ({err})") from None
    return rows


def _is_missing(text: str) -> bool:
    return text.strip().upper() in MISSING


def _check_ids(path: Path, rows: list[tuple[int, str]], column: str) -> None:
    seen: dict[str, int] = {}
    for line, case_id in rows:
        if _is_missing(case_id):
            raise ClinicalTableError(f"{path}, line {line}: empty {column}; every row needs a subject id")
        if case_id in seen:
            raise ClinicalTableError(
                f"{path}, line {line}: subject {case_id!r} appears twice (first on line {seen[case_id]})"
            )
        seen[case_id] = line


def read_survival_info(path: Path | str) -> pd.DataFrame:
    """Read ``survival_info.csv`` as BraTS 2020 ships it.

    Args:
        path: the file.

    Returns:
        One row per subject, indexed by ``Brats20ID``: ``age`` (years),
        ``survival_days`` (float), ``event`` (True: death observed; False:
        alive at ``survival_days``, censored), ``resection`` (``"GTR"``,
        ``"STR"``, missing - ``isna()`` - when ``NA``) and ``line`` (the row's line in the file).

    Raises:
        FileNotFoundError: no such file.
        ClinicalTableError: a column is missing, or a cell cannot be read
            (the message names the file, the line and the cell).
    """
    path = Path(path)
    rows = _read_rows(path, SURVIVAL_COLUMNS, "the survival table")
    _check_ids(path, [(line, r["Brats20ID"]) for line, r in rows], "Brats20ID")
    records = []
    for line, r in rows:
        where = f"{path}, line {line} ({r['Brats20ID']})"
        try:
            age = float(r["Age"])
        except ValueError:
            age = math.nan
        if not (math.isfinite(age) and 0.0 <= age <= 120.0):
            raise ClinicalTableError(f"{where}: Age must be a number of years in 0..120; found {r['Age']!r}")
        try:
            days, event = parse_survival(r["Survival_days"])
        except ValueError as err:
            raise ClinicalTableError(f"{where}: Survival_days: {err}") from None
        resection = r["Extent_of_Resection"].strip().upper()
        if _is_missing(resection):
            resection = None
        elif resection not in RESECTIONS:
            raise ClinicalTableError(
                f"{where}: Extent_of_Resection must be GTR, STR or NA; found {r['Extent_of_Resection']!r}"
            )
        records.append(
            {
                "Brats20ID": r["Brats20ID"],
                "age": age,
                "survival_days": days,
                "event": event,
                "resection": resection,
                "line": line,
            }
        )
    columns = ["age", "survival_days", "event", "resection", "line"]
    return pd.DataFrame.from_records(records, columns=["Brats20ID", *columns]).set_index("Brats20ID")


def read_name_mapping(path: Path | str) -> pd.DataFrame:
    """Read ``name_mapping.csv`` as BraTS 2020 ships it.

    Returns:
        One row per subject, indexed by ``BraTS_2020_subject_ID``: ``grade``
        (``"HGG"`` or ``"LGG"``), the subject's ids of earlier years and TCGA
        (missing where ``NA``) and ``line``.

    Raises:
        FileNotFoundError: no such file.
        ClinicalTableError: a column is missing, an id is empty or repeated,
            or a grade is not HGG / LGG (the message names the file and line).
    """
    path = Path(path)
    rows = _read_rows(path, NAME_MAPPING_COLUMNS, "the name mapping")
    _check_ids(path, [(line, r["BraTS_2020_subject_ID"]) for line, r in rows], "BraTS_2020_subject_ID")
    records = []
    for line, r in rows:
        grade = r["Grade"].strip().upper()
        if grade not in GRADES:
            raise ClinicalTableError(
                f"{path}, line {line} ({r['BraTS_2020_subject_ID']}): Grade must be HGG or LGG; found {r['Grade']!r}"
            )
        record = {"BraTS_2020_subject_ID": r["BraTS_2020_subject_ID"], "grade": grade}
        for column in NAME_MAPPING_COLUMNS[1:5]:
            record[column] = None if _is_missing(r[column]) else r[column]
        record["line"] = line
        records.append(record)
    columns = ["BraTS_2020_subject_ID", "grade", *NAME_MAPPING_COLUMNS[1:5], "line"]
    return pd.DataFrame.from_records(records, columns=columns).set_index("BraTS_2020_subject_ID")


def clinical_tables(folder: Path | str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Read ``name_mapping.csv`` and ``survival_info.csv`` from a BraTS 2020 training folder.

    Returns:
        ``(name_mapping, survival_info)`` as :func:`read_name_mapping` and
        :func:`read_survival_info` return them.

    Raises:
        FileNotFoundError: the folder lacks one of the two (the message says
            which, and that MSD Task01 ships neither).
    """
    folder = Path(folder)
    for name in (NAME_MAPPING_FILE, SURVIVAL_FILE):
        if not (folder / name).is_file():
            raise FileNotFoundError(
                f"no {name} in {folder}: the clinical tables come with the BraTS 2020 training data "
                "(MICCAI_BraTS2020_TrainingData, also the Kaggle copy); MSD Task01 ships none"
            )
    names = read_name_mapping(folder / NAME_MAPPING_FILE)
    survival = read_survival_info(folder / SURVIVAL_FILE)
    unknown = survival.index.difference(names.index)
    if len(unknown):
        first = survival.loc[unknown[0], "line"]
        raise ClinicalTableError(
            f"{folder / SURVIVAL_FILE}, line {first}: {len(unknown)} subject(s) not in {NAME_MAPPING_FILE}, "
            f"e.g. {unknown[0]!r}"
        )
    return names, survival


def match_cases(table: pd.DataFrame, case_ids: Iterable[str]) -> dict[str, list[str]]:
    """Compare a table's ids with the case folders of a dataset.

    Returns:
        ``{"matched": [...], "no_case_folder": [...], "no_row": [...]}``: ids in
        both, ids only in the table, case ids only in the dataset (each sorted).
    """
    ids, cases = set(map(str, table.index)), set(map(str, case_ids))
    return {
        "matched": sorted(ids & cases),
        "no_case_folder": sorted(ids - cases),
        "no_row": sorted(cases - ids),
    }


# ----------------------------------------------------------------------------
# Features from a label map
# ----------------------------------------------------------------------------


def _check_affine(affine) -> np.ndarray:
    affine = np.asarray(affine, dtype=np.float64)
    if affine.shape != (4, 4) or not np.isfinite(affine).all():
        raise ValueError(f"expected a finite 4x4 affine; found shape {affine.shape}")
    if abs(np.linalg.det(affine[:3, :3])) == 0:
        raise ValueError("the affine's 3x3 part is singular: a voxel would have no volume")
    return affine


def tumour_volumes_ml(label, affine) -> dict[str, float]:
    """Volume in mL of each BraTS region of a label map.

    Taught in lesson 08, exercise 2.

    Args:
        label: ``(x, y, z)`` integer label map in the MSD values (0
            background, 1 edema, 2 non-enhancing, 3 enhancing).
        affine: the 4x4 voxel-to-mm matrix of its NIfTI file.

    Returns:
        ``{"WT": ..., "TC": ..., "ET": ...}``: whole tumour {1, 2, 3}, tumour
        core {2, 3}, enhancing tumour {3}, each in mL (1 mL = 1000 mm³; one
        voxel is ``|det(affine[:3, :3])|`` mm³).
    """
    voxel_ml = abs(np.linalg.det(_check_affine(affine)[:3, :3])) / 1000.0
    counts = np.bincount(np.asarray(label).ravel().astype(np.int64), minlength=4)
    return {region: float(counts[list(values)].sum() * voxel_ml) for region, values in _REGIONS.items()}


FEATURES = (
    "WT_ml",
    "TC_ml",
    "ET_ml",
    "ET_over_TC",
    "TC_over_WT",
    "foci",
    "extent_mm",
    "centroid_x_mm",
    "centroid_y_mm",
    "centroid_z_mm",
    "midline_mm",
)
"""The columns :func:`tumour_features` returns."""


def tumour_features(label, affine) -> dict[str, float]:
    """Shape, size and location features of the tumour in one label map.

    Args:
        label: ``(x, y, z)`` MSD label map. affine: its 4x4 voxel-to-mm matrix.

    Returns:
        dict with the :data:`FEATURES`: region volumes in mL; ``ET_over_TC``
        and ``TC_over_WT`` (0 when the denominator is empty); ``foci``, the
        connected pieces of the whole tumour (26-connected); ``extent_mm``,
        the largest distance along an axis the whole tumour spans; the
        whole tumour's centroid in mm from the middle of the grid (x, y, z
        along the affine's axes); ``midline_mm``, the centroid's distance to
        the grid's middle sagittal plane, which is the brain's midline in
        atlas-registered data such as BraTS (and the phantom). Location
        features are NaN when there is no tumour.
    """
    affine = _check_affine(affine)
    label = np.asarray(label)
    volumes = tumour_volumes_ml(label, affine)
    out = {f"{r}_ml": v for r, v in volumes.items()}
    out["ET_over_TC"] = volumes["ET"] / volumes["TC"] if volumes["TC"] > 0 else 0.0
    out["TC_over_WT"] = volumes["TC"] / volumes["WT"] if volumes["WT"] > 0 else 0.0
    whole = label > 0
    out["foci"] = float(ndimage.label(whole, structure=np.ones((3, 3, 3)))[1]) if whole.any() else 0.0
    spacing = np.linalg.norm(affine[:3, :3], axis=0)
    if whole.any():
        idx = np.argwhere(whole)
        out["extent_mm"] = float(((idx.max(0) - idx.min(0) + 1) * spacing).max())
        centre = (np.array(label.shape) - 1) / 2.0
        offset = (idx.mean(0) - centre) * spacing
        out["centroid_x_mm"], out["centroid_y_mm"], out["centroid_z_mm"] = (float(v) for v in offset)
        out["midline_mm"] = abs(float(offset[0]))
    else:
        out.update(extent_mm=0.0, centroid_x_mm=np.nan, centroid_y_mm=np.nan, centroid_z_mm=np.nan, midline_mm=np.nan)
    return {name: out[name] for name in FEATURES}


def feature_table(cases: Iterable[tuple[str, np.ndarray, np.ndarray]]) -> pd.DataFrame:
    """:func:`tumour_features` of each ``(case_id, label, affine)``, one row per case (index ``case_id``)."""
    rows = {case_id: tumour_features(label, affine) for case_id, label, affine in cases}
    return pd.DataFrame.from_dict(rows, orient="index", columns=list(FEATURES)).rename_axis("case_id")
