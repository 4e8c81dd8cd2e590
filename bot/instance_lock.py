"""Which daemon lives on this volume: an exclusive lock on a file in `data_dir`.

A daemon killed with SIGKILL cannot release its Redis lease, so on its own a restart
would wait out the lease TTL. The kernel, though, drops a dead process's file locks at
once. A daemon that gets this lock therefore knows the previous holder on this volume is
gone, and the file tells it who that was: the lease token it may take over at once.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

LOCK_FILE_NAME = "daemon.lock"


class InstanceLock:
    """A non-blocking `flock` held for the daemon's whole life, naming its instance id.

    The file is rewritten in place, never replaced: a lock belongs to one inode, and a
    file swapped in by `os.replace` would carry no lock at all. The descriptor is opened
    close-on-exec (Python's default), so a trainer subprocess never keeps the lock alive
    after the daemon died.
    """

    def __init__(self, path: Path, instance_id: str) -> None:
        self.path = path
        self.instance_id = instance_id
        self.previous: str | None = None
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def try_acquire(self) -> bool:
        """Take the lock if no live process holds it; never waits.

        On success `previous` is the instance id the last holder wrote (None for a fresh
        volume): that process is dead. False means another live daemon holds the lock.
        Raises OSError when the file cannot be opened or locked for another reason.
        """
        if self._fd is not None:
            return True
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        except OSError:
            os.close(fd)
            raise
        try:
            self.previous = _read_all(fd).strip() or None
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{self.instance_id}\n".encode(), 0)
            os.fsync(fd)
        except OSError:
            os.close(fd)  # closing drops the lock too
            raise
        self._fd = fd
        return True

    def release(self) -> None:
        """Drop the lock (a clean stop); the id stays in the file, harmlessly."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def _read_all(fd: int) -> str:
    chunks = []
    offset = 0
    while chunk := os.pread(fd, 4096, offset):
        chunks.append(chunk)
        offset += len(chunk)
    return b"".join(chunks).decode("utf-8", errors="replace")
