"""The OS sandbox of a grading kernel: bubblewrap (``bwrap``), the sandbox Flatpak uses.

:func:`bwrap_command` wraps a kernel's command line so that it runs with:

- a read-only view of the Python environment (the venv and its base
  interpreter) and of a private copy of the course package (:func:`private_package`,
  never the instructor's checkout), and nothing else of the machine's files but
  ``/usr`` and the dynamic linker's cache: no home, no submissions, no outputs;
- no network (its own empty network namespace), its own PID namespace (every
  process of the submission dies with the kernel; ``/proc`` shows only them),
  its own IPC namespace, a new session (no terminal), no capabilities and no
  further user namespaces;
- a private ``/tmp`` (the kernel's home and working folder) and ``/dev/shm``,
  both memory file systems with a size limit (the total-bytes limit);
- one writable host folder, ``comm``: the kernel's connection file and its
  Jupyter sockets (``ipc`` transport: Unix sockets work across network
  namespaces, TCP ports on loopback do not); the grader bounds it while the
  kernel runs (``utils.course.grade``'s watchdog, ``--work-mb``) and removes it;
- an environment holding only the variables given (``--clearenv``).

:func:`missing` says, in one line, why no sandbox can run here (and how to get one).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from .checks import CHECKS

HOME = "/tmp/work"  # the kernel's home and working folder, inside the sandbox
PACKAGE = "/opt/course"  # where the private package copy is mounted (PYTHONPATH)
DATA = "/opt/course-data"  # the phantom data, read-only
WIRE = "_course_wire"  # utils/wire.py, also at the top of the copy: the kernel answers calls without importing utils
STUB_MESSAGE = "is not available while grading: the grader scores your own code"


def _python_roots() -> list[str]:
    """The folders the kernel's Python needs: the environment and its base interpreter (links resolved)."""
    roots = {Path(sys.prefix).resolve(), Path(sys.base_prefix).resolve(), Path(sys.executable).resolve().parent.parent}
    out = []
    for root in sorted(roots, key=lambda p: len(p.parts)):
        if str(root) in ("/", "/usr") or any(Path(o) in root.parents or Path(o) == root for o in out):
            continue
        out.append(str(root))
    return out


