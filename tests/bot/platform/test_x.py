"""The X client over real HTTP: base URL, auth, retries, lost answers, rate limits, dry run."""

from __future__ import annotations

import io
import json
import logging

import pytest
import structlog

from bot.logging import configure_logging
from bot.platform.base import (
    AuthError,
    Forbidden,
    OutcomeUnknown,
    RateLimited,
    ReplyNotAllowed,
    ServerError,
)
from tests.support.configs import X_SECRETS
from tests.support.x_emulator import CREATE, ME, MENTIONS, TIMELINE, Fault


@pytest.fixture
def alice(emulator):
    return emulator.add_user("alice")


def test_requests_reach_the_base_url_signed_with_oauth_and_with_a_timeout(
    emulator, alice, x_platform_factory
) -> None:
    emulator.add_post(alice, "one")
    platform = x_platform_factory(x={"read_timeout_seconds": 0.5, "read_attempts": 1})
    assert platform.me().handle == "parrotbot"
    assert [t.text for t in platform.timeline(platform.lookup_user("alice"), None)] == ["one"]
    (me_request,) = emulator.requests_to(ME)
    auth = me_request.headers["Authorization"]
    assert auth.startswith("OAuth ") and "oauth_signature=" in auth
    assert f'oauth_consumer_key="{X_SECRETS["CONSUMER_KEY"]}"' in auth

    emulator.inject(TIMELINE, Fault("latency", seconds=2.0))
    with pytest.raises(ServerError, match="Timeout"):
        platform.timeline(platform.lookup_user("alice"), None)


def test_reads_retry_server_errors_then_give_up(emulator, alice, x_platform_factory) -> None:
    emulator.add_post(alice, "still here")
    platform = x_platform_factory(x={"read_attempts": 3})
    user = platform.lookup_user("alice")
    emulator.inject(TIMELINE, Fault("status", status=503, times=2))
    assert [t.text for t in platform.timeline(user, None)] == ["still here"]
    assert [r.status for r in emulator.requests_to(TIMELINE)] == [503, 503, 200]

    emulator.inject(TIMELINE, Fault("status", status=500, times=3))
    with pytest.raises(ServerError, match="500"):
        platform.timeline(user, None)
    assert len(emulator.requests_to(TIMELINE)) == 6


@pytest.mark.parametrize("fault", ["lost_response", "status_after_commit", "status"])
def test_a_write_with_an_unknown_outcome_is_never_resent(
    emulator, alice, x_platform_factory, fault: str
) -> None:
    mention = emulator.add_post(alice, "@parrotbot hello")
    platform = x_platform_factory()
    (m,) = platform.mentions(None)
    emulator.inject(CREATE, Fault(fault, status=503))
    with pytest.raises(OutcomeUnknown):
        platform.reply(m, "a reply")
    assert len(emulator.requests_to(CREATE)) == 1  # one try, no retry
    found = platform.find_reply(mention.id)
    if fault == "status":  # refused before anything was created
        assert found is None and emulator.replies_to(mention.id) == []
    else:  # created, but the answer never arrived: reconciliation finds it
        (created,) = emulator.replies_to(mention.id)
        assert found is not None and found.id == created.id
        assert found.in_reply_to_tweet_id == mention.id
    assert platform.api.budgets.spend_today()["reply"] == 1  # an unknown write stays counted


