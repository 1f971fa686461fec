"""An interactive 3-D view of a case: NiiVue (WebGL) through its Jupyter widget ipyniivue.

One description of the view serves the lessons and the HTML report
(:mod:`utils.visualization.report`): :func:`case_layers` turns arrays into layers (gzipped
NIfTI bytes on the case's affine), :func:`build_niivue` puts them in an
``ipyniivue.NiiVue`` widget - a 2x2 grid of the three planes and a 3-D render,
labels as a discrete lookup table in the course colours (edema red,
non-enhancing green, enhancing blue). In a notebook :func:`show_3d` adds a
sequence menu, one on/off switch and opacity slider per overlay, a legend that
says what is shown, and a loading line.

The default view, as a radiologist reads a result: the segmentation filled
(half transparent) over FLAIR, the ground truth as a coloured outline on top,
the whole-tumour error map off until asked for. Only the volumes shown at the
start are loaded before the first frame; another sequence or the error map is
loaded when it is asked for (in software WebGL each volume takes seconds, and
loading them all in the background would keep the page busy).

Where widgets cannot render (nbconvert's HTML, GitHub, a course site) the cell
shows a static picture of the same view instead - the three planes through the
tumour with the label maps and a legend - and a one-line note under it
(:class:`ViewerBox`: one display bundle, each front end picks what it renders).
"""

from __future__ import annotations

import gzip
from dataclasses import dataclass

import ipywidgets
import nibabel as nib
import numpy as np

from ..data.labels import CLASS_NAMES, MODALITIES, palette
from .figures import ERROR_NAMES, display_range, figure_png, three_planes, tumour_center
from .static import NO_WIDGETS_NOTE, ViewerBox


def rgb255(colours) -> tuple[tuple[int, int, int], ...]:
    """RGB colours in 0-1 as 0-255 integers."""
    return tuple(tuple(int(round(255 * c)) for c in rgb) for rgb in colours)


def label_colors() -> tuple[tuple[int, int, int], ...]:
    """The class colours (edema, non-enhancing, enhancing) of :func:`utils.data.labels.palette`, 0-255."""
    return rgb255(palette()["classes"])


def error_colors() -> tuple[tuple[int, int, int], ...]:
    """The false-positive and false-negative colours of the palette, 0-255."""
    return rgb255(palette()["errors"])


CLASS_WORDS = tuple(name.lower() for name in CLASS_NAMES)
"""The class names as the legends and the report's tables write them: "edema", "non-enhancing tumour", ..."""


@dataclass
class Layer:
    """One volume of the viewer.

    Attributes:
        name: shown in the controls, e.g. ``"FLAIR"`` or ``"segmentation"``.
        kind: ``"image"`` (grey background), ``"label"`` (course colours, filled),
            ``"outline"`` (course colours, the border of each class) or ``"errors"``.
        nifti_gz: the volume as gzipped NIfTI-1 bytes, on the case's affine.
        opacity: opacity in [0, 1] when the layer is on.
        shown: on in the first frame (loaded first); the others load afterwards.
    """

    name: str
    kind: str
    nifti_gz: bytes
    opacity: float = 1.0
    shown: bool = True

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


LABEL_OPACITY = 0.5
"""Opacity of a filled label map: the image stays readable under it."""


def label_layer(
    label: np.ndarray, affine: np.ndarray, name: str, kind: str = "label", opacity: float = LABEL_OPACITY
) -> Layer:
    """A label layer (values 0-3, or 0-2 for ``kind="errors"``) stored as uint8.

    ``kind="outline"`` stores only the border of each class (:func:`label_outline`).
    """
    label = np.asarray(label)
    top = 2 if kind == "errors" else 3
    if label.ndim != 3 or label.size and (label.min() < 0 or label.max() > top or np.any(label != np.round(label))):
        raise ValueError(
            f"{name}: expected a 3-D map of integers 0..{top}; found shape {label.shape}, "
            f"values {np.unique(label)[:10].tolist()}"
        )
    label = label.astype(np.uint8)
    if kind == "outline":
        label = label_outline(label)
    return Layer(name, kind, nifti_gz(label, affine), opacity, shown=kind != "errors")


