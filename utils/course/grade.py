"""Score submitted learner notebooks: the instructor's grader.

``python -m utils.course.grade SUBMISSION.ipynb [MORE.ipynb | FOLDER ...] --out grades.csv``

Each submission is untrusted code: its code may change only the outputs its
own exercise functions return for the inputs this grader sends them. It runs
top to bottom in a fresh Jupyter kernel inside a bubblewrap sandbox
(:mod:`utils.course.sandbox`: a read-only view of the Python environment and of a
private copy of the course package whose references and checks are stubs, no
network, its own PID namespace, a private size-limited ``/tmp``, nothing of the
instructor's files or environment), with a memory limit (``RLIMIT_AS``), a
file-size limit and a CPU-time backstop, with ``COURSE_MODE=ci`` and its own
copy of the tiny phantom. Every cell has a wall-clock limit and so has the whole
notebook; a cell that raises does not stop the run (the learner's later
exercises still count), and a cell that kills or hangs the kernel is skipped on
a fresh kernel.

Scoring happens here, in the grader's process: for each exercise,
``utils.course.checks.run_check(name, fn, variant=..., record=True)`` runs the
``public`` tests (those of the lesson) and the ``grading`` variants (the same
tests on inputs drawn from a seed this process draws per run and never sends
to a kernel), where ``fn`` stands for the learner's function: each call sends
the arguments to the kernel as wire JSON (:mod:`utils.course.wire`: numbers, text and
raw NumPy bytes, never pickles), the kernel calls the learner's function and
sends back its output the same way. Expected values, tolerances and verdicts
never leave this process. Everything is written by this process, atomically,
after the kernels have exited: the grades CSV (one row per learner and
exercise), a feedback file per learner with the checks' ✔/✘ lines, and an
instructor summary per exercise. ``--no-sandbox`` runs the kernels without
bubblewrap (a class you trust only; it says what that exposes).
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import hashlib
import hmac
import io
import json
import logging
import os
import re
import secrets
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..config import repo_root
from ..safety import (
    OwnedFiles,
    check_target,
    check_writable,
    folder_lock,
    foreign_files,
    install_folder,
    one_line,
    write_bytes_atomic,
)
from . import wire
from .checks import CHECKS
from .checks.runner import InPlaceChange
from .lessons import DEF, lesson_stamp
from .lessons import lessons as lesson_sources
from .sandbox import STUB_MESSAGE, WIRE

PASS, FAIL = "\u2714", "\u2718"
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
DEFAULT_WORK_MB = 512.0  # bytes a submission may keep in its work folder, /tmp and /dev/shm
MAX_CELL_OUTPUT = 200_000  # bytes of output kept per cell
MAX_NOTEBOOK_OUTPUT = 5_000_000  # bytes of output kept per notebook
MAX_ANSWER_BYTES = 50_000_000  # largest answer of one call of a learner's function
MAX_FILE_BYTES = 1 << 30  # largest file a submission may write (RLIMIT_FSIZE)
MAX_KERNEL_RESTARTS = 3
PROBE_TIMEOUT = 20

# Runs first in the kernel process: limits, the data copy, then the ordinary IPython kernel.
_KERNEL_LAUNCHER = """\
import os, resource, shutil, sys
memory, fsize, cpu = (int(v) for v in sys.argv[1:4])
del sys.argv[1:4]
if memory > 0:
    resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))
resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
if cpu > 0:
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 30))
source, target = os.environ.pop("COURSE_DATA_SOURCE", ""), os.environ.get("COURSE_DATA_DIR", "")
if source and target and os.path.isdir(source) and not os.path.exists(target):
    shutil.copytree(source, os.path.join(target, os.environ.pop("COURSE_DATA_NAME", "phantom")))
from ipykernel import kernelapp
kernelapp.launch_new_instance()
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


_FILE_KINDS = {stat.S_IFIFO: "a FIFO", stat.S_IFCHR: "a device", stat.S_IFBLK: "a device", stat.S_IFSOCK: "a socket"}


