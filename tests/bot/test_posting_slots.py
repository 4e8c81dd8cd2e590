"""Scheduled posts are exactly-once per slot: intent before the POST, reconciled when unknown.

Against the X emulator over HTTP (its `lost_response` fault creates the post and drops the
answer, as a cut connection does) and against the local platform's outbox. A "crash" is what
a daemon that died between the POST and the record leaves behind: the slot's intent in Redis
and the post on the platform, nothing else; the next leader is a fresh set of objects.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
import redis

import bot.ledger.slots
from bot.config import FilterConfig, GenerationConfig
from bot.generation import GenerationService
from bot.hotload import CheckpointWatcher
from bot.lease import Fence, Lease
from bot.ledger import PostLedger, SlotClaim, SlotOutcome
from bot.platform.base import Tweet
from bot.platform.local import LocalPlatform
from bot.pool import TweetPool
from bot.posting import post_scheduled
from bot.state import BotState
from tests.support.daemon_process import read_jsonl
from tests.support.x_emulator import CREATE, TIMELINE, Fault

FIRST, SECOND = "Early to bed, early to rise.", "A penny saved is a penny earned."


@pytest.fixture
def state(redis_client: redis.Redis, account: str) -> BotState:
    return BotState(redis_client, account)


@pytest.fixture
def service(tmp_path: Path, trained_checkpoints: Path, state: BotState) -> GenerationService:
    shutil.copytree(trained_checkpoints, tmp_path / "checkpoints")
    service = GenerationService(GenerationConfig(max_length=60), FilterConfig())
    watcher = CheckpointWatcher(tmp_path / "checkpoints" / "char_rnn", "char_rnn", service, state)
    assert watcher.check()
    return service


def ready(state: BotState, service: GenerationService, *texts: str) -> TweetPool:
    """A pool holding exactly `texts`, so each firing's text is known."""
    pool = TweetPool(state)
    pool.add(service.current.version, list(texts))
    return pool


def history(state: BotState) -> list[tuple[str, str]]:
    return [(f["tweet_id"], f["text"]) for f in reversed(state.recent_posted(50))]


def read_outbox_texts(platform: LocalPlatform) -> list[str]:
    return [record["text"] for record in read_jsonl(platform.outbox_path)]


def bot_posts(emulator) -> list:
    with emulator.lock:
        return [p for p in emulator.world.posts.values() if p.author_id == emulator.bot.id]


def test_x_unknown_outcome_is_reconciled_and_recorded_once(
    state: BotState, service: GenerationService, emulator, x_platform_factory
) -> None:
    platform = x_platform_factory()
    pool = ready(state, service, FIRST, SECOND)
    emulator.inject(CREATE, Fault("lost_response"))

    assert post_scheduled(platform, state, service, pool, reconcile_grace_seconds=0) is None
    (lost,) = bot_posts(emulator)  # X has it; the bot does not know
    slot = PostLedger(state).current()
    assert slot.is_open and slot.text == FIRST

    # The next firing: the open slot is looked up before anything is posted.
    tweet = post_scheduled(platform, state, service, pool, reconcile_grace_seconds=0)
    assert PostLedger(state).read(slot.id).outcome == SlotOutcome.RECONCILED
    assert PostLedger(state).read(slot.id).tweet_id == lost.id
    assert tweet is not None and tweet.text == SECOND  # then the firing's own slot
    assert history(state) == [(lost.id, FIRST), (tweet.id, SECOND)]
    assert [p.text for p in bot_posts(emulator)] == [FIRST, SECOND]
    assert len(emulator.requests_to(CREATE)) == 2  # FIRST was never sent again

    # Reconciling again finds nothing open: the lost post stays recorded once.
    post_scheduled(platform, state, service, pool, reconcile_grace_seconds=0)
    assert [text for _id, text in history(state)].count(FIRST) == 1


def test_x_crash_after_the_post_does_not_post_twice_for_the_slot(
    account: str,
    redis_url: str,
    state: BotState,
    service: GenerationService,
    emulator,
    x_platform_factory,
) -> None:
    emulator.inject(CREATE, Fault("lost_response"))
    first_leader = x_platform_factory()
    post_scheduled(first_leader, state, service, ready(state, service, FIRST))
    # ...and the daemon dies. A new leader (its own client, platform and pool) takes over;
    # the first firing comes within the grace: the slot waits, nothing is read or sent.
    new_state = BotState(redis.Redis.from_url(redis_url, decode_responses=True), account)
    new_leader = x_platform_factory()
    pool = ready(new_state, service, SECOND)
    reads = len(emulator.requests_to(TIMELINE))
    assert post_scheduled(new_leader, new_state, service, pool) is None
    assert len(emulator.requests_to(TIMELINE)) == reads
    assert len(emulator.requests_to(CREATE)) == 1

    post_scheduled(new_leader, new_state, service, pool, reconcile_grace_seconds=0)
    assert [p.text for p in bot_posts(emulator)].count(FIRST) == 1
    assert [text for _id, text in history(new_state)] == [FIRST, SECOND]


