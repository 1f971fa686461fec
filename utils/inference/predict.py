"""Command line: segment a case (or a folder of cases) with a trained model.

    python -m utils.inference.predict --model runs/cpu/best.keras --input CASE --output SEG.nii.gz
    python -m utils.inference.predict --model M --input-dir DATASET --output-dir OUT
    python -m utils.inference.predict --model runs/a/best.keras --model runs/b/best.keras --input CASE --output SEG.nii.gz

Each model's run folder says what its outputs are (``plan.json``: tumour
classes, or the nested regions WT / TC / ET, whose label map is rebuilt
hierarchically) and how to post-process them (``postprocessing.json``, chosen
on validation cases by :func:`utils.inference.postprocessing.choose_postprocessing`;
a run without one keeps only the largest tumour, unless ``--no-largest-component``).
``--model`` given several times ensembles the runs: the mean of their
probabilities (they must have the same output kind), post-processed as the
first run folder says.

``CASE`` is an MSD 4-D image file (``.nii.gz`` with the four channels) or a
BraTS case folder (2020/2021: ``*_flair``, ``*_t1``, ``*_t1ce``, ``*_t2``;
2023+: ``*-t2f``, ``*-t1n``, ``*-t1c``, ``*-t2w``). A dataset is a folder in
any layout of ``utils.data.datasets.LAYOUTS``: MSD (``dataset.json``; all training and
test images) or a folder of BraTS 2020/2021 or 2023+ cases (the Kaggle BraTS
2020 copy included). The segmentation is uint8 NIfTI on the input's grid (its affine
and header), so 3D Slicer or ITK-SNAP overlays it on the input. In folder
mode the cases with a label are scored and the scores written to
``OUT/metrics.csv`` (one row per case, then mean and median): the legacy region Dice / IoU /
HD95 and the lesion-wise Dice / HD95 (``LW ...``, BraTS 2023+ ranking).

Inputs are read-only: the output may not be any file of the case (compared by
inode, so links count) nor lie in a dataset folder (``imagesTr``, ``labelsTr``,
``imagesTs``, a BraTS case folder); ``--overwrite`` replaces only files that
``utils.inference.predict`` wrote (listed in the folder's ``.course-files.json``), and
scoring never reads a label this run wrote. Refusals are one line, exit 2.
"""

from __future__ import annotations

# First, before Keras: a spawned data worker (utils.parallel) re-imports the module that `python -m` ran,
# so this keeps TensorFlow's start-up notices out of each worker too, as `import utils` does in this process.
from ..backend import quiet_start

quiet_start()

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

from ..data.datasets import (
    MSD_FOLDERS,
    DatasetError,
    detect_layout,
    find_msd_file,
    list_cases,
    load_case,
    load_input,
    load_label,
)
from ..evaluation.metrics import evaluate_cases
from ..model.unet import ModelLoadError, dtype_policy_of, load_model, saved_dtype_policy
from ..preprocessing.plan import Plan, plan_for_model, read_plan
from ..safety import OwnedFiles, UnsafeWriteError, atomic_path, check_target, check_writable, folder_lock, one_line
from .postprocessing import (
    PostProcessing,
    PostProcessingError,
    check_validation_cases,
    choose_postprocessing,
    read_postprocessing,
    write_postprocessing,
)
from .sliding_window import ensemble_kind, predict_case, probabilities_path, save_segmentation


def _dataset_inputs(root: Path):
    """``([(input path, label path or None)], read-only folders)`` of every case in a dataset folder."""
    if detect_layout(root) != "msd":  # a folder of BraTS case folders (2020/2021 or 2023+)
        cases = [root / c for c in list_cases(root)]
        return [(c, None) for c in cases], cases
    items = [(find_msd_file(root / "imagesTr", c), find_msd_file(root / "labelsTr", c)) for c in list_cases(root)]
    items += [(find_msd_file(root / "imagesTs", c), None) for c in list_cases(root, "test")]
    return items, [root / name for name in MSD_FOLDERS]


