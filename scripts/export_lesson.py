"""Execute lessons and export them to HTML the way the course shares them (``make demo``).

Run ``python scripts/export_lesson.py --out build/lessons notebooks/solutions/01_mri_exploration.ipynb ...``.
For each notebook it writes the executed ``.ipynb`` and an ``.html`` beside it:

* the notebook runs in its own folder with a fresh kernel (as ``jupyter nbconvert --execute``);
* **no widget state is stored** (``metadata.widgets`` is dropped after the run): the viewers'
  state is the volumes themselves (lesson 01 was 16 MB, 06 31 MB with it), and a page
  cannot run the widgets without a kernel anyway. Each viewer's display bundle carries a
  static picture of its view (:class:`utils.visualization.viewer3d.ViewerBox`), which
  nbconvert picks when the widget state is absent;
* text progress bars keep their last line only (``coalesce_streams``);
* the HTML uses ``scripts/templates/course_offline``: JupyterLab's template without the
  scripts it would fetch from CDNs, and remote Markdown pictures (the Colab badge) become
  their alt text, so the page makes no network request.
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from pathlib import Path

import nbformat

REMOTE_IMAGE = re.compile(r"!\[([^\]]*)\]\(https?://[^)]*\)")
"""A Markdown image fetched from the network, e.g. ``![Open In Colab](https://colab.research.google.com/...svg)``."""
TEMPLATE = Path(__file__).resolve().parent / "templates" / "course_offline" / "course_offline.html.j2"


def execute(notebook: Path | str, out_dir: Path | str, timeout: int = 1800, kernel: str = "python3") -> Path:
    """Run ``notebook`` top to bottom in its folder; write the executed copy into ``out_dir``.

    Returns:
        The executed notebook's path (``out_dir / notebook.name``).
    """
    from nbclient import NotebookClient

    from utils.safety import write_bytes_atomic

    notebook, out_dir = Path(notebook), Path(out_dir)
    nb = nbformat.read(notebook, as_version=4)
    NotebookClient(
        nb,
        timeout=timeout,
        kernel_name=kernel,
        coalesce_streams=True,
        resources={"metadata": {"path": str(notebook.resolve().parent)}},
    ).execute()
    # The state is dropped after the run: nbclient 0.10-0.11 with store_widget_state=False fails
    # (KeyError in output_widget.py) on an ipywidgets Output written to during the run.
    nb.metadata.pop("widgets", None)
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / notebook.name
    write_bytes_atomic(target, nbformat.writes(nb).encode("utf-8"))
    return target


def to_html(notebook: Path | str, out_dir: Path | str | None = None) -> Path:
    """Export an executed notebook to one offline HTML page (images embedded, no CDN scripts).

    Returns:
        The page's path (beside the notebook, or in ``out_dir``).
    """
    from nbconvert import HTMLExporter

    from utils.safety import write_bytes_atomic

    notebook = Path(notebook)
    nb = nbformat.read(notebook, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "markdown":  # a remote picture (the Colab badge) becomes its alt text
            cell.source = REMOTE_IMAGE.sub(r"\1", cell.source)
    exporter = HTMLExporter(template_file=str(TEMPLATE))
    body, _ = exporter.from_notebook_node(nb, resources={"metadata": {"name": notebook.stem}})
    target = Path(out_dir or notebook.parent) / (notebook.stem + ".html")
    write_bytes_atomic(target, body.encode("utf-8"))
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("notebooks", nargs="+", type=Path)
    parser.add_argument("--out", type=Path, required=True, help="folder for the executed notebooks and pages")
    parser.add_argument("--timeout", type=int, default=1800, help="seconds per cell")
    args = parser.parse_args(argv)
    for notebook in args.notebooks:
        print(f"== executing {notebook}", flush=True)
        start = time.monotonic()
        executed = execute(notebook, args.out, args.timeout)
        page = to_html(executed)
        print(
            f"   {time.monotonic() - start:.0f} s: {executed} ({executed.stat().st_size / 2**20:.1f} MiB), "
            f"{page} ({page.stat().st_size / 2**20:.1f} MiB)",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's utils
    sys.exit(main())
