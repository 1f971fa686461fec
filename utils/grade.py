"""Score submitted learner notebooks: the instructor's grader.

``python -m utils.grade SUBMISSION.ipynb [MORE.ipynb | FOLDER ...] --out grades.csv``

Each submission is untrusted code. It runs top to bottom in a fresh Jupyter
kernel, in a separate process started with a memory limit (``RLIMIT_AS``), a
file-size limit and a CPU-time backstop, in a fresh temporary folder outside the
course checkout (with its own copy of the tiny phantom data), with
``COURSE_MODE=ci`` and an environment stripped to what a lesson needs. Every
cell has a wall-clock limit and so has the whole notebook; a cell that raises
does not stop the run (the learner's later exercises still count), and a cell
that kills or hangs the kernel is skipped on a fresh kernel.

After the learner's cells, scoring cells run in the same kernel (the learner's
functions live there). For each exercise of the lesson they call
``utils.checks.run_check(name, fn, variant=..., record=True)`` with the
``public`` tests (those of the lesson) and the ``grading`` variants (the same
tests on other inputs and seeds, so that answers hard-coded to the outputs
printed in the lesson fail), and print the results as JSON on one line that
starts with a marker and a random per-run nonce. The grader reads only the
scoring cells' outputs of that kernel, so a learner's printed text can neither
forge a result nor touch another learner's rows. Everything is written by this
(parent) process, atomically, after the kernels have exited: the grades CSV
(one row per learner and exercise), a feedback file per learner with the
checks' ✔/✘ lines, and an instructor summary per exercise.

This is not a security boundary against a determined attacker: the kernel runs
as your user, so it can read and write what you can. For a hostile class, run
the grader in a container or as a separate user without access to anything
else.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import io
import json
import logging
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .checks import CHECKS
from .config import repo_root
from .lessons import DEF, lesson_stamp
from .lessons import lessons as lesson_sources
from .safety import (
    OwnedFiles,
    check_target,
    check_writable,
    folder_lock,
    foreign_files,
    install_folder,
    one_line,
    write_bytes_atomic,
)

PASS, FAIL = "\u2714", "\u2718"
MARK = "@@course-grade@@"
WRITTEN_BY = "utils.grade"
CSV_FIELDS = [
    "learner",
    "submission",
    "lesson",
    "version",
    "exercise",
    "public_passed",
    "public_total",
    "grading_passed",
    "grading_total",
    "score",
    "note",
]

DEFAULT_CELL_TIMEOUT = 300
DEFAULT_NOTEBOOK_TIMEOUT = 1200
DEFAULT_SCORE_TIMEOUT = 300
DEFAULT_MEMORY_GB = 8.0
DEFAULT_MAX_MB = 50.0
MAX_CELL_OUTPUT = 200_000  # bytes of output kept per cell
MAX_NOTEBOOK_OUTPUT = 5_000_000  # bytes of output kept per notebook
MAX_FILE_BYTES = 1 << 30  # largest file a submission may write (RLIMIT_FSIZE)
MAX_KERNEL_RESTARTS = 3
PROBE_TIMEOUT = 20

# Runs first in the kernel process: limits, then the ordinary IPython kernel.
_KERNEL_LAUNCHER = """\
import resource, sys
memory, fsize, cpu = (int(v) for v in sys.argv[1:4])
del sys.argv[1:4]
if memory > 0:
    resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))
resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
if cpu > 0:
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 30))
from ipykernel import kernelapp
kernelapp.launch_new_instance()
"""

# Defined in the learner's kernel after their cells; {nonce} is per run.
_SCORER = r"""
def __course_grade_setup__():
    import sys
    # A fresh copy of the course package: patches the learner's cells made to
    # utils.checks do not reach the scoring.
    for key in [k for k in sys.modules if k == "utils" or k.startswith("utils.")]:
        del sys.modules[key]
    from utils.checks import run_check
    return run_check


def __course_grade__(name, _run_check=__course_grade_setup__(), _mark={mark!r}):
    import contextlib, difflib, json, sys, types
    real_stdout = sys.stdout

    class _Sink:
        def write(self, text):
            return len(text)

        def flush(self):
            pass

    ns = get_ipython().user_ns
    result = {{"exercise": name}}
    fn = ns.get(name)
    if fn is None or not callable(fn):
        defined = [k for k, v in ns.items() if callable(v) and not k.startswith("_")
                   and getattr(v, "__module__", None) == "__main__"]
        result["missing"] = "not defined" if fn is None else f"{{name}} is a {{type(fn).__name__}}, not a function"
        result["close"] = difflib.get_close_matches(name, defined, n=3, cutoff=0.6)
    else:
        module = getattr(fn, "__module__", "") or ""
        calls_reference = module == "utils" or module.startswith("utils.")

        def code_names(code):
            names = set(code.co_names)
            for const in code.co_consts:
                if isinstance(const, types.CodeType):
                    names |= code_names(const)
            return names

        code = getattr(fn, "__code__", None)
        if code is not None and not calls_reference:
            used = code_names(code)
            for used_name in used:
                obj = getattr(fn, "__globals__", {{}}).get(used_name)
                obj_module = getattr(obj, "__module__", None) or getattr(obj, "__name__", "") or ""
                if not (obj_module == "utils" or obj_module.startswith("utils.")):
                    continue
                if getattr(obj, "__name__", None) == name or (isinstance(obj, types.ModuleType) and name in used):
                    calls_reference = True
        if calls_reference:
            result["reference"] = True
        for variant in ("public", "grading"):
            try:
                with contextlib.redirect_stdout(_Sink()), contextlib.redirect_stderr(_Sink()):
                    tests = _run_check(name, fn, variant=variant, record=True)
                result[variant] = [[str(t.description)[:300], bool(t.passed), str(t.detail)[:1500]] for t in tests]
            except BaseException as err:  # noqa: BLE001 - a broken check must not stop the scoring
                result[variant + "_error"] = f"{{type(err).__name__}}: {{str(err)[:500]}}"
    real_stdout.write("\n" + _mark + {nonce!r} + " " + json.dumps(result) + "\n")
    real_stdout.flush()
