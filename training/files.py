"""Atomic file writes: the one way anything on the volume is replaced.

A reader (the daemon following ``LATEST``, a trainer reading a dataset, a resume looking for
a checkpoint) must see the old file or the new one, never a partial one, whatever killed the
writer. So every writer writes a temporary file in the same folder, fsyncs it, ``os.replace``s
it over the final name and fsyncs the folder, which makes the rename itself durable.

A writer that dies leaves only its temporary file, named ``.tmp-<name>-<random>``: hidden,
never mistaken for the real file, and removable by the next writer that holds the file's lock
(see :func:`remove_leftovers`). Pure Python, so every layer may import it.
"""

from __future__ import annotations

import contextlib
import glob
import os
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

TMP_PREFIX = ".tmp-"


def fsync_dir(path: Path) -> None:
    """Persist a directory entry (a rename or create); a no-op where the OS cannot."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # pragma: no cover - e.g. Windows
        return
    try:
        with contextlib.suppress(OSError):
            os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: Path, write: Callable[[BinaryIO], Any]) -> None:
    """Call ``write`` on a temp file in the same folder, fsync, ``os.replace``, fsync the folder.

    A file under its final name is therefore always complete, whatever happened meanwhile.
    """
    path = Path(path)
    tmp = path.parent / f"{TMP_PREFIX}{path.name}-{secrets.token_hex(4)}"
    try:
        with tmp.open("wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    atomic_write(path, lambda f: f.write(data))


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda f: f.write(text.encode("utf-8")))


def remove_leftovers(path: Path) -> None:
    """Delete the temporary files writers of ``path`` left when they died (a SIGKILL, a crash).

    Only safe while holding whatever lock serialises the writers of ``path``: otherwise it
    could delete the temporary file of a writer that is still alive.
    """
    path = Path(path)
    for stale in path.parent.glob(f"{glob.escape(TMP_PREFIX + path.name)}-*"):
        stale.unlink(missing_ok=True)
