"""One file from an ordered list of sources: resumable, every byte verified, renamed into place.

A source is an http(s) URL, a Google Drive link (`https://drive.google.com/uc?id=ID`, fetched with
torchvision's helper, which uses gdown to get past Drive's confirmation pages) or a local path (a lab
share). `fetch` tries them in order until one gives the expected bytes. Size, md5 and sha256 are
computed while the bytes stream into `<name>.part`, and the file appears under its own name only
when all match (a rename), so a half-written or wrong file never sits where a reader looks.

HTTP downloads resume: a `.part` left by a dropped connection, or by a process that was killed,
continues with a Range request; a server that ignores Range sends the whole file again and the
`.part` starts over. A stalled or dropped connection is retried with backoff (the count restarts
whenever bytes arrived, so a long download on a flaky line still finishes); a refused connection,
an HTTP error, an HTML page instead of the file, a wrong size or a wrong digest moves on to the next
source at once. Every source's failure is kept as a short reason, and when all fail the one-line
error lists what each returned.
"""

from __future__ import annotations

import fcntl
import hashlib
import http.client
import os
import re
import stat
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from ocbench import __version__
from ocbench.errors import OcbenchError, one_line
from ocbench.formats import create_new, rename_own
from ocbench.progress import progress as progress_bar

CHUNK = 1 << 20
TIMEOUT_S = 60.0  # per connection attempt and per read: a server silent this long is given up on
RETRIES = 4  # attempts in a row that bring no byte, per source, before the next source
BACKOFF_S = 2.0  # the wait before retry k is BACKOFF_S * 2**(k-1): 2, 4, 8, 16 s
HTML_STARTS = (b"<!doctype html", b"<html")


@dataclass(frozen=True)
class Expected:
    """What the file must be: its name (for messages), size in bytes, and digests."""

    name: str
    size: int
    md5: str
    sha256: str | None = None

    def checksums(self) -> str:
        return f"md5 {self.md5}" + (f", sha256 {self.sha256}" if self.sha256 else "")


@dataclass(frozen=True)
class Fetched:
    source: str
    md5: str
    sha256: str


class SourceFailed(Exception):
    """A source did not give the file (try the next one); the message is a short reason."""


class _Transient(Exception):
    """A dropped, stalled or 5xx connection: worth another try at the same source."""


# --------------------------------------------------------------------------------------------------
# recognising what came instead of the file


def html_title(head: bytes) -> str | None:
    """The page's title when `head` (a file's first bytes) is an HTML page ('' for one without), else None."""
    low = head.lstrip().lower()
    if not (low.startswith(HTML_STARTS) or b"<html" in low[:1024]):
        return None
    m = re.search(rb"<title[^>]*>(.*?)</title>", head, re.I | re.S)
    return " ".join(m.group(1).decode("utf-8", "replace").split())[:80] if m else ""


def describe_html(title: str) -> str:
    return f"an HTML page{f' titled {title!r}' if title else ''}, not the file"


def _reason(exc: BaseException) -> str:
    """A network error as a short phrase."""
    if isinstance(exc, urllib.error.URLError) and not isinstance(exc, urllib.error.HTTPError):
        exc = exc.reason if isinstance(exc.reason, BaseException) else OSError(str(exc.reason))
    if isinstance(exc, TimeoutError):  # socket.timeout is TimeoutError
        return "timed out"
    if isinstance(exc, http.client.IncompleteRead):
        return "connection dropped"
    text = " ".join(str(getattr(exc, "strerror", None) or exc).split()) or type(exc).__name__
    return text[:120]


# --------------------------------------------------------------------------------------------------
# the .part file and its running digests