def _read_regular(path: Path, max_bytes: int) -> bytes:
    """The bytes of ``path`` if it is a regular file of at most ``max_bytes`` (never follows a last link, never blocks)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError as err:
        if path.is_symlink():
            raise ValueError("not a notebook: a symbolic link (only regular files are read)") from None
        raise ValueError(f"not readable: {err.strerror}") from None
    with os.fdopen(fd, "rb") as handle:
        info = os.fstat(handle.fileno())
        if not stat.S_ISREG(info.st_mode):
            kind = _FILE_KINDS.get(stat.S_IFMT(info.st_mode), "not a regular file")
            raise ValueError(f"not a notebook: {kind} (only regular files are read)")
        if info.st_size > max_bytes:
            raise ValueError(
                f"the file is {info.st_size / 1e6:.0f} MB, over the {max_bytes / 1e6:.0f} MB limit "
                "(clear the outputs before handing in: Edit > Clear All Outputs)"
            )
        raw = handle.read(max_bytes + 1)
    if len(raw) > max_bytes:
        raise ValueError(f"the file grew over the {max_bytes / 1e6:.0f} MB limit while being read")
    return raw


def _check_shape(data: Any) -> None:
    """Refuse notebook JSON whose top level or cells have the wrong types (before nbformat sees it)."""
    if not isinstance(data, dict) or not isinstance(data.get("cells"), list):
        raise ValueError("not a notebook: the JSON has no 'cells' list")
    if not isinstance(data.get("metadata", {}), dict):
        raise ValueError("not a readable notebook: its 'metadata' is not an object")
    for n, cell in enumerate(data["cells"], start=1):
        if not isinstance(cell, dict):
            raise ValueError(f"not a readable notebook: cell {n} is not an object")
        if not isinstance(cell.get("cell_type"), str):
            raise ValueError(f"not a readable notebook: cell {n} has no 'cell_type'")
        if "source" not in cell:
            raise ValueError(f"not a readable notebook: cell {n} has no 'source'")
        source = cell["source"]
        if not (isinstance(source, str) or (isinstance(source, list) and all(isinstance(s, str) for s in source))):
            raise ValueError(f"not a readable notebook: cell {n}'s source is not text")
        if not isinstance(cell.get("metadata", {}), dict):
            raise ValueError(f"not a readable notebook: cell {n}'s metadata is not an object")


def read_submission(path: Path, max_bytes: int) -> Any:
    """Read a notebook without trusting it (regular file and size first, then JSON and its shape, then nbformat).

    Raises:
        ValueError: with a learner-readable reason when it is not a usable notebook.
    """
    import nbformat

    raw = _read_regular(path, max_bytes)
    try:
        text = raw.decode("utf-8")
        data = json.loads(text)
    except UnicodeDecodeError as err:
        raise ValueError(f"not a notebook: not UTF-8 text ({err.reason} at byte {err.start})") from None
    except json.JSONDecodeError as err:
        raise ValueError(f"not a notebook: invalid JSON at line {err.lineno} column {err.colno} ({err.msg})") from None
    except RecursionError:
        raise ValueError("not a notebook: the JSON is nested too deeply") from None
    _check_shape(data)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            nb = nbformat.reads(text, as_version=4)
    except Exception as err:  # noqa: BLE001 - nbformat raises many kinds
        raise ValueError(f"not a readable notebook: {type(err).__name__}: {str(err)[:200]}") from None
    for cell in nb.cells:
        if not isinstance(cell.get("source", ""), str) or not isinstance(cell.get("cell_type"), str):
            raise ValueError("not a readable notebook: a cell's source is not text")
    if not isinstance(nb.get("metadata"), dict):
        raise ValueError("not a readable notebook: its 'metadata' is not an object")
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
    """nbclient/jupyter_client subclasses: a sandboxed, limited kernel process and bounded outputs."""
    # lazy here and below: nbformat / nbclient / jupyter_client are the dev extra, needed only to grade
    import zmq
    from jupyter_client.channels import HBChannel
    from jupyter_client.manager import AsyncKernelManager
    from nbclient import NotebookClient
    from traitlets import Int

    class NoHeartbeat(HBChannel):
        """No heartbeat thread at all: the kernel manager watches the kernel's process instead.

        The heartbeat's REQ socket never reconnects here (RECONNECT_IVL -1), so once a kernel
        is killed (a limit, the work-folder watchdog) its thread can block in ``send`` forever,
        and nbclient's clean-up then waits on that thread for good.
        """

        def start(self) -> None:
            pass

        def stop(self) -> None:
            pass

    class LimitedKernelManager(AsyncKernelManager):
        """Starts the ordinary IPython kernel under resource limits, inside the sandbox when ``wrap`` is set."""

        memory_bytes = Int(0)
        cpu_seconds = Int(0)
        file_bytes = Int(MAX_FILE_BYTES)  # RLIMIT_FSIZE: the largest file the kernel may write
        wrap = None  # command -> sandboxed command (utils.course.sandbox.bwrap_command), or None

        def format_kernel_cmd(self, extra_arguments: list[str] | None = None) -> list[str]:
            command = [
                sys.executable,
                "-c",
                _KERNEL_LAUNCHER,
                str(self.memory_bytes),
                str(self.file_bytes),
                str(self.cpu_seconds),
                "-f",
                os.path.realpath(self.connection_file),
                *(extra_arguments or []),
            ]
            return self.wrap(command) if self.wrap else command

        def client(self, **kwargs: Any) -> Any:
            """A client connected once to the kernel's own sockets, never reconnecting (see _wait_for_sockets)."""
            if self.transport == "ipc":
                self._wait_for_sockets()
                context = zmq.asyncio.Context()
                context.setsockopt(zmq.RECONNECT_IVL, -1)
                context.setsockopt(zmq.MAXMSGSIZE, 2 * MAX_ANSWER_BYTES)  # a larger message drops the link
                kwargs["context"] = context
                self.context.setsockopt(zmq.RECONNECT_IVL, -1)
                self._connect_control_socket()
            client = super().client(**kwargs)
            client.hb_channel_class = NoHeartbeat  # is_alive asks this manager, not the heartbeat
            return client

        def _wait_for_sockets(self, timeout: float = 120) -> None:
            """Wait until the kernel has bound its five Unix sockets (before any learner code runs).

            Connecting only then, and never reconnecting, means a socket the
            learner's code later replaces (by a link to another socket of this
            machine, say) is never followed.
            """

            ports = [self.shell_port, self.iopub_port, self.stdin_port, self.control_port, self.hb_port]
            paths = [Path(f"{self.ip}-{port}") for port in ports]
            stop = time.monotonic() + timeout
            while time.monotonic() < stop:
                try:
                    if all(stat.S_ISSOCK(p.lstat().st_mode) for p in paths):
                        return
                except FileNotFoundError:
                    pass
                if self.provisioner is not None and self.provisioner.process is not None:
                    if self.provisioner.process.poll() is not None:
                        break
                time.sleep(0.05)
            raise RuntimeError("the kernel did not open its sockets")

    class BoundedClient(NotebookClient):
        """Keeps at most MAX_CELL_OUTPUT / MAX_NOTEBOOK_OUTPUT bytes of outputs; every byte counts."""

        def reset_budget(self, cell_limit: int = MAX_CELL_OUTPUT, learner: bool = True) -> None:
            self.cell_bytes, self.dropped, self.last_reply = 0, False, None
            self.cell_limit, self.learner_cell = cell_limit, learner
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
            self.cell_bytes = getattr(self, "cell_bytes", 0) + size
            if getattr(self, "learner_cell", True):
                self.notebook_bytes = getattr(self, "notebook_bytes", 0) + size
            limit = getattr(self, "cell_limit", MAX_CELL_OUTPUT)
            learner = getattr(self, "learner_cell", True)
            if self.cell_bytes > limit or (learner and getattr(self, "notebook_bytes", 0) > MAX_NOTEBOOK_OUTPUT):
                self.dropped = True
                return None
            return super().output(outs, msg, display_id, cell_index)

    return LimitedKernelManager, BoundedClient