def label_outline(label: np.ndarray) -> np.ndarray:
    """The border of each class: voxels whose value differs from one of their six face neighbours.

    Every slice through a class shows it as a ring one voxel wide (the top and
    bottom slices of a class are all border). Voxels on the volume's edge count
    as inside. Values are kept, so the outline has the class colours.
    """
    label = np.asarray(label)
    border = np.zeros(label.shape, bool)
    for axis in range(label.ndim):
        for shift in (1, -1):
            neighbour = np.roll(label, shift, axis=axis)
            edge = [slice(None)] * label.ndim
            edge[axis] = 0 if shift == 1 else -1
            neighbour[tuple(edge)] = label[tuple(edge)]  # no wrap-around
            border |= neighbour != label
    return np.where(border & (label > 0), label, 0).astype(label.dtype)


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
    truth: np.ndarray | None = None,
    sequences: tuple[str, ...] | None = None,
) -> list[Layer]:
    """The layers of a case: the sequences, the filled label maps, the truth's outline, the errors.

    Args:
        image: ``(x, y, z, 4)`` in the MSD channel order (or ``(x, y, z)``, one sequence).
        affine: 4x4 voxel-to-world matrix of the case.
        overlays: label maps drawn filled, by name, e.g. ``{"segmentation": seg}``
            (lesson 01: ``{"labels": label}``).
        truth: the ground truth to compare with the one map in ``overlays``: it is
            drawn as an outline (layer ``"ground truth"``, on) and the whole-tumour
            error map of the two is added (layer ``"errors"``, off).
        sequences: the sequences to keep, e.g. ``("FLAIR", "T1gd")`` (default: all).

    Returns:
        The layers, images first; only the first image and the label maps are ``shown``.
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
    for k, layer in enumerate(layers):
        layer.shown = k == 0
    overlays = dict(overlays or {})
    if truth is not None and len(overlays) != 1:
        raise ValueError(f"truth is compared with one segmentation; found overlays {list(overlays)}")
    labelled = {**overlays, **({} if truth is None else {"ground truth": truth})}
    for name, label in labelled.items():
        if np.shape(label) != channels.shape[:3]:
            raise ValueError(f"{name}: shape {np.shape(label)} does not match the image {channels.shape[:3]}")
    for name, label in overlays.items():
        layers.append(label_layer(label, affine, name))
    if truth is not None:
        layers.append(label_layer(truth, affine, "ground truth", kind="outline", opacity=1.0))
        (segmentation,) = overlays.values()
        layers.append(label_layer(error_map(truth, segmentation), affine, "errors", kind="errors", opacity=0.8))
    return layers


def lookup_table(kind: str) -> dict:
    """NiiVue label colour table (R, G, B, A, I, labels) for label, outline or error layers."""
    colours, names = (error_colors(), ERROR_NAMES) if kind == "errors" else (label_colors(), CLASS_WORDS)
    rgb = [(0, 0, 0), *colours]
    return {
        "R": [c[0] for c in rgb],
        "G": [c[1] for c in rgb],
        "B": [c[2] for c in rgb],
        "A": [0] + [255] * len(colours),
        "I": list(range(len(rgb))),
        "labels": ["background", *names],
    }


def _swatches(colours, names, style: str) -> str:
    return "".join(
        f'<span style="white-space:nowrap"><span style="display:inline-block;width:0.9em;height:0.9em;'
        f"margin:0 0.3em 0 0.9em;vertical-align:-0.1em;box-sizing:border-box;"
        f'{style.format(rgb=f"rgb({c[0]},{c[1]},{c[2]})")}"></span>{n}</span>'
        for c, n in zip(colours, names)
    )


def legend_html(layers: list[Layer]) -> str:
    """What the viewer shows, as a small HTML snippet: one line per kind of overlay, with its colours."""
    filled = [layer.name for layer in layers if layer.kind == "label"]
    lines = []
    if filled:
        lines.append(
            f"<b>Filled: {' and '.join(filled)}</b>"
            + _swatches(label_colors(), CLASS_WORDS, "background:{rgb};opacity:0.7")
        )
    for layer in layers:
        if layer.kind == "outline":
            lines.append(
                f"<b>Outline: {layer.name}</b>" + _swatches(label_colors(), CLASS_WORDS, "border:2px solid {rgb}")
            )
        elif layer.kind == "errors":
            lines.append(
                f"<b>{layer.name.capitalize()} of the whole tumour (off at the start)</b>"
                + _swatches(error_colors(), ERROR_NAMES, "background:{rgb}")
            )
    return '<div class="legend">' + "".join(f"<div>{line}</div>" for line in lines) + "</div>"


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


VIEWER_HEIGHT = 540
"""Viewer height in pixels: a 2x2 grid of tiles shows a 240x240x155 case's slices at about 1.3 pixels a voxel."""


