"""Exclusive locks on a run or dataset directory, so that two processes never write one together.

``flock`` on a lock file: the kernel drops the lock when its holder dies (kill -9 included), so a
lock is never stale, and NFSv4 clusters emulate it with POSIX locks. The file holds the holder's
host, pid and start time for the message the second process prints; it is left in place (removing
it would race with a third process taking it).
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import fcntl
import os
import socket
from collections.abc import Iterator
from pathlib import Path

from hetfield.errors import HetfieldError


def _holder(path: Path) -> str:
    try:
        text = path.read_text().strip()
    except OSError:
        return "another process"
    return text or "another process"


@contextlib.contextmanager
def exclusive_lock(lock_path: str | os.PathLike, what: str, error: type[HetfieldError], hint: str) -> Iterator[Path]:
    """Hold ``lock_path`` for the duration of the block, or raise ``error`` at once if it is held.

    ``what`` names the locked thing in the message (e.g. ``"run directory runs/a"``); ``hint`` says
    what to do (e.g. "wait for it to finish or use another directory").
    """
    from hetfield.io.atomic import file_mode

    lock_path = Path(lock_path)
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, file_mode())
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise error(f"{what} is in use by {_holder(lock_path)}; {hint}") from None
        stamp = _dt.datetime.now().isoformat(timespec="seconds")
        os.ftruncate(fd, 0)
        os.write(fd, f"hetfield pid {os.getpid()} on {socket.gethostname()} since {stamp}\n".encode())
        try:
            yield lock_path
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
