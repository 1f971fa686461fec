"""A whole phantom dataset in the MSD Task01 layout: case ids and seeds, the ``phantom.json`` marker, ownership,
:func:`make_phantom_dataset`, :func:`ensure_phantom`, :func:`phantom_label_statistics` and the command line.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np

from ...config import BRATS_SHAPE, TINY_SHAPE
from ...parallel import default_workers, map_in_processes
from ...safety import (
    OwnedFiles,
    UnsafeWriteError,
    adopt_files,
    check_target,
    check_writable,
    folder_lock,
    foreign_files,
    install_folder,
    one_line,
)
from ..labels import LABEL_NAMES, MODALITIES
from .scanner import SCANNERS, SHIFTED_RANGES, make_phantom_case
from .tumour import GENERATOR_VERSION

MARKER_FILE = "phantom.json"
TOOL = "utils.phantom"
SHIFTED_SEED = 26
"""Dataset seed of the shifted test set: its tumours are not the training phantom's (seed 0)."""


def _case_ids(n_train: int, n_test: int) -> tuple[list[str], list[str]]:
    ids = [f"PHANTOM_{i:03d}" for i in range(1, n_train + n_test + 1)]
    return ids[:n_train], ids[n_train:]


def _case_seed(seed: int, index: int) -> int:
    return int(np.random.SeedSequence([int(seed), int(index)]).generate_state(1)[0])


def case_seed(dataset_seed: int, index: int) -> int:
    """The seed of case ``index`` (0-based: ``PHANTOM_001`` is 0) of a phantom dataset made with ``dataset_seed``."""
    return _case_seed(dataset_seed, index)


def _write_case(task: tuple) -> dict:
    folder, case_id, case_seed, shape, labelled, scanner = task
    image, label, affine = make_phantom_case(case_seed, shape, scanner)
    folder = Path(folder)
    img = nib.Nifti1Image(image, affine)
    img.header.set_xyzt_units("mm", "sec")
    nib.save(img, folder / ("imagesTr" if labelled else "imagesTs") / f"{case_id}.nii.gz")
    counts = np.bincount(label.ravel(), minlength=4)
    if labelled:
        lab = nib.Nifti1Image(label, affine)
        lab.header.set_xyzt_units("mm", "sec")
        nib.save(lab, folder / "labelsTr" / f"{case_id}.nii.gz")
    voxel_ml = float(np.prod(np.diag(affine)[:3])) / 1000.0
    return {
        "case_id": case_id,
        "seed": case_seed,
        "labelled": labelled,
        "voxels": {LABEL_NAMES[k]: int(counts[k]) for k in (1, 2, 3)},
        "volume_ml": {LABEL_NAMES[k]: round(float(counts[k]) * voxel_ml, 2) for k in (1, 2, 3)},
    }


def _params(n_train: int, n_test: int, shape, seed: int, scanner: str = "training") -> dict:
    params = {
        "generator": "utils.phantom",
        "version": GENERATOR_VERSION,
        "shape": [int(s) for s in shape],
        "n_train": int(n_train),
        "n_test": int(n_test),
        "seed": int(seed),
    }
    if scanner != "training":  # a training phantom's marker stays as it was (no rebuild of existing phantoms)
        params["scanner"] = scanner
    return params


def read_marker(folder: Path | str) -> dict | None:
    """Return the phantom marker of ``folder``, or None if it is not a phantom.

    A marker that is not JSON, not an object, or not written by this module
    counts as no marker.
    """
    path = Path(folder) / MARKER_FILE
    if not path.is_file():
        return None
    try:
        marker = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        return None
    return marker if isinstance(marker, dict) and marker.get("generator") == "utils.phantom" else None


def _expected_files(marker: dict) -> list[str] | None:
    """The relative paths a phantom with this marker's parameters consists of (None if it cannot say)."""
    try:
        train, test = _case_ids(int(marker["n_train"]), int(marker["n_test"]))
    except (KeyError, TypeError, ValueError):
        return None
    return (
        ["dataset.json", MARKER_FILE]
        + [f"imagesTr/{c}.nii.gz" for c in train]
        + [f"labelsTr/{c}.nii.gz" for c in train]
        + [f"imagesTs/{c}.nii.gz" for c in test]
    )


