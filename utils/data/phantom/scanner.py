"""The phantom's images: the four sequences' contrast of tissue, tumour and look-alikes, then per-case scanner
differences (scale, gamma, bias field, through-plane blur, Rician noise); :func:`make_phantom_case`.
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


def _synthesise(seed: int, shape: tuple[int, int, int]) -> dict:
    """:func:`make_phantom_case`, plus what went into it: ``params`` and the look-alike maps."""
    anat = anatomy(tuple(int(s) for s in shape))
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), GENERATOR_VERSION]))
    params = tumour_parameters(rng, anat)
    mbox, tissue, comp = plant_tumour(rng, anat, params)
    hyper, vessel = lookalikes(rng, anat, comp)
    scanner = _scanner(rng)
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
