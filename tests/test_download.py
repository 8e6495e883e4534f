"""Tests for fairfer.datasets.download against a real HTTP server on 127.0.0.1.

The Kaggle tests run the same server as a stand-in for Kaggle's REST API: it checks the HTTP
Basic credentials, answers 401/403/404 as Kaggle does, and redirects an authorised download
to a storage URL on another host name (``localhost``), which serves Range requests.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import random
import re
import tarfile
import threading
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote

import pytest

from fairfer.datasets.archives import extract_archive, extract_zip
from fairfer.datasets.download import fetch, sha256_of, source_file_name
from fairfer.datasets.kaggle import kaggle_credentials, parse_kaggle_source
from fairfer.errors import (
    ChecksumMismatchError,
    CredentialsError,
    DownloadError,
    ManualSourceError,
    SourceNotFoundError,
    UnsafeArchiveError,
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
    #: Kaggle stand-in: accepted "user:key", datasets (owner/dataset[/file]) -> storage path,
    #: and datasets whose terms the user has not accepted.
    kaggle_credentials: str = "alice:s3cret"
    kaggle_datasets: dict[str, str] = field(default_factory=dict)
    kaggle_forbidden: set[str] = field(default_factory=set)
    storage_base: str = ""


class _RangeHandler(BaseHTTPRequestHandler):
    """Serves ``ServerState.files`` with single-range support and optional mid-body cuts."""

    protocol_version = "HTTP/1.1"
    state: ServerState

    def do_GET(self) -> None:
        state = self.state
        range_header = self.headers.get("Range")
        record: dict[str, str | int | None] = {
            "path": self.path,
            "range": range_header,
            "authorization": self.headers.get("Authorization"),
        }
        state.requests.append(record)
        if self.path.startswith("/api/v1/"):
            self._kaggle_api(record)
            return
        body = state.files.get(self.path.split("?")[0])
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

    def _kaggle_api(self, record: dict[str, str | int | None]) -> None:
        state = self.state
        expected = "Basic " + base64.b64encode(state.kaggle_credentials.encode()).decode()
        match = re.fullmatch(r"/api/v1/datasets/download/([^?]+)(\?.*)?", self.path)
        if self.headers.get("Authorization") != expected:
            status = 401
        elif match is None or unquote(match.group(1)) not in state.kaggle_datasets:
            status = 404
        elif unquote(match.group(1)) in state.kaggle_forbidden:
            status = 403
        else:
            status = 302
        record["status"] = status
        self.send_response(status)
        if status == 302:
            # Kaggle answers with a signed URL on its storage host; no credentials go there.
            target = state.kaggle_datasets[unquote(match.group(1))]
            self.send_header("Location", f"{state.storage_base}{target}?signature=abc")
        self.send_header("Content-Length", "0")
        self.end_headers()

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
    state.storage_base = f"http://localhost:{httpd.server_address[1]}"
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


# --- Kaggle -------------------------------------------------------------------------------


@pytest.fixture
def kaggle(
    server: tuple[str, ServerState], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> ServerState:
    """The server as Kaggle's API, with alice's credentials in the environment."""
    base, state = server
    state.files["/storage/alice/faces.zip"] = PAYLOAD
    state.kaggle_datasets["alice/faces"] = "/storage/alice/faces.zip"
    monkeypatch.setenv("KAGGLE_API_ENDPOINT", base)
    monkeypatch.setenv("KAGGLE_USERNAME", "alice")
    monkeypatch.setenv("KAGGLE_KEY", "s3cret")
    # Never read the developer's own kaggle.json.
    monkeypatch.setenv("KAGGLE_CONFIG_DIR", str(tmp_path / "no-kaggle-config"))
    return state


def _basic(credentials: str) -> str:
    return "Basic " + base64.b64encode(credentials.encode()).decode()


def test_kaggle_download_authenticates_and_follows_the_redirect(
    kaggle: ServerState, tmp_path: Path
) -> None:
    dest = tmp_path / "faces.archive"
    _http_fetch("kaggle://alice/faces", dest, sha256=PAYLOAD_SHA)
    assert dest.read_bytes() == PAYLOAD
    api, storage = kaggle.requests
    assert api["path"] == "/api/v1/datasets/download/alice/faces"
    assert (api["authorization"], api["status"]) == (_basic("alice:s3cret"), 302)
    assert storage["path"] == "/storage/alice/faces.zip?signature=abc"
    # requests drops the credentials when the redirect leaves the API host.
    assert storage["authorization"] is None and storage["status"] == 200


def test_kaggle_json_file_single_file_and_version(
    kaggle: ServerState, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("KAGGLE_USERNAME")
    monkeypatch.delenv("KAGGLE_KEY")
    config_dir = tmp_path / "kaggle-config"
    config_dir.mkdir()
    (config_dir / "kaggle.json").write_text(json.dumps({"username": "alice", "key": "s3cret"}))
    (config_dir / "kaggle.json").chmod(0o600)
    monkeypatch.setenv("KAGGLE_CONFIG_DIR", str(config_dir))
    # The official client accepts the endpoint with or without /api/v1.
    monkeypatch.setenv("KAGGLE_API_ENDPOINT", kaggle.storage_base + "/api/v1/")
    kaggle.kaggle_datasets["alice/faces/labels dir/train.csv"] = "/storage/alice/faces.zip"
    dest = tmp_path / "train.csv"
    _http_fetch("kaggle://alice/faces/labels%20dir/train.csv?version=3", dest, sha256=PAYLOAD_SHA)
    assert kaggle.requests[0]["path"] == (
        "/api/v1/datasets/download/alice/faces/labels%20dir/train.csv?datasetVersionNumber=3"
    )
    assert kaggle_credentials().origin == str(config_dir / "kaggle.json")


def test_kaggle_missing_credentials_say_where_to_put_them(
    kaggle: ServerState, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("KAGGLE_USERNAME")
    monkeypatch.delenv("KAGGLE_KEY")
    with pytest.raises(CredentialsError) as info:
        _http_fetch("kaggle://alice/faces", tmp_path / "f.archive")
    message = str(info.value)
    json_path = tmp_path / "no-kaggle-config" / "kaggle.json"
    for expected in (str(json_path), "chmod 600", "KAGGLE_USERNAME", "KAGGLE_KEY"):
        assert expected in message
    assert "https://www.kaggle.com/settings" in message
    assert kaggle.requests == []
    monkeypatch.setenv("KAGGLE_KEY", "s3cret")
    with pytest.raises(CredentialsError, match="only one of KAGGLE_USERNAME / KAGGLE_KEY"):
        kaggle_credentials()
    json_path.parent.mkdir()
    json_path.write_text('{"user": "alice"}')
    with pytest.raises(CredentialsError, match="'username' and 'key'"):
        kaggle_credentials()


def test_kaggle_wrong_key_is_a_401_naming_user_and_origin(
    kaggle: ServerState, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("KAGGLE_KEY", "wrong")
    dest = tmp_path / "f.archive"
    with pytest.raises(CredentialsError) as info:
        _http_fetch("kaggle://alice/faces", dest, hint="Config key datasets.rafdb.source.")
    message = str(info.value)
    for expected in ("'alice'", "KAGGLE_USERNAME/KAGGLE_KEY", "HTTP 401", "kaggle.com/settings"):
        assert expected in message
    assert "datasets.rafdb.source" in message
    assert len(kaggle.requests) == 1  # a refusal is not retried
    assert list(tmp_path.glob("f.archive*")) == []


def test_kaggle_terms_not_accepted_is_a_403_and_unknown_is_a_404(
    kaggle: ServerState, tmp_path: Path
) -> None:
    kaggle.kaggle_forbidden.add("alice/faces")
    with pytest.raises(CredentialsError) as info:
        _http_fetch("kaggle://alice/faces", tmp_path / "f.archive")
    assert "HTTP 403" in str(info.value)
    assert "https://www.kaggle.com/datasets/alice/faces" in str(info.value)
    assert "accept the dataset's terms" in str(info.value)
    with pytest.raises(DownloadError, match="no dataset or file alice/nothing .*HTTP 404"):
        _http_fetch("kaggle://alice/nothing", tmp_path / "f.archive")


def test_kaggle_download_resumes_after_a_cut(kaggle: ServerState, tmp_path: Path) -> None:
    kaggle.cuts_left = 1
    dest = tmp_path / "faces.archive"
    _http_fetch("kaggle://alice/faces", dest, sha256=PAYLOAD_SHA, retries=2)
    assert dest.read_bytes() == PAYLOAD
    api = [r for r in kaggle.requests if r["path"].startswith("/api/")]
    storage = [r for r in kaggle.requests if r["path"].startswith("/storage/")]
    # Each attempt asks the API again (signed URLs expire) with the credentials and the Range.
    assert [r["authorization"] for r in api] == [_basic("alice:s3cret")] * 2
    assert api[1]["range"] == storage[1]["range"]
    assert 0 < _range_start(storage[1]["range"]) <= len(PAYLOAD) // 2
    assert storage[1]["status"] == 206 and storage[1]["authorization"] is None


def test_kaggle_wrong_checksum_names_file_and_both_hashes(
    kaggle: ServerState, tmp_path: Path
) -> None:
    dest = tmp_path / "faces.archive"
    wrong = "f" * 64
    with pytest.raises(ChecksumMismatchError) as info:
        _http_fetch("kaggle://alice/faces", dest, sha256=wrong)
    for expected in ("kaggle://alice/faces", str(dest), wrong, PAYLOAD_SHA):
        assert expected in str(info.value)
    assert not any(path.name.startswith("faces.archive") for path in tmp_path.iterdir())


@pytest.mark.parametrize(
    "bad", ["kaggle://alice", "kaggle://alice/faces?version=x", "kaggle://a/b?rev=1"]
)
def test_malformed_kaggle_sources_are_rejected(bad: str) -> None:
    with pytest.raises(ValueError, match="kaggle://|version"):
        parse_kaggle_source(bad)


def test_source_file_names_and_manual_source(tmp_path: Path) -> None:
    assert source_file_name("kaggle://a/b") == "b"
    assert source_file_name("kaggle://a/b/dir/fer2013.csv?version=2") == "fer2013.csv"
    assert source_file_name("https://host/x/UTKFace.tar.gz?dl=1") == "UTKFace.tar.gz"
    assert source_file_name("data/raf.zip") == "raf.zip"
    with pytest.raises(ManualSourceError, match="place"):
        fetch("manual", tmp_path / "x", hint="Place RAF-DB in data/rafdb.")


# --- extract_archive ----------------------------------------------------------------------


def _tar(path: Path, members: dict[str, bytes], *, mode: str = "w:gz") -> Path:
    with tarfile.open(path, mode) as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def test_extract_archive_reads_tar_zip_and_plain_files_by_content(tmp_path: Path) -> None:
    tar = _tar(tmp_path / "download.archive", {"UTKFace/1_0_0_2017.jpg.chip.jpg": b"j"})
    out = extract_archive(tar, tmp_path / "utk", plain_file_name="UTKFace.tar.gz")
    assert (out / "UTKFace" / "1_0_0_2017.jpg.chip.jpg").read_bytes() == b"j"
    zipped = _make_zip(tmp_path / "z.archive", {"DATASET/train/1/a.jpg": b"a"})
    extract_archive(zipped, tmp_path / "raf", plain_file_name="x")
    assert (tmp_path / "raf" / "DATASET/train/1/a.jpg").read_bytes() == b"a"
    plain = tmp_path / "p.archive"
    plain.write_bytes(b"emotion,pixels,Usage\n")
    extract_archive(plain, tmp_path / "fer", plain_file_name="fer2013.csv")
    assert (tmp_path / "fer" / "fer2013.csv").read_bytes() == b"emotion,pixels,Usage\n"
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


def test_extract_archive_refuses_tar_links_and_traversal(tmp_path: Path) -> None:
    link = tmp_path / "link.tar"
    with tarfile.open(link, "w") as tar:
        info = tarfile.TarInfo("images/evil")
        info.type = tarfile.SYMTYPE
        info.linkname = "/etc/passwd"
        tar.addfile(info)
    with pytest.raises(UnsafeArchiveError, match="link or special file"):
        extract_archive(link, tmp_path / "out", plain_file_name="x")
    climbing = _tar(tmp_path / "climb.tar", {"../evil.txt": b"x"}, mode="w")
    with pytest.raises(UnsafeArchiveError, match="outside the destination"):
        extract_archive(climbing, tmp_path / "out", plain_file_name="x")
    assert not (tmp_path / "out").exists() and not (tmp_path / "evil.txt").exists()


# --- download_dataset rule script ---------------------------------------------------------


def _rafdb_kaggle_zip() -> bytes:
    """RAF-DB in the layout of kaggle://shuvoalok/raf-db-dataset: label CSVs and DATASET/."""
    from PIL import Image

    buffer = io.BytesIO()
    entries = {"train": [("train_00001_aligned.jpg", 4), ("train_00002_aligned.jpg", 7)]}
    entries["test"] = [("test_0001_aligned.jpg", 3)]
    with zipfile.ZipFile(buffer, "w") as zf:
        for split, rows in entries.items():
            zf.writestr(
                f"{split}_labels.csv",
                "image,label\n" + "".join(f"{name},{label}\n" for name, label in rows),
            )
            for name, label in rows:
                image = io.BytesIO()
                Image.new("RGB", (100, 100), (label * 30, 80, 80)).save(image, format="JPEG")
                zf.writestr(f"DATASET/{split}/{label}/{name}", image.getvalue())
    return buffer.getvalue()