"""


# ----------------------------------------------------------------------------
# What is graded and what comes out
# ----------------------------------------------------------------------------


@dataclass
class ExerciseScore:
    """One exercise of one submission."""

    exercise: str
    public: list[tuple[str, bool, str]] = field(default_factory=list)
    grading: list[tuple[str, bool, str]] = field(default_factory=list)
    note: str = ""
    zero: bool = False  # forced to 0 (missing, reference copy, not run)

    @property
    def score(self) -> float:
        if self.zero:
            return 0.0
        tests = self.grading or self.public
        return sum(ok for _, ok, _ in tests) / len(tests) if tests else 0.0


@dataclass
class Submission:
    """A submitted notebook and what grading it found."""

    path: Path
    learner: str
    lesson: str = ""
    version: str = ""
    notes: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    exercises: list[ExerciseScore] = field(default_factory=list)
    seconds: float = 0.0


@dataclass
class LessonInfo:
    """A lesson of the current course: its exercises and version stamp."""

    name: str
    exercises: list[str]
    stamp: dict


def course_lessons() -> dict[str, LessonInfo]:
    """The current course's lessons that have graded exercises, by lesson name."""
    by_lesson: dict[str, list[str]] = {}
    for name, check in CHECKS.items():
        by_lesson.setdefault(check.lesson, []).append(name)
    stamps = {lesson.name: lesson_stamp(lesson) for lesson in lesson_sources()}
    return {name: LessonInfo(name, names, stamps.get(name, {})) for name, names in by_lesson.items()}


# ----------------------------------------------------------------------------
# Reading a submission
# ----------------------------------------------------------------------------

_TITLE = re.compile(r"^#\s*Lesson\s+(\d+)", re.MULTILINE)


def read_submission(path: Path, max_bytes: int) -> Any:
    """Read a notebook without trusting it (size first, then JSON, then nbformat).

    Raises:
        ValueError: with a learner-readable reason when it is not a usable notebook.
    """
    import nbformat

    size = path.stat().st_size
    if size > max_bytes:
        raise ValueError(
            f"the file is {size / 1e6:.0f} MB, over the {max_bytes / 1e6:.0f} MB limit "
            "(clear the outputs before handing in: Edit > Clear All Outputs)"
        )
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
        data = json.loads(text)
    except UnicodeDecodeError as err:
        raise ValueError(f"not a notebook: not UTF-8 text ({err.reason} at byte {err.start})") from None
    except json.JSONDecodeError as err:
        raise ValueError(f"not a notebook: invalid JSON at line {err.lineno} column {err.colno} ({err.msg})") from None
    if not isinstance(data, dict) or not isinstance(data.get("cells"), list):
        raise ValueError("not a notebook: the JSON has no 'cells' list")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            nb = nbformat.reads(text, as_version=4)
    except Exception as err:  # noqa: BLE001 - nbformat raises many kinds
        raise ValueError(f"not a readable notebook: {type(err).__name__}: {str(err)[:200]}") from None
    for cell in nb.cells:
        if not isinstance(cell.get("source", ""), str):
            raise ValueError("not a readable notebook: a cell's source is not text")
    return nb


def identify_lesson(nb: Any, lessons: dict[str, LessonInfo]) -> tuple[str, str, list[str]]:
    """Return ``(lesson name, version text, notes)`` for a notebook.

    The lesson comes from the notebook's ``course`` metadata (written by
    ``scripts/notebooks.py``), else from its title ("# Lesson 04 ..."), else from
    the graded functions it defines; ``""`` when none of these says.
    """
    notes: list[str] = []
    meta = nb.metadata.get("course") if isinstance(nb.metadata.get("course"), dict) else {}
    lesson = str(meta.get("lesson", "")) if meta else ""
    by_number = {name[:2]: name for name in lessons}
    if lesson and lesson not in lessons:
        if lesson[:2] in by_number:
            notes.append(f"made from lesson {lesson!r}, now called {by_number[lesson[:2]]!r}")
            lesson = by_number[lesson[:2]]
        else:
            notes.append(f"its metadata names lesson {lesson!r}, which has no graded exercises in this course")
            lesson = ""
    if not lesson:
        for cell in nb.cells:
            match = _TITLE.search(cell.source) if cell.cell_type == "markdown" else None
            if match:
                number = f"{int(match.group(1)):02d}"
                lesson = by_number.get(number, "")
                if not lesson:
                    notes.append(f"its title says lesson {number}, which has no graded exercises")
                break
    if not lesson:
        defined = {name for cell in nb.cells if cell.cell_type == "code" for name in DEF.findall(cell.source)}
        votes = {name: len(defined & set(info.exercises)) for name, info in lessons.items()}
        best = max(votes, key=votes.get, default="")
        if best and votes[best]:
            lesson = best
            notes.append(f"no course metadata or title: identified as {best} from the functions it defines")
    version = ""
    if meta:
        version = f"course {meta.get('version', '?')}, lesson {meta.get('digest', '?')}"
        current = lessons[lesson].stamp if lesson in lessons else {}
        if current and meta.get("digest") and meta.get("digest") != current.get("digest"):
            notes.append(
                f"made from another version of {lesson} ({version}); the current one is "
                f"course {current.get('version')}, lesson {current.get('digest')}: "
                "exercises were graded with the current checks"
            )
    elif lesson:
        version = "unknown"
        notes.append(
            "no course metadata: made from a course version older than the grader's "
            "(or the metadata was removed); graded with the current checks"
        )
    return lesson, version, notes


