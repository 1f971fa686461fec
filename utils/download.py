"""Download and extract the MSD Task01_BrainTumour archive, safely and once.

* :func:`download_file` resumes an interrupted download (HTTP Range), shows a
  progress bar, verifies the md5 and only then moves the file into place.
* :func:`safe_extract` refuses any archive member that would land outside the
  target folder, links and device files, and skips macOS ``._*`` files.
* :func:`fetch_msd` ties both together and is idempotent: a second call finds
  ``Task01_BrainTumour/dataset.json`` and does nothing.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tarfile
import urllib.request
from pathlib import Path, PurePosixPath

MSD_URL = "https://msd-for-monai.s3-us-west-2.amazonaws.com/Task01_BrainTumour.tar"
MSD_MD5 = "240a19d752f0d9e9101544901065d872"
MSD_FOLDER = "Task01_BrainTumour"
CHUNK = 1 << 20


class DownloadError(RuntimeError):
    """A download failed or its checksum did not match."""


class UnsafeArchiveError(RuntimeError):
    """An archive member would escape the target folder or is not a plain file."""


def md5sum(path: Path | str, chunk: int = CHUNK) -> str:
    """md5 hex digest of a file, read in chunks."""
    digest = hashlib.md5()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


def download_file(url: str, dest: Path | str, md5: str | None = None, progress: bool = True,
                  timeout: float = 60.0) -> Path:
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
    from tqdm.auto import tqdm

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
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            status = getattr(response, "status", None) or response.getcode()
            resumed = start > 0 and status == 206
            if start and not resumed:
                start = 0  # the server sent the whole file: start over
            length = response.headers.get("Content-Length")
            total = start + int(length) if length is not None else None
            mode = "ab" if resumed else "wb"
            with open(part, mode) as fh, tqdm(total=total, initial=start, unit="B", unit_scale=True,
                                              desc=dest.name, disable=not progress) as bar:
                for block in iter(lambda: response.read(CHUNK), b""):
                    fh.write(block)
                    bar.update(len(block))
    except (OSError, ValueError) as err:
        size = part.stat().st_size if part.is_file() else 0
        raise DownloadError(
            f"download of {url} interrupted after {size} bytes ({err}); run again to resume"
        ) from err
    if total is not None and part.stat().st_size != total:
        raise DownloadError(
            f"download of {url} ended early: {part.stat().st_size} of {total} bytes; run again to resume"
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


def _is_resource_fork(name: str) -> bool:
    return any(part.startswith("._") or part == ".DS_Store" for part in PurePosixPath(name).parts)


def safe_members(archive: tarfile.TarFile, target: Path) -> list[tarfile.TarInfo]:
    """Check every member of ``archive`` and return those to extract.

    Raises:
        UnsafeArchiveError: for an absolute path, a path with ``..`` that leaves
            ``target``, a symbolic or hard link, or a device/FIFO member.
    """
    target = target.resolve()
    members = []
    for member in archive.getmembers():
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
        members.append(member)
    return members


def safe_extract(archive_path: Path | str, target: Path | str, progress: bool = True) -> Path:
    """Extract a tar archive into ``target`` after checking every member.

    Members go to a hidden staging folder first and are moved into place only
    once all were written, so an interrupted extraction leaves no half dataset.

    Returns:
        ``target``.
    """
    from tqdm.auto import tqdm

    target = Path(target)
    target.mkdir(parents=True, exist_ok=True)
    staging = target / f".extracting-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    try:
        with tarfile.open(archive_path) as archive:
            members = safe_members(archive, target)
            for member in tqdm(members, desc=f"extract {Path(archive_path).name}", unit="file",
                               disable=not progress):
                archive.extract(member, staging, set_attrs=False)
        for entry in staging.iterdir():
            destination = target / entry.name
            if destination.exists():
                raise FileExistsError(f"{destination} already exists; not overwriting it")
            entry.rename(destination)
    except tarfile.TarError as err:
        raise UnsafeArchiveError(f"{archive_path} is not a readable tar archive ({err})") from err
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def fetch_msd(data_dir: Path | str | None = None, url: str = MSD_URL, md5: str | None = MSD_MD5,
              keep_archive: bool = False, progress: bool = True) -> Path:
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
    from .config import data_root
    from .data import read_dataset_json

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
