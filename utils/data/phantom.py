"""A phantom BraTS-like dataset built from real anatomy, in the MSD Task01 layout.

The anatomy is the MNI ICBM152 2009a template that ships inside the nilearn
wheel (T1 image, grey- and white-matter maps, brain mask; no download). CSF is
what the brain mask holds beyond grey and white matter.

Each case plants a glioma drawn from its seed: a lobulated solid mass (several
overlapping blobs with noise-deformed borders), sometimes with satellites
(multifocal); off-centre irregular necrosis; a thin (2-5 mm, thinner in places), broken
enhancing rim, absent in lower-grade tumours (about 20 % of cases, no
enhancing label);
edema that reaches further along white matter than into grey matter, from
thin to extensive; whole tumours of about 5 to 150 mL. The tissue around the
tumour is pushed aside (mass effect). Unlabelled look-alikes appear away from
the tumour: periventricular and small white-matter hyperintensities (bright on
FLAIR/T2) and vessels (bright on T1gd).

The four sequences get BraTS-like contrast in which the classes overlap, and
each tumour draws its own appearance: how far the enhancement rises on T1gd
(weak in some cases) and how patchy it is, faint unlabelled uptake inside the
core (so T1gd alone does not draw the enhancing border), how distinct the
core is from edema on every sequence (in some cases hardly at all), how much
healthy signal shows through the edema, how wide the partial-volume borders
are, heterogeneous texture. Then per-case "scanner" differences: intensity
scale and gamma, bias field strength, through-plane blur, Rician noise level.
Everything outside the brain is zero (skull-stripped, like BraTS).
:func:`phantom_label_statistics` summarises the labels (presence per class,
volume spread); the command line prints it.

The same code writes the full BraTS grid (240x240x155 at 1 mm) and the tiny CI
grid (64x64x40): the field of view stays 240x240x155 mm and only the voxel
size changes, so tumour volumes in mL agree between the two.

Command line::

    python -m utils.data.phantom --out data/phantom --train 16 --test 2
    python -m utils.data.phantom --out data/phantom-ci --shape 64 64 40
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import sys
import time
from functools import lru_cache
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage as ndi

from ..config import BRATS_SHAPE, TINY_SHAPE
from ..parallel import default_workers, map_in_processes
from ..safety import (
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
from .datasets import load_nifti
from .labels import LABEL_NAMES, MODALITIES

GENERATOR_VERSION = 4
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
    "FLAIR": (0.70, 0.58, 0.08),
    "T1w": None,
    "T1gd": None,
    "T2w": (0.62, 0.42, 1.00),
}
TUMOUR_CONTRAST = {
    # tumour compartment: edema, non-enhancing, enhancing, necrosis (labelled
    # non-enhancing too). Classes overlap within each sequence, as in real
    # gliomas: edema and non-enhancing tumour are both FLAIR/T2 bright, and
    # necrosis is dark on T1gd like the tumour around it.
    "FLAIR": (1.05, 1.05, 0.90, 0.60),
    "T1w": (0.55, 0.50, 0.55, 0.30),
    "T1gd": (0.57, 0.52, 1.25, 0.30),
    "T2w": (0.95, 0.90, 0.75, 1.10),
}
LOOKALIKE_CONTRAST = {
    # unlabelled look-alikes: white-matter / periventricular hyperintensity, vessel
    "FLAIR": (0.85, 0.35),
    "T1w": (0.70, 0.65),
    "T1gd": (0.72, 1.30),
    "T2w": (0.80, 0.35),
}


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
    images = {name: load_nifti(path, f"MNI template {name}", ndim=(3,)) for name, path in template_paths().items()}
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
    out["healthy_wm"] = np.median(out["healthy"][:, out["wm"] > 0.9], axis=1).astype(np.float32)
    out["mask_index"] = np.flatnonzero(brain_mask)
    out["brain_box"] = _bbox(brain_mask, 2, shape)
    pv = _periventricular(out, coarse, spacing)
    out["periventricular_box"] = _bbox(pv > 0.02, 0, shape)
    out["periventricular"] = pv[out["periventricular_box"]]
    out["affine"] = affine
    out["spacing"] = tuple(float(s) for s in spacing)
    for value in out.values():
        if isinstance(value, np.ndarray):
            value.setflags(write=False)
    return out


def _periventricular(maps: dict, coarse_mask: np.ndarray, spacing: np.ndarray) -> np.ndarray:
    """Where periventricular FLAIR hyperintensity can appear: white matter hugging the ventricles.

    Ventricles are the CSF deep inside the brain; the band is a few mm wide.
    Computed on the coarse depth grid, then repeated up to the full grid.
    """
    k = DEPTH_STRIDE
    ventricles = (maps["csf"][::k, ::k, ::k] > 0.6) & (maps["depth"] > 15.0) & coarse_mask
    near = ndi.gaussian_filter(ventricles.astype(np.float32), 4.0 / (spacing * k))
    band = np.clip(5.0 * near, 0.0, 1.0) * ~ventricles
    full = band.repeat(k, 0).repeat(k, 1).repeat(k, 2)[tuple(slice(0, n) for n in maps["csf"].shape)]
    return (full * np.clip(2.0 * maps["wm"] - 0.4, 0.0, 1.0)).astype(np.float32)


# ----------------------------------------------------------------------------
# One case
# ----------------------------------------------------------------------------


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, ...], coarse: int = 5) -> np.ndarray:
    """Smooth random field in about [-1, 1] on ``shape``.

    Random values on ``coarse`` knots per axis, interpolated by separable
    Catmull-Rom cubics: three small matrix products, far cheaper than a zoom.
    """
    field = rng.uniform(-1.0, 1.0, size=(coarse,) * len(shape)).astype(np.float32)
    for axis, n in enumerate(shape):  # contract each knot axis with its interpolation matrix
        field = np.moveaxis(np.tensordot(_cubic_matrix(n, coarse), field, axes=(1, axis)), 0, axis)
    return np.ascontiguousarray(field)


@lru_cache(maxsize=256)
def _cubic_matrix(n: int, coarse: int) -> np.ndarray:
    """``(n, coarse)`` Catmull-Rom weights from ``coarse`` knots to ``n`` samples (knots at cell centres)."""
    t = (np.arange(n) + 0.5) * coarse / n - 0.5
    i0 = np.floor(t).astype(int)
    f = t - i0
    weights = (
        (-(f**3) + 2 * f**2 - f) / 2,
        (3 * f**3 - 5 * f**2 + 2) / 2,
        (-3 * f**3 + 4 * f**2 + f) / 2,
        (f**3 - f**2) / 2,
    )
    matrix = np.zeros((n, coarse), dtype=np.float32)
    for k, w in enumerate(weights):
        np.add.at(matrix, (np.arange(n), np.clip(i0 - 1 + k, 0, coarse - 1)), w)
    matrix.setflags(write=False)
    return matrix


def _random_rotation(rng: np.random.Generator) -> np.ndarray:
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q *= np.sign(np.diag(r))
    if np.linalg.det(q) < 0:
        q[:, 0] *= -1
    return q


def _unit_vector(rng: np.random.Generator) -> np.ndarray:
    v = rng.normal(size=3)
    return v / np.linalg.norm(v)


def _candidate_centres(anat: dict, min_depth_mm: float) -> np.ndarray:
    """Voxel positions (every DEPTH_STRIDE-th) in cerebral white matter at least ``min_depth_mm`` deep."""
    affine, k = anat["affine"], DEPTH_STRIDE
    wm = anat["wm"][::k, ::k, ::k]
    z_mm = affine[2, 2] * np.arange(0, anat["mask"].shape[2], k) + affine[2, 3]
    candidates = (anat["depth"] > min_depth_mm) & (wm > 0.5)
    candidates &= (z_mm > -10.0)[None, None, :]  # cerebrum, above the cerebellum
    return np.argwhere(candidates).astype(float) * k


def _focus(rng: np.random.Generator, centre: np.ndarray, r_solid: float, grade: str, main: bool) -> dict:
    """Shape and composition of one tumour focus (all lengths in mm)."""
    n_lobes = int(rng.integers(3, 8)) if main else int(rng.integers(1, 4))
    lobes = [(np.zeros(3), r_solid * rng.uniform(0.6, 0.85))]
    for _ in range(n_lobes - 1):  # overlapping blobs make a lobulated mass
        lobes.append((_unit_vector(rng) * r_solid * rng.uniform(0.45, 1.0), r_solid * rng.uniform(0.3, 0.65)))
    high = grade == "high"
    necrosis = high and main and r_solid > 8.0 and rng.random() < 0.75
    return {
        "centre_vox": centre,
        "r_solid": r_solid,
        "lobes": lobes,
        "axes": rng.uniform(0.75, 1.3, size=3),
        "rotation": _random_rotation(rng),
        "roughness": rng.uniform(0.15, 0.35),
        "necrosis": bool(necrosis),
        # necrosis: irregular, often off-centre, a share of the solid radius
        "necrosis_offset": _unit_vector(rng) * r_solid * rng.uniform(0.0, 0.4),
        "necrosis_radius": r_solid * rng.uniform(0.35, 0.65),
        # enhancement: a thin, patchy rim (none in lower-grade tumours)
        "enhancing": high,
        "outer_rim": (not necrosis) or rng.random() < 0.5,
        "rim_mm": rng.uniform(2.0, 5.0),
        "rim_gaps": rng.uniform(0.2, 0.5),
    }


def _tumour_parameters(rng: np.random.Generator, anat: dict) -> dict:
    """Draw everything a case's tumour and its look-alikes need from ``rng``.

    About 20 % of cases are lower grade (no enhancing label, thin edema),
    about 20 % multifocal; the whole tumour spans about 5 to 150 mL.
    """
    spacing = np.asarray(anat["spacing"])
    grade = "low" if rng.random() < 0.2 else "high"
    r_solid = float(np.exp(rng.uniform(np.log(8.0), np.log(26.0))))
    edema_mm = float(np.exp(rng.uniform(np.log(2.5), np.log(22.0 if grade == "high" else 10.0))))
    points = _candidate_centres(anat, max(0.7 * r_solid, 10.0))
    if len(points) == 0:
        raise RuntimeError("no voxel deep enough in white matter to plant a tumour")
    centre = points[rng.integers(len(points))] + rng.uniform(-0.5, 0.5, size=3) * DEPTH_STRIDE
    foci = [_focus(rng, centre, r_solid, grade, main=True)]
    if rng.random() < 0.2:  # multifocal disease: one or two satellites nearby
        near = _candidate_centres(anat, 8.0)
        for _ in range(int(rng.integers(1, 3))):
            r_sat = rng.uniform(4.0, 9.0)
            dist = np.sqrt((((near - centre) * spacing) ** 2).sum(1))
            ok = np.flatnonzero((dist > r_solid + r_sat + 8.0) & (dist < r_solid + 45.0))
            if len(ok):
                foci.append(_focus(rng, near[ok[rng.integers(len(ok))]], r_sat, grade, main=False))
    return {
        "grade": grade,
        "foci": foci,
        "edema_mm": edema_mm,
        "mass_effect": rng.uniform(0.1, 0.3) * min(1.0, r_solid / 15.0),
        "spacing": spacing,
        # appearance of this tumour (shared by its foci)
        "enhancement": rng.uniform(0.6, 1.0),  # how far the enhancing tumour rises on T1gd
        "enhancement_patchiness": rng.uniform(0.2, 0.5),
        "faint_enhancement": rng.uniform(0.0, 0.2),  # unlabelled enhancement inside the core
        "core_distinctness": rng.uniform(0.5, 1.0),  # 0: the core looks like edema; 1: as TUMOUR_CONTRAST
        "edema_tissue_share": rng.uniform(0.1, 0.3),
        "partial_volume_mm": rng.uniform(0.6, 1.0),
    }


def _box(centre_vox: np.ndarray, half_mm: float, spacing: np.ndarray, shape) -> tuple[slice, ...]:
    half = np.ceil(half_mm / spacing).astype(int)
    c = np.round(centre_vox).astype(int)
    return tuple(slice(min(max(ci - h, 0), s), max(min(ci + h + 1, s), 0)) for ci, h, s in zip(c, half, shape))


def _offsets_mm(box: tuple[slice, ...], centre_vox: np.ndarray, spacing: np.ndarray) -> np.ndarray:
    axes = [(np.arange(sl.start, sl.stop, dtype=np.float32) - c) * s for sl, c, s in zip(box, centre_vox, spacing)]
    return np.stack(np.meshgrid(*axes, indexing="ij"))


def _displace_tissue(anat: dict, p: dict) -> tuple[tuple[slice, ...], dict]:
    """Mass effect: around the main focus a voxel shows tissue that sat closer to its centre."""
    main = p["foci"][0]
    r = 1.2 * main["r_solid"]
    box = _box(main["centre_vox"], 2.0 * r, p["spacing"], anat["mask"].shape)  # beyond: under 0.1 mm
    offset = _offsets_mm(box, main["centre_vox"], p["spacing"])
    dist = np.sqrt((offset**2).sum(0))
    pull = 1.0 - p["mass_effect"] * np.exp(-((dist / r) ** 2))
    src = np.stack([c + o / s * pull for o, c, s in zip(offset, main["centre_vox"], p["spacing"])])
    tissue = {
        name: ndi.map_coordinates(anat[name], src, order=1, mode="nearest").astype(np.float32)
        for name in ("t1", "gm", "wm", "csf")
    }
    return box, tissue


def _plant_focus(
    rng: np.random.Generator, anat: dict, wm: np.ndarray, csf: np.ndarray, f: dict, edema_mm: float, spacing: np.ndarray
):
    """Compartments of one focus in its box: 0 none, 1 edema, 2 non-enhancing, 3 enhancing, 4 necrosis.

    Shapes are signed distances in mm (negative inside), deformed by smooth
    noise; the box is large enough for the farthest edema, so nothing is cut.
    """
    r = f["r_solid"]
    rough = f["roughness"] * r
    reach_max = edema_mm * 1.15 * 1.4
    extent = max(np.linalg.norm(shift) + radius for shift, radius in f["lobes"]) * f["axes"].max()
    box = _box(
        f["centre_vox"], extent + 1.1 * rough + 2.0 + reach_max + 2.0 * spacing.max(), spacing, anat["mask"].shape
    )
    box_shape = tuple(sl.stop - sl.start for sl in box)
    offset = _offsets_mm(box, f["centre_vox"], spacing)
    q = np.tensordot(f["rotation"], offset, axes=1) / f["axes"][:, None, None, None]
    sd = np.full(box_shape, np.inf, dtype=np.float32)
    for shift, radius in f["lobes"]:  # distance to the nearest of the overlapping lobes
        np.minimum(sd, np.sqrt(((q - shift[:, None, None, None]) ** 2).sum(0)) - radius, out=sd)
    sd += rough * _smooth_noise(rng, box_shape, coarse=7) + 2.0 * _smooth_noise(rng, box_shape, coarse=16)
    brain = anat["mask"][box]
    solid = (sd < 0.0) & brain
    comp = np.zeros(box_shape, dtype=np.uint8)
    comp[solid] = 2
    rim = np.maximum(f["rim_mm"] * (1.0 + 0.7 * _smooth_noise(rng, box_shape, coarse=8)), spacing.max())
    if f["necrosis"]:
        r_nec = f["necrosis_radius"]
        sd_nec = np.sqrt(((offset - f["necrosis_offset"][:, None, None, None]) ** 2).sum(0)) - r_nec
        sd_nec += 0.45 * r_nec * _smooth_noise(rng, box_shape, coarse=7)
        necrosis = solid & (sd_nec < 0.0) & (sd < -rim)
        comp[necrosis] = 4
    if f["enhancing"]:
        candidate = np.zeros(box_shape, dtype=bool)
        if f["outer_rim"]:
            candidate |= solid & (sd > -rim)
        if f["necrosis"]:
            candidate |= solid & ~necrosis & (sd_nec < rim)
        if candidate.any():  # break the rim in places
            gaps = _smooth_noise(rng, box_shape, coarse=12)
            candidate &= gaps > np.quantile(gaps[candidate], f["rim_gaps"])
        comp[candidate & (comp == 2)] = 3
    # edema reaches further along white matter than into grey matter, none into CSF
    reach = edema_mm * (0.25 + 0.9 * wm[box]) * (1.0 + 0.4 * _smooth_noise(rng, box_shape, coarse=7))
    edema = ~solid & brain & (sd < reach) & (csf[box] < 0.5)
    comp[edema] = 1
    return box, comp


def _plant_tumour(rng: np.random.Generator, anat: dict, p: dict):
    """Return the mass-effect box with its displaced tissue, and the full-size compartment map."""
    shape = anat["mask"].shape
    mbox, tissue = _displace_tissue(anat, p)
    wm, csf = np.array(anat["wm"]), np.array(anat["csf"])
    wm[mbox], csf[mbox] = tissue["wm"], tissue["csf"]
    comp = np.zeros(shape, dtype=np.uint8)
    for f in p["foci"]:
        box, focus = _plant_focus(
            rng, anat, wm, csf, f, p["edema_mm"] * (1.0 if f is p["foci"][0] else 0.6), p["spacing"]
        )
        np.maximum(comp[box], focus, out=comp[box])  # solid parts win over another focus' edema
    return mbox, tissue, comp


def _bbox(mask: np.ndarray, pad: int, shape) -> tuple[slice, ...] | None:
    """Bounding box of ``mask`` grown by ``pad`` voxels (None if it is empty)."""
    out = []
    for axis in range(mask.ndim):
        hit = np.flatnonzero(np.any(mask, axis=tuple(a for a in range(mask.ndim) if a != axis)))
        if len(hit) == 0:
            return None
        out.append(slice(max(hit[0] - pad, 0), min(hit[-1] + pad + 1, shape[axis])))
    return tuple(out)


def _lookalikes(rng: np.random.Generator, anat: dict, comp: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Unlabelled tumour look-alikes, as soft maps in [0, 1] over the full grid.

    Returns ``(hyper, vessel)``: FLAIR/T2-bright white-matter and
    periventricular hyperintensities, and gadolinium-bright vessels. Both
    stay at least a few millimetres away from the tumour.
    """
    shape, spacing = anat["mask"].shape, np.asarray(anat["spacing"])
    hyper = np.zeros(shape, dtype=np.float32)
    vessel = np.zeros(shape, dtype=np.float32)
    # periventricular caps and rims, patchy, in about 60 % of cases
    pv_box = anat["periventricular_box"]
    if rng.random() < 0.6:
        patches = 0.5 + 0.5 * _smooth_noise(rng, anat["periventricular"].shape, coarse=7)
        hyper[pv_box] = anat["periventricular"] * rng.uniform(0.5, 1.0) * np.clip(1.6 * patches, 0.0, 1.0)
    # small deep white-matter hyperintensities
    points = _candidate_centres(anat, 10.0)
    for _ in range(int(rng.integers(0, 8))):
        c = points[rng.integers(len(points))]
        radius = rng.uniform(2.0, 6.0)
        box = _box(c, radius + 2.0 * spacing.max(), spacing, shape)
        d = np.sqrt((_offsets_mm(box, c, spacing) ** 2).sum(0))
        np.maximum(hyper[box], np.clip(1.5 - d / radius, 0.0, 1.0) * rng.uniform(0.6, 1.0), out=hyper[box])
    # vessels near the surface: smooth random walks, bright after gadolinium
    surface = np.argwhere(anat["depth"] > 3.0) * DEPTH_STRIDE
    for _ in range(int(rng.integers(0, 6))):
        pos = surface[rng.integers(len(surface))].astype(float)
        direction, radius = _unit_vector(rng), rng.uniform(0.8, 1.6)
        for _ in range(int(rng.integers(20, 60))):
            direction = direction + 0.35 * _unit_vector(rng)
            direction /= np.linalg.norm(direction)
            pos = pos + direction * 1.5 / spacing
            inside = np.all((pos >= 0) & (pos < np.asarray(shape) - 1))
            if not inside or not anat["mask"][tuple(np.round(pos).astype(int))]:
                break  # the vessel leaves the brain
            box = _box(pos, radius + spacing.max(), spacing, shape)
            d = np.sqrt((_offsets_mm(box, pos, spacing) ** 2).sum(0))
            np.maximum(vessel[box], np.clip(1.0 - (d - radius) / spacing.min(), 0.0, 1.0), out=vessel[box])
    # keep them apart from the tumour so the label stays unambiguous
    tbox = _bbox(comp > 0, int(np.ceil(6.0 / spacing.min())) + 1, shape)
    if tbox is not None:
        near = ndi.binary_dilation(comp[tbox] > 0, iterations=int(np.ceil(4.0 / spacing.min())))
        hyper[tbox][near] = 0.0
        vessel[tbox][near] = 0.0
    hyper *= anat["mask"]
    vessel *= anat["mask"]
    return hyper, vessel


