"""The package's shape: one error base, one reader of the course mode, no private names across modules."""

from __future__ import annotations

import ast
import importlib
import inspect
import re
from pathlib import Path

import pytest

from utils.errors import CourseError

UTILS = Path(__file__).resolve().parent.parent / "utils"
MODULES = sorted(p for p in UTILS.rglob("*.py") if "__pycache__" not in p.parts)


def _module_name(path: Path) -> str:
    parts = path.relative_to(UTILS.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


@pytest.mark.parametrize("path", MODULES, ids=lambda p: p.relative_to(UTILS).as_posix())
def test_course_errors_share_one_base_and_keep_their_builtin_one(path):
    module = importlib.import_module(_module_name(path))
    for name, cls in inspect.getmembers(module, inspect.isclass):
        if cls.__module__ == module.__name__ and name.endswith("Error") and cls is not CourseError:
            assert issubclass(cls, CourseError) and cls.__mro__[1] is CourseError, name
            assert any(base is not CourseError and base.__module__ == "builtins" for base in cls.__bases__), name


@pytest.mark.parametrize("path", MODULES, ids=lambda p: p.relative_to(UTILS).as_posix())
def test_no_module_imports_another_modules_private_names(path):
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level > 0:
            private = [a.name for a in node.names if a.name.startswith("_") and not a.name.startswith("__")]
            assert not private, f"{path.name} imports {private} from .{node.module or ''}"


def test_only_the_config_module_reads_the_course_mode():
    reads = re.compile(r"""(getenv\(|environ\.get\(|environ\[)\s*(["']COURSE_MODE|MODE_ENV)""")
    readers = [p.relative_to(UTILS).as_posix() for p in MODULES if reads.search(p.read_text())]
    assert readers == ["config.py"], readers
