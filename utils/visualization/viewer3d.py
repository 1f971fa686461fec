"""An interactive 3-D view of a case: NiiVue (WebGL) through its Jupyter widget ipyniivue.

One description of the view serves the lessons and the HTML report
(:mod:`utils.visualization.report`): :func:`case_layers` turns arrays into layers (gzipped
NIfTI bytes on the case's affine), :func:`build_niivue` puts them in an
``ipyniivue.NiiVue`` widget - multiplanar slices plus a 3-D render, labels as
a discrete lookup table in the course colours (edema red, non-enhancing green,
enhancing blue). In a notebook :func:`show_3d` adds a sequence menu, one
on/off switch and opacity slider per overlay, and a colour legend.

Where widgets cannot render (nbconvert, nbval, a static HTML export) the cell
shows a one-line note instead of the viewer, and no traceback.
"""

from __future__ import annotations

import gzip
from dataclasses import dataclass

import ipywidgets
import nibabel as nib
import numpy as np

from ..data.labels import CLASS_COLORS, CLASS_NAMES, MODALITIES
from .figures import display_range, tumour_center

LABEL_COLORS = tuple(tuple(int(round(255 * c)) for c in rgb) for rgb in CLASS_COLORS)
"""Course colours as 0-255 RGB: edema red, non-enhancing green, enhancing blue."""

ERROR_NAMES = ("false positive", "false negative")
ERROR_COLORS = ((255, 140, 0), (0, 230, 230))
"""Whole-tumour errors: false positives orange, false negatives cyan (as in lesson 06's figure)."""

NO_WIDGETS_NOTE = (
    "3-D viewer (NiiVue): needs a live Jupyter kernel with widgets (JupyterLab, VS Code, Colab); "
    "the figures above show the same volumes."
)


@dataclass
class Layer:
    """One volume of the viewer.

    Attributes:
        name: shown in the controls, e.g. ``"FLAIR"`` or ``"prediction"``.
        kind: ``"image"`` (grey background), ``"label"`` (course colours) or ``"errors"``.
        nifti_gz: the volume as gzipped NIfTI-1 bytes, on the case's affine.
        opacity: initial opacity in [0, 1].
    """

    name: str
    kind: str
    nifti_gz: bytes
    opacity: float = 1.0

    @property
    def filename(self) -> str:
        """Name with a ``.nii.gz`` suffix (NiiVue reads the format from it)."""
        return "".join(c if c.isalnum() else "_" for c in self.name) + ".nii.gz"


def nifti_gz(volume: np.ndarray, affine: np.ndarray, slope: float = 1.0, inter: float = 0.0) -> bytes:
    """Gzipped NIfTI-1 bytes of a 3-D array (reproducible: no timestamp in the gzip header).

    Args:
        volume: ``(x, y, z)`` array, stored with its dtype.
        affine: 4x4 voxel-to-world matrix.
        slope, inter: NIfTI intensity scaling (stored value * slope + inter).
    """
    volume = np.asarray(volume)
    if volume.ndim != 3:
        raise ValueError(f"expected a 3-D volume (x, y, z); found shape {volume.shape}")
    affine = np.asarray(affine, dtype=np.float64)
    if affine.shape != (4, 4):
        raise ValueError(f"expected a 4x4 affine; found shape {affine.shape}")
    img = nib.Nifti1Image(volume, affine)
    img.header.set_xyzt_units("mm")
    img.header.set_slope_inter(slope, inter)
    return gzip.compress(img.to_bytes(), compresslevel=6, mtime=0)


