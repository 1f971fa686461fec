"""The phantom's glioma: its parameters drawn from a case seed, its foci planted with mass effect, and the
unlabelled look-alikes (white-matter hyperintensities, vessels); :func:`make_phantom_label` stops there.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from ...config import BRATS_SHAPE
from .template import DEPTH_STRIDE, anatomy, mask_box, smooth_noise

GENERATOR_VERSION = 4


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


def tumour_parameters(rng: np.random.Generator, anat: dict) -> dict:
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
    sd += rough * smooth_noise(rng, box_shape, coarse=7) + 2.0 * smooth_noise(rng, box_shape, coarse=16)
    brain = anat["mask"][box]
    solid = (sd < 0.0) & brain
    comp = np.zeros(box_shape, dtype=np.uint8)
    comp[solid] = 2
    rim = np.maximum(f["rim_mm"] * (1.0 + 0.7 * smooth_noise(rng, box_shape, coarse=8)), spacing.max())
    if f["necrosis"]:
        r_nec = f["necrosis_radius"]
        sd_nec = np.sqrt(((offset - f["necrosis_offset"][:, None, None, None]) ** 2).sum(0)) - r_nec
        sd_nec += 0.45 * r_nec * smooth_noise(rng, box_shape, coarse=7)
        necrosis = solid & (sd_nec < 0.0) & (sd < -rim)
        comp[necrosis] = 4
    if f["enhancing"]:
        candidate = np.zeros(box_shape, dtype=bool)
        if f["outer_rim"]:
            candidate |= solid & (sd > -rim)
        if f["necrosis"]:
            candidate |= solid & ~necrosis & (sd_nec < rim)
        if candidate.any():  # break the rim in places
            gaps = smooth_noise(rng, box_shape, coarse=12)
            candidate &= gaps > np.quantile(gaps[candidate], f["rim_gaps"])
        comp[candidate & (comp == 2)] = 3
    # edema reaches further along white matter than into grey matter, none into CSF
    reach = edema_mm * (0.25 + 0.9 * wm[box]) * (1.0 + 0.4 * smooth_noise(rng, box_shape, coarse=7))
    edema = ~solid & brain & (sd < reach) & (csf[box] < 0.5)
    comp[edema] = 1
    return box, comp


def plant_tumour(rng: np.random.Generator, anat: dict, p: dict):
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


def lookalikes(rng: np.random.Generator, anat: dict, comp: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
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
        patches = 0.5 + 0.5 * smooth_noise(rng, anat["periventricular"].shape, coarse=7)
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
    tbox = mask_box(comp > 0, int(np.ceil(6.0 / spacing.min())) + 1, shape)
    if tbox is not None:
        near = ndi.binary_dilation(comp[tbox] > 0, iterations=int(np.ceil(4.0 / spacing.min())))
        hyper[tbox][near] = 0.0
        vessel[tbox][near] = 0.0
    hyper *= anat["mask"]
    vessel *= anat["mask"]
    return hyper, vessel


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
    params = tumour_parameters(rng, anat)
    _, _, comp = plant_tumour(rng, anat, params)
    label = np.where(comp == 4, 2, comp).astype(np.uint8)
    label[~anat["mask"]] = 0
    return label, anat["affine"].copy(), params["grade"]
