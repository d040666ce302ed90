"""Fetching the CelebA zip from ordered sources, against a real HTTP server on 127.0.0.1.

The server runs in this process (http.server in a thread) and serves, per path, what the field has
seen instead of the file: a quota page, a 404, a dropped connection, a server that ignores Range, a
stalled one, a wrong digest. The "right file" is 64 KiB of seeded random bytes whose size and digests
the tests pass in as `Expected`, the way `ocbench data fetch` passes CelebA's. Nothing reaches any
other address.
"""

import dataclasses
import hashlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from ocbench import data, download
from ocbench.download import Expected
from ocbench.errors import OcbenchError

REPO = Path(__file__).resolve().parent.parent
PAYLOAD = hashlib.shake_256(b"celeba").digest(64 * 1024)
HALF = len(PAYLOAD) // 2
EXPECTED = Expected("img_align_celeba.zip", len(PAYLOAD), hashlib.md5(PAYLOAD).hexdigest(),
                    hashlib.sha256(PAYLOAD).hexdigest())
WRONG = PAYLOAD[:100] + bytes([PAYLOAD[100] ^ 1]) + PAYLOAD[101:]  # the right size, one bit off
QUOTA = (b"<!DOCTYPE html><html><head><title>Google Drive - Quota exceeded</title></head>"
         b"<body>Too many users have viewed or downloaded this file recently.</body></html>")
FAST = {"timeout": 1.0, "retries": 1, "backoff": 0.01}  # the real defaults wait 60 s and back off 2-16 s


class Handler(BaseHTTPRequestHandler):
    """One case per path; every request is logged as (path, Range header) on the server."""

    def log_message(self, *args):  # keep the test output clean
        pass

    def do_GET(self):
        server = self.server
        server.log.append((self.path, self.headers.get("Range")))
        nth = sum(1 for p, _ in server.log if p == self.path)  # 1 for the first request to this path
        case = self.path.strip("/")
        if case == "quota":
            self.send(200, QUOTA, ctype="text/html; charset=utf-8")
        elif case == "missing":
            self.send_error(404)
        elif case == "good":
            self.send_file(PAYLOAD)
        elif case == "drop":  # the first connection dies half-way; Range requests are honoured
            self.send_file(PAYLOAD, stop_after=HALF if nth == 1 else None)
        elif case == "norange":  # ignores Range, and its first connection dies half-way too
            self.send_file(PAYLOAD, stop_after=HALF if nth == 1 else None, ranges=False)
        elif case == "wrong":
            self.send_file(WRONG)
        elif case == "short":
            self.send_file(PAYLOAD[:-10])
        elif case == "stall":  # headers, then nothing
            self.send_file(PAYLOAD, stop_after=0, stall=True)
        elif case == "stall-half":  # half the bytes, then nothing (until the test releases it)
            self.send_file(PAYLOAD, stop_after=HALF if nth == 1 else None, stall=True)
        else:
            self.send_error(500)

    def send(self, status, body, ctype="application/octet-stream", headers=()):
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in headers:
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def send_file(self, body, stop_after=None, ranges=True, stall=False):
        start, status, headers = 0, 200, [("Accept-Ranges", "bytes")] if ranges else []
        asked = self.headers.get("Range")
        if ranges and asked:
            start, status = int(asked.split("=")[1].rstrip("-")), 206
            headers.append(("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}"))
        self.send_response(status)
        self.send_header("Content-Type", "application/zip")
        self.send_header("Content-Length", str(len(body) - start))
        for k, v in headers:
            self.send_header(k, v)
        self.end_headers()
        if stop_after is None:
            self.wfile.write(body[start:])
            return
        self.wfile.write(body[start:start + stop_after])
        self.wfile.flush()
        if stall:
            self.server.release.wait(10)  # bounded: the test sets it when done
        self.close_connection = True  # the client sees fewer bytes than Content-Length said