# ----------------------------------------------------------------------------
# Running it
# ----------------------------------------------------------------------------


def _limited_client_classes():
    """nbclient/jupyter_client subclasses: limits on the kernel process, bounded outputs."""
    # lazy here and below: nbformat / nbclient / jupyter_client are the dev extra, needed only to grade
    from jupyter_client.manager import AsyncKernelManager
    from nbclient import NotebookClient
    from traitlets import Int

    class LimitedKernelManager(AsyncKernelManager):
        """Starts the ordinary IPython kernel under resource limits."""

        memory_bytes = Int(0)
        cpu_seconds = Int(0)

        def format_kernel_cmd(self, extra_arguments: list[str] | None = None) -> list[str]:
            return [
                sys.executable,
                "-c",
                _KERNEL_LAUNCHER,
                str(self.memory_bytes),
                str(MAX_FILE_BYTES),
                str(self.cpu_seconds),
                "-f",
                os.path.realpath(self.connection_file),
                *(extra_arguments or []),
            ]

    class BoundedClient(NotebookClient):
        """Keeps at most MAX_CELL_OUTPUT / MAX_NOTEBOOK_OUTPUT bytes of outputs."""

        def reset_budget(self) -> None:
            self.cell_bytes, self.dropped, self.last_reply = 0, False, None
            self.on_cell_executed = self._remember_reply

        def _remember_reply(self, cell, cell_index, execute_reply) -> None:  # noqa: ANN001 - nbclient's hook
            self.last_reply = execute_reply

        def error(self) -> tuple[str, str] | None:
            """``(ename, evalue)`` of the last executed cell, from its reply (timeouts leave no output)."""
            content = (self.last_reply or {}).get("content", {})
            if content.get("status") == "error":
                return str(content.get("ename", "Error")), str(content.get("evalue", ""))[:200]
            return None

        def output(self, outs, msg, display_id, cell_index):  # noqa: ANN001 - nbclient's signature
            size = len(json.dumps(msg.get("content", {}), default=str))
            self.notebook_bytes = getattr(self, "notebook_bytes", 0) + size
            self.cell_bytes = getattr(self, "cell_bytes", 0) + size
            if self.cell_bytes > MAX_CELL_OUTPUT or self.notebook_bytes > MAX_NOTEBOOK_OUTPUT:
                text = msg.get("content", {}).get("text", "") if msg["msg_type"] == "stream" else ""
                kept = "".join(line for line in text.splitlines(True) if line.startswith(MARK))
                if kept:
                    msg = {**msg, "content": {**msg["content"], "text": kept}}
                else:
                    self.dropped = True
                    return None
            return super().output(outs, msg, display_id, cell_index)

    return LimitedKernelManager, BoundedClient


def kernel_env(workdir: Path, data_dir: Path) -> dict[str, str]:
    """The environment a submission's kernel gets: nothing of the grader's but what a lesson needs."""
    package_root = str(Path(__file__).resolve().parent.parent)
    env = {
        "PATH": os.pathsep.join([str(Path(sys.executable).parent), "/usr/local/bin", "/usr/bin", "/bin"]),
        "HOME": str(workdir),
        "TMPDIR": str(workdir / "tmp"),
        "PYTHONPATH": package_root,
        "PYTHONNOUSERSITE": "1",
        "COURSE_MODE": "ci",
        "COURSE_DATA_DIR": str(data_dir),
        "MPLBACKEND": "Agg",
        "MPLCONFIGDIR": str(workdir / ".matplotlib"),
        "KERAS_HOME": str(workdir / ".keras"),
        "TF_CPP_MIN_LOG_LEVEL": "2",
        "CUDA_VISIBLE_DEVICES": "",
        "MALLOC_ARENA_MAX": "2",  # glibc reserves 64 MB of address space per arena: keeps RLIMIT_AS meaningful
        "OMP_NUM_THREADS": "2",
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
    }
    for passthrough in ("KERAS_BACKEND", "SYSTEMROOT"):
        if passthrough in os.environ:
            env[passthrough] = os.environ[passthrough]
    return env


@dataclass
class Limits:
    """Time and memory limits for one submission."""

    cell_timeout: float = DEFAULT_CELL_TIMEOUT
    notebook_timeout: float = DEFAULT_NOTEBOOK_TIMEOUT
    score_timeout: float = DEFAULT_SCORE_TIMEOUT
    memory_gb: float = DEFAULT_MEMORY_GB
    max_mb: float = DEFAULT_MAX_MB


def _first_line(source: str) -> str:
    for line in source.splitlines():
        if line.strip() and not line.strip().startswith("#"):
            return line.strip()[:70]
    return source.strip().splitlines()[0][:70] if source.strip() else ""


def _kill_group(pid: int | None) -> None:
    """Kill what is left of a kernel's process group (the kernel started a new session)."""
    if not pid:
        return
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError, OSError):
        pass


