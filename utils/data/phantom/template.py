"""The phantom's healthy anatomy: the MNI ICBM152 2009a template (shipped with nilearn) resampled to a phantom grid,
its healthy signal per sequence, and the smooth-noise and box helpers the other phantom modules draw with.
"""

from __future__ import annotations

import importlib.util
from functools import lru_cache
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

from ...config import BRATS_SHAPE
from ..datasets import load_nifti
from ..labels import MODALITIES

FOV_MM = (240.0, 240.0, 155.0)
"""Field of view of every phantom grid: the BraTS grid at 1 mm."""

# Relative intensity of each tissue (grey matter, white matter, CSF) per sequence
# (the tumour classes' are scanner.TUMOUR_CONTRAST), in the
# MSD channel order FLAIR, T1w, T1gd, T2w. T1w and T1gd take their healthy
# tissue from the MNI T1 template itself (None below).
TISSUE_CONTRAST = {
    "FLAIR": (0.70, 0.58, 0.08),
    "T1w": None,
    "T1gd": None,
    "T2w": (0.62, 0.42, 1.00),
}


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
    out["healthy"] = np.stack([healthy_channel(name, out) for name in MODALITIES])
    out["healthy_wm"] = np.median(out["healthy"][:, out["wm"] > 0.9], axis=1).astype(np.float32)
    out["mask_index"] = np.flatnonzero(brain_mask)
    out["brain_box"] = mask_box(brain_mask, 2, shape)
    pv = _periventricular(out, coarse, spacing)
    out["periventricular_box"] = mask_box(pv > 0.02, 0, shape)
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


def smooth_noise(rng: np.random.Generator, shape: tuple[int, ...], coarse: int = 5) -> np.ndarray:
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


def mask_box(mask: np.ndarray, pad: int, shape) -> tuple[slice, ...] | None:
    """Bounding box of ``mask`` grown by ``pad`` voxels (None if it is empty)."""
    out = []
    for axis in range(mask.ndim):
        hit = np.flatnonzero(np.any(mask, axis=tuple(a for a in range(mask.ndim) if a != axis)))
        if len(hit) == 0:
            return None
        out.append(slice(max(hit[0] - pad, 0), min(hit[-1] + pad + 1, shape[axis])))
    return tuple(out)


def healthy_channel(name: str, maps: dict) -> np.ndarray:
    contrast = TISSUE_CONTRAST[name]
    if contrast is None:
        return np.asarray(maps["t1"], dtype=np.float32)
    gm_v, wm_v, csf_v = contrast
    return (maps["gm"] * gm_v + maps["wm"] * wm_v + maps["csf"] * csf_v).astype(np.float32)
