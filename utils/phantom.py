"""A phantom BraTS-like dataset built from real anatomy, in the MSD Task01 layout.

The anatomy is the MNI ICBM152 2009a template that ships inside the nilearn
wheel (T1 image, grey- and white-matter maps, brain mask; no download). CSF is
what the brain mask holds beyond grey and white matter. Each case plants one
tumour (necrotic/non-enhancing core, enhancing rim, surrounding edema that
follows the white matter), pushes the tissue around it aside (mass effect),
synthesises the four sequences with BraTS-like contrast, multiplies a smooth
bias field, adds Rician noise and zeroes everything outside the brain
(skull-stripped, like BraTS).

The same code writes the full BraTS grid (240x240x155 at 1 mm) and the tiny CI
grid (64x64x40): the field of view stays 240x240x155 mm and only the voxel
size changes, so tumour volumes in mL agree between the two.

Command line::

    python -m utils.phantom --out data/phantom --train 12 --test 2
    python -m utils.phantom --out data/phantom-ci --shape 64 64 40
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from functools import lru_cache
from multiprocessing import get_context
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage as ndi

from .config import BRATS_SHAPE, TINY_SHAPE
from .labels import LABEL_NAMES, MODALITIES
from .safety import OwnedFiles, UnsafeWriteError, check_target, file_record, foreign_files, install_folder

GENERATOR_VERSION = 1
NO_KERAS_ENV = "BRATS_COURSE_NO_KERAS"
MARKER_FILE = "phantom.json"
TOOL = "utils.phantom"
FOV_MM = (240.0, 240.0, 155.0)
"""Field of view of every phantom grid: the BraTS grid at 1 mm."""
INTENSITY_SCALE = 1000.0
"""White matter on T1 sits near this value before the per-case scale."""

# Relative intensity of each tissue (grey matter, white matter, CSF) and tumour
# class (edema, necrotic/non-enhancing core, enhancing) per sequence, in the
# MSD channel order FLAIR, T1w, T1gd, T2w. T1w and T1gd take their healthy
# tissue from the MNI T1 template itself (None below).
TISSUE_CONTRAST = {
    "FLAIR": (0.75, 0.58, 0.08),
    "T1w": None,
    "T1gd": None,
    "T2w": (0.62, 0.42, 1.00),
}
TUMOUR_CONTRAST = {
    #         edema  core   enhancing
    "FLAIR": (1.00, 0.55, 0.80),
    "T1w": (0.55, 0.30, 0.55),
    "T1gd": (0.57, 0.33, 1.30),
    "T2w": (1.00, 1.05, 0.75),
}
EDEMA_TISSUE_SHARE = 0.35
"""Edema is swollen tissue: this share of the healthy signal shows through."""


# ----------------------------------------------------------------------------
# Anatomy on the target grid (computed once per process and grid)
# ----------------------------------------------------------------------------

NILEARN_FILES = {
    "t1": "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz",
    "gm": "mni_icbm152_gm_tal_nlin_sym_09a_converted.nii.gz",
    "wm": "mni_icbm152_wm_tal_nlin_sym_09a_converted.nii.gz",
}
DEPTH_STRIDE = 2
"""The depth map (mm to the brain surface) is kept at every 2nd voxel."""


def template_paths() -> dict[str, Path]:
    """Paths of the MNI ICBM152 2009a maps inside the installed nilearn wheel.

    Found without importing nilearn (whose import takes seconds).
    """
    spec = importlib.util.find_spec("nilearn")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError("nilearn is not installed: pip install nilearn")
    folder = Path(list(spec.submodule_search_locations)[0]) / "datasets" / "data"
    paths = {name: folder / fname for name, fname in NILEARN_FILES.items()}
    missing = [str(p) for p in paths.values() if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"expected the MNI template shipped with nilearn; missing {missing}")
    return paths


def grid_affine(shape: tuple[int, int, int], center_mm: np.ndarray) -> np.ndarray:
    """RAS affine of a grid of ``shape`` spanning :data:`FOV_MM` around ``center_mm``.

    The corner is snapped to whole millimetres so the 1 mm grid lines up with
    the template's voxels (a crop, not an interpolation).
    """
    spacing = np.asarray(FOV_MM) / np.asarray(shape)
    affine = np.diag([*spacing, 1.0])
    affine[:3, 3] = np.round(center_mm - spacing * (np.asarray(shape) - 1) / 2.0)
    return affine


def _resample(data: np.ndarray, to_src: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    scale, offset = np.diag(to_src)[:3], to_src[:3, 3]
    if np.allclose(scale, 1.0) and np.allclose(offset, np.round(offset)):
        out = np.zeros(shape, dtype=np.float32)  # same voxel size: a crop / pad
        start = np.round(offset).astype(int)
        src = tuple(slice(max(s, 0), min(s + n, d)) for s, n, d in zip(start, shape, data.shape))
        dst = tuple(slice(sl.start - s, sl.stop - s) for sl, s in zip(src, start))
        out[dst] = data[src]
        return out
    sigma = np.maximum(scale - 1.0, 0.0) * 0.5  # anti-alias when downsampling
    if sigma.any():
        data = ndi.gaussian_filter(data, sigma)
    return ndi.affine_transform(data, scale, offset=offset, output_shape=shape, order=1).astype(np.float32)


@lru_cache(maxsize=2)
def anatomy(shape: tuple[int, int, int] = BRATS_SHAPE) -> dict:
    """Resample the MNI template to a phantom grid.

    Args:
        shape: the grid ``(x, y, z)``; it always spans 240x240x155 mm.

    Returns:
        dict with float32 maps ``t1`` (0-1), ``gm``, ``wm``, ``csf`` (tissue
        probabilities), bool ``mask``, ``depth`` (mm from the brain surface,
        every :data:`DEPTH_STRIDE`-th voxel), the healthy signal of each
        sequence ``healthy`` ``(4, x, y, z)``, and ``affine`` / ``spacing``.
    """
    shape = tuple(int(s) for s in shape)
    images = {name: nib.load(str(path)) for name, path in template_paths().items()}
    src_affine = images["t1"].affine
    raw = {name: np.asarray(img.get_fdata(dtype=np.float32)) / 255.0 for name, img in images.items()}
    src_mask = ndi.binary_fill_holes(raw["t1"] > 0.2)
    brain = np.argwhere(src_mask)
    center_vox = (brain.min(0) + brain.max(0)) / 2.0
    center_mm = src_affine[:3, :3] @ center_vox + src_affine[:3, 3]
    affine = grid_affine(shape, center_mm)
    spacing = np.diag(affine)[:3]
    to_src = np.linalg.inv(src_affine) @ affine  # target voxel -> template voxel
    out = {name: _resample(data, to_src, shape) for name, data in raw.items()}
    brain_mask = _resample(src_mask.astype(np.float32), to_src, shape) > 0.5
    gm_, wm_ = out["gm"], out["wm"]
    total = gm_ + wm_
    scale = np.where(total > 1.0, 1.0 / np.maximum(total, 1e-6), 1.0).astype(np.float32)
    gm_ *= scale
    wm_ *= scale
    gm_ *= brain_mask
    wm_ *= brain_mask
    out["csf"] = np.where(brain_mask, 1.0 - gm_ - wm_, 0.0).astype(np.float32)
    out["t1"] = np.clip(out["t1"], 0.0, None) * brain_mask
    out["mask"] = brain_mask
    coarse = brain_mask[::DEPTH_STRIDE, ::DEPTH_STRIDE, ::DEPTH_STRIDE]
    out["depth"] = ndi.distance_transform_edt(coarse, sampling=spacing * DEPTH_STRIDE).astype(np.float32)
    out["healthy"] = np.stack([_healthy_channel(name, out) for name in MODALITIES])
    out["mask_index"] = np.flatnonzero(brain_mask)
    out["affine"] = affine
    out["spacing"] = tuple(float(s) for s in spacing)
    for value in out.values():
        if isinstance(value, np.ndarray):
            value.setflags(write=False)
    return out


# ----------------------------------------------------------------------------
# One case
# ----------------------------------------------------------------------------

def _smooth_noise(rng: np.random.Generator, shape: tuple[int, ...], coarse: int = 5) -> np.ndarray:
    """Smooth random field in about [-1, 1] on ``shape``.

    Cubic upsampling from ``coarse`` knots to an intermediate grid, then linear
    to the full grid: smooth to the eye at a fraction of a full cubic zoom.
    """
    low = rng.uniform(-1.0, 1.0, size=(coarse,) * len(shape)).astype(np.float32)
    mid_shape = [min(s, 4 * coarse) for s in shape]
    mid = ndi.zoom(low, [m / coarse for m in mid_shape], order=3, mode="nearest", grid_mode=True)
    field = ndi.zoom(mid, [s / m for s, m in zip(shape, mid.shape)], order=1, mode="nearest", grid_mode=True)
    return field[tuple(slice(0, s) for s in shape)]


def _random_rotation(rng: np.random.Generator) -> np.ndarray:
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q *= np.sign(np.diag(r))
    if np.linalg.det(q) < 0:
        q[:, 0] *= -1
    return q


def _tumour_parameters(rng: np.random.Generator, anat: dict) -> dict:
    spacing = np.asarray(anat["spacing"])
    r_edema = rng.uniform(24.0, 36.0)
    r_enh = r_edema * rng.uniform(0.5, 0.7)
    r_core = r_enh * rng.uniform(0.55, 0.80)
    kind = rng.choice(["full", "no_core", "no_enhancing"], p=[0.8, 0.1, 0.1])
    # centre: in white matter of the cerebrum, deep enough for the solid part
    affine, k = anat["affine"], DEPTH_STRIDE
    wm = anat["wm"][::k, ::k, ::k]
    z_mm = affine[2, 2] * np.arange(0, anat["mask"].shape[2], k) + affine[2, 3]
    candidates = (anat["depth"] > max(0.8 * r_enh, 10.0)) & (wm > 0.5)
    candidates &= (z_mm > -10.0)[None, None, :]  # cerebrum, above the cerebellum
    idx = np.flatnonzero(candidates)
    if len(idx) == 0:
        raise RuntimeError("no voxel deep enough in white matter to plant a tumour")
    center = np.array(np.unravel_index(idx[rng.integers(len(idx))], candidates.shape), dtype=float) * k
    center += rng.uniform(-0.5, 0.5, size=3) * k
    return {
        "center_vox": center,
        "r_edema": r_edema,
        "r_enh": r_enh,
        "r_core": r_core,
        "kind": str(kind),
        "axes": rng.uniform(0.8, 1.25, size=3),
        "rotation": _random_rotation(rng),
        "mass_effect": rng.uniform(0.15, 0.35),
        "spacing": spacing,
    }


def _plant_tumour(rng: np.random.Generator, anat: dict, p: dict):
    """Return the box slices, the displaced tissue maps and the label in the box."""
    shape = anat["mask"].shape
    spacing = p["spacing"]
    half = np.ceil(1.7 * p["r_edema"] / spacing).astype(int)
    c = np.round(p["center_vox"]).astype(int)
    box = tuple(slice(max(ci - h, 0), min(ci + h + 1, s)) for ci, h, s in zip(c, half, shape))
    box_shape = tuple(sl.stop - sl.start for sl in box)
    grids = np.meshgrid(*[np.arange(sl.start, sl.stop, dtype=np.float32) for sl in box], indexing="ij")
    offset_mm = np.stack([(g - ci) * s for g, ci, s in zip(grids, p["center_vox"], spacing)])

    # mass effect: a voxel shows the tissue that sat closer to the tumour centre
    dist = np.sqrt((offset_mm ** 2).sum(0))
    pull = 1.0 - p["mass_effect"] * np.exp(-((dist / (1.2 * p["r_enh"])) ** 2))
    src = np.stack([ci + (g - ci) * pull for g, ci in zip(grids, p["center_vox"])])
    tissue = {
        name: ndi.map_coordinates(anat[name], src, order=1, mode="nearest").astype(np.float32)
        for name in ("t1", "gm", "wm", "csf")
    }

    # irregular, anisotropic, rotated shells
    q = np.tensordot(p["rotation"], offset_mm, axes=1) / p["axes"][:, None, None, None]
    d = np.sqrt((q ** 2).sum(0))
    rho_edema = d / (p["r_edema"] * (1.0 + 0.35 * _smooth_noise(rng, box_shape)))
    rho_enh = d / (p["r_enh"] * (1.0 + 0.3 * _smooth_noise(rng, box_shape)))
    rho_core = d / (p["r_core"] * (1.0 + 0.3 * _smooth_noise(rng, box_shape)))

    brain = anat["mask"][box]
    solid = (rho_enh < 1.0) & brain
    if p["kind"] == "no_core":
        core = np.zeros_like(solid)
    elif p["kind"] == "no_enhancing":
        core = solid
    else:
        core = solid & (rho_core < 1.0)
    enhancing = solid & ~core
    edema = (rho_edema < 1.0) & brain & ~solid
    edema &= (tissue["wm"] > 0.3) | (rho_edema < 0.72)
    edema &= tissue["csf"] < 0.6
    label = np.zeros(box_shape, dtype=np.uint8)
    label[edema] = 1
    label[core] = 2
    label[enhancing] = 3
    return box, tissue, label


def make_phantom_case(seed: int, shape: tuple[int, int, int] = BRATS_SHAPE):
    """Synthesise one phantom case.

    Args:
        seed: the case is a pure function of ``(seed, shape)``.
        shape: grid ``(x, y, z)``; the field of view is always 240x240x155 mm.

    Returns:
        ``(image, label, affine)``: int16 ``(x, y, z, 4)`` in the MSD channel
        order, uint8 ``(x, y, z)`` in the MSD label values, 4x4 affine.
    """
    anat = anatomy(tuple(int(s) for s in shape))
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), GENERATOR_VERSION]))
    params = _tumour_parameters(rng, anat)
    box, tissue, box_label = _plant_tumour(rng, anat, params)
    spacing = np.asarray(anat["spacing"])

    # soft class weights so tumour borders are partial-volume, not jagged
    sigma = 0.8 / spacing
    weights = [ndi.gaussian_filter((box_label == k).astype(np.float32), sigma) for k in (1, 2, 3)]
    texture = 1.0 + 0.08 * _smooth_noise(rng, box_label.shape, coarse=9)
    brain_box = anat["mask"][box]

    channel_scale = rng.uniform(0.85, 1.2, size=4) * INTENSITY_SCALE
    mask = anat["mask"]
    inside = anat["mask_index"]
    ijk = np.unravel_index(inside, mask.shape)
    image = np.zeros((*mask.shape, 4), dtype=np.int16)
    w_e, w_c, w_x = weights
    tumour_w = np.clip(w_e * (1.0 - EDEMA_TISSUE_SHARE) + w_c + w_x, 0.0, 1.0)
    for ch, name in enumerate(MODALITIES):
        box_healthy = _healthy_channel(name, tissue)
        edema_v, core_v, enh_v = TUMOUR_CONTRAST[name]
        tumour_v = w_e * (1.0 - EDEMA_TISSUE_SHARE) * edema_v + w_c * core_v + w_x * enh_v
        channel = anat["healthy"][ch].copy()
        channel[box] = np.where(brain_box, box_healthy * (1.0 - tumour_w) + tumour_v * texture, 0.0)
        values = channel.ravel()[inside] * (channel_scale[ch] * _bias_field(rng, ijk, mask.shape))
        noise_sd = rng.uniform(0.015, 0.035) * channel_scale[ch]
        n1 = rng.standard_normal(len(inside), dtype=np.float32) * noise_sd
        n2 = rng.standard_normal(len(inside), dtype=np.float32) * noise_sd
        values = np.sqrt((values + n1) ** 2 + n2 ** 2)  # Rician magnitude noise
        flat = np.zeros(mask.size, dtype=np.int16)
        flat[inside] = np.clip(np.rint(values), 0, np.iinfo(np.int16).max)
        image[..., ch] = flat.reshape(mask.shape)

    label = np.zeros(mask.shape, dtype=np.uint8)
    label[box] = box_label
    return image, label, anat["affine"].copy()


def _healthy_channel(name: str, maps: dict) -> np.ndarray:
    contrast = TISSUE_CONTRAST[name]
    if contrast is None:
        return np.asarray(maps["t1"], dtype=np.float32)
    gm_v, wm_v, csf_v = contrast
    return (maps["gm"] * gm_v + maps["wm"] * wm_v + maps["csf"] * csf_v).astype(np.float32)


def _bias_field(rng: np.random.Generator, ijk: tuple[np.ndarray, ...], shape: tuple[int, ...]) -> np.ndarray:
    """A smooth multiplicative field (separable, about +-15 %) at the voxels ``ijk``."""
    field = np.ones(len(ijk[0]), dtype=np.float32)
    for idx, n in zip(ijk, shape):
        t = np.linspace(-1.0, 1.0, n, dtype=np.float32)
        a, b = rng.uniform(-0.07, 0.07, size=2)
        field *= np.exp(a * t + b * (t ** 2 - 1.0 / 3.0)).astype(np.float32)[idx]
    return field


# ----------------------------------------------------------------------------
# A whole dataset in the MSD layout
# ----------------------------------------------------------------------------

def _case_ids(n_train: int, n_test: int) -> tuple[list[str], list[str]]:
    ids = [f"PHANTOM_{i:03d}" for i in range(1, n_train + n_test + 1)]
    return ids[:n_train], ids[n_train:]


def _case_seed(seed: int, index: int) -> int:
    return int(np.random.SeedSequence([int(seed), int(index)]).generate_state(1)[0])


def _write_case(task: tuple) -> dict:
    folder, case_id, case_seed, shape, labelled = task
    image, label, affine = make_phantom_case(case_seed, shape)
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


def _params(n_train: int, n_test: int, shape, seed: int) -> dict:
    return {
        "generator": "utils.phantom",
        "version": GENERATOR_VERSION,
        "shape": [int(s) for s in shape],
        "n_train": int(n_train),
        "n_test": int(n_test),
        "seed": int(seed),
    }


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
    return (["dataset.json", MARKER_FILE] + [f"imagesTr/{c}.nii.gz" for c in train]
            + [f"labelsTr/{c}.nii.gz" for c in train] + [f"imagesTs/{c}.nii.gz" for c in test])


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
    for name in files:
        if (folder / name).is_file() and not (folder / name).is_symlink():
            owned.files[name] = dict(file_record(folder / name), tool=TOOL)
    return owned


def make_phantom_dataset(
    out_dir: Path | str,
    n_train: int = 12,
    n_test: int = 2,
    shape: tuple[int, int, int] = BRATS_SHAPE,
    seed: int = 0,
    overwrite: bool = False,
    workers: int | None = None,
    progress: bool = True,
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

    Returns:
        ``out_dir``. A complete phantom with the same parameters is left as
        it is; a phantom with other parameters is rebuilt, replacing and
        deleting only the files its ownership marker lists (never a folder,
        never the user's files inside it).

    Raises:
        FileExistsError: if ``out_dir`` holds other files and ``overwrite`` is False.
        UnsafeWriteError: ``out_dir`` is a file, the home folder, ``/``, a git
            checkout's root, or a phantom path holds a file it did not write.
    """
    out_dir = Path(out_dir).expanduser().resolve()
    if n_train < 1 or n_test < 0:
        raise ValueError(f"need n_train >= 1 and n_test >= 0; found {n_train}, {n_test}")
    if len(shape) != 3 or min(shape) < 16:
        raise ValueError(f"shape must be 3 sizes of at least 16 voxels; found {tuple(shape)}")
    check_target(out_dir, "the phantom folder")
    if out_dir.exists() and not out_dir.is_dir():
        raise UnsafeWriteError(f"the phantom folder {out_dir} is a file, not a folder; choose a folder")
    params = _params(n_train, n_test, shape, seed)
    marker = read_marker(out_dir)
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
            (str(partial), cid, _case_seed(seed, i), tuple(shape), cid in train_ids)
            for i, cid in enumerate(train_ids + test_ids)
        ]
        start = time.perf_counter()
        records = _run_tasks(tasks, workers, progress, f"phantom {tuple(shape)}")
        elapsed = time.perf_counter() - start
        dataset = {
            "name": "PHANTOM",
            "description": "Phantom brain tumour MRI on MNI ICBM152 2009a anatomy (utils.phantom)",
            "reference": "MNI ICBM152 nonlinear symmetric 2009a template, shipped with nilearn",
            "licence": "CC-BY-SA 4.0",
            "tensorImageSize": "4D",
            "modality": {str(i): m for i, m in enumerate(MODALITIES)},
            "labels": {str(k): v for k, v in LABEL_NAMES.items()},
            "numTraining": n_train,
            "numTest": n_test,
            "training": [
                {"image": f"./imagesTr/{c}.nii.gz", "label": f"./labelsTr/{c}.nii.gz"} for c in train_ids
            ],
            "test": [f"./imagesTs/{c}.nii.gz" for c in test_ids],
        }
        (partial / "dataset.json").write_text(json.dumps(dataset, indent=2))
        info = dict(params, seconds=round(elapsed, 2), cases=records)
        (partial / MARKER_FILE).write_text(json.dumps(info, indent=2))
        install_folder(partial, out_dir, TOOL, owned, last=MARKER_FILE)
        if foreign and progress:
            print(f"kept {len(foreign)} file(s) in {out_dir} that utils.phantom did not write: "
                  f"{', '.join(foreign[:3])}{' ...' if len(foreign) > 3 else ''}")
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return out_dir