def test_401_and_403_are_reported_clearly_without_secrets(
    emulator, alice, x_platform_factory
) -> None:
    platform = x_platform_factory()
    assert platform.me().id == emulator.bot.id
    bystander = emulator.add_post(alice, "no mention here")
    (tweet,) = platform.timeline(platform.lookup_user("alice"), None)
    with pytest.raises(ReplyNotAllowed, match="not allowed"):
        platform.reply(tweet, "unsolicited")
    assert emulator.requests_to(CREATE)[-1].status == 403
    assert emulator.replies_to(bystander.id) == []

    emulator.read_only_tokens.add(X_SECRETS["ACCESS_TOKEN"])
    with pytest.raises(Forbidden, match="Read and Write") as forbidden:
        platform.post("hello")
    assert not isinstance(forbidden.value, ReplyNotAllowed)

    emulator.revoked_tokens.add(X_SECRETS["ACCESS_TOKEN"])
    with pytest.raises(AuthError, match="CONSUMER_KEY") as denied:
        platform.timeline(platform.lookup_user("alice"), None)
    for error in (forbidden.value, denied.value):
        assert not any(secret in str(error) for secret in X_SECRETS.values())
    # Refused writes were never posted, so they give their budget back.
    assert platform.api.budgets.spend_today()["post"] == 0


def test_a_429_is_waited_out_until_its_reset_and_no_request_goes_before(
    emulator, alice, x_platform_factory
) -> None:
    emulator.add_post(alice, "@parrotbot are you there?")
    impatient = x_platform_factory(x={"rate_limit_max_sleep_seconds": 0})
    impatient.me()
    reset = emulator.exhaust(MENTIONS, reset_in=2)
    with pytest.raises(RateLimited) as first:
        impatient.mentions(None)
    assert first.value.reset_at == reset
    (limited,) = emulator.requests_to(MENTIONS)
    assert limited.status == 429
    with pytest.raises(RateLimited):  # refused here, without asking X again
        impatient.mentions(None)

    restarted = x_platform_factory(x={"rate_limit_max_sleep_seconds": 10})
    (mention,) = restarted.mentions(None)  # sleeps until the reset, then asks
    assert mention.text == "@parrotbot are you there?"
    later = emulator.requests_to(MENTIONS)[1:]
    assert len(later) == 1 and later[0].status == 200
    assert later[0].at >= reset  # nothing was sent before the reset


def test_no_calls_left_in_the_window_means_no_call_until_reset(
    emulator, alice, x_platform_factory
) -> None:
    emulator.limits[TIMELINE] = 2
    platform = x_platform_factory(x={"rate_limit_max_sleep_seconds": 0})
    user = platform.lookup_user("alice")
    platform.timeline(user, None)
    platform.timeline(user, None)  # answered with x-rate-limit-remaining: 0
    with pytest.raises(RateLimited):
        platform.timeline(user, None)
    assert [r.status for r in emulator.requests_to(TIMELINE)] == [200, 200]


def test_dry_run_reads_x_and_writes_to_the_outbox(emulator, alice, x_platform_factory) -> None:
    mention = emulator.add_post(alice, "@parrotbot dry?")
    platform = x_platform_factory(dry_run=True)
    platform.prepare()
    (m,) = platform.mentions(None)
    reply = platform.reply(m, "only in the outbox")
    post = platform.post("a scheduled post")
    assert emulator.requests_to(CREATE) == []
    lines = [json.loads(x) for x in platform.outbox.outbox_path.read_text().splitlines()]
    assert [(x["text"], x["in_reply_to_tweet_id"]) for x in lines] == [
        ("only in the outbox", mention.id),
        ("a scheduled post", None),
    ]
    assert platform.find_reply(mention.id).id == reply.id and post.id != reply.id
    spend = platform.api.budgets.spend_today()
    assert (spend["post"], spend["reply"]) == (1, 1)  # the same budgets as for real


@pytest.fixture
def debug_log(monkeypatch: pytest.MonkeyPatch):
    """DEBUG logging into a buffer, with the credentials in the environment as in production."""
    for name, value in X_SECRETS.items():
        monkeypatch.setenv(name, value)
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    stream = io.StringIO()
    configure_logging("DEBUG", json=True, stream=stream)
    yield stream
    root.handlers[:] = handlers
    root.setLevel(level)
    logging.captureWarnings(False)
    structlog.reset_defaults()