def _is_complete(folder: Path, marker: dict) -> bool:
    files = _expected_files(marker)
    return files is not None and all((folder / f).is_file() for f in files)


def _ownership(folder: Path, marker: dict | None) -> OwnedFiles:
    """What the phantom generator can prove it wrote in ``folder``.

    The ownership marker lists each file with its sha256. A phantom written
    before markers existed is recognised by its ``phantom.json`` when that
    lists exactly the cases its parameters name; then only those file names
    are taken as ours.
    """
    owned = OwnedFiles(folder, TOOL)
    if owned.exists or marker is None:
        return owned
    files = _expected_files(marker)
    cases = marker.get("cases")
    if files is None or not isinstance(cases, list):
        return owned
    train, test = _case_ids(int(marker["n_train"]), int(marker["n_test"]))
    if [c.get("case_id") if isinstance(c, dict) else None for c in cases] != train + test:
        return owned
    return adopt_files(owned, files)


def make_phantom_dataset(
    out_dir: Path | str,
    n_train: int = 16,
    n_test: int = 2,
    shape: tuple[int, int, int] = BRATS_SHAPE,
    seed: int = 0,
    overwrite: bool = False,
    workers: int | None = None,
    progress: bool = True,
    scanner: str = "training",
) -> Path:
    """Write a phantom dataset in the MSD Task01 layout (idempotent).

    Args:
        out_dir: target folder; gets ``dataset.json``, ``imagesTr/``,
            ``labelsTr/``, ``imagesTs/`` and the marker ``phantom.json``.
        n_train: labelled cases. n_test: unlabelled cases.
        shape: grid ``(x, y, z)``; 240x240x155 is the BraTS grid at 1 mm.
        seed: dataset seed; each case derives its own seed from it.
        overwrite: write into a non-empty folder that is not a phantom; its
            other files are kept (a file at a phantom path that the generator
            did not write is still refused).
        workers: processes to use (default: up to the number of CPUs).
        progress: show a progress bar.
        scanner: ``"training"``, or ``"shifted"`` for a test set whose acquisition settings all lie
            outside the training ranges (:data:`utils.data.phantom.scanner.SHIFTED_RANGES`); the
            marker records it. A folder that holds a phantom of the other scanner model is refused
            (a training set is never replaced by a test set, nor the other way round).

    Returns:
        ``out_dir``. A complete phantom with the same parameters is left as
        it is; a phantom with other parameters is rebuilt, replacing and
        deleting only the files its ownership marker lists (never a folder,
        never the user's files inside it).

    Raises:
        FileExistsError: if ``out_dir`` holds other files and ``overwrite`` is False, or a phantom
            of the other scanner model.
        UnsafeWriteError: ``out_dir`` is a file, the home folder, ``/``, a git
            checkout's root, or a phantom path holds a file it did not write.
    """
    out_dir = Path(out_dir).expanduser().resolve()
    if n_train < 1 or n_test < 0:
        raise ValueError(f"need n_train >= 1 and n_test >= 0; found {n_train}, {n_test}")
    if len(shape) != 3 or min(shape) < 16:
        raise ValueError(f"shape must be 3 sizes of at least 16 voxels; found {tuple(shape)}")
    if scanner not in SCANNERS:
        raise ValueError(f"scanner must be one of {', '.join(SCANNERS)}; found {scanner!r}")
    check_target(out_dir, "the phantom folder")
    if out_dir.exists() and not out_dir.is_dir():
        raise UnsafeWriteError(f"the phantom folder {out_dir} is a file, not a folder; choose a folder")
    check_writable(out_dir, "the phantom")
    with folder_lock(out_dir, TOOL):  # one writer per folder
        return _make_locked(out_dir, n_train, n_test, shape, seed, overwrite, workers, progress, scanner)