class _Part:
    """`<dest>.part` opened for appending, with the digests of the bytes it holds."""

    def __init__(self, dest: Path):
        self.path = dest.with_name(dest.name + ".part")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # unbuffered: a kill loses no received byte
        self.file = open(self._open(self.path), "ab+", buffering=0, closefd=True)
        self._reset_digests()
        self.file.seek(0)  # bytes left by an earlier attempt or process: hashed once, then continued
        for block in iter(lambda: self.file.read(CHUNK), b""):
            self._hash(block)

    @staticmethod
    def _open(path: Path) -> int:
        """A `.part` to resume only if it is a regular file of this user's with no other name, opened
        without following a symlink; anything else under its name (in a data folder others write to:
        a planted symlink, another member's file) is removed and the download starts anew."""
        try:
            fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_NOFOLLOW | os.O_NONBLOCK)
        except OSError:
            fd = None
        if fd is not None:
            st = os.fstat(fd)
            if stat.S_ISREG(st.st_mode) and st.st_uid == os.geteuid() and st.st_nlink == 1:
                return fd
            os.close(fd)
        fd = create_new(path)
        fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) | os.O_APPEND)  # see restart()
        return fd

    def _reset_digests(self) -> None:
        self.size, self.md5, self.sha256 = 0, hashlib.md5(), hashlib.sha256()

    def _hash(self, block: bytes) -> None:
        self.size += len(block)
        self.md5.update(block)
        self.sha256.update(block)

    def write(self, block: bytes) -> None:
        self.file.write(block)
        self._hash(block)

    def restart(self) -> None:
        self.file.truncate(0)  # append mode: the next write lands at 0
        self._reset_digests()

    def discard(self) -> None:
        self.file.close()
        self.path.unlink(missing_ok=True)

    def finish(self, dest: Path, expected: Expected, source: str) -> Fetched:
        """Rename to `dest` if the bytes are the expected ones; else discard and raise SourceFailed."""
        md5, sha256 = self.md5.hexdigest(), self.sha256.hexdigest()
        if self.size != expected.size:
            problem = f"{self.size:,} bytes, not {expected.size:,}"
        elif md5 != expected.md5:
            problem = f"right size but md5 {md5}, not {expected.md5}"
        elif expected.sha256 and sha256 != expected.sha256:
            problem = f"right size and md5 but sha256 {sha256}, not {expected.sha256}"
        else:
            try:
                rename_own(self.file.fileno(), self.path, dest)  # the file verified, not one swapped in
            except OSError as exc:
                raise SourceFailed(_reason(exc)) from None
            finally:
                self.file.close()
            return Fetched(source, md5, sha256)
        self.discard()
        raise SourceFailed(problem)


# --------------------------------------------------------------------------------------------------
# one source


def _fetch_http(url: str, dest: Path, expected: Expected, timeout: float, retries: int, backoff: float,
                show: bool) -> Fetched:
    part = _Part(dest)
    if part.size > expected.size:
        part.restart()
    resumed = part.size > 0
    bar = progress_bar(total=expected.size, initial=part.size, desc=expected.name, unit="B", unit_scale=True,
                       unit_divisor=1024, disable=not show)
    fruitless = 0  # attempts in a row that brought no byte
    try:
        while True:
            before = part.size
            try:
                _http_attempt(url, part, expected, timeout, bar)
                try:
                    return part.finish(dest, expected, url)
                except SourceFailed:
                    if not resumed:
                        raise
                    # The first bytes came from an earlier attempt, maybe from another copy: once more
                    # from the start, so that a bad prefix cannot fail a good source.
                    print(f"{url}: the resumed download does not verify; downloading it again from the start")
                    part, resumed = _Part(dest), False
                    bar.reset(total=expected.size)
                    continue
            except _Transient as exc:
                fruitless = 0 if part.size > before else fruitless + 1
                if fruitless > retries:
                    kept = (f"; {part.size:,} bytes kept in {part.path.name}, the next fetch resumes them"
                            if part.size else "")
                    raise SourceFailed(f"{exc} ({fruitless} tries in a row{kept})") from None
                wait = backoff * 2 ** max(0, fruitless - 1)
                print(f"{url}: {exc} at byte {part.size:,}; retrying in {wait:g} s", file=sys.stderr)
                time.sleep(wait)
    except SourceFailed:
        if part.size == 0 or part.file.closed:
            part.discard()
        raise
    finally:
        if not part.file.closed:
            part.file.close()
        bar.close()