@pytest.fixture
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    httpd.log, httpd.release = [], threading.Event()
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    httpd.url = lambda case: f"http://127.0.0.1:{httpd.server_address[1]}/{case}"
    yield httpd
    httpd.release.set()
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture(autouse=True)
def no_proxy(monkeypatch):
    """127.0.0.1 straight, even where the environment names a proxy."""
    monkeypatch.setenv("no_proxy", "127.0.0.1")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def files(folder):
    return sorted(p.name for p in folder.iterdir())


def test_the_third_source_gives_the_file_after_a_quota_page_and_a_404(tmp_path, server, capsys):
    dest = tmp_path / "img_align_celeba.zip"
    sources = [server.url("quota"), server.url("missing"), server.url("good")]
    data.fetch_images(dest, False, sources, expected=EXPECTED, **FAST)
    assert dest.read_bytes() == PAYLOAD
    assert files(tmp_path) == ["img_align_celeba.zip", "img_align_celeba.zip.md5cache"]
    assert data.file_md5(dest) == EXPECTED.md5  # prepare reads the md5 recorded while downloading
    out, err = capsys.readouterr()
    assert "an HTML page titled 'Google Drive - Quota exceeded', not the file" in out
    assert "HTTP 404 Not Found" in out and f"{EXPECTED.checksums()} ok, from {server.url('good')}" in out
    assert "img_align_celeba.zip: 64.0k/64.0k (100%)" in err  # the plain progress line of a log
    assert [p for p, _ in server.log] == ["/quota", "/missing", "/good"]


def test_a_dropped_connection_resumes_with_a_range_request(tmp_path, server):
    dest = tmp_path / "img_align_celeba.zip"
    fetched = download.fetch(dest, [server.url("drop")], EXPECTED, **FAST)
    assert dest.read_bytes() == PAYLOAD and fetched.sha256 == EXPECTED.sha256
    assert server.log == [("/drop", None), ("/drop", f"bytes={HALF}-")]
    assert files(tmp_path) == ["img_align_celeba.zip"]


def test_a_server_that_ignores_range_starts_over_cleanly(tmp_path, server, capsys):
    dest = tmp_path / "img_align_celeba.zip"
    download.fetch(dest, [server.url("norange")], EXPECTED, **FAST)
    assert dest.read_bytes() == PAYLOAD  # not the first half twice
    assert server.log == [("/norange", None), ("/norange", f"bytes={HALF}-")]
    assert "ignores Range requests; downloading from the start" in capsys.readouterr().out
    assert files(tmp_path) == ["img_align_celeba.zip"]


def test_a_killed_download_resumes_from_its_part_file(tmp_path, server):
    """SIGKILL mid-download: the received half stays in the .part, the next fetch asks only for the rest."""
    dest = tmp_path / "img_align_celeba.zip"
    code = (f"from ocbench import download; download.fetch({str(dest)!r}, [{server.url('stall-half')!r}], "
            f"download.Expected{dataclasses.astuple(EXPECTED)!r}, timeout=30)")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    child = subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    part = tmp_path / "img_align_celeba.zip.part"
    deadline = time.monotonic() + 60
    while not (part.exists() and part.stat().st_size == HALF) and time.monotonic() < deadline:
        time.sleep(0.05)
    os.kill(child.pid, signal.SIGKILL)
    child.wait(10)
    server.release.set()
    assert part.stat().st_size == HALF and not dest.exists()

    download.fetch(dest, [server.url("stall-half")], EXPECTED, **FAST)
    assert dest.read_bytes() == PAYLOAD
    assert server.log[-1] == ("/stall-half", f"bytes={HALF}-") and len(server.log) == 2
    assert files(tmp_path) == ["img_align_celeba.zip"]


