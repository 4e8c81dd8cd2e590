"""Replies to mentions: oldest first, each recorded so no mention is answered twice.

The protocol (DESIGN.md): an intent is recorded in Redis before the reply is sent and the
reply's id after. An intent found without an outcome means an earlier attempt died mid-reply
or lost X's answer, so the platform is asked whether that reply went out before anything is
sent again (after `replies.reconcile_grace_seconds`, so a reply X has not yet shown in the
bot's timeline is not taken for missing). The mentions cursor only moves past a mention once
its outcome is recorded; a mention whose reply is pending or could not be sent yet keeps the
cursor where it is, and the next poll takes it up again.

`bot.rules` decides which mentions get a reply at all.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from enum import StrEnum

import structlog

from bot import metrics
from bot.config import RepliesConfig
from bot.generation import GenerationService
from bot.platform.base import (
    OutcomeUnknown,
    Platform,
    PlatformError,
    ReplyNotAllowed,
    Tweet,
    User,
    platform_failed,
)
from bot.posting import record_batch
from bot.rules import Claim, ReplyGuard, is_summoned
from bot.state import BotState, PostedTweet

log = structlog.get_logger(__name__)

MENTIONS_CURSOR = "mentions"


class ReplyOutcome(StrEnum):
    REPLIED = "replied"
    ALREADY_REPLIED = "already_replied"  # an outcome was recorded before (any outcome)
    RECONCILED = "reconciled"  # a previous attempt's reply was found on the platform
    SKIPPED_SELF = "skipped_self"
    SKIPPED_NOT_SUMMONED = "skipped_not_summoned"
    SKIPPED_CONVERSATION_CAP = "skipped_conversation_cap"
    SKIPPED_AUTHOR_COOLDOWN = "skipped_author_cooldown"
    REJECTED = "rejected"  # X refused this reply for good (the author did not mention the bot)
    # The cursor stays at these; the mention is taken up again on the next poll:
    NOT_READY = "not_ready"  # no model, or no acceptable text
    PENDING = "pending"  # the reply may have gone out: reconcile before anything else
    DEFERRED = "deferred"  # surely not sent (budget, rate limit, credentials, network)


WAIT_OUTCOMES = (ReplyOutcome.NOT_READY, ReplyOutcome.PENDING, ReplyOutcome.DEFERRED)
_CLAIM_SKIPS = {
    Claim.CONVERSATION_CAP: ReplyOutcome.SKIPPED_CONVERSATION_CAP,
    Claim.AUTHOR_COOLDOWN: ReplyOutcome.SKIPPED_AUTHOR_COOLDOWN,
}


def poll_mentions(
    platform: Platform,
    state: BotState,
    service: GenerationService,
    *,
    me: User,
    settings: RepliesConfig | None = None,
    recent: Sequence[str] = (),
) -> list[ReplyOutcome]:
    if service.current is None:
        log.info("mentions.skipped", reason="no_model_yet")
        return []
    settings = settings or RepliesConfig()
    guard = ReplyGuard(state, settings)
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
    key = state.keys.reply(mention.id)
    record = state.redis.hgetall(key)
    if record.get("outcome"):
        return ReplyOutcome.ALREADY_REPLIED
    if mention.author_id == me.id:
        return _skip(state, mention, ReplyOutcome.SKIPPED_SELF)
    retrying = bool(record.get("intent_at"))
    if retrying:
        age = time.time() - float(record["intent_at"])
        if age < guard.settings.reconcile_grace_seconds:
            return ReplyOutcome.PENDING
        existing = platform.find_reply(mention.id)
        if existing is not None:
            version = record.get("model_version", "")
            _record_reply(
                state, mention, existing, version=version, outcome=ReplyOutcome.RECONCILED
            )
            log.info("reply.reconciled", mention_id=mention.id, tweet_id=existing.id)
            return ReplyOutcome.RECONCILED
    elif not is_summoned(mention, me.handle):
        return _skip(state, mention, ReplyOutcome.SKIPPED_NOT_SUMMONED)
    generated, batch = service.generate_reply(mention, handle=me.handle, recent=recent)
    record_batch(state, batch)
    if generated is None:
        return ReplyOutcome.NOT_READY
    if retrying:
        state.redis.hset(key, "model_version", generated.model_version)
    else:
        claim = guard.claim(mention, generated.model_version)
        if claim in _CLAIM_SKIPS:
            log.info("reply.skipped", mention_id=mention.id, reason=str(_CLAIM_SKIPS[claim]))
            return _CLAIM_SKIPS[claim]
        if claim is Claim.INTENT_EXISTS:  # another process claimed it a moment ago
            return ReplyOutcome.PENDING
    try:
        reply = platform.reply(mention, generated.text)
    except OutcomeUnknown as exc:
        log.warning("reply.outcome_unknown", mention_id=mention.id, error=str(exc))
        return ReplyOutcome.PENDING
    except ReplyNotAllowed as exc:
        state.redis.hset(key, mapping={"outcome": ReplyOutcome.REJECTED, "error": str(exc)})
        log.warning("reply.rejected", mention_id=mention.id, error=str(exc))
        return ReplyOutcome.REJECTED
    except PlatformError as exc:
        guard.release(mention)  # surely not sent: the next poll starts afresh
        platform_failed("reply.deferred", exc, mention_id=mention.id)
        return ReplyOutcome.DEFERRED
    _record_reply(
        state, mention, reply, version=generated.model_version, outcome=ReplyOutcome.REPLIED
    )
    log.info(
        "reply.published",
        mention_id=mention.id,
        author=mention.author_handle,
        tweet_id=reply.id,
        text=reply.text,
        model_version=generated.model_version,
    )
    return ReplyOutcome.REPLIED


def _skip(state: BotState, mention: Tweet, outcome: ReplyOutcome) -> ReplyOutcome:
    state.redis.hset(state.keys.reply(mention.id), "outcome", outcome)
    log.info("reply.skipped", mention_id=mention.id, reason=str(outcome))
    return outcome


def _record_reply(
    state: BotState, mention: Tweet, reply: Tweet, *, version: str, outcome: ReplyOutcome
) -> None:
    pipe = state.redis.pipeline(transaction=True)
    pipe.hset(
        state.keys.reply(mention.id),
        mapping={"tweet_id": reply.id, "outcome": outcome},
    )
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
