"""Incremental scraping: each target's new tweets, since its cursor, into its dataset file.

The platform pages through everything newer than the cursor (on X: ceil(new/100) calls of
100, one call when nothing is new). The tweets are merged into the dataset (deduplicated by
id, the file replaced atomically), and only then does the cursor move, so a crash mid-scrape
re-fetches rather than loses. X serves only a timeline's latest 3,200 posts: a scrape that
reaches that cap says so, since older tweets can only come from the archive.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import structlog

from bot.platform.base import Platform
from bot.state import BotState
from training.dataset import dataset_path, merge_records

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class ScrapeResult:
    handle: str
    new_tweets: int
    fetched: int = 0
    capped: bool = False  # the platform's reach ended before the cursor: older tweets missed


def scrape_target(platform: Platform, state: BotState, data_dir: Path, handle: str) -> ScrapeResult:
    user = platform.lookup_user(handle)
    cursor_name = f"timeline:{handle}"
    tweets = platform.timeline(user, since_id=state.cursor(cursor_name))
    path = dataset_path(data_dir, handle)
    added = merge_records(path, [tweet.as_dataset_record() for tweet in tweets])
    record_new_tweets(state, added)
    if tweets:
        state.set_cursor(cursor_name, tweets[-1].id)
    state.redis.hset(
        state.keys.last_scrape, handle, json.dumps({"at": time.time(), "new_tweets": added})
    )
    cap = getattr(platform, "timeline_cap", None)
    capped = cap is not None and len(tweets) >= cap
    if capped:
        log.warning(
            "scrape.cap_reached",
            handle=handle,
            cap=cap,
            hint="X serves only the latest posts; import the archive for older ones "
            "(parrotbot import-archive)",
        )
    log.info(
        "scrape.done",
        handle=handle,
        new_tweets=added,
        fetched=len(tweets),
        capped=capped,
        dataset=str(path),
    )
    return ScrapeResult(handle=handle, new_tweets=added, fetched=len(tweets), capped=capped)


def record_new_tweets(state: BotState, count: int) -> None:
    """Count tweets added since the last training (the auto-retrain trigger reads it)."""
    if count:
        state.redis.incrby(state.keys.new_tweets_since_training, count)