def segment(
    model,
    source: Path,
    output: Path,
    overlap: float,
    mirror: bool,
    largest_component: bool,
    probabilities: bool,
    overwrite: bool,
    inputs: list[Path] = (),
    input_dirs: list[Path] = (),
    plan: Plan | list[Plan] | None = None,
    postprocessing: PostProcessing | None = None,
):
    """Segment one input; return ``(case_id, label or None, prediction, spacing)``.

    ``plan`` is the model's run plan (its preprocessing, crop, window and output kind); None: the course
    defaults. ``model`` and ``plan`` may be lists (an ensemble, :func:`predict_case`). ``postprocessing``
    is applied to the label map (its sizes scaled by the case's voxel size).

    ``output`` (and its probability map) may not be an input file of the case
    (through links too), lie in an input folder, or replace a file that
    utils.predict did not write (the folder's ownership marker proves which).
    """
    if output.is_dir():
        raise UnsafeWriteError(f"the output {output} is a folder; give a .nii.gz file name")
    case_id, image, reference, label, spacing, files, dirs = load_input(source)
    targets = [output] + ([probabilities_path(output)] if probabilities else [])
    owned = OwnedFiles(output.parent, "utils.predict")
    for target in targets:
        check_target(target, "the output", inputs=[*files, *inputs], input_dirs=[*dirs, *input_dirs])
        owned.check_free(target, overwrite)
    if not np.any(image):
        raise DatasetError(f"the image is all zero (no brain to segment): {reference}")
    voxels = int(np.prod(image.shape[:3]))  # an uncompressed .nii has a known size: uint8 labels (+ float32 maps)
    need = voxels * (1 + (12 if probabilities else 0)) if output.name.endswith(".nii") else 0
    check_writable(output.parent, "the segmentation", need_bytes=need)
    with folder_lock(output.parent, "utils.predict"):  # one writer: the names are re-checked when claimed
        pred, probs = predict_case(
            model,
            image,
            overlap=overlap,
            mirror=mirror,
            largest_component=largest_component,
            progress=False,
            plan=plan,
            postprocessing=postprocessing,
            spacing=spacing,
        )
        with owned.writing(*targets, overwrite=overwrite):  # the names are ours before a byte is written
            save_segmentation(pred, reference, output, overwrite=True, probabilities=probs if probabilities else None)
    return case_id, label, pred, spacing


