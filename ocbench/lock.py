"""Exclusive locks that the kernel releases when their holder ends, however it ends (SIGKILL too).

A `flock` on a lock file, taken without waiting: the GPU slots (ocbench/gpus.py) and the one
trainer of a run (`run_lock`: `ocbench train` and ocbench/train.py) use it. The holder writes its PID
into the file, so that the one who finds it taken can say who holds it.

Lock files may sit in folders other users write to (the GPU slot folder is shared like /tmp), where
anyone can plant a symlink, a hard link, a FIFO or a directory under a slot's name. So a lock file is
opened with O_NOFOLLOW (never through a symlink) and O_NONBLOCK (a FIFO does not hang the open), used
only when it is a regular file with no other name (no hard link to someone's file) that holds
nothing but a PID record, and never truncated: the PID is written over the old record, padded to a
fixed width.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import re
import stat
from pathlib import Path

from ocbench.errors import OcbenchError
from ocbench.formats import LOCK

SAFE_OPEN = os.O_NOFOLLOW | os.O_NONBLOCK
PID_RECORD = 16  # bytes: the PID, spaces, a newline (fixed: rewritten in place, never truncated)
LOCK_CONTENT = re.compile(rb"[0-9 \n]*")  # what a lock file of ours ever holds


class UnusableLock(OcbenchError):
    """A lock file's name holds something that is not a lock file of ours (see the module's docstring)."""


def _check(fd: int, path: Path, created: bool) -> None:
    """Raise UnusableLock (closing `fd`) unless `fd` is a lock file we may write a PID into."""
    st = os.fstat(fd)
    problem = None
    if not stat.S_ISREG(st.st_mode):
        problem = "is not a regular file"
    elif st.st_nlink != 1:
        problem = f"has {st.st_nlink} names (a hard link to another file)"
    elif not created and (st.st_size > 64 or not LOCK_CONTENT.fullmatch(os.pread(fd, 65, 0))):
        problem = "holds something other than a PID"
    if problem:
        os.close(fd)
        raise UnusableLock(f"lock file {path} {problem}; remove it (only its owner, uid {st.st_uid}, or root can)")


def open_lock_file(path: Path, shared: bool = False, dir_fd: int | None = None) -> int:
    """`path` (relative to `dir_fd` when given) opened for reading and writing, created if absent;
    `shared`: made 0o666 when this process creates it, whatever the umask, so that other users can take
    the lock too. UnusableLock for a symlink, a directory, a FIFO, a hard link or a file of other content;
    PermissionError when this user may not open or create it."""
    created = False
    try:
        try:
            # An existing file is opened without O_CREAT: with fs.protected_regular (systemd sets it),
            # O_CREAT on another user's file in a sticky folder like /tmp fails even where it is 0o666.
            fd = os.open(path, os.O_RDWR | SAFE_OPEN, dir_fd=dir_fd)
        except FileNotFoundError:
            try:
                fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | SAFE_OPEN, 0o666, dir_fd=dir_fd)
                created = True
            except FileExistsError:  # another process created it in between (or a symlink is there)
                fd = os.open(path, os.O_RDWR | SAFE_OPEN, dir_fd=dir_fd)
    except OSError as err:
        if err.errno == errno.ELOOP:
            raise UnusableLock(f"lock file {path} is a symlink; remove it (whoever planted it meant "
                               "to redirect the write)") from None
        if err.errno in (errno.EISDIR, errno.ENXIO):
            raise UnusableLock(f"lock file {path} is a directory or a socket, not a file; remove it") from None
        raise
    _check(fd, path, created)
    if created and shared:
        os.fchmod(fd, 0o666)
    return fd


def try_lock(path: Path, shared: bool = False, dir_fd: int | None = None) -> int | None:
    """An exclusive flock on `path` (created if absent, see open_lock_file): the open descriptor
    that holds it, or None when another process holds it. Closing the descriptor (or ending the
    process) releases it."""
    fd = open_lock_file(path, shared, dir_fd)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    os.pwrite(fd, f"{os.getpid():<{PID_RECORD - 1}}\n".encode(), 0)  # over the old record, no truncation
    return fd


def _read(fd: int) -> str:
    return os.pread(fd, 4096, 0).decode(errors="replace").strip() or "unknown"


def recorded_holder(path: Path, dir_fd: int | None = None) -> str:
    """The PID the holder of `path` wrote, as text ("unknown" before it has written it, or when
    `path` is not a regular file)."""
    try:
        fd = os.open(path, os.O_RDONLY | SAFE_OPEN, dir_fd=dir_fd)
    except OSError:
        return "unknown"
    try:
        return _read(fd) if stat.S_ISREG(os.fstat(fd).st_mode) else "unknown"
    finally:
        os.close(fd)


def current_holder(path: Path, dir_fd: int | None = None) -> str | None:
    """Who holds `path` now (the PID it wrote), or None when nobody does, without taking it: a
    shared flock tried and dropped at once. Reads only; a missing file, or anything that is not a
    regular file, is not held."""
    try:
        fd = os.open(path, os.O_RDONLY | SAFE_OPEN, dir_fd=dir_fd)
    except OSError:
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return _read(fd)
    finally:
        os.close(fd)  # closing drops the shared lock, if it was taken
    return None


_HELD_RUNS: dict[str, int] = {}  # the run locks this process holds: lock file -> how many blocks hold it


@contextlib.contextmanager
def run_lock(state_dir: Path, run_id: str, config_name: str):
    """One trainer per run: an exclusive flock on state/<run>/train.lock (created with its folder)
    for the whole block; OcbenchError, naming the holder, when another process holds it. The kernel
    releases it when the process ends, however it ends (SIGKILL included). Nested blocks of one
    process share the one lock: `ocbench train` takes it before it imports torch, and
    ocbench.train.train, which in-process callers use alone, takes it again inside."""
    state_dir.mkdir(parents=True, exist_ok=True)
    path = state_dir / LOCK
    key = os.path.realpath(path)
    if key in _HELD_RUNS:
        _HELD_RUNS[key] += 1
        try:
            yield
        finally:
            _HELD_RUNS[key] -= 1
        return
    fd = try_lock(path)
    if fd is None:
        raise OcbenchError(f"run {run_id} of config {config_name} is being trained by process {recorded_holder(path)}, "
                           f"which holds {path}; wait for it to end (or stop it), then rerun to resume")
    _HELD_RUNS[key] = 1
    try:
        yield
    finally:
        del _HELD_RUNS[key]
        os.close(fd)
