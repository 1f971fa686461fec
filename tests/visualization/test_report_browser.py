"""The HTML report in a real browser: headless Chromium opens it from disk, with no network.

The case is built to show each thing the viewer must show on its first
screen: the three classes of the segmentation (filled), the ground truth
(outlined), and, when the error layer is switched on, a false-positive blob
and a missed part of the tumour, all on the planes through the crosshair.
Pixel counts of each colour are compared with the voxels of that colour on
those planes, so the thresholds follow from the case, not from a screenshot.

Skipped where Chromium is absent (Debian: ``apt-get install chromium``); run
by ``make report-check``, which also keeps the screenshots in build/report-check/.
Environment: ``REPORT_CHECK_SHAPE`` (default ``120x120x78``; ``240x240x155`` is
the real grid, minutes in software WebGL on 2 cores) and ``REPORT_CHECK_DIR``
(where to keep the reports and screenshots).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from browser import Chromium, check_dir, find_chromium

pytestmark = pytest.mark.skipif(find_chromium() is None, reason="chromium not installed (apt-get install chromium)")
pytest.importorskip("ipyniivue")

HUES = {
    "edema (red)": (345, 15),
    "non-enhancing (green)": (100, 140),
    "enhancing (blue)": (210, 235),
    "false positive (orange)": (25, 40),
    "false negative (cyan)": (170, 190),
}
CLASSES = ("edema (red)", "non-enhancing (green)", "enhancing (blue)")
READY = "document.body && document.body.dataset.viewer"
SHARE = 0.2
"""A colour must cover at least this many pixels per voxel of it on the crosshair planes (a
240x240x155 case is drawn at about 1.3 pixels a voxel side, so 1.7 pixels a voxel, plus the 3-D render)."""


def colour_counts(png: Path, box) -> dict[str, int]:
    """Pixels of each overlay colour (by hue, saturated) and of grey brain inside ``box``."""
    left, top, width, height = (int(round(v)) for v in box)
    hsv = np.asarray(
        Image.open(png).convert("RGB").crop((left, top, left + width, top + height)).convert("HSV"), dtype=np.float32
    )
    hue, sat, val = hsv[..., 0] * 360.0 / 255.0, hsv[..., 1] / 255.0, hsv[..., 2] / 255.0
    vivid = (sat > 0.3) & (val > 0.3)  # a half-transparent fill over bright FLAIR is pale
    counts = {}
    for name, (lo, hi) in HUES.items():
        in_range = ((hue >= lo) | (hue <= hi)) if lo > hi else ((hue >= lo) & (hue <= hi))
        counts[name] = int((vivid & in_range).sum())
    counts["grey brain"] = int(((sat < 0.1) & (val > 0.25)).sum())
    counts["viewer pixels"] = int(width * height)
    return counts


def on_planes(volume: np.ndarray, focus) -> np.ndarray:
    """Voxel counts of values 1..3 on the three planes through ``focus`` (what the 2-D tiles show)."""
    counts = np.zeros(4, int)
    for axis in range(3):
        index = [slice(None)] * 3
        index[axis] = focus[axis]
        counts += np.bincount(np.asarray(volume)[tuple(index)].ravel(), minlength=4)[:4]
    return counts[1:]


@pytest.fixture(scope="module")
def case():
    """A phantom case and a segmentation built from its truth: one missed part, one false blob."""
    from utils.data.phantom import make_phantom_case
    from utils.visualization.viewer3d import error_map, focus_voxel, label_outline

    shape = tuple(int(v) for v in os.environ.get("REPORT_CHECK_SHAPE", "120x120x78").split("x"))
    image, truth, affine = make_phantom_case(0, shape=shape)
    assert set(np.unique(truth)) == {0, 1, 2, 3}, "the report test needs a case with every class"
    focus = focus_voxel({"truth": truth}, shape)  # where the viewer puts its crosshair
    r = max(3, shape[0] // 30)
    segmentation = truth.copy()
    segmentation[:, focus[1] + r :] = 0  # missed: the tumour beyond the crosshair along y
    grid = np.indices(shape)
    brain = image[..., 0] > 0
    for dx in range(2 * r, shape[0]):  # an edema blob on the crosshair's x line, clear of the tumour
        centre = (focus[0] - dx, focus[1], focus[2])
        ball = sum((g - c) ** 2 for g, c in zip(grid, centre)) <= (2 * r) ** 2
        if centre[0] - 2 * r >= 0 and not np.any(truth[ball] > 0) and np.all(brain[ball]):
            break
    else:
        raise AssertionError("no room for a false-positive blob in the case")
    segmentation[ball] = 1
    errors = error_map(truth, segmentation)
    expected = {
        "classes": on_planes(segmentation, focus),
        "outline": on_planes(label_outline(truth), focus),
        "false positive": on_planes(errors == 1, focus)[0],
        "false negative": on_planes(errors == 2, focus)[0],
    }
    assert np.all(expected["classes"] >= 40) and expected["false positive"] >= 40, expected  # the case shows them
    assert expected["false negative"] >= 40, expected
    return image, truth, segmentation, affine, expected


@pytest.fixture(scope="module")
def out_dir(tmp_path_factory):
    return check_dir(tmp_path_factory, "report-check")


def open_report(browser: Chromium, path: Path):
    """Open the report; return the viewer's box, seconds to 'ready', and the volumes loaded then."""
    start = time.monotonic()
    state = browser.open(path.resolve().as_uri(), READY, timeout=900, poll=0.25)
    ready = time.monotonic() - start
    progress = browser.evaluate("document.body.dataset.volumes + ' loaded | ' + document.body.dataset.loading")
    status = browser.evaluate("document.getElementById('status').textContent")
    assert state == "ready", f"viewer {state}: {status}"
    time.sleep(3)  # let the first frames draw
    box = browser.evaluate(
        "(() => { const r = document.querySelector('#viewer canvas').getBoundingClientRect();"
        " return [r.left, r.top, r.width, r.height]; })()"
    )
    return box, ready, progress


