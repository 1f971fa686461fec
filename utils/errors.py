"""The course's one error base.

Every error the course raises on purpose derives from :class:`CourseError` and
also keeps its builtin base (``class DatasetError(CourseError, ValueError)``),
so ``except CourseError`` catches any of them and an existing
``except ValueError`` still does.
"""

from __future__ import annotations


class CourseError(Exception):
    """Base of the course's errors: bad input data, unsafe writes, failed downloads, failed checks."""
