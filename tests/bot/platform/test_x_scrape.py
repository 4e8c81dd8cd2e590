"""Scraping X through tweepy against the emulator: minimal calls, exclude flags, cursor, the cap."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import redis
from structlog.testing import capture_logs

from bot.scrape import scrape_target
from tests.support.x_emulator import TIMELINE, USER_BY_NAME
from training.dataset import dataset_path


@pytest.fixture
def scrape_setup(emulator, x_platform_factory, tmp_path: Path):
    target = emulator.add_user("target")
    platform = x_platform_factory()
    data_dir = tmp_path / "volume"

    def scrape(using=None):
        using = using or platform
        return scrape_target(using, using.state, data_dir, "target")

    return target, platform, data_dir, scrape


@pytest.mark.parametrize("new", [0, 1, 99, 100, 101, 250, 3200])
def test_a_scrape_makes_ceil_new_over_100_calls_and_one_when_nothing_is_new(
    emulator, scrape_setup, new: int
) -> None:
    target, _platform, data_dir, scrape = scrape_setup
    for i in range(7):
        emulator.add_post(target, f"old tweet {i}")
    assert scrape().new_tweets == 7
    before = len(emulator.requests_to(TIMELINE))
    for i in range(new):
        emulator.add_post(target, f"new tweet {i}")

    result = scrape()

    calls = len(emulator.requests_to(TIMELINE)) - before
    assert calls == max(1, math.ceil(new / 100))
    assert result.new_tweets == new and result.capped == (new >= 3200)  # reaching it is reported
    lines = dataset_path(data_dir, "target").read_text().splitlines()
    assert len(lines) == 7 + new and len({json.loads(line)["id"] for line in lines}) == 7 + new


def test_exclude_flags_reach_the_wire_and_a_restart_continues_from_the_cursor(
    emulator, scrape_setup, x_platform_factory, redis_client: redis.Redis
) -> None:
    target, platform, data_dir, scrape = scrape_setup
    other = emulator.add_user("other")
    theirs = emulator.add_post(other, "a post by someone else")
    for i in range(5):
        emulator.add_post(target, f"own words {i} &amp; more")
    emulator.add_post(target, "RT @other: a post by someone else", retweet_of=theirs)
    emulator.add_post(target, "@other I agree", reply_to=theirs)
    assert scrape().new_tweets == 5
    first = emulator.requests_to(TIMELINE)
    assert all(r.query["exclude"] == "retweets,replies" for r in first)
    assert all(r.query["max_results"] == "100" for r in first)
    cursor = platform.state.cursor("timeline:target")

    for i in range(3):
        emulator.add_post(target, f"later {i}")
    restarted = x_platform_factory()  # a new process: only Redis remembers
    lookups = len(emulator.requests_to(USER_BY_NAME))
    assert scrape(restarted).new_tweets == 3
    resumed = emulator.requests_to(TIMELINE)[len(first) :]
    assert [r.query.get("since_id") for r in resumed] == [cursor]
    assert len(emulator.requests_to(USER_BY_NAME)) == lookups  # the id was cached

    records = [json.loads(x) for x in dataset_path(data_dir, "target").read_text().splitlines()]
    assert [r["text"] for r in records][:2] == ["own words 0 &amp; more", "own words 1 &amp; more"]
    assert not any(r["is_retweet"] or r["is_reply"] for r in records)
    assert set(records[0]) == {"id", "text", "created_at", "is_reply", "is_quote",
                               "is_retweet", "lang"}  # fmt: skip
    assert int(redis_client.get(platform.state.keys.new_tweets_since_training)) == 8


def test_the_3200_cap_is_respected_and_reported(emulator, scrape_setup) -> None:
    target, _platform, data_dir, scrape = scrape_setup
    for i in range(3500):
        emulator.add_post(target, f"tweet number {i}")
    with capture_logs() as logs:
        result = scrape()
    assert result.capped and result.new_tweets == 3200
    assert len(emulator.requests_to(TIMELINE)) == 32
    assert any(e["event"] == "scrape.cap_reached" and e["cap"] == 3200 for e in logs)
    lines = dataset_path(data_dir, "target").read_text().splitlines()
    assert json.loads(lines[0])["text"] == "tweet number 300"  # the oldest 300 are out of reach
