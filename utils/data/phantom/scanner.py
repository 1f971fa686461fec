"""The phantom's images: the four sequences' contrast of tissue, tumour and look-alikes, then per-case scanner
differences (scale, gamma, bias field, through-plane blur, Rician noise); :func:`make_phantom_case`.

Two scanner models draw those differences. ``"training"`` (:data:`SCANNER_RANGES`) is the phantom's own, the one
every course model trains on. ``"shifted"`` (:data:`SHIFTED_RANGES`) draws every acquisition setting outside the
training range (contrast of the tumour classes, gamma, intensity scale, bias field, noise, through-plane
resolution), through the same code path: a test set from a scanner the model has never seen, to measure how
robust it is (issue 26). The anatomy and the tumours come from the same generator in both.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from ...config import BRATS_SHAPE
from ..labels import MODALITIES
from .template import anatomy, healthy_channel, mask_box, smooth_noise
from .tumour import GENERATOR_VERSION, lookalikes, plant_tumour, tumour_parameters

INTENSITY_SCALE = 1000.0
"""White matter on T1 sits near this value before the per-case scale."""
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


SCANNERS = ("training", "shifted")
"""The scanner models a phantom can be drawn with (:func:`make_phantom_case`)."""
SCANNER_RANGES = {
    # setting: (low, high), drawn uniformly per case; the shape of each draw is SCANNER_SIZES'
    "scale": (0.8, 1.25),  # intensity scale per sequence (x INTENSITY_SCALE)
    "gamma": (0.8, 1.25),  # gamma per sequence: the contrast between tissues
    "bias": (0.02, 0.1),  # bias field strength (about +-2x this, smooth, per axis)
    "noise": (0.01, 0.05),  # Rician noise sd per sequence, as a share of the scale
    "blur_mm": (0.0, 1.6),  # through-plane blur sd (mm) per sequence: thick-slice acquisitions
    "contrast": (0.9, 1.1),  # multiplier of each tumour class's signal on each sequence
}
"""The training phantom's scanner model: the range each acquisition setting is drawn from."""
SCANNER_SIZES = {"scale": 4, "gamma": 4, "bias": None, "noise": 4, "blur_mm": 4, "contrast": (4, 4)}
TEXTURE_RANGE = (0.1, 0.25)
"""Tumour texture amplitude: the tumour's, not the scanner's; the same in both scanner models."""
SHIFTED_RANGES = {
    # setting: intervals, each value drawn from one of them (chosen at random) and outside SCANNER_RANGES
    "scale": ((0.5, 0.7), (1.4, 2.0)),
    "gamma": ((0.6, 0.72), (1.4, 1.65)),
    "bias": ((0.15, 0.25),),
    "noise": ((0.07, 0.1),),
    "blur_mm": ((2.2, 3.2),),  # FWHM 5 to 7.5 mm: a 2-D clinical protocol's slices
    "contrast": ((0.75, 0.85), (1.15, 1.25)),
}
"""The shifted scanner model: every setting outside the training range, on both sides where there are two."""


def _scanner(rng: np.random.Generator, scanner: str = "training") -> dict:
    """Per-case acquisition differences: scale, contrast, bias, noise, blur (and the tumour's texture)."""
    if scanner == "training":  # draws in this order: the phantom's cases are the same as before the shifted model
        out = {k: rng.uniform(*SCANNER_RANGES[k], size=SCANNER_SIZES[k]) for k in SCANNER_RANGES}
    elif scanner == "shifted":
        out = {k: _draw_outside(rng, SHIFTED_RANGES[k], SCANNER_SIZES[k]) for k in SHIFTED_RANGES}
    else:
        raise ValueError(f"scanner must be one of {', '.join(SCANNERS)}; found {scanner!r}")
    out["scale"] = out["scale"] * INTENSITY_SCALE
    out["texture"] = rng.uniform(*TEXTURE_RANGE)
    return out


def _draw_outside(rng: np.random.Generator, intervals, size):
    """Uniform draws, each from one of ``intervals`` chosen at random."""
    bounds = np.asarray(intervals, dtype=float)
    pick = rng.integers(len(bounds), size=size)
    value = rng.uniform(bounds[pick, 0], bounds[pick, 1])
    return float(value) if size is None else value


def make_phantom_case(seed: int, shape: tuple[int, int, int] = BRATS_SHAPE, scanner: str = "training"):
    """Synthesise one phantom case.

    Args:
        seed: the case is a pure function of ``(seed, shape, scanner)``.
        shape: grid ``(x, y, z)``; the field of view is always 240x240x155 mm.
        scanner: ``"training"`` (the phantom's scanner model) or ``"shifted"`` (every acquisition setting
            outside the training ranges: :data:`SHIFTED_RANGES`).

    Returns:
        ``(image, label, affine)``: int16 ``(x, y, z, 4)`` in the MSD channel
        order, uint8 ``(x, y, z)`` in the MSD label values, 4x4 affine.
    """
    case = _synthesise(seed, shape, scanner)
    return case["image"], case["label"], case["affine"]


def _synthesise(seed: int, shape: tuple[int, int, int], scanner: str = "training") -> dict:
    """:func:`make_phantom_case`, plus what went into it: ``params`` and the look-alike maps."""
    anat = anatomy(tuple(int(s) for s in shape))
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), GENERATOR_VERSION]))
    params = tumour_parameters(rng, anat)
    mbox, tissue, comp = plant_tumour(rng, anat, params)
    hyper, vessel = lookalikes(rng, anat, comp)
    scanner = _scanner(rng, scanner)
    spacing = np.asarray(anat["spacing"])
    mask = anat["mask"]

    # soft compartment weights so tumour borders are partial-volume, not jagged
    pv_mm = params["partial_volume_mm"]
    tbox = mask_box(comp > 0, int(np.ceil(3.0 * pv_mm / spacing.min())) + 1, mask.shape)
    weights = [
        ndi.gaussian_filter((comp[tbox] == k).astype(np.float32), pv_mm / spacing, truncate=3.0) for k in (1, 2, 3, 4)
    ]
    box_shape = comp[tbox].shape
    texture = (
        1.0
        + scanner["texture"] * smooth_noise(rng, box_shape, coarse=8)
        + 0.5 * scanner["texture"] * smooth_noise(rng, box_shape, coarse=24)
    )
    # enhancement varies within the enhancing tumour (patchy uptake), and some uptake shows in
    # the unlabelled core: T1gd alone does not draw the border between the two
    uptake = np.clip(1.0 + params["enhancement_patchiness"] * smooth_noise(rng, box_shape, coarse=14), 0.4, 1.6)
    faint = params["faint_enhancement"] * np.clip(smooth_noise(rng, box_shape, coarse=10), 0.0, 1.0)
    share = params["edema_tissue_share"]
    tumour_w = np.clip(weights[0] * (1.0 - share) + sum(weights[1:]), 0.0, 1.0)
    lbox = mask_box((hyper > 0) | (vessel > 0), 0, mask.shape)
    bbox = anat["brain_box"]
    inside = anat["mask_index"]
    ijk = np.unravel_index(inside, mask.shape)
    image = np.zeros((*mask.shape, 4), dtype=np.int16)
    for ch, name in enumerate(MODALITIES):
        channel = anat["healthy"][ch].copy()
        channel[mbox] = np.where(mask[mbox], healthy_channel(name, tissue), 0.0)
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
