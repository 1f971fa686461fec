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


# ---------------------------------------------------------------------------
# Layers: the package is laid out by pipeline stage (issue 23)
# ---------------------------------------------------------------------------

RUNTIME = ("utils.config", "utils.backend", "utils.parallel", "utils.errors", "utils.safety")
"""Modules every stage may use; they import only each other."""
STAGES = ("data", "preprocessing", "model", "evaluation", "inference", "training", "visualization", "course")
"""The subpackages in pipeline order: a stage imports only from the stages before it, itself and the runtime."""


def _imports(path: Path) -> set[str]:
    """Every ``utils`` module ``path`` imports, at the top or inside a function."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            if not module.startswith("utils"):
                continue
            for alias in node.names:  # `from . import losses` imports a module
                child = f"{module}.{alias.name}"
                found.add(child if child in NAMES else module)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("utils."))
    found.discard(name)
    return found


NAMES = {_module_name(p) for p in MODULES}
GRAPH = {_module_name(p): _imports(p) for p in MODULES}


def _layer(module: str) -> int:
    if module in RUNTIME or module == "utils":
        return 0
    stage = module.split(".")[1]
    assert stage in STAGES, f"{module} is neither a runtime module nor in a stage {STAGES}: put it in one"
    return 1 + STAGES.index(stage)


def test_every_module_is_runtime_or_in_a_stage():
    for module in NAMES:
        _layer(module)


def test_a_stage_imports_only_from_the_stages_before_it_and_the_runtime():
    wrong = []
    for module, imported in GRAPH.items():
        if module == "utils":  # the package re-exports the names the lessons import
            continue
        for other in imported:
            if other == "utils":
                continue  # checked below: only __version__
            if _layer(other) > _layer(module) or (_layer(module) == 0 and _layer(other) != 0):
                wrong.append(f"{module} -> {other}")
    assert not wrong, "imports against the pipeline order: " + ", ".join(sorted(wrong))


def test_only_the_version_is_imported_from_the_package_itself():
    for path in MODULES:
        if path.name == "__init__.py" and path.parent == UTILS:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level and not node.module:
                depth = len(_module_name(path).split(".")) - (0 if path.name == "__init__.py" else 1)
                if node.level == depth:  # `from .. import x` that reaches utils/__init__.py
                    names = [a.name for a in node.names if f"utils.{a.name}" not in NAMES]
                    assert names in ([], ["__version__"]), f"{path.name} imports {names} from utils"


def test_no_import_circles():
    """No module reaches itself through imports, counting those inside functions (Tarjan's SCCs)."""
    graph = {m: {o for o in targets if o != "utils"} for m, targets in GRAPH.items() if m != "utils"}
    index, low, stack, on_stack, circles, counter = {}, {}, [], set(), [], [0]

    def visit(node):
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on_stack.add(node)
        for other in graph.get(node, ()):
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in on_stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            members = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                members.append(member)
                if member == node:
                    break
            if len(members) > 1:
                circles.append(sorted(members))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    assert not circles, f"import circles: {circles}"


def test_one_default_per_setting():
    """The foreground share and the assignment's patch have one home (utils.config); every default reads it."""
    from utils import config
    from utils.model.unet import build_unet
    from utils.preprocessing.transforms import compare_samplers, rejection_sample, sample_foreground_patch
    from utils.training.pipeline import PatchSampler

    def default(fn, name):
        return inspect.signature(fn).parameters[name].default

    assert config.TrainConfig().foreground_fraction == config.FOREGROUND_FRACTION
    for fn in (sample_foreground_patch, compare_samplers, PatchSampler):
        assert default(fn, "foreground_fraction") == config.FOREGROUND_FRACTION, fn
    for fn in (sample_foreground_patch, compare_samplers, rejection_sample, PatchSampler):
        assert tuple(default(fn, "patch_shape")) == config.ASSIGNMENT_PATCH, fn
    assert default(build_unet, "input_shape")[:3] == config.ASSIGNMENT_PATCH
    assert config.TrainConfig().patch_shape == config.preset("gpu").patch_shape == config.ASSIGNMENT_PATCH
    literal = re.compile(r"\(160, 160, 16\)|foreground_fraction(: float)? = 0\.\d")
    repeats = [
        p.relative_to(UTILS).as_posix() for p in MODULES if p.name != "config.py" and literal.search(p.read_text())
    ]
    assert not repeats, f"a default written again outside utils/config.py: {repeats}"
