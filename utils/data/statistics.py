"""Tables about label maps: voxel counts and volumes in millilitres."""

from __future__ import annotations

import numpy as np
import pandas as pd

from .labels import CLASS_NAMES, MODALITIES, REGION_NAMES, REGIONS


def label_volume_table(label: np.ndarray, spacing) -> pd.DataFrame:
    """Voxel count and volume of each tumour class and BraTS region.

    Args:
        label: ``(x, y, z)`` label map in the MSD values (0-3).
        spacing: voxel size in mm, e.g. from the NIfTI header.

    Returns:
        DataFrame indexed by class / region name with columns ``labels``,
        ``voxels`` and ``volume_mL`` (1 mL = 1000 mm^3).
    """
    label = np.asarray(label)
    if len(spacing) != 3 or min(spacing) <= 0:
        raise ValueError(f"spacing must be three positive sizes in mm; found {tuple(spacing)}")
    counts = np.bincount(label.ravel().astype(np.intp), minlength=4)
    voxel_ml = float(np.prod(spacing)) / 1000.0
    rows = []
    for k, name in enumerate(CLASS_NAMES, start=1):
        rows.append((name, str(k), int(counts[k])))
    for region, values in REGIONS.items():
        rows.append(
            (f"{REGION_NAMES[region]} ({region})", "+".join(map(str, values)), int(sum(counts[v] for v in values)))
        )
    table = pd.DataFrame(rows, columns=["name", "labels", "voxels"]).set_index("name")
    table["volume_mL"] = (table["voxels"] * voxel_ml).round(2)
    return table


def class_intensity_table(image: np.ndarray, label: np.ndarray) -> pd.DataFrame:
    """Median intensity of each tissue class per sequence, relative to healthy brain.

    Args:
        image: ``(x, y, z, 4)``. label: ``(x, y, z)`` in MSD values.

    Returns:
        DataFrame (rows: healthy brain and the three classes; columns: the
        sequences) of medians divided by the healthy-brain median, so 1.0 is
        "as bright as normal brain" and 2.0 "twice as bright".
    """
    brain = np.any(image != 0, axis=-1)
    rows = {"healthy brain": brain & (label == 0)}
    rows.update({name: label == k for k, name in enumerate(CLASS_NAMES, start=1)})
    table = pd.DataFrame(
        {
            name: [float(np.median(image[..., c][m])) if m.any() else np.nan for m in rows.values()]
            for c, name in enumerate(MODALITIES)
        },
        index=list(rows),
    )
    return (table / table.loc["healthy brain"]).round(2)


def label_statistics(volumes: pd.DataFrame) -> pd.DataFrame:
    """How often each class is present across cases, and how its volume spreads.

    Args:
        volumes: one row per case and one column per class (``CLASS_NAMES``,
            in mL), e.g. from :func:`dataset_volume_table` (whose ``mean`` and
            ``median`` rows are skipped).

    Returns:
        DataFrame indexed by class and region (WT, TC) with columns ``cases``
        (where present), ``share`` (fraction of all cases) and ``min_mL``,
        ``median_mL``, ``max_mL`` over the cases where it is present.
    """
    missing = [c for c in CLASS_NAMES if c not in volumes.columns]
    if missing:
        raise ValueError(f"expected one column per class {list(CLASS_NAMES)}; missing {missing}")
    per_case = volumes.drop(index=[r for r in ("mean", "median") if r in volumes.index])
    table = per_case[list(CLASS_NAMES)].astype(float)
    for region in ("WT", "TC"):
        names = [CLASS_NAMES[v - 1] for v in REGIONS[region]]
        table[f"{REGION_NAMES[region]} ({region})"] = table[names].sum(axis=1)
    rows = {}
    for name in table.columns:
        present = table[name][table[name] > 0]
        rows[name] = {
            "cases": len(present),
            "share": round(len(present) / max(len(table), 1), 2),
            "min_mL": round(float(present.min()), 1) if len(present) else np.nan,
            "median_mL": round(float(present.median()), 1) if len(present) else np.nan,
            "max_mL": round(float(present.max()), 1) if len(present) else np.nan,
        }
    return pd.DataFrame.from_dict(rows, orient="index")