def execute_and_score(
    nb: Any, exercises: list[str], limits: Limits, data_source: Path | None, log: Any = None
) -> tuple[dict[str, dict], list[str], list[str]]:
    """Run a notebook's code cells in a sandboxed kernel, then score ``exercises`` there.

    Returns:
        ``(results by exercise, notes, errors)``: the scoring cells' JSON
        results, what happened to the run as a whole, and the cells that raised.
    """
    import nbformat
    from nbclient.exceptions import DeadKernelError

    LimitedKernelManager, BoundedClient = _limited_client_classes()
    quiet = logging.getLogger("utils.grade.nbclient")
    quiet.addHandler(logging.NullHandler())
    quiet.propagate = False

    code = [(i, c.source) for i, c in enumerate(nb.cells) if c.cell_type == "code" and c.source.strip()]
    numbers = {index: n for n, (index, _) in enumerate(code, start=1)}
    nonce = secrets.token_hex(16)
    scorer = _SCORER.format(mark=MARK, nonce=nonce)
    skip: set[int] = set()
    notes: list[str] = []
    memory_noted = False
    start = time.monotonic()
    deadline = start + limits.notebook_timeout

    for attempt in range(MAX_KERNEL_RESTARTS + 1):
        errors: list[str] = []
        results: dict[str, dict] = {}
        workdir = Path(tempfile.mkdtemp(prefix="course-grade-"))
        (workdir / "tmp").mkdir()
        data_dir = workdir / "data"
        if data_source is not None:
            shutil.copytree(data_source, data_dir / data_source.name)
        run_nb = nbformat.v4.new_notebook()
        run_nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
        run_nb.cells = [nbformat.v4.new_code_cell(src) for _, src in code]
        client = BoundedClient(
            run_nb,
            timeout=limits.cell_timeout,
            allow_errors=True,
            interrupt_on_timeout=True,
            error_on_timeout={
                "ename": "CellTimeoutError",
                "evalue": "the cell ran past its time limit",
                "traceback": [],
            },
            kernel_manager_class=LimitedKernelManager,
            shutdown_kernel="immediate",
            iopub_timeout=4,
            startup_timeout=120,
            record_timing=False,
            log=quiet,
            resources={"metadata": {"path": str(workdir)}},
        )
        client.km = client.create_kernel_manager()
        client.km.memory_bytes = int(limits.memory_gb * (1 << 30)) if limits.memory_gb > 0 else 0
        client.km.cpu_seconds = int(4 * limits.notebook_timeout + limits.score_timeout * (len(exercises) + 1))
        failed_at: int | None = None
        kernel_pid = None
        stack = contextlib.ExitStack()
        try:
            log_file = stack.enter_context(open(workdir / "kernel.log", "wb"))
            with client.setup_kernel(
                env=kernel_env(workdir, data_dir), cwd=str(workdir), stdout=log_file, stderr=subprocess.STDOUT
            ):
                kernel_pid = getattr(client.km.provisioner, "pid", None)
                for n, (index, source) in enumerate(code):
                    if index in skip:
                        continue
                    remaining = deadline - time.monotonic()
                    if remaining <= 1:
                        notes.append(
                            f"stopped at cell {numbers[index]} of {len(code)}: the notebook ran past "
                            f"its {limits.notebook_timeout:.0f} s limit; later cells did not run"
                        )
                        break
                    client.timeout = int(max(1, min(limits.cell_timeout, remaining)))
                    client.reset_budget()
                    try:
                        client.execute_cell(run_nb.cells[n], n, store_history=True)
                    except DeadKernelError:
                        failed_at = index
                        notes.append(
                            f"the kernel died in cell {numbers[index]} ({_first_line(source)!r}: "
                            f"exit, crash or over the memory limit){_log_tail(workdir / 'kernel.log')}"
                        )
                        break
                    error = client.error()
                    if error is None:
                        continue
                    ename, evalue = error
                    if ename == "CellTimeoutError":
                        errors.append(
                            f"cell {numbers[index]} ({_first_line(source)!r}) ran past its "
                            f"{client.timeout} s time limit and was interrupted"
                        )
                        if not _responsive(client, run_nb):
                            failed_at = index
                            notes.append(
                                f"cell {numbers[index]} ({_first_line(source)!r}) ran past its "
                                f"{client.timeout} s time limit and did not stop when interrupted"
                            )
                            break
                    elif ename != "ExerciseCheckError":
                        errors.append(f"cell {numbers[index]} ({_first_line(source)!r}) raised {ename}: {evalue}")
                        if (ename == "MemoryError" or "failed to map segment" in evalue) and not memory_noted:
                            memory_noted = True
                            notes.append(
                                f"cell {numbers[index]} hit the memory limit ({limits.memory_gb:g} GiB "
                                "of address space; raise --memory-gb if a correct notebook needs more)"
                            )
                if failed_at is None:  # also when stopped by the notebook limit: score what was defined
                    results = _score(client, run_nb, scorer, exercises, nonce, limits, notes)
        except Exception as err:  # noqa: BLE001 - the kernel could not start or talk
            notes.append(f"could not run the notebook: {type(err).__name__}: {str(err)[:200]}")
        finally:
            _kill_group(kernel_pid)
            stack.close()
            shutil.rmtree(workdir, ignore_errors=True)
        if failed_at is None:
            break
        skip.add(failed_at)
        if attempt == MAX_KERNEL_RESTARTS or deadline - time.monotonic() < 30:
            notes.append("gave up re-running the notebook: exercises were not scored")
            break
        notes.append(f"re-ran the notebook on a fresh kernel without cell {numbers[failed_at]}")
    return results, notes, errors


