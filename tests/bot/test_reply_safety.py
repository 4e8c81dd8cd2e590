"""The reply path against the X emulator: opt-outs, giving up on one bad mention, the lease's
fence, and reply records that expire."""

from __future__ import annotations

import json

import redis
from prometheus_client import generate_latest
from typer.testing import CliRunner

from bot.cli import app
from bot.config import RepliesConfig, load_config
from bot.generation import GenerationService
from bot.lease import Fence, Lease
from bot.ledger import ReplyClaim, ReplyLedger, ReplyOutcome
from bot.platform.base import Tweet
from bot.replies import poll_mentions
from bot.rules import Command, ReplyRules, opted_out_authors
from bot.state import BotState, connect
from tests.support.x_emulator import CREATE, Fault

DUPLICATE = "You are not allowed to create a Tweet with duplicate content."


def settings(**overrides) -> RepliesConfig:
    return RepliesConfig(author_cooldown_seconds=0, reconcile_grace_seconds=0, **overrides)


def outcome_of(state: BotState, post_id: str) -> str | None:
    return state.redis.hget(state.keys.reply(post_id), "outcome")


def test_an_opted_out_author_is_never_answered_until_they_opt_back_in(
    emulator, x_platform_factory, service: GenerationService
) -> None:
    alice, bob = emulator.add_user("alice"), emulator.add_user("bob")
    platform = x_platform_factory()
    state, me = platform.state, platform.me()

    stop = emulator.add_post(alice, "@ParrotBot STOP")
    ignored = emulator.add_post(alice, "@parrotbot what is wisdom?")
    bob_out = emulator.add_post(bob, "@parrotbot opt  out, please")
    not_a_word = emulator.add_post(bob, "@parrotbot stopwatch?")  # not the whole word: no opt-out
    assert poll_mentions(platform, state, service, me=me, settings=settings()) == [
        ReplyOutcome.OPTED_OUT,
        ReplyOutcome.SKIPPED_OPTED_OUT,
        ReplyOutcome.OPTED_OUT,
        ReplyOutcome.SKIPPED_OPTED_OUT,  # bob opted out one mention before
    ]
    assert {entry["handle"] for entry in opted_out_authors(state).values()} == {"alice", "bob"}
    assert opted_out_authors(state)[alice.id]["mention_id"] == stop.id
    for post in (stop, ignored, bob_out, not_a_word):
        assert emulator.replies_to(post.id) == []
    assert emulator.requests_to(CREATE) == []

    start = emulator.add_post(alice, "@parrotbot start")
    answered = emulator.add_post(alice, "@parrotbot and now?")
    assert poll_mentions(platform, state, service, me=me, settings=settings()) == [
        ReplyOutcome.OPTED_IN,
        ReplyOutcome.REPLIED,
    ]
    assert emulator.replies_to(start.id) == [] and len(emulator.replies_to(answered.id)) == 1
    assert set(opted_out_authors(state)) == {bob.id}


def test_an_opt_out_that_lands_during_generation_is_caught_by_the_claim(
    redis_client: redis.Redis, account: str
) -> None:
    """The opt-out is read in the same Redis step that records the intent."""
    state = BotState(redis_client, account)
    rules = ReplyRules(state, settings())
    ledger = ReplyLedger(state, keep_days=settings().keep_days)
    mention = Tweet(id="900", text="@parrotbot hi", author_id="77", author_handle="zed",
                    created_at="")  # fmt: skip
    assert not rules.is_opted_out(mention)  # what the early check saw
    redis_client.hset(state.keys.opted_out, "77", json.dumps({"handle": "zed"}))  # meanwhile
    assert ledger.claim(mention.id, "v1", rules.limits(mention)) is ReplyClaim.OPTED_OUT
    record = redis_client.hgetall(state.keys.reply("900"))
    assert record == {"outcome": "skipped_opted_out"}


