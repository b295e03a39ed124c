"""abflow fetch against a real HTTP server on loopback: slow, dropped, 404, 500, checksums."""

from __future__ import annotations

import base64
import hashlib
import os
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from abflow.job.fetch import FetchError, fetch_http
from abflow.model.config import ConfigError, resolve

DATA = os.urandom(300_000)
MD5 = base64.b64encode(hashlib.md5(DATA).digest()).decode()
WRONG_MD5 = base64.b64encode(hashlib.md5(DATA[1:]).digest()).decode()

# Each test scripts the server's behaviour per request: a list of actions taken in order
# (the last one repeats). Actions: "ok", "slow", "stall", "drop", "404", "500", "badsum".
Script = list[str]


class Archive:
    """A loopback NGAS-like archive: GET /RETRIEVE?file_id=<name> -> DATA (test double)."""

    def __init__(self) -> None:
        self.script: Script = ["ok"]
        self.requests: list[str] = []
        archive = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:  # keep pytest output clean
                pass

            def do_GET(self) -> None:
                archive.requests.append(self.path)
                n = len(archive.requests) - 1
                action = archive.script[min(n, len(archive.script) - 1)]
                if action == "404":
                    self.send_error(404, "Not Found")
                    return
                if action == "500":
                    self.send_error(500, "Internal Server Error")
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(DATA)))
                self.send_header("Content-MD5", WRONG_MD5 if action == "badsum" else MD5)
                self.end_headers()
                if action == "slow":  # slow but steady: under the timeout between chunks
                    for i in range(0, len(DATA), 50_000):
                        self.wfile.write(DATA[i : i + 50_000])
                        self.wfile.flush()
                        time.sleep(0.1)
                    return
                if action == "stall":  # half the file, then silence beyond the timeout
                    self.wfile.write(DATA[: len(DATA) // 2])
                    self.wfile.flush()
                    time.sleep(1.5)
                    return
                if action == "drop":  # half the file, then the connection closes
                    self.wfile.write(DATA[: len(DATA) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.wfile.write(DATA)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/RETRIEVE?file_id={{file}}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def archive() -> Iterator[Archive]:
    server = Archive()
    yield server
    server.close()


def get(archive: Archive, dest: Path, **kw: object) -> int:
    waits: list[float] = []
    kw.setdefault("sleep", waits.append)  # no real waiting between retries in tests
    kw.setdefault("timeout", 0.5)
    return fetch_http(archive.url, "GIRAF.2013-02-13T10:00:00.000.fits", str(dest), **kw)


def leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


def test_complete_download_checks_size_and_md5(archive, tmp_path) -> None:
    dest = tmp_path / "raw" / "x.fits"
    assert get(archive, dest) == len(DATA)
    assert dest.read_bytes() == DATA
    assert archive.requests == ["/RETRIEVE?file_id=GIRAF.2013-02-13T10%3A00%3A00.000.fits"]


def test_slow_but_steady_response_completes_without_retry(archive, tmp_path) -> None:
    archive.script = ["slow"]
    dest = tmp_path / "x.fits"
    assert get(archive, dest) == len(DATA)
    assert len(archive.requests) == 1


def test_stalled_transfer_times_out_and_is_retried(archive, tmp_path) -> None:
    archive.script = ["stall", "ok"]
    logs: list[str] = []
    dest = tmp_path / "x.fits"
    assert get(archive, dest, log=logs.append) == len(DATA)
    assert len(archive.requests) == 2
    assert "transfer broken after 150000 bytes" in logs[0]
    assert dest.read_bytes() == DATA


def test_dropped_connection_halfway_is_retried_and_never_left_truncated(archive, tmp_path):
    archive.script = ["drop", "ok"]
    dest = tmp_path / "x.fits"
    assert get(archive, dest) == len(DATA)
    assert dest.read_bytes() == DATA
    archive.script = ["drop"]
    archive.requests.clear()
    dest2 = tmp_path / "y.fits"
    with pytest.raises(FetchError) as info:
        get(archive, dest2, retries=2)
    assert len(archive.requests) == 3
    assert "failed after 3 attempts" in str(info.value)
    assert "150000" in str(info.value)
    assert leftovers(tmp_path) == ["x.fits"]  # no y.fits, no temporary file


def test_404_is_final_and_named(archive, tmp_path) -> None:
    archive.script = ["404"]
    with pytest.raises(FetchError) as info:
        get(archive, tmp_path / "x.fits", retries=4)
    assert len(archive.requests) == 1
    assert "GIRAF.2013-02-13T10:00:00.000.fits: the archive answered HTTP 404" in str(info.value)
    assert leftovers(tmp_path) == []


def test_500_then_success_with_exponential_backoff(archive, tmp_path) -> None:
    archive.script = ["500", "500", "ok"]
    waits: list[float] = []
    dest = tmp_path / "x.fits"
    assert get(archive, dest, sleep=waits.append, backoff=1.5) == len(DATA)
    assert waits == [1.5, 3.0]
    assert len(archive.requests) == 3


def test_checksum_mismatch_is_retried_then_refused(archive, tmp_path) -> None:
    archive.script = ["badsum"]
    with pytest.raises(FetchError, match="md5 checksum mismatch"):
        get(archive, tmp_path / "x.fits", retries=1)
    assert leftovers(tmp_path) == []


def test_unreachable_archive_is_retried_then_reported(tmp_path) -> None:
    waits: list[float] = []
    with pytest.raises(FetchError, match="no answer"):
        url = "http://127.0.0.1:9/{file}"
        fetch_http(url, "a.fits", str(tmp_path / "a"), 1, 0.5, 0, sleep=waits.append)
    assert len(waits) == 1


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("ftp://archive/{file}", "only http:// and https://"),
        ("http:///RETRIEVE?file_id={file}", "no host"),
        ("http://archive/RETRIEVE", "must contain {file}"),
    ],
)
def test_malformed_archive_urls_are_refused_by_the_configuration(url: str, why: str) -> None:
    with pytest.raises(ConfigError) as info:
        resolve({"date": "2013-02-12", "archive": url}, root="/x", environ={})
    assert why in str(info.value)
