"""Safe writing for every course command: atomic writes, proof of ownership, refusals.

The rule the commands follow (``predict``, ``phantom``, ``cache``, ``train``,
``download``):

* every write goes to a temporary file beside the target, then one
  ``os.replace`` puts it in place (:func:`atomic_path`, :func:`write_json_atomic`),
  so a killed command leaves the old file or the new one, never half of one;
* a command replaces or deletes only what it can prove it wrote: the folder's
  ownership marker :data:`OWNER_FILE` lists each file a course command made
  with its size and sha256 (or mtime for very large files); a file that is
  not listed, or changed since, is never touched (:class:`OwnedFiles`);
* targets that no flag unlocks are refused (:func:`check_target`): the
  filesystem root, the home folder (and its parents), a git checkout's root,
  anything inside ``.git``, and any path that is the same file as an input
  (``os.path.samefile``: through symbolic and hard links) or lies inside an
  input folder.

* one writer per folder at a time: a command holds the folder's lock
  (:func:`folder_lock`, an OS file lock on ``.course-lock``) for its whole run,
  and every marker update re-reads the marker, merges and renames under it, so
  two commands never lose each other's entries; a second command waits
  :data:`utils.config.LOCK_WAIT_SECONDS` and then refuses, naming the process
  that holds the folder; a lock of a killed process is released by the OS;
* ownership before bytes: a file is claimed in the marker before it is written
  (:meth:`OwnedFiles.writing`), so a failed or killed write never leaves a file
  the course then refuses to replace; :func:`check_writable` refuses a
  read-only or full folder before long work starts.

A refusal raises :class:`UnsafeWriteError` with one line that says what was
refused and why; the command lines print it (and any ``OSError``, e.g. a full
disk) as one line and exit with status 2.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import socket
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

from .errors import CourseError

OWNER_FILE = ".course-files.json"
"""Ownership marker: the files course commands wrote in a folder, with sizes and hashes."""


LOCK_FILE = ".course-lock"
"""The folder lock a command holds while it writes there (:func:`folder_lock`)."""

BOOKKEEPING = (OWNER_FILE, LOCK_FILE)
"""Files the course keeps in an output folder about the folder itself (never outputs, never the user's)."""


class UnsafeWriteError(CourseError, ValueError):
    """A write, replacement or deletion was refused to protect the user's files."""


class FolderBusyError(CourseError, BlockingIOError):
    """Another course command is writing into the folder (it holds the folder's lock)."""


class UnwritableError(CourseError, OSError):
    """The output folder cannot be written (read-only, not permitted, or too little free space)."""


# ----------------------------------------------------------------------------
# Atomic writes
# ----------------------------------------------------------------------------

TEMPORARY_PREFIX = ".tmp-"
_TEMPORARY = re.compile(re.escape(TEMPORARY_PREFIX) + r"\d+-(?P<name>.+)")


def temporary_path(path: Path | str) -> Path:
    """A hidden temporary name beside ``path`` with the same extension(s): ``.tmp-<pid>-<name>``."""
    path = Path(path)
    return path.with_name(f"{TEMPORARY_PREFIX}{os.getpid()}-{path.name}")


def stale_temporaries(folder: Path | str, names: Iterable[str]) -> list[Path]:
    """Temporary files that :func:`temporary_path` left in ``folder`` (a killed write) for one of ``names``."""
    names = set(names)
    return [
        p
        for p in sorted(Path(folder).glob(TEMPORARY_PREFIX + "*"))
        if (m := _TEMPORARY.fullmatch(p.name)) and m["name"] in names and p.is_file() and not p.is_symlink()
    ]


@contextlib.contextmanager
def atomic_path(path: Path | str) -> Iterator[Path]:
    """Yield a temporary path to write; on success it replaces ``path`` in one rename.

    The temporary file keeps the target's extension (``.nii.gz``, ``.npy``,
    ``.keras``) so format-sniffing writers accept it. On any error it is removed
    and ``path`` is left as it was.
    """
    path = Path(path)
    tmp = temporary_path(path)
    try:
        yield tmp
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def write_bytes_atomic(path: Path | str, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        Path(tmp).write_bytes(data)


def write_json_atomic(path: Path | str, data) -> None:
    """Write ``data`` as indented JSON to ``path`` atomically."""
    write_bytes_atomic(path, json.dumps(data, indent=1).encode())


def read_json_object(path: Path | str, what: str) -> dict:
    """Read a JSON file that must hold an object.

    Raises:
        UnsafeWriteError: if it is unreadable, not JSON, or not an object
            (a command must not guess what a damaged marker meant).
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise UnsafeWriteError(f"{what} {path} is unreadable or not JSON ({err}); refusing to use it") from err
    if not isinstance(data, dict):
        raise UnsafeWriteError(f"{what} {path} should hold a JSON object; found a {type(data).__name__}")
    return data


# ----------------------------------------------------------------------------
# Targets no flag unlocks
# ----------------------------------------------------------------------------


def protected_reason(path: Path | str) -> str | None:
    """Why ``path`` may never be replaced, deleted or used as an output folder (None if it may)."""
    p = Path(path).expanduser().resolve()
    if p == Path(p.anchor):
        return "it is the filesystem root"
    home = Path.home().resolve()
    if p == home:
        return "it is the home folder"
    if p in home.parents:
        return "it holds the home folder"
    if ".git" in p.parts:
        return "it is inside a .git folder"
    if (p / ".git").exists():
        return "it is the root of a git checkout"
    if (p / "pyproject.toml").is_file() and (p / "utils").is_dir():
        return "it is the root of the course checkout"
    return None


def _inside(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def check_target(
    path: Path | str, what: str, inputs: Iterable[Path | str] = (), input_dirs: Iterable[Path | str] = ()
) -> Path:
    """Refuse a write target that would touch protected paths or the inputs.

    Args:
        path: the file or folder about to be written.
        what: how the error names it (e.g. ``"--output"``).
        inputs: files the command reads; ``path`` may not be any of them
            (compared by inode, so symbolic and hard links count).
        input_dirs: folders the command reads; ``path`` may not be one of them
            or lie inside one.

    Returns:
        ``path`` as given.

    Raises:
        UnsafeWriteError: naming the target and the reason.
    """
    path = Path(path)
    reason = protected_reason(path)
    if reason:
        raise UnsafeWriteError(f"refusing to write {what} {path}: {reason}")
    if path.exists():
        for source in inputs:
            with contextlib.suppress(OSError):
                if os.path.samefile(path, source):
                    raise UnsafeWriteError(
                        f"refusing to overwrite the input: {what} {path} is the input file {source} "
                        "(the same file, through a link or not)"
                    )
    real = path.expanduser().resolve()
    for folder in input_dirs:
        folder = Path(folder)
        if _inside(real, folder.resolve()):
            raise UnsafeWriteError(
                f"refusing to write {what} {path}: it is inside the input folder {folder}, which is read-only"
            )
    return path


# ----------------------------------------------------------------------------
# Proof of ownership
# ----------------------------------------------------------------------------

HASH_LIMIT = 256 << 20
"""Files above this size are recorded by size and mtime instead of sha256 (hashing is slow)."""


def sha256sum(path: Path | str, chunk: int = 1 << 20) -> str:
    """sha256 hex digest of a file."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


def file_record(path: Path | str, hashed: bool = True) -> dict:
    """What proves a file is unchanged: its size and sha256 (or mtime when large or ``hashed`` is False)."""
    st = os.stat(path)
    if hashed and st.st_size <= HASH_LIMIT:
        return {"size": st.st_size, "sha256": sha256sum(path)}
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns}


def matches_record(path: Path | str, record: dict) -> bool:
    """True if ``path`` is a regular file (not a link) that still matches ``record``."""
    path = Path(path)
    if path.is_symlink() or not path.is_file():
        return False
    st = path.stat()
    if not isinstance(record, dict) or st.st_size != record.get("size"):
        return False
    if "sha256" in record:
        return sha256sum(path) == record["sha256"]
    return st.st_mtime_ns == record.get("mtime_ns")


class OwnedFiles:
    """The ownership marker of one folder: which files course commands wrote there.

    ``record(path)`` lists a file a command has just written; ``check_free``
    and ``remove`` act only on files the marker proves are ours.
    """

    def __init__(self, folder: Path | str, tool: str, hashed: bool = True):
        self.folder, self.tool, self.hashed = Path(folder).absolute(), tool, hashed
        self.path = self.folder / OWNER_FILE
        self.files: dict[str, dict] = self._read()
        self._saved = dict(self.files)  # what the marker held when last read or written: save() merges against it

    def _read(self) -> dict[str, dict]:
        if not self.path.is_file():
            return {}
        files = read_json_object(self.path, "ownership marker").get("files", {})
        return {k: v for k, v in files.items() if isinstance(v, dict)} if isinstance(files, dict) else {}

    @property
    def exists(self) -> bool:
        """True if the folder carries a marker."""
        return self.path.is_file()

    def _key(self, path: Path | str) -> str:
        path = Path(path).absolute()
        try:
            return path.relative_to(self.folder).as_posix()
        except ValueError as err:
            raise UnsafeWriteError(f"{path} is not inside {self.folder}") from err

    def owns(self, path: Path | str, strict: bool = True) -> bool:
        """True if ``path`` is listed and unchanged since a course command wrote it.

        A name claimed before writing (:meth:`claim`) counts as ours. With
        ``strict=False`` a listed file counts even if it changed since (a
        damaged cache file in a folder the command made).
        """
        key = self._key(path)
        record = self.files.get(key)
        if record is None:
            return False
        return bool(record.get("claimed")) or not strict or matches_record(self.folder / key, record)

    def claim(self, *paths: Path | str, strict: bool = True, overwrite: bool = True) -> None:
        """Reserve names about to be written, so a kill mid-write leaves files still provably ours.

        Under the folder's lock the marker is re-read first, so a file another
        command recorded meanwhile is seen.

        Raises:
            UnsafeWriteError: a name is taken by a file that is not ours.
            FileExistsError: a name is taken and ``overwrite`` is False.
        """
        self.folder.mkdir(parents=True, exist_ok=True)
        with folder_lock(self.folder, self.tool, wait=MARKER_LOCK_WAIT):
            self.files = self._merged()
            for path in paths:
                self.check_free(path, overwrite=overwrite, strict=strict)
                key = self._key(path)
                if key not in self.files:
                    self.files[key] = {"claimed": True, "tool": self.tool}
            self.save()

    def check_free(
        self, path: Path | str, overwrite: bool, hint: str = "pass --overwrite to replace it", strict: bool = True
    ) -> None:
        """Refuse to write ``path`` if it exists and is not ours to replace.

        Raises:
            FileExistsError: it exists and ``overwrite`` is False.
            UnsafeWriteError: it exists and the marker does not prove we wrote it.
        """
        path = self.folder / self._key(path)
        if not (path.exists() or path.is_symlink()):
            return
        if not overwrite:
            raise FileExistsError(f"{path} exists; {hint}")
        if not self.owns(path, strict):
            raise UnsafeWriteError(
                f"refusing to replace {path}: no course command wrote it (it is not listed in "
                f"{self.path}, or it changed since); move it away yourself if it should go"
            )

    def record(self, *paths: Path | str) -> None:
        """List ``paths`` (already written) as ours and save the marker atomically."""
        for path in paths:
            key = self._key(path)
            self.files[key] = dict(file_record(self.folder / key, self.hashed), tool=self.tool)
        self.save()

    def forget(self, path: Path | str) -> None:
        """Drop ``path`` from the marker (without touching the file)."""
        self.files.pop(self._key(path), None)

    def save(self) -> None:
        """Write the marker: under the folder's lock, re-read it, merge this object's changes, rename in place.

        Entries another command (or another :class:`OwnedFiles` of this one)
        added since this object read the marker are kept; only the names this
        object recorded, claimed or dropped change.
        """
        self.folder.mkdir(parents=True, exist_ok=True)
        with folder_lock(self.folder, self.tool, wait=MARKER_LOCK_WAIT):
            merged = self._merged()
            write_json_atomic(self.path, {"tool": self.tool, "files": merged})
            self.files, self._saved = merged, dict(merged)

    def _merged(self) -> dict[str, dict]:
        """The marker on disk with this object's changes since it last read or wrote it applied."""
        merged = self._read()
        for key in set(self._saved) | set(self.files):
            if key in self.files:
                if self.files[key] != self._saved.get(key):
                    merged[key] = self.files[key]
            elif key in merged and merged[key] == self._saved.get(key):
                del merged[key]  # dropped here (and unchanged there since)
        return merged

    @contextlib.contextmanager
    def writing(self, *paths: Path | str, strict: bool = True, overwrite: bool = True) -> Iterator[None]:
        """Claim ``paths`` in the marker, let the caller write them, then record them.

        Ownership comes before bytes: the names are in the marker before any
        byte is written, so an interrupted write leaves files the course may
        replace. If the write fails, the claims of names left absent are
        dropped again (so the marker lists exactly the files on disk).
        """
        self.claim(*paths, strict=strict, overwrite=overwrite)
        try:
            yield
        except BaseException:
            for path in paths:
                key = self._key(path)
                if not (self.folder / key).exists() and self.files.get(key, {}).get("claimed"):
                    del self.files[key]
            with contextlib.suppress(OSError, UnsafeWriteError):
                self.save()
            raise
        self.record(*paths)

    def remove(self, path: Path | str, strict: bool = True) -> bool:
        """Delete ``path`` if it is ours; return whether it was deleted (unproven files stay).

        The marker is not saved; call :meth:`save` after a batch of removals.
        """
        key = self._key(path)
        target = self.folder / key
        if not self.owns(target, strict):
            return False
        if target.is_file() and not target.is_symlink():
            target.unlink()
        self.files.pop(key, None)
        return True


def foreign_files(folder: Path | str, owned: OwnedFiles) -> list[str]:
    """Files under ``folder`` (relative names) that ``owned`` does not prove a course command wrote."""
    folder = Path(folder)
    found = []
    for path in sorted(folder.rglob("*")):
        if path.name in BOOKKEEPING and path.parent == folder:
            continue
        if (path.is_file() or path.is_symlink()) and not owned.owns(path):
            found.append(path.relative_to(folder).as_posix())
    return found


def install_folder(
    staged: Path | str, target: Path | str, tool: str, owned: OwnedFiles | None = None, last: str | None = None
) -> None:
    """Put the files written in the private folder ``staged`` at ``target``, touching only files proven ours.

    Every file of ``staged`` is recorded (sha256) in the ownership marker. A
    missing or empty ``target`` is replaced in one rename. Otherwise the new
    names are claimed in ``target``'s marker first (so a kill part way leaves
    files that are still provably ours), the files are moved in one by one,
    ``last`` (a completion marker such as ``phantom.json``) removed first and
    moved in last, so an interrupted install never looks complete; then old
    files of ours that the new set lacks are deleted (and folders they leave
    empty). Other files stay.

    Args:
        staged: a folder the command made and filled.
        target: where the result belongs.
        tool: the command (recorded in the marker).
        owned: ``target``'s ownership (default: read from its marker).
        last: relative name of the file to move in last.

    Raises:
        UnsafeWriteError: a new file would replace one the marker does not
            prove ours (nothing is moved then).
    """
    staged, target = Path(staged), Path(target)
    new = OwnedFiles(staged, tool)
    new.record(*(p for p in sorted(staged.rglob("*")) if p.is_file() and p.name not in BOOKKEEPING))
    if not target.exists() or (target.is_dir() and not any(target.iterdir())):
        if target.exists():
            target.rmdir()
        staged.rename(target)
        return
    owned = owned if owned is not None else OwnedFiles(target, tool)
    keys = sorted((k for k in new.files if k not in BOOKKEEPING), key=lambda k: k == last)
    for key in keys:  # refuse before anything moves
        owned.check_free(target / key, overwrite=True)
    old = [k for k in owned.files if k not in new.files]
    owned.claim(*(target / k for k in keys))
    if last is not None and (target / last).is_file():
        (target / last).unlink()  # claimed above, so ours
    for key in keys:
        (target / key).parent.mkdir(parents=True, exist_ok=True)
        os.replace(staged / key, target / key)
        owned.files[key] = new.files[key]
    for key in old:
        if owned.remove(target / key):
            parent = (target / key).parent
            while parent != target and parent.is_dir() and not any(parent.iterdir()):
                parent.rmdir()  # emptied by the deletion above: no data in it
                parent = parent.parent
    owned.save()


def is_empty_folder(folder: Path | str) -> bool:
    """True if ``folder`` holds nothing but the course's bookkeeping (:data:`BOOKKEEPING`)."""
    return all(p.name in BOOKKEEPING for p in Path(folder).iterdir())


# ----------------------------------------------------------------------------
# Writable, with room: checked before long work
# ----------------------------------------------------------------------------


def check_writable(folder: Path | str, what: str, need_bytes: int = 0) -> None:
    """Refuse, before long work starts, an output folder that cannot take the output.

    A probe file is created and removed in ``folder`` (or its nearest existing
    parent, when it is still to be made): that catches read-only mounts and
    missing permissions even for root. With ``need_bytes`` the free space is
    compared too.

    Raises:
        UnwritableError: one line naming the folder and the reason.
    """
    folder = Path(folder).absolute()
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    probe = existing / f"{TEMPORARY_PREFIX}{os.getpid()}-write-probe"
    try:
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as err:
        raise UnwritableError(
            err.errno, f"cannot write {what} in {folder}: {err.strerror or err} (read-only, not permitted or full)"
        ) from err
    free = shutil.disk_usage(existing).free
    if need_bytes and free < need_bytes:
        raise UnwritableError(
            28,
            f"cannot write {what} in {folder}: it needs about {need_bytes / 2**20:.1f} MB and only "
            f"{free / 2**20:.1f} MB are free there",
        )


def one_line(err: BaseException) -> str:
    """An error as the one line a command prints (``OSError``: its reason and file, no errno noise)."""
    if isinstance(err, OSError) and err.strerror:  # (UnwritableError keeps its errno and carries the message)
        where = f": {err.filename}" if err.filename else ""
        return " ".join(f"{err.strerror}{where}".split())
    return " ".join(str(err).split())


# ----------------------------------------------------------------------------
# One writer per folder
# ----------------------------------------------------------------------------

MARKER_LOCK_WAIT = 30.0
"""Seconds an ownership-marker update waits for another process's marker update in the same folder."""

_HELD: dict[str, _FolderLock] = {}
"""The folder locks this process holds (by real path), so a command may take its own lock again."""

try:  # POSIX: flock, released by the OS when the holder exits or is killed (no stale locks)
    import fcntl

    def _try_lock(fd: int) -> bool:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True

    def _unlock(fd: int) -> None:
        fcntl.flock(fd, fcntl.LOCK_UN)

except ImportError:  # Windows: msvcrt's byte-range lock, also released by the OS when the holder exits
    import msvcrt

    def _try_lock(fd: int) -> bool:
        try:
            os.lseek(fd, 0, os.SEEK_SET)
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        except OSError:
            return False
        return True

    def _unlock(fd: int) -> None:
        os.lseek(fd, 0, os.SEEK_SET)
        msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)