def kernel_env(home: Path | str, data_dir: Path | str, package_root: Path | str) -> dict[str, str]:
    """The environment a submission's kernel gets: nothing of the grader's but what a lesson needs."""
    home = str(home)
    env = {
        "PATH": os.pathsep.join([str(Path(sys.executable).parent), "/usr/local/bin", "/usr/bin", "/bin"]),
        "HOME": home,
        "TMPDIR": f"{home}/tmp",
        "PYTHONPATH": str(package_root),
        "PYTHONNOUSERSITE": "1",
        "PYTHONDONTWRITEBYTECODE": "1",  # nothing written into the shared package copy
        "COURSE_MODE": "ci",
        "COURSE_DATA_DIR": str(data_dir),
        "MPLBACKEND": "Agg",
        "MPLCONFIGDIR": f"{home}/.matplotlib",
        "KERAS_HOME": f"{home}/.keras",
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
    """Time, memory and disk limits for one submission."""

    cell_timeout: float = DEFAULT_CELL_TIMEOUT
    notebook_timeout: float = DEFAULT_NOTEBOOK_TIMEOUT
    score_timeout: float = DEFAULT_SCORE_TIMEOUT
    memory_gb: float = DEFAULT_MEMORY_GB
    max_mb: float = DEFAULT_MAX_MB
    work_mb: float = DEFAULT_WORK_MB


@dataclass
class Setup:
    """What every kernel of a grading run shares.

    Attributes:
        package: the private, read-only copy of the course package (:func:`utils.course.sandbox.private_package`).
        data: the phantom data the kernels get a copy of (``None``: none).
        sandbox: run each kernel inside bubblewrap (``--no-sandbox``: False).
        seed: the per-run seed of the grading variants' inputs (never sent to a kernel).
    """

    package: Path
    data: Path | None = None
    sandbox: bool = True
    seed: int = field(default_factory=lambda: secrets.randbits(32))


def _first_line(source: str) -> str:
    for line in source.splitlines():
        if line.strip() and not line.strip().startswith("#"):
            return line.strip()[:70]
    return source.strip().splitlines()[0][:70] if source.strip() else ""


def _clip(text: Any, limit: int) -> str:
    """The learner's text (an exception's name or message) on one line, at most ``limit`` characters."""
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _kill_group(pid: int | None) -> None:
    """Kill what is left of a kernel's process group (bwrap's PID namespace takes the sandboxed rest with it)."""
    if not pid:
        return
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError, OSError):
        pass


ENTRY_BYTES = 4096  # what each file or folder in the work folder counts for besides its bytes (bounds the count)
WATCH_INTERVAL = 0.25  # seconds between two measurements of the kernel's work folder


def _open_dir(name: str, dir_fd: int | None = None) -> int | None:
    """A readable descriptor of the real folder ``name`` (never through a link), first made 0o700.

    The folder is opened as a path only (``O_PATH | O_NOFOLLOW``: no read
    permission needed, a link is refused) and changed through that descriptor,
    so a folder the kernel made unreadable (``chmod 0o300``) is still counted
    and removed, and a link swapped in cannot redirect the change elsewhere.
    """
    try:
        path_fd = os.open(name, os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=dir_fd)
    except OSError:
        return None
    try:
        with contextlib.suppress(OSError):
            os.chmod(f"/proc/self/fd/{path_fd}", 0o700)
        return os.open(f"/proc/self/fd/{path_fd}", os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return None
    finally:
        os.close(path_fd)


def _folder_bytes(folder: Path, cap: int) -> int:
    """Bytes in ``folder`` (links not followed; each entry counts :data:`ENTRY_BYTES` more), counting up to just over
    ``cap``; every folder met is made readable and searchable first (see :func:`_open_dir`)."""
    total = 0
    top = _open_dir(str(folder))
    stack = [] if top is None else [top]
    try:
        while stack and total <= cap:
            fd = stack.pop()
            try:
                with os.scandir(fd) as entries:
                    listed = list(entries)
            except OSError:
                listed = []
            for entry in listed:
                try:
                    info = entry.stat(follow_symlinks=False)
                except OSError:
                    continue
                total += info.st_size + ENTRY_BYTES
                if stat.S_ISDIR(info.st_mode) and total <= cap:
                    sub = _open_dir(entry.name, dir_fd=fd)
                    if sub is not None:
                        stack.append(sub)
            os.close(fd)
    finally:
        for fd in stack:
            os.close(fd)
    return total


def remove_work_folder(folder: Path) -> bool:
    """Remove a kernel's work folder whatever modes the kernel left in it; True when nothing is left."""
    for _ in range(3):
        if not os.path.lexists(folder):
            return True
        _folder_bytes(folder, 1 << 62)  # makes every folder in it 0o700
        shutil.rmtree(folder, ignore_errors=True)
    return not os.path.lexists(folder)


class _Watchdog:
    """Measures the kernel's writable host folder every :data:`WATCH_INTERVAL` s while the kernel runs and scores;
    over the limit, it kills the kernel's process group and says why (:attr:`reason`)."""

    def __init__(self, folder: Path, cap: int, limit_mb: float):
        import threading

        self.folder, self.cap, self.limit_mb = folder, cap, limit_mb
        self.pid: int | None = None
        self.reason = ""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="grade-work-folder-watchdog", daemon=True)

    def start(self, pid: int | None) -> None:
        self.pid = pid
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(WATCH_INTERVAL):
            if _folder_bytes(self.folder, self.cap) > self.cap:
                self.reason = (
                    f"the kernel wrote over the {self.limit_mb:g} MB limit of its work folder (the folder of its "
                    "sockets): it was stopped"
                )
                _kill_group(self.pid)
                return

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=30)