def test_when_every_source_fails_one_line_says_what_each_returned(tmp_path, server):
    dest = tmp_path / "img_align_celeba.zip"
    port = closed_port()
    sources = [server.url(case) for case in ("quota", "missing", "short", "wrong", "stall")]
    sources += [f"http://127.0.0.1:{port}/img_align_celeba.zip", str(tmp_path / "share" / "img_align_celeba.zip")]
    with pytest.raises(OcbenchError) as info:
        data.fetch_images(dest, False, sources, expected=EXPECTED, **FAST)
    message = str(info.value)
    assert "\n" not in message
    for fragment in [
        "from any of its 7 sources",
        f"(1) {sources[0]}: an HTML page titled 'Google Drive - Quota exceeded', not the file",
        f"(2) {sources[1]}: HTTP 404 Not Found",
        f"(3) {sources[2]}: 65,526 bytes, not 65,536",
        f"(4) {sources[3]}: right size but md5 {hashlib.md5(WRONG).hexdigest()}, not {EXPECTED.md5}",
        f"(5) {sources[4]}: timed out (nothing for 1 s) (2 tries in a row)",
        f"(6) {sources[5]}: cannot connect (Connection refused)",
        f"(7) {sources[6]}: no such file",
        f"place it at {dest.resolve()} (md5 {EXPECTED.md5}, sha256 {EXPECTED.sha256})",
        "list a copy (URL or path) in data.sources",
    ]:
        assert fragment in message, message
    assert files(tmp_path) == []  # nothing under the final name, no .part of wrong bytes


def test_a_local_copy_is_verified_and_an_html_one_is_refused(tmp_path):
    share = tmp_path / "share"
    share.mkdir()
    (share / "quota.zip").write_bytes(QUOTA)
    (share / "img_align_celeba.zip").write_bytes(PAYLOAD)
    dest = tmp_path / "data" / "img_align_celeba.zip"
    fetched = download.fetch(dest, [str(share / "quota.zip"), f"file://{share / 'img_align_celeba.zip'}"],
                             EXPECTED, **FAST)
    assert dest.read_bytes() == PAYLOAD and fetched.source.startswith("file://")
    assert files(dest.parent) == ["img_align_celeba.zip"]


def test_google_drive_links_are_recognised():
    assert download.google_drive_id(data.CELEBA_ZIP_MIRRORS[-1]) == "0B7EVK8r0v71pZjFTYXZWM3FlRnM"
    assert download.google_drive_id("https://drive.google.com/file/d/abc-1_x/view?usp=sharing") == "abc-1_x"
    assert download.google_drive_id(data.CELEBA_ZIP_MIRRORS[0]) is None


def planted_by_another_user(link: Path, target: Path) -> None:
    """A symlink another user planted (a symlink of the user's own is followed: formats.create_new)."""
    if os.geteuid() != 0:
        pytest.skip("a symlink owned by another user needs root to make")
    link.symlink_to(target)
    os.lchown(link, 65534, 65534)


def test_a_planted_part_symlink_neither_writes_through_nor_lands_in_place(tmp_path, server):
    """In a data folder others write to, a member plants <zip>.part -> the victim's file: the download
    writes neither the victim's file nor the link's dangling target, and the zip is a file of its own."""
    victim, dest = tmp_path / "thesis.txt", tmp_path / "img_align_celeba.zip"
    victim.write_bytes(b"my thesis")
    planted_by_another_user(dest.with_name(dest.name + ".part"), victim)
    download.fetch(dest, [server.url("good")], EXPECTED, **FAST)
    assert victim.read_bytes() == b"my thesis"
    assert not dest.is_symlink() and dest.read_bytes() == PAYLOAD
    assert files(tmp_path) == ["img_align_celeba.zip", "thesis.txt"]


def test_a_part_file_of_another_user_is_not_resumed(tmp_path, server):
    if os.geteuid() != 0:
        pytest.skip("a file owned by another user needs root to make")
    dest = tmp_path / "img_align_celeba.zip"
    part = dest.with_name(dest.name + ".part")
    part.write_bytes(WRONG[:HALF])  # their half, which would fail the digest or poison the file
    os.chown(part, 65534, 65534)
    download.fetch(dest, [server.url("good")], EXPECTED, **FAST)
    assert dest.read_bytes() == PAYLOAD and server.log == [("/good", None)]  # from the start, no Range
