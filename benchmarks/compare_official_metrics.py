"""Compare the course's metrics with the official BraTS evaluation code.

Two references, neither of which fits the course's environment (their pins
clash with it: panoptica needs numpy < 2.3 and pandas < 3), so this script runs
in a separate virtual environment:

* the BraTS 2023 organisers' lesion-wise script (``metrics.py`` of
  https://github.com/rachitsaluja/BraTS-2023-Metrics, run as it is, with its
  bundled copy of DeepMind's ``surface_distance``): the definition the course
  implements (dilation merge and match, 0 Dice / 374 mm for misses and false
  positives, 50 mm^3 threshold for gliomas, HD95 on area-weighted surface
  elements). The course computes that HD95 with its own code
  (``utils.evaluation.metrics``, only DeepMind's surface-area table from the PyPI
  package), so this is an independent check of it;
* ``brats-evaluation`` (PyPI, built on ``panoptica``), the BraTS 2024+
  package: its whole-scan Dice / HD95 (``global_bin_*``) against the course's
  legacy Dice and the ``"pooled"`` HD95, and its lesion counts.

Reproduce (about two minutes)::

    python3 -m venv /tmp/brats-eval
    /tmp/brats-eval/bin/pip install brats-evaluation==0.0.10 connected-components-3d surface-distance
    git clone https://github.com/rachitsaluja/BraTS-2023-Metrics /tmp/BraTS-2023-Metrics
    BRATS_COURSE_NO_KERAS=1 PYTHONPATH=. /tmp/brats-eval/bin/python benchmarks/compare_official_metrics.py \\
        --brats2023-metrics /tmp/BraTS-2023-Metrics

It builds 25 synthetic cases (seeded, 96x96x64) that exercise each rule and
each surface-distance pitfall - a missed satellite, false-positive blobs near
and far, two lesions merged by dilation, lesions under and just over the
50 mm^3 threshold, a lesion split in two by the prediction, a predicted blob
bridging two lesions, empty maps, TC without ET, 1x1x2 and 1x1x3 mm voxels,
lesions cut by the volume's edge - writes them as NIfTI in the BraTS 2023
label values, scores them with all three, and prints the differences: per
case, the largest lesion-wise HD95 difference (per truth lesion and for the
case score) against the organisers' script. tests/test_lesion_metrics.py pins
the course's values to the script's on these cases.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import io
import sys
import tempfile
import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

from utils.data.labels import BRATS2023_TO_MSD, REGIONS
from utils.evaluation.metrics import LESION_MISS_HD95, dice_score, hd95, lesion_wise_region

SHAPE = (96, 96, 64)
MSD_TO_BRATS2023 = {msd: raw for raw, msd in BRATS2023_TO_MSD.items()}
ISO, ANISO_2, ANISO_3 = (1.0, 1.0, 1.0), (1.0, 1.0, 2.0), (1.0, 1.0, 3.0)


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


def box(label: np.ndarray, lo, hi, value: int = 1) -> np.ndarray:
    """A copy of ``label`` with the box ``[lo, hi)`` set to ``value``."""
    out = label.copy()
    out[tuple(slice(a, b) for a, b in zip(lo, hi))] = value
    return out


def shift(label: np.ndarray, steps, axes) -> np.ndarray:
    """``label`` moved by ``steps`` voxels along ``axes``; what leaves the volume is lost (no wrap-around)."""
    out = label
    for step, axis in zip(np.atleast_1d(steps), np.atleast_1d(axes)):
        out = np.roll(out, int(step), axis=int(axis))
        edge = [slice(None)] * out.ndim
        edge[int(axis)] = slice(0, step) if step > 0 else slice(out.shape[int(axis)] + step, None)
        out[tuple(edge)] = 0
    return out


def overlay(*labels: np.ndarray) -> np.ndarray:
    """Label maps stacked, later ones on top."""
    out = np.zeros(SHAPE, np.uint8)
    for label in labels:
        out = np.where(label > 0, label, out)
    return out.astype(np.uint8)


def cases() -> list[tuple[str, np.ndarray, np.ndarray, tuple[float, float, float]]]:
    """``(name, truth, prediction, spacing)`` in MSD values: one case per rule of the lesion-wise
    scores and per surface-distance pitfall (thresholds, split and merged blobs, far false
    positives, regions absent from one map, anisotropic voxels, the volume's edge)."""
    rng = np.random.default_rng(0)
    main = tumour((40, 40, 32), 14)
    shifted = shift(main, 1, 0)
    out = [("perfect", main, main.copy(), ISO)]
    out.append(("shifted 2 voxels", main, shift(main, 2, 0), ISO))
    truth = main.copy()
    truth[ball((75, 75, 32), [4] * 3)] = 1  # edema satellite, 257 mm^3, far from the main lesion
    out.append(("missed satellite", truth, main.copy(), ISO))
    pred = main.copy()
    pred[ball((80, 15, 20), [3] * 3)] = 3  # a false enhancing blob
    out.append(("false-positive blob", main, pred, ISO))
    far = box(shifted, (88, 88, 56), (93, 93, 61), 1)  # edema blob ~70 mm from the tumour
    out.append(("far false positive", main, far, ISO))
    truth = main.copy()
    truth[ball((40, 59, 32), [3] * 3)] = 1  # satellite 3 voxels from the main lesion: merged by dilation
    out.append(("close satellite (merged)", truth, main.copy(), ISO))
    truth = main.copy()
    truth[ball((80, 80, 50), [2] * 3)] = 1  # 33 mm^3: under the 50 mm^3 threshold
    out.append(("tiny lesion missed", truth, main.copy(), ISO))
    # 48 mm^3 (4x4x3, not counted) and 54 mm^3 (3x3x6, counted), far from the tumour and each other
    small = box(box(main, (80, 10, 10), (84, 14, 13)), (10, 80, 50), (13, 83, 56))
    found = box(box(shifted, (81, 10, 10), (85, 14, 13)), (10, 81, 50), (13, 84, 56))
    out.append(("48 / 54 mm^3 lesions, found shifted", small, found, ISO))
    out.append(("48 / 54 mm^3 lesions, missed", small, shifted.copy(), ISO))
    split = main.copy()
    split[:, :, 31:33] = 0  # a two-slice gap: two predicted blobs on one true lesion
    out.append(("lesion split in two by the prediction", main, split, ISO))
    pair = overlay(tumour((22, 40, 32), 7), tumour((62, 40, 32), 7))  # 26 voxels apart: two lesions
    bridge = box(shift(pair, 1, 1), (22, 38, 30), (63, 43, 35), 1)  # one blob over both
    out.append(("blob bridging two lesions", pair, overlay(bridge, shift(pair, 1, 1)), ISO))
    out.append(("empty prediction", main, np.zeros(SHAPE, np.uint8), ISO))
    truth = main.copy()
    truth[truth == 3] = 2  # no enhancing tumour in the truth
    out.append(("ET absent, predicted", truth, main.copy(), ISO))
    core_only = np.where(main == 3, 2, main).astype(np.uint8)  # TC without ET, in both maps
    out.append(("TC without ET", core_only, shift(core_only, 1, 2), ISO))
    eroded = np.where(ball((40, 40, 32), [12, 12, 12]), main, 0).astype(np.uint8)
    out.append(("1x1x2 mm, eroded", main, eroded, ANISO_2))
    out.append(("1x1x2 mm, shifted one slice", main, shift(main, 1, 2), ANISO_2))
    flat = tumour((40, 40, 20), 14)  # 14 slices of 3 mm cut the ball into an ellipsoid in voxels
    out.append(("1x1x3 mm, shifted one slice", flat, shift(flat, 1, 2), ANISO_3))
    flat_eroded = np.where(ball((40, 40, 20), [12, 12, 12]), flat, 0).astype(np.uint8)
    out.append(("1x1x3 mm, eroded + false positive", flat, box(flat_eroded, (80, 80, 50), (85, 85, 52), 3), ANISO_3))
    edge = overlay(tumour((4, 40, 32), 12), tumour((70, 90, 60), 9))  # cut by the x = 0 and z = 63 faces
    out.append(("lesions touching the volume edge", edge, shift(edge, 1, 1), ISO))
    out.append(("lesions touching the edge, 1x1x3 mm", edge, shift(edge, -1, 0), ANISO_3))
    for seed, spacing in enumerate((ISO, ISO, ISO, ANISO_2, ANISO_3)):  # random multi-lesion cases, noisy
        truth = np.zeros(SHAPE, np.uint8)
        for _ in range(3):
            c = rng.integers([15, 15, 12], [81, 81, 52])
            truth = overlay(truth, tumour(tuple(c), float(rng.uniform(4, 10))))
        pred = shift(truth, tuple(rng.integers(-2, 3, size=3)), (0, 1, 2))
        noise = rng.random(SHAPE) < 0.00005  # a few stray voxels: false positives
        pred[noise] = rng.integers(1, 4, size=int(noise.sum()))
        out.append((f"random {seed}, {'x'.join(f'{s:g}' for s in spacing)} mm", truth, pred.astype(np.uint8), spacing))
    return out


def save(label_msd: np.ndarray, spacing, path: Path) -> None:
    raw = np.zeros_like(label_msd)
    for msd, value in MSD_TO_BRATS2023.items():
        raw[label_msd == msd] = value
    nib.save(nib.Nifti1Image(raw, np.diag([*spacing, 1.0])), path)


def organisers(checkout: Path):
    """The organisers' BraTS 2023 ``metrics`` module, with its own bundled ``surface_distance``.

    Shims for what numpy 2 / pandas 2 removed. Their ``surface_distance`` is
    imported from the checkout (not the PyPI package the course uses), and
    every call of ``get_LesionWiseScores`` records its per-lesion pairs in
    ``module.lesion_pairs[region]``.
    """
    if not hasattr(np, "Inf"):
        np.Inf = np.inf
    if not hasattr(pd.DataFrame, "append"):
        pd.DataFrame.append = lambda self, other: pd.concat([self, other])
    course_copy = {k: sys.modules.pop(k) for k in list(sys.modules) if k.split(".")[0] == "surface_distance"}
    sys.path.insert(0, str(checkout))
    try:
        module = importlib.import_module("metrics")
        for name in [k for k in sys.modules if k.split(".")[0] == "surface_distance"]:
            bundled = sys.modules.pop(name)
            if not Path(bundled.__file__).resolve().is_relative_to(checkout.resolve()):
                raise RuntimeError(f"expected the checkout's surface_distance; imported {bundled.__file__}")
    finally:
        sys.path.remove(str(checkout))
        sys.modules.update(course_copy)
    scores = module.get_LesionWiseScores
    module.lesion_pairs = {}

    def lesion_scores_with_tuples(*args, **kwargs):
        # pandas 2 cannot DataFrame.replace() over a column of numpy arrays: hand it tuples
        out = list(scores(*args, **kwargs))
        module.lesion_pairs[kwargs["label_value"]] = out[4]
        out[4] = [(tuple(pair[0].tolist()), *pair[1:]) for pair in out[4]]
        return tuple(out)

    module.get_LesionWiseScores = lesion_scores_with_tuples
    return module


def lesion_hd95_difference(ours, pairs) -> float:
    """Largest |HD95| difference over the truth lesions, matched by (volume, Dice); inf if they do not pair up."""
    mine = sorted((round(v, 6), round(d, 9), h) for v, d, h, _ in ours.lesions)
    theirs = sorted(
        (round(float(v), 6), round(float(d), 9), min(float(h), LESION_MISS_HD95)) for _, _, v, d, h in pairs
    )
    if [m[:2] for m in mine] != [t[:2] for t in theirs]:
        return float("inf")
    return max((abs(m[2] - t[2]) for m, t in zip(mine, theirs)), default=0.0)


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

    quiet = contextlib.redirect_stdout(io.StringIO())  # panoptica prints a banner and a label-group notice
    with quiet:
        evaluator = Panoptica_Evaluator.load_from_config(str(config_path("gli")))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, truth, pred, spacing in cases():
            gt_file, pred_file = Path(tmp) / "gt.nii.gz", Path(tmp) / "pred.nii.gz"
            save(truth, spacing, gt_file)
            save(pred, spacing, pred_file)
            ref = official.get_LesionWiseResults(str(pred_file), str(gt_file), "BraTS-GLI").set_index("Labels")
            with quiet:
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
                        "spacing": "x".join(f"{s:g}" for s in spacing),
                        "both non-empty": bool(t.any() and p.any()),
                        "LW Dice": ours.dice,
                        "LW Dice 2023": float(theirs["LesionWise_Score_Dice"]),
                        "LW HD95": ours.hd95,
                        "LW HD95 2023": float(theirs["LesionWise_Score_HD95"]),
                        "LW HD95 voxels": lesion_wise_region(t, p, spacing, 3, 50.0, "voxels").hd95,
                        "lesion HD95 diff": lesion_hd95_difference(ours, official.lesion_pairs[region]),
                        "TP/FN/FP": f"{ours.n_tp}/{ours.n_fn}/{ours.n_fp}",
                        "TP/FN/FP 2023": f"{int(theirs['Num_TP'])}/{int(theirs['Num_FN'])}/{int(theirs['Num_FP'])}",
                        "Dice": dice_score(t, p),
                        "Dice pano": g.get("global_bin_dsc"),
                        "HD95": hd95(t, p, spacing),
                        "HD95 2023": float(theirs["Legacy_HD95"]),
                        "HD95 voxels": hd95(t, p, spacing, "voxels"),
                        "HD95 pooled": hd95(t, p, spacing, "pooled"),
                        "HD95 pano": g.get("global_bin_hd95"),
                        "TP/FN/FP pano": f"{g.get('tp')}/{g.get('fn')}/{g.get('fp')}",
                    }
                )
    table = pd.DataFrame(rows).set_index(["case", "region"])
    diff = lambda a, b, rows=table: (rows[a].astype(float) - rows[b].astype(float)).abs()  # noqa: E731
    table["LW HD95 diff"] = diff("LW HD95", "LW HD95 2023")
    # one mask empty: the course gives the volume's diagonal, the 2023 script 374 mm (module docstring)
    table["HD95 diff"] = diff("HD95", "HD95 2023").where(table["both non-empty"])
    with pd.option_context("display.width", 250, "display.max_columns", 30, "display.max_rows", 200):
        columns = ["LW Dice", "LW Dice 2023", "LW HD95", "LW HD95 2023", "LW HD95 voxels", "TP/FN/FP", "TP/FN/FP 2023"]
        columns += ["HD95", "HD95 2023", "HD95 voxels", "HD95 pooled", "HD95 pano"]
        print(table[columns].round(3).to_string())
    per_case = table.groupby(level="case", sort=False).agg(
        spacing=("spacing", "first"),
        lesion=("lesion HD95 diff", "max"),
        case_score=("LW HD95 diff", "max"),
        legacy=("HD95 diff", "max"),
        voxels=("LW HD95 voxels", lambda v: (v - table.loc[v.index, "LW HD95 2023"]).abs().max()),
    )
    print("\nmax |HD95 difference| (mm) against the organisers' 2023 script, over WT / TC / ET, per case:")
    print("  lesion: each truth lesion's HD95; case score: lesion-wise HD95 of the case; legacy: whole-scan HD95")
    print("  (both masks non-empty); voxels: the course's former voxel-centre lesion-wise HD95, for contrast")
    with pd.option_context("display.width", 250, "display.float_format", "{:.2e}".format):
        print(per_case.rename(columns={"case_score": "case score"}).to_string())
    worst = per_case[["lesion", "case_score", "legacy"]].max()
    print(f"\nmax |difference| over {len(table)} case-regions:")
    print(
        f"  lesion-wise HD95 vs organisers' 2023 script: per lesion {worst['lesion']:.2e} mm, "
        f"per case {worst['case_score']:.2e} mm (below 1e-6 mm on every case: {bool((per_case[['lesion', 'case_score']] < 1e-6).all().all())})"
    )
    print(f"  legacy HD95 vs the 2023 script's Legacy_HD95, both masks non-empty: {worst['legacy']:.2e} mm")
    print(f"  lesion-wise Dice vs organisers' 2023 script: {diff('LW Dice', 'LW Dice 2023').max():.2e}")
    print(
        f"  lesion counts TP/FN/FP equal to the 2023 script's: {(table['TP/FN/FP'] == table['TP/FN/FP 2023']).sum()}"
        f"/{len(table)}"
    )
    print(f"  legacy Dice vs brats-evaluation global_bin_dsc: {diff('Dice', 'Dice pano').max():.2e}")
    non_empty = table[table["both non-empty"] & np.isfinite(table["HD95 pano"].astype(float))]
    iso = non_empty[non_empty["spacing"] == "1x1x1"]
    print(
        f"  HD95 'pooled' vs brats-evaluation global_bin_hd95, 1 mm voxels: {diff('HD95 pooled', 'HD95 pano', iso).max():.2e} mm"
        f"; anisotropic voxels: {diff('HD95 pooled', 'HD95 pano', non_empty).max():.3f} mm (brats-evaluation scores voxels, not mm)"
    )
    print(
        f"  the course's former 'voxels' HD95 vs the 2023 script, both masks non-empty: lesion-wise "
        f"{diff('LW HD95 voxels', 'LW HD95 2023', non_empty).max():.3f} mm, legacy {diff('HD95 voxels', 'HD95 2023', non_empty).max():.3f} mm"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