def execute_and_score(
    nb: Any, exercises: list[str], limits: Limits, setup: Setup
) -> tuple[dict[str, dict], list[str], list[str]]:
    """Run a notebook's code cells in a sandboxed kernel, then score ``exercises`` from this process.

    Returns:
        ``(results by exercise, notes, errors)``: the exercises' test results,
        what happened to the run as a whole, and the cells that raised.
    """
    import nbformat
    from nbclient.exceptions import DeadKernelError

    from . import sandbox

    LimitedKernelManager, BoundedClient = _limited_client_classes()
    quiet = logging.getLogger("utils.grade.nbclient")
    quiet.addHandler(logging.NullHandler())
    quiet.propagate = False

    code = [(i, c.source) for i, c in enumerate(nb.cells) if c.cell_type == "code" and c.source.strip()]
    numbers = {index: n for n, (index, _) in enumerate(code, start=1)}
    skip: set[int] = set()
    notes: list[str] = []
    memory_noted = False
    start = time.monotonic()
    deadline = start + limits.notebook_timeout
    work_bytes = int(limits.work_mb * 1e6)

    for attempt in range(MAX_KERNEL_RESTARTS + 1):
        errors: list[str] = []
        uses_reference: list[int] = []
        results: dict[str, dict] = {}
        workdir = Path(tempfile.mkdtemp(prefix="course-grade-"))
        comm = workdir / "comm"
        comm.mkdir()
        run_nb = nbformat.v4.new_notebook()
        run_nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
        run_nb.cells = [nbformat.v4.new_code_cell(src) for _, src in code]
        if setup.sandbox:
            home, package = sandbox.HOME, sandbox.PACKAGE
            env = kernel_env(home, f"{home}/data", package)
            if setup.data is not None:
                env.update(COURSE_DATA_SOURCE=sandbox.DATA, COURSE_DATA_NAME=setup.data.name)
            cwd = str(comm)
        else:
            home = workdir / "home"
            (home / "tmp").mkdir(parents=True)
            env = kernel_env(home, home / "data", setup.package)
            if setup.data is not None:
                env.update(COURSE_DATA_SOURCE=str(setup.data), COURSE_DATA_NAME=setup.data.name)
            cwd = str(home)
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
            resources={"metadata": {"path": cwd}},
        )
        client.km = client.create_kernel_manager()
        client.km.memory_bytes = int(limits.memory_gb * (1 << 30)) if limits.memory_gb > 0 else 0
        client.km.cpu_seconds = int(4 * limits.notebook_timeout + limits.score_timeout * (len(exercises) + 1))
        client.km.connection_file = str(comm / "kernel.json")
        if setup.sandbox:
            client.km.transport, client.km.ip = "ipc", str(comm / "k")
            client.km.wrap = lambda command, env=env, comm=comm: sandbox.bwrap_command(
                command, comm=comm, package=setup.package, data=setup.data, env=env, work_bytes=work_bytes
            )
            client.km.kernel_spec.interrupt_mode = "message"  # a signal would reach bwrap, not the kernel
        client.km.file_bytes = min(MAX_FILE_BYTES, int(limits.max_mb * 1e6))
        failed_at: int | None = None
        kernel_pid = None
        watchdog = _Watchdog(workdir, work_bytes, limits.work_mb)  # the socket folder and the kernel's log
        stack = contextlib.ExitStack()
        try:
            log_file = stack.enter_context(open(workdir / "kernel.log", "wb"))
            with client.setup_kernel(env=env, cwd=cwd, stdout=log_file, stderr=subprocess.STDOUT):
                kernel_pid = getattr(client.km.provisioner, "pid", None)
                watchdog.start(kernel_pid)
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
                        if watchdog.reason:
                            notes.append(f"cell {numbers[index]} ({_first_line(source)!r}): {watchdog.reason}")
                        else:
                            notes.append(
                                f"the kernel died in cell {numbers[index]} ({_first_line(source)!r}: "
                                f"exit, crash or over the memory limit){_log_tail(workdir / 'kernel.log')}"
                            )
                        break
                    if _folder_bytes(workdir, work_bytes) > work_bytes:
                        failed_at = index
                        notes.append(
                            f"cell {numbers[index]} ({_first_line(source)!r}) wrote over the "
                            f"{limits.work_mb:g} MB limit of the work folder"
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
                    elif ename == "RuntimeError" and STUB_MESSAGE in evalue:
                        uses_reference.append(numbers[index])
                    elif ename != "ExerciseCheckError":
                        errors.append(
                            f"cell {numbers[index]} ({_first_line(source)!r}) raised {_clip(ename, 60)}: "
                            f"{_clip(evalue, 300)}"
                        )
                        if (ename == "MemoryError" or "failed to map segment" in evalue) and not memory_noted:
                            memory_noted = True
                            notes.append(
                                f"cell {numbers[index]} hit the memory limit ({limits.memory_gb:g} GiB "
                                "of address space; raise --memory-gb if a correct notebook needs more)"
                            )
                if failed_at is None:  # also when stopped by the notebook limit: score what was defined
                    results = _score(_KernelCalls(client, run_nb, watchdog), exercises, limits, setup.seed, notes)
                    if watchdog.reason:
                        notes.append(f"while its checks ran, {watchdog.reason}")
        except Exception as err:  # noqa: BLE001 - the kernel could not start or talk
            notes.append(f"could not run the notebook: {type(err).__name__}: {str(err)[:200]}")
        finally:
            watchdog.stop()
            _kill_group(kernel_pid)
            stack.close()
            if not remove_work_folder(workdir):
                notes.append(f"could not remove the kernel's work folder {workdir}: remove it by hand")
        if uses_reference and failed_at is None:
            notes.append(
                f"{len(uses_reference)} cell(s) ({', '.join(map(str, uses_reference[:8]))}) called a course reference, "
                "which is not available while grading (expected in the lesson's own example cells)"
            )
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
    client.reset_budget(learner=False)
    try:
        client.execute_cell(probe, len(run_nb.cells) - 1, store_history=False)
        return client.error() is None
    except Exception:  # noqa: BLE001
        return False
    finally:
        client.timeout = saved
        run_nb.cells.pop()


# ----------------------------------------------------------------------------
# Scoring: the checks run here; only the learner's function runs in the kernel
# ----------------------------------------------------------------------------


class KernelGone(Exception):
    """The kernel died or stopped answering: no more calls into it."""


class _KernelCalls:
    """Calls into the learner's kernel: wire JSON in, one display-data answer out (see :func:`utils.course.wire.answer`)."""

    def __init__(self, client: Any, run_nb: Any, watchdog: _Watchdog | None = None):
        self.client, self.run_nb, self.gone, self.watchdog = client, run_nb, "", watchdog

    def request(self, payload: dict, timeout: float) -> dict:
        import nbformat
        from nbclient.exceptions import DeadKernelError

        if self.gone:
            raise KernelGone(self.gone)
        text = wire.encode(payload)
        cell = nbformat.v4.new_code_cell(f"__import__({WIRE!r}).answer({text!r}, globals())")
        self.run_nb.cells.append(cell)
        self.client.timeout = max(1, int(timeout))
        self.client.reset_budget(cell_limit=MAX_ANSWER_BYTES, learner=False)
        try:
            cell = self.client.execute_cell(cell, len(self.run_nb.cells) - 1, store_history=False)
        except DeadKernelError:
            self.gone = (self.watchdog and self.watchdog.reason) or "the kernel died while its checks ran"
            raise KernelGone(self.gone) from None
        finally:
            self.run_nb.cells.pop()
        error = self.client.error()
        if error and error[0] == "CellTimeoutError":
            if not _responsive(self.client, self.run_nb):
                self.gone = "the kernel stopped answering after a call ran past the time limit"
            raise TimeoutError(f"the function ran past the {timeout:.0f} s left for this exercise's checks")
        answers = [
            out["data"][wire.MIME]
            for out in cell.get("outputs", [])
            if out.get("output_type") == "display_data" and wire.MIME in out.get("data", {})
        ]
        if self.client.dropped:
            raise RuntimeError("the answer was over the output size limit")
        if len(answers) != 1 or not isinstance(answers[0], str):
            why = f" ({error[0]}: {error[1]})" if error else ""
            raise RuntimeError(f"no answer came back from the kernel{why}")
        reply = wire.decode(answers[0], tensor=wire.keras_tensor)
        if not isinstance(reply, dict):
            raise RuntimeError("the kernel's answer is not in the expected form")
        return reply


def _builtin_exception(name: str) -> type[Exception] | None:
    import builtins

    cls = getattr(builtins, name, None)
    return cls if isinstance(cls, type) and issubclass(cls, Exception) else None


def _learner_exception(type_name: Any, message: Any, line: Any, base: Any = "") -> Exception:
    """An exception like the one the learner's function raised in the kernel.

    Builtin types are kept; another type becomes a class of the same name
    derived from its nearest builtin base (a ``ValueError`` subclass is still
    caught as a ``ValueError``).
    """
    type_name, message = str(type_name)[:60], str(message)[:500]
    cls = _builtin_exception(type_name)
    err: Exception
    try:
        if cls is None:
            parent = _builtin_exception(str(base)) or Exception
            cls = type(re.sub(r"\W", "_", type_name) or "Error", (parent,), {})
        err = cls(message)
    except Exception:  # noqa: BLE001 - a builtin with another constructor
        err = Exception(f"{type_name}: {message}")
    err.learner_line = str(line)[:300]
    return err


class _KernelFunction:
    """Stands for the learner's function in the grader: each call runs the function in the kernel."""

    def __init__(self, calls: _KernelCalls, name: str, kernel_seed: int, stop_at: float):
        self.calls, self.name, self.kernel_seed, self.stop_at = calls, name, kernel_seed, stop_at
        self.__name__ = name

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        import builtins

        left = self.stop_at - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"the checks of {self.name} ran out of time (an endless loop in the function?)")
        payload = {"name": self.name, "args": list(args), "kwargs": kwargs, "seed": self.kernel_seed}
        self.kernel_seed = None  # the learner's global RNG is seeded once per variant, as in the lesson
        symbolic = [(i, a) for i, a in enumerate(args) if _is_symbolic(a)]
        if symbolic:  # a Keras block (lesson 03): the kernel builds the model, a stand-in layer comes back
            payload["build"] = [[i, [None if d is None else int(d) for d in a.shape[1:]]] for i, a in symbolic]
            payload["args"] = [None if _is_symbolic(a) else a for a in args]
        reply = self.calls.request(payload, left)
        if reply.get("changed"):  # never copied back: no array of this process is written by the kernel's data
            raise InPlaceChange()
        for item in reply.get("warnings") or []:
            if isinstance(item, (list, tuple)) and len(item) == 2:
                category = getattr(builtins, str(item[0]), None)
                if not (isinstance(category, type) and issubclass(category, Warning)):
                    category = UserWarning
                warnings.warn(str(item[1])[:300], category, stacklevel=2)
        if "raised" in reply:
            raised = reply["raised"] if isinstance(reply["raised"], (list, tuple)) else []
            raise _learner_exception(*(list(raised) + ["", "", "", ""])[:4])
        if "model" in reply and symbolic:
            return _remote_block(self, reply, [a for _, a in symbolic])
        if "ok" not in reply:
            raise RuntimeError("the kernel's answer holds no value")
        return reply["ok"]

    def run_model(self, model: Any, weights: list[np.ndarray], inputs: list[np.ndarray], training: bool) -> np.ndarray:
        """The output of a block built by the learner's function (kept in the kernel) with the given weights."""
        left = self.stop_at - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"the checks of {self.name} ran out of time")
        reply = self.calls.request(
            {"run": model, "weights": weights, "inputs": inputs, "training": bool(training)}, left
        )
        if "raised" in reply:
            raised = reply["raised"] if isinstance(reply["raised"], (list, tuple)) else []
            raise _learner_exception(*(list(raised) + ["", "", "", ""])[:4])
        out = reply.get("ok")
        if not isinstance(out, np.ndarray):
            raise RuntimeError("the block's output did not come back as an array")
        return out