def image_layer(volume: np.ndarray, affine: np.ndarray, name: str) -> Layer:
    """A grey-scale layer stored as uint8 over the display window, the scaling kept in the header.

    The window is the 0.5-99.5 percentile range of the nonzero voxels: 256
    grey levels, enough to view and 4 times smaller than float32. Values
    read back (``nibabel``'s ``get_fdata``) are within half a grey step of the
    input inside the window and clipped to it outside.
    """
    lo, hi = display_range(np.asarray(volume, dtype=np.float32))
    lo = min(lo, 0.0) if np.min(volume) >= 0 else lo  # keep the background at 0 for the 3-D render
    slope = (hi - lo) / 255.0
    stored = np.clip(np.rint((np.asarray(volume, dtype=np.float32) - lo) / slope), 0, 255).astype(np.uint8)
    return Layer(name, "image", nifti_gz(stored, affine, slope, lo))


def label_layer(label: np.ndarray, affine: np.ndarray, name: str, kind: str = "label", opacity: float = 0.6) -> Layer:
    """A label layer (values 0-3, or 0-2 for ``kind="errors"``) stored as uint8."""
    label = np.asarray(label)
    top = 3 if kind == "label" else 2
    if label.ndim != 3 or label.size and (label.min() < 0 or label.max() > top or np.any(label != np.round(label))):
        raise ValueError(
            f"{name}: expected a 3-D map of integers 0..{top}; found shape {label.shape}, "
            f"values {np.unique(label)[:10].tolist()}"
        )
    return Layer(name, kind, nifti_gz(label.astype(np.uint8), affine), opacity)


def error_map(truth: np.ndarray, prediction: np.ndarray) -> np.ndarray:
    """Whole-tumour errors: 1 where predicted tumour is background (false positive),
    2 where tumour was missed (false negative), 0 elsewhere."""
    truth, prediction = np.asarray(truth), np.asarray(prediction)
    if truth.shape != prediction.shape:
        raise ValueError(f"truth and prediction shapes differ: {truth.shape} and {prediction.shape}")
    errors = np.zeros(truth.shape, np.uint8)
    errors[(prediction > 0) & (truth == 0)] = 1
    errors[(prediction == 0) & (truth > 0)] = 2
    return errors


def case_layers(
    image: np.ndarray,
    affine: np.ndarray,
    overlays: dict[str, np.ndarray] | None = None,
    errors: tuple[np.ndarray, np.ndarray] | None = None,
    sequences: tuple[str, ...] | None = None,
) -> list[Layer]:
    """The layers of a case: the four sequences, then label overlays, then an error overlay.

    Args:
        image: ``(x, y, z, 4)`` in the MSD channel order (or ``(x, y, z)``, one sequence).
        affine: 4x4 voxel-to-world matrix of the case.
        overlays: label maps by name, e.g. ``{"ground truth": label, "prediction": pred}``.
        errors: ``(truth, prediction)`` to add their whole-tumour error map.
        sequences: the sequences to keep, e.g. ``("FLAIR", "T1gd")`` (default: all).

    Returns:
        The layers, images first.
    """
    image = np.asarray(image)
    channels = image[..., None] if image.ndim == 3 else image
    if channels.ndim != 4:
        raise ValueError(f"expected an image (x, y, z, C) or (x, y, z); found shape {image.shape}")
    names = MODALITIES if channels.shape[-1] == len(MODALITIES) else [f"channel {c}" for c in range(channels.shape[-1])]
    keep = list(names) if sequences is None else list(sequences)
    unknown = [n for n in keep if n not in names]
    if unknown or not keep:
        raise ValueError(f"sequences must be some of {list(names)}; found {list(keep)}")
    layers = [image_layer(channels[..., c], affine, names[c]) for c in range(channels.shape[-1]) if names[c] in keep]
    for name, label in (overlays or {}).items():
        if np.shape(label) != channels.shape[:3]:
            raise ValueError(f"{name}: shape {np.shape(label)} does not match the image {channels.shape[:3]}")
        layers.append(label_layer(label, affine, name))
    if errors is not None:
        layers.append(label_layer(error_map(*errors), affine, "errors", kind="errors", opacity=0.8))
    return layers


