"""The ready-tweet pool: filled off the posting path, never serving an old version."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import redis

from bot.config import FilterConfig, GenerationConfig
from bot.generation import GenerationService
from bot.hotload import CheckpointWatcher
from bot.platform.local import LocalPlatform
from bot.pool import TweetPool
from bot.posting import last_post_at, post_scheduled, refill_pool
from bot.state import BotState

# Post times are stored to the millisecond, rounded either way.
MS = timedelta(milliseconds=1)


@pytest.fixture
def state(redis_client: redis.Redis, account: str) -> BotState:
    return BotState(redis_client, account)


def test_take_returns_only_texts_of_the_serving_version(state: BotState) -> None:
    pool = TweetPool(state)
    pool.add("v1", ["old one", "old two"])
    pool.add("v2", ["new one"])
    assert pool.take("v2") == "new one"  # the v1 entries ahead of it are dropped
    assert pool.size() == 0
    assert pool.take("v2") is None


def test_refill_then_post_from_the_pool_and_a_swap_discards_it(
    tmp_path: Path, trained_checkpoints: Path, state: BotState
) -> None:
    shutil.copytree(trained_checkpoints, tmp_path / "checkpoints")
    model_dir = tmp_path / "checkpoints" / "char_rnn"
    service = GenerationService(GenerationConfig(max_length=60), FilterConfig())
    watcher = CheckpointWatcher(model_dir, "char_rnn", service, state)
    assert watcher.check()
    pool = TweetPool(state)

    added = refill_pool(state, service, pool, target=5, batch_size=8)
    assert added > 0 and pool.size() == added
    counts = state.filter_counts()
    assert counts["checked"] == 8 and counts["accepted"] == added
    assert refill_pool(state, service, pool, target=added, batch_size=8) == 0  # full enough

    platform = LocalPlatform(tmp_path / "local", handle="parrotbot")
    platform.prepare()
    waiting = pool.texts()
    assert last_post_at(state) is None
    before = datetime.now(UTC)
    tweet = post_scheduled(platform, state, service, pool)
    assert tweet is not None and tweet.text == waiting[0]
    # The time the scheduler resumes the post cadence from after a takeover.
    assert before - MS <= last_post_at(state) <= datetime.now(UTC) + MS
    assert pool.size() == added - 1

    # A new version goes into service: whatever the old one wrote is gone.
    newer = model_dir / "29990101T000000000000Z-dddddd"
    shutil.copytree(model_dir / service.current.version, newer)
    manifest = (newer / "manifest.json").read_text()
    (newer / "manifest.json").write_text(manifest.replace(service.current.version, newer.name))
    (model_dir / "LATEST").write_text(newer.name)
    assert watcher.check()
    assert pool.size() == 0


def test_a_post_whose_outcome_is_unknown_still_sets_the_cadence(
    tmp_path: Path, trained_checkpoints: Path, state: BotState, emulator, x_platform_factory
) -> None:
    """It may have gone out: a leader taking over must wait a whole interval, not post now."""
    from tests.support.x_emulator import CREATE, Fault

    shutil.copytree(trained_checkpoints, tmp_path / "checkpoints")
    service = GenerationService(GenerationConfig(max_length=60), FilterConfig())
    watcher = CheckpointWatcher(tmp_path / "checkpoints" / "char_rnn", "char_rnn", service, state)
    assert watcher.check()
    platform = x_platform_factory()
    emulator.inject(CREATE, Fault("lost_response"))
    before = datetime.now(UTC)

    assert post_scheduled(platform, state, service, TweetPool(state)) is None

    assert len(emulator.requests_to(CREATE)) == 1  # sent once, never retried
    assert state.recent_posted() == []  # not in the history: nobody knows it went out
    assert before - MS <= last_post_at(state) <= datetime.now(UTC) + MS
