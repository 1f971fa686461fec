"""Compare the course's metrics with the official BraTS evaluation code.

Two references, neither of which fits the course's environment (their pins
clash with it: panoptica needs numpy < 2.3 and pandas < 3), so this script runs
in a separate virtual environment:

* the BraTS 2023 organisers' lesion-wise script (``metrics.py`` of
  https://github.com/rachitsaluja/BraTS-2023-Metrics, with its bundled
  DeepMind ``surface_distance``): the definition the course implements
  (dilation merge and match, 0 Dice / 374 mm for misses and false positives,
  50 mm^3 threshold for gliomas);
* ``brats-evaluation`` (PyPI, built on ``panoptica``), the BraTS 2024+
  package: its whole-scan Dice / HD95 (``global_bin_*``) against the course's
  legacy Dice and the ``"pooled"`` HD95, and its lesion counts.

Reproduce (about a minute)::

    python3 -m venv /tmp/brats-eval && /tmp/brats-eval/bin/pip install brats-evaluation==0.0.10
    git clone https://github.com/rachitsaluja/BraTS-2023-Metrics /tmp/BraTS-2023-Metrics
    BRATS_COURSE_NO_KERAS=1 PYTHONPATH=. /tmp/brats-eval/bin/python benchmarks/compare_official_metrics.py \\
        --brats2023-metrics /tmp/BraTS-2023-Metrics

It builds a dozen synthetic cases (seeded) that exercise each rule - a missed
satellite, a false-positive blob, two lesions merged by dilation, a lesion
under the volume threshold, empty maps, anisotropic voxels - writes them as
NIfTI in the BraTS 2023 label values, scores them with all three, and prints
the differences.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import tempfile
import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

from utils.data.labels import BRATS2023_TO_MSD, REGIONS
from utils.evaluation.metrics import dice_score, hd95, lesion_wise_region

SHAPE = (96, 96, 64)
MSD_TO_BRATS2023 = {msd: raw for raw, msd in BRATS2023_TO_MSD.items()}


def ball(centre, radii, shape=SHAPE) -> np.ndarray:
    """Boolean ellipsoid."""
    grid = np.ogrid[tuple(slice(0, n) for n in shape)]
    return sum(((g - c) / r) ** 2 for g, c, r in zip(grid, centre, radii)) <= 1.0


def tumour(centre, radius) -> np.ndarray:
    """MSD label map of one tumour: edema shell (1), core (2), enhancing rim (3)."""
    label = np.zeros(SHAPE, np.uint8)
    label[ball(centre, [radius] * 3)] = 1
    label[ball(centre, [radius * 0.6] * 3)] = 3
    label[ball(centre, [radius * 0.4] * 3)] = 2
    return label


def cases() -> list[tuple[str, np.ndarray, np.ndarray, tuple[float, float, float]]]:
    """``(name, truth, prediction, spacing)`` in MSD values."""
    rng = np.random.default_rng(0)
    main = tumour((40, 40, 32), 14)
    out = [("perfect", main, main.copy(), (1.0, 1.0, 1.0))]
    out.append(("shifted 2 voxels", main, np.roll(main, 2, axis=0), (1.0, 1.0, 1.0)))
    truth = main.copy()
    truth[ball((75, 75, 32), [4] * 3)] = 1  # edema satellite, 257 mm^3, far from the main lesion
    out.append(("missed satellite", truth, main.copy(), (1.0, 1.0, 1.0)))
    pred = main.copy()
    pred[ball((80, 15, 20), [3] * 3)] = 3  # a false enhancing blob
    out.append(("false-positive blob", main, pred, (1.0, 1.0, 1.0)))
    truth = main.copy()
    truth[ball((40, 59, 32), [3] * 3)] = 1  # satellite 3 voxels from the main lesion: merged by dilation
    out.append(("close satellite (merged)", truth, main.copy(), (1.0, 1.0, 1.0)))
    truth = main.copy()
    truth[ball((80, 80, 50), [2] * 3)] = 1  # 33 mm^3: under the 50 mm^3 threshold
    out.append(("tiny lesion missed", truth, main.copy(), (1.0, 1.0, 1.0)))
    out.append(("empty prediction", main, np.zeros(SHAPE, np.uint8), (1.0, 1.0, 1.0)))
    truth = main.copy()
    truth[truth == 3] = 2  # no enhancing tumour in the truth
    out.append(("ET absent, predicted", truth, main.copy(), (1.0, 1.0, 1.0)))
    out.append(
        (
            "anisotropic 1x1x2 mm, eroded",
            main,
            np.where(ball((40, 40, 32), [12, 12, 12]), main, 0).astype(np.uint8),
            (1.0, 1.0, 2.0),
        )
    )
    for seed in range(3):  # random multi-lesion cases with noisy predictions
        truth = np.zeros(SHAPE, np.uint8)
        for _ in range(3):
            c = rng.integers([15, 15, 12], [81, 81, 52])
            lesion = tumour(tuple(c), float(rng.uniform(4, 10)))
            truth = np.where(lesion > 0, lesion, truth)
        pred = np.roll(truth, tuple(rng.integers(-2, 3, size=3)), axis=(0, 1, 2))
        noise = rng.random(SHAPE) < 0.00005  # a few stray voxels: false positives
        pred[noise] = rng.integers(1, 4, size=int(noise.sum()))
        out.append((f"random {seed}", truth, pred.astype(np.uint8), (1.0, 1.0, 1.0)))
    return out


def save(label_msd: np.ndarray, spacing, path: Path) -> None:
    raw = np.zeros_like(label_msd)
    for msd, value in MSD_TO_BRATS2023.items():
        raw[label_msd == msd] = value
    nib.save(nib.Nifti1Image(raw, np.diag([*spacing, 1.0])), path)


def organisers(checkout: Path):
    """The organisers' BraTS 2023 ``metrics`` module, with shims for what numpy 2 / pandas 2 removed."""
    if not hasattr(np, "Inf"):
        np.Inf = np.inf
    if not hasattr(pd.DataFrame, "append"):
        pd.DataFrame.append = lambda self, other: pd.concat([self, other])
    sys.path.insert(0, str(checkout))
    module = importlib.import_module("metrics")
    scores = module.get_LesionWiseScores

    def lesion_scores_with_tuples(*args, **kwargs):
        # pandas 2 cannot DataFrame.replace() over a column of numpy arrays: hand it tuples
        out = list(scores(*args, **kwargs))
        out[4] = [(tuple(pair[0].tolist()), *pair[1:]) for pair in out[4]]
        return tuple(out)

    module.get_LesionWiseScores = lesion_scores_with_tuples
    return module


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--brats2023-metrics", type=Path, required=True, help="a checkout of rachitsaluja/BraTS-2023-Metrics"
    )
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    official = organisers(args.brats2023_metrics)
    from brats_evaluation import config_path
    from panoptica import Panoptica_Evaluator

    evaluator = Panoptica_Evaluator.load_from_config(str(config_path("gli")))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, truth, pred, spacing in cases():
            gt_file, pred_file = Path(tmp) / "gt.nii.gz", Path(tmp) / "pred.nii.gz"
            save(truth, spacing, gt_file)
            save(pred, spacing, pred_file)
            ref = official.get_LesionWiseResults(str(pred_file), str(gt_file), "BraTS-GLI").set_index("Labels")
            pano = {k.upper(): v.to_dict(True) for k, v in evaluator.evaluate(str(pred_file), str(gt_file)).items()}
            for region, values in REGIONS.items():
                t, p = np.isin(truth, values), np.isin(pred, values)
                ours = lesion_wise_region(t, p, spacing, dilation=3, min_volume=50.0)
                theirs = ref.loc[region]
                g = pano[region]
                rows.append(
                    {
                        "case": name,
                        "region": region,
                        "LW Dice": ours.dice,
                        "LW Dice 2023": float(theirs["LesionWise_Score_Dice"]),
                        "LW HD95": ours.hd95,
                        "LW HD95 2023": float(theirs["LesionWise_Score_HD95"]),
                        "TP/FN/FP": f"{ours.n_tp}/{ours.n_fn}/{ours.n_fp}",
                        "TP/FN/FP 2023": f"{int(theirs['Num_TP'])}/{int(theirs['Num_FN'])}/{int(theirs['Num_FP'])}",
                        "Dice": dice_score(t, p),
                        "Dice pano": g.get("global_bin_dsc"),
                        "HD95 max": hd95(t, p, spacing),
                        "HD95 2023": float(theirs["Legacy_HD95"]),
                        "HD95 pooled": hd95(t, p, spacing, "pooled"),
                        "HD95 pano": g.get("global_bin_hd95"),
                        "TP/FN/FP pano": f"{g.get('tp')}/{g.get('fn')}/{g.get('fp')}",
                    }
                )
    table = pd.DataFrame(rows).set_index(["case", "region"])
    with pd.option_context("display.width", 250, "display.max_columns", 30, "display.max_rows", 200):
        print(table.round(3).to_string())
    diff = lambda a, b, rows=table: (rows[a].astype(float) - rows[b].astype(float)).abs()  # noqa: E731
    print(f"\nmax |difference| over {len(table)} case-regions:")
    print(f"  lesion-wise Dice vs organisers' 2023 script: {diff('LW Dice', 'LW Dice 2023').max():.2e}")
    print(
        f"  lesion-wise HD95 ('max') vs organisers' 2023 script: max {diff('LW HD95', 'LW HD95 2023').max():.3f} mm, "
        f"median {diff('LW HD95', 'LW HD95 2023').median():.3f} mm (DeepMind surfels vs voxel surfaces)"
    )
    print(
        f"  lesion counts TP/FN/FP equal to the 2023 script's: {(table['TP/FN/FP'] == table['TP/FN/FP 2023']).sum()}"
        f"/{len(table)}"
    )
    print(f"  legacy Dice vs brats-evaluation global_bin_dsc: {diff('Dice', 'Dice pano').max():.2e}")
    both = table[(table["HD95 max"] > 0) & np.isfinite(table["HD95 pano"].astype(float))]  # neither mask empty
    iso = both.drop(index="anisotropic 1x1x2 mm, eroded", level="case")
    print(
        f"  HD95 'pooled' vs brats-evaluation global_bin_hd95, 1 mm voxels: {diff('HD95 pooled', 'HD95 pano', iso).max():.2e} mm"
        f"; 1x1x2 mm voxels: {diff('HD95 pooled', 'HD95 pano', both).max():.3f} mm (brats-evaluation scores voxels, not mm)"
    )
    print(
        f"  HD95 'max' vs the 2023 script's legacy HD95 (DeepMind surfels), both masks non-empty: "
        f"{diff('HD95 max', 'HD95 2023', both).max():.3f} mm"
    )
    print(
        f"  HD95 'max' vs 'pooled', both masks non-empty: median {(both['HD95 max'] - both['HD95 pooled']).median():.3f} mm, "
        f"max {diff('HD95 max', 'HD95 pooled', both).max():.3f} mm"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
