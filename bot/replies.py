"""Replies to mentions: oldest first, each recorded so no mention is answered twice.

The protocol (DESIGN.md): an intent is recorded in Redis before the reply is sent and the
reply's id after; an intent found without an outcome means a previous run
died mid-reply, so the platform is asked whether that reply went out before anything is
sent again. The mentions cursor only moves past a mention once its outcome is recorded.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from enum import StrEnum

import structlog

from bot import metrics
from bot.generation import GenerationService
from bot.platform.base import Platform, Tweet
from bot.posting import record_batch
from bot.state import BotState, PostedTweet

log = structlog.get_logger(__name__)

MENTIONS_CURSOR = "mentions"


class ReplyOutcome(StrEnum):
    REPLIED = "replied"
    ALREADY_REPLIED = "already_replied"
    RECONCILED = "reconciled"  # a previous run's reply was found on the platform
    SKIPPED_SELF = "skipped_self"
    NOT_READY = "not_ready"  # no model, or no acceptable text: try again next poll


def poll_mentions(
    platform: Platform,
    state: BotState,
    service: GenerationService,
    *,
    me_id: str,
    recent: Sequence[str] = (),
) -> list[ReplyOutcome]:
    if service.current is None:
        log.info("mentions.skipped", reason="no_model_yet")
        return []
    mentions = platform.mentions(since_id=state.cursor(MENTIONS_CURSOR))
    outcomes = []
    for mention in mentions:
        outcome = answer_mention(platform, state, service, mention, me_id=me_id, recent=recent)
        outcomes.append(outcome)
        metrics.REPLIES.labels(outcome=outcome).inc()
        if outcome is ReplyOutcome.NOT_READY:
            break  # keep the cursor here so this mention is answered on the next poll
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
    me_id: str,
    recent: Sequence[str] = (),
) -> ReplyOutcome:
    key = state.keys.reply(mention.id)
    record = state.redis.hgetall(key)
    if record.get("outcome"):
        return ReplyOutcome.ALREADY_REPLIED
    if mention.author_id == me_id:
        state.redis.hset(key, mapping={"outcome": ReplyOutcome.SKIPPED_SELF})
        return ReplyOutcome.SKIPPED_SELF
    if record.get("intent_at"):
        existing = platform.find_reply(mention.id)
        if existing is not None:
            _record_reply(
                state,
                mention,
                existing,
                version=record.get("model_version", ""),
                outcome=ReplyOutcome.RECONCILED,
            )
            log.info("reply.reconciled", mention_id=mention.id, tweet_id=existing.id)
            return ReplyOutcome.RECONCILED
    generated, batch = service.generate_reply(mention, recent=recent)
    record_batch(state, batch)
    if generated is None:
        return ReplyOutcome.NOT_READY
    state.redis.hset(
        key, mapping={"intent_at": f"{time.time():.3f}", "model_version": generated.model_version}
    )
    reply = platform.reply(mention, generated.text)
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
