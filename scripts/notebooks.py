"""Build the learner and solution notebooks from one jupytext source per lesson, and how to author them.

Run ``python scripts/notebooks.py`` (``make notebooks``) after editing a
lesson; ``python scripts/notebooks.py --check`` fails when a generated file is
stale (``tests/test_notebooks.py`` runs the same check). Generated notebooks
are committed and never edited by hand.

What it generates
-----------------
Each lesson is written once, as ``notebooks/NN_name.py`` in jupytext's percent
format. From it this script writes

* ``notebooks/NN_name.ipynb`` - the learner version: every block between
  ``### BEGIN SOLUTION`` and ``### END SOLUTION`` becomes
  ``### START CODE HERE ###``, the block's ``# Hint`` comments, a stub that
  raises ``NotImplementedError``, and ``### END CODE HERE ###``; cells tagged
  ``check`` get nbval's ``raises-exception`` tag (they fail until the learner
  finishes the exercise);
* ``notebooks/solutions/NN_name.ipynb`` - the same lesson with the solutions
  filled in between ``### START CODE HERE ###`` and ``### END CODE HERE ###``;
* the README's Colab badges, pointed at :data:`COURSE_REPO`.

A code cell that draws a figure carries its alt text as cell metadata
(``# %% alt="What the figure shows."``); the generated notebooks add a
caption cell with that text under it (:func:`with_captions`), so the text
survives exports that drop cell metadata.

The token ``COLAB_URL`` in a source becomes the Colab link of the notebook it
lands in, ``COURSE_REPO`` the GitHub repository and ``COURSE_REF`` the git
tag of this release (``v`` + the package version): the Colab setup cell
installs the course from ``COURSE_REPO@COURSE_REF``, the release the notebook
belongs to. Each notebook records its origin in ``metadata.course``
(:func:`utils.course.lessons.lesson_stamp`), which the grader reads.

Adding a lesson
---------------
1. Copy an existing source to ``notebooks/NN_short_name.py`` (two digits: the
   order). Keep its opening cells: a markdown title ``# Lesson NN - Title``, a
   one-line description, "You will learn to", ``**Accelerator: CPU**`` (or
   GPU) and the Colab badge ``[![Open In Colab](...)](COLAB_URL)``; then the
   setup cell that installs only on Colab, one cell tagged ``imports`` and one
   tagged ``parameters``.
2. Sizes (volume, patch, steps, epochs) come from ``utils.config`` (the course
   mode), never from literals that CI would have to rewrite.
3. Add the lesson's row to the README's table, run ``make notebooks``, and
   execute it with ``COURSE_MODE=ci pytest --nbval-lax --nbval-current-env
   notebooks/NN_short_name.ipynb notebooks/solutions/NN_short_name.ipynb``.

Adding an exercise and its check
--------------------------------
1. The reference goes into ``utils`` (its module by topic), exported from
   ``utils/__init__.py``, with "Taught in lesson NN, exercise K." in its
   docstring.
2. In the lesson source: a markdown cell "### Exercise K: fn_name" with a
   short spec and the expected output; a code cell with the function, its
   docstring and its body between ``### BEGIN SOLUTION`` and
   ``### END SOLUTION`` (``# Hint:`` comments in the block are kept in the
   learner's stub); then a cell tagged ``check`` calling
   ``check_fn_name(fn_name)``. Later cells use ``utils.fn_name``, so an
   unfinished exercise never breaks the rest of the lesson.
3. The check goes into ``utils/course/checks/lessonNN.py``: a tests function
   decorated with ``@exercise("fn_name", LESSON)`` that runs each test through
   ``run.test(description, body)`` (``grading=True`` selects other inputs for
   the grader), and ``check_fn_name(fn) = run_check("fn_name", fn)``, exported
   from ``utils/course/checks/__init__.py``.
4. Register the exercise in ``tests/course/exercise_registry.py`` (its reference and
   the inputs on which the notebook's solution must agree with it), and add
   learner-like wrong answers (must fail) and correct answers in other styles
   (must pass) to ``tests/course/test_checks_mistakes.py``.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import sys
from pathlib import Path

import jupytext
import nbformat

if __name__ == "__main__":  # run as a script: this checkout's utils, without starting Keras (not needed here)
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    os.environ.setdefault("BRATS_COURSE_NO_KERAS", "1")

from utils import __version__  # noqa: E402
from utils.course.lessons import DEF, Lesson, lesson_stamp, lessons, notebooks_dir  # noqa: E402

__all__ = [
    "COURSE_REPO",
    "DEF",
    "Lesson",
    "build",
    "colab_url",
    "course_ref",
    "learner_source",
    "lesson_stamp",
    "lessons",
    "notebooks_dir",
    "render",
    "solution_blocks",
    "solution_source",
]

COURSE_REPO = "brats-course/brain-tumor-segmentation"
"""``owner/name`` of the course on GitHub (Colab badges and the Colab install).

