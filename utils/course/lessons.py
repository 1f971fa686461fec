"""The course's lessons as files: where their sources are, and what a generated notebook records about its origin.

One home for what both the notebook build tool (``scripts/notebooks.py``) and
the grader (:mod:`utils.course.grade`) need at run time. A lesson is one jupytext
source ``notebooks/NN_name.py`` with two generated notebooks; an exercise is a
function defined in a code cell of that source (found by :data:`DEF`).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

from .. import __version__

SOURCE_GLOB = "[0-9][0-9]_*.py"
"""The lesson sources in ``notebooks/``: two digits, an underscore, a name."""

DEF = re.compile(r"^[ \t]*def[ \t]+(?P<name>\w+)[ \t]*\(", re.MULTILINE)
"""A function definition in a cell (``DEF.findall(source)`` gives the names)."""


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
    """The ``notebooks/`` folder of this checkout (absent when the package is installed from a wheel)."""
    return Path(__file__).resolve().parents[2] / "notebooks"


def lessons(folder: Path | None = None) -> list[Lesson]:
    """Every lesson source, in course order."""
    folder = notebooks_dir() if folder is None else Path(folder)
    return [Lesson(p) for p in sorted(folder.glob(SOURCE_GLOB))]


def lesson_stamp(lesson: Lesson) -> dict[str, str]:
    """What the generated notebooks record about their origin (``metadata.course``).

    ``digest`` changes whenever the lesson's source does, so a grader can tell a
    notebook released from an older version of the lesson.
    """
    digest = hashlib.sha1(lesson.source.read_bytes()).hexdigest()[:12]
    return {"lesson": lesson.name, "version": __version__, "digest": digest}