def _scanner(rng: np.random.Generator) -> dict:
    """Per-case acquisition differences: scale, contrast, bias, noise, blur."""
    return {
        "scale": rng.uniform(0.8, 1.25, size=4) * INTENSITY_SCALE,
        "gamma": rng.uniform(0.8, 1.25, size=4),
        "bias": rng.uniform(0.02, 0.1),
        "noise": rng.uniform(0.01, 0.05, size=4),
        "blur_mm": rng.uniform(0.0, 1.6, size=4),  # through-plane: thick-slice acquisitions
        "contrast": rng.uniform(0.9, 1.1, size=(4, 4)),  # tumour class x sequence
        "texture": rng.uniform(0.1, 0.25),
    }


def make_phantom_case(seed: int, shape: tuple[int, int, int] = BRATS_SHAPE):
    """Synthesise one phantom case.

    Args:
        seed: the case is a pure function of ``(seed, shape)``.
        shape: grid ``(x, y, z)``; the field of view is always 240x240x155 mm.

    Returns:
        ``(image, label, affine)``: int16 ``(x, y, z, 4)`` in the MSD channel
        order, uint8 ``(x, y, z)`` in the MSD label values, 4x4 affine.
    """
    case = _synthesise(seed, shape)
    return case["image"], case["label"], case["affine"]


