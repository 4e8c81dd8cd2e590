"""X's rules in code: only summoned mentions, never self, one reply each, caps and cooldowns."""

from __future__ import annotations

import dataclasses

import pytest
import redis

from bot.config import RepliesConfig
from bot.generation import GenerationService
from bot.ledger import ReplyClaim, ReplyLedger, ReplyOutcome
from bot.platform.base import Tweet
from bot.replies import poll_mentions
from bot.rules import ReplyRules, is_summoned
from bot.state import BotState
from tests.support.x_emulator import CREATE


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


def test_the_claim_caps_conversations_and_cools_authors_down(
    redis_client: redis.Redis, account: str
) -> None:
    state = BotState(redis_client, account)
    settings = RepliesConfig(per_conversation_cap=2, author_cooldown_seconds=60)
    rules, ledger = ReplyRules(state, settings), ReplyLedger(state, keep_days=settings.keep_days)

    def mention(mention_id: str, author: str, conversation: str) -> Tweet:
        return Tweet(id=mention_id, text="@parrotbot", author_id=author, author_handle=author,
                     created_at="", conversation_id=conversation)  # fmt: skip

    def claim(m: Tweet) -> ReplyClaim:
        """The ledger's claim, with the limits the rules name for `m`."""
        return ledger.claim(m.id, "v1", rules.limits(m))

    assert claim(mention("1", "a", "c1")) is ReplyClaim.CLAIMED
    assert claim(mention("1", "a", "c1")) is ReplyClaim.INTENT_EXISTS
    assert claim(mention("2", "b", "c1")) is ReplyClaim.CLAIMED
    assert claim(mention("3", "c", "c1")) is ReplyClaim.CONVERSATION_CAP
    assert claim(mention("4", "a", "c2")) is ReplyClaim.AUTHOR_COOLDOWN
    assert redis_client.hget(state.keys.reply("4"), "outcome") == "skipped_author_cooldown"

    released = mention("2", "b", "c1")
    ledger.release(released.id, rules.limits(released))  # that reply surely did not go out
    assert claim(mention("5", "d", "c1")) is ReplyClaim.CLAIMED
    assert claim(mention("6", "b", "c3")) is ReplyClaim.CLAIMED  # b's cooldown was undone


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


def test_retweets_and_quotes_without_a_mention_of_their_own_are_never_answered(
    emulator, x_platform_factory, service: GenerationService
) -> None:
    """X serves retweets ("RT @parrotbot: …") in the mentions timeline; they are no summons."""
    bot, alice, bob, carol, dave = (
        emulator.bot,
        *(emulator.add_user(n) for n in ("alice", "bob", "carol", "dave")),
    )
    own = emulator.add_post(bot, "an early bird gets the worm")
    summons = emulator.add_post(carol, "@parrotbot is time money?")
    retweet_of_bot = emulator.add_retweet(alice, own)
    retweet_of_summons = emulator.add_retweet(bob, summons)
    quiet_quote = emulator.add_quote(dave, own, "so true", reply_to=own)  # in the feed: a reply
    asking_quote = emulator.add_quote(alice, own, "@parrotbot and the late one?")
    plain_quote = emulator.add_quote(bob, own, "ha, so true")  # X serves quotes of the bot's posts
    platform = x_platform_factory()
    me = platform.me()

    (fetched,) = [m for m in platform.mentions(None) if m.id == retweet_of_bot.id]
    assert fetched.is_retweet and fetched.text.startswith("RT @parrotbot: ")
    feed = {m.id for m in platform.mentions(None)}
    assert feed >= {quiet_quote.id, asking_quote.id, plain_quote.id}

    outcomes = poll_mentions(platform, platform.state, service, me=me,
                             settings=RepliesConfig(author_cooldown_seconds=0))  # fmt: skip

    recorded = {
        post.id: platform.state.redis.hget(platform.state.keys.reply(post.id), "outcome")
        for post in (
            summons, retweet_of_bot, retweet_of_summons, quiet_quote, plain_quote, asking_quote
        )
    }
    assert recorded == {
        summons.id: "replied",
        retweet_of_bot.id: "skipped_retweet",
        retweet_of_summons.id: "skipped_retweet",
        quiet_quote.id: "skipped_not_summoned",
        plain_quote.id: "skipped_not_summoned",
        asking_quote.id: "replied",
    }
    assert outcomes.count(ReplyOutcome.REPLIED) == 2
    for post in (retweet_of_bot, retweet_of_summons, quiet_quote, plain_quote):
        assert emulator.replies_to(post.id) == []
    assert len(emulator.requests_to(CREATE)) == 2


@pytest.mark.parametrize(
    ("text", "is_retweet", "summoned"),
    [
        ("RT @parrotbot: an early bird", False, False),  # the text form alone is enough
        ("RT @alice: @parrotbot hi", False, False),
        ("@parrotbot hi", True, False),  # the reference alone is enough
        ("rt @parrotbot: lowercase is still a retweet", False, False),
        ("@parrotbot RT @alice: that is a quote of yours", False, True),
    ],
)
def test_a_retweet_is_never_a_summons(text: str, is_retweet: bool, summoned: bool) -> None:
    mention = dataclasses.replace(tweet(text), is_retweet=is_retweet)
    assert is_summoned(mention, "parrotbot") is summoned


def test_a_quote_summons_only_with_its_own_words() -> None:
    quote = dataclasses.replace(
        tweet("\u201c@parrotbot: an early bird\u201d so true https://t.co/abc"), is_quote=True
    )
    assert not is_summoned(quote, "parrotbot")
    asking = dataclasses.replace(
        tweet("@parrotbot why \u201cearly\u201d? https://t.co/abc"), is_quote=True
    )
    assert is_summoned(asking, "parrotbot")
