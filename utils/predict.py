"""Command line: segment a case (or a folder of cases) with a trained model.

    python -m utils.predict --model runs/cpu/best.keras --input CASE --output SEG.nii.gz
    python -m utils.predict --model M --input-dir DATASET --output-dir OUT

``CASE`` is an MSD 4-D image file (``.nii.gz`` with the four channels) or a
BraTS case folder (2020/2021: ``*_flair``, ``*_t1``, ``*_t1ce``, ``*_t2``;
2023+: ``*-t2f``, ``*-t1n``, ``*-t1c``, ``*-t2w``). A dataset is a folder in
any layout of ``utils.data.LAYOUTS``: MSD (``dataset.json``; all training and
test images) or a folder of BraTS 2020/2021 or 2023+ cases (the Kaggle BraTS
2020 copy included). The segmentation is uint8 NIfTI on the input's grid (its affine
and header), so 3D Slicer or ITK-SNAP overlays it on the input. In folder
mode the cases with a label are scored and the scores written to
``OUT/metrics.csv`` (one row per case, then mean and median): the legacy region Dice / IoU /
HD95 and the lesion-wise Dice / HD95 (``LW ...``, BraTS 2023+ ranking).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np


def load_input(path: Path):
    """``(case_id, image, reference NIfTI path, label or None, spacing)`` of an MSD file or BraTS folder."""
    from .data import DatasetError, MODALITIES, _spacing, load_brats_case, load_nifti, strip_nifti_suffix

    path = Path(path)
    if path.is_dir():
        case = load_brats_case(path)
        return case.case_id, case.image, case.image_paths[0], case.label, case.spacing
    img = load_nifti(path, "image")
    if img.ndim != 4 or img.shape[3] != len(MODALITIES):
        raise DatasetError(f"expected a 4-D image (x, y, z, {len(MODALITIES)}) with channels {MODALITIES}; "
                           f"found shape {img.shape} in {path}")
    image = np.asarray(img.get_fdata(dtype=np.float32))
    if not np.all(np.isfinite(image)):
        raise DatasetError(f"expected finite intensities; found NaN/Inf in {path}")
    return strip_nifti_suffix(path.name), image, path, None, _spacing(img)


def _dataset_inputs(root: Path):
    """``[(input path, label path or None)]`` of every case in a dataset folder."""
    from .data import _find_msd_file, detect_layout, list_cases

    if detect_layout(root) != "msd":  # a folder of BraTS case folders (2020/2021 or 2023+)
        return [(root / c, None) for c in list_cases(root)]
    items = [(_find_msd_file(root / "imagesTr", c), _find_msd_file(root / "labelsTr", c)) for c in list_cases(root)]
    items += [(_find_msd_file(root / "imagesTs", c), None) for c in list_cases(root, "test")]
    return items


def segment(model, source: Path, output: Path, overlap: float, mirror: bool, largest_component: bool,
            probabilities: bool, overwrite: bool):
    """Segment one input; return ``(case_id, label or None, prediction, spacing)``."""
    from .inference import predict_case, save_segmentation

    case_id, image, reference, label, spacing = load_input(source)
    if Path(reference).resolve() == output.resolve():
        raise ValueError(f"the output path is the input file {reference}; refusing to overwrite the input")
    if output.exists() and not overwrite:
        raise FileExistsError(f"{output} exists; pass --overwrite to replace it")
    pred, probs = predict_case(model, image, overlap=overlap, mirror=mirror, largest_component=largest_component,
                               progress=False)
    save_segmentation(pred, reference, output, overwrite=overwrite, probabilities=probs if probabilities else None)
    return case_id, label, pred, spacing


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m utils.predict", description=__doc__.split("\n")[0])
    parser.add_argument("--model", required=True, type=Path, help="a .keras model trained by the course")
    one = parser.add_argument_group("one case")
    one.add_argument("--input", type=Path, help="MSD 4-D .nii.gz or a BraTS (2020/2021 or 2023+) case folder")
    one.add_argument("--output", type=Path, help="segmentation to write (.nii.gz)")
    many = parser.add_argument_group("a folder of cases")
    many.add_argument("--input-dir", type=Path, help="a dataset: MSD, or a folder of BraTS 2020/2021 or 2023+ cases")
    many.add_argument("--output-dir", type=Path, help="where <case>.nii.gz and metrics.csv go")
    parser.add_argument("--overlap", type=float, default=0.5)
    parser.add_argument("--mirror", action="store_true", help="test-time mirroring (8x slower)")
    parser.add_argument("--no-largest-component", action="store_true",
                        help="keep every predicted blob, not only the largest tumour")
    parser.add_argument("--probabilities", action="store_true", help="also write the probability maps")
    parser.add_argument("--overwrite", action="store_true", help="replace existing outputs (never the input)")
    args = parser.parse_args(argv)
    if bool(args.input) == bool(args.input_dir):
        parser.error("give either --input/--output or --input-dir/--output-dir")
    if args.input and not args.output:
        parser.error("--input needs --output")
    if args.input_dir and not args.output_dir:
        parser.error("--input-dir needs --output-dir")

    from .data import DatasetError
    from .model import load_model

    if not args.model.is_file():
        print(f"error: model not found: {args.model}", file=sys.stderr)
        return 2
    model = load_model(args.model, compile=False)
    options = dict(overlap=args.overlap, mirror=args.mirror, largest_component=not args.no_largest_component,
                   probabilities=args.probabilities, overwrite=args.overwrite)
    start = time.perf_counter()
    try:
        if args.input:
            case_id, _, pred, _ = segment(model, args.input, args.output, **options)
            counts = np.bincount(pred.ravel(), minlength=4)[1:]
            print(f"{case_id}: wrote {args.output} (voxels edema {counts[0]}, non-enhancing {counts[1]}, "
                  f"enhancing {counts[2]}) in {time.perf_counter() - start:.1f} s")
            return 0
        from .data import load_label
        from .metrics import evaluate_cases

        args.output_dir.mkdir(parents=True, exist_ok=True)
        scored = []
        for source, label_path in _dataset_inputs(args.input_dir):
            name = source.name if source.is_dir() else source.name.split(".nii")[0]
            out = args.output_dir / f"{name}.nii.gz"
            case_id, label, pred, spacing = segment(model, source, out, **options)
            if label is None and label_path is not None:
                label, _ = load_label(args.input_dir, case_id)
            if label is not None:
                if label.shape != pred.shape:
                    raise DatasetError(f"label grid {label.shape} does not match the image grid {pred.shape}: {case_id}")
                scored.append((case_id, label, pred, spacing))
            print(f"{case_id}: {out}")
        if scored:
            table = evaluate_cases(scored)
            csv = args.output_dir / "metrics.csv"
            table.to_csv(csv)
            print(table.loc[["mean", "median"]].T.to_string())
            print(f"metrics of {len(scored)} labelled cases: {csv}")
        print(f"done in {time.perf_counter() - start:.1f} s")
        return 0
    except (DatasetError, ValueError, FileExistsError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