def test_a_fenced_intent_posts_nothing(
    tmp_path: Path, state: BotState, service: GenerationService, emulator, x_platform_factory
) -> None:
    lease = Lease(state.redis, state.keys.lease, "the-new-leader", ttl_ms=60_000)
    assert lease.acquire()
    stale = Fence(state.keys.lease, "a-daemon-that-lost-its-lease")
    platform = x_platform_factory()
    pool = ready(state, service, FIRST)
    assert post_scheduled(platform, state, service, pool, fence=stale) is None
    assert emulator.requests_to(CREATE) == [] and bot_posts(emulator) == []
    assert not PostLedger(state).current().intent_at  # no intent recorded either

    local = LocalPlatform(tmp_path / "local", handle="parrotbot")
    local.prepare()
    assert post_scheduled(local, state, service, ready(state, service, FIRST), fence=stale) is None
    assert read_outbox_texts(local) == [] and history(state) == []

    # The holder's own fence posts.
    tweet = post_scheduled(local, state, service, ready(state, service, FIRST), fence=lease.fence)
    assert tweet is not None and read_outbox_texts(local) == [FIRST]


def test_local_crash_after_the_post_is_reconciled_from_the_outbox(
    tmp_path: Path, state: BotState, service: GenerationService
) -> None:
    platform = LocalPlatform(tmp_path / "local", handle="parrotbot")
    platform.prepare()
    ledger = PostLedger(state)
    slot = ledger.current()
    # What a daemon that died between the POST and the record leaves behind.
    ledger.claim(slot, FIRST, service.current.version)
    posted = platform.post(FIRST)

    tweet = post_scheduled(
        platform, state, service, ready(state, service, SECOND), reconcile_grace_seconds=0
    )
    assert ledger.read(slot.id).outcome == SlotOutcome.RECONCILED
    assert ledger.read(slot.id).tweet_id == posted.id
    assert tweet is not None and read_outbox_texts(platform) == [FIRST, SECOND]
    assert history(state) == [(posted.id, FIRST), (tweet.id, SECOND)]


def test_local_crash_before_the_post_posts_the_slot_once(
    tmp_path: Path, state: BotState, service: GenerationService
) -> None:
    platform = LocalPlatform(tmp_path / "local", handle="parrotbot")
    platform.prepare()
    ledger = PostLedger(state)
    slot = ledger.current()
    ledger.claim(slot, FIRST, service.current.version)  # died before the POST

    tweet = post_scheduled(
        platform, state, service, ready(state, service, SECOND), reconcile_grace_seconds=0
    )
    # Not on the platform: the slot's own text goes out, once, and is recorded.
    assert tweet is not None and tweet.text == FIRST
    record = ledger.read(slot.id)
    assert record.outcome == SlotOutcome.POSTED and record.attempts == 2
    assert read_outbox_texts(platform) == [FIRST] and history(state) == [(tweet.id, FIRST)]


def test_a_slot_closed_in_the_millisecond_it_opened_still_opens_the_next(
    state: BotState, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A slot's id is the cadence point it follows, and closing it writes the next point. An
    intent (or a post) in the very millisecond the slot opened must still move the point on:
    written back as the same text, the closed slot would stay the current one, and every
    later firing would be refused as `slot_closed`."""
    frozen = SimpleNamespace(time=lambda: 1_800_000_000.0)
    monkeypatch.setattr(bot.ledger.slots, "time", frozen)
    ledger = PostLedger(state)
    for outcome, text in ((SlotOutcome.RECONCILED, FIRST), (SlotOutcome.POSTED, SECOND)):
        slot = ledger.current()
        claim, claimed = ledger.claim(slot, text, "v1")
        assert claim is SlotClaim.CLAIMED
        tweet = Tweet(id=f"t-{outcome}", text=text, author_id="1", author_handle="parrotbot",
                      created_at="")  # fmt: skip
        ledger.close(claimed, tweet, outcome)
        following = ledger.current()
        assert following.id != slot.id and not following.outcome, outcome
        assert float(following.id) > float(slot.id)
