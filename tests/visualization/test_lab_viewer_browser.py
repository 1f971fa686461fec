"""The notebook 3-D viewer (lessons 01 and 06) in a real JupyterLab, in headless Chromium.

The test starts a JupyterLab server on a local port with a tiny notebook that shows a
phantom case with ``show_3d``, opens it in headless Chromium (software WebGL, no network),
runs the cells with the keyboard, and checks what a learner sees: the canvas shows grey
brain and the three label colours (pixel counts against the labelled voxels on the planes
through the crosshair), the labels switch goes off and on, another sequence loads when
asked, no JavaScript error, no request leaves the machine. It prints the seconds to the
first frame and to T1gd after asking for it.

Skipped without Chromium or JupyterLab (``pip install -e .[lab]``); run by
``make report-check`` (screenshots in ``$REPORT_CHECK_DIR``). Environment:
``LAB_CHECK_SHAPE`` (else ``REPORT_CHECK_SHAPE``, else ``96x96x60``; ``240x240x155`` is the real grid) and
``LAB_CHECK_PYTHONPATH`` (the checkout whose ``utils`` the kernel imports; default this
one: point it at another checkout to time the viewer before a change).
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import nbformat
import numpy as np
import pytest

from browser import Chromium, check_dir, find_chromium

pytestmark = pytest.mark.skipif(find_chromium() is None, reason="chromium not installed (apt-get install chromium)")
pytest.importorskip("jupyterlab", reason="JupyterLab not installed (pip install -e .[lab])")
pytest.importorskip("ipyniivue")

from test_report_browser import CLASSES, SHARE, colour_counts, on_planes  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
CANVAS = (
    "(() => { const c = document.querySelector('.jp-OutputArea canvas'); if (!c) return null;"
    " const r = c.getBoundingClientRect(); return [r.left, r.top, r.width, r.height]; })()"
)
PROGRESS = (
    "(() => { const h = [...document.querySelectorAll('.jp-OutputArea .widget-html-content')]"
    ".map(e => e.textContent).filter(t => t.includes('loading')); return h.join('|'); })()"
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def press_shift_enter(browser: Chromium) -> None:
    for kind in ("rawKeyDown", "keyUp"):
        browser.call(
            "Input.dispatchKeyEvent",
            session=True,
            type=kind,
            key="Enter",
            code="Enter",
            windowsVirtualKeyCode=13,
            modifiers=8,
        )


def wait_for(browser: Chromium, expression: str, timeout: float, what: str, poll: float = 0.5):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = browser.evaluate(expression)
        if value:
            return value
        time.sleep(poll)
    raise TimeoutError(f"{what}: still not there after {timeout:.0f} s")


@pytest.fixture(scope="module")
def out_dir(tmp_path_factory):
    return check_dir(tmp_path_factory, "lab-check")


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """A JupyterLab server on a free local port, its own config, runtime and workspace folders."""
    home = tmp_path_factory.mktemp("lab")
    chosen = os.environ.get("LAB_CHECK_SHAPE") or os.environ.get("REPORT_CHECK_SHAPE") or "96x96x60"
    shape = tuple(int(v) for v in chosen.split("x"))
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [
        nbformat.v4.new_code_cell(
            "from utils.data.phantom import make_phantom_case\n"
            "from utils.visualization.viewer3d import show_3d\n"
            f"image, label, affine = make_phantom_case(0, shape={shape})"
        ),
        nbformat.v4.new_code_cell('show_3d(image, affine, {"labels": label})'),
    ]
    nbformat.write(nb, home / "viewer.ipynb")
    port, token = free_port(), secrets.token_hex(16)
    env = {
        **os.environ,
        "PYTHONPATH": os.environ.get("LAB_CHECK_PYTHONPATH", str(ROOT)),
        "COURSE_MODE": "ci",
        "JUPYTER_CONFIG_DIR": str(home / "config"),
        "JUPYTER_RUNTIME_DIR": str(home / "runtime"),
        "JUPYTERLAB_SETTINGS_DIR": str(home / "settings"),
        "JUPYTERLAB_WORKSPACES_DIR": str(home / "workspaces"),
    }
    log = open(home / "server.log", "wb")
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "jupyterlab",
            "--no-browser",
            "--ip=127.0.0.1",
            f"--port={port}",
            f"--IdentityProvider.token={token}",
            f"--ServerApp.root_dir={home}",
            "--allow-root",  # CI machines run as root
            "--LabApp.news_url=",
            "--LabApp.extension_manager=readonly",
            "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
        ],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/api/status?token={token}", timeout=2).read()
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError((home / "server.log").read_text()[-2000:]) from None
                time.sleep(0.5)
        image, label, _ = __import__("utils.data.phantom", fromlist=["make_phantom_case"]).make_phantom_case(
            0, shape=shape
        )
        yield {"url": f"http://127.0.0.1:{port}/lab/tree/viewer.ipynb?token={token}", "port": port, "label": label}
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        log.close()


def test_lab_viewer_renders_the_labels_and_its_controls_respond(lab, out_dir):
    from utils.visualization.viewer3d import focus_voxel

    label = lab["label"]
    expected = on_planes(label, focus_voxel({"labels": label}, label.shape))
    with Chromium(1300, 1100, local=True) as browser:
        browser.open(lab["url"], "document.querySelectorAll('.jp-Notebook .jp-Cell').length === 2", timeout=180)
        wait_for(
            browser,
            "(() => { const s = document.querySelector('.jp-Notebook-ExecutionIndicator');"
            " return s && s.getAttribute('data-status') === 'idle'; })()",
            180,
            "the kernel",
        )
        browser.evaluate("document.querySelector('.jp-Notebook .jp-Cell .jp-InputArea-editor').click()")
        time.sleep(1)
        press_shift_enter(browser)  # the case
        wait_for(
            browser,
            "document.querySelectorAll('.jp-Notebook .jp-Cell')[0].querySelector('.jp-InputPrompt')"
            ".textContent.includes('[1]')",
            300,
            "the first cell",
        )
        start = time.monotonic()
        press_shift_enter(browser)  # the viewer
        first = None
        while first is None:
            assert time.monotonic() - start < 900, "no brain on the canvas"
            box = browser.evaluate(CANVAS)
            if box and box[2] > 10:
                png = browser.screenshot(out_dir / "lab_viewer_first.png")
                counts = colour_counts(png, box)
                if counts["grey brain"] > 0.02 * counts["viewer pixels"]:
                    first = time.monotonic() - start
            time.sleep(0.5)
        wait_for(browser, f"!{PROGRESS}", 900, "the first volumes")
        time.sleep(3)
        shown = colour_counts(browser.screenshot(out_dir / "lab_viewer.png"), box)
        browser.evaluate("document.querySelector('.jp-OutputArea .widget-checkbox input').click()")
        time.sleep(3)
        hidden = colour_counts(browser.screenshot(out_dir / "lab_viewer_labels_off.png"), box)
        browser.evaluate("document.querySelector('.jp-OutputArea .widget-checkbox input').click()")
        asked = time.monotonic()
        browser.evaluate(
            "(() => { const s = document.querySelector('.jp-OutputArea .widget-dropdown select');"
            " s.value = [...s.options].find(o => o.textContent === 'T1gd').value;"
            " s.dispatchEvent(new Event('change', {bubbles: true})); })()"
        )
        said = wait_for(browser, PROGRESS, 60, "the loading line", poll=0.1)
        wait_for(browser, f"!{PROGRESS}", 900, "T1gd")
        t1gd = time.monotonic() - asked
        time.sleep(3)
        t1gd_counts = colour_counts(browser.screenshot(out_dir / "lab_viewer_t1gd.png"), box)
        requests = browser.requests()
        console = browser.console()
    local = (f"http://127.0.0.1:{lab['port']}/", f"ws://127.0.0.1:{lab['port']}/", "data:", "blob:")
    remote = [u for u in requests if not u.startswith(local)]
    errors = [line for line in console if line.startswith(("error:", "exception:"))]
    print(f"\nfirst frame {first:.1f} s after running the cell; T1gd {t1gd:.1f} s after asking ({said!r})")
    print("expected voxels on the planes:", dict(zip(CLASSES, expected.tolist())))
    print("labels on:", shown, "\nlabels off:", hidden, "\nT1gd:", t1gd_counts)
    assert not remote, f"the page reached out: {remote}"
    assert not errors, errors
    assert said.startswith("loading T1gd"), said
    assert shown["grey brain"] > 0.05 * shown["viewer pixels"], shown
    for name, voxels in zip(CLASSES, expected):
        assert shown[name] > SHARE * voxels, (name, voxels, shown)
        assert hidden[name] < 0.05 * shown[name], (name, shown, hidden)
    assert t1gd_counts["grey brain"] > 0.05 * t1gd_counts["viewer pixels"], t1gd_counts
    assert json.dumps(shown)  # counts are plain numbers (printed above for the record)
    assert np.isfinite(first)