def _holder(path: Path) -> str:
    """Who holds the lock at ``path``, as its file says (pid, command, host, start)."""
    try:
        info = json.loads(path.read_text() or "{}")
        return f"process {info['pid']} ({info['tool']} on {info['host']}, since {info['since']})"
    except (OSError, ValueError, KeyError, TypeError):
        return "another process"


class _FolderLock:
    """The lock of one folder, held by this process (see :func:`folder_lock`)."""

    def __init__(self, folder: Path, tool: str):
        self.folder, self.tool, self.fd, self.depth = folder, tool, None, 0

    def acquire(self, wait: float) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder / LOCK_FILE
        deadline = time.monotonic() + max(wait, 0.0)
        while True:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
            while not _try_lock(fd):
                if time.monotonic() >= deadline:
                    os.close(fd)
                    raise FolderBusyError(
                        f"refusing to write into {self.folder}: {_holder(path)} is writing there (lock {path}); "
                        "wait until it finishes, or choose another folder"
                    )
                time.sleep(0.05)
            if _same_file(fd, path):
                break
            os.close(fd)  # the holder removed the file as it let go: lock the one at the path now
        info = {"pid": os.getpid(), "tool": self.tool, "host": socket.gethostname(), "since": time.strftime("%H:%M:%S")}
        os.ftruncate(fd, 0)  # a killed holder's note (its lock went with it) is replaced
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, json.dumps(info).encode())
        old, self.fd = self.fd, fd
        if old is not None:  # moved to a new folder of the same name: let the old one go
            _unlock(old)
            os.close(old)

    def release(self) -> None:
        fd, self.fd = self.fd, None
        if fd is None:
            return
        path = self.folder / LOCK_FILE
        if _same_file(fd, path):  # remove it while still holding it: a waiter then re-opens the path
            with contextlib.suppress(OSError):
                path.unlink()
        _unlock(fd)
        os.close(fd)