def build_niivue(
    layers: list[Layer], background: int = 0, height: int = VIEWER_HEIGHT, focus=None, shape=None, affine=None
):
    """An ``ipyniivue.NiiVue`` widget: the three planes and a 3-D render of ``layers`` in a 2x2 grid.

    Only the ``shown`` layers are loaded (the first frame waits for nothing
    else); :func:`load_next` adds another one when it is asked for.

    Args:
        layers: from :func:`case_layers`; one image layer is the background,
            every label/outline/error layer is an overlay.
        background: index (among the image layers) of the grey background.
        height: widget height in pixels.
        focus, shape, affine: a voxel to centre the view on (see :func:`view_angles`),
            the grid shape and the affine; without them NiiVue's default view.

    Returns:
        ``(widget, volumes)``: the widget and one ``ipyniivue.Volume`` per layer, in
        order; those not shown have opacity 0 and are not in ``widget.volumes`` yet.
    """
    from ipyniivue import MultiplanarType, NiiVue, ShowRender, SliceType, Volume  # lazy: loads only when shown

    nv = NiiVue(
        height=height,
        slice_type=SliceType.MULTIPLANAR,
        multiplanar_layout=MultiplanarType.GRID,  # 2x2: the slices twice as large as in one row
        multiplanar_show_render=ShowRender.ALWAYS,
        multiplanar_pad_pixels=6,
        back_color=(0.0, 0.0, 0.0, 1.0),
        crosshair_color=(1.0, 1.0, 0.0, 0.5),  # yellow: no label colour
        crosshair_width=1.0,  # one voxel
        is_corner_orientation_text=True,  # letters in the corners, clear of the crosshair
        is_colorbar=False,
        show_legend=False,
        loading_text="loading the volumes ...",
    )
    volumes = []
    for layer in layers:
        vol = Volume(
            data=layer.nifti_gz,
            name=layer.filename,
            opacity=layer.opacity if layer.shown else 0.0,
            colormap="gray",
            colorbar_visible=False,
        )
        if layer.kind != "image":
            vol.set_colormap_label(lookup_table(layer.kind))
        volumes.append(vol)
    # The background sequence has opacity 1, the others 0: switching a sequence changes
    # opacities (replacing the first volume leaves ipyniivue 2.4 with a stale background).
    for k, vol in enumerate(v for v, layer in zip(volumes, layers) if layer.kind == "image"):
        vol.opacity = 1.0 if k == background else 0.0
    nv.load_volumes([v for v, layer in zip(volumes, layers) if layer.shown])
    if focus is not None:
        for name, value in view_angles(focus, shape, affine).items():
            setattr(nv.scene, name, value)
    return nv, volumes


def load_next(nv, volumes: list, first=None) -> bool:
    """Add one volume not yet in ``nv`` (``first`` if it is still missing), keeping the layers' order.

    Returns:
        False when every volume is loaded already.
    """
    loaded = {v.id for v in nv.volumes}
    missing = [v for v in volumes if v.id not in loaded]
    if not missing:
        return False
    add = first if first is not None and first in missing else missing[0]
    nv.volumes = [v for v in volumes if v.id in loaded or v is add]
    return True


