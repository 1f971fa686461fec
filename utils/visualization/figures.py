"""Figures for the lessons: sequences, label overlays, a slice viewer, GIFs.

Slices are shown in array order, as the network sees them: the first array
axis runs to the right and ``origin="lower"``. For the phantom (an RAS grid)
that is the neurological view, the subject's left on the left. Plots that must
respect the affine (a radiologist's view) use nilearn instead.
"""

from __future__ import annotations

import io
from pathlib import Path

import matplotlib.pyplot as plt
import nibabel as nib
import numpy as np
from matplotlib.colors import BoundaryNorm, ListedColormap
from matplotlib.patches import Patch
from PIL import Image

from ..data.labels import CLASS_COLORS, CLASS_NAMES, MODALITIES, REGION_NAMES, REGION_ORDER

AXIS_NAMES = {0: "sagittal", 1: "coronal", 2: "axial"}


def label_colormap(alpha: float = 1.0) -> tuple[ListedColormap, BoundaryNorm]:
    """Colormap and norm for label maps 0-3: transparent, red, green, blue.

    Args:
        alpha: opacity of the three classes, baked into the colormap (for
            plotting functions, like nilearn's overlays, that take no alpha).
    """
    cmap = ListedColormap([(0.0, 0.0, 0.0, 0.0)] + [(*c, alpha) for c in CLASS_COLORS])
    return cmap, BoundaryNorm([-0.5, 0.5, 1.5, 2.5, 3.5], cmap.N)


def label_legend(ax: plt.Axes, **kwargs) -> None:
    """Add the edema / non-enhancing / enhancing colour legend beside ``ax``."""
    handles = [Patch(color=c, label=n) for c, n in zip(CLASS_COLORS, CLASS_NAMES)]
    options = {"loc": "upper left", "bbox_to_anchor": (1.02, 1.0), "fontsize": 8, "frameon": False}
    ax.legend(handles=handles, **{**options, **kwargs})


def take_slice(volume: np.ndarray, axis: int, index: int) -> np.ndarray:
    """Return the 2-D slice ``index`` along ``axis``, transposed for ``imshow``."""
    if axis not in AXIS_NAMES:
        raise ValueError(f"axis must be 0, 1 or 2; found {axis}")
    if not 0 <= index < volume.shape[axis]:
        raise IndexError(f"slice {index} outside 0..{volume.shape[axis] - 1} on axis {axis}")
    return np.take(volume, index, axis=axis).swapaxes(0, 1)


def _aspect(spacing, axis: int) -> float:
    if spacing is None:
        return 1.0
    rows_cols = [a for a in range(3) if a != axis]
    return float(spacing[rows_cols[1]] / spacing[rows_cols[0]])


def display_range(volume: np.ndarray, low: float = 0.5, high: float = 99.5) -> tuple[float, float]:
    """Percentile window of the nonzero voxels (the brain in skull-stripped MRI)."""
    values = volume[volume != 0]
    if values.size == 0:
        return 0.0, 1.0
    lo, hi = np.percentile(values, [low, high])
    return float(lo), float(hi if hi > lo else lo + 1.0)


def draw_slice(ax, volume, axis: int, index: int, spacing=None, label=None, alpha: float = 0.45, window=None):
    """One grayscale slice of ``volume`` ``(x, y, z)`` on ``ax``, with ``label`` drawn over it when given.

    The course's one label overlay (the lesson figures, :func:`show_cases`, :func:`slice_viewer`).
    ``window``: the ``(low, high)`` grey range (default :func:`display_range` of ``volume``).
    """
    lo, hi = display_range(volume) if window is None else window
    aspect = _aspect(spacing, axis)
    ax.imshow(take_slice(volume, axis, index), cmap="gray", vmin=lo, vmax=hi, origin="lower", aspect=aspect)
    if label is not None:
        cmap, norm = label_colormap()
        ax.imshow(
            take_slice(label, axis, index),
            cmap=cmap,
            norm=norm,
            alpha=alpha,
            origin="lower",
            aspect=aspect,
            interpolation="nearest",
        )


