"""Build the learner and solution notebooks from one jupytext source per lesson.

Each lesson is written once, as ``notebooks/NN_name.py`` in jupytext's percent
format. From it this module generates

* ``notebooks/NN_name.ipynb`` - the learner version: every block between
  ``### BEGIN SOLUTION`` and ``### END SOLUTION`` becomes
  ``### START CODE HERE ###``, the block's ``# Hint`` comments, a stub that
  raises ``NotImplementedError``, and ``### END CODE HERE ###``; cells tagged
  ``check`` get nbval's ``raises-exception`` tag (they fail until the learner
  finishes the exercise);
* ``notebooks/solutions/NN_name.ipynb`` - the same lesson with the solutions
  filled in between ``### START CODE HERE ###`` and ``### END CODE HERE ###``.

The token ``COLAB_URL`` in a source becomes the Colab link of the notebook it
lands in, ``COURSE_REPO`` the GitHub repository and ``COURSE_REF`` the git
tag of this release (``v`` + the package version): the Colab setup cell
installs the course from ``COURSE_REPO@COURSE_REF``, the release the notebook
belongs to. The README's Colab badges follow ``COURSE_REPO`` too (rewritten
by the same command). Generated files are never
edited by hand: ``python -m utils.notebooks`` rewrites them and
``python -m utils.notebooks --check`` fails when one is stale.
"""

from __future__ import annotations

import argparse
import hashlib
import re
import sys
from dataclasses import dataclass
from pathlib import Path

COURSE_REPO = "brats-course/brain-tumor-segmentation"
"""``owner/name`` of the course on GitHub (Colab badges and the Colab install).

A fork that publishes the course changes this one line and runs
``python -m utils.notebooks``."""
BRANCH = "main"
"""The branch the Colab badges open."""
SOURCE_GLOB = "[0-9][0-9]_*.py"

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
_DEF = re.compile(r"^[ \t]*def[ \t]+(?P<name>\w+)[ \t]*\(", re.MULTILINE)


@dataclass(frozen=True)
class Lesson:
    """Paths of one lesson's source and generated notebooks."""

    source: Path

    @property
    def name(self) -> str:
        return self.source.stem

    @property
    def learner(self) -> Path:
        return self.source.with_suffix(".ipynb")

    @property
    def solution(self) -> Path:
        return self.source.parent / "solutions" / f"{self.name}.ipynb"


def notebooks_dir() -> Path:
    """The ``notebooks/`` folder of this checkout."""
    return Path(__file__).resolve().parent.parent / "notebooks"


def lessons(folder: Path | None = None) -> list[Lesson]:
    """Every lesson source, in course order."""
    folder = notebooks_dir() if folder is None else Path(folder)
    return [Lesson(p) for p in sorted(folder.glob(SOURCE_GLOB))]


def course_ref() -> str:
    """The git tag of this release, ``v<package version>``: what the Colab setup cell installs."""
    from . import __version__

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
        defs = list(_DEF.finditer(text, 0, match.start()))
        blocks.append((defs[-1].group("name") if defs else None, match.group("body")))
    return blocks


def _stub(match: re.Match, text: str) -> str:
    indent, body = match.group("indent"), match.group("body")
    defs = list(_DEF.finditer(text, 0, match.start()))
    name = defs[-1].group("name") if defs else "this exercise"
    hints = [line.strip() for line in body.splitlines() if re.match(r"[ \t]*# ?[Hh]int", line)]
    lines = [f"{indent}{START_HERE}"]
    lines += [f"{indent}{h}" for h in hints]
    lines.append(
        f'{indent}raise NotImplementedError("Exercise: write {name}() here, '
        f'then run the check cell below.")'
    )
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


def lesson_stamp(lesson: Lesson) -> dict[str, str]:
    """What the generated notebooks record about their origin (``metadata.course``).

    ``digest`` changes whenever the lesson's source does, so a grader can tell a
    notebook released from an older version of the lesson.
    """
    digest = hashlib.sha1(lesson.source.read_bytes()).hexdigest()[:12]
    from . import __version__

    return {"lesson": lesson.name, "version": __version__, "digest": digest}


def _to_notebook(text: str, url: str, learner: bool, stamp: dict[str, str]) -> str:
    import jupytext
    import nbformat

    text = text.replace("COLAB_URL", url).replace("COURSE_REPO", COURSE_REPO).replace("COURSE_REF", course_ref())
    nb = jupytext.reads(text, fmt="py:percent")
    nb.metadata.pop("jupytext", None)
    nb.metadata["kernelspec"] = {"display_name": "Python 3", "language": "python", "name": "python3"}
    nb.metadata["language_info"] = {"name": "python"}
    nb.metadata["colab"] = {"provenance": []}
    nb.metadata["accelerator"] = "GPU" if "Accelerator: GPU" in text else "None"
    nb.metadata["course"] = {**stamp, "variant": "learner" if learner else "solution"}
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
    """``python -m utils.notebooks [--check]``."""
    parser = argparse.ArgumentParser(prog="python -m utils.notebooks", description=__doc__.split("\n")[0])
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