def lookup_table(kind: str) -> dict:
    """NiiVue label colour table (R, G, B, A, I, labels) for ``"label"`` or ``"errors"`` layers."""
    colours, names = (LABEL_COLORS, CLASS_NAMES) if kind == "label" else (ERROR_COLORS, ERROR_NAMES)
    rgb = [(0, 0, 0), *colours]
    return {
        "R": [c[0] for c in rgb],
        "G": [c[1] for c in rgb],
        "B": [c[2] for c in rgb],
        "A": [0] + [255] * len(colours),
        "I": list(range(len(rgb))),
        "labels": ["background", *names],
    }


def legend_html(kinds=("label",)) -> str:
    """Coloured squares with the class names, as a small HTML snippet."""
    items = []
    for kind in kinds:
        colours, names = (LABEL_COLORS, CLASS_NAMES) if kind == "label" else (ERROR_COLORS, ERROR_NAMES)
        items += [
            f'<span style="display:inline-block;width:0.9em;height:0.9em;margin:0 0.3em 0 0.9em;'
            f'background:rgb{tuple(c)}"></span>{n}'
            for c, n in zip(colours, names)
        ]
    return '<div class="legend">' + "".join(items) + "</div>"


def view_angles(focus, shape, affine) -> dict:
    """Crosshair and camera that show the voxel ``focus`` in the slices and in the 3-D render.

    NiiVue works in fractions (0-1) of the volume's world bounding box (RAS);
    its camera at azimuth ``a`` looks from the direction ``(sin a, cos a)``.
    The camera is put on the side of ``focus``, a little above it.

    Returns:
        ``{"crosshair_pos": [fx, fy, fz], "render_azimuth": deg, "render_elevation": deg}``.
    """
    affine = np.asarray(affine, dtype=np.float64)
    corners = (
        np.array([[i, j, k, 1.0] for i in (0, shape[0] - 1) for j in (0, shape[1] - 1) for k in (0, shape[2] - 1)])
        @ affine.T
    )
    lo, hi = corners[:, :3].min(axis=0), corners[:, :3].max(axis=0)
    world = affine @ np.array([*focus, 1.0])
    frac = np.clip((world[:3] - lo) / np.where(hi > lo, hi - lo, 1.0), 0.0, 1.0)
    side = (frac[:2] - 0.5) * (hi - lo)[:2]
    if np.hypot(*side) < 1.0:  # focus at the centre: NiiVue's default view
        return {"crosshair_pos": frac.tolist(), "render_azimuth": 110.0, "render_elevation": 10.0}
    azimuth = float(np.degrees(np.arctan2(side[0], side[1]))) % 360.0
    return {"crosshair_pos": frac.tolist(), "render_azimuth": azimuth, "render_elevation": 15.0}


def focus_voxel(overlays: dict[str, np.ndarray] | None, shape) -> tuple[int, int, int]:
    """Centre of the tumour in the first overlay that has one (else of the volume)."""
    for label in (overlays or {}).values():
        if np.any(np.asarray(label) > 0):
            return tumour_center(label, shape)
    return tumour_center(None, shape)