def missing() -> str | None:
    """``None`` when bubblewrap can sandbox here, else one line: what is missing and how to get it."""
    if not sys.platform.startswith("linux"):
        return f"the grading sandbox needs Linux (bubblewrap); this is {sys.platform}: grade on a Linux machine"
    if shutil.which("bwrap") is None:
        return "bubblewrap (bwrap) is not installed: apt-get install bubblewrap (or your distribution's package)"
    probe = ["bwrap", "--unshare-all", "--unshare-user", "--die-with-parent", "--ro-bind", "/", "/", "true"]
    try:
        done = subprocess.run(probe, capture_output=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as err:
        return f"bubblewrap could not start ({err})"
    if done.returncode:
        said = done.stderr.decode("utf-8", "replace").strip().splitlines()
        return (
            f"bubblewrap cannot create user/PID/network namespaces here ({said[-1] if said else 'no message'}): "
            "enable unprivileged user namespaces (sysctl kernel.unprivileged_userns_clone=1, or run outside "
            "a container that forbids them)"
        )
    return None


def bwrap_command(
    command: list[str],
    *,
    comm: Path,
    package: Path,
    data: Path | None,
    env: dict[str, str],
    work_bytes: int,
) -> list[str]:
    """``command`` run inside the sandbox (see the module's docstring)."""
    args = [
        "bwrap",
        "--unshare-all",
        "--unshare-user",
        "--disable-userns",
        "--die-with-parent",
        "--new-session",
        "--cap-drop",
        "ALL",
        "--clearenv",
        "--ro-bind",
        "/usr",
        "/usr",
    ]
    for link in ("bin", "lib", "lib64", "sbin"):
        target = Path("/") / link
        if target.is_symlink():
            args += ["--symlink", os.readlink(target), f"/{link}"]
        elif target.is_dir():
            args += ["--ro-bind", str(target), f"/{link}"]
    for etc in ("/etc/ld.so.cache", "/etc/fonts", "/etc/localtime"):
        if os.path.exists(etc):
            args += ["--ro-bind", etc, etc]
    args += ["--ro-bind", str(package), PACKAGE]
    if data is not None:
        args += ["--ro-bind", str(data), DATA]
    args += [
        "--proc",
        "/proc",
        "--dev",
        "/dev",
        "--size",
        str(work_bytes),
        "--tmpfs",
        "/tmp",
        "--size",
        str(min(work_bytes, 64 << 20)),
        "--tmpfs",
        "/dev/shm",
        "--dir",
        HOME,
        "--dir",
        f"{HOME}/tmp",
    ]
    # After the tmpfs mounts: a venv or a socket folder under /tmp (a checkout in /tmp, pytest's
    # tmp_path) stays visible instead of being hidden by the private /tmp.
    for root in _python_roots():
        if not root.startswith("/usr/"):
            args += ["--ro-bind", root, root]
    args += ["--bind", str(comm), str(comm), "--chdir", HOME]
    for key, value in sorted(env.items()):
        args += ["--setenv", key, value]
    return [*args, "--", *command]


def _stub(name: str, module: str) -> str:
    return (
        f"\n\ndef {name}(*args, **kwargs):  # replaced in the grader's private copy\n"
        f"    raise RuntimeError('{module}.{name} {STUB_MESSAGE}')\n"
    )


_CHECKS_STUB = '''"""The checks are not available while grading: the grader runs them outside this kernel."""


def __getattr__(name):
    if name.startswith("check_"):
        return lambda *args, **kwargs: print("(checked by the grader, outside this notebook)")
    raise RuntimeError(f"utils.course.checks.{{name}} {message}")
'''


def private_package(dest: Path) -> Path:
    """A copy of the course package for grading kernels, in ``dest``; returns the folder to mount.

    The graded functions' references (each ``def <exercise>`` at the top of a
    module) are replaced by stubs that raise ``RuntimeError(... not available
    while grading ...)``, and ``utils.course.checks`` by a stub whose ``check_*``
    functions only print a line (the grader runs the checks outside the kernel).
    """
    source = Path(__file__).resolve().parents[1]  # the utils package (this module is utils/course/sandbox.py)
    target = dest / "utils"
    shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    shutil.copy2(Path(__file__).with_name("wire.py"), dest / f"{WIRE}.py")  # importable without the package
    checks = target / "course" / "checks"
    shutil.rmtree(checks)
    checks.mkdir()
    (checks / "__init__.py").write_text(_CHECKS_STUB.format(message=STUB_MESSAGE))
    for path in sorted(target.rglob("*.py")):  # every stage's module: the references live in subpackages
        if checks in path.parents:
            continue
        text = path.read_text(encoding="utf-8")
        stubs = [name for name in CHECKS if f"\ndef {name}(" in text or text.startswith(f"def {name}(")]
        if stubs:
            module = ".".join(path.relative_to(dest).with_suffix("").parts)
            path.write_text(text + "".join(_stub(name, module) for name in stubs), encoding="utf-8")
    for path in sorted(dest.rglob("*")):
        path.chmod(0o555 if path.is_dir() else 0o444)
    dest.chmod(0o555)
    return dest


def digest(folder: Path) -> str:
    """A fingerprint of every file under ``folder`` (paths, modes and contents): the copy must never change."""
    import hashlib

    h = hashlib.sha256()
    for path in sorted(folder.rglob("*")):
        info = path.lstat()
        h.update(f"{path.relative_to(folder)}|{info.st_mode}|".encode())
        if path.is_file() and not path.is_symlink():
            h.update(path.read_bytes())
    return h.hexdigest()


def remove_private(root: Path) -> None:
    """Remove a private package copy (made read-only by :func:`private_package`)."""
    for path in [root, *root.rglob("*")]:
        if path.is_dir() and not path.is_symlink():
            path.chmod(0o755)
    shutil.rmtree(root, ignore_errors=True)