def _log_tail(path: Path, size: int = 2000) -> str:
    """The last line of the kernel's own output that names an error, if any (read from the end only)."""
    try:
        with open(path, "rb") as handle:
            handle.seek(max(0, path.stat().st_size - size))
            lines = handle.read().decode("utf-8", "replace").splitlines()
    except OSError:
        return ""
    for line in reversed(lines):
        if re.search(r"MemoryError|Killed|Abort|bad_alloc|Segmentation fault|Fatal Python error", line):
            return f"; the kernel said: {line.strip()[:200]}"
    return ""


def _responsive(client: Any, run_nb: Any) -> bool:
    """Does the kernel answer a trivial cell after an interrupt?"""
    import nbformat

    probe = nbformat.v4.new_code_cell("None")
    run_nb.cells.append(probe)
    saved = client.timeout
    client.timeout = PROBE_TIMEOUT
    client.reset_budget()
    try:
        client.execute_cell(probe, len(run_nb.cells) - 1, store_history=False)
        return client.error() is None
    except Exception:  # noqa: BLE001
        return False
    finally:
        client.timeout = saved
        run_nb.cells.pop()


def _score(
    client: Any, run_nb: Any, scorer: str, exercises: list[str], nonce: str, limits: Limits, notes: list[str]
) -> dict[str, dict]:
    """Define the scorer in the learner's kernel and run it once per exercise (own time limit each)."""
    import nbformat
    from nbclient.exceptions import DeadKernelError

    results: dict[str, dict] = {}
    cells = [scorer] + [f"__course_grade__({name!r})" for name in exercises]
    prefix = MARK + nonce + " "
    for k, source in enumerate(cells):
        cell = nbformat.v4.new_code_cell(source)
        run_nb.cells.append(cell)
        client.timeout = int(limits.score_timeout)
        client.reset_budget()
        try:
            cell = client.execute_cell(cell, len(run_nb.cells) - 1, store_history=False)
        except DeadKernelError:
            if k:
                results[exercises[k - 1]] = {
                    "exercise": exercises[k - 1],
                    "not_scored": "the kernel died while its checks ran",
                }
            notes.append("the kernel died while scoring: later exercises were not scored")
            return results
        error = client.error()
        if k == 0:
            if error:
                notes.append("the scoring code could not be defined in the kernel: {}: {}".format(*error))
                return results
            continue
        name = exercises[k - 1]
        found = []
        for out in cell.get("outputs", []):
            if out.get("output_type") == "stream" and out.get("name") == "stdout":
                found += [line[len(prefix) :] for line in out.get("text", "").splitlines() if line.startswith(prefix)]
        if len(found) == 1:
            try:
                data = json.loads(found[0])
            except json.JSONDecodeError:
                data = None
            if isinstance(data, dict) and data.get("exercise") == name:
                results[name] = data
                continue
        if error and error[0] == "CellTimeoutError":
            results[name] = {
                "exercise": name,
                "not_scored": f"the checks ran past the {limits.score_timeout:.0f} s "
                "limit (an endless loop in the function?)",
            }
            if not _responsive(client, run_nb):
                notes.append(f"the kernel stopped answering while scoring {name}")
                return results
        elif len(found) > 1:
            results[name] = {"exercise": name, "not_scored": "the scoring output was tampered with"}
        else:
            why = f"{error[0]}: {error[1]}" if error else "no result came back"
            results[name] = {"exercise": name, "not_scored": f"scoring failed ({why})"}
    return results


# ----------------------------------------------------------------------------
# Grading a submission
# ----------------------------------------------------------------------------


def _as_tests(value: Any) -> list[tuple[str, bool, str]]:
    if not isinstance(value, list):
        return []
    tests = []
    for item in value:
        if isinstance(item, list) and len(item) == 3:
            tests.append((str(item[0]), bool(item[1]), str(item[2])))
    return tests


def _exercise_score(name: str, data: dict | None, lesson_ran: bool) -> ExerciseScore:
    score = ExerciseScore(name)
    if data is None:
        score.zero = True
        score.note = "not scored: the notebook did not get that far" if lesson_ran else "not scored"
        return score
    if "not_scored" in data:
        score.zero, score.note = True, str(data["not_scored"])
        return score
    if "missing" in data:
        score.zero = True
        close = data.get("close") or []
        hint = f" (found {', '.join(close)}: renamed?)" if close else " (deleted or renamed?)"
        score.note = f"{name}: {data['missing']}{hint}"
        return score
    score.public, score.grading = _as_tests(data.get("public")), _as_tests(data.get("grading"))
    notes = []
    for variant in ("public", "grading"):
        if f"{variant}_error" in data:
            notes.append(f"{variant} checks could not run: {data[variant + '_error']}")
    if not score.grading and score.public:
        notes.append("no grading variant: scored on the public tests")
    if data.get("reference"):
        score.zero = True
        notes.append(f"uses the course's reference utils.{name} instead of the learner's own code")
    if score.public and all(not ok and "not written yet" in detail for _, ok, detail in score.public):
        notes.append("not attempted: still the stub that raises NotImplementedError")
    public_ok = score.public and all(ok for _, ok, _ in score.public)
    if public_ok and score.grading and not all(ok for _, ok, _ in score.grading):
        notes.append("passes the public tests but not the grading variants (hard-coded to the lesson's examples?)")
    score.note = "; ".join(notes)
    return score


def learner_name(path: Path, root: Path | None) -> str:
    """``alice`` for ``root/alice/04.ipynb`` or ``root/alice.ipynb``; the file's stem when given alone."""
    if root is not None:
        rel = path.relative_to(root)
        return rel.parts[0] if len(rel.parts) > 1 else rel.stem
    return path.stem


