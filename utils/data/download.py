"""Download and extract the MSD Task01_BrainTumour archive, safely and once.

* :func:`download_file` resumes an interrupted download (HTTP Range), shows a
  progress bar, verifies the size (Content-Length / Content-Range) and the md5
  and only then moves the file into place. A complete ``.part`` that the server
  answers with HTTP 416 is verified and finished, not retried forever.
* :func:`safe_extract` refuses any archive member that would land outside the
  target folder, links and device files, duplicate names, a truncated archive,
  and archives above :data:`MAX_MEMBERS` members or :data:`MAX_BYTES` bytes
  (checked while reading the headers, before anything is written: a tar bomb
  stops early); it skips macOS ``._*`` files and never overwrites. The
  extracted entries are moved into place under a journal, so a move killed
  part way is completed by the next run, and one that fails is rolled back.
* :func:`fetch_msd` ties both together and is idempotent: a second call finds
  ``Task01_BrainTumour/dataset.json`` and does nothing.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import re
import shutil
import tarfile
import urllib.error
import urllib.request
from pathlib import Path, PurePosixPath

from tqdm.auto import tqdm

from ..config import data_root
from ..errors import CourseError
from ..safety import read_json_object, write_json_atomic
from .datasets import read_dataset_json

MSD_URL = "https://msd-for-monai.s3-us-west-2.amazonaws.com/Task01_BrainTumour.tar"
MSD_MD5 = "240a19d752f0d9e9101544901065d872"
MSD_FOLDER = "Task01_BrainTumour"
CHUNK = 1 << 20
MAX_MEMBERS = 20_000
"""Most members an archive may hold (Task01 has about 1,500 with its ``._`` files)."""
MAX_BYTES = 32 << 30
"""Most bytes an archive may unpack to (Task01: 7.1 GB)."""
STAGING_MARK = ".course-staging"


class DownloadError(CourseError, RuntimeError):
    """A download failed or its checksum did not match."""


class UnsafeArchiveError(CourseError, RuntimeError):
    """An archive member would escape the target folder or is not a plain file."""


def md5sum(path: Path | str, chunk: int = CHUNK) -> str:
    """md5 hex digest of a file, read in chunks."""
    digest = hashlib.md5()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


def download_file(
    url: str, dest: Path | str, md5: str | None = None, progress: bool = True, timeout: float = 60.0
) -> Path:
    """Download ``url`` to ``dest``, resuming a previous partial download.

    Bytes go to ``dest + ".part"``; a rerun continues from its size with an
    HTTP Range request (or starts over if the server ignores it). When the
    transfer completes the md5 is checked, and only a verified file is renamed
    to ``dest``. An existing ``dest`` with the right md5 is kept as it is.

    Args:
        url: http(s) or file URL.
        dest: final path of the file.
        md5: expected hex digest (None skips the check).
        progress: show a tqdm progress bar.
        timeout: socket timeout in seconds.

    Returns:
        ``dest``.

    Raises:
        DownloadError: on a network error (the partial file is kept for the
            next try) or an md5 mismatch (the bad file is deleted).
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    if dest.is_file():
        if md5 is None or md5sum(dest) == md5:
            return dest
        raise DownloadError(
            f"{dest} exists but its md5 is not {md5}; it is not the expected file. "
            "Move it away (or delete it) and run again."
        )
    part = dest.with_name(dest.name + ".part")
    start = part.stat().st_size if part.is_file() else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={start}-"} if start else {})
    total = None
    try:
        try:
            response = urllib.request.urlopen(request, timeout=timeout)
        except urllib.error.HTTPError as err:
            if err.code != 416 or not start:
                raise DownloadError(
                    f"download of {url} failed: the server answered HTTP {err.code} {err.reason}"
                ) from err
            # 416: nothing after byte `start`. The .part may be complete: verify it below.
            total = _content_range_total(err.headers.get("Content-Range"))
            if (total is None and md5 is None) or (total is not None and start > total):
                part.unlink()
                raise DownloadError(
                    f"download of {url}: the partial file {part} ({start} bytes) could not be verified against "
                    f"the server (HTTP 416, size {total}); it was deleted, run again to download afresh"
                ) from err
            response = None
        if response is not None:
            with response:
                status = getattr(response, "status", None) or response.getcode()
                resumed = start > 0 and status == 206
                if resumed:
                    first = _content_range_start(response.headers.get("Content-Range"))
                    resumed = first in (None, start)
                    total = _content_range_total(response.headers.get("Content-Range"))
                if start and not resumed:
                    start = 0  # the server sent the whole file: start over
                length = response.headers.get("Content-Length")
                if total is None and length is not None:
                    total = start + int(length)
                mode = "ab" if resumed else "wb"
                with (
                    open(part, mode) as fh,
                    tqdm(
                        total=total, initial=start, unit="B", unit_scale=True, desc=dest.name, disable=not progress
                    ) as bar,
                ):
                    while True:
                        try:
                            block = response.read(CHUNK)
                        except http.client.IncompleteRead as err:  # keep what arrived before the cut
                            fh.write(err.partial)
                            raise
                        if not block:
                            break
                        fh.write(block)
                        bar.update(len(block))
    except (OSError, ValueError, http.client.HTTPException) as err:  # incl. a chunked transfer cut short
        size = part.stat().st_size if part.is_file() else 0
        reason = " ".join(str(err).split()) or type(err).__name__
        raise DownloadError(
            f"download of {url} interrupted after {size} bytes ({reason}); run again to resume"
        ) from err
    size = part.stat().st_size
    if total is not None and size != total:
        raise DownloadError(
            f"download of {url} ended early: {size} of {total} bytes; run again to resume"
            if size < total
            else f"download of {url} is larger than the server's size: {size} > {total} bytes; delete {part} "
            "and run again"
        )
    if md5 is not None:
        found = md5sum(part)
        if found != md5:
            part.unlink()
            raise DownloadError(
                f"md5 mismatch for {url}: expected {md5}, found {found}. The corrupt download was "
                "deleted; run again to download it afresh."
            )
    os.replace(part, dest)
    return dest