def make_phantom_label(seed: int, shape: tuple[int, int, int] = BRATS_SHAPE) -> tuple[np.ndarray, np.ndarray, str]:
    """The label map of phantom case ``seed`` without its images (a fraction of the cost).

    The same draws as :func:`make_phantom_case`, stopped once the tumour is
    planted: the label equals that function's label for the same
    ``(seed, shape)``.

    Returns:
        ``(label, affine, grade)``: uint8 ``(x, y, z)`` in the MSD label
        values, 4x4 affine, and the planted tumour's grade, ``"high"`` or
        ``"low"`` (lower grade: no enhancing tumour).
    """
    anat = anatomy(tuple(int(s) for s in shape))
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), GENERATOR_VERSION]))
    params = _tumour_parameters(rng, anat)
    _, _, comp = _plant_tumour(rng, anat, params)
    label = np.where(comp == 4, 2, comp).astype(np.uint8)
    label[~anat["mask"]] = 0
    return label, anat["affine"].copy(), params["grade"]


def _synthesise(seed: int, shape: tuple[int, int, int]) -> dict:
    """:func:`make_phantom_case`, plus what went into it: ``params`` and the look-alike maps."""
    anat = anatomy(tuple(int(s) for s in shape))
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), GENERATOR_VERSION]))
    params = _tumour_parameters(rng, anat)
    mbox, tissue, comp = _plant_tumour(rng, anat, params)
    hyper, vessel = _lookalikes(rng, anat, comp)
    scanner = _scanner(rng)
    spacing = np.asarray(anat["spacing"])
    mask = anat["mask"]

    # soft compartment weights so tumour borders are partial-volume, not jagged
    pv_mm = params["partial_volume_mm"]
    tbox = _bbox(comp > 0, int(np.ceil(3.0 * pv_mm / spacing.min())) + 1, mask.shape)
    weights = [
        ndi.gaussian_filter((comp[tbox] == k).astype(np.float32), pv_mm / spacing, truncate=3.0) for k in (1, 2, 3, 4)
    ]
    box_shape = comp[tbox].shape
    texture = (
        1.0
        + scanner["texture"] * _smooth_noise(rng, box_shape, coarse=8)
        + 0.5 * scanner["texture"] * _smooth_noise(rng, box_shape, coarse=24)
    )
    # enhancement varies within the enhancing tumour (patchy uptake), and some uptake shows in
    # the unlabelled core: T1gd alone does not draw the border between the two
    uptake = np.clip(1.0 + params["enhancement_patchiness"] * _smooth_noise(rng, box_shape, coarse=14), 0.4, 1.6)
    faint = params["faint_enhancement"] * np.clip(_smooth_noise(rng, box_shape, coarse=10), 0.0, 1.0)
    share = params["edema_tissue_share"]
    tumour_w = np.clip(weights[0] * (1.0 - share) + sum(weights[1:]), 0.0, 1.0)
    lbox = _bbox((hyper > 0) | (vessel > 0), 0, mask.shape)
    bbox = anat["brain_box"]
    inside = anat["mask_index"]
    ijk = np.unravel_index(inside, mask.shape)
    image = np.zeros((*mask.shape, 4), dtype=np.int16)
    for ch, name in enumerate(MODALITIES):
        channel = anat["healthy"][ch].copy()
        channel[mbox] = np.where(mask[mbox], _healthy_channel(name, tissue), 0.0)
        if lbox is not None:
            hyper_v, vessel_v = LOOKALIKE_CONTRAST[name]
            h, v = hyper[lbox], vessel[lbox]
            healthy = channel[lbox]
            channel[lbox] = healthy * (1.0 - h) * (1.0 - v) + h * (1.0 - v) * hyper_v + v * vessel_v
        edema_v, core_v, enh_v, necrosis_v = (c * s for c, s in zip(TUMOUR_CONTRAST[name], scanner["contrast"][:, ch]))
        # the core (and the enhancing tumour off T1gd) drawn towards what edema looks like
        seen_edema = (1.0 - share) * edema_v + share * anat["healthy_wm"][ch]
        d = params["core_distinctness"]
        core_v, enh_v = (seen_edema + d * (v - seen_edema) for v in (core_v, enh_v))
        if name == "T1gd":  # enhancement: how far above the core it rises, patchy
            enh_v = (
                core_v
                + params["enhancement"] * (TUMOUR_CONTRAST["T1gd"][2] * scanner["contrast"][2, ch] - core_v) * uptake
            )
            core_v = core_v + faint * (enh_v - core_v)
        tumour_v = (
            weights[0] * ((1.0 - share) * edema_v) + weights[1] * core_v + weights[2] * enh_v + weights[3] * necrosis_v
        )
        channel[tbox] = np.where(mask[tbox], channel[tbox] * (1.0 - tumour_w) + tumour_v * texture, 0.0)
        if scanner["blur_mm"][ch] > 0.2 * spacing[2]:
            channel[bbox] = ndi.gaussian_filter1d(channel[bbox], scanner["blur_mm"][ch] / spacing[2], axis=2)
        signal = np.power(np.maximum(channel.ravel()[inside], 0.0), scanner["gamma"][ch])
        values_out = signal * (scanner["scale"][ch] * _bias_field(rng, ijk, mask.shape, scanner["bias"]))
        noise_sd = scanner["noise"][ch] * scanner["scale"][ch]
        n1 = rng.standard_normal(len(inside), dtype=np.float32) * noise_sd
        n2 = rng.standard_normal(len(inside), dtype=np.float32) * noise_sd
        values_out = np.sqrt((values_out + n1) ** 2 + n2**2)  # Rician magnitude noise
        flat = np.zeros(mask.size, dtype=np.int16)
        flat[inside] = np.clip(np.rint(values_out), 0, np.iinfo(np.int16).max)
        image[..., ch] = flat.reshape(mask.shape)

    label = np.where(comp == 4, 2, comp).astype(np.uint8)
    label[~mask] = 0
    return {
        "image": image,
        "label": label,
        "affine": anat["affine"].copy(),
        "params": params,
        "hyperintensity": hyper,
        "vessel": vessel,
    }