def grade_submission(
    path: Path,
    learner: str,
    lessons: dict[str, LessonInfo],
    limits: Limits,
    expected_lesson: str | None = None,
    data_source: Path | None = None,
) -> Submission:
    """Grade one notebook file (never raises for a bad submission)."""
    sub = Submission(path=path, learner=learner)
    start = time.monotonic()
    try:
        nb = read_submission(path, int(limits.max_mb * 1e6))
    except (ValueError, OSError) as err:
        sub.notes.append(f"unreadable: {err}")
        sub.lesson = expected_lesson or ""
        names = lessons[expected_lesson].exercises if expected_lesson in lessons else []
        sub.exercises = [ExerciseScore(n, zero=True, note="unreadable submission") for n in names]
        sub.seconds = time.monotonic() - start
        return sub
    lesson, sub.version, notes = identify_lesson(nb, lessons)
    sub.notes += notes
    if expected_lesson and lesson != expected_lesson:
        found = lesson or "no course lesson"
        sub.notes.append(f"this is {found}, not {expected_lesson}: not run")
        sub.lesson = expected_lesson
        sub.exercises = [
            ExerciseScore(n, zero=True, note=f"wrong notebook ({found})") for n in lessons[expected_lesson].exercises
        ]
        sub.seconds = time.monotonic() - start
        return sub
    if not lesson:
        sub.notes.append(
            "not a lesson of this course with graded exercises (no metadata, title or exercise function found): not run"
        )
        sub.seconds = time.monotonic() - start
        return sub
    sub.lesson = lesson
    names = lessons[lesson].exercises
    results, notes, errors = execute_and_score(nb, names, limits, data_source)
    sub.notes += notes
    sub.errors = errors
    sub.exercises = [_exercise_score(name, results.get(name), bool(results)) for name in names]
    sub.seconds = time.monotonic() - start
    return sub


# ----------------------------------------------------------------------------
# Outputs: CSV, feedback, summary (written atomically, only over our own files)
# ----------------------------------------------------------------------------


def csv_rows(subs: list[Submission]) -> list[dict[str, Any]]:
    """One row per learner and exercise (one row for a submission with no exercise)."""
    rows = []
    for sub in subs:
        base = {"learner": sub.learner, "submission": str(sub.path), "lesson": sub.lesson, "version": sub.version}
        if not sub.exercises:
            rows.append(
                {
                    **base,
                    "exercise": "",
                    "public_passed": 0,
                    "public_total": 0,
                    "grading_passed": 0,
                    "grading_total": 0,
                    "score": 0.0,
                    "note": "; ".join(sub.notes),
                }
            )
        for ex in sub.exercises:
            note = ex.note
            if not note and sub.notes and ex.zero:
                note = "; ".join(sub.notes)
            elif sub.notes and ex.zero and not ex.note.startswith(("unreadable", "wrong")):
                note = f"{ex.note} ({'; '.join(sub.notes)})"
            rows.append(
                {
                    **base,
                    "exercise": ex.exercise,
                    "public_passed": sum(ok for _, ok, _ in ex.public),
                    "public_total": len(ex.public),
                    "grading_passed": sum(ok for _, ok, _ in ex.grading),
                    "grading_total": len(ex.grading),
                    "score": round(ex.score, 3),
                    "note": note,
                }
            )
    return rows


def _hidden(ex: ExerciseScore) -> list[tuple[str, bool, str]]:
    """The grading tests as a learner may see them: named after the public test they repeat, no inputs shown."""
    same = len(ex.public) == len(ex.grading)
    return [
        (
            (ex.public[i][0] if same else f"grading test {i + 1}"),
            ok,
            "" if ok else "fails on inputs the lesson does not show",
        )
        for i, (_, ok, _) in enumerate(ex.grading)
    ]