def test_no_credential_reaches_debug_logs(debug_log, emulator, alice, x_platform_factory) -> None:
    emulator.add_post(alice, "@parrotbot hi")
    platform = x_platform_factory()
    (m,) = platform.mentions(None)
    platform.reply(m, "hello")
    emulator.inject(CREATE, Fault("lost_response"))
    with pytest.raises(OutcomeUnknown):
        platform.post("lost")
    emulator.revoked_tokens.add(X_SECRETS["ACCESS_TOKEN"])
    with pytest.raises(AuthError):
        platform.timeline(platform.lookup_user("alice"), None)

    text = debug_log.getvalue()
    assert "Making API request" in text and '"level": "debug"' in text  # tweepy spoke at DEBUG
    assert "oauth_consumer_key" in text  # requests_oauthlib logged the OAuth parameters
    for name, value in X_SECRETS.items():
        assert value not in text, f"{name} leaked"


def test_bad_credentials_are_logged_clearly_and_the_jobs_carry_on(
    emulator, x_platform_factory, tmp_path, account: str, redis_url: str
) -> None:
    from structlog.testing import capture_logs

    from bot.config import BotConfig, FilterConfig, GenerationConfig
    from bot.generation import GenerationService
    from bot.jobs import BotJobs
    from tests.support.configs import x_config_data

    emulator.add_user("poorrichard")
    platform = x_platform_factory()
    config = BotConfig.model_validate(
        x_config_data(tmp_path / "volume", account, redis_url, emulator.url)
    )
    jobs = BotJobs(config=config, state=platform.state, platform=platform,
                   service=GenerationService(GenerationConfig(), FilterConfig()), watcher=None,
                   triggers=None)  # type: ignore[arg-type]  # fmt: skip
    emulator.revoked_tokens.add(X_SECRETS["ACCESS_TOKEN"])
    with capture_logs() as logs:
        jobs.scrape()
        jobs.mentions()
    failures = {e["event"]: e for e in logs if e["event"].endswith(".failed")}
    assert set(failures) == {"scrape.failed", "mentions.failed"}
    for event in failures.values():
        assert event["log_level"] == "error" and event["reason"] == "AuthError"
        assert "check CONSUMER_KEY" in event["error"]


def test_a_cached_identity_for_another_handle_is_asked_again(emulator, x_platform_factory) -> None:
    platform = x_platform_factory()
    keys = platform.state.keys
    platform.state.redis.hset(keys.me, mapping={"id": "999", "handle": "oldbot"})
    me = platform.me()
    assert me.handle == "parrotbot" and me.id != "999"
    assert len(emulator.requests_to(ME)) == 1
    assert platform.state.redis.hget(keys.me, "handle") == "parrotbot"


def test_each_call_is_billed_as_x_bills_it(emulator, alice, x_platform_factory) -> None:
    """A target's posts, the bot's own mentions, users and URL posts each have their price."""
    emulator.add_post(alice, "one")
    emulator.add_post(alice, "two")
    platform = x_platform_factory()
    budgets = platform.api.budgets

    def billed() -> dict[str, float]:
        return {kind: count for kind, count in budgets.spend_today().items() if count}

    user = platform.lookup_user("alice")
    assert billed() == {"user_read": 1, "usd": 0.01}
    platform.timeline(user, None)
    assert billed()["read"] == 2  # per post returned
    mention = emulator.add_post(alice, "@parrotbot hello")
    (polled,) = platform.mentions(None)
    assert polled.id == mention.id
    spent = billed()
    assert spent["own_read"] == 1 and spent["user_read"] == 2  # the mentions asked who we are
    platform.reply(polled, "a plain answer")
    platform.post("read it at example.com")
    spent = billed()
    assert (spent["reply"], spent["post_with_url"]) == (1, 1) and "post" not in spent
    assert budgets.usd_by_kind()["post_with_url"] == pytest.approx(0.20)
    users, posts, mentions, reply, url_post = 2 * 0.010, 2 * 0.005, 0.001, 0.010, 0.20
    assert spent["usd"] == pytest.approx(users + posts + mentions + reply + url_post)
