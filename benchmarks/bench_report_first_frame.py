"""Time to the first frame of the HTML report's viewer in headless Chromium (software WebGL).

    .venv/bin/python benchmarks/bench_report_first_frame.py REPORT.html [REPORT.html ...]

For each report, opens it from disk in a fresh headless Chromium (SwiftShader,
as on a machine without a GPU) and takes a screenshot of the viewer's box
every half second until it shows grey brain (more than 2% of its pixels grey
and bright). Prints the seconds from navigation to that first picture, to
the page's controls (the viewer has loaded what it loads at the start) and,
on a page that loads a sequence when asked, how long T1gd then takes. Run
reports of the same case, written by the code before and after a change, in
one call: the times compare within a run, not across machines.
"""

from __future__ import annotations

import io
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from browser import Chromium  # noqa: E402

BOX = (
    "(() => { const e = document.querySelector('#viewer canvas') || document.getElementById('viewer');"
    " if (!e) return null; const r = e.getBoundingClientRect(); return [r.left, r.top, r.width, r.height]; })()"
)


def grey_fraction(png: bytes) -> float:
    hsv = np.asarray(Image.open(io.BytesIO(png)).convert("RGB").convert("HSV"), dtype=np.float32) / 255.0
    return float(((hsv[..., 1] < 0.1) & (hsv[..., 2] > 0.25)).mean())


def first_frame(path: Path, timeout: float = 900.0) -> tuple[float, float, float | None]:
    """Seconds to the first picture of brain, to the page's controls (``data-viewer="ready"``: the
    viewer has loaded what it loads at the start) and, on a page that loads layers when asked,
    from asking for T1gd until it is loaded (None on a page that loads all at the start)."""
    import base64

    with Chromium(1200, 1000) as browser:
        for domain in ("Page", "Runtime"):
            browser.call(f"{domain}.enable", session=True)
        start = time.monotonic()
        browser.call("Page.navigate", session=True, url=path.resolve().as_uri())
        first = None
        while first is None:
            if time.monotonic() - start > timeout:
                raise TimeoutError(f"{path}: no brain on screen after {timeout:.0f} s")
            box = browser.evaluate(BOX)
            if box and box[2] > 10:
                clip = dict(x=box[0], y=box[1], width=box[2], height=box[3], scale=1)
                data = browser.call("Page.captureScreenshot", session=True, format="png", clip=clip)["data"]
                if grey_fraction(base64.b64decode(data)) > 0.02:
                    first = time.monotonic() - start
            time.sleep(0.5)
        while browser.evaluate("document.body.dataset.viewer") != "ready":
            time.sleep(0.5)
        ready = time.monotonic() - start
        if not browser.evaluate("!!document.getElementById('progress')"):
            return first, ready, None
        asked = time.monotonic()
        browser.evaluate(
            "(() => { const s = document.querySelector('#controls select'); s.value = '2';"
            " s.dispatchEvent(new Event('change')); })()"
        )
        while browser.evaluate("document.body.dataset.loading") != "":
            time.sleep(0.5)
        return first, ready, time.monotonic() - asked


def main(paths: list[str]) -> None:
    for name in paths:
        path = Path(name)
        first, ready, asked = first_frame(path)
        size = path.stat().st_size / 2**20
        rest = "" if asked is None else f", T1gd loaded {asked:.1f} s after asking for it"
        print(f"{path.name} ({size:.1f} MiB): first frame {first:.1f} s, controls {ready:.1f} s{rest}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
