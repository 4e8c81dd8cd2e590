"""Dataset files on the volume: `datasets/<handle>.jsonl`, one tweet per line, ids unique.

Scraping and archive import both write through `merge_records`. It takes an exclusive lock
(a sidecar `.lock` file, so a daemon's scrape and an operator's import queue up), writes the
old lines plus the new ones to a temporary file, fsyncs it and renames it over the dataset.
A reader (training) sees the old file or the new one, never a partial line, and a crash at
any point leaves the old file whole.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import structlog

log = structlog.get_logger(__name__)


def dataset_path(data_dir: Path, handle: str) -> Path:
    return data_dir / "datasets" / f"{handle}.jsonl"


def known_ids(path: Path) -> set[str]:
    """The ids a dataset holds (an absent file holds none)."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return set()
    return {str(json.loads(line)["id"]) for line in text.splitlines() if line.strip()}


def merge_records(path: Path, records: Iterable[dict[str, Any]]) -> int:
    """Add the records whose id the dataset lacks (first of a repeated id wins); return how many.

    The file is replaced whole (see the module docstring); nothing changes when none is new.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    with _locked(path.with_name(path.name + ".lock")):
        for stale in path.parent.glob(f".{path.name}.*.tmp"):  # left by a writer that died
            stale.unlink(missing_ok=True)
        known = known_ids(path)
        fresh: list[dict[str, Any]] = []
        for record in records:
            tweet_id = str(record["id"])
            if tweet_id not in known:
                known.add(tweet_id)
                fresh.append(record)
        if fresh:
            fresh.sort(key=lambda record: int(record["id"]))  # oldest first, like the file
            _replace_with(path, fresh)
    return len(fresh)


def _replace_with(path: Path, fresh: list[dict[str, Any]]) -> None:
    old = path.read_bytes() if path.exists() else b""
    if old and not old.endswith(b"\n"):
        old += b"\n"
    payload = "".join(json.dumps(record, ensure_ascii=False) + "\n" for record in fresh)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with temporary.open("wb") as out:
            out.write(old)
            out.write(payload.encode("utf-8"))
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
    _fsync_dir(path.parent)
    log.debug("dataset.merged", path=str(path), added=len(fresh))


def _fsync_dir(folder: Path) -> None:
    """Make the rename itself durable, not only the file's bytes."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def _locked(lock_path: Path) -> Iterator[None]:
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)
