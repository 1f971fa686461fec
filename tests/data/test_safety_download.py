"""Download and extraction edge cases, offline against a loopback server (issue 11):
HTTP 416 on a complete .part, a dying chunked transfer, the size check without md5,
tar bombs, duplicate members, truncated archives, and moves rolled back or completed."""

from __future__ import annotations

import hashlib
import http.server
import io
import json
import tarfile
from pathlib import Path

import pytest

from utils.data.download import STAGING_MARK, DownloadError, UnsafeArchiveError, download_file, safe_extract

from conftest import local_http_server


class _Handler(http.server.BaseHTTPRequestHandler):
    """One payload; Range honoured with 206 or 416; optionally chunked and/or cut short."""

    protocol_version = "HTTP/1.1"
    payload = b""
    chunked = False
    cut_after: int | None = None
    content_length: int | None = None  # announce another length than sent
    statuses: list = []

    def do_GET(self):  # noqa: N802
        cls = type(self)
        data, start = cls.payload, 0
        rng = self.headers.get("Range")
        if rng:
            start = int(rng.split("=")[1].split("-")[0])
            if start >= len(data):
                cls.statuses.append(416)
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
        body = data[start:]
        status = 206 if rng else 200
        cls.statuses.append(status)
        self.send_response(status)
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        if cls.chunked:
            self.send_header("Transfer-Encoding", "chunked")
        else:
            self.send_header("Content-Length", str(cls.content_length or len(body)))
        self.end_headers()
        sent = body if cls.cut_after is None else body[: cls.cut_after]
        if cls.chunked:
            for i in range(0, len(sent), 1000):
                block = sent[i : i + 1000]
                self.wfile.write(f"{len(block):x}\r\n".encode() + block + b"\r\n")
            if cls.cut_after is None:
                self.wfile.write(b"0\r\n\r\n")
            else:
                self.wfile.write(b"3e8\r\npartial")  # a chunk announced, never finished
        else:
            self.wfile.write(sent)
        self.wfile.flush()
        self.close_connection = True

    def log_message(self, *args):
        pass


@pytest.fixture()
def url():
    _Handler.payload, _Handler.chunked, _Handler.cut_after, _Handler.content_length = b"", False, None, None
    _Handler.statuses = []
    with local_http_server(_Handler) as base:
        yield f"{base}/archive.tar"


PAYLOAD = bytes(range(256)) * 400


def test_complete_part_answered_with_416_is_verified_and_finished(url, tmp_path):
    _Handler.payload = PAYLOAD
    dest = tmp_path / "archive.tar"
    (tmp_path / "archive.tar.part").write_bytes(PAYLOAD)  # killed after the last byte, before the rename
    md5 = hashlib.md5(PAYLOAD).hexdigest()
    assert download_file(url, dest, md5=md5, progress=False) == dest
    assert _Handler.statuses == [416] and dest.read_bytes() == PAYLOAD
    (tmp_path / "again.tar.part").write_bytes(PAYLOAD)  # without md5: the size from Content-Range
    assert download_file(url, tmp_path / "again.tar", progress=False).read_bytes() == PAYLOAD


def test_part_longer_than_the_file_is_deleted_with_a_clear_message(url, tmp_path):
    _Handler.payload = PAYLOAD
    part = tmp_path / "archive.tar.part"
    part.write_bytes(PAYLOAD + b"garbage")
    with pytest.raises(DownloadError, match=r"could not be verified .*HTTP 416.*deleted, run again"):
        download_file(url, tmp_path / "archive.tar", progress=False)
    assert not part.exists()
    assert download_file(url, tmp_path / "archive.tar", progress=False).read_bytes() == PAYLOAD


def test_complete_part_with_a_wrong_md5_after_416(url, tmp_path):
    _Handler.payload = PAYLOAD
    (tmp_path / "archive.tar.part").write_bytes(PAYLOAD[:-1] + b"X")
    with pytest.raises(DownloadError, match="md5 mismatch .*deleted; run again"):
        download_file(url, tmp_path / "archive.tar", md5=hashlib.md5(PAYLOAD).hexdigest(), progress=False)
    assert not (tmp_path / "archive.tar.part").exists() and not (tmp_path / "archive.tar").exists()


def test_dying_chunked_transfer_says_run_again_to_resume(url, tmp_path):
    _Handler.payload, _Handler.chunked, _Handler.cut_after = PAYLOAD, True, 30_000
    dest = tmp_path / "archive.tar"
    with pytest.raises(DownloadError, match=r"interrupted after 30000 bytes .*run again to resume"):
        download_file(url, dest, progress=False)
    assert not dest.exists()
    _Handler.cut_after = None
    assert download_file(url, dest, md5=hashlib.md5(PAYLOAD).hexdigest(), progress=False).read_bytes() == PAYLOAD
    assert _Handler.statuses == [200, 206], "the second run resumed from byte 30000"