def _is_symbolic(value: Any) -> bool:
    if "keras" not in sys.modules:
        return False
    import keras

    return isinstance(value, keras.KerasTensor)


def _remote_block(fn: _KernelFunction, reply: dict, inputs: list) -> Any:
    """A Keras layer standing for the learner's block: same output shape and weights; it computes in the kernel."""
    import keras
    from keras import ops

    weights, shape, model = reply.get("weights"), reply.get("output_shape"), reply.get("model")
    if not (isinstance(weights, list) and len(weights) <= 1000 and isinstance(shape, (list, tuple))):
        raise RuntimeError("the kernel's description of the block is not in the expected form")
    if not all(d is None or (type(d) is int and 0 < d < 1 << 20) for d in shape):
        raise RuntimeError("the kernel's block has an impossible output shape")
    specs = []
    for item in weights:
        if not (isinstance(item, (list, tuple)) and len(item) == 3 and isinstance(item[1], (list, tuple))):
            raise RuntimeError("the kernel's description of the block's weights is not in the expected form")
        dims = tuple(item[1])
        if not all(type(d) is int and 0 < d < 1 << 16 for d in dims) or np.prod(dims, dtype=object) > 1 << 26:
            raise RuntimeError("the kernel's block has a weight of an impossible shape")
        specs.append((re.sub(r"[^A-Za-z0-9_]", "_", str(item[0]))[:60] or "weight", dims, bool(item[2])))

    class LearnerBlock(keras.layers.Layer):
        def __init__(self):
            super().__init__(name=f"learner_{fn.name}")
            self.mirror = [  # in the kernel model's order (Layer.weights puts the trainable ones first)
                self.add_weight(shape=dims, name=name, initializer="zeros", trainable=trainable)
                for name, dims, trainable in specs
            ]

        def compute_output_shape(self, input_shape: Any) -> tuple:
            return tuple(shape)

        def call(self, inputs: Any, training: bool = False) -> Any:
            arrays = [np.asarray(ops.convert_to_numpy(x)) for x in (inputs if isinstance(inputs, list) else [inputs])]
            values = [np.asarray(ops.convert_to_numpy(v)) for v in self.mirror]
            return ops.convert_to_tensor(fn.run_model(model, values, arrays, bool(training)))

    return LearnerBlock()(list(inputs) if len(inputs) > 1 else inputs[0])