def choose_for_run(run_folder: Path | str, data_dir: Path | str, case_ids=None, mirror: bool = False, progress=True):
    """Predict validation cases with ``run_folder/best.keras``, choose its post-processing, record it.

    Args:
        run_folder: a training run folder (its ``plan.json`` says the output kind and the split).
        data_dir: a labelled dataset that is NOT the run's held-out or training data
            (:func:`utils.inference.postprocessing.check_validation_cases`), e.g. a phantom built with
            another seed.
        case_ids: its cases to use (default: every labelled case).
        mirror: predict with test-time mirroring (as the predictions it will post-process).

    Returns:
        ``(choice, path of postprocessing.json)``.
    """
    run_folder = Path(run_folder)
    plan = read_plan(run_folder)
    case_ids = list(case_ids or list_cases(data_dir))
    check_validation_cases(plan, data_dir, case_ids)
    model = load_model(run_folder / "best.keras", compile=False)
    cases = []
    for case_id in case_ids:
        case = load_case(data_dir, case_id)
        if case.label is None:
            raise PostProcessingError(f"case {case_id} of {data_dir} has no label to choose post-processing on")
        raw, _ = predict_case(model, case.image, mirror=mirror, progress=False, plan=plan)
        cases.append((case.label, raw, case.spacing))
        if progress:
            print(f"validation case {case_id}: predicted", flush=True)
    choice, trials = choose_postprocessing(cases)
    chosen_on = {"dataset": str(Path(data_dir).resolve()), "cases": case_ids, "mirror": mirror, "model": "best.keras"}
    return choice, write_postprocessing(run_folder, choice, chosen_on, trials)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m utils.inference.predict", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--model",
        required=True,
        type=Path,
        action="append",
        help="a .keras model trained by the course; repeat it to ensemble several runs (mean of probabilities)",
    )
    one = parser.add_argument_group("one case")
    one.add_argument("--input", type=Path, help="MSD 4-D .nii.gz or a BraTS (2020/2021 or 2023+) case folder")
    one.add_argument("--output", type=Path, help="segmentation to write (.nii.gz)")
    many = parser.add_argument_group("a folder of cases")
    many.add_argument("--input-dir", type=Path, help="a dataset: MSD, or a folder of BraTS 2020/2021 or 2023+ cases")
    many.add_argument("--output-dir", type=Path, help="where <case>.nii.gz and metrics.csv go")
    parser.add_argument(
        "--overlap",
        type=float,
        default=0.5,
        help="fraction of a window shared with its neighbour, in [0, 1) (default 0.5)",
    )
    parser.add_argument("--mirror", action="store_true", help="test-time mirroring (8x slower)")
    parser.add_argument(
        "--no-largest-component", action="store_true", help="keep every predicted blob, not only the largest tumour"
    )
    parser.add_argument(
        "--no-postprocessing",
        action="store_true",
        help="ignore the run folder's postprocessing.json (the raw label map, or only the largest tumour)",
    )
    parser.add_argument("--probabilities", action="store_true", help="also write the probability maps")
    parser.add_argument(
        "--choose-postprocessing",
        type=Path,
        metavar="DATASET",
        help="instead of segmenting: choose the run's post-processing on the labelled cases of DATASET (never the "
        "run's held-out or training cases) and record it in the run folder (postprocessing.json)",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace existing outputs (never the input)")
    args = parser.parse_args(argv)
    if args.choose_postprocessing:
        if len(args.model) > 1:
            parser.error("--choose-postprocessing takes one --model")
        try:
            choice, path = choose_for_run(args.model[0].parent, args.choose_postprocessing, mirror=args.mirror)
        except (DatasetError, ValueError, ModelLoadError, OSError) as err:
            print(f"error: {one_line(err)}", file=sys.stderr)
            return 2
        print(f"chosen: {choice.describe()}; recorded in {path}")
        return 0
    if bool(args.input) == bool(args.input_dir):
        parser.error("give either --input/--output or --input-dir/--output-dir")
    if args.input and not args.output:
        parser.error("--input needs --output")
    if args.input_dir and not args.output_dir:
        parser.error("--input-dir needs --output-dir")

    options = dict(
        overlap=args.overlap,
        mirror=args.mirror,
        largest_component=not args.no_largest_component,
        probabilities=args.probabilities,
        overwrite=args.overwrite,
    )
    start = time.perf_counter()
    try:
        return _run(args, options, start)
    except (DatasetError, ValueError, FileExistsError, ModelLoadError, OSError) as err:
        print(f"error: {one_line(err)}", file=sys.stderr)
        return 2


def _run(args: argparse.Namespace, options: dict, start: float) -> int:
    """The command; the output folder is locked (one writer) once the targets are checked."""
    models, plans = [], []
    for path in args.model:
        model = load_model(path, compile=False)
        saved = saved_dtype_policy(path)
        if saved != dtype_policy_of(model):
            print(f"{path} was trained with mixed precision ({saved}); no GPU here, so it runs in float32")
        models.append(model)
        plans.append(plan_for_model(path))  # the run's plan.json; a model without one: defaults, noted
    kind = ensemble_kind(plans)  # an ensemble averages probabilities: one output kind
    post = None if args.no_postprocessing else read_postprocessing(args.model[0].parent)
    if post is not None:  # the run's choice replaces the largest-component default
        options["largest_component"] = False
        print(f"post-processing of {args.model[0].parent}: {post.describe()}")
    if len(models) > 1:
        print(f"ensemble of {len(models)} runs ({kind}): the mean of their probabilities")
    options.update(plan=plans if len(models) > 1 else plans[0], postprocessing=post)
    model = models if len(models) > 1 else models[0]
    if args.input:
        case_id, _, pred, _ = segment(model, args.input, args.output, **options)
        counts = np.bincount(pred.ravel(), minlength=4)[1:]
        print(
            f"{case_id}: wrote {args.output} (voxels edema {counts[0]}, non-enhancing {counts[1]}, "
            f"enhancing {counts[2]}) in {time.perf_counter() - start:.1f} s"
        )
        return 0

    items, read_only = _dataset_inputs(args.input_dir)
    inputs = [p for item in items for p in item if p is not None and not p.is_dir()]
    if args.output_dir.exists() and not args.output_dir.is_dir():
        raise UnsafeWriteError(f"--output-dir {args.output_dir} is a file, not a folder")
    if args.output_dir.resolve() == args.input_dir.resolve():
        raise UnsafeWriteError(
            f"refusing to write --output-dir {args.output_dir}: it is the input dataset folder, which is read-only"
        )
    check_target(args.output_dir, "--output-dir", input_dirs=read_only)
    check_writable(args.output_dir, "the segmentations")
    with folder_lock(args.output_dir, "utils.predict"):
        csv = args.output_dir / "metrics.csv"
        check_target(csv, "the metrics", inputs=inputs)
        OwnedFiles(args.output_dir, "utils.predict").check_free(csv, args.overwrite)
        scored, written = [], []
        for source, label_path in items:
            name = source.name if source.is_dir() else source.name.split(".nii")[0]
            out = args.output_dir / f"{name}.nii.gz"
            case_id, label, pred, spacing = segment(model, source, out, inputs=inputs, input_dirs=read_only, **options)
            written.append(out)
            if label is None and label_path is not None:
                _refuse_own_output(label_path, written)
                label, _ = load_label(args.input_dir, case_id)
            if label is not None:
                if label.shape != pred.shape:
                    raise DatasetError(
                        f"label grid {label.shape} does not match the image grid {pred.shape}: {case_id}"
                    )
                scored.append((case_id, label, pred, spacing))
            print(f"{case_id}: {out}")
        if scored:
            table = evaluate_cases(scored)
            with OwnedFiles(args.output_dir, "utils.predict").writing(csv), atomic_path(csv) as tmp:
                table.to_csv(tmp)  # the marker is re-read: segment() recorded the cases
            print(table.loc[["mean", "median"]].T.to_string())
            print(
                f"metrics of {len(scored)} labelled cases: {csv} (every labelled case of the folder: "
                "this command does not know which of them a model trained on)"
            )
    print(f"done in {time.perf_counter() - start:.1f} s")
    return 0


def _refuse_own_output(label_path: Path, written: list[Path]) -> None:
    """Scoring never reads a label that this run wrote (compared by inode)."""
    for out in written:
        if out.exists() and label_path.exists() and os.path.samefile(out, label_path):
            raise UnsafeWriteError(
                f"refusing to score against {label_path}: it is a segmentation this run "
                f"wrote ({out}), not the ground truth"
            )


if __name__ == "__main__":
    raise SystemExit(main())
