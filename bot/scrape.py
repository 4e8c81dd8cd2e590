"""Incremental scraping: each target's new tweets, since its cursor, into its dataset file.

The dataset file is append-only and deduplicated by id, and the cursor moves only after
the tweets are safely on disk, so a crash mid-scrape re-fetches rather than loses.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

import structlog

from bot.platform.base import Platform
from bot.state import BotState

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class ScrapeResult:
    handle: str
    new_tweets: int


def dataset_path(data_dir: Path, handle: str) -> Path:
    return data_dir / "datasets" / f"{handle}.jsonl"


def scrape_target(platform: Platform, state: BotState, data_dir: Path, handle: str) -> ScrapeResult:
    user = platform.lookup_user(handle)
    cursor_name = f"timeline:{handle}"
    tweets = platform.timeline(user, since_id=state.cursor(cursor_name))
    path = dataset_path(data_dir, handle)
    known = _known_ids(path)
    fresh = [tweet for tweet in tweets if tweet.id not in known]
    if fresh:
        _append_records(path, [tweet.as_dataset_record() for tweet in fresh])
        state.redis.incrby(state.keys.new_tweets_since_training, len(fresh))
    if tweets:
        state.set_cursor(cursor_name, tweets[-1].id)
    state.redis.hset(
        state.keys.last_scrape, handle, json.dumps({"at": time.time(), "new_tweets": len(fresh)})
    )
    log.info("scrape.done", handle=handle, new_tweets=len(fresh), dataset=str(path))
    return ScrapeResult(handle=handle, new_tweets=len(fresh))


def _known_ids(path: Path) -> set[str]:
    if not path.exists():
        return set()
    ids = set()
    with path.open(encoding="utf-8") as lines:
        for line in lines:
            if line.strip():
                ids.add(str(json.loads(line)["id"]))
    return ids


def _append_records(path: Path, records: list[dict[str, object]]) -> None:
    """One write of whole lines, fsynced: a crash leaves all of them or none."""
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = "".join(json.dumps(record, ensure_ascii=False) + "\n" for record in records)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, payload.encode("utf-8"))
        os.fsync(fd)
    finally:
        os.close(fd)