def kernel_seed_for(seed: int, exercise: str) -> int:
    """The global-RNG seed a kernel gets for an exercise's grading variant: a keyed hash of (run seed, exercise).

    HMAC-SHA256 keyed by the run's secret seed: the kernel learns nothing about
    the run seed (and so about the grading inputs of other exercises) from it.
    """
    key = int(seed).to_bytes(16, "big", signed=True)
    digest = hmac.new(key, f"grading|{exercise}".encode(), hashlib.sha256).digest()
    return int.from_bytes(digest[:4], "big")


def _score(calls: _KernelCalls, exercises: list[str], limits: Limits, seed: int, notes: list[str]) -> dict[str, dict]:
    """Run each exercise's checks here, on the learner's function called in the kernel (own time limit each)."""
    from .checks.runner import SEED, run_check

    results: dict[str, dict] = {}
    for name in exercises:
        if calls.gone:
            results[name] = {"exercise": name, "not_scored": calls.gone}
            continue
        stop_at = time.monotonic() + limits.score_timeout
        result: dict[str, Any] = {"exercise": name}
        try:
            probe = calls.request({"probe": name}, limits.score_timeout)
        except (KernelGone, TimeoutError, RuntimeError, wire.WireError) as err:
            results[name] = {"exercise": name, "not_scored": f"scoring failed ({err})"}
            continue
        if not probe.get("defined") or not probe.get("callable"):
            result["missing"] = (
                "not defined"
                if not probe.get("defined")
                else f"{name} is a {str(probe.get('type'))[:40]}, not a function"
            )
            result["close"] = [str(c)[:80] for c in probe.get("close") or []][:3]
            results[name] = result
            continue
        module = str(probe.get("module", ""))
        if module == "utils" or module.startswith("utils."):
            result["reference"] = True
        for variant, kernel_seed in (("public", SEED), ("grading", kernel_seed_for(seed, name))):
            fn = _KernelFunction(calls, name, kernel_seed, stop_at)
            try:
                with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
                    tests = run_check(name, fn, variant=variant, record=True, seed=seed, time_limit=False)
                result[variant] = [[str(t.description)[:300], bool(t.passed), str(t.detail)[:1500]] for t in tests]
            except BaseException as err:  # noqa: BLE001 - a broken check must not stop the scoring
                if isinstance(err, KeyboardInterrupt):
                    raise
                result[variant + "_error"] = f"{type(err).__name__}: {str(err)[:500]}"
        if calls.gone and time.monotonic() < stop_at:
            notes.append(f"{calls.gone}: later exercises were not scored")
        elif time.monotonic() >= stop_at:
            result.setdefault("note", f"the checks ran past the {limits.score_timeout:.0f} s limit")
        results[name] = result
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
    if data.get("note"):
        notes.append(str(data["note"]))
    if data.get("reference"):
        score.zero = True
        notes.append(f"uses the course's reference utils.{name} instead of the learner's own code")
    elif any(STUB_MESSAGE in detail for _, ok, detail in score.public + score.grading if not ok):
        score.zero = True
        notes.append(
            "calls the course's reference, which is not available while grading: only the learner's own code scores"
        )
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
    setup: Setup | None = None,
) -> Submission:
    """Grade one notebook file (never raises for a bad submission: an internal failure becomes a note)."""
    start = time.monotonic()
    try:
        sub = _grade_submission(path, learner, lessons, limits, expected_lesson, setup)
    except Exception as err:  # noqa: BLE001 - one learner's notebook must never lose the others' rows
        sub = Submission(path=path, learner=learner, lesson=expected_lesson or "")
        sub.notes.append(f"could not be graded: {type(err).__name__}: {str(err)[:200]}")
        names = lessons[expected_lesson].exercises if expected_lesson in lessons else []
        sub.exercises = [ExerciseScore(n, zero=True, note="not graded (internal error)") for n in names]
    sub.seconds = time.monotonic() - start
    return sub