def _content_range_total(value: str | None) -> int | None:
    """``N`` of ``bytes a-b/N`` or ``bytes */N`` (None when absent or ``*``)."""
    match = re.match(r"bytes\s+(?:\d+-\d+|\*)/(\d+)", value or "")
    return int(match.group(1)) if match else None


def _content_range_start(value: str | None) -> int | None:
    match = re.match(r"bytes\s+(\d+)-", value or "")
    return int(match.group(1)) if match else None


def _is_resource_fork(name: str) -> bool:
    return any(part.startswith("._") or part == ".DS_Store" for part in PurePosixPath(name).parts)


def safe_members(
    archive: tarfile.TarFile, target: Path, max_members: int = MAX_MEMBERS, max_bytes: int = MAX_BYTES
) -> list[tarfile.TarInfo]:
    """Check every member of ``archive`` and return those to extract.

    Headers are read one by one, so an archive over the limits stops at the
    first member beyond them.

    Raises:
        UnsafeArchiveError: for an absolute path, a path with ``..`` that leaves
            ``target``, a symbolic or hard link, a device/FIFO member, a name
            seen twice, more than ``max_members`` members or ``max_bytes`` bytes.
    """
    target = target.resolve()
    members, seen, count, total = [], set(), 0, 0
    for member in archive:
        count += 1
        total += max(member.size, 0)
        if count > max_members:
            raise UnsafeArchiveError(
                f"the archive holds more than {max_members} members; refusing to extract it (a tar bomb?)"
            )
        if total > max_bytes:
            raise UnsafeArchiveError(
                f"the archive unpacks to more than {max_bytes} bytes; refusing to extract it (a tar bomb?)"
            )
        name = member.name
        if _is_resource_fork(name):
            continue
        path = PurePosixPath(name)
        if path.is_absolute() or name.startswith(("/", "\\")):
            raise UnsafeArchiveError(f"archive member {name!r} has an absolute path")
        resolved = (target / name).resolve()
        if ".." in path.parts or (resolved != target and target not in resolved.parents):
            raise UnsafeArchiveError(f"archive member {name!r} would be written outside {target}")
        if member.issym() or member.islnk():
            raise UnsafeArchiveError(f"archive member {name!r} is a link (to {member.linkname!r}); links are refused")
        if not (member.isfile() or member.isdir()):
            raise UnsafeArchiveError(f"archive member {name!r} is not a regular file or folder")
        key = path.as_posix()
        if key in seen and not member.isdir():
            raise UnsafeArchiveError(f"archive member {name!r} appears twice; refusing an ambiguous archive")
        seen.add(key)
        members.append(member)
    return members


def _check_complete(archive: tarfile.TarFile, archive_path: Path) -> None:
    """An uncompressed tar ends with two zero blocks after its last member; a cut one does not."""
    with open(archive_path, "rb") as fh:
        magic = fh.read(6)
    if magic.startswith((b"\x1f\x8b", b"BZh", b"\xfd7zXZ")):
        return  # compressed: a cut stream raises while it is read
    size = archive_path.stat().st_size
    if size < archive.offset + 2 * tarfile.BLOCKSIZE:
        raise UnsafeArchiveError(
            f"{archive_path} is truncated: it stops after {size} bytes without the end-of-archive marker "
            "(an interrupted download or copy?); download it again"
        )


def _journal(target: Path, archive_path: Path) -> Path:
    return target / f".extract-{Path(archive_path).name}.json"