def _healthy_channel(name: str, maps: dict) -> np.ndarray:
    contrast = TISSUE_CONTRAST[name]
    if contrast is None:
        return np.asarray(maps["t1"], dtype=np.float32)
    gm_v, wm_v, csf_v = contrast
    return (maps["gm"] * gm_v + maps["wm"] * wm_v + maps["csf"] * csf_v).astype(np.float32)


def _bias_field(
    rng: np.random.Generator, ijk: tuple[np.ndarray, ...], shape: tuple[int, ...], strength: float = 0.07
) -> np.ndarray:
    """A smooth multiplicative field (separable, about +-2 ``strength``) at the voxels ``ijk``."""
    field = np.ones(len(ijk[0]), dtype=np.float32)
    for idx, n in zip(ijk, shape):
        t = np.linspace(-1.0, 1.0, n, dtype=np.float32)
        a, b = rng.uniform(-strength, strength, size=2)
        field *= np.exp(a * t + b * (t**2 - 1.0 / 3.0)).astype(np.float32)[idx]
    return field


# ----------------------------------------------------------------------------
# A whole dataset in the MSD layout
# ----------------------------------------------------------------------------


def _case_ids(n_train: int, n_test: int) -> tuple[list[str], list[str]]:
    ids = [f"PHANTOM_{i:03d}" for i in range(1, n_train + n_test + 1)]
    return ids[:n_train], ids[n_train:]


