"""Tweet datasets: `<data_dir>/datasets/<handle>.jsonl`, one tweet per line, ids unique.

The one owner of the file format, from both sides. Each line is an object with at least
``id`` (a string of digits) and ``text``; extra fields (``created_at``, ...) are kept.

Writing: scraping and archive import both go through :func:`merge_records`. It takes an
exclusive lock (a sidecar ``.lock`` file, so a daemon's scrape and an operator's import queue
up) and replaces the file whole through :func:`training.files.atomic_write`: a reader
(training) sees the old file or the new one, never a partial line, and a crash at any point
leaves the old file whole.

Reading: :func:`load_tweets` (deduplicated, in id order), :func:`dataset_hash` (what the
manifest records) and :func:`split_by_id`. Everything here is pure Python so the daemon, the
launcher and tests can hash and split datasets without importing a framework.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, BinaryIO

import structlog

from training import cleaning
from training.files import atomic_write, remove_leftovers

log = structlog.get_logger(__name__)


class DatasetError(Exception):
    """A dataset file is missing or malformed; the message names the file and line."""


def dataset_path(data_dir: Path, handle: str) -> Path:
    """Where a target's tweets live on the volume (the scraper, the importer and training)."""
    return Path(data_dir) / "datasets" / f"{handle}.jsonl"


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
        remove_leftovers(path)  # temporary files of a writer that died mid-merge
        known = known_ids(path)
        fresh: list[dict[str, Any]] = []
        for record in records:
            tweet_id = str(record["id"])
            if tweet_id not in known:
                known.add(tweet_id)
                fresh.append(record)
        if fresh:
            fresh.sort(key=lambda record: int(record["id"]))  # oldest first, like the file
            _append_whole(path, fresh)
    return len(fresh)


def _append_whole(path: Path, fresh: list[dict[str, Any]]) -> None:
    """The old lines plus the fresh ones, written as a new file that replaces the old."""
    old = path.read_bytes() if path.exists() else b""
    if old and not old.endswith(b"\n"):
        old += b"\n"
    payload = "".join(json.dumps(record, ensure_ascii=False) + "\n" for record in fresh)

    def write(out: BinaryIO) -> None:
        out.write(old)
        out.write(payload.encode("utf-8"))

    atomic_write(path, write)
    log.debug("dataset.merged", path=str(path), added=len(fresh))


@contextlib.contextmanager
def _locked(lock_path: Path) -> Iterator[None]:
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _parse_line(line: str, path: Path, lineno: int) -> dict[str, Any]:
    try:
        tweet = json.loads(line)
    except json.JSONDecodeError as e:
        raise DatasetError(f"{path}:{lineno}: not valid JSON ({e.msg})") from e
    if not isinstance(tweet, dict):
        raise DatasetError(f"{path}:{lineno}: expected a JSON object")
    tweet_id = tweet.get("id")
    # Tweet ids exceed 2**53, so they travel as strings; ints would silently lose precision.
    if not isinstance(tweet_id, str) or not tweet_id.isdigit():
        raise DatasetError(f"{path}:{lineno}: 'id' must be a string of digits, got {tweet_id!r}")
    if not isinstance(tweet.get("text"), str):
        raise DatasetError(f"{path}:{lineno}: 'text' must be a string")
    return tweet


def load_tweets(paths: Sequence[Path]) -> list[dict[str, Any]]:
    """Read every file, drop duplicate ids (first seen wins), return them sorted by id.

    Sorting by numeric id makes everything downstream (hash, split, training order)
    independent of file order and of how often a tweet was scraped.
    """
    by_id: dict[str, dict[str, Any]] = {}
    for raw_path in paths:
        path = Path(raw_path)
        try:
            with path.open(encoding="utf-8") as f:
                for lineno, line in enumerate(f, start=1):
                    if not line.strip():
                        continue
                    tweet = _parse_line(line, path, lineno)
                    by_id.setdefault(tweet["id"], tweet)
        except FileNotFoundError as e:
            raise DatasetError(f"{path}: dataset file does not exist") from e
        except UnicodeDecodeError as e:
            raise DatasetError(f"{path}: not UTF-8 ({e.reason})") from e
        except OSError as e:
            raise DatasetError(f"{path}: cannot read dataset ({e.strerror or e})") from e
    tweets = sorted(by_id.values(), key=lambda t: int(t["id"]))
    log.debug("dataset.loaded", files=len(paths), tweets=len(tweets))
    return tweets


def training_texts(
    paths: Sequence[Path], options: cleaning.CleaningOptions = cleaning.DEFAULT_OPTIONS
) -> list[str]:
    """Every text a trainer given these datasets and options learns from (both sides of the
    split), as it sees them: loaded, then cleaned and filtered by `training.cleaning`.

    The daemon's novelty index is built from these, so serving and training agree on what a
    training tweet is: with ``urls: keep`` the index holds the URLs the model saw, and a
    retweet the trainer dropped is not guarded as if the model had learned it.
    """
    return [tweet["text"] for tweet in cleaning.clean_tweets(load_tweets(paths), options).tweets]


def dataset_hash(tweets: Iterable[dict[str, Any]]) -> str:
    """A stable fingerprint of the training data (ids and texts in id order) for the manifest."""
    h = hashlib.sha256()
    for tweet in sorted(tweets, key=lambda t: int(t["id"])):
        # Length-prefix both fields so no two different datasets can serialise the same.
        for part in (tweet["id"], tweet["text"]):
            data = part.encode("utf-8")
            h.update(len(data).to_bytes(8, "big"))
            h.update(data)
    return h.hexdigest()


def _val_score(tweet_id: str) -> float:
    digest = hashlib.sha256(f"split:{tweet_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def split_by_id(
    tweets: Sequence[dict[str, Any]], val_fraction: float
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Split into (train, val) by hashing each id, so a tweet never changes sides.

    Adding tweets later leaves old ones where they were; that keeps validation losses
    comparable across retrains. With at least two tweets and ``val_fraction > 0`` the
    validation side gets at least one (the tweet whose hash is lowest).
    """
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    scores = [(_val_score(t["id"]), i) for i, t in enumerate(tweets)]
    val_idx = {i for score, i in scores if score < val_fraction}
    if not val_idx and val_fraction > 0 and len(tweets) >= 2:
        val_idx = {min(scores)[1]}
    train = [t for i, t in enumerate(tweets) if i not in val_idx]
    val = [t for i, t in enumerate(tweets) if i in val_idx]
    return train, val


def clean_text(text: str) -> str:
    """One tweet's text cleaned with the default options of `training.cleaning`.

    Kept for callers that clean one text at a time; `clean_tweets` there also drops
    retweets and duplicates, and takes the configured options.
    """
    return cleaning.clean_text(text)