def ask(browser: Chromium, action: str, timeout: float = 900.0) -> str:
    """Run the JavaScript ``action`` (a click, a menu choice), wait until what it asked for is
    loaded and drawn; return what the loading line said right after the action."""
    said = browser.evaluate(f"(() => {{ {action}; return document.getElementById('progress').textContent; }})()")
    deadline = time.monotonic() + timeout
    while browser.evaluate("document.body.dataset.loading") != "":
        assert time.monotonic() < deadline, "an asked-for layer did not load"
        time.sleep(1)
    assert browser.evaluate("document.getElementById('progress').textContent") == ""
    time.sleep(4)  # let it draw
    return said


def switch(browser: Chromium, layer: str) -> str:
    return ask(browser, f"document.querySelector('#controls input[data-layer=\"{layer}\"]').click()")


def problems(browser: Chromium) -> tuple[list[str], list[str]]:
    """Requests that left the file (none allowed) and JavaScript errors."""
    remote = [u for u in browser.requests() if not u.startswith(("file:", "blob:", "data:"))]
    errors = [line for line in browser.console() if line.startswith(("error:", "exception:"))]
    return remote, errors


def test_segmentation_report_shows_brain_and_the_three_label_colours(case, out_dir):
    from utils.visualization.report import write_report

    image, _, segmentation, affine, expected = case
    report = write_report(
        out_dir / "segmentation_only.html", image, affine, segmentation, case_id="PHANTOM_001", overwrite=True
    )
    with Chromium(1200, 1000) as browser:
        box, ready, progress = open_report(browser, report)
        before = colour_counts(browser.screenshot(out_dir / "segmentation_only.png"), box)
        switch(browser, "segmentation")  # overlay off
        hidden_png = browser.screenshot(out_dir / "segmentation_hidden.png")
        hidden = colour_counts(hidden_png, box)
        asked = ask(  # background FLAIR -> T1gd
            browser,
            "const s = document.querySelector('#controls select'); s.value = '2'; s.dispatchEvent(new Event('change'))",
        )
        t1gd_png = browser.screenshot(out_dir / "segmentation_hidden_t1gd.png")
        t1gd = colour_counts(t1gd_png, box)
        remote, errors = problems(browser)
    changed = int(
        np.any(
            np.asarray(Image.open(hidden_png).convert("RGB"), dtype=np.int16)
            != np.asarray(Image.open(t1gd_png).convert("RGB"), dtype=np.int16),
            axis=-1,
        ).sum()
    )
    print(f"\nready after {ready:.1f} s ({progress}); on asking for T1gd: {asked!r}")
    print("segmentation only:", before, "\noverlay switched off:", hidden, "\nT1gd:", t1gd, "changed", changed)
    assert not remote, f"the report reached out: {remote}"
    assert not errors, errors
    assert progress == "2 loaded | ", progress  # the first frame waited for FLAIR and the segmentation only
    assert asked == "loading T1gd ...", asked
    assert before["grey brain"] > 0.05 * before["viewer pixels"], before
    for name, voxels in zip(CLASSES, expected["classes"]):
        assert before[name] > SHARE * voxels, (name, voxels, before)
        assert hidden[name] < 0.05 * before[name], (name, before, hidden)  # the colours were the overlay's
    assert hidden["grey brain"] > 0.9 * before["grey brain"]
    assert t1gd["grey brain"] > 0.05 * t1gd["viewer pixels"] and changed > 0.05 * before["grey brain"]


