"""Scheduled posts: take a ready text from the pool (or generate one), post, record."""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import UTC, datetime

import structlog

from bot import metrics
from bot.generation import Batch, GenerationService
from bot.platform.base import OutcomeUnknown, Platform, PlatformError, Tweet, platform_failed
from bot.pool import TweetPool
from bot.state import BotState, PostedTweet

log = structlog.get_logger(__name__)


def post_scheduled(
    platform: Platform,
    state: BotState,
    service: GenerationService,
    pool: TweetPool,
    *,
    recent: Sequence[str] = (),
) -> Tweet | None:
    loaded = service.current
    if loaded is None:
        log.info("post.skipped", reason="no_model_yet")
        return None
    # Never post what could not be recorded: without Redis the bot would lose track of
    # its own history (and, for replies, of what it already answered).
    if not state.ping():
        log.warning("post.skipped", reason="redis_unavailable")
        return None
    text, source = pool.take(loaded.version), "pool"
    if text is None:
        generated, batch = service.generate_post(recent=recent)
        record_batch(state, batch)
        if generated is None:
            log.warning("post.skipped", reason="no_acceptable_text")
            return None
        text, source = generated.text, "direct"
    try:
        tweet = platform.post(text)
    except OutcomeUnknown as exc:
        # A scheduled post is not worth a duplicate: it is neither retried nor reconciled.
        # It may have gone out, so the cadence counts from it: a leader that takes over
        # must not post again before the next slot.
        state.redis.set(state.keys.last_post, f"{time.time():.3f}")
        log.warning("post.outcome_unknown", error=str(exc))
        return None
    except PlatformError as exc:
        platform_failed("post.skipped", exc)
        return None
    # The post time goes with the history entry: the scheduler's cadence rests on it.
    pipe = state.redis.pipeline(transaction=True)
    state.record_posted(
        PostedTweet(tweet_id=tweet.id, text=tweet.text, kind="post", model_version=loaded.version),
        pipeline=pipe,
    )
    pipe.set(state.keys.last_post, f"{time.time():.3f}")
    pipe.execute()
    metrics.POSTS.labels(source=source).inc()
    metrics.POOL_SIZE.set(pool.size())
    log.info(
        "post.published",
        tweet_id=tweet.id,
        text=tweet.text,
        model_version=loaded.version,
        source=source,
    )
    return tweet


def last_post_at(state: BotState) -> datetime | None:
    """When the last scheduled post went out, so a new leader keeps the post cadence."""
    stamp = state.redis.get(state.keys.last_post)
    return None if stamp is None else datetime.fromtimestamp(float(stamp), UTC)


def post_cadence_start(state: BotState) -> datetime:
    """Where the post interval counts from: the last scheduled post or, before there is one,
    when the first leader scheduled posting.

    Without the second, each takeover before the first post would start a fresh interval,
    and a bot whose leaders change more often than its interval would never post.
    """
    last = last_post_at(state)
    if last is not None:
        return last
    state.redis.set(state.keys.post_schedule_start, f"{time.time():.3f}", nx=True)
    return datetime.fromtimestamp(float(state.redis.get(state.keys.post_schedule_start)), UTC)


def refill_pool(
    state: BotState,
    service: GenerationService,
    pool: TweetPool,
    *,
    target: int,
    batch_size: int,
    recent: Sequence[str] = (),
) -> int:
    """Top the pool up towards `target` with one batch; returns how many texts were added."""
    if target == 0 or pool.size() >= target:
        return 0
    batch = service.sample(batch_size, recent=[*recent, *pool.texts()])
    if batch is None:
        return 0
    record_batch(state, batch)
    pool.add(batch.version, batch.accepted)
    metrics.POOL_SIZE.set(pool.size())
    log.info(
        "pool.refilled",
        version=batch.version,
        added=len(batch.accepted),
        rejected=dict(batch.rejected),
        size=pool.size(),
    )
    return len(batch.accepted)


def record_batch(state: BotState, batch: Batch | None) -> None:
    if batch is not None and batch.checked:
        state.count_filtered(batch.checked, len(batch.accepted), batch.rejected)
        metrics.CANDIDATES_ACCEPTED.inc(len(batch.accepted))
        for reason, count in batch.rejected.items():
            metrics.CANDIDATES_REJECTED.labels(reason=reason).inc(count)