def _finish_moves(target: Path, journal: Path) -> bool:
    """Complete the moves an interrupted extraction recorded in ``journal``; True if there was one."""
    if not journal.is_file():
        return False
    record = read_json_object(journal, "extraction journal")
    staging = target / record["staging"]
    for name in record["entries"]:
        if (staging / name).exists() and not (target / name).exists():
            (staging / name).rename(target / name)
    if (staging / STAGING_MARK).is_file():
        shutil.rmtree(staging)
    journal.unlink()
    print(f"completed the interrupted extraction into {target} ({', '.join(record['entries'])})")
    return True


def safe_extract(
    archive_path: Path | str,
    target: Path | str,
    progress: bool = True,
    max_members: int = MAX_MEMBERS,
    max_bytes: int = MAX_BYTES,
) -> Path:
    """Extract a tar archive into ``target`` after checking every member.

    Members go to a hidden staging folder first (extracted with Python's
    ``data`` filter too) and are moved into place only once all were written.
    The moves are journalled: a run killed part way is completed by the next
    call; a move that fails is rolled back. Nothing in ``target`` is ever
    overwritten.

    Returns:
        ``target``.

    Raises:
        UnsafeArchiveError: an unsafe, oversized, truncated or unreadable archive.
        FileExistsError: an entry of the archive already exists in ``target``.
    """
    archive_path, target = Path(archive_path), Path(target)
    target.mkdir(parents=True, exist_ok=True)
    journal = _journal(target, archive_path)
    if _finish_moves(target, journal):
        return target
    staging = target / f".extracting-{archive_path.name}"
    if staging.exists():
        if not (staging / STAGING_MARK).is_file():
            raise UnsafeArchiveError(f"{staging} exists and was not made by safe_extract; move it away")
        shutil.rmtree(staging)  # the staging folder of an extraction killed before its moves
    staging.mkdir()
    (staging / STAGING_MARK).write_text("utils.download staging folder\n")
    moved: list[str] = []
    try:
        with tarfile.open(archive_path) as archive:
            members = safe_members(archive, target, max_members, max_bytes)
            _check_complete(archive, archive_path)
            need = sum(m.size for m in members)
            free = shutil.disk_usage(target).free
            if need > free:
                raise UnsafeArchiveError(
                    f"{archive_path} unpacks to {need} bytes but {target} has only {free} bytes free"
                )
            for member in tqdm(members, desc=f"extract {archive_path.name}", unit="file", disable=not progress):
                archive.extract(member, staging, set_attrs=False, filter="data")
        entries = sorted(e.name for e in staging.iterdir() if e.name != STAGING_MARK)
        for name in entries:  # refuse before anything moves
            if (target / name).exists() or (target / name).is_symlink():
                raise FileExistsError(f"{target / name} already exists; not overwriting it")
        write_json_atomic(journal, {"staging": staging.name, "entries": entries})
        for name in entries:
            (staging / name).rename(target / name)
            moved.append(name)
        journal.unlink()
    except (tarfile.TarError, EOFError, OSError) as err:
        for name in reversed(moved):  # roll back a partial move
            (target / name).rename(staging / name)
        journal.unlink(missing_ok=True)
        if isinstance(err, FileExistsError):
            raise
        if isinstance(err, (tarfile.TarError, EOFError)) or "compressed" in str(err).lower():
            raise UnsafeArchiveError(f"{archive_path} is not a readable tar archive, or is truncated ({err})") from err
        raise
    except BaseException:
        for name in reversed(moved):
            (target / name).rename(staging / name)
        journal.unlink(missing_ok=True)
        raise
    finally:
        if staging.is_dir() and (staging / STAGING_MARK).is_file() and not journal.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return target


def fetch_msd(
    data_dir: Path | str | None = None,
    url: str = MSD_URL,
    md5: str | None = MSD_MD5,
    keep_archive: bool = False,
    progress: bool = True,
) -> Path:
    """Make the MSD Task01_BrainTumour dataset available (idempotent).

    Args:
        data_dir: folder that will hold ``Task01_BrainTumour/`` (default: the
            course data root; on Colab point ``COURSE_DATA_DIR`` at Google Drive
            so the 7 GB download happens once).
        url, md5: the archive and its checksum.
        keep_archive: keep the ``.tar`` after extraction.
        progress: show progress bars.

    Returns:
        The dataset folder (with ``dataset.json``).
    """
    data_dir = Path(data_dir) if data_dir is not None else data_root()
    root = data_dir / MSD_FOLDER
    if (root / "dataset.json").is_file():
        return root
    archive = download_file(url, data_dir / f"{MSD_FOLDER}.tar", md5=md5, progress=progress)
    safe_extract(archive, data_dir, progress=progress)
    read_dataset_json(root)  # fails clearly if the archive held something else
    if not keep_archive:
        archive.unlink()
    return root