def test_download_dataset_fetches_unpacks_and_feeds_the_adapter(
    kaggle: ServerState, tmp_path: Path
) -> None:
    from download_dataset import download
    from ingest_rafdb import ingest

    payload = _rafdb_kaggle_zip()
    kaggle.files["/storage/raf.zip"] = payload
    kaggle.kaggle_datasets["shuvoalok/raf-db-dataset"] = "/storage/raf.zip"
    settings = {"layout": "auto", "image_variant": "aligned", "valid_fraction": 0.5}
    root = download(
        "rafdb",
        "kaggle://shuvoalok/raf-db-dataset",
        hashlib.sha256(payload).hexdigest(),
        tmp_path / "resources/downloads/rafdb.archive",
        tmp_path / "resources/datasets/rafdb",
        archive_root="",
        layout="RAF-DB's basic/ folder or the Kaggle layout",
    )
    report = ingest(
        root,
        tmp_path / "rafdb.parquet",
        tmp_path / "r.json",
        tmp_path / "rejects.parquet",
        settings=settings,
        seed=0,
    )
    assert report["layout"] == "kaggle" and report["rows"] == 3

    with pytest.raises(DownloadError) as info:
        download(
            "rafdb",
            "kaggle://shuvoalok/raf-db-dataset",
            None,
            tmp_path / "again.archive",
            tmp_path / "again",
            archive_root="basic",
            layout="RAF-DB's basic/ folder",
        )
    message = str(info.value)
    assert "no folder 'basic'" in message and "datasets.rafdb.archive_root" in message
    assert "'DATASET/'" in message and "'train_labels.csv'" in message
