"""One colour setting (COURSE_PALETTE) honoured everywhere, and the static forms of the viewers.

Exports that cannot run widgets (nbconvert's HTML, GitHub, a course site) pick, from each
viewer's display bundle, a picture of the same view with alt text and a one-line note.
"""

from __future__ import annotations

import base64
import io
import itertools

import matplotlib

matplotlib.use("Agg")
import nbformat  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from matplotlib.colors import to_rgb  # noqa: E402
from PIL import Image  # noqa: E402

from utils.data.labels import PALETTE_ENV, PALETTES, class_colors, palette  # noqa: E402
from utils.visualization import figures  # noqa: E402

OKABE_ITO = {  # Okabe & Ito (2008), "Color Universal Design"
    "yellow": "#F0E442",
    "vermilion": "#D55E00",
    "sky blue": "#56B4E9",
    "reddish purple": "#CC79A7",
    "blue": "#0072B2",
}
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"


def hex_rgb(code: str) -> tuple[float, float, float]:
    return tuple(int(code[i : i + 2], 16) / 255 for i in (1, 3, 5))


def small_case():
    from test_report import make_case

    return make_case()


def test_default_is_the_course_colours_and_colorblind_is_okabe_ito(monkeypatch):
    monkeypatch.delenv(PALETTE_ENV, raising=False)
    assert palette()["name"] == "course"
    assert class_colors() == ((1.0, 0.0, 0.0), (0.0, 0.8, 0.0), (0.0, 0.3, 1.0))
    monkeypatch.setenv(PALETTE_ENV, " Colorblind ")
    chosen = palette()
    assert chosen["name"] == "colorblind"
    for colour, word in zip((*chosen["classes"], *chosen["errors"]), (*chosen["class_words"], *chosen["error_words"])):
        assert np.allclose(colour, hex_rgb(OKABE_ITO[word]))
    monkeypatch.setenv(PALETTE_ENV, "rainbow")
    with pytest.raises(
        ValueError, match=r"\$COURSE_PALETTE must be one of \['colorblind', 'course'\]; found 'rainbow'"
    ):
        palette()


# Machado, Oliveira & Fernandes (2009) simulation matrices, severity 1, on linear RGB.
CVD = {
    "protanopia": [[0.152286, 1.052583, -0.204868], [0.114503, 0.786281, 0.099216], [-0.003882, -0.048116, 1.051998]],
    "deuteranopia": [[0.367322, 0.860646, -0.227968], [0.280085, 0.672501, 0.047413], [-0.011820, 0.042940, 0.968881]],
    "tritanopia": [[1.255528, -0.076749, -0.178779], [-0.078411, 0.930809, 0.147602], [0.004733, 0.691367, 0.303900]],
}


def simulated(colour, matrix):
    c = np.asarray(colour, dtype=float)
    linear = np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
    seen = np.clip(np.asarray(matrix) @ linear, 0, 1)
    return np.where(seen <= 0.0031308, 12.92 * seen, 1.055 * seen ** (1 / 2.4) - 0.055)


@pytest.mark.parametrize("deficiency", sorted(CVD))
def test_colorblind_classes_stay_apart_where_the_course_colours_merge(deficiency):
    def closest_pair(colours):
        return min(
            np.linalg.norm(simulated(a, CVD[deficiency]) - simulated(b, CVD[deficiency]))
            for a, b in itertools.combinations(colours, 2)
        )

    course, safe = closest_pair(PALETTES["course"]["classes"]), closest_pair(PALETTES["colorblind"]["classes"])
    assert safe > 0.5 and safe > course, (deficiency, course, safe)


@pytest.mark.parametrize("name", sorted(PALETTES))
def test_every_figure_and_viewer_draws_in_the_chosen_palette(monkeypatch, name):
    import pandas as pd

    from utils.visualization.viewer3d import case_layers, legend_html, lookup_table

    monkeypatch.setenv(PALETTE_ENV, name)
    colours = PALETTES[name]["classes"]
    errors = PALETTES[name]["errors"]
    cmap, _ = figures.label_colormap()
    assert [tuple(cmap(k)[:3]) for k in (1, 2, 3)] == [pytest.approx(c) for c in colours]
    assert [tuple(figures.error_colormap()(k)[:3]) for k in (1, 2)] == [pytest.approx(c) for c in errors]
    rgb = figures.overlay_rgb(np.zeros((1, 3)), np.array([[1, 2, 3]]), alpha=1.0, window=(0, 1))
    assert np.allclose(rgb[0] / 255, colours, atol=0.01)
    image, truth, seg, affine = small_case()
    fig = figures.show_sequences(image, truth)
    legend = [to_rgb(h.get_facecolor()) for h in fig.axes[4].get_legend().legend_handles]
    assert legend == [pytest.approx(c) for c in colours]
    keys = ["loss", "val_loss", "val_pooled_dice"] + [
        f"val_{kind}_{k}" for kind in ("dice", "pooled_dice") for k in figures.CURVE_KEYS
    ]
    fig = figures.plot_learning_curves(pd.DataFrame({"epoch": [0, 1], **{k: [0.2, 0.5] for k in keys}}))
    drawn = {to_rgb(line.get_color()) for line in fig.axes[1].get_lines()}
    assert all(tuple(c) in drawn for c in colours)
    fig = figures.three_planes(image[..., 0], (12, 10, 8), seg, truth, filled_name="segmentation")
    handles = fig.axes[-1].get_legend().legend_handles
    assert len(handles) == 6  # three filled classes, three outlined
    table = lookup_table("label")
    assert [(r / 255, g / 255, b / 255) for r, g, b in zip(table["R"][1:], table["G"][1:], table["B"][1:])] == [
        pytest.approx(c, abs=0.003) for c in colours
    ]
    table = lookup_table("errors")
    assert table["R"][1:] == [round(255 * c[0]) for c in errors]
    swatches = legend_html(case_layers(image, affine, {"segmentation": seg}, truth))
    for c in (*colours, *errors):
        assert "rgb({},{},{})".format(*(round(255 * v) for v in c)) in swatches
    matplotlib.pyplot.close("all")