def test_without_md5_the_size_is_checked_against_content_length(url, tmp_path):
    _Handler.payload, _Handler.cut_after = PAYLOAD, 50_000
    dest = tmp_path / "archive.tar"
    with pytest.raises(DownloadError, match=r"ended early: 50000 of 102400 bytes; run again to resume"):
        download_file(url, dest, progress=False)
    assert not dest.exists()


def test_http_errors_are_named(url, tmp_path, monkeypatch):
    _Handler.payload = PAYLOAD
    (tmp_path / "x.part").write_bytes(b"")
    monkeypatch.setattr(_Handler, "do_GET", lambda self: self.send_error(404))
    with pytest.raises(DownloadError, match="HTTP 404"):
        download_file(url, tmp_path / "x", progress=False)


def _tar(path: Path, members: list[tuple[str, bytes]], close=True) -> Path:
    with tarfile.open(path, "w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def test_tar_bomb_stops_early(tmp_path):
    many = _tar(tmp_path / "many.tar", [(f"d/f{i}", b"x") for i in range(50)])
    with pytest.raises(UnsafeArchiveError, match="more than 20 members"):
        safe_extract(many, tmp_path / "t", progress=False, max_members=20)
    big = _tar(tmp_path / "big.tar", [(f"d/f{i}", b"0" * 10_000) for i in range(5)])
    with pytest.raises(UnsafeArchiveError, match="more than 25000 bytes"):
        safe_extract(big, tmp_path / "t", progress=False, max_bytes=25_000)
    assert [p.name for p in (tmp_path / "t").iterdir()] == []


def test_duplicate_members_are_refused(tmp_path):
    dup = _tar(tmp_path / "dup.tar", [("d/dataset.json", b"{}"), ("d/a", b"1"), ("d/dataset.json", b"[]")])
    with pytest.raises(UnsafeArchiveError, match=r"'d/dataset.json' appears twice"):
        safe_extract(dup, tmp_path / "t", progress=False)
    assert [p.name for p in (tmp_path / "t").iterdir()] == []


@pytest.mark.parametrize("cut", [0.3, 0.6, 0.95])
def test_truncated_archive_is_detected(tmp_path, cut):
    whole = _tar(tmp_path / "whole.tar", [(f"d/f{i}", bytes(range(256)) * 20) for i in range(4)]).read_bytes()
    end = len(whole.rstrip(b"\0"))  # the data ends here; zero blocks follow
    part = tmp_path / "cut.tar"
    part.write_bytes(whole[: int(end * cut) // 512 * 512] if cut < 0.9 else whole[:end])
    with pytest.raises(UnsafeArchiveError, match="truncated"):
        safe_extract(part, tmp_path / "t", progress=False)
    assert [p.name for p in (tmp_path / "t").iterdir()] == []


def test_failed_move_is_rolled_back(tmp_path, monkeypatch):
    archive = _tar(tmp_path / "two.tar", [("a/x", b"1"), ("b/y", b"2")])
    target = tmp_path / "t"
    real_rename = Path.rename

    def failing(self, dst):
        if self.name == "b" and ".extracting-" in str(self):
            raise OSError("disk gone")
        return real_rename(self, dst)

    monkeypatch.setattr(Path, "rename", failing)
    with pytest.raises(OSError, match="disk gone"):
        safe_extract(archive, target, progress=False)
    monkeypatch.undo()
    assert [p.name for p in target.iterdir()] == [], "the entry moved before the failure was moved back"
    safe_extract(archive, target, progress=False)
    assert (target / "a" / "x").read_bytes() == b"1" and (target / "b" / "y").read_bytes() == b"2"


def test_move_killed_part_way_is_completed_by_the_next_run(tmp_path, capsys):
    archive = _tar(tmp_path / "two.tar", [("a/x", b"1"), ("b/y", b"2")])
    target = tmp_path / "t"
    staging = target / f".extracting-{archive.name}"
    (staging / "b").mkdir(parents=True)
    (staging / STAGING_MARK).write_text("")
    (staging / "b" / "y").write_bytes(b"2")
    (target / "a").mkdir()
    (target / "a" / "x").write_bytes(b"1")  # "a" was moved, then the process was killed
    (target / f".extract-{archive.name}.json").write_text(json.dumps({"staging": staging.name, "entries": ["a", "b"]}))
    safe_extract(archive, target, progress=False)
    assert "completed the interrupted extraction" in capsys.readouterr().out
    assert sorted(p.name for p in target.iterdir()) == ["a", "b"] and (target / "b" / "y").read_bytes() == b"2"


def test_existing_entry_refused_before_anything_moves(tmp_path):
    archive = _tar(tmp_path / "two.tar", [("a/x", b"1"), ("b/y", b"2")])
    target = tmp_path / "t"
    (target / "b").mkdir(parents=True)
    (target / "b" / "mine").write_text("keep")
    with pytest.raises(FileExistsError, match="not overwriting"):
        safe_extract(archive, target, progress=False)
    assert sorted(p.name for p in target.iterdir()) == ["b"] and (target / "b" / "mine").read_text() == "keep"
