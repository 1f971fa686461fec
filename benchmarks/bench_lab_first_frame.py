"""Time to the first frame of the notebook 3-D viewer in JupyterLab (headless Chromium, software WebGL).

    .venv/bin/python benchmarks/bench_lab_first_frame.py OLD_CHECKOUT [NEW_CHECKOUT] [--shape 240x240x155] [--rounds 2]

Runs ``tests/visualization/test_lab_viewer_browser.py`` (a JupyterLab server on a local port,
a notebook that shows a phantom case with ``show_3d``) with the kernel importing ``utils`` from
each checkout in turn (default NEW: this one), interleaved, and prints the seconds from running
the viewer's cell to the first picture of brain on its canvas, and from asking for T1gd until it
is loaded, with the medians and the ratio new / old. Needs chromium and JupyterLab (``.[lab]``).
The times compare within one run, not across machines.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LINE = re.compile(r"first frame ([\d.]+) s after running the cell; T1gd ([\d.]+) s after asking")


def one_run(checkout: Path, shape: str) -> tuple[float, float]:
    env = {**os.environ, "LAB_CHECK_PYTHONPATH": str(checkout), "LAB_CHECK_SHAPE": shape, "PYTHONPATH": str(ROOT)}
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "tests/visualization/test_lab_viewer_browser.py", "-q", "-s"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    found = LINE.search(result.stdout)
    if result.returncode != 0 or not found:
        raise RuntimeError(f"{checkout}: the JupyterLab check failed\n{result.stdout[-3000:]}")
    return float(found.group(1)), float(found.group(2))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("old", type=Path, help="checkout before the change")
    parser.add_argument("new", type=Path, nargs="?", default=ROOT, help="checkout after it (default: this one)")
    parser.add_argument("--shape", default="96x96x60", help="phantom grid, e.g. 240x240x155")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args(argv)
    times: dict[str, list[tuple[float, float]]] = {"old": [], "new": []}
    for r in range(args.rounds):
        for name in ("old", "new"):
            first, t1gd = one_run(getattr(args, name).resolve(), args.shape)
            times[name].append((first, t1gd))
            print(f"round {r + 1} {name}: first frame {first:.1f} s, T1gd {t1gd:.1f} s", flush=True)
    medians = {n: [statistics.median(v[i] for v in times[n]) for i in (0, 1)] for n in times}
    print(f"shape {args.shape}, medians of {args.rounds} interleaved rounds")
    for i, what in enumerate(("first frame", "T1gd after asking")):
        old, new = medians["old"][i], medians["new"][i]
        print(f"{what:18s} old {old:6.1f} s  new {new:6.1f} s  new/old {new / old:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
