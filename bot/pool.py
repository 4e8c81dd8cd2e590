"""A pool of ready, filtered posts in Redis, so a scheduled post never waits for a model.

Each entry carries the model version that wrote it. The pool is emptied when the serving
version changes, and `take` also drops any entry of another version it meets, so a post
from an old model can never slip out after a swap, even from a refill that raced it.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

import structlog

from bot.state import BotState

log = structlog.get_logger(__name__)


class TweetPool:
    def __init__(self, state: BotState) -> None:
        self.state = state

    @property
    def key(self) -> str:
        return self.state.keys.pool

    def size(self) -> int:
        return int(self.state.redis.llen(self.key))

    def add(self, version: str, texts: Sequence[str]) -> None:
        if texts:
            entries = [json.dumps({"version": version, "text": text}) for text in texts]
            self.state.redis.rpush(self.key, *entries)

    def take(self, version: str) -> str | None:
        """The oldest ready text written by `version`; entries of other versions are dropped."""
        while (raw := self.state.redis.lpop(self.key)) is not None:
            entry = json.loads(raw)
            if entry["version"] == version:
                return entry["text"]
            log.info("pool.discarded_stale", version=entry["version"], serving=version)
        return None

    def texts(self) -> list[str]:
        """Every text waiting in the pool (so a refill does not add the same one twice)."""
        return [json.loads(raw)["text"] for raw in self.state.redis.lrange(self.key, 0, -1)]

    def discard(self) -> None:
        self.state.redis.delete(self.key)