def feedback_markdown(subs: list[Submission], show_grading: bool = False) -> str:
    """The feedback file of one learner (all their submissions).

    Args:
        subs: the learner's graded submissions.
        show_grading: include the grading tests' own descriptions and expected
            vs got (they reveal the hidden inputs; off for feedback sent to learners).
    """
    lines = [f"# Feedback for {subs[0].learner}", ""]
    for sub in subs:
        total = sum(ex.score for ex in sub.exercises)
        lines += [
            f"## {sub.path.name}: {sub.lesson or 'unknown lesson'}",
            "",
            f"Score: **{total:.2f} / {len(sub.exercises)}** "
            "(each exercise scores the share of its grading tests passed).",
            "",
        ]
        if sub.version:
            lines.append(f"Course version of the notebook: {sub.version}.")
        for note in sub.notes:
            lines.append(f"- {note}")
        if sub.errors:
            lines += ["", "Cells that raised an error while the notebook ran (the rest still ran):"]
            lines += [f"- {e}" for e in sub.errors]
        lines.append("")
        for ex in sub.exercises:
            lines += [f"### {ex.exercise}: {ex.score:.2f}", ""]
            if ex.note:
                lines += [ex.note, ""]
            grading = ex.grading if show_grading else _hidden(ex)
            for title, tests in (
                ("Public tests (the lesson's)", ex.public),
                ("Grading tests (same checks, other inputs)", grading),
            ):
                if not tests:
                    continue
                lines.append(f"{title}: {sum(ok for _, ok, _ in tests)} of {len(tests)} passed")
                lines.append("")
                details = {detail for _, ok, detail in tests if not ok}
                shared = len(tests) > 1 and not any(ok for _, ok, _ in tests) and len(details) == 1
                if shared:
                    lines += [f"Every test failed: {details.pop().strip()}", ""]
                for description, ok, detail in tests:
                    mark = PASS if ok else FAIL
                    text = f"- {mark} {description}"
                    if not ok and detail and not shared:
                        text += "  \n  " + detail.strip().replace("\n", "  \n  ")
                    lines.append(text)
                lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def summary_markdown(subs: list[Submission]) -> str:
    """The instructor's summary: one line per exercise, then one per submission."""
    per: dict[tuple[str, str], list[ExerciseScore]] = {}
    for sub in subs:
        for ex in sub.exercises:
            per.setdefault((sub.lesson, ex.exercise), []).append(ex)
    lines = [
        "| lesson | exercise | submissions | mean score | full marks | zero | public ok, grading not | "
        "missing or not scored |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for (lesson, name), scores in sorted(per.items()):
        n = len(scores)
        full = sum(s.score == 1.0 for s in scores)
        zero = sum(s.score == 0.0 for s in scores)
        suspect = sum(
            bool(s.public)
            and all(ok for _, ok, _ in s.public)
            and bool(s.grading)
            and not all(ok for _, ok, _ in s.grading)
            for s in scores
        )
        missing = sum(s.zero for s in scores)
        lines.append(
            f"| {lesson} | {name} | {n} | {sum(s.score for s in scores) / n:.2f} | {full} | {zero} | "
            f"{suspect} | {missing} |"
        )
    lines += ["", "| learner | submission | lesson | score | seconds | notes |", "|---|---|---|---|---|---|"]
    for sub in subs:
        notes = "; ".join(sub.notes + sub.errors).replace("|", "/")
        lines.append(
            f"| {sub.learner} | {sub.path.name} | {sub.lesson} | "
            f"{sum(e.score for e in sub.exercises):.2f} / {len(sub.exercises)} | {sub.seconds:.0f} | "
            f"{notes[:300]} |"
        )
    return "\n".join(lines) + "\n"


def _safe_name(learner: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", learner).lstrip(".") or "learner"


@dataclass
class Outputs:
    """Where a grading run writes: the CSV, the summary, the feedback folder (with the manifest)."""

    csv: Path
    summary: Path
    feedback: Path

    @classmethod
    def for_csv(cls, out: Path, feedback: Path | None = None) -> Outputs:
        out = out.expanduser().resolve()
        return cls(
            out,
            out.with_name(f"{out.stem}_summary.md"),
            (feedback.expanduser().resolve() if feedback else out.with_name(f"{out.stem}_feedback")),
        )


def check_outputs(
    outputs: Outputs, forbidden: list[Path], overwrite: bool, forbidden_here: list[Path] = (), inputs: list[Path] = ()
) -> None:
    """Refuse to write where we must not, or over files this grader cannot prove it wrote.

    Args:
        outputs: where the run would write.
        forbidden: folders to write nowhere under (the checkout, submission folders).
        overwrite: whether the output of an earlier run may be replaced.
        forbidden_here: folders not to write directly in (those of submissions given as files).
        inputs: the submitted files (never replaced, even through a link).

    Raises:
        FileExistsError / ValueError (``UnsafeWriteError``): with what to do instead.
    """
    for target, what in (
        (outputs.csv, "--out"),
        (outputs.summary, "the summary"),
        (outputs.feedback, "the feedback folder"),
    ):
        for folder in forbidden:
            if target == folder or folder in target.parents:
                raise ValueError(
                    f"refusing to write {what} {target} inside {folder} (the course checkout or a "
                    "submissions folder): choose --out elsewhere"
                )
        if target.parent in forbidden_here:
            raise ValueError(
                f"refusing to write {what} {target} beside the submissions in {target.parent}: choose --out elsewhere"
            )
        check_target(target, what, inputs=inputs)
    hint = "pass --overwrite to replace the output of an earlier grading run, or choose another --out"
    owned = OwnedFiles(outputs.csv.parent, WRITTEN_BY)
    for path in (outputs.csv, outputs.summary):
        owned.check_free(path, overwrite, hint=hint)
    feedback = outputs.feedback
    if feedback.exists() and (not feedback.is_dir() or any(feedback.iterdir())):
        if not overwrite:
            raise FileExistsError(f"{feedback} exists; {hint}")
        if not feedback.is_dir():
            raise FileExistsError(f"{feedback} is a file, not a feedback folder: move it away or choose --feedback")
        foreign = foreign_files(feedback, OwnedFiles(feedback, WRITTEN_BY))
        if foreign:
            raise FileExistsError(
                f"{feedback} holds files this grader did not write (or that changed since): "
                f"{', '.join(foreign[:5])}; move them away or choose another --feedback"
            )


def write_outputs(subs: list[Submission], outputs: Outputs, show_grading: bool = False) -> None:
    """Write the feedback folder, the CSV and the summary atomically, each listed in an ownership marker.

    ``show_grading`` puts the grading tests' inputs and expected values in the feedback (instructors only).
    """
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_FIELDS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(csv_rows(subs))
    by_learner: dict[str, list[Submission]] = {}
    for sub in subs:
        by_learner.setdefault(sub.learner, []).append(sub)
    outputs.feedback.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{outputs.feedback.name}.tmp-", dir=outputs.feedback.parent))
    used: set[str] = set()
    for learner, learner_subs in by_learner.items():
        name = _safe_name(learner)
        while name.lower() in used:
            name += "_"
        used.add(name.lower())
        (staging / f"{name}.md").write_text(feedback_markdown(learner_subs, show_grading), encoding="utf-8")
    install_folder(staging, outputs.feedback, WRITTEN_BY)
    owned = OwnedFiles(outputs.csv.parent, WRITTEN_BY)
    owned.claim(outputs.csv, outputs.summary)
    write_bytes_atomic(outputs.summary, summary_markdown(subs).encode("utf-8"))
    write_bytes_atomic(outputs.csv, buffer.getvalue().encode("utf-8"))
    owned.record(outputs.csv, outputs.summary)


# ----------------------------------------------------------------------------
# Command line
# ----------------------------------------------------------------------------


def collect(paths: list[Path]) -> tuple[list[tuple[Path, str]], list[Path], list[Path]]:
    """``[(notebook, learner)]`` from files and folders; the folders given; the folders of the files given."""
    found, folders, parents = [], [], []
    for path in paths:
        path = path.expanduser().resolve()
        if path.is_dir():
            folders.append(path)
            for nb in sorted(path.rglob("*.ipynb")):
                rel = nb.relative_to(path)
                if any(part.startswith(".") for part in rel.parts):
                    continue  # .ipynb_checkpoints and hidden files
                found.append((nb, learner_name(nb, path)))
        elif path.is_file():
            parents.append(path.parent)
            found.append((path, learner_name(path, None)))
        else:
            raise FileNotFoundError(f"no such submission file or folder: {path}")
    return found, folders, parents


def _lesson_arg(value: str | None, lessons: dict[str, LessonInfo]) -> str | None:
    if not value:
        return None
    matches = [name for name in lessons if name == value or name[:2] == value.zfill(2)[:2]]
    if len(matches) != 1:
        raise ValueError(f"--lesson {value!r}: expected one of {', '.join(sorted(lessons))}")
    return matches[0]


def main(argv: list[str] | None = None) -> int:
    """``python -m utils.grade SUBMISSION.ipynb [MORE | FOLDER ...] --out grades.csv``."""
    parser = argparse.ArgumentParser(
        prog="python -m utils.grade",
        description="Score submitted learner notebooks (see the README's instructor section).",
    )
    parser.add_argument(
        "submissions",
        nargs="+",
        type=Path,
        help="notebooks, or folders of them (FOLDER/learner.ipynb or FOLDER/learner/anything.ipynb)",
    )
    parser.add_argument(
        "--out",
        required=True,
        type=Path,
        help="grades CSV to write (with NAME_summary.md and NAME_feedback/ beside it)",
    )
    parser.add_argument("--feedback", type=Path, help="feedback folder (default: NAME_feedback beside --out)")
    parser.add_argument("--lesson", help="the lesson expected (e.g. 04): other notebooks score 0, not run")
    parser.add_argument("--cell-timeout", type=float, default=DEFAULT_CELL_TIMEOUT, help="seconds per cell")
    parser.add_argument("--timeout", type=float, default=DEFAULT_NOTEBOOK_TIMEOUT, help="seconds per notebook")
    parser.add_argument(
        "--score-timeout", type=float, default=DEFAULT_SCORE_TIMEOUT, help="seconds for the checks of one exercise"
    )
    parser.add_argument(
        "--memory-gb",
        type=float,
        default=DEFAULT_MEMORY_GB,
        help="address-space limit of a submission's kernel (0: none)",
    )
    parser.add_argument("--max-mb", type=float, default=DEFAULT_MAX_MB, help="largest notebook file read")
    parser.add_argument("--overwrite", action="store_true", help="replace the output of an earlier grading run")
    parser.add_argument(
        "--show-grading",
        action="store_true",
        help="put the grading tests' inputs and expected values in the feedback (for the "
        "instructor's eyes: learners could hard-code them)",
    )
    args = parser.parse_args(argv)

    try:
        lessons = course_lessons()
        expected = _lesson_arg(args.lesson, lessons)
        found, folders, parents = collect(args.submissions)
        outputs = Outputs.for_csv(args.out, args.feedback)
        checkout = repo_root(Path(__file__).resolve().parent)
        check_outputs(
            outputs, ([checkout] if checkout else []) + folders, args.overwrite, parents, [path for path, _ in found]
        )
        for folder in {outputs.csv.parent, outputs.feedback.parent}:  # before grading, not after
            check_writable(folder, "the grading outputs")
    except (ValueError, OSError) as err:  # refusals, a read-only or full output folder
        print(f"error: {one_line(err)}", file=sys.stderr)
        return 2
    if not found:
        print("error: no .ipynb submissions found in " + ", ".join(map(str, args.submissions)), file=sys.stderr)
        return 2
    from .phantom import ensure_phantom  # lazy: nilearn loads only once submissions are found

    data_source = ensure_phantom("ci", progress=False)
    limits = Limits(args.cell_timeout, args.timeout, args.score_timeout, args.memory_gb, args.max_mb)
    subs = []
    for i, (path, learner) in enumerate(found, start=1):
        print(f"[{i}/{len(found)}] {learner}: {path.name} ...", end=" ", flush=True)
        sub = grade_submission(path, learner, lessons, limits, expected, data_source)
        subs.append(sub)
        print(f"{sum(e.score for e in sub.exercises):.2f} / {len(sub.exercises)} ({sub.seconds:.0f} s)", flush=True)
    try:
        with folder_lock(outputs.csv.parent, WRITTEN_BY):  # one writer of the grades folder at a time
            write_outputs(subs, outputs, args.show_grading)
    except (ValueError, OSError) as err:  # a refusal, or the disk filled up while grading
        print(f"error: {one_line(err)}", file=sys.stderr)
        return 2
    print()
    print(summary_markdown(subs))
    print(f"wrote {outputs.csv}, {outputs.summary} and {outputs.feedback}/")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