def _same_file(fd: int, path: Path) -> bool:
    try:
        st, held = os.stat(path), os.fstat(fd)
    except OSError:
        return False
    return (st.st_dev, st.st_ino) == (held.st_dev, held.st_ino)


def _lock_key(folder: Path) -> str:
    return os.path.realpath(folder)


@contextlib.contextmanager
def folder_lock(folder: Path | str, tool: str, wait: float | None = None) -> Iterator[Path]:
    """Hold ``folder``'s lock (one writer per folder) while the block runs; the folder is made if missing.

    The lock is an OS file lock on ``folder/.course-lock`` (flock on POSIX,
    msvcrt on Windows), so the OS drops it when the holder exits or is
    killed: a stale lock file left by a killed command never blocks anyone.
    The file names the holder (pid, command, host, start) for the refusal and
    is removed when the lock is let go. A process may take a lock it holds
    again (nested commands, marker updates).

    Args:
        folder: the output folder or run folder.
        tool: the command, as the refusal names it.
        wait: seconds to wait for the holder to finish (default
            :data:`utils.config.LOCK_WAIT_SECONDS`).

    Raises:
        FolderBusyError: another process still holds it after ``wait``: one
            line naming that process.
    """
    folder = Path(folder).absolute()
    if wait is None:
        from . import config  # read at each call

        wait = float(config.LOCK_WAIT_SECONDS)
    folder.mkdir(parents=True, exist_ok=True)
    key = _lock_key(folder)
    lock = _HELD.get(key)
    if lock is None:
        lock = _FolderLock(folder, tool)
        lock.acquire(wait)
        _HELD[key] = lock
    lock.depth += 1
    try:
        yield folder / LOCK_FILE
    finally:
        lock.depth -= 1
        if lock.depth == 0:
            _HELD.pop(key, None)
            lock.release()


