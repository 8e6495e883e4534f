"""Tests for fairfer.download against a real HTTP server on 127.0.0.1."""

from __future__ import annotations

import hashlib
import random
import re
import threading
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from fairfer.download import (
    ChecksumMismatchError,
    DownloadError,
    SourceNotFoundError,
    UnsafeArchiveError,
    extract_zip,
    fetch,
    sha256_of,
)

PAYLOAD = random.Random(0).randbytes(200_000)
PAYLOAD_SHA = hashlib.sha256(PAYLOAD).hexdigest()
CHUNK = 8192


@dataclass
class ServerState:
    """What the test handler serves and how it misbehaves; shared with the tests."""

    files: dict[str, bytes] = field(default_factory=dict)
    honour_range: bool = True
    cuts_left: int = 0
    requests: list[dict[str, str | int | None]] = field(default_factory=list)


class _RangeHandler(BaseHTTPRequestHandler):
    """Serves ``ServerState.files`` with single-range support and optional mid-body cuts."""

    protocol_version = "HTTP/1.1"
    state: ServerState

    def do_GET(self) -> None:
        state = self.state
        body = state.files.get(self.path)
        range_header = self.headers.get("Range")
        record: dict[str, str | int | None] = {"path": self.path, "range": range_header}
        state.requests.append(record)
        if body is None:
            record["status"] = 404
            self.send_error(404)
            return

        start = 0
        status = 200
        match = re.fullmatch(r"bytes=(\d+)-", range_header or "")
        if match and state.honour_range:
            start = int(match.group(1))
            if start >= len(body):
                record["status"] = 416
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(body)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            status = 206
        record["status"] = status
        payload = body[start:]
        self.send_response(status)
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if state.cuts_left:
            state.cuts_left -= 1
            # Closing after half the promised bytes is what a dropped connection looks like.
            self.wfile.write(payload[: len(payload) // 2])
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(payload)

    def log_message(self, format: str, *args: object) -> None:
        """Keep pytest output quiet."""


@pytest.fixture
def server() -> Iterator[tuple[str, ServerState]]:
    state = ServerState(files={"/data.bin": PAYLOAD})
    handler = type("Handler", (_RangeHandler,), {"state": state})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    httpd.daemon_threads = True
    # A short poll interval keeps shutdown() from adding half a second to every test.
    thread = threading.Thread(
        target=httpd.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True
    )
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", state
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


def _http_fetch(
    url: str, dest: Path, *, sha256: str | None = None, retries: int = 3, hint: str = ""
) -> Path:
    return fetch(
        url,
        dest,
        sha256=sha256,
        hint=hint,
        retries=retries,
        chunk_size=CHUNK,
        timeout=5.0,
        backoff=0.0,
    )


def _range_start(header: str | int | None) -> int:
    match = re.fullmatch(r"bytes=(\d+)-", str(header))
    assert match, f"expected a Range header, got {header!r}"
    return int(match.group(1))


def test_sha256_of_matches_hashlib(tmp_path: Path) -> None:
    path = tmp_path / "f.bin"
    path.write_bytes(PAYLOAD)
    assert sha256_of(path, chunk_size=1000) == PAYLOAD_SHA


def test_fetch_local_path_copies_and_verifies(tmp_path: Path) -> None:
    src = tmp_path / "src.bin"
    src.write_bytes(PAYLOAD)
    dest = tmp_path / "a" / "b" / "out.bin"
    assert fetch(str(src), dest, sha256=PAYLOAD_SHA.upper(), chunk_size=CHUNK) == dest
    assert dest.read_bytes() == PAYLOAD
    assert not dest.with_name("out.bin.part").exists()


def test_fetch_file_url(tmp_path: Path) -> None:
    src = tmp_path / "dir with space" / "src.bin"
    src.parent.mkdir()
    src.write_bytes(PAYLOAD)
    dest = tmp_path / "out.bin"
    fetch(src.as_uri(), dest, sha256=PAYLOAD_SHA)
    assert sha256_of(dest) == PAYLOAD_SHA


def test_fetch_missing_local_file_names_path_and_hint(tmp_path: Path) -> None:
    missing = tmp_path / "nope.zip"
    with pytest.raises(SourceNotFoundError) as info:
        fetch(missing.as_uri(), tmp_path / "out.zip", hint="Set data.ferplus.source in config.")
    message = str(info.value)
    assert str(missing) in message
    assert "Place the file" in message
    assert "Set data.ferplus.source in config." in message
    assert not (tmp_path / "out.zip").exists()


def test_fetch_rejects_bad_sha256_and_scheme(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="64-character hex"):
        fetch("x", tmp_path / "o", sha256="abc")
    with pytest.raises(DownloadError, match="Unsupported source 'ftp://h/x'"):
        fetch("ftp://h/x", tmp_path / "o")


def test_fetch_http_success_with_checksum(server: tuple[str, ServerState], tmp_path: Path) -> None:
    base, state = server
    dest = tmp_path / "sub" / "data.bin"
    _http_fetch(f"{base}/data.bin", dest, sha256=PAYLOAD_SHA)
    assert dest.read_bytes() == PAYLOAD
    assert [r["range"] for r in state.requests] == [None]


def test_fetch_http_resumes_after_cut(server: tuple[str, ServerState], tmp_path: Path) -> None:
    base, state = server
    state.cuts_left = 1
    dest = tmp_path / "data.bin"
    _http_fetch(f"{base}/data.bin", dest, sha256=PAYLOAD_SHA, retries=2)
    assert sha256_of(dest) == PAYLOAD_SHA
    assert len(state.requests) == 2
    assert state.requests[0]["range"] is None
    # urllib3 may drop the last partially buffered chunk of a broken read, so the resume
    # point is at most (not exactly) the half the server sent.
    resumed_at = _range_start(state.requests[1]["range"])
    assert 0 < resumed_at <= len(PAYLOAD) // 2
    assert state.requests[1]["status"] == 206
    assert not dest.with_name("data.bin.part").exists()


def test_fetch_http_restarts_when_server_ignores_range(
    server: tuple[str, ServerState], tmp_path: Path
) -> None:
    base, state = server
    state.honour_range = False
    dest = tmp_path / "data.bin"
    # A stale, wrong .part from an earlier run must be discarded, not appended to.
    dest.with_name("data.bin.part").write_bytes(b"\0" * 1234)
    _http_fetch(f"{base}/data.bin", dest, sha256=PAYLOAD_SHA)
    assert dest.read_bytes() == PAYLOAD
    assert [(r["range"], r["status"]) for r in state.requests] == [("bytes=1234-", 200)]


def test_fetch_http_complete_part_is_published_without_redownload(
    server: tuple[str, ServerState], tmp_path: Path
) -> None:
    base, state = server
    dest = tmp_path / "data.bin"
    dest.with_name("data.bin.part").write_bytes(PAYLOAD)
    _http_fetch(f"{base}/data.bin", dest, sha256=PAYLOAD_SHA)
    assert dest.read_bytes() == PAYLOAD
    assert [r["status"] for r in state.requests] == [416]


def test_fetch_http_checksum_mismatch_leaves_nothing(
    server: tuple[str, ServerState], tmp_path: Path
) -> None:
    base, _ = server
    dest = tmp_path / "data.bin"
    wrong = "0" * 64
    url = f"{base}/data.bin"
    with pytest.raises(ChecksumMismatchError) as info:
        _http_fetch(url, dest, sha256=wrong, hint="Check config key weights.sha256.")
    message = str(info.value)
    for expected in (url, str(dest), wrong, PAYLOAD_SHA, "update the configured sha256"):
        assert expected in message
    assert "re-download" in message
    assert "weights.sha256" in message
    assert list(tmp_path.iterdir()) == []


def test_fetch_http_404_is_not_retried(server: tuple[str, ServerState], tmp_path: Path) -> None:
    base, state = server
    with pytest.raises(DownloadError, match=r"HTTP 404 .*/missing\.bin"):
        _http_fetch(f"{base}/missing.bin", tmp_path / "m.bin", retries=3)
    assert len(state.requests) == 1
    assert not (tmp_path / "m.bin").exists()


def test_fetch_http_gives_up_and_keeps_part(
    server: tuple[str, ServerState], tmp_path: Path
) -> None:
    base, state = server
    state.cuts_left = 10
    dest = tmp_path / "data.bin"
    with pytest.raises(DownloadError, match="after 2 attempt") as info:
        _http_fetch(f"{base}/data.bin", dest, retries=1)
    assert "rerun to resume" in str(info.value)
    assert not dest.exists()
    kept = dest.with_name("data.bin.part").read_bytes()
    # Two cut attempts: the .part holds a correct prefix past the first resume point.
    assert len(kept) > _range_start(state.requests[1]["range"])
    assert kept == PAYLOAD[: len(kept)]

    state.cuts_left = 0
    _http_fetch(f"{base}/data.bin", dest, sha256=PAYLOAD_SHA)
    assert dest.read_bytes() == PAYLOAD


def _make_zip(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


def test_extract_zip_full_and_replaces_existing(tmp_path: Path) -> None:
    archive = _make_zip(tmp_path / "a.zip", {"ferplus/train/1.png": b"x", "README": b"r"})
    dest = tmp_path / "out" / "ferplus"
    dest.mkdir(parents=True)
    (dest / "old.txt").write_text("stale")
    # Leftover of an extraction killed in an earlier run.
    (dest.parent / ".ferplus.k1ll3d.extracting" / "ferplus").mkdir(parents=True)
    assert extract_zip(archive, dest) == dest
    assert (dest / "ferplus" / "train" / "1.png").read_bytes() == b"x"
    assert (dest / "README").read_bytes() == b"r"
    assert not (dest / "old.txt").exists()
    assert sorted(p.name for p in dest.parent.iterdir()) == ["ferplus"]


def test_extract_zip_members_prefix(tmp_path: Path) -> None:
    archive = _make_zip(tmp_path / "a.zip", {"keep/a.txt": b"a", "skip/b.txt": b"b"})
    dest = extract_zip(archive, tmp_path / "out", members_prefix=["keep/"])
    assert (dest / "keep" / "a.txt").exists()
    assert not (dest / "skip").exists()
    with pytest.raises(DownloadError, match="No member of .* starts with 'nothing/'"):
        extract_zip(archive, tmp_path / "out2", members_prefix=["nothing/"])
    assert not (tmp_path / "out2").exists()


@pytest.mark.parametrize("bad_name", ["../evil.txt", "ok/../../evil.txt", "/etc/evil.txt"])
def test_extract_zip_rejects_traversal(tmp_path: Path, bad_name: str) -> None:
    archive = _make_zip(tmp_path / "a.zip", {"fine.txt": b"f", bad_name: b"evil"})
    dest = tmp_path / "x" / "out"
    with pytest.raises(UnsafeArchiveError, match=re.escape(repr(bad_name))):
        extract_zip(archive, dest)
    assert list((tmp_path / "x").iterdir()) == []
    assert not (tmp_path / "evil.txt").exists()


def test_extract_zip_interrupted_keeps_old_destination(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    archive = _make_zip(tmp_path / "a.zip", {"new.txt": b"n"})
    dest = tmp_path / "out"
    dest.mkdir()
    (dest / "old.txt").write_text("old")

    def boom(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(zipfile.ZipFile, "extractall", boom)
    with pytest.raises(KeyboardInterrupt):
        extract_zip(archive, dest)
    assert [p.name for p in dest.iterdir()] == ["old.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.zip", "out"]


def test_extract_zip_errors_for_missing_or_corrupt_archive(tmp_path: Path) -> None:
    with pytest.raises(SourceNotFoundError, match="does not exist"):
        extract_zip(tmp_path / "none.zip", tmp_path / "out")
    corrupt = tmp_path / "bad.zip"
    corrupt.write_bytes(b"not a zip")
    with pytest.raises(DownloadError, match="not a valid zip"):
        extract_zip(corrupt, tmp_path / "out")
    assert not (tmp_path / "out").exists()