def test_truth_report_default_view_and_errors_on_demand(case, out_dir):
    from utils.visualization.report import write_report

    image, truth, segmentation, affine, expected = case
    report = write_report(
        out_dir / "with_truth.html", image, affine, segmentation, truth=truth, case_id="PHANTOM_001", overwrite=True
    )
    with Chromium(1200, 1000) as browser:
        box, ready, progress = open_report(browser, report)
        default = colour_counts(browser.screenshot(out_dir / "with_truth.png"), box)
        asked = switch(browser, "errors")
        errors_on = colour_counts(browser.screenshot(out_dir / "with_truth_errors.png"), box)
        switch(browser, "errors")
        switch(browser, "segmentation")
        outline = colour_counts(browser.screenshot(out_dir / "with_truth_outline_only.png"), box)
        switch(browser, "ground truth")
        bare = colour_counts(browser.screenshot(out_dir / "with_truth_no_overlay.png"), box)
        tables = browser.evaluate("document.querySelectorAll('table.numbers').length")
        legend = browser.evaluate("document.querySelector('.legend').textContent")
        remote, errors = problems(browser)
    print(f"\nwith truth ({report.stat().st_size / 2**20:.1f} MiB), ready after {ready:.1f} s ({progress})")
    print("expected voxels on the crosshair planes:", expected)
    print("default:", default, "\nerrors on:", errors_on, "\noutline only:", outline, "\nno overlay:", bare)
    assert not remote, f"the report reached out: {remote}"
    assert not errors, errors
    assert tables == 2
    assert "Filled: segmentation" in legend and "Outline: ground truth" in legend and "off at the start" in legend
    assert progress == "3 loaded | ", progress  # FLAIR, the segmentation and the truth's outline
    assert asked == "loading errors ...", asked
    for counts in (default, errors_on, outline, bare):
        assert counts["grey brain"] > 0.05 * counts["viewer pixels"], counts
    # default: the segmentation's three classes filled, the truth outlined, no error colours
    for name, voxels in zip(CLASSES, expected["classes"]):
        assert default[name] > SHARE * voxels, (name, voxels, default)
    for name, voxels in (("false positive (orange)", "false positive"), ("false negative (cyan)", "false negative")):
        assert errors_on[name] > SHARE * expected[voxels], (name, expected[voxels], errors_on)
        assert default[name] < 0.1 * errors_on[name], (name, default, errors_on)  # errors are off at the start
    # the truth alone: its outline in the class colours
    for name, voxels in zip(CLASSES, expected["outline"]):
        assert outline[name] > SHARE * voxels, (name, voxels, outline)
        assert bare[name] < 0.05 * default[name], (name, bare, default)  # the colours were the overlays'
