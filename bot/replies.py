"""Replies to mentions: oldest first, each recorded so no mention is answered twice.

The protocol (DESIGN.md): an intent is recorded in Redis before the reply is sent and the
reply's id after. An intent found without an outcome means an earlier attempt died mid-reply
or lost X's answer, so the platform is asked whether that reply went out before anything is
sent again (after `replies.reconcile_grace_seconds`, so a reply X has not yet shown in the
bot's timeline is not taken for missing). The mentions cursor only moves past a mention once
its outcome is recorded; a mention whose reply is pending or could not be sent yet keeps the
cursor where it is, and the next poll takes it up again.

One mention must not hold up the others forever: a poll that fails for a reason of the
mention's own (no acceptable text for its context, X refusing it with a 400, a 404 or a 403
that is not about permissions) counts an attempt in its record, and after
`replies.max_attempts` the mention is recorded `gave_up` and the cursor moves on. Causes that
pass by themselves (a spent budget, a rate limit, X or the network down, credentials the
operator must fix) wait without spending attempts (`bot.platform.base.is_transient`). Every
write of a reply record renews its TTL of `replies.keep_days`.

`bot.rules` decides which mentions get a reply at all, and records opt-outs.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import structlog

from bot import metrics
from bot.config import RepliesConfig
from bot.generation import GenerationService, record_batch
from bot.lease import Fence
from bot.platform.base import (
    OutcomeUnknown,
    Platform,
    PlatformError,
    ReplyNotAllowed,
    Tweet,
    User,
    is_transient,
    platform_failed,
)
from bot.rules import Claim, ReplyGuard, ReplyOutcome, command, is_retweet, is_summoned
from bot.state import BotState, PostedTweet

log = structlog.get_logger(__name__)

MENTIONS_CURSOR = "mentions"

__all__ = ["MENTIONS_CURSOR", "ReplyOutcome", "answer_mention", "poll_mentions"]

WAIT_OUTCOMES = (
    ReplyOutcome.NOT_READY,
    ReplyOutcome.PENDING,
    ReplyOutcome.DEFERRED,
    ReplyOutcome.FENCED,
)
_CLAIM_SKIPS = {
    Claim.CONVERSATION_CAP: ReplyOutcome.SKIPPED_CONVERSATION_CAP,
    Claim.AUTHOR_COOLDOWN: ReplyOutcome.SKIPPED_AUTHOR_COOLDOWN,
    Claim.OPTED_OUT: ReplyOutcome.SKIPPED_OPTED_OUT,
}
# Every outcome shows on /metrics from the start, at 0, so an alert on `gave_up` has a series.
for _outcome in ReplyOutcome:
    metrics.REPLIES.labels(outcome=_outcome)


def poll_mentions(
    platform: Platform,
    state: BotState,
    service: GenerationService,
    *,
    me: User,
    settings: RepliesConfig | None = None,
    recent: Sequence[str] = (),
    fence: Fence | None = None,
) -> list[ReplyOutcome]:
    if service.current is None:
        log.info("mentions.skipped", reason="no_model_yet")
        return []
    settings = settings or RepliesConfig()
    guard = ReplyGuard(state, settings, fence)
    mentions = platform.mentions(since_id=state.cursor(MENTIONS_CURSOR))
    outcomes = []
    for mention in mentions:
        outcome = answer_mention(
            platform, state, service, mention, me=me, guard=guard, recent=recent
        )
        outcomes.append(outcome)
        metrics.REPLIES.labels(outcome=outcome).inc()
        if outcome in WAIT_OUTCOMES:
            break  # keep the cursor here so this mention is taken up on the next poll
        state.set_cursor(MENTIONS_CURSOR, mention.id)
    # A quiet poll is routine: keep it out of the INFO stream, which shows what the bot did.
    report = log.info if mentions else log.debug
    report("mentions.polled", new=len(mentions), outcomes=[str(o) for o in outcomes])
    return outcomes


def answer_mention(
    platform: Platform,
    state: BotState,
    service: GenerationService,
    mention: Tweet,
    *,
    me: User,
    guard: ReplyGuard,
    recent: Sequence[str] = (),
) -> ReplyOutcome:
    record = state.redis.hgetall(state.keys.reply(mention.id))
    if record.get("outcome"):
        return ReplyOutcome.ALREADY_REPLIED
    if mention.author_id == me.id:
        return _skip(guard, mention, ReplyOutcome.SKIPPED_SELF)
    if is_retweet(mention):
        return _skip(guard, mention, ReplyOutcome.SKIPPED_RETWEET)
    retrying = bool(record.get("intent_at"))
    if retrying:
        age = time.time() - float(record["intent_at"])
        if age < guard.settings.reconcile_grace_seconds:
            return ReplyOutcome.PENDING
        existing = platform.find_reply(mention.id)
        if existing is not None:
            version = record.get("model_version", "")
            _record_reply(
                guard, mention, existing, version=version, outcome=ReplyOutcome.RECONCILED
            )
            log.info("reply.reconciled", mention_id=mention.id, tweet_id=existing.id)
            return ReplyOutcome.RECONCILED
    else:
        early = _rules_say_no(guard, mention, me)
        if early is not None:
            return early
    generated, batch = service.generate_reply(mention, handle=me.handle, recent=recent)
    record_batch(state, batch)
    if generated is None:
        return _failed_attempt(guard, mention, ReplyOutcome.NOT_READY, "no acceptable text")
    claim = guard.claim(mention, generated.model_version, retry=retrying)
    if claim is Claim.FENCED:
        log.warning("reply.fenced", mention_id=mention.id, reason="lease_lost")
        return ReplyOutcome.FENCED
    if claim in _CLAIM_SKIPS:
        log.info("reply.skipped", mention_id=mention.id, reason=str(_CLAIM_SKIPS[claim]))
        return _CLAIM_SKIPS[claim]
    if claim is Claim.INTENT_EXISTS:  # another process claimed it a moment ago
        return ReplyOutcome.PENDING
    return _send(platform, guard, mention, generated.text, generated.model_version)


def _rules_say_no(guard: ReplyGuard, mention: Tweet, me: User) -> ReplyOutcome | None:
    """The outcome of a mention that gets no reply by the rules, before any text is made."""
    if not is_summoned(mention, me.handle):
        return _skip(guard, mention, ReplyOutcome.SKIPPED_NOT_SUMMONED)
    kind = command(mention, me.handle, guard.settings)
    if kind is not None:
        outcome = guard.record_command(mention, kind)
        event = "reply.opted_out" if outcome is ReplyOutcome.OPTED_OUT else "reply.opted_in"
        log.info(event, mention_id=mention.id, author=mention.author_handle)
        return outcome
    if guard.is_opted_out(mention):  # checked again in the claim, which decides
        return _skip(guard, mention, ReplyOutcome.SKIPPED_OPTED_OUT)
    return None


def _send(
    platform: Platform, guard: ReplyGuard, mention: Tweet, text: str, version: str
) -> ReplyOutcome:
    """Send a claimed reply and record what came of it."""
    try:
        reply = platform.reply(mention, text)
    except OutcomeUnknown as exc:
        log.warning("reply.outcome_unknown", mention_id=mention.id, error=str(exc))
        return ReplyOutcome.PENDING
    except ReplyNotAllowed as exc:
        _write(guard, mention, {"outcome": ReplyOutcome.REJECTED, "error": str(exc)})
        log.warning("reply.rejected", mention_id=mention.id, error=str(exc))
        return ReplyOutcome.REJECTED
    except PlatformError as exc:
        guard.release(mention)  # surely not sent: the next poll starts afresh
        platform_failed("reply.deferred", exc, mention_id=mention.id)
        if is_transient(exc):  # it will pass by itself: no attempt spent
            return ReplyOutcome.DEFERRED
        reason = f"{type(exc).__name__}: {exc}"
        return _failed_attempt(guard, mention, ReplyOutcome.DEFERRED, reason)
    _record_reply(guard, mention, reply, version=version, outcome=ReplyOutcome.REPLIED)
    log.info(
        "reply.published",
        mention_id=mention.id,
        author=mention.author_handle,
        tweet_id=reply.id,
        text=reply.text,
        model_version=version,
    )
    return ReplyOutcome.REPLIED


def _failed_attempt(
    guard: ReplyGuard, mention: Tweet, outcome: ReplyOutcome, reason: str
) -> ReplyOutcome:
    """Count a poll that failed for a reason of this mention's own; after
    `replies.max_attempts` of them, give up so the cursor moves on to the others."""
    key = guard.state.keys.reply(mention.id)
    pipe = guard.state.redis.pipeline(transaction=True)
    pipe.hincrby(key, "attempts", 1)
    pipe.hset(key, "last_reason", reason)
    pipe.expire(key, guard.record_ttl)
    attempts = int(pipe.execute()[0])
    if attempts < guard.settings.max_attempts:
        return outcome
    guard.release(mention)  # an earlier attempt's claim, if any: that reply was not found
    _write(guard, mention, {"outcome": ReplyOutcome.GAVE_UP})
    log.warning("reply.gave_up", mention_id=mention.id, attempts=attempts, reason=reason)
    return ReplyOutcome.GAVE_UP


def _write(guard: ReplyGuard, mention: Tweet, fields: dict[str, str]) -> None:
    """Every write of a reply record renews its TTL (`replies.keep_days`)."""
    key = guard.state.keys.reply(mention.id)
    pipe = guard.state.redis.pipeline(transaction=True)
    pipe.hset(key, mapping=fields)
    pipe.expire(key, guard.record_ttl)
    pipe.execute()


def _skip(guard: ReplyGuard, mention: Tweet, outcome: ReplyOutcome) -> ReplyOutcome:
    _write(guard, mention, {"outcome": outcome})
    log.info("reply.skipped", mention_id=mention.id, reason=str(outcome))
    return outcome


def _record_reply(
    guard: ReplyGuard, mention: Tweet, reply: Tweet, *, version: str, outcome: ReplyOutcome
) -> None:
    state = guard.state
    key = state.keys.reply(mention.id)
    pipe = state.redis.pipeline(transaction=True)
    pipe.hset(key, mapping={"tweet_id": reply.id, "outcome": outcome})
    pipe.expire(key, guard.record_ttl)
    state.record_posted(
        PostedTweet(
            tweet_id=reply.id,
            text=reply.text,
            kind="reply",
            model_version=version,
            in_reply_to=mention.id,
        ),
        pipeline=pipe,
    )
    pipe.execute()