def _make_locked(
    out_dir: Path,
    n_train: int,
    n_test: int,
    shape: tuple[int, int, int],
    seed: int,
    overwrite: bool,
    workers: int | None,
    progress: bool,
    scanner: str = "training",
) -> Path:
    """:func:`make_phantom_dataset` with ``out_dir`` locked."""
    params = _params(n_train, n_test, shape, seed, scanner)
    marker = read_marker(out_dir)
    made_with = marker.get("scanner", "training") if marker is not None else scanner
    if made_with != scanner:  # a training phantom is never turned into a test set in place, nor back
        raise FileExistsError(
            f"{out_dir} holds a phantom made with the {made_with} scanner model, not the {scanner} one: a training "
            "set and a shifted test set each need a folder of their own (the course keeps them in phantom/ and "
            "phantom-shifted/); choose another folder, or delete this one first"
        )
    if marker is not None and {k: marker.get(k) for k in params} == params and _is_complete(out_dir, marker):
        return out_dir
    owned = _ownership(out_dir, marker) if out_dir.is_dir() else None
    foreign = foreign_files(out_dir, owned) if owned is not None else []
    if foreign and not overwrite and not owned.files:
        raise FileExistsError(
            f"{out_dir} is not empty and is not a phantom made by utils.phantom (it holds "
            f"{', '.join(foreign[:3])}{' ...' if len(foreign) > 3 else ''}); choose another folder or pass "
            "overwrite=True (--overwrite) to write the phantom beside those files (they are never touched)"
        )
    for name in _expected_files(params) if owned is not None else []:  # refuse before minutes of work
        owned.check_free(out_dir / name, overwrite=True)

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    partial = out_dir.parent / f".{out_dir.name}.partial-{os.getpid()}"
    shutil.rmtree(partial, ignore_errors=True)
    for sub in ("imagesTr", "labelsTr", "imagesTs"):
        (partial / sub).mkdir(parents=True)
    try:
        train_ids, test_ids = _case_ids(n_train, n_test)
        tasks = [
            (str(partial), cid, _case_seed(seed, i), tuple(shape), cid in train_ids, scanner)
            for i, cid in enumerate(train_ids + test_ids)
        ]
        start = time.perf_counter()
        records = _run_tasks(
            tasks, workers, progress, f"phantom {tuple(shape)}{'' if scanner == 'training' else ' ' + scanner}"
        )
        elapsed = time.perf_counter() - start
        dataset = {
            "name": "PHANTOM",
            "description": "Phantom brain tumour MRI on MNI ICBM152 2009a anatomy (utils.phantom)"
            + ("" if scanner == "training" else f", {scanner} scanner model (outside the training ranges)"),
            "reference": "MNI ICBM152 nonlinear symmetric 2009a template, shipped with nilearn",
            "licence": "CC-BY-SA 4.0",
            "tensorImageSize": "4D",
            "modality": {str(i): m for i, m in enumerate(MODALITIES)},
            "labels": {str(k): v for k, v in LABEL_NAMES.items()},
            "numTraining": n_train,
            "numTest": n_test,
            "training": [{"image": f"./imagesTr/{c}.nii.gz", "label": f"./labelsTr/{c}.nii.gz"} for c in train_ids],
            "test": [f"./imagesTs/{c}.nii.gz" for c in test_ids],
        }
        (partial / "dataset.json").write_text(json.dumps(dataset, indent=2))
        info = dict(params, seconds=round(elapsed, 2), cases=records)
        if scanner == "shifted":
            info["scanner_ranges"] = {k: [list(b) for b in v] for k, v in SHIFTED_RANGES.items()}
        (partial / MARKER_FILE).write_text(json.dumps(info, indent=2))
        install_folder(partial, out_dir, TOOL, owned, last=MARKER_FILE)
        if foreign and progress:
            print(
                f"kept {len(foreign)} file(s) in {out_dir} that utils.phantom did not write: "
                f"{', '.join(foreign[:3])}{' ...' if len(foreign) > 3 else ''}"
            )
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return out_dir


def _run_tasks(tasks: list[tuple], workers: int | None, progress: bool, desc: str) -> list[dict]:
    from tqdm.auto import tqdm

    workers = workers or default_workers(len(tasks))
    with tqdm(total=len(tasks), desc=desc, unit="case", disable=not progress) as bar:
        records = []
        for record in map_in_processes(_write_case, tasks, workers):
            records.append(record)
            bar.update()
        return records