def _http_attempt(url: str, part: _Part, expected: Expected, timeout: float, bar) -> None:
    """One request: append what the server sends to `part`, until it holds `expected.size` bytes."""
    headers = {"User-Agent": f"ocbench/{__version__}"}
    if part.size:
        headers["Range"] = f"bytes={part.size}-"
    try:
        response = urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and part.size == expected.size:
            return  # a complete .part: nothing left to send
        if exc.code == 416:
            part.restart()
            raise _Transient("HTTP 416 (the server does not have the bytes after ours): starting over") from None
        try:
            title = html_title(exc.read(4096) or b"")
        except (OSError, http.client.HTTPException):  # the error page itself cut short
            title = None
        text = f"HTTP {exc.code} {exc.reason}" + (f" ({describe_html(title)})" if title else "")
        if exc.code >= 500 or exc.code in (408, 429):
            raise _Transient(text) from None
        raise SourceFailed(text) from None
    except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
        cause = exc.reason if isinstance(exc, urllib.error.URLError) else exc
        if isinstance(cause, TimeoutError):
            raise _Transient(f"timed out (nothing for {timeout:g} s)") from None
        if isinstance(cause, (ConnectionResetError, http.client.RemoteDisconnected)):
            raise _Transient(_reason(cause)) from None
        raise SourceFailed(f"cannot connect ({_reason(exc)})") from None  # refused, no such host: no use retrying

    with response:
        try:
            _take_body(response, part, expected, bar)
        except (OSError, http.client.HTTPException) as exc:
            reason = _reason(exc)
            raise _Transient(f"timed out (nothing for {timeout:g} s)" if reason == "timed out" else reason) from None


def _take_body(response, part: _Part, expected: Expected, bar) -> None:
    status = response.status
    if status == 206:
        m = re.fullmatch(r"bytes (\d+)-\d+/(\d+|\*)", response.headers.get("Content-Range", "").strip())
        if m and m[2] != "*" and int(m[2]) != expected.size:
            raise SourceFailed(f"{int(m[2]):,} bytes, not {expected.size:,}")
        if not m or int(m[1]) != part.size:
            part.restart()
            raise _Transient("an unexpected Content-Range: starting over")
    elif status == 200:
        if part.size:
            print(f"{response.url}: the server ignores Range requests; downloading from the start")
            part.restart()
            bar.reset(total=expected.size)
    else:
        raise SourceFailed(f"HTTP {status} {response.reason}")

    head = response.read(min(4096, expected.size - part.size) or 1)
    title = html_title(head)  # a quota or login page, whatever its Content-Type says
    if title is not None:
        raise SourceFailed(describe_html(title))
    length = response.headers.get("Content-Length")
    if status == 200 and length is not None and int(length) != expected.size:
        raise SourceFailed(f"{int(length):,} bytes, not {expected.size:,}")

    block = head
    while block:
        if part.size + len(block) > expected.size:
            part.restart()
            raise SourceFailed(f"more than {expected.size:,} bytes")
        part.write(block)
        bar.update(len(block))
        block = response.read1(CHUNK)  # what has arrived, up to CHUNK: a kill loses little
    if part.size < expected.size:
        raise _Transient(f"connection closed after {part.size:,} of {expected.size:,} bytes")