def relock_moved(folder: Path | str) -> None:
    """After this process renamed a folder it holds locked and made a new one at the same path, lock the new one.

    (``utils.train --no-resume`` moves an old run aside: the lock went with it.)
    """
    lock = _HELD.get(_lock_key(Path(folder).absolute()))
    if lock is not None:
        lock.acquire(0.0)


def adopt_files(owned: OwnedFiles, names) -> OwnedFiles:
    """Take as ``owned``'s the listed files of a folder written before ownership markers existed.

    The one adoption rule of the course (the phantom, the BraTS export, the
    training cache): a tool's own old record (its ``phantom.json``, export
    marker or manifest) names the files it wrote; of those names, each that is
    a regular file inside the folder (no link, no ``..``) is recorded as the
    tool's. The caller derives ``names`` from its record and checks that record
    first; nothing is adopted when the folder already has a marker.

    Returns:
        ``owned``, with the adopted files in ``owned.files`` (not yet saved).
    """
    if owned.exists:
        return owned
    for name in names:
        if not isinstance(name, str) or ".." in Path(name).parts or Path(name).is_absolute():
            continue
        path = owned.folder / name
        if path.is_file() and not path.is_symlink():
            owned.files[name] = dict(file_record(path, owned.hashed), tool=owned.tool)
    return owned
