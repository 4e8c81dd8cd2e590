"""Scraping appends only new tweets, deduplicated, and keeps its cursor in Redis."""

from __future__ import annotations

import json
from pathlib import Path

import redis

from bot.platform.local import LocalPlatform
from bot.scrape import scrape_target
from bot.state import BotState
from training.dataset import dataset_path


def test_scrape_is_incremental_and_deduplicated(
    tmp_path: Path, redis_client: redis.Redis, account: str
) -> None:
    platform = LocalPlatform(tmp_path / "local", handle="parrotbot")
    platform.prepare()
    timeline = platform.timelines_dir / "someone.jsonl"
    timeline.write_text("".join(json.dumps({"id": str(i), "text": f"t{i}"}) + "\n" for i in (1, 2)))
    state = BotState(redis_client, account)

    assert scrape_target(platform, state, tmp_path, "someone").new_tweets == 2
    assert scrape_target(platform, state, tmp_path, "someone").new_tweets == 0
    with timeline.open("a") as f:
        f.write(json.dumps({"id": "3", "text": "t3"}) + "\n")
    state.redis.delete(state.keys.cursor("timeline:someone"))  # a lost cursor re-reads…
    assert scrape_target(platform, state, tmp_path, "someone").new_tweets == 1  # …but no dupes

    lines = dataset_path(tmp_path, "someone").read_text().splitlines()
    assert [json.loads(line)["id"] for line in lines] == ["1", "2", "3"]
    assert state.cursor("timeline:someone") == "3"
    assert int(state.redis.get(state.keys.new_tweets_since_training)) == 3
