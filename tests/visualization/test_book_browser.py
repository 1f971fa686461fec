"""The course site (``make book``, scripts/book.py) in a real browser: headless Chromium opens it from disk.

Every lesson page loads; every figure the notebook holds is on its page as an image that drew
non-blank pixels (measured on a screenshot of the image's box); the math is typeset by the bundled
MathJax; and no request leaves the site's folder (Chromium records every request, and cannot resolve
any host anyway). The home page lists each lesson with its accelerator and run time, and each page
says them under its title.

``make test`` builds a small site from two executed notebooks made here (an image, a widget view, an
animated GIF, math, a Colab badge), in seconds. ``make book-check`` runs the same test on the real
site of the lessons ``make demo`` executed (``BOOK_CHECK_LESSONS``, built into ``BOOK_CHECK_DIR``).
Skipped where Chromium is absent (Debian: ``apt-get install chromium``).
"""

from __future__ import annotations

import base64
import io
import json
import os
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from browser import Chromium, find_chromium

pytestmark = pytest.mark.skipif(find_chromium() is None, reason="chromium not installed (apt-get install chromium)")
pytest.importorskip("myst_nb")

import book  # noqa: E402  (scripts/book.py; scripts/ is on the test path)

IMAGE_TYPES = ("image/png", "image/gif", "image/jpeg", "image/svg+xml")
READY = "document.readyState === 'complete' && [...document.images].every(i => i.complete)"
MATH_DONE = "!window.MathJax || !MathJax.Hub || (MathJax.Hub.queue.pending === 0 && !MathJax.Hub.queue.running)"
FIGURES = """[...document.querySelectorAll('.cell_output img, .output img')].map(i => {
  i.scrollIntoView(); const r = i.getBoundingClientRect();
  return {src: i.src, ok: i.complete && i.naturalWidth > 0, x: r.left + scrollX, y: r.top + scrollY,
          width: r.width, height: r.height};
})"""


def _png(colours: list[tuple[float, float, float]], gif: bool = False) -> str:
    """A small picture with stripes of ``colours`` on black, base64 (what a notebook output holds)."""
    pixels = np.zeros((60, 90, 3), dtype=np.uint8)
    for k, colour in enumerate(colours):
        pixels[10:50, 10 + 25 * k : 30 + 25 * k] = np.asarray(colour) * 255
    buffer = io.BytesIO()
    if gif:
        frames = [Image.fromarray(pixels), Image.fromarray(255 - pixels)]
        frames[0].save(buffer, format="GIF", save_all=True, append_images=frames[1:], duration=200, loop=0)
    else:
        Image.fromarray(pixels).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def _executed_lesson(number: str, accelerator: str, with_math: bool) -> dict:
    """An executed notebook as ``make demo`` leaves it, with what the site must handle."""
    from utils.data.labels import CLASS_COLORS

    stamp = "2026-12-06T15:2{}:{:02d}.000000Z"
    badge = "https://colab.research.google.com/assets/colab-badge.svg"
    title = (
        f"# Lesson {number} - A lesson\n\nWhy before how.\n\n**Accelerator: {accelerator}**\n\n"
        f"[![Open In Colab]({badge})](https://colab.research.google.com/github/o/r/blob/main/notebooks/x.ipynb)"
    )
    code = {"cell_type": "code", "execution_count": 1, "source": "fig", "metadata": {}}
    return {
        "nbformat": 4,
        "nbformat_minor": 5,
        "metadata": {"widgets": {"application/vnd.jupyter.widget-state+json": {"state": {}}}},
        "cells": [
            {"cell_type": "markdown", "metadata": {}, "source": title},
            {
                **code,
                "metadata": {"execution": {"iopub.execute_input": stamp.format(1, 0)}},
                "outputs": [
                    {
                        "output_type": "display_data",
                        "metadata": {},
                        "data": {"image/png": _png(list(CLASS_COLORS)), "text/plain": "<Figure>"},
                    }
                ],
            },
            {"cell_type": "markdown", "metadata": {}, "source": "Dice: $\\frac{2|A \\cap B|}{|A| + |B|}$"}
            if with_math
            else {"cell_type": "markdown", "metadata": {}, "source": "No math here."},
            {
                **code,
                "metadata": {"tags": ["check"]},
                "outputs": [
                    {
                        "output_type": "display_data",
                        "metadata": {},
                        "data": {
                            "application/vnd.jupyter.widget-view+json": {"model_id": "abc", "version_major": 2},
                            "text/plain": "NiiVue(height=400)",
                        },
                    },
                    {"output_type": "display_data", "metadata": {}, "data": {"image/gif": _png([(1, 1, 1)], gif=True)}},
                ],
            },
            {
                **code,
                "metadata": {"execution": {"shell.execute_reply": stamp.format(2, 5)}},
                "outputs": [{"output_type": "stream", "name": "stdout", "text": "All public tests passed\n"}],
            },
        ],
    }


