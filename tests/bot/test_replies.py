"""Replies: one per mention, recorded in Redis, reconciled after a crash mid-reply."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import redis

from bot.config import FilterConfig, GenerationConfig
from bot.generation import GenerationService
from bot.ledger import ReplyOutcome
from bot.platform.local import LocalPlatform
from bot.replies import answer_mention, poll_mentions
from tests.support.replies import add_mention as mention
from tests.support.replies import replies_to, serving


@pytest.fixture
def setup(tmp_path: Path, trained_checkpoints: Path, redis_client: redis.Redis, account: str):
    return serving(tmp_path, trained_checkpoints, redis_client, account)


def replies(platform: LocalPlatform, mention_id: str) -> int:
    return len(replies_to(platform, mention_id))


def test_each_mention_is_answered_once_and_the_cursor_follows(setup) -> None:
    platform, state, service = setup
    me = platform.me()
    mention(platform, "100")
    mention(platform, "101", author="parrotbot")  # the bot itself: never answered
    assert poll_mentions(platform, state, service, me=me) == [
        ReplyOutcome.REPLIED,
        ReplyOutcome.SKIPPED_SELF,
    ]
    assert state.cursor("mentions") == "101"
    assert poll_mentions(platform, state, service, me=me) == []
    state.redis.delete(state.keys.cursor("mentions"))  # even with the cursor lost…
    assert poll_mentions(platform, state, service, me=me) == [
        ReplyOutcome.ALREADY_REPLIED,
        ReplyOutcome.ALREADY_REPLIED,
    ]
    assert replies(platform, "100") == 1 and replies(platform, "101") == 0


def test_an_intent_without_outcome_is_reconciled_not_resent(setup) -> None:
    """A daemon that died after the reply went out but before recording it."""
    platform, state, service = setup
    me = platform.me()
    mention(platform, "200")
    (m,) = platform.mentions(None)
    state.redis.hset(state.keys.reply("200"), "intent_at", "1")
    platform.reply(m, "sent just before the crash")
    assert answer_mention(platform, state, service, m, me=me) is ReplyOutcome.RECONCILED
    assert replies(platform, "200") == 1
    assert state.redis.hget(state.keys.reply("200"), "tweet_id") == platform.find_reply("200").id


def test_an_intent_whose_reply_never_went_out_is_retried(setup) -> None:
    """A daemon that died after recording the intent but before the reply was sent."""
    platform, state, service = setup
    mention(platform, "300")
    (m,) = platform.mentions(None)
    state.redis.hset(state.keys.reply("300"), "intent_at", "1")
    outcome = answer_mention(platform, state, service, m, me=platform.me())
    assert outcome is ReplyOutcome.REPLIED
    assert replies(platform, "300") == 1


def test_no_model_means_no_reply_and_the_cursor_stays(setup, account: str) -> None:
    platform, state, _service = setup
    mention(platform, "400")
    idle = GenerationService(GenerationConfig(), FilterConfig())
    assert poll_mentions(platform, state, idle, me=platform.me()) == []
    assert state.cursor("mentions") is None


def test_the_reply_is_written_after_reading_the_mention(setup) -> None:
    from tests.bot.test_generation import Reading

    platform, state, service = setup
    loaded = service.current
    service.swap(dataclasses.replace(loaded, model=Reading(loaded.model)))
    with platform.mentions_path.open("a") as f:
        f.write('{"id": "500", "author": "alice", "text": "@ParrotBot is time money?"}\n')
    assert poll_mentions(platform, state, service, me=platform.me()) == [ReplyOutcome.REPLIED]
    assert [call["context"] for call in service.current.model.calls] == ["is time money?"]
    assert "is time money?" not in platform.find_reply("500").text