def _grade_submission(
    path: Path,
    learner: str,
    lessons: dict[str, LessonInfo],
    limits: Limits,
    expected_lesson: str | None,
    setup: Setup | None,
) -> Submission:
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
    if setup is None:
        raise ValueError("grading a notebook needs a Setup (the package copy the kernels get)")
    results, notes, errors = execute_and_score(nb, names, limits, setup)
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

    Every text that may hold the learner's words (names, notes, the cells that
    raised, the tests' details: exception names and messages, values) is shown
    as code - a code span, or a fenced block for several lines - whose fence
    is longer than any run of backticks in it, so it can neither format the
    page nor carry HTML, links or images, nor read like the grader's text.

    Args:
        subs: the learner's graded submissions.
        show_grading: include the grading tests' own descriptions and expected
            vs got (they reveal the hidden inputs; off for feedback sent to learners).
    """
    lines = [f"# Feedback for {_code(subs[0].learner)}", ""]
    for sub in subs:
        total = sum(ex.score for ex in sub.exercises)
        lines += [
            f"## {_code(sub.path.name)}: {_code(sub.lesson) if sub.lesson else 'unknown lesson'}",
            "",
            f"Score: **{total:.2f} / {len(sub.exercises)}** "
            "(each exercise scores the share of its grading tests passed).",
            "",
        ]
        if sub.version:
            lines.append(f"Course version of the notebook: {_code(sub.version)}.")
        for note in sub.notes:
            lines.append(f"- {_code(note)}")
        if sub.errors:
            lines += ["", "Cells that raised an error while the notebook ran (the rest still ran):"]
            lines += [f"- {_code(e)}" for e in sub.errors]
        lines.append("")
        for ex in sub.exercises:
            lines += [f"### {_code(ex.exercise)}: {ex.score:.2f}", ""]
            if ex.note:
                lines += [_code(ex.note), ""]
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
                    lines += ["Every test failed:", "", *_fenced(details.pop().strip()), ""]
                for description, ok, detail in tests:
                    mark = PASS if ok else FAIL
                    lines.append(f"- {mark} {description}")  # the check's own words
                    if not ok and detail and not shared:
                        lines += ["", *("  " + line for line in _fenced(detail.strip())), ""]
                lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def _longest_backticks(text: str) -> int:
    return max((len(run) for run in re.findall(r"`+", text)), default=0)


def _code(text: Any, limit: int = 2000) -> str:
    """``text`` as one inline Markdown code span (one line, at most ``limit`` characters): shown as typed."""
    text = re.sub(r"\s+", " ", str(text)).strip()
    if len(text) > limit:
        text = text[: limit - 3] + "..."
    if not text:
        return "` `"
    fence = "`" * (_longest_backticks(text) + 1)
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def _fenced(text: str, limit: int = 4000) -> list[str]:
    """``text`` as the lines of a fenced Markdown code block whose fence no line of it can close."""
    text = str(text)
    if len(text) > limit:
        text = text[: limit - 3] + "..."
    fence = "`" * max(3, _longest_backticks(text) + 1)
    return [fence + "text", *text.splitlines(), fence]


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
        notes = "; ".join(sub.notes + sub.errors)[:300]
        lines.append(
            f"| {_md(_code(sub.learner))} | {_md(_code(sub.path.name))} | {_md(sub.lesson)} | "
            f"{sum(e.score for e in sub.exercises):.2f} / {len(sub.exercises)} | {sub.seconds:.0f} | "
            f"{_md(_code(notes)) if notes else ''} |"
        )
    return "\n".join(lines) + "\n"


def _cell(value: Any) -> Any:
    """A CSV cell a spreadsheet will not run: text that could start a formula gets a leading quote."""
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value


def _md(text: Any) -> str:
    """Text for one Markdown table cell or heading: no line breaks, ``|`` escaped (also in a code span)."""
    return re.sub(r"[\r\n]+", " ", str(text)).replace("|", "\\|")


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
    writer.writerows({key: _cell(value) for key, value in row.items()} for row in csv_rows(subs))
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


def collect(paths: list[Path]) -> tuple[list[tuple[Path, str]], list[Path], list[Path], dict[Path, str]]:
    """``[(notebook, learner)]`` from files and folders; the folders given; the folders of the files given; and, for
    each notebook whose learner name another source already took, a note saying which name it got instead.

    In a folder, every ``*.ipynb`` entry counts (links and other non-regular
    files too: reading them gives a row saying why); links to folders are not
    followed, hidden files and folders are skipped. Learner names are unique:
    the notebooks of one folder ``alice/`` are one learner, but ``bob.ipynb``
    beside a folder ``bob/`` (or two files ``bob.ipynb`` given from two
    folders) are two learners, ``bob`` and ``bob (2)`` in the order found.
    """
    raw: list[tuple[Path, str, tuple]] = []
    folders, parents = [], []
    for path in paths:
        path = path.expanduser().resolve()
        if path.is_dir():
            folders.append(path)
            entries = []
            for top, dirs, files in os.walk(path, followlinks=False):
                dirs[:] = sorted(d for d in dirs if not d.startswith("."))  # .ipynb_checkpoints and hidden
                entries += [Path(top) / f for f in files if f.endswith(".ipynb") and not f.startswith(".")]
            for nb in sorted(entries):
                raw.append((nb, learner_name(nb, path), (str(path), nb.relative_to(path).parts[0])))
        elif path.exists():
            parents.append(path.parent)
            raw.append((path, learner_name(path, None), (str(path),)))
        else:
            raise FileNotFoundError(f"no such submission file or folder: {path}")
    found: list[tuple[Path, str]] = []
    renamed: dict[Path, str] = {}
    owner: dict[str, tuple] = {}  # learner name (case-insensitive: one feedback file each) -> its source
    named: dict[tuple, str] = {}
    for path, learner, source in raw:
        if source not in named:
            name, n = learner, 1
            while owner.get(name.lower(), source) != source:
                n += 1
                name = f"{learner} ({n})"
            owner[name.lower()], named[source] = source, name
        name = named[source]
        if name != learner:
            renamed[path] = (
                f"another submission already has the learner name {learner!r}: this one ({path.name}) is "
                f"graded as {name!r}"
            )
        found.append((path, name))
    return found, folders, parents, renamed


def _lesson_arg(value: str | None, lessons: dict[str, LessonInfo]) -> str | None:
    if not value:
        return None
    matches = [name for name in lessons if name == value or name[:2] == value.zfill(2)[:2]]
    if len(matches) != 1:
        raise ValueError(f"--lesson {value!r}: expected one of {', '.join(sorted(lessons))}")
    return matches[0]


def main(argv: list[str] | None = None) -> int:
    """``python -m utils.course.grade SUBMISSION.ipynb [MORE | FOLDER ...] --out grades.csv``."""
    parser = argparse.ArgumentParser(
        prog="python -m utils.course.grade",
        description="Score submitted learner notebooks (see docs/instructors.md).",
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
    parser.add_argument(
        "--max-mb",
        type=float,
        default=DEFAULT_MAX_MB,
        help="largest notebook file read, and largest file a submission's kernel may write",
    )
    parser.add_argument(
        "--work-mb",
        type=float,
        default=DEFAULT_WORK_MB,
        help="bytes (MB) a submission may keep in its work folder, /tmp and /dev/shm",
    )
    parser.add_argument(
        "--no-sandbox",
        action="store_true",
        help="run the kernels without bubblewrap (a class you trust only: the kernel can then read and write "
        "whatever your user can, reach the network and outlive the grader)",
    )
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
        found, folders, parents, renamed = collect(args.submissions)
        outputs = Outputs.for_csv(args.out, args.feedback)
        checkout = repo_root(Path(__file__).resolve().parent)
        check_outputs(
            outputs, ([checkout] if checkout else []) + folders, args.overwrite, parents, [path for path, _ in found]
        )
        for folder in {outputs.csv.parent, outputs.summary.parent, outputs.feedback.parent}:  # before grading
            check_writable(folder, "the grading outputs")
    except (ValueError, OSError) as err:  # refusals, a read-only or full output folder
        print(f"error: {one_line(err)}", file=sys.stderr)
        return 2
    if not found:
        print("error: no .ipynb submissions found in " + ", ".join(map(str, args.submissions)), file=sys.stderr)
        return 2
    from . import sandbox

    if args.no_sandbox:
        print(
            "warning: --no-sandbox: each kernel runs as your user, outside any sandbox: it can read and write your "
            "files (this grader's outputs, the submissions, your home), read your processes' command lines and "
            "environments, reach the network and leave processes running after the grader ends. Grade only a "
            "class you trust this way.",
            file=sys.stderr,
        )
    else:
        why = sandbox.missing()
        if why:
            print(
                f"error: cannot sandbox the submissions' kernels: {why} (or pass --no-sandbox for a class you trust)",
                file=sys.stderr,
            )
            return 2
    from ..data.phantom import ensure_phantom  # lazy: nilearn loads only once submissions are found

    data_source = ensure_phantom("ci", progress=False)
    limits = Limits(args.cell_timeout, args.timeout, args.score_timeout, args.memory_gb, args.max_mb, args.work_mb)
    copy_root = Path(tempfile.mkdtemp(prefix="course-grade-package-"))
    subs = []
    try:
        setup = Setup(sandbox.private_package(copy_root / "package"), data_source, not args.no_sandbox)
        digest = sandbox.digest(setup.package)
        for i, (path, learner) in enumerate(found, start=1):
            print(f"[{i}/{len(found)}] {learner}: {path.name} ...", end=" ", flush=True)
            sub = grade_submission(path, learner, lessons, limits, expected, setup)
            if path in renamed:
                sub.notes.insert(0, renamed[path])
            subs.append(sub)
            print(f"{sum(e.score for e in sub.exercises):.2f} / {len(sub.exercises)} ({sub.seconds:.0f} s)", flush=True)
            if sandbox.digest(setup.package) != digest:
                print(
                    f"error: the package copy the kernels share changed while {path} ran: grading stopped",
                    file=sys.stderr,
                )
                return 1
    finally:
        sandbox.remove_private(copy_root)
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