def build_niivue(layers: list[Layer], background: int = 0, height: int = 480, focus=None, shape=None, affine=None):
    """An ``ipyniivue.NiiVue`` widget: multiplanar slices and a 3-D render of ``layers``.

    Args:
        layers: from :func:`case_layers`; one image layer is the background,
            every label/error layer is an overlay.
        background: index (among the image layers) of the grey background.
        height: widget height in pixels.
        focus, shape, affine: a voxel to centre the view on (see :func:`view_angles`),
            the grid shape and the affine; without them NiiVue's default view.

    Returns:
        ``(widget, volumes)``: the widget and its ``ipyniivue.Volume`` s, one per layer
        in order; the image layers not shown have opacity 0.
    """
    from ipyniivue import NiiVue, ShowRender, SliceType, Volume  # lazy: the widget stack loads only when shown

    nv = NiiVue(
        height=height,
        slice_type=SliceType.MULTIPLANAR,
        multiplanar_show_render=ShowRender.ALWAYS,
        back_color=(0.0, 0.0, 0.0, 1.0),
        crosshair_color=(1.0, 1.0, 0.0, 0.7),  # yellow: no label colour
        is_colorbar=False,
        show_legend=False,
        crosshair_width=0.5,
    )
    volumes = []
    for layer in layers:
        vol = Volume(
            data=layer.nifti_gz, name=layer.filename, opacity=layer.opacity, colormap="gray", colorbar_visible=False
        )
        if layer.kind != "image":
            vol.set_colormap_label(lookup_table(layer.kind))
        volumes.append(vol)
    # Every sequence is loaded; the one shown has opacity 1, the others 0. (Switching by
    # replacing the first volume leaves ipyniivue 2.4 with a stale NiiVue background.)
    for k, vol in enumerate(v for v, layer in zip(volumes, layers) if layer.kind == "image"):
        vol.opacity = 1.0 if k == background else 0.0
    nv.load_volumes(volumes)
    if focus is not None:
        for name, value in view_angles(focus, shape, affine).items():
            setattr(nv.scene, name, value)
    return nv, volumes


def show_3d(
    image: np.ndarray,
    affine: np.ndarray,
    overlays: dict[str, np.ndarray] | None = None,
    errors: tuple[np.ndarray, np.ndarray] | None = None,
    height: int = 480,
):
    """Show a case in NiiVue with a sequence menu, overlay switches, opacity sliders and a legend.

    Args:
        image: ``(x, y, z, 4)``. affine: the case's 4x4 affine.
        overlays: label maps by name (course colours).
        errors: ``(truth, prediction)``: add the whole-tumour false positives / negatives.
        height: viewer height in pixels.

    Returns:
        The widget box, or None when ipyniivue is missing (a one-line note is printed).
        Frontends that cannot render widgets show :data:`NO_WIDGETS_NOTE`.
    """
    widgets = ipywidgets
    try:
        import ipyniivue  # noqa: F401
    except ImportError:
        print("3-D viewer skipped: ipyniivue is not installed (pip install ipyniivue).")
        return None
    layers = case_layers(image, affine, overlays, errors)
    nv, volumes = build_niivue(
        layers, height=height, focus=focus_voxel(overlays, image.shape[:3]), shape=image.shape[:3], affine=affine
    )
    images = [(layer.name, v) for layer, v in zip(layers, volumes) if layer.kind == "image"]
    sequence = widgets.Dropdown(
        options=[(name, i) for i, (name, _) in enumerate(images)], value=0, description="sequence"
    )

    def on_sequence(change):
        for k, (_, vol) in enumerate(images):
            vol.opacity = 1.0 if k == change["new"] else 0.0

    sequence.observe(on_sequence, names="value")
    rows = [sequence]
    for layer, vol in zip(layers, volumes):
        if layer.kind == "image":
            continue
        shown = widgets.Checkbox(value=True, description=layer.name, indent=False, layout=widgets.Layout(width="11em"))
        opacity = widgets.FloatSlider(
            value=layer.opacity, min=0.0, max=1.0, step=0.05, description="opacity", continuous_update=True
        )

        def update(_change, vol=vol, shown=shown, opacity=opacity):
            vol.opacity = opacity.value if shown.value else 0.0

        shown.observe(update, names="value")
        opacity.observe(update, names="value")
        rows.append(widgets.HBox([shown, opacity]))
    kinds = [k for k in ("label", "errors") if any(layer.kind == k for layer in layers)]
    rows.append(widgets.HTML(legend_html(kinds)))
    return ViewerBox(children=[widgets.VBox(rows), nv])


class ViewerBox(ipywidgets.VBox):
    """A VBox whose plain-text form (what nbconvert, nbval and static exports keep) is a one-line note."""

    def _repr_mimebundle_(self, **kwargs):
        bundle = super()._repr_mimebundle_(**kwargs)
        if isinstance(bundle, dict):
            bundle["text/plain"] = NO_WIDGETS_NOTE
        return bundle
