"""Exclusive locks that the kernel releases when their holder ends, however it ends (SIGKILL too).

A `flock` on a lock file, taken without waiting: the GPU slots (ocbench/gpus.py) and the one
trainer of a run (ocbench/train.py) use it. The holder writes its PID into the file, so that the
one who finds it taken can say who holds it.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path


def try_lock(path: Path) -> int | None:
    """An exclusive flock on `path` (created if absent): the open descriptor that holds it, or None
    when another process holds it. Closing the descriptor (or ending the process) releases it."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
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