def _run_tasks(tasks: list[tuple], workers: int | None, progress: bool, desc: str) -> list[dict]:
    from tqdm.auto import tqdm

    workers = workers or min(len(tasks), os.cpu_count() or 1, 4)
    bar = tqdm(total=len(tasks), desc=desc, unit="case", disable=not progress)
    try:
        if workers <= 1:
            records = []
            for task in tasks:
                records.append(_write_case(task))
                bar.update()
            return records
        # spawned workers import `utils`; they need no Keras (seconds and memory saved)
        previous = os.environ.get(NO_KERAS_ENV)
        os.environ[NO_KERAS_ENV] = "1"
        try:
            with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool:
                records = []
                for record in pool.map(_write_case, tasks):
                    records.append(record)
                    bar.update()
                return records
        finally:
            if previous is None:
                os.environ.pop(NO_KERAS_ENV, None)
            else:
                os.environ[NO_KERAS_ENV] = previous
    finally:
        bar.close()


def ensure_phantom(mode: str | None = None, progress: bool = True) -> Path:
    """Build (once) and return the phantom dataset the course mode asks for."""
    from .config import get_settings, phantom_dir

    s = get_settings(mode)
    return make_phantom_dataset(
        phantom_dir(s.mode), s.phantom_train, s.phantom_test, s.phantom_shape, progress=progress
    )