def phantom_label_statistics(folder: Path | str):
    """Label statistics of a phantom's training cases, from the volumes its ``phantom.json`` records.

    Returns:
        the :func:`utils.data.statistics.label_statistics` table: per class and
        region, in how many cases it is present and its min / median / max mL.

    Raises:
        FileNotFoundError: if ``folder`` holds no phantom marker.
    """
    import pandas as pd

    from ..labels import CLASS_NAMES
    from ..statistics import label_statistics

    marker = read_marker(folder)
    if marker is None or not isinstance(marker.get("cases"), list):
        raise FileNotFoundError(f"expected a phantom made by utils.phantom in {folder}; found no {MARKER_FILE}")
    rows = {
        c["case_id"]: [c["volume_ml"][LABEL_NAMES[k]] for k in (1, 2, 3)] for c in marker["cases"] if c.get("labelled")
    }
    return label_statistics(pd.DataFrame.from_dict(rows, orient="index", columns=list(CLASS_NAMES)))


def ensure_phantom(mode: str | None = None, progress: bool = True) -> Path:
    """Build (once) and return the phantom dataset the course mode asks for."""
    from ...config import get_settings, phantom_dir

    s = get_settings(mode)
    return make_phantom_dataset(
        phantom_dir(s.mode), s.phantom_train, s.phantom_test, s.phantom_shape, progress=progress
    )


def ensure_shifted_phantom(mode: str | None = None, progress: bool = True) -> Path:
    """Build (once) and return the shifted test set of the course mode (``phantom-shifted`` and its ci/gpu sizes).

    Labelled cases only (``imagesTr``/``labelsTr``), as many as the mode's held-out
    cases, on the mode's grid, drawn with the ``"shifted"`` scanner model and
    :data:`SHIFTED_SEED`, in :func:`utils.config.shifted_phantom_dir`.
    """
    from ...config import get_settings, shifted_phantom_dir

    s = get_settings(mode)
    return make_phantom_dataset(
        shifted_phantom_dir(s.mode),
        s.shifted_cases,
        0,
        s.phantom_shape,
        SHIFTED_SEED,
        progress=progress,
        scanner="shifted",
    )


def main(argv: list[str] | None = None) -> int:
    """Command line entry point (``python -m utils.data.phantom``)."""
    parser = argparse.ArgumentParser(
        prog="python -m utils.data.phantom",
        description="Write a phantom brain-tumour dataset in the MSD Task01 layout.",
    )
    parser.add_argument("--out", required=True, type=Path, help="target folder")
    parser.add_argument(
        "--train", type=int, default=None, help="labelled cases (default 16, as the cpu mode; 6 with --shifted)"
    )
    parser.add_argument("--test", type=int, default=None, help="unlabelled cases (default 2; 0 with --shifted)")
    parser.add_argument(
        "--shifted",
        action="store_true",
        help=f"a test set from another scanner: contrast, gamma, scale, bias field, noise and through-plane "
        f"resolution all outside the training ranges (seed {SHIFTED_SEED} unless --seed)",
    )
    parser.add_argument(
        "--shape",
        type=int,
        nargs=3,
        default=list(BRATS_SHAPE),
        metavar=("X", "Y", "Z"),
        help="grid size (default 240 240 155, the BraTS grid)",
    )
    parser.add_argument("--tiny", action="store_true", help=f"the CI grid {TINY_SHAPE}")
    parser.add_argument(
        "--seed", type=int, default=None, help=f"dataset seed (default 0; {SHIFTED_SEED} with --shifted)"
    )
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="write into a non-empty folder that is not a phantom (its files are kept)",
    )
    args = parser.parse_args(argv)
    shape = TINY_SHAPE if args.tiny else tuple(args.shape)
    shifted = args.shifted
    n_train = args.train if args.train is not None else (6 if shifted else 16)
    n_test = args.test if args.test is not None else (0 if shifted else 2)
    seed = args.seed if args.seed is not None else (SHIFTED_SEED if shifted else 0)
    start = time.perf_counter()
    try:
        out = make_phantom_dataset(
            args.out,
            n_train,
            n_test,
            shape,
            seed,
            args.overwrite,
            args.workers,
            scanner="shifted" if shifted else "training",
        )
    except (FileExistsError, ValueError, OSError) as err:  # refusals (UnsafeWriteError is a ValueError), full disk
        print(f"error: {one_line(err)}", file=sys.stderr)
        return 2
    kind = "shifted-scanner phantom test set" if shifted else "phantom dataset"
    print(f"{kind} ready in {out} ({time.perf_counter() - start:.1f} s)")
    print("label statistics of the training cases (volumes in mL):")
    print(phantom_label_statistics(out).to_string())
    return 0