def _case_seed(seed: int, index: int) -> int:
    return int(np.random.SeedSequence([int(seed), int(index)]).generate_state(1)[0])


def case_seed(dataset_seed: int, index: int) -> int:
    """The seed of case ``index`` (0-based: ``PHANTOM_001`` is 0) of a phantom dataset made with ``dataset_seed``."""
    return _case_seed(dataset_seed, index)


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
    check_writable(out_dir, "the phantom")
    with folder_lock(out_dir, TOOL):  # one writer per folder
        return _make_locked(out_dir, n_train, n_test, shape, seed, overwrite, workers, progress)


def _make_locked(
    out_dir: Path,
    n_train: int,
    n_test: int,
    shape: tuple[int, int, int],
    seed: int,
    overwrite: bool,
    workers: int | None,
    progress: bool,
) -> Path:
    """:func:`make_phantom_dataset` with ``out_dir`` locked."""
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
            "training": [{"image": f"./imagesTr/{c}.nii.gz", "label": f"./labelsTr/{c}.nii.gz"} for c in train_ids],
            "test": [f"./imagesTs/{c}.nii.gz" for c in test_ids],
        }
        (partial / "dataset.json").write_text(json.dumps(dataset, indent=2))
        info = dict(params, seconds=round(elapsed, 2), cases=records)
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

    from .labels import CLASS_NAMES
    from .statistics import label_statistics

    marker = read_marker(folder)
    if marker is None or not isinstance(marker.get("cases"), list):
        raise FileNotFoundError(f"expected a phantom made by utils.phantom in {folder}; found no {MARKER_FILE}")
    rows = {
        c["case_id"]: [c["volume_ml"][LABEL_NAMES[k]] for k in (1, 2, 3)] for c in marker["cases"] if c.get("labelled")
    }
    return label_statistics(pd.DataFrame.from_dict(rows, orient="index", columns=list(CLASS_NAMES)))


