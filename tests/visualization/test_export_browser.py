"""An executed HTML export, opened from disk in headless Chromium: every figure is there.

A tiny notebook uses what the lessons show (a matplotlib figure with its alt text, the slice
viewer, the 3-D viewer, the animated GIF), is executed and exported the way ``make demo``
does it (scripts/export_lesson.py: no widget state, the offline template), and opened in
Chromium with no network. In the page: every figure is an image with non-blank pixels, the
viewers' static pictures show the three label colours of the palette on their planes, each
figure has its alt text or caption, no request leaves the page, no JavaScript error.

Skipped without Chromium (Debian: ``apt-get install chromium``). Keeps the page and a
screenshot in ``$REPORT_CHECK_DIR`` when set (``make report-check``).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import nbformat
import pytest

from browser import Chromium, check_dir, find_chromium

pytestmark = pytest.mark.skipif(find_chromium() is None, reason="chromium not installed (apt-get install chromium)")
pytest.importorskip("ipyniivue")

SHAPE = (64, 64, 40)
CELLS = [
    (
        "import matplotlib.pyplot as plt\n"
        "from IPython.display import display\n"
        "from utils.data.phantom import make_phantom_case\n"
        "from utils.visualization.figures import Animation, show_sequences, slice_viewer, slices_gif\n"
        "from utils.visualization.viewer3d import show_3d\n"
        f"image, label, affine = make_phantom_case(0, shape={SHAPE})",
        None,
    ),
    ("show_sequences(image, label)\nplt.show()", "The four sequences and the labels over FLAIR."),
    ("slice_viewer(image, label)", None),
    ('show_3d(image, affine, {"labels": label})', None),
    (
        'display(Animation(slices_gif(image, label, step=4, size=96), alt="The axial slices, bottom to top."))',
        None,
    ),
]

# For every <img>: its size, alt text, the share of pixels that are not the background, and the
# pixels of each palette colour's hue (saturated) in the left two thirds (the planes; legends
# sit on the right).
MEASURE = r"""
(async (hues) => {
  const out = [];
  for (const img of document.querySelectorAll("img")) {
    if (!img.complete) await new Promise((r) => { img.onload = r; img.onerror = r; });
    const c = document.createElement("canvas"); c.width = img.naturalWidth; c.height = img.naturalHeight;
    const entry = {alt: img.alt || "", width: img.naturalWidth, height: img.naturalHeight, inked: 0, hues: hues.map(() => 0),
                   caption: (img.closest("figure") || {}).textContent || ""};
    if (c.width && c.height) {
      const g = c.getContext("2d"); g.drawImage(img, 0, 0);
      const d = g.getImageData(0, 0, c.width, c.height).data;
      const [r0, g0, b0] = [d[0], d[1], d[2]];
      for (let y = 0; y < c.height; y++) for (let x = 0; x < c.width; x++) {
        const i = 4 * (y * c.width + x), r = d[i] / 255, gg = d[i + 1] / 255, b = d[i + 2] / 255;
        if (Math.abs(d[i] - r0) + Math.abs(d[i + 1] - g0) + Math.abs(d[i + 2] - b0) > 30) entry.inked++;
        if (x > c.width * 2 / 3) continue;
        const max = Math.max(r, gg, b), min = Math.min(r, gg, b);
        if (max < 0.3 || max - min < 0.3 * max) continue;
        let h = max === r ? (gg - b) / (max - min) : max === gg ? 2 + (b - r) / (max - min) : 4 + (r - gg) / (max - min);
        h = (h * 60 + 360) % 360;
        hues.forEach((t, k) => { const dh = Math.min(Math.abs(h - t), 360 - Math.abs(h - t)); if (dh < 12) entry.hues[k]++; });
      }
      entry.inked /= c.width * c.height;
    }
    out.push(entry);
  }
  return JSON.stringify(out);
})
"""


def hue(rgb) -> float:
    import colorsys

    return colorsys.rgb_to_hsv(*rgb)[0] * 360.0


@pytest.fixture(scope="module")
def out_dir(tmp_path_factory):
    return check_dir(tmp_path_factory, "export-check")


# The colour-blind palette's export in a browser under `make report-check` (REPORT_CHECK_DIR set):
# `make test` proves that palette without a browser (tests/visualization/test_palette_and_exports.py)
# and keeps one browser export, to stay inside the CI time budget.
@pytest.mark.parametrize(
    "palette_name",
    [
        "course",
        pytest.param(
            "colorblind",
            marks=pytest.mark.skipif(
                not os.environ.get("REPORT_CHECK_DIR"), reason="make report-check opens this export (CI time budget)"
            ),
        ),
    ],
)
def test_html_export_keeps_every_figure(tmp_path, out_dir, monkeypatch, palette_name):
    from utils.data.labels import PALETTE_ENV, PALETTES

    from export_lesson import execute, to_html
    from notebooks import CAPTION_PREFIX, with_captions

    monkeypatch.setenv(PALETTE_ENV, palette_name)  # the kernel inherits the setting
    monkeypatch.setenv("PYTHONPATH", str(Path(__file__).resolve().parents[2]))  # this checkout's utils
    nb = nbformat.v4.new_notebook()
    badge = "[![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/)"
    nb.cells = [nbformat.v4.new_markdown_cell(f"# A lesson\n\n{badge}")] + with_captions(
        [nbformat.v4.new_code_cell(code, metadata={"alt": alt} if alt else {}) for code, alt in CELLS]
    )
    source = tmp_path / f"export_{palette_name}.ipynb"
    nbformat.write(nb, source)
    start = time.monotonic()
    executed = execute(source, tmp_path / "build", timeout=300)
    page = to_html(executed, out_dir)
    built = time.monotonic() - start
    stored = nbformat.read(executed, as_version=4)
    assert "widgets" not in stored.metadata  # no widget state stored
    text = page.read_text(encoding="utf-8")
    assert "IPython.core.display.Image object" not in text
    hues = [hue(c) for c in PALETTES[palette_name]["classes"]]
    with Chromium(1200, 1000) as browser:
        browser.open(page.resolve().as_uri(), "document.readyState === 'complete'", timeout=60)
        measured = browser.call(
            "Runtime.evaluate",
            session=True,
            expression=f"{MEASURE}({json.dumps(hues)})",
            awaitPromise=True,
            returnByValue=True,
        )
        images = json.loads(measured["result"]["value"])
        browser.screenshot(out_dir / f"export_{palette_name}.png")
        remote = [u for u in browser.requests() if not u.startswith(("file:", "data:", "blob:"))]
        errors = [line for line in browser.console() if line.startswith(("error:", "exception:"))]
        captions = browser.evaluate(
            f"[...document.querySelectorAll('.jp-MarkdownCell')].filter(c => c.textContent.includes("
            f"{json.dumps(CAPTION_PREFIX.strip('* ').rstrip('*'))})).length"
        )
    print(
        f"\n{palette_name}: executed and exported in {built:.1f} s; notebook {executed.stat().st_size / 1024:.0f} KiB, "
        f"page {page.stat().st_size / 1024:.0f} KiB"
    )
    for entry in images:
        print(
            f"  {entry['width']}x{entry['height']} inked {entry['inked']:.2f} hues {entry['hues']} alt {entry['alt'][:50]!r}"
        )
    assert not remote, f"the page reached out: {remote}"
    assert not errors, errors
    assert len(images) == 4, images  # the figure, the two viewers' pictures, the animation
    for entry in images:
        # a still figure covers most of its box; an animation's current frame may be an end slice
        assert (
            entry["width"] > 50
            and entry["height"] > 50
            and entry["inked"] > (0.001 if "slices" in entry["alt"] and "Axial" not in entry["alt"] else 0.1)
        ), entry
        assert entry["alt"] and "No description" not in entry["alt"], entry  # nbconvert's stand-in
    viewers = [e for e in images if e["alt"].startswith("Axial, coronal and sagittal slices of FLAIR")]
    assert len(viewers) == 2, images
    for entry in viewers:
        assert "needs a live Jupyter kernel" in entry["caption"], entry  # the one-line note under the picture
        assert all(count > 30 for count in entry["hues"]), (palette_name, hues, entry)
    assert any(e["alt"] == "The axial slices, bottom to top." for e in images)
    assert any(e["alt"] == "The four sequences and the labels over FLAIR." for e in images)  # the cell's alt
    assert captions == 1  # the matplotlib figure's caption (its alt text)