A fork that publishes the course changes this one line and runs
``python scripts/notebooks.py``."""
BRANCH = "main"
"""The branch the Colab badges open."""

BEGIN = "### BEGIN SOLUTION"
END = "### END SOLUTION"
START_HERE = "### START CODE HERE ###"
END_HERE = "### END CODE HERE ###"
CHECK_TAG = "check"
RAISES_TAG = "raises-exception"

_BLOCK = re.compile(
    r"^(?P<indent>[ \t]*)" + re.escape(BEGIN) + r"[^\n]*\n(?P<body>.*?)^[ \t]*" + re.escape(END) + r"[^\n]*$",
    re.MULTILINE | re.DOTALL,
)


def course_ref() -> str:
    """The git tag of this release, ``v<package version>``: what the Colab setup cell installs."""
    return f"v{__version__}"


def colab_url(path_in_repo: str) -> str:
    """Colab link that opens ``path_in_repo`` from the course repository."""
    return f"https://colab.research.google.com/github/{COURSE_REPO}/blob/{BRANCH}/{path_in_repo}"


def solution_blocks(text: str) -> list[tuple[str | None, str]]:
    """Return ``(function name, solution code)`` for every solution block.

    The function name is that of the nearest ``def`` above the block (None if
    the block is not inside a function).
    """
    blocks = []
    for match in _BLOCK.finditer(text):
        defs = list(DEF.finditer(text, 0, match.start()))
        blocks.append((defs[-1].group("name") if defs else None, match.group("body")))
    return blocks


def _stub(match: re.Match, text: str) -> str:
    indent, body = match.group("indent"), match.group("body")
    defs = list(DEF.finditer(text, 0, match.start()))
    name = defs[-1].group("name") if defs else "this exercise"
    hints = [line.strip() for line in body.splitlines() if re.match(r"[ \t]*# ?[Hh]int", line)]
    lines = [f"{indent}{START_HERE}"]
    lines += [f"{indent}{h}" for h in hints]
    lines.append(f'{indent}raise NotImplementedError("Exercise: write {name}() here, then run the check cell below.")')
    lines.append(f"{indent}{END_HERE}")
    return "\n".join(lines)


def learner_source(text: str) -> str:
    """The learner version of a lesson source: solutions replaced by stubs."""
    _check_markers(text)
    return _BLOCK.sub(lambda m: _stub(m, text), text)


def solution_source(text: str) -> str:
    """The solution version: markers renamed to START/END CODE HERE."""
    _check_markers(text)

    def keep(match: re.Match) -> str:
        indent = match.group("indent")
        return f"{indent}{START_HERE}\n{match.group('body')}{indent}{END_HERE}"

    return _BLOCK.sub(keep, text)


def _check_markers(text: str) -> None:
    begins, ends = text.count(BEGIN), text.count(END)
    if begins != ends or len(_BLOCK.findall(text)) != begins:
        raise ValueError(f"unbalanced solution markers: {begins} {BEGIN!r} and {ends} {END!r}")


CAPTION_PREFIX = "*Figure:* "


def with_captions(cells: list) -> list:
    """Each figure cell (a code cell with an ``alt`` text) followed by a caption cell saying what it shows.

    The ``alt`` metadata stays on the cell (JupyterLab's classic export reads it), but the lab
    template, GitHub and site builders drop cell metadata; a Markdown caption survives them all.
    """
    out = []
    for cell in cells:
        out.append(cell)
        alt = cell.metadata.get("alt") if cell.cell_type == "code" else None
        if alt:
            caption = nbformat.v4.new_markdown_cell(CAPTION_PREFIX + str(alt).strip())
            caption.metadata["course"] = "caption"
            out.append(caption)
    return out


def _to_notebook(text: str, url: str, learner: bool, stamp: dict[str, str]) -> str:
    text = text.replace("COLAB_URL", url).replace("COURSE_REPO", COURSE_REPO).replace("COURSE_REF", course_ref())
    nb = jupytext.reads(text, fmt="py:percent")
    nb.metadata.pop("jupytext", None)
    nb.metadata["kernelspec"] = {"display_name": "Python 3", "language": "python", "name": "python3"}
    nb.metadata["language_info"] = {"name": "python"}
    nb.metadata["colab"] = {"provenance": []}
    nb.metadata["accelerator"] = "GPU" if "Accelerator: GPU" in text else "None"
    nb.metadata["course"] = {**stamp, "variant": "learner" if learner else "solution"}
    nb.cells = with_captions(nb.cells)
    for i, cell in enumerate(nb.cells):
        digest = hashlib.sha1(f"{i}:{cell.source}".encode()).hexdigest()[:8]
        cell["id"] = f"c{i:03d}-{digest}"
        tags = list(cell.metadata.get("tags", []))
        if learner and CHECK_TAG in tags and RAISES_TAG not in tags:
            tags.append(RAISES_TAG)
        if tags:
            cell.metadata["tags"] = tags
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    nb.nbformat, nb.nbformat_minor = 4, 5
    return nbformat.writes(nb) + "\n"


def render(lesson: Lesson) -> dict[Path, str]:
    """The generated files of ``lesson`` and their text."""
    text = lesson.source.read_text()
    root = lesson.source.parent.parent
    learner_rel = lesson.learner.relative_to(root).as_posix()
    solution_rel = lesson.solution.relative_to(root).as_posix()
    stamp = lesson_stamp(lesson)
    return {
        lesson.learner: _to_notebook(learner_source(text), colab_url(learner_rel), learner=True, stamp=stamp),
        lesson.solution: _to_notebook(solution_source(text), colab_url(solution_rel), learner=False, stamp=stamp),
    }


_BADGE = re.compile(r"https://colab\.research\.google\.com/github/[\w.-]+/[\w.-]+/blob/[\w.-]+/notebooks/")


def render_readme(readme: Path) -> dict[Path, str]:
    """The README with its Colab badges pointing at ``COURSE_REPO`` (empty if there is no README)."""
    if not readme.is_file():
        return {}
    url = f"https://colab.research.google.com/github/{COURSE_REPO}/blob/{BRANCH}/notebooks/"
    return {readme: _BADGE.sub(url, readme.read_text())}


def build(folder: Path | None = None, check: bool = False) -> list[Path]:
    """Regenerate every lesson's notebooks and the README's badges (or, with ``check``, list the stale ones).

    Returns:
        The files that were rewritten (or that are stale).
    """
    changed = []
    folder = notebooks_dir() if folder is None else Path(folder)
    outputs = [render(lesson) for lesson in lessons(folder)] + [render_readme(folder.parent / "README.md")]
    for rendered in outputs:
        for path, text in rendered.items():
            if not path.is_file() or path.read_text() != text:
                changed.append(path)
                if not check:
                    path.parent.mkdir(parents=True, exist_ok=True)
                    path.write_text(text)
    return changed


def main(argv: list[str] | None = None) -> int:
    """``python scripts/notebooks.py [--check]``."""
    parser = argparse.ArgumentParser(prog="scripts/notebooks.py", description=__doc__.split("\n")[0])
    parser.add_argument("--check", action="store_true", help="fail if a generated notebook is stale")
    args = parser.parse_args(argv)
    changed = build(check=args.check)
    if args.check and changed:
        print("stale generated notebooks (run `make notebooks`):", *changed, sep="\n  ", file=sys.stderr)
        return 1
    for path in changed:
        print(f"wrote {path}")
    if not changed:
        print("notebooks up to date")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