def ensure_phantom(mode: str | None = None, progress: bool = True) -> Path:
    """Build (once) and return the phantom dataset the course mode asks for."""
    from ..config import get_settings, phantom_dir

    s = get_settings(mode)
    return make_phantom_dataset(
        phantom_dir(s.mode), s.phantom_train, s.phantom_test, s.phantom_shape, progress=progress
    )


def main(argv: list[str] | None = None) -> int:
    """Command line entry point (``python -m utils.data.phantom``)."""
    parser = argparse.ArgumentParser(
        prog="python -m utils.data.phantom",
        description="Write a phantom brain-tumour dataset in the MSD Task01 layout.",
    )
    parser.add_argument("--out", required=True, type=Path, help="target folder")
    parser.add_argument("--train", type=int, default=16, help="labelled cases (default 16, as the cpu mode)")
    parser.add_argument("--test", type=int, default=2, help="unlabelled cases (default 2)")
    parser.add_argument(
        "--shape",
        type=int,
        nargs=3,
        default=list(BRATS_SHAPE),
        metavar=("X", "Y", "Z"),
        help="grid size (default 240 240 155, the BraTS grid)",
    )
    parser.add_argument("--tiny", action="store_true", help=f"the CI grid {TINY_SHAPE}")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="write into a non-empty folder that is not a phantom (its files are kept)",
    )
    args = parser.parse_args(argv)
    shape = TINY_SHAPE if args.tiny else tuple(args.shape)
    start = time.perf_counter()
    try:
        out = make_phantom_dataset(args.out, args.train, args.test, shape, args.seed, args.overwrite, args.workers)
    except (FileExistsError, ValueError, OSError) as err:  # refusals (UnsafeWriteError is a ValueError), full disk
        print(f"error: {one_line(err)}", file=sys.stderr)
        return 2
    print(f"phantom dataset ready in {out} ({time.perf_counter() - start:.1f} s)")
    print("label statistics of the training cases (volumes in mL):")
    print(phantom_label_statistics(out).to_string())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