def main(argv: list[str] | None = None) -> int:
    """Command line entry point (``python -m utils.phantom``)."""
    parser = argparse.ArgumentParser(
        prog="python -m utils.phantom",
        description="Write a phantom brain-tumour dataset in the MSD Task01 layout.",
    )
    parser.add_argument("--out", required=True, type=Path, help="target folder")
    parser.add_argument("--train", type=int, default=12, help="labelled cases (default 12)")
    parser.add_argument("--test", type=int, default=2, help="unlabelled cases (default 2)")
    parser.add_argument("--shape", type=int, nargs=3, default=list(BRATS_SHAPE), metavar=("X", "Y", "Z"),
                        help="grid size (default 240 240 155, the BraTS grid)")
    parser.add_argument("--tiny", action="store_true", help=f"the CI grid {TINY_SHAPE}")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--overwrite", action="store_true",
                        help="write into a non-empty folder that is not a phantom (its files are kept)")
    args = parser.parse_args(argv)
    shape = TINY_SHAPE if args.tiny else tuple(args.shape)
    start = time.perf_counter()
    try:
        out = make_phantom_dataset(args.out, args.train, args.test, shape, args.seed,
                                   args.overwrite, args.workers)
    except (FileExistsError, ValueError, OSError) as err:  # refusals (UnsafeWriteError is a ValueError)
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"phantom dataset ready in {out} ({time.perf_counter() - start:.1f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
