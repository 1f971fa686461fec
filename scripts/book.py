"""The course site: a static, navigable website of the executed lessons with their figures.

``python scripts/book.py [--lessons build/lessons] [--out build/book]`` (``make book``, after
``make demo``) takes the executed notebooks ``make demo`` writes, and builds them with Sphinx and
MyST-NB (settings: ``docs/book/conf.py``) without executing anything again. Open
``build/book/index.html`` from disk: the pages work offline and make no request outside the folder.

Each page gets one line under its title: the accelerator the lesson asks for and how long its cells
ran (from the execution times the notebook records). The home page lists every lesson with the same
figures and the number of graded exercises. Before the build, each notebook copy is cleaned of what a
static page cannot run: saved widget state and widget views (a lesson shows a static picture beside
them), and the Colab badge image (kept as a plain link).

The lessons are only read. The site is built in a private folder beside ``--out`` and installed with
:func:`utils.safety.install_folder`: files of an earlier build (listed in ``--out``'s
``.course-files.json``) are replaced or removed, any other file is left alone.
"""

from __future__ import annotations

import argparse
import copy
import datetime as dt
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the checkout's utils, run from anywhere

TOOL = "scripts/book.py"
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
BADGE = re.compile(r"\[!\[Open In Colab\]\([^)]*\)\]\(([^)\s]+)\)")
ACCELERATOR = re.compile(r"\*\*Accelerator:\s*([^*]+?)\s*\*\*")


def run_seconds(nb: dict) -> float | None:
    """Seconds from the first cell's start to the last cell's reply, from the notebook's execution metadata."""
    starts, ends = [], []
    for cell in nb.get("cells", []):
        timing = cell.get("metadata", {}).get("execution", {})
        start = timing.get("iopub.execute_input") or timing.get("shell.execute_reply.started")
        if start:
            starts.append(dt.datetime.fromisoformat(start.replace("Z", "+00:00")))
        if timing.get("shell.execute_reply"):
            ends.append(dt.datetime.fromisoformat(timing["shell.execute_reply"].replace("Z", "+00:00")))
    return (max(ends) - min(starts)).total_seconds() if starts and ends else None


def format_seconds(seconds: float | None) -> str:
    if seconds is None:
        return "not recorded"
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.1f} min"


def lesson_facts(nb: dict) -> dict:
    """Title, accelerator, run time and number of graded exercises of an executed lesson."""
    first = "".join(nb["cells"][0]["source"]) if nb.get("cells") else ""
    title = next((line.lstrip("# ").strip() for line in first.splitlines() if line.startswith("# ")), "")
    accelerator = ACCELERATOR.search(first)
    checks = sum("check" in cell.get("metadata", {}).get("tags", []) for cell in nb.get("cells", []))
    return {
        "title": title,
        "accelerator": accelerator.group(1) if accelerator else "not stated",
        "seconds": run_seconds(nb),
        "exercises": checks,
    }


def static_copy(nb: dict, facts: dict) -> dict:
    """The notebook as a static page shows it: no widget state or views, no badge image, a facts line."""
    nb = copy.deepcopy(nb)
    nb.get("metadata", {}).pop("widgets", None)
    for cell in nb.get("cells", []):
        if cell.get("cell_type") == "markdown":
            source = "".join(cell["source"])
            cell["source"] = BADGE.sub(r"[Open in Colab](\1)", source)
        outputs = []
        for output in cell.get("outputs", []):
            data = output.get("data")
            if data is not None and WIDGET_VIEW in data:
                data.pop(WIDGET_VIEW)
                if set(data) <= {"text/plain"}:
                    continue  # a widget's repr says nothing on a static page
            outputs.append(output)
        if cell.get("cell_type") == "code":
            cell["outputs"] = outputs
    line = (
        f"*Accelerator: {facts['accelerator']}. Run time when this page was built: "
        f"{format_seconds(facts['seconds'])} (the cells' execution times recorded in the notebook).*"
    )
    nb["cells"].insert(1, {"cell_type": "markdown", "metadata": {}, "source": line})
    return nb