def show_3d(
    image: np.ndarray,
    affine: np.ndarray,
    overlays: dict[str, np.ndarray] | None = None,
    truth: np.ndarray | None = None,
    height: int = VIEWER_HEIGHT,
):
    """Show a case in NiiVue with a sequence menu, overlay switches, opacity sliders and a legend.

    The first frame waits only for the shown volumes (FLAIR and the label maps);
    another sequence or the error map loads when it is asked for, and a line
    under the controls says what is loading.

    Args:
        image: ``(x, y, z, 4)``. affine: the case's 4x4 affine.
        overlays: label maps drawn filled, by name (course colours).
        truth: a ground truth to compare with the one map in ``overlays``: drawn as an
            outline, with the whole-tumour false positives / negatives as a layer (off).
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
    layers = case_layers(image, affine, overlays, truth)
    focus = focus_voxel(overlays if truth is None else {"ground truth": truth}, image.shape[:3])
    nv, volumes = build_niivue(layers, height=height, focus=focus, shape=image.shape[:3], affine=affine)
    names = {v.id: layer.name for layer, v in zip(layers, volumes)}
    progress = widgets.HTML()
    done: set[str] = set()
    asked: list = []  # volumes asked for and not added yet, loaded one at a time
    # The shown volumes reach the browser once its canvas is attached: ipyniivue 2.4's first
    # render parses the volumes it finds under its own bookkeeping, so a later change of
    # ``volumes`` (a layer asked for) would parse them all again (seconds each in software
    # WebGL). Handed over after the render, every volume goes through the one "volumes
    # changed" path and is parsed once (as the HTML report does).
    first = list(nv.volumes)
    nv.volumes = []

    def current() -> list:
        return nv.volumes or first

    def step():
        if asked and nv.volumes and all(v.id in done for v in nv.volumes):
            load_next(nv, volumes, asked.pop(0))
        waiting = [names[v.id] for v in current() if v.id not in done] + [names[v.id] for v in asked]
        progress.value = f"<i>loading {', '.join(waiting)} ...</i>" if waiting else ""

    def ask(vol):
        if vol.id not in {v.id for v in current()} and vol not in asked:
            asked.append(vol)
        step()

    def on_loaded(volume):
        done.add(volume.id)
        step()

    def on_attached():
        if not nv.volumes:
            nv.volumes = first
        step()

    nv.on_image_loaded(on_loaded)
    nv.on_canvas_attached(on_attached)
    step()
    images = [(layer.name, v) for layer, v in zip(layers, volumes) if layer.kind == "image"]
    sequence = widgets.Dropdown(
        options=[(name, i) for i, (name, _) in enumerate(images)], value=0, description="sequence"
    )

    def on_sequence(change):
        for k, (_, vol) in enumerate(images):
            vol.opacity = 1.0 if k == change["new"] else 0.0
        ask(images[change["new"]][1])

    sequence.observe(on_sequence, names="value")
    rows = [sequence]
    for layer, vol in zip(layers, volumes):
        if layer.kind == "image":
            continue
        shown = widgets.Checkbox(
            value=layer.shown, description=layer.name, indent=False, layout=widgets.Layout(width="11em")
        )
        opacity = widgets.FloatSlider(
            value=layer.opacity, min=0.0, max=1.0, step=0.05, description="opacity", continuous_update=True
        )

        def update(_change, vol=vol, shown=shown, opacity=opacity):
            vol.opacity = opacity.value if shown.value else 0.0
            if shown.value:
                ask(vol)

        shown.observe(update, names="value")
        opacity.observe(update, names="value")
        rows.append(widgets.HBox([shown, opacity]))
    rows += [widgets.HTML(legend_html(layers)), progress]
    box = ViewerBox(children=[widgets.VBox(rows), nv])
    box.note = NO_WIDGETS_NOTE
    (filled_name, filled), *_ = (overlays or {"": None}).items()
    box.picture = figure_png(
        three_planes(
            image[..., 0] if image.ndim == 4 else image,
            focus,
            filled,
            truth,
            filled_name=filled_name,
            title="FLAIR"
            + (f", {filled_name} filled" if filled is not None else "")
            + (", ground truth outlined" if truth is not None else ""),
        )
    )
    box.alt = (
        "Axial, coronal and sagittal slices of FLAIR through the tumour centre"
        + (f", the {filled_name} filled in the class colours" if filled is not None else "")
        + (", the ground truth outlined in the class colours" if truth is not None else "")
        + "; the legend names the colours."
    )
    return box
