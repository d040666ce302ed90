"""Exclusive locks that the kernel releases when their holder ends, however it ends (SIGKILL too).

A `flock` on a lock file, taken without waiting: the GPU slots (ocbench/gpus.py) and the one
trainer of a run (ocbench/train.py) use it. The holder writes its PID into the file, so that the
one who finds it taken can say who holds it.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path


def open_lock_file(path: Path, shared: bool = False) -> int:
    """`path` opened for reading and writing, created if absent; `shared`: made 0o666 when this
    process creates it, whatever the umask, so that other users can take the lock too."""
    try:
        # An existing file is opened without O_CREAT: with fs.protected_regular (systemd sets it),
        # O_CREAT on another user's file in a sticky folder like /tmp fails even where it is 0o666.
        return os.open(path, os.O_RDWR)
    except FileNotFoundError:
        pass
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o666)
    except FileExistsError:  # another process created it in between
        return os.open(path, os.O_RDWR)
    if shared:
        os.fchmod(fd, 0o666)
    return fd


def try_lock(path: Path, shared: bool = False) -> int | None:
    """An exclusive flock on `path` (created if absent, see open_lock_file): the open descriptor
    that holds it, or None when another process holds it. Closing the descriptor (or ending the
    process) releases it. PermissionError when this user may not open or create the file."""
    fd = open_lock_file(path, shared)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    return fd


def holder(path: Path) -> str:
    """The PID the holder of `path` wrote, as text ("unknown" before it has written it)."""
    try:
        return Path(path).read_text().strip() or "unknown"
    except OSError:
        return "unknown"


def probe(path: Path) -> str | None:
    """Who holds `path` now (the PID it wrote), or None when nobody does, without taking it: a
    shared flock tried and dropped at once. Reads only; a missing file is not held."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return holder(path)
    finally:
        os.close(fd)  # closing drops the shared lock, if it was taken
    return None
