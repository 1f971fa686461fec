"""Download (resume, md5), safe extraction and the idempotent MSD fetch - offline,
against a small archive and a loopback HTTP server the tests build."""

from __future__ import annotations

import hashlib
import http.server
import io
import shutil
import tarfile
from pathlib import Path

import pytest

from utils.data.datasets import list_cases, load_msd_case
from utils.data.download import DownloadError, UnsafeArchiveError, download_file, fetch_msd, md5sum, safe_extract

from conftest import local_http_server


class _RangeHandler(http.server.BaseHTTPRequestHandler):
    """Serves one payload, honours Range, and can cut a response short."""

    payload = b""
    cut_after: int | None = None
    requests: list = []

    def do_GET(self):  # noqa: N802
        type(self).requests.append(self.headers.get("Range"))
        data, status, start = type(self).payload, 200, 0
        rng = self.headers.get("Range")
        if rng:
            start = int(rng.split("=")[1].split("-")[0])
            status = 206
        body = data[start:]
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        self.end_headers()
        cut = type(self).cut_after
        if cut is not None:
            self.wfile.write(body[:cut])
            self.wfile.flush()
            self.connection.shutdown(2)
            return
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture()
def server():
    _RangeHandler.requests = []
    _RangeHandler.cut_after = None
    with local_http_server(_RangeHandler) as base:
        yield f"{base}/Task01_BrainTumour.tar"


def _msd_archive(phantom_root: Path, path: Path, extra=None) -> bytes:
    """A Task01-style tar of the tiny phantom, with macOS ._ files like the real one."""
    with tarfile.open(path, "w") as tar:
        tar.add(phantom_root, arcname="Task01_BrainTumour")
        for name in ("Task01_BrainTumour/._dataset.json", "Task01_BrainTumour/imagesTr/._PHANTOM_001.nii.gz"):
            info = tarfile.TarInfo(name)
            junk = b"\x00\x05\x16\x07Mac OS X resource fork"
            info.size = len(junk)
            tar.addfile(info, io.BytesIO(junk))
        for info, data in extra or []:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return path.read_bytes()


def test_download_resumes_and_verifies(server, tmp_path):
    payload = bytes(range(256)) * 4000
    _RangeHandler.payload = payload
    md5 = hashlib.md5(payload).hexdigest()
    dest = tmp_path / "file.tar"
    _RangeHandler.cut_after = 300_000  # the connection drops part way
    with pytest.raises(DownloadError, match="run again to resume"):
        download_file(server, dest, md5=md5, progress=False)
    part = tmp_path / "file.tar.part"
    assert part.stat().st_size == 300_000 and not dest.exists()
    _RangeHandler.cut_after = None
    assert download_file(server, dest, md5=md5, progress=False) == dest
    assert _RangeHandler.requests[-1] == "bytes=300000-"  # resumed, not restarted
    assert dest.read_bytes() == payload and not part.exists()
    before = len(_RangeHandler.requests)
    download_file(server, dest, md5=md5, progress=False)  # present and verified: no request
    assert len(_RangeHandler.requests) == before


def test_bad_md5_is_a_clear_error_and_leaves_nothing(server, tmp_path):
    _RangeHandler.payload = b"corrupted archive" * 100
    dest = tmp_path / "file.tar"
    with pytest.raises(DownloadError, match=r"md5 mismatch .*expected 0+, found [0-9a-f]{32}.*deleted"):
        download_file(server, dest, md5="0" * 32, progress=False)
    assert not dest.exists() and not (tmp_path / "file.tar.part").exists()
    dest.write_bytes(b"someone else's file")
    with pytest.raises(DownloadError, match="exists but its md5 is not"):
        download_file(server, dest, md5="0" * 32, progress=False)
    assert dest.read_bytes() == b"someone else's file"


def test_fetch_msd_end_to_end_and_idempotent(server, phantom_root, tmp_path):
    payload = _msd_archive(phantom_root, tmp_path / "archive.tar")
    _RangeHandler.payload = payload
    data_dir = tmp_path / "data"
    root = fetch_msd(data_dir, url=server, md5=hashlib.md5(payload).hexdigest(), progress=False)
    assert root == data_dir / "Task01_BrainTumour"
    assert not list(root.rglob("._*")), "macOS resource forks are skipped"
    assert list_cases(root) == list_cases(phantom_root)
    assert load_msd_case(root, "PHANTOM_001").image.shape == load_msd_case(phantom_root, "PHANTOM_001").image.shape
    assert not (data_dir / "Task01_BrainTumour.tar").exists()
    n = len(_RangeHandler.requests)
    assert fetch_msd(data_dir, url=server, md5="ignored", progress=False) == root
    assert len(_RangeHandler.requests) == n  # second call: found, nothing downloaded


def _member(name, kind=tarfile.REGTYPE, link=""):
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = link
    data = b"x" if kind == tarfile.REGTYPE else None
    info.size = len(data) if data else 0
    return info, data


@pytest.mark.parametrize(
    "info,data,message",
    [
        (*_member("Task01_BrainTumour/../../evil.txt"), "outside"),
        (*_member("/etc/evil.txt"), "absolute path"),
        (*_member("Task01_BrainTumour/link", tarfile.SYMTYPE, "/etc/passwd"), "is a link"),
        (*_member("Task01_BrainTumour/hard", tarfile.LNKTYPE, "Task01_BrainTumour/dataset.json"), "is a link"),
        (*_member("Task01_BrainTumour/fifo", tarfile.FIFOTYPE), "not a regular file"),
    ],
)
def test_unsafe_members_are_refused(phantom_root, tmp_path, info, data, message):
    archive = tmp_path / "bad.tar"
    _msd_archive(phantom_root, archive, extra=[(info, data)])
    target = tmp_path / "target"
    with pytest.raises(UnsafeArchiveError, match=message):
        safe_extract(archive, target, progress=False)
    assert not (tmp_path / "evil.txt").exists()
    assert not any(p.name != ".gitkeep" for p in target.iterdir()), "nothing extracted from an unsafe archive"


def test_corrupt_archive_is_a_clear_error(tmp_path):
    archive = tmp_path / "broken.tar"
    archive.write_bytes(b"not a tar file at all" * 50)
    with pytest.raises(UnsafeArchiveError, match="not a readable tar archive"):
        safe_extract(archive, tmp_path / "t", progress=False)


def test_extraction_never_overwrites(phantom_root, tmp_path):
    archive = tmp_path / "a.tar"
    _msd_archive(phantom_root, archive)
    target = tmp_path / "t"
    (target / "Task01_BrainTumour").mkdir(parents=True)
    (target / "Task01_BrainTumour" / "mine.txt").write_text("keep")
    with pytest.raises(FileExistsError, match="not overwriting"):
        safe_extract(archive, target, progress=False)
    assert (target / "Task01_BrainTumour" / "mine.txt").read_text() == "keep"
    assert md5sum(archive) == hashlib.md5(archive.read_bytes()).hexdigest()
    shutil.rmtree(target)