def test_a_mention_x_keeps_refusing_is_given_up_and_the_others_are_answered(
    emulator, x_platform_factory, service: GenerationService
) -> None:
    alice, bob = emulator.add_user("alice"), emulator.add_user("bob")
    refused = emulator.add_post(alice, "@parrotbot hello")
    later = emulator.add_post(bob, "@parrotbot hello too")
    emulator.inject(CREATE, Fault("status", status=403, detail=DUPLICATE, times=3))
    platform = x_platform_factory()
    state, me = platform.state, platform.me()
    rules = settings(max_attempts=3)

    for attempt in (1, 2):
        assert poll_mentions(platform, state, service, me=me, settings=rules) == [
            ReplyOutcome.DEFERRED
        ]
        assert state.redis.hget(state.keys.reply(refused.id), "attempts") == str(attempt)
        assert state.cursor("mentions") is None
    assert poll_mentions(platform, state, service, me=me, settings=rules) == [
        ReplyOutcome.GAVE_UP,
        ReplyOutcome.REPLIED,
    ]
    record = state.redis.hgetall(state.keys.reply(refused.id))
    assert record["outcome"] == "gave_up" and DUPLICATE in record["last_reason"]
    assert "intent_at" not in record  # the claim was given back each time
    assert state.cursor("mentions") == later.id
    assert emulator.replies_to(refused.id) == [] and len(emulator.replies_to(later.id)) == 1
    metrics = generate_latest().decode()
    assert 'parrotbot_replies_total{outcome="gave_up"}' in metrics


def test_a_rate_limit_waits_without_spending_attempts(
    emulator, x_platform_factory, service: GenerationService
) -> None:
    alice = emulator.add_user("alice")
    mention = emulator.add_post(alice, "@parrotbot hello")
    platform = x_platform_factory()
    state, me = platform.state, platform.me()
    emulator.exhaust(CREATE, reset_in=3600)
    for _ in range(3):
        assert poll_mentions(
            platform, state, service, me=me, settings=settings(max_attempts=2)
        ) == [ReplyOutcome.DEFERRED]
    record = state.redis.hgetall(state.keys.reply(mention.id))
    assert "attempts" not in record and "outcome" not in record
    assert state.cursor("mentions") is None


def test_a_daemon_whose_lease_was_taken_posts_no_reply(
    emulator, x_platform_factory, service: GenerationService
) -> None:
    alice = emulator.add_user("alice")
    mention = emulator.add_post(alice, "@parrotbot hello")
    platform = x_platform_factory()
    state, me = platform.state, platform.me()
    ours = Lease(state.redis, state.keys.lease, "old-daemon", ttl_ms=60_000)
    assert ours.acquire()
    fence = ours.fence
    state.redis.set(state.keys.lease, "new-daemon")  # our lease expired and was taken over

    outcomes = poll_mentions(platform, state, service, me=me, settings=settings(), fence=fence)

    assert outcomes == [ReplyOutcome.FENCED]
    assert emulator.requests_to(CREATE) == [] and emulator.replies_to(mention.id) == []
    assert state.redis.hgetall(state.keys.reply(mention.id)) == {}  # nothing claimed
    assert state.cursor("mentions") is None  # the lease holder will answer it

    current = Fence(state.keys.lease, "new-daemon")
    assert poll_mentions(platform, state, service, me=me, settings=settings(), fence=current) == [
        ReplyOutcome.REPLIED
    ]


def test_every_reply_record_expires_after_keep_days(
    emulator, x_platform_factory, service: GenerationService
) -> None:
    bot, alice = emulator.bot, emulator.add_user("alice")
    answered = emulator.add_post(alice, "@parrotbot hello")
    skipped = emulator.add_post(bot, "@parrotbot note to self")
    opted = emulator.add_post(alice, "@parrotbot stop")
    platform = x_platform_factory()
    state, me = platform.state, platform.me()
    poll_mentions(platform, state, service, me=me, settings=settings(keep_days=2))
    for post in (answered, skipped, opted):
        ttl = state.redis.ttl(state.keys.reply(post.id))
        assert 0 < ttl <= 2 * 86400, (post.text, ttl)


def test_opt_outs_are_listed_removed_and_shown_in_status(write_config) -> None:
    path = write_config()
    config = load_config(path)
    state = BotState(connect(config), config.account)
    rules = ReplyRules(state, config.replies)

    mention = Tweet(id="901", text="@parrotbot stop", author_id="42", author_handle="Alice",
                    created_at="")  # fmt: skip
    rules.record_command(mention, Command.OPT_OUT)
    runner = CliRunner()

    listed = runner.invoke(app, ["opt-outs", "list", "-c", str(path)])
    assert listed.exit_code == 0, listed.output
    assert "@Alice" in listed.stdout and "42" in listed.stdout
    report = json.loads(runner.invoke(app, ["status", "--json", "-c", str(path)]).stdout)
    assert report["opted_out"] == ["Alice"]

    removed = runner.invoke(app, ["opt-outs", "remove", "@alice", "-c", str(path)])
    assert removed.exit_code == 0, removed.output
    assert opted_out_authors(state) == {}
    missing = runner.invoke(app, ["opt-outs", "remove", "nobody", "-c", str(path)])
    assert missing.exit_code == 1 and "nobody" in missing.output