def _image_outputs(notebook: Path) -> int:
    nb = json.loads(notebook.read_text())
    return sum(
        any(kind in output.get("data", {}) for kind in IMAGE_TYPES)
        for cell in nb["cells"]
        for output in cell.get("outputs", [])
    )


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """``(lessons folder, site folder, build seconds)``: the real site with BOOK_CHECK_LESSONS, else a small one."""
    lessons = os.environ.get("BOOK_CHECK_LESSONS")
    if lessons:
        out = Path(os.environ.get("BOOK_CHECK_DIR") or tmp_path_factory.mktemp("book") / "book")
        lessons = Path(lessons)
    else:
        root = tmp_path_factory.mktemp("book")
        lessons, out = root / "lessons", root / "book"
        lessons.mkdir()
        for number, accelerator, math in (("01", "CPU", True), ("02", "GPU (CPU demo)", False)):
            nb = _executed_lesson(number, accelerator, math)
            (lessons / f"{number}_lesson.ipynb").write_text(json.dumps(nb))
    index, seconds = book.build(lessons, out)
    return lessons, index.parent, seconds


def _blank(png: bytes) -> tuple[bool, str]:
    pixels = np.asarray(Image.open(io.BytesIO(png)).convert("L"), dtype=np.float32)
    spread = float(pixels.std())
    return spread < 2.0, f"{pixels.shape[1]}x{pixels.shape[0]} px, grey level spread {spread:.1f}"


def _wait(browser: Chromium, expression: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not browser.evaluate(expression):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{expression!r} still false after {timeout:.0f} s")
        time.sleep(0.2)


def test_every_lesson_page_shows_its_figures_offline(site):
    lessons, folder, seconds = site
    notebooks = sorted(lessons.glob("[0-9][0-9]_*.ipynb"))
    size = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
    print(f"\nsite: {len(notebooks)} lessons, built in {seconds:.1f} s, {size / 1e6:.1f} MB")
    with Chromium(width=1200, height=900) as browser:
        browser.open(folder.joinpath("index.html").as_uri(), READY, timeout=60, poll=0.2)
        home = browser.evaluate("document.body.innerText")
        links = browser.evaluate("[...document.querySelectorAll('a')].map(a => a.href)")
        for notebook in notebooks:
            page = folder / "lessons" / f"{notebook.stem}.html"
            assert page.as_uri() in links, f"the home page links {page.name}"
            facts = book.lesson_facts(json.loads(notebook.read_text()))
            assert facts["accelerator"] in home and book.format_seconds(facts["seconds"]) in home
        for notebook in notebooks:
            page = folder / "lessons" / f"{notebook.stem}.html"
            browser.open(page.as_uri(), READY, timeout=60, poll=0.2)
            _wait(browser, MATH_DONE)
            text = browser.evaluate("document.body.innerText")
            facts = book.lesson_facts(json.loads(notebook.read_text()))
            assert f"Accelerator: {facts['accelerator']}" in text and book.format_seconds(facts["seconds"]) in text
            figures = browser.evaluate(FIGURES)
            expected = _image_outputs(notebook)
            assert len(figures) == expected, (
                f"{page.name}: {len(figures)} figures on the page, {expected} in the notebook"
            )
            for k, figure in enumerate(figures):
                assert figure["ok"], f"{page.name}: figure {k} ({figure['src']}) did not load"
                clip = {key: figure[key] for key in ("x", "y", "width", "height")} | {"scale": 1}
                shot = browser.call(
                    "Page.captureScreenshot", session=True, format="png", clip=clip, captureBeyondViewport=True
                )
                blank, what = _blank(base64.b64decode(shot["data"]))
                assert not blank, f"{page.name}: figure {k} ({figure['src']}) is blank: {what}"
            print(f"{page.name}: {len(figures)} figures, each drawn with non-blank pixels")
            if "$" in "".join("".join(c["source"]) for c in json.loads(notebook.read_text())["cells"]):
                typeset = browser.evaluate("document.querySelectorAll('.MathJax, .MathJax_Display').length")
                assert typeset > 0, f"{page.name}: its math was not typeset"
        outside = [url for url in browser.requests() if not url.startswith(("file://", "data:"))]
        assert not outside, f"requests left the site: {outside[:5]}"
        errors = [line for line in browser.console() if line.startswith(("exception", "error"))]
        assert not errors, errors
    print(f"{len(browser.requests())} requests, all inside the site folder")


def test_static_copy_drops_widgets_and_the_badge_image():
    nb = _executed_lesson("01", "CPU", True)
    facts = book.lesson_facts(nb)
    assert facts == {"title": "Lesson 01 - A lesson", "accelerator": "CPU", "seconds": 65.0, "exercises": 1}
    page = book.static_copy(nb, facts)
    assert "widgets" not in page["metadata"] and "widgets" in nb["metadata"], "the input notebook is unchanged"
    assert (
        "colab-badge.svg" not in page["cells"][0]["source"] and "[Open in Colab](https://" in page["cells"][0]["source"]
    )
    assert page["cells"][1]["source"].startswith("*Accelerator: CPU. Run time when this page was built: 65 s")
    outputs = page["cells"][4]["outputs"]
    assert [list(o["data"]) for o in outputs] == [["image/gif"]], "the widget view (a repr only) is gone"


def test_a_folder_without_lessons_is_refused(tmp_path):
    with pytest.raises(FileNotFoundError, match="no executed lessons .* run `make demo` first"):
        book.build(tmp_path, tmp_path / "book")
    assert not (tmp_path / "book").exists()
