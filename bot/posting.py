"""Scheduled posts, exactly once per slot: take a text, record the intent, post, record.

A slot is one scheduled post (bot/ledger.py says what identifies it and why). Its intent is
recorded, fenced by the poster lease, before the POST and its tweet id after. A slot left
open (the answer was lost, or the daemon died between the POST and the record) is settled
first on the next firing, by whichever leader runs it: after
`schedule.post_reconcile_grace_seconds` the bot's own timeline is searched for the slot's
text; found, it is recorded once and the firing goes on to the next slot; not found, the same
text is posted again for the same slot. The grace is what makes "not found" mean "not
posted": X may take a moment to show a new post in the bot's timeline.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

import structlog

from bot import metrics
from bot.generation import GenerationService, record_batch
from bot.lease import Fence
from bot.ledger import PostLedger, PostSlot, SlotClaim, SlotOutcome
from bot.ledger.held import HeldLedger
from bot.platform.base import OutcomeUnknown, Platform, PlatformError, Tweet, platform_failed
from bot.pool import TweetPool
from bot.state import BotState

log = structlog.get_logger(__name__)

DEFAULT_RECONCILE_GRACE_SECONDS = 30.0
_CLAIM_REFUSED = {
    SlotClaim.FENCED: "slot_fenced",
    SlotClaim.TAKEN: "slot_taken",
    SlotClaim.CLOSED: "slot_closed",
}


def post_scheduled(
    platform: Platform,
    state: BotState,
    service: GenerationService,
    pool: TweetPool,
    *,
    recent: Sequence[str] = (),
    fence: Fence | None = None,
    reconcile_grace_seconds: float = DEFAULT_RECONCILE_GRACE_SECONDS,
    held: HeldLedger | None = None,
    candidates: int = 3,
) -> Tweet | None:
    """One firing of the post job; returns what this firing posted, if anything.

    With `held` (`review.posts: hold`), the firing posts the oldest approved candidate, or
    else holds one more candidate (up to `candidates` waiting) and posts nothing.
    """
    loaded = service.current
    if loaded is None:
        log.info("post.skipped", reason="no_model_yet")
        return None
    # Never post what could not be recorded: without Redis the bot would lose track of
    # its own history (and, for replies, of what it already answered).
    if not state.ping():
        log.warning("post.skipped", reason="redis_unavailable")
        return None
    ledger = PostLedger(state, fence)
    slot = ledger.current()
    if slot.is_open:
        if slot.age() < reconcile_grace_seconds:
            log.info("post.pending", slot=slot.id, attempts=slot.attempts)
            return None
        found = platform.find_post(slot.text, since_id=slot.since_id or None)
        if found is None:
            return _attempt(platform, ledger, slot, slot.text, slot.model_version, "retry")
        ledger.close(slot, found, SlotOutcome.RECONCILED)
        log.info("post.reconciled", slot=slot.id, tweet_id=found.id, text=found.text)
        slot = ledger.current()  # this firing is the next slot's
    if held is not None:
        return _post_reviewed(platform, ledger, slot, service, held, recent, candidates)
    text, source = pool.take(loaded.version), "pool"
    if text is None:
        generated, batch = service.generate_post(recent=recent)
        record_batch(state, batch)
        if generated is None:
            log.warning("post.skipped", reason="no_acceptable_text")
            return None
        text, source = generated.text, "direct"
    tweet = _attempt(platform, ledger, slot, text, loaded.version, source)
    if tweet is not None:
        metrics.POOL_SIZE.set(pool.size())
    return tweet


def _attempt(
    platform: Platform, ledger: PostLedger, slot: PostSlot, text: str, version: str, source: str
) -> Tweet | None:
    """Claim the slot for `text` (fenced), POST it, record the outcome."""
    claim, claimed = ledger.claim(slot, text, version)
    if claim is not SlotClaim.CLAIMED:
        # fenced: a new leader owns the account; taken/closed: another attempt got there first
        log.warning("post.skipped", reason=_CLAIM_REFUSED[claim], slot=slot.id)
        return None
    try:
        tweet = platform.post(text)
    except OutcomeUnknown as exc:
        # It may have gone out: the slot stays open, and the cadence counts from this
        # attempt, so a leader taking over waits a whole interval and then reconciles.
        log.warning("post.outcome_unknown", slot=slot.id, error=str(exc))
        return None
    except PlatformError as exc:
        ledger.release(claimed)  # surely not sent: the next firing starts afresh
        platform_failed("post.skipped", exc)
        return None
    ledger.close(claimed, tweet, SlotOutcome.POSTED)
    metrics.POSTS.labels(source=source).inc()
    log.info(
        "post.published",
        tweet_id=tweet.id,
        text=tweet.text,
        model_version=version,
        source=source,
        slot=slot.id,
    )
    return tweet


def _post_reviewed(
    platform: Platform,
    ledger: PostLedger,
    slot: PostSlot,
    service: GenerationService,
    held: HeldLedger,
    recent: Sequence[str],
    candidates: int,
) -> Tweet | None:
    """Post the oldest approved candidate in this slot, or hold one more candidate.

    An approved candidate records the slot it is tried in before the POST; a candidate whose
    slot has since closed went out (this leader or a dead one posted it, or the slot's
    reconcile found it), so it is settled as sent and never posted again.
    """
    approved = []
    for item in held.approved("post"):
        tried = ledger.read(item.slot) if item.slot else None
        if tried is not None and tried.outcome:
            held.mark_sent(item.id, tried.tweet_id)
            log.info("post.approved_settled", item=item.id, tweet_id=tried.tweet_id)
        else:
            approved.append(item)
    if approved:
        item = approved[0]
        held.mark_slot(item.id, slot.id)
        version = str(item.provenance.get("model_version", ""))
        tweet = _attempt(platform, ledger, slot, item.final_text, version, "approved")
        if tweet is not None:
            held.mark_sent(item.id, tweet.id)
        return tweet
    waiting = held.held_posts_count()
    if waiting < candidates:
        generated, batch = service.generate_post(recent=recent)
        record_batch(ledger.state, batch)
        if generated is not None and batch is not None:
            item_id = held.hold_post(generated.text, service.provenance(generated, batch))
            waiting += item_id is not None
            log.info("post.held", item=item_id, text=generated.text)
    log.info("post.skipped", reason="awaiting_approval", candidates_waiting=waiting)
    return None


def last_post_at(state: BotState) -> datetime | None:
    """When the last scheduled post went out, or was last tried if that try may have gone
    out (an open slot), so a new leader keeps the post cadence instead of posting again at
    once."""
    slot = PostLedger(state).peek()
    if slot is not None and slot.is_open:
        return datetime.fromtimestamp(float(slot.intent_at), UTC)
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
    point = PostLedger(state).cadence_point(start=True)
    assert point is not None
    return datetime.fromtimestamp(float(point), UTC)


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
