"""The offline platform: X's role played by JSONL files under `data_dir/local/`.

- `timelines/<handle>.jsonl`: a target's tweets, `{"id", "text", "created_at"}` per line.
- `mentions.jsonl`: mentions of the bot, `{"id", "author", "text"}` per line; anyone may
  append while the daemon runs (`parrotbot mention` does it for you). Optional
  `in_reply_to_tweet_id`, `quoted_tweet_id` and `retweeted_tweet_id` play X's
  `referenced_tweets`.
- `outbox.jsonl`: what the bot posted, `{"id", "text", "created_at", "author",
  "in_reply_to_tweet_id"}` per line.

Ids are decimal strings ordered as numbers, like X's, so `since_id` cursors work the same.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import random
import shutil
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import structlog

from bot.platform.base import PlatformError, Tweet, User, tweet_id_key

log = structlog.get_logger(__name__)

_TWITTER_EPOCH_MS = 1288834974657


def user_id_for(handle: str) -> str:
    """A stable numeric id per handle, so local users look like X users."""
    digest = hashlib.sha256(handle.lower().encode()).hexdigest()
    return str(int(digest[:15], 16))


def new_tweet_id() -> str:
    """A snowflake-shaped id: time-ordered, unique enough across processes."""
    millis = int(time.time() * 1000) - _TWITTER_EPOCH_MS
    return str((millis << 22) | random.getrandbits(22))


def now_iso() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class LocalPlatform:
    timeline_cap: int | None = None

    def __init__(self, root: Path, handle: str, seed_timelines_dir: Path | None = None) -> None:
        self.root = root
        self.handle = handle
        self.seed_timelines_dir = seed_timelines_dir
        self._id_lock = threading.Lock()
        self._last_id = 0

    @property
    def timelines_dir(self) -> Path:
        return self.root / "timelines"

    @property
    def mentions_path(self) -> Path:
        return self.root / "mentions.jsonl"

    @property
    def outbox_path(self) -> Path:
        return self.root / "outbox.jsonl"

    def prepare(self) -> None:
        """Create the folders and copy any shipped sample timelines not yet present."""
        self.timelines_dir.mkdir(parents=True, exist_ok=True)
        self.mentions_path.touch(exist_ok=True)
        if self.seed_timelines_dir and self.seed_timelines_dir.is_dir():
            for source in sorted(self.seed_timelines_dir.glob("*.jsonl")):
                destination = self.timelines_dir / source.name
                if not destination.exists():
                    shutil.copyfile(source, destination)
                    log.info("local.timeline_seeded", handle=source.stem, source=str(source))

    # --- reads ---------------------------------------------------------------------
    def me(self) -> User:
        return User(id=user_id_for(self.handle), handle=self.handle)

    def lookup_user(self, handle: str) -> User:
        if not (self.timelines_dir / f"{handle}.jsonl").exists():
            raise PlatformError(f"no local timeline for @{handle} in {self.timelines_dir}")
        return User(id=user_id_for(handle), handle=handle)

    def timeline(self, user: User, since_id: str | None) -> list[Tweet]:
        path = self.timelines_dir / f"{user.handle}.jsonl"
        tweets = [self._tweet(record, default_author=user.handle) for record in _records(path)]
        return _newer_than(tweets, since_id)

    def mentions(self, since_id: str | None) -> list[Tweet]:
        tweets = [self._tweet(record) for record in _records(self.mentions_path)]
        return _newer_than(tweets, since_id)

    def find_reply(self, mention_id: str) -> Tweet | None:
        for record in _records(self.outbox_path):
            if record.get("in_reply_to_tweet_id") == mention_id:
                return self._tweet(record, default_author=self.handle)
        return None

    def find_post(self, text: str, *, since_id: str | None = None) -> Tweet | None:
        floor = tweet_id_key(since_id) if since_id else -1
        found = None
        for record in _records(self.outbox_path):
            if record.get("in_reply_to_tweet_id") or record.get("text") != text:
                continue
            if tweet_id_key(str(record["id"])) > floor:
                found = self._tweet(record, default_author=self.handle)  # the newest wins
        return found

    # --- writes --------------------------------------------------------------------
    def post(self, text: str) -> Tweet:
        return self._append_outbox(text, in_reply_to=None)

    def reply(self, to: Tweet, text: str) -> Tweet:
        return self._append_outbox(text, in_reply_to=to)

    def _append_outbox(self, text: str, in_reply_to: Tweet | None) -> Tweet:
        tweet = Tweet(
            id=self._next_id(),
            text=text,
            author_id=user_id_for(self.handle),
            author_handle=self.handle,
            created_at=now_iso(),
            in_reply_to_tweet_id=in_reply_to.id if in_reply_to else None,
            conversation_id=(in_reply_to.conversation_id or in_reply_to.id)
            if in_reply_to
            else None,
            is_reply=in_reply_to is not None,
        )
        record = {
            "id": tweet.id,
            "text": tweet.text,
            "created_at": tweet.created_at,
            "author": self.handle,
            "in_reply_to_tweet_id": tweet.in_reply_to_tweet_id,
        }
        append_line(self.outbox_path, json.dumps(record, ensure_ascii=False))
        return tweet

    def _next_id(self) -> str:
        with self._id_lock:
            candidate = max(int(new_tweet_id()), self._last_id + 1)
            self._last_id = candidate
            return str(candidate)

    def _tweet(self, record: dict[str, object], default_author: str | None = None) -> Tweet:
        author = str(record.get("author") or default_author or "unknown")
        in_reply_to = record.get("in_reply_to_tweet_id")
        return Tweet(
            id=str(record["id"]),
            text=str(record.get("text", "")),
            author_id=user_id_for(author),
            author_handle=author,
            created_at=str(record.get("created_at") or now_iso()),
            in_reply_to_tweet_id=str(in_reply_to) if in_reply_to else None,
            conversation_id=str(record.get("conversation_id") or record["id"]),
            is_reply=bool(in_reply_to),
            is_quote=bool(record.get("quoted_tweet_id")),
            is_retweet=bool(record.get("retweeted_tweet_id")),
            lang=str(record["lang"]) if record.get("lang") else None,
        )


def append_line(path: Path, line: str) -> None:
    """Append one whole line durably; a lock keeps lines from two processes apart."""
    path.parent.mkdir(parents=True, exist_ok=True)
    data = (line.rstrip("\n") + "\n").encode("utf-8")
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


def _records(path: Path) -> Iterator[dict[str, object]]:
    """Parse a JSONL file, skipping (and naming) bad lines rather than stopping the bot.

    A last line without its newline is still being written by someone: it is left for
    the next read instead of being taken half-done.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return
    lines = text.split("\n")
    complete = lines[:-1]  # the part after the last newline is unfinished (or empty)
    for number, line in enumerate(complete, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            if not isinstance(record, dict) or not str(record.get("id", "")).isdigit():
                raise ValueError('each line needs an object with a numeric "id"')
        except ValueError as exc:
            log.warning("local.bad_line", file=str(path), line=number, error=str(exc))
            continue
        yield record


def _newer_than(tweets: list[Tweet], since_id: str | None) -> list[Tweet]:
    floor = tweet_id_key(since_id) if since_id else -1
    newer = {tweet.id: tweet for tweet in tweets if tweet_id_key(tweet.id) > floor}
    return sorted(newer.values(), key=lambda tweet: tweet_id_key(tweet.id))