def test_the_report_uses_the_chosen_palette(monkeypatch, tmp_path):
    from utils.visualization.report import write_report

    image, truth, seg, affine = small_case()
    monkeypatch.setenv(PALETTE_ENV, "colorblind")
    text = write_report(tmp_path / "case.html", image, affine, seg, truth=truth).read_text(encoding="utf-8")
    assert "rgb(240,228,66)" in text and "rgb(213,94,0)" in text and "rgb(86,180,233)" in text
    assert "rgb(255,0,0)" not in text


def picture_of(bundle: dict) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(bundle["image/png"]))).convert("RGB"))


def hue_pixels(rgb: np.ndarray, colour, tolerance: float = 12.0) -> int:
    """Pixels of ``colour``'s hue (saturated ones; a half-transparent fill over grey keeps the hue)."""
    hsv = np.asarray(Image.fromarray(rgb).convert("HSV"), dtype=np.float32)
    target = np.asarray(Image.fromarray(np.uint8([[np.asarray(colour) * 255]])).convert("HSV"), dtype=np.float32)
    distance = np.abs(hsv[..., 0] - target[0, 0, 0]) * 360 / 255
    distance = np.minimum(distance, 360 - distance)
    return int(((distance < tolerance) & (hsv[..., 1] > 70) & (hsv[..., 2] > 70)).sum())


@pytest.mark.parametrize("name", sorted(PALETTES))
def test_viewers_carry_a_static_picture_of_their_view_with_alt_text_and_a_note(monkeypatch, name):
    pytest.importorskip("ipyniivue")
    from utils.visualization.viewer3d import NO_WIDGETS_NOTE, show_3d

    monkeypatch.setenv(PALETTE_ENV, name)
    image, truth, seg, affine = small_case()
    for box, note in (
        (show_3d(image, affine, {"segmentation": seg}, truth=truth), NO_WIDGETS_NOTE),
        (figures.slice_viewer(image, truth), figures.SLICE_VIEWER_NOTE),
    ):
        bundle = box._repr_mimebundle_()
        assert WIDGET_VIEW in bundle and bundle["text/plain"] == note
        assert 'alt="Axial, coronal and sagittal slices of FLAIR' in bundle["text/html"]
        assert f"<figcaption><i>{note}</i></figcaption>" in bundle["text/html"]
        assert bundle["image/png"] in bundle["text/html"]
        rgb = picture_of(bundle)
        planes = rgb[:, : rgb.shape[1] * 2 // 3]  # the three planes; the legend is on the right
        for colour in PALETTES[name]["classes"]:
            assert hue_pixels(planes, colour) > 20, (name, colour)
    matplotlib.pyplot.close("all")


def test_nbconvert_shows_the_picture_when_no_widget_state_is_stored():
    pytest.importorskip("ipyniivue")
    from nbconvert import HTMLExporter

    from utils.visualization.viewer3d import NO_WIDGETS_NOTE, show_3d

    image, truth, seg, affine = small_case()
    bundle = show_3d(image, affine, {"segmentation": seg}, truth=truth)._repr_mimebundle_()
    gif = figures.Animation(figures.slices_gif(image, truth, size=40), alt="The slices, bottom to top.")
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_code_cell(
            "show_3d(...)", outputs=[nbformat.v4.new_output("display_data", data=bundle)], execution_count=1
        ),
        nbformat.v4.new_code_cell(
            "Animation(...)",
            outputs=[nbformat.v4.new_output("display_data", data=gif._repr_mimebundle_())],
            execution_count=2,
        ),
    ]
    for template in ("lab", "classic"):
        page, _ = HTMLExporter(template_name=template).from_notebook_node(nb)
        assert 'alt="Axial, coronal and sagittal slices' in page and NO_WIDGETS_NOTE in page
        assert 'src="data:image/gif;base64,' in page and 'alt="The slices, bottom to top."' in page
        assert "IPython.core.display.Image object" not in page


def test_generated_notebooks_caption_every_figure():
    from notebooks import CAPTION_PREFIX, with_captions

    figure = nbformat.v4.new_code_cell("plt.show()", metadata={"alt": "Four sequences side by side."})
    cells = with_captions([nbformat.v4.new_markdown_cell("# Title"), figure, nbformat.v4.new_code_cell("x = 1")])
    assert [c.cell_type for c in cells] == ["markdown", "code", "markdown", "code"]
    assert cells[2].source == CAPTION_PREFIX + "Four sequences side by side."
    assert cells[1].metadata["alt"] == "Four sequences side by side."  # the classic export's alt too