def index_page(rows: list[tuple[str, dict]]) -> str:
    lines = [
        "# Brain tumour segmentation in MRI",
        "",
        "The executed lessons of the course, with their outputs and figures, as `make demo` ran them.",
        "Run them yourself from the repository's README (`make lab`, or the Colab link on each page).",
        "",
        "| lesson | accelerator | run time | graded exercises |",
        "|---|---|---|---|",
    ]
    for name, facts in rows:
        title = facts["title"] or name
        lines.append(
            f"| [{title}](lessons/{name}.ipynb) | {facts['accelerator']} | {format_seconds(facts['seconds'])} "
            f"| {facts['exercises'] or '-'} |"
        )
    lines += ["", "```{toctree}", ":maxdepth: 1", ":caption: Lessons", ":hidden:", ""]
    lines += [f"lessons/{name}" for name, _ in rows]
    lines += ["```", ""]
    return "\n".join(lines)


def mathjax_folder() -> Path:
    import jupyter_server_mathjax

    return Path(jupyter_server_mathjax.__file__).parent / "static"


def stage(lessons: list[Path], folder: Path) -> list[tuple[str, dict]]:
    """Write the Sphinx source of the site into ``folder``."""
    shutil.copy2(ROOT / "docs" / "book" / "conf.py", folder / "conf.py")
    shutil.copytree(mathjax_folder(), folder / "_static" / "mathjax", ignore=shutil.ignore_patterns("localization"))
    (folder / "lessons").mkdir()
    rows = []
    for path in lessons:
        try:
            nb = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as err:
            raise ValueError(f"{path} is not a readable notebook: {err}") from err
        if not isinstance(nb, dict) or not nb.get("cells"):
            raise ValueError(f"{path} is not a notebook with cells")
        facts = lesson_facts(nb)
        (folder / "lessons" / path.name).write_text(json.dumps(static_copy(nb, facts)), encoding="utf-8")
        rows.append((path.stem, facts))
    (folder / "index.md").write_text(index_page(rows), encoding="utf-8")
    return rows


def build(lessons_dir: Path, out: Path) -> tuple[Path, float]:
    """Build the site of the executed lessons in ``lessons_dir`` into ``out``; return its index and the seconds taken."""
    from utils.safety import check_target, folder_lock, install_folder

    lessons = sorted(Path(lessons_dir).glob("[0-9][0-9]_*.ipynb"))
    if not lessons:
        raise FileNotFoundError(f"no executed lessons (NN_*.ipynb) in {lessons_dir}: run `make demo` first")
    out = Path(out).absolute()
    check_target(out, "the site folder", input_dirs=[lessons_dir])
    out.parent.mkdir(parents=True, exist_ok=True)
    began = time.monotonic()
    with folder_lock(out.parent, TOOL), tempfile.TemporaryDirectory(dir=out.parent, prefix=".book-") as tmp:
        source, html = Path(tmp) / "source", Path(tmp) / "html"
        source.mkdir()
        stage(lessons, source)
        command = [sys.executable, "-m", "sphinx", "-b", "html", "-q", "-E", "-d", str(Path(tmp) / "doctrees")]
        done = subprocess.run([*command, str(source), str(html)], capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"sphinx-build failed ({done.returncode}): {done.stderr.strip()[-2000:]}")
        for name in (".buildinfo", ".buildinfo.bak"):
            (html / name).unlink(missing_ok=True)
        if (html / "_sources").is_dir() and not any((html / "_sources").iterdir()):
            (html / "_sources").rmdir()  # html_copy_source = False leaves it empty
        install_folder(html, out, TOOL, last="index.html")
    return out / "index.html", time.monotonic() - began


def main(argv: list[str] | None = None) -> int:
    from utils.safety import one_line

    parser = argparse.ArgumentParser(prog=TOOL, description=__doc__.split("\n")[0])
    parser.add_argument("--lessons", type=Path, default=ROOT / "build" / "lessons", help="executed lessons")
    parser.add_argument("--out", type=Path, default=ROOT / "build" / "book", help="site folder")
    args = parser.parse_args(argv)
    try:
        index, seconds = build(args.lessons, args.out)
    except (OSError, ValueError, RuntimeError) as err:
        print(f"{TOOL}: {one_line(err)}", file=sys.stderr)
        return 2
    size = sum(p.stat().st_size for p in index.parent.rglob("*") if p.is_file())
    print(f"built {index} in {seconds:.0f} s ({size / 1e6:.1f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