def _fetch_local(path: Path, dest: Path, expected: Expected, show: bool) -> Fetched:
    if not path.is_file():
        raise SourceFailed("no such file")
    with open(path, "rb") as f:
        title = html_title(f.read(4096))
    if title is not None:
        raise SourceFailed(describe_html(title))
    size = path.stat().st_size
    if size != expected.size:
        raise SourceFailed(f"{size:,} bytes, not {expected.size:,}")
    part = _Part(dest)
    part.restart()  # a local copy is quick to redo; no mixing with bytes from elsewhere
    bar = progress_bar(total=size, desc=expected.name, unit="B", unit_scale=True, unit_divisor=1024,
                       disable=not show)
    try:
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(CHUNK), b""):
                part.write(block)
                bar.update(len(block))
    except OSError as exc:
        part.discard()
        raise SourceFailed(f"cannot be read ({_reason(exc)})") from None
    finally:
        bar.close()
    return part.finish(dest, expected, str(path))


def google_drive_id(source: str) -> str | None:
    """The file id of a Google Drive link (…/uc?id=ID or …/file/d/ID/…), else None."""
    url = urllib.parse.urlparse(source)
    if url.hostname not in ("drive.google.com", "docs.google.com"):
        return None
    m = re.search(r"/file/d/([\w-]+)", url.path)
    return m[1] if m else (urllib.parse.parse_qs(url.query).get("id") or [None])[0]


def _fetch_google_drive(file_id: str, dest: Path, expected: Expected) -> Fetched:
    """gdown (through torchvision) writes its own file, checked afterwards: one read, no resume."""
    from torchvision.datasets.utils import download_file_from_google_drive

    target = dest.with_name(dest.name + ".gdrive")
    target.unlink(missing_ok=True)  # torchvision skips the download when the file exists
    try:
        download_file_from_google_drive(file_id, str(target.parent), target.name)  # md5 checked below
    except Exception as exc:  # gdown and requests raise many kinds; all mean "not from here"
        target.unlink(missing_ok=True)
        if isinstance(exc, OSError) and type(exc).__module__.startswith("requests"):
            raise SourceFailed(f"cannot connect ({type(exc).__name__})") from None  # its text is a page long
        raise SourceFailed(f"{type(exc).__name__}: {one_line(exc, 150)}") from None
    try:
        return _fetch_local(target, dest, expected, show=False)
    finally:
        target.unlink(missing_ok=True)


def fetch_one(source: str, dest: Path, expected: Expected, timeout: float = TIMEOUT_S, retries: int = RETRIES,
              backoff: float = BACKOFF_S, show: bool = True) -> Fetched:
    """`expected` from one source into `dest`, or SourceFailed."""
    drive_id = google_drive_id(source)
    if drive_id:
        return _fetch_google_drive(drive_id, dest, expected)
    scheme = urllib.parse.urlparse(source).scheme
    if scheme in ("http", "https"):
        return _fetch_http(source, dest, expected, timeout, retries, backoff, show)
    path = Path(urllib.parse.urlparse(source).path if scheme == "file" else source).expanduser()
    return _fetch_local(path, dest, expected, show)


def fetch(dest: str | Path, sources: list[str], expected: Expected, hint: str = "", timeout: float = TIMEOUT_S,
          retries: int = RETRIES, backoff: float = BACKOFF_S, show: bool = True) -> Fetched:
    """Put `expected` at `dest` from the first source that gives exactly its bytes.

    Raises OcbenchError, one line listing every source with what it returned, then `hint` (where to
    place a copy downloaded by hand; the default names `dest` and the checksums).
    """
    dest = Path(dest)
    failures = []
    for k, source in enumerate(sources, 1):
        print(f"{expected.name}: trying source {k} of {len(sources)}, {source}")
        try:
            fetched = fetch_one(source, dest, expected, timeout, retries, backoff, show)
        except SourceFailed as exc:
            print(f"{expected.name}: {source}: {exc}")
            failures.append(f"({k}) {source}: {exc}")
            continue
        print(f"{dest}: {expected.checksums()} ok, from {source}")
        return Fetched(source, fetched.md5, fetched.sha256)  # the source as the user wrote it
    hint = hint or f"download it by hand and place it at {dest.resolve()} ({expected.checksums()})"
    raise OcbenchError(f"could not fetch {expected.name} from any of its {len(sources)} sources: "
                       f"{'; '.join(failures)}. To fix: {hint}")