def tumour_center(label: np.ndarray | None, shape: tuple[int, ...]) -> tuple[int, int, int]:
    """Voxel at the centre of the tumour (or of the volume without one)."""
    if label is not None and np.any(label > 0):
        return tuple(int(v) for v in np.round(np.argwhere(label > 0).mean(axis=0)))
    return tuple(s // 2 for s in shape[:3])


def show_sequences(
    image: np.ndarray,
    label: np.ndarray | None = None,
    index: int | None = None,
    axis: int = 2,
    spacing=None,
    alpha: float = 0.45,
):
    """Four sequences side by side, then the label overlaid on FLAIR.

    Args:
        image: ``(x, y, z, 4)`` in the MSD channel order.
        label: optional ``(x, y, z)`` label map.
        index: slice index (default: through the tumour centre).
        axis: 0 sagittal, 1 coronal, 2 axial.
        spacing: voxel size, for the aspect ratio.
        alpha: label opacity.

    Returns:
        The matplotlib figure.
    """
    index = tumour_center(label, image.shape)[axis] if index is None else index
    panels = 4 + (label is not None)
    fig, axes = plt.subplots(1, panels, figsize=(3.2 * panels, 3.6))
    for ch, name in enumerate(MODALITIES):
        draw_slice(axes[ch], image[..., ch], axis, index, spacing)
        axes[ch].set_title(name)
    if label is not None:
        draw_slice(axes[4], image[..., 0], axis, index, spacing, label, alpha)
        axes[4].set_title(f"labels on FLAIR ({AXIS_NAMES[axis]} {index})")
        label_legend(axes[4])
    for ax in axes:
        ax.set_axis_off()
    fig.tight_layout()
    return fig


def show_cases(cases, axis: int = 2, alpha: float = 0.45):
    """Several cases, one row each: the four sequences and the labels over FLAIR.

    Each row cuts its case through the slice with the most tumour voxels, so
    small and multifocal tumours show too.

    Args:
        cases: objects with ``image`` ``(x, y, z, 4)``, ``label`` ``(x, y, z)``,
            ``case_id`` and ``spacing`` (e.g. from :func:`utils.data.datasets.load_case`).
        axis: 0 sagittal, 1 coronal, 2 axial.
        alpha: label opacity.

    Returns:
        The matplotlib figure.
    """
    cases = list(cases)
    if not cases:
        raise ValueError("show_cases needs at least one case; found none")
    fig, axes = plt.subplots(len(cases), 5, figsize=(12.5, 2.6 * len(cases)), squeeze=False)
    for row, case in zip(axes, cases):
        tumour = np.sum(case.label > 0, axis=tuple(a for a in range(3) if a != axis))
        index = int(np.argmax(tumour)) if tumour.any() else case.label.shape[axis] // 2
        for ch, ax in enumerate(row[:4]):
            draw_slice(ax, case.image[..., ch], axis, index, case.spacing)
        draw_slice(row[4], case.image[..., 0], axis, index, case.spacing, case.label, alpha)
        row[0].text(
            -0.04,
            0.5,
            f"{case.case_id}\n{AXIS_NAMES[axis]} {index}",
            transform=row[0].transAxes,
            rotation=90,
            ha="right",
            va="center",
            fontsize=9,
        )
    for ax, title in zip(axes[0], [*MODALITIES, "labels on FLAIR"]):
        ax.set_title(title)
    for ax in axes.ravel():
        ax.set_axis_off()
    label_legend(axes[0, 4])
    fig.tight_layout()
    return fig


def overlay_rgb(
    gray: np.ndarray, label: np.ndarray | None, alpha: float = 0.45, window: tuple[float, float] | None = None
) -> np.ndarray:
    """Blend a label map over a grey image.

    Args:
        gray: 2-D or 3-D intensities.
        label: same shape, values 0-3 (or None).
        alpha: label opacity in [0, 1].
        window: intensity range mapped to black..white (default: percentiles).

    Returns:
        uint8 RGB array ``(*gray.shape, 3)``.
    """
    lo, hi = window if window is not None else display_range(gray)
    g = np.clip((gray.astype(np.float32) - lo) / (hi - lo), 0.0, 1.0)
    rgb = np.repeat(g[..., None], 3, axis=-1)
    if label is not None:
        colours = np.zeros((4, 3), dtype=np.float32)
        colours[1:] = CLASS_COLORS
        on = (label > 0)[..., None]
        rgb = np.where(on, (1.0 - alpha) * rgb + alpha * colours[label.astype(np.intp)], rgb)
    return (rgb * 255.0 + 0.5).astype(np.uint8)


def slices_gif(
    image: np.ndarray,
    label: np.ndarray | None = None,
    path: Path | str | None = None,
    axis: int = 2,
    channel: int = 0,
    step: int = 1,
    alpha: float = 0.45,
    fps: int = 12,
    size: int = 240,
) -> bytes:
    """An animated GIF through the slices of one sequence, labels overlaid.

    Args:
        image: ``(x, y, z, 4)``. label: optional ``(x, y, z)``.
        path: where to write the GIF (optional; the bytes are returned anyway).
        axis: axis to step through. channel: sequence to show.
        step: keep every ``step``-th slice. alpha: label opacity.
        fps: frames per second. size: longest side of a frame in pixels.

    Returns:
        The GIF file's bytes (show with ``IPython.display.Image(data=...)``).
    """
    vol = image[..., channel]
    window = display_range(vol)
    frames = []
    for index in range(0, vol.shape[axis], step):
        lab = None if label is None else take_slice(label, axis, index)
        rgb = overlay_rgb(take_slice(vol, axis, index), lab, alpha, window)[::-1]  # origin lower
        frame = Image.fromarray(rgb)
        scale = size / max(frame.size)
        if scale != 1:
            frame = frame.resize(
                (max(1, round(frame.size[0] * scale)), max(1, round(frame.size[1] * scale))), Image.NEAREST
            )
        frames.append(frame)
    buffer = io.BytesIO()
    frames[0].save(buffer, format="GIF", save_all=True, append_images=frames[1:], duration=round(1000 / fps), loop=0)
    data = buffer.getvalue()
    if path is not None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_bytes(data)
    return data


def intensity_histograms(image: np.ndarray, mask: np.ndarray | None = None, bins: int = 100):
    """Histogram of each sequence inside the brain (nonzero voxels by default).

    Returns:
        The matplotlib figure.
    """
    mask = np.any(image != 0, axis=-1) if mask is None else mask.astype(bool)
    fig, axes = plt.subplots(1, image.shape[-1], figsize=(3.2 * image.shape[-1], 2.8))
    for ch, ax in enumerate(np.atleast_1d(axes)):
        values = image[..., ch][mask]
        ax.hist(values, bins=bins, color="0.3")
        ax.set_title(MODALITIES[ch] if ch < len(MODALITIES) else f"channel {ch}")
        ax.set_xlabel("intensity")
        ax.set_yticks([])
    fig.tight_layout()
    return fig


def slice_viewer(image: np.ndarray, label: np.ndarray | None = None, spacing=None):
    """An ipywidgets viewer: slice slider, axis, sequence, overlay on/off, opacity.

    Args:
        image: ``(x, y, z, 4)``. label: optional ``(x, y, z)``.
        spacing: voxel size, for the aspect ratio.

    Returns:
        The widget (display it, or let it be the cell's last value).
    """
    import ipywidgets as widgets  # lazy: the widget stack loads only when a viewer is shown

    centre = tumour_center(label, image.shape)
    axis_w = widgets.Dropdown(options=[(AXIS_NAMES[a], a) for a in (2, 1, 0)], value=2, description="plane")
    seq_w = widgets.Dropdown(options=[(m, i) for i, m in enumerate(MODALITIES)], value=0, description="sequence")
    slice_w = widgets.IntSlider(
        value=centre[2], min=0, max=image.shape[2] - 1, description="slice", continuous_update=False
    )
    overlay_w = widgets.Checkbox(value=label is not None, description="labels", disabled=label is None)
    alpha_w = widgets.FloatSlider(
        value=0.45, min=0.0, max=1.0, step=0.05, description="opacity", continuous_update=False
    )
    windows = [display_range(image[..., c]) for c in range(image.shape[-1])]

    def on_axis(change):
        slice_w.max = image.shape[change["new"]] - 1
        slice_w.value = centre[change["new"]]

    axis_w.observe(on_axis, names="value")

    def draw(axis, channel, index, overlay, alpha):
        fig, ax = plt.subplots(figsize=(5, 5))
        shown = label if overlay else None
        draw_slice(ax, image[..., channel], axis, index, spacing, shown, alpha, windows[channel])
        if shown is not None:
            label_legend(ax)
        ax.set_title(f"{MODALITIES[channel]}, {AXIS_NAMES[axis]} slice {index}")
        ax.set_axis_off()
        plt.show()

    out = widgets.interactive_output(
        draw, {"axis": axis_w, "channel": seq_w, "index": slice_w, "overlay": overlay_w, "alpha": alpha_w}
    )
    controls = widgets.VBox([widgets.HBox([axis_w, seq_w]), slice_w, widgets.HBox([overlay_w, alpha_w])])
    return widgets.VBox([controls, out])


def to_nifti_images(image: np.ndarray, label: np.ndarray | None, affine: np.ndarray):
    """Wrap arrays as nibabel images (one per sequence, plus the label) for nilearn.

    Returns:
        ``(dict sequence name -> Nifti1Image, label Nifti1Image or None)``.
    """
    seqs = {name: nib.Nifti1Image(image[..., i].astype(np.float32), affine) for i, name in enumerate(MODALITIES)}
    lab = None if label is None else nib.Nifti1Image(label.astype(np.uint8), affine)
    return seqs, lab


def plot_unet_levels(model, ax=None):
    """Draw a U-Net built by :func:`utils.model.unet.build_unet` as its levels.

    Each block is a box at the height of its level, labelled with its output
    shape; arrows show pooling (down), up-sampling (up) and skip connections.

    Returns:
        The matplotlib figure.
    """
    blocks = {}
    for layer in model.layers:
        block = layer.name.split("_")[0]
        if block in ("image", "probabilities") or layer.name.endswith("_pool"):
            continue
        blocks[block] = tuple(layer.output.shape[1:])
    enc = sorted(b for b in blocks if b.startswith("enc"))
    depth = len(enc) + 1
    if ax is None:
        fig, ax = plt.subplots(figsize=(11, 1.3 * depth + 1))
    else:
        fig = ax.figure
    positions = {f"enc{i}": (i, -i) for i in range(depth - 1)}
    positions["bottom"] = (depth - 1, -(depth - 1))
    positions.update({f"dec{i}": (2 * (depth - 1) - i, -i) for i in range(depth - 1)})
    for name, (x, y) in positions.items():
        shape = blocks[name]
        colour = "tab:blue" if name.startswith("enc") else ("tab:purple" if name == "bottom" else "tab:orange")
        ax.add_patch(plt.Rectangle((x - 0.45, y - 0.3), 0.9, 0.6, color=colour, alpha=0.25))
        ax.text(x, y + 0.08, name, ha="center", va="center", fontsize=9, weight="bold")
        ax.text(x, y - 0.14, "x".join(map(str, shape)), ha="center", va="center", fontsize=8)
    for i in range(depth - 1):
        (x0, y0), (x1, y1) = positions[f"enc{i}"], positions[f"enc{i + 1}" if i + 1 < depth - 1 else "bottom"]
        ax.annotate("", (x1 - 0.2, y1 + 0.3), (x0 + 0.2, y0 - 0.3), arrowprops={"arrowstyle": "->", "color": "0.3"})
        (dx0, dy0) = positions[f"dec{i + 1}" if i + 1 < depth - 1 else "bottom"]
        (dx1, dy1) = positions[f"dec{i}"]
        ax.annotate("", (dx1 - 0.2, dy1 - 0.3), (dx0 + 0.2, dy0 + 0.3), arrowprops={"arrowstyle": "->", "color": "0.3"})
        ax.annotate(
            "",
            (dx1 - 0.45, dy1),
            (x0 + 0.45, y0),
            arrowprops={"arrowstyle": "->", "color": "tab:green", "linestyle": "--"},
        )
    ax.text(0, 0.6, f"input {'x'.join(map(str, model.input.shape[1:]))}", ha="center", fontsize=9)
    out_x = 2 * (depth - 1)
    ax.text(out_x, 0.6, f"sigmoid output {'x'.join(map(str, model.output.shape[1:]))}", ha="center", fontsize=9)
    ax.text(depth - 1, 0.6, "green: skip connections (concatenate)", ha="center", fontsize=8, color="tab:green")
    ax.set_xlim(-0.7, 2 * (depth - 1) + 0.7)
    ax.set_ylim(-(depth - 1) - 0.6, 0.9)
    ax.set_axis_off()
    ax.set_title(f"{model.name}: {model.count_params():,} parameters")
    return fig


CURVE_KEYS = ("edema", "non_enhancing", "enhancing")
"""Suffixes of the per-class metrics in a training log (``dice_edema``, ``pooled_dice_edema`` ...)."""
REGION_CURVE_KEYS = ("wt", "tc", "et")
"""Suffixes of the per-region metrics in the log of a region-based run (``dice_wt``, ``pooled_dice_wt`` ...)."""


def curve_channels(history) -> list[tuple[str, str, tuple]]:
    """``(metric suffix, name, colour)`` of each output channel of a training log (classes or regions).

    A region is drawn in the colour of the class it adds to the one inside it: WT red (edema),
    TC green (non-enhancing), ET blue (enhancing).
    """
    if f"val_pooled_dice_{REGION_CURVE_KEYS[0]}" in history:
        names = [f"{REGION_NAMES[r]} ({r})" for r in REGION_ORDER]
        return list(zip(REGION_CURVE_KEYS, names, CLASS_COLORS))
    return list(zip(CURVE_KEYS, CLASS_NAMES, CLASS_COLORS))


def plot_learning_curves(history, loss_name: str = "loss", best_epoch: int | None = None) -> plt.Figure:
    """Learning curves of a course training log, in the class colours.

    Left: training and validation loss. Right: per class, the validation Dice
    pooled over all validation patches (solid, what ``best.keras`` is chosen
    by) and the mean per-patch soft Dice (dotted); black, the pooled mean.

    Args:
        history: the run's ``log.csv`` as a DataFrame (``epoch`` from 0).
        loss_name: the loss, for the axis label.
        best_epoch: the epoch (from 1) of ``best.keras``, marked by a vertical line.

    Returns:
        The figure.
    """
    epochs = np.asarray(history["epoch"]) + 1
    fig, axes = plt.subplots(1, 2, figsize=(13, 4))
    axes[0].plot(epochs, history["loss"], color="0.45", label="training")
    axes[0].plot(epochs, history["val_loss"], color="black", label="validation")
    axes[0].set_ylabel(f"loss ({loss_name})")
    axes[0].set_title("loss")
    channels = curve_channels(history)
    for key, name, color in channels:
        axes[1].plot(epochs, history[f"val_pooled_dice_{key}"], color=color, label=f"{name}, pooled")
        axes[1].plot(epochs, history[f"val_dice_{key}"], color=color, linestyle=":", label=f"{name}, mean per patch")
    what = "regions" if channels[0][0] == REGION_CURVE_KEYS[0] else "classes"
    axes[1].plot(epochs, history["val_pooled_dice"], color="black", linewidth=2, label=f"pooled, mean of {what}")
    axes[1].set_ylabel("validation Dice")
    axes[1].set_ylim(0, 1)
    axes[1].set_title(f"validation Dice per {what[:-1] if what == 'regions' else 'class'}", fontsize=11)
    for ax in axes:
        ax.set_xlabel("epoch")
        if best_epoch is not None:
            ax.axvline(best_epoch, color="0.5", linestyle="--", linewidth=1, label=f"best.keras (epoch {best_epoch})")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    axes[1].legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1.0), frameon=False)
    fig.tight_layout()
    return fig
