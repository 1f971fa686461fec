"""The HTML report in a real browser: headless Chromium opens it from disk, with no network.

Skipped where Chromium is absent (Debian: ``apt-get install chromium``); run
by ``make report-check``, which also keeps the screenshots in build/report-check/.
Environment: ``REPORT_CHECK_SHAPE`` (default ``120x120x78``; ``240x240x155`` is
the real grid, about 3 minutes in software WebGL on 2 cores) and
``REPORT_CHECK_DIR`` (where to keep the report and screenshots).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from browser import Chromium, find_chromium

pytestmark = pytest.mark.skipif(find_chromium() is None, reason="chromium not installed (apt-get install chromium)")
pytest.importorskip("ipyniivue")

HUES = {
    "edema (red)": (345, 15),
    "non-enhancing (green)": (100, 140),
    "enhancing (blue)": (210, 235),
    "false positive (orange)": (25, 40),
    "false negative (cyan)": (170, 190),
}
READY = "document.body && document.body.dataset.viewer"


def colour_counts(png: Path, box) -> dict[str, int]:
    """Pixels of each overlay colour (by hue, saturated) and of grey brain inside ``box``."""
    left, top, width, height = (int(round(v)) for v in box)
    hsv = np.asarray(
        Image.open(png).convert("RGB").crop((left, top, left + width, top + height)).convert("HSV"), dtype=np.float32
    )
    hue, sat, val = hsv[..., 0] * 360.0 / 255.0, hsv[..., 1] / 255.0, hsv[..., 2] / 255.0
    vivid = (sat > 0.45) & (val > 0.3)
    counts = {}
    for name, (lo, hi) in HUES.items():
        in_range = ((hue >= lo) | (hue <= hi)) if lo > hi else ((hue >= lo) & (hue <= hi))
        counts[name] = int((vivid & in_range).sum())
    counts["grey brain"] = int(((sat < 0.1) & (val > 0.25)).sum())
    counts["viewer pixels"] = int(width * height)
    return counts


@pytest.fixture(scope="module")
def case():
    from scipy import ndimage

    from utils.data.phantom import make_phantom_case

    shape = tuple(int(v) for v in os.environ.get("REPORT_CHECK_SHAPE", "120x120x78").split("x"))
    image, label, affine = make_phantom_case(0, shape=shape)  # a case with all three classes
    assert set(np.unique(label)) == {0, 1, 2, 3}, "the report test needs a case with every class"
    prediction = np.roll(label, 2, axis=0)  # a plausible imperfect segmentation
    prediction[~ndimage.binary_erosion(prediction > 0)] = 0
    return image, label, prediction, affine


@pytest.fixture(scope="module")
def out_dir(tmp_path_factory):
    path = os.environ.get("REPORT_CHECK_DIR")
    if path:
        Path(path).mkdir(parents=True, exist_ok=True)
        return Path(path)
    return tmp_path_factory.mktemp("report-check")


def open_report(browser: Chromium, path: Path) -> dict:
    state = browser.open(path.resolve().as_uri(), READY, timeout=600)
    status = browser.evaluate("document.getElementById('status').textContent")
    assert state == "ready", f"viewer {state}: {status}"
    time.sleep(5)  # let the first frames draw
    return browser.evaluate(
        "(() => { const r = document.querySelector('#viewer canvas').getBoundingClientRect();"
        " return [r.left, r.top, r.width, r.height]; })()"
    )


def only_local(urls: list[str]) -> list[str]:
    return [u for u in urls if not u.startswith(("file:", "blob:", "data:"))]


def test_segmentation_report_shows_brain_and_the_three_label_colours(case, out_dir):
    from utils.visualization.report import write_report

    image, label, _, affine = case
    report = write_report(
        out_dir / "segmentation_only.html", image, affine, label, case_id="PHANTOM_001", overwrite=True
    )
    with Chromium(1200, 1000) as browser:
        box = open_report(browser, report)
        shot = browser.screenshot(out_dir / "segmentation_only.png")
        before = colour_counts(shot, box)
        browser.evaluate("document.querySelector('#controls input[type=checkbox]').click()")  # overlay off
        time.sleep(5)
        hidden_png = browser.screenshot(out_dir / "segmentation_hidden.png")
        hidden = colour_counts(hidden_png, box)
        browser.evaluate(
            "(() => { const s = document.querySelector('#controls select'); s.value = '2';"
            " s.dispatchEvent(new Event('change')); })()"
        )  # background FLAIR -> T1gd
        time.sleep(8)
        t1gd_png = browser.screenshot(out_dir / "segmentation_hidden_t1gd.png")
        t1gd = colour_counts(t1gd_png, box)
        requests = browser.requests()
    changed = int(
        np.any(
            np.asarray(Image.open(hidden_png).convert("RGB"), dtype=np.int16)
            - np.asarray(Image.open(t1gd_png).convert("RGB"), dtype=np.int16)
            != 0,
            axis=-1,
        ).sum()
    )
    print("T1gd background: changed pixels", changed, t1gd)
    print("\nsegmentation only:", before, "\noverlay switched off:", hidden)
    assert not only_local(requests), f"the report reached out: {only_local(requests)}"
    assert before["grey brain"] > 0.05 * before["viewer pixels"], before
    for name in ("edema (red)", "non-enhancing (green)", "enhancing (blue)"):
        assert before[name] > 100, (name, before)
        assert hidden[name] < 0.05 * before[name], (name, before, hidden)  # the colours were the overlay's
    assert hidden["grey brain"] > 0.9 * before["grey brain"]
    assert t1gd["grey brain"] > 0.05 * t1gd["viewer pixels"] and changed > 0.05 * before["grey brain"]


def test_truth_report_shows_errors_too(case, out_dir):
    from utils.visualization.report import write_report

    image, label, prediction, affine = case
    report = write_report(
        out_dir / "with_truth.html", image, affine, prediction, truth=label, case_id="PHANTOM_001", overwrite=True
    )
    with Chromium(1200, 1000) as browser:
        box = open_report(browser, report)
        counts = colour_counts(browser.screenshot(out_dir / "with_truth.png"), box)
        tables = browser.evaluate("document.querySelectorAll('table.numbers').length")
        requests = browser.requests()
    print(f"\nwith truth ({report.stat().st_size / 2**20:.1f} MiB):", counts)
    assert not only_local(requests), f"the report reached out: {only_local(requests)}"
    assert tables == 2
    assert counts["grey brain"] > 0.05 * counts["viewer pixels"], counts
    for name in ("false positive (orange)", "false negative (cyan)", "enhancing (blue)"):
        assert counts[name] > 50, (name, counts)
