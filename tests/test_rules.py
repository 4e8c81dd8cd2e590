"""X's rules in code: only summoned mentions, never self, one reply each, caps and cooldowns."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import redis

from bot.config import FilterConfig, GenerationConfig, RepliesConfig
from bot.generation import GenerationService
from bot.hotload import CheckpointWatcher
from bot.platform.base import Tweet
from bot.replies import ReplyOutcome, poll_mentions
from bot.rules import Claim, ReplyGuard, is_summoned
from bot.state import BotState
from tests.x_emulator import CREATE


def tweet(text: str, *, author_id: str = "7", conversation_id: str | None = None) -> Tweet:
    return Tweet(id="100", text=text, author_id=author_id, author_handle="someone",
                 created_at="", conversation_id=conversation_id)  # fmt: skip


@pytest.mark.parametrize(
    ("text", "summoned"),
    [
        ("@parrotbot hello", True),
        ("hey @ParrotBot, what now?", True),
        ("＠parrotbot fullwidth", True),
        ("@parrotbotfan is someone else", False),
        ("mail parrotbot@example.com", False),
        ("@alice nice one", False),
        ("no mention at all", False),
    ],
)
def test_summoned_means_the_text_names_the_bot(text: str, summoned: bool) -> None:
    assert is_summoned(tweet(text), "parrotbot") is summoned


def test_the_guard_caps_conversations_and_cools_authors_down(
    redis_client: redis.Redis, account: str
) -> None:
    state = BotState(redis_client, account)
    guard = ReplyGuard(state, RepliesConfig(per_conversation_cap=2, author_cooldown_seconds=60))

    def mention(mention_id: str, author: str, conversation: str) -> Tweet:
        return Tweet(id=mention_id, text="@parrotbot", author_id=author, author_handle=author,
                     created_at="", conversation_id=conversation)  # fmt: skip

    assert guard.claim(mention("1", "a", "c1"), "v1") is Claim.CLAIMED
    assert guard.claim(mention("1", "a", "c1"), "v1") is Claim.INTENT_EXISTS
    assert guard.claim(mention("2", "b", "c1"), "v1") is Claim.CLAIMED
    assert guard.claim(mention("3", "c", "c1"), "v1") is Claim.CONVERSATION_CAP
    assert guard.claim(mention("4", "a", "c2"), "v1") is Claim.AUTHOR_COOLDOWN
    assert redis_client.hget(state.keys.reply("4"), "outcome") == "skipped_author_cooldown"

    guard.release(mention("2", "b", "c1"))  # that reply surely did not go out
    assert guard.claim(mention("5", "d", "c1"), "v1") is Claim.CLAIMED
    assert guard.claim(mention("6", "b", "c3"), "v1") is Claim.CLAIMED  # b's cooldown was undone


@pytest.fixture
def service(tmp_path: Path, trained_checkpoints: Path, redis_client: redis.Redis, account: str):
    shutil.copytree(trained_checkpoints, tmp_path / "checkpoints")
    service = GenerationService(GenerationConfig(max_length=60), FilterConfig())
    watcher = CheckpointWatcher(tmp_path / "checkpoints" / "char_rnn", "char_rnn", service,
                                BotState(redis_client, account))  # fmt: skip
    assert watcher.check()
    return service


def test_replies_to_non_mentions_to_self_and_beyond_the_cap_are_never_sent(
    emulator, x_platform_factory, service: GenerationService
) -> None:
    bot, alice, bob, carol = (
        emulator.bot,
        *(emulator.add_user(n) for n in ("alice", "bob", "carol")),
    )
    summoned = emulator.add_post(alice, "@parrotbot what is wisdom?")
    earlier = emulator.add_post(bot, "an earlier post of the bot")
    unsummoned = emulator.add_post(bob, "nice one", reply_to=earlier)  # in the feed, no mention
    own = emulator.add_post(bot, "@parrotbot note to self")
    root = emulator.add_post(carol, "@parrotbot let us talk")
    thread = [root] + [
        emulator.add_post(carol, f"@parrotbot and another thing {n}", reply_to=root)
        for n in range(4)
    ]
    platform = x_platform_factory(replies={"per_conversation_cap": 3})
    me = platform.me()

    outcomes = poll_mentions(platform, platform.state, service, me=me,
                             settings=RepliesConfig(per_conversation_cap=3,
                                                    reconcile_grace_seconds=0,
                                                    author_cooldown_seconds=0))  # fmt: skip

    assert outcomes.count(ReplyOutcome.REPLIED) == 4
    assert ReplyOutcome.SKIPPED_NOT_SUMMONED in outcomes
    assert ReplyOutcome.SKIPPED_SELF in outcomes
    assert outcomes.count(ReplyOutcome.SKIPPED_CONVERSATION_CAP) == 2
    assert len(emulator.replies_to(summoned.id)) == 1
    assert emulator.replies_to(unsummoned.id) == [] and emulator.replies_to(own.id) == []
    bot_replies = [r for p in thread for r in emulator.replies_to(p.id) if r.author_id == bot.id]
    assert len(bot_replies) == 3
    posts = emulator.requests_to(CREATE)
    assert len(posts) == 4 and all(r.status == 201 for r in posts)  # X never had to refuse
    for request in posts:
        assert "@" not in request.body["text"] and "<user>" not in request.body["text"]

    # Polling again answers nothing twice (the cursor moved, and the records say so).
    again = poll_mentions(platform, platform.state, service, me=me)
    assert again == [] and len(emulator.requests_to(CREATE)) == 4
