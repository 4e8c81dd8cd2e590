"""Replies to mentions: oldest first, each answered at most once.

A mention goes forward through the modules, each doing its own part, nothing written twice:

    poll     here: the mentions after the cursor; `bot.rules` says who may be answered and
             names the limits (opt-out, conversation cap, author cooldown), reading only
    ledger   `bot.ledger`: the mention's record; answered already, or an earlier attempt open?
    generation  `bot.generation`: the text, and its batch counted
    ledger   the claim: the intent recorded, fenced by the poster lease, with the opt-out and
             the limits checked in the same Redis step (so it comes after generation: an
             opt-out that lands while the text is made still wins)
    platform `bot.platform`: the reply
    ledger   the outcome: the reply's id, with the posted history

Only the ledger reads or writes the mention's record; this module decides the order. A mention
the rules refuse ends at the first ledger step with its outcome recorded.

An intent found without an outcome means an earlier attempt died mid-reply or lost X's answer,
so the platform is asked whether that reply went out before anything is sent again (after
`replies.reconcile_grace_seconds`, so a reply X has not yet shown in the bot's timeline is not
taken for missing). The mentions cursor only moves past a mention once its outcome is
recorded; a mention whose reply is pending or could not be sent yet keeps the cursor where it
is, and the next poll takes it up again.

One mention must not hold up the others forever: a poll that fails for a reason of the
mention's own (no acceptable text for its context, X refusing it with a 400, a 404 or a 403
that is not about permissions) counts an attempt in its record, and after
`replies.max_attempts` the mention is recorded `gave_up` and the cursor moves on. Causes that
pass by themselves (a spent budget, a rate limit, X or the network down, credentials the
operator must fix) wait without spending attempts (`bot.platform.base.is_transient`).
"""

from __future__ import annotations

from collections.abc import Sequence

import structlog

from bot import metrics
from bot.config import RepliesConfig
from bot.generation import Batch, Generated, GenerationService, record_batch
from bot.lease import Fence
from bot.ledger import (
    CLAIM_SKIPS,
    ReplyClaim,
    ReplyLedger,
    ReplyLimits,
    ReplyOutcome,
    ReplyRecord,
)
from bot.ledger.held import HeldItem, HeldLedger, HoldAnswer, reply_item_id
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
from bot.rules import Command, Refusal, ReplyRules
from bot.state import BotState

log = structlog.get_logger(__name__)

MENTIONS_CURSOR = "mentions"

__all__ = ["MENTIONS_CURSOR", "ReplyOutcome", "answer_mention", "poll_mentions"]

WAIT_OUTCOMES = (
    ReplyOutcome.NOT_READY,
    ReplyOutcome.PENDING,
    ReplyOutcome.DEFERRED,
    ReplyOutcome.FENCED,
)
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
    held: HeldLedger | None = None,
) -> list[ReplyOutcome]:
    """Answer the mentions after the cursor, oldest first; with `held`, hold each reply for
    the operator instead of sending it (`review.replies: hold`)."""
    if service.current is None:
        log.info("mentions.skipped", reason="no_model_yet")
        return []
    mentions = platform.mentions(since_id=state.cursor(MENTIONS_CURSOR))
    outcomes = []
    for mention in mentions:
        outcome = answer_mention(
            platform,
            state,
            service,
            mention,
            me=me,
            settings=settings,
            fence=fence,
            recent=recent,
            held=held,
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
    settings: RepliesConfig | None = None,
    fence: Fence | None = None,
    recent: Sequence[str] = (),
    held: HeldLedger | None = None,
) -> ReplyOutcome:
    """One mention from poll to posted reply, in the order of the module docstring; with
    `held`, from poll to the reply held for the operator."""
    settings = settings or RepliesConfig()
    rules = ReplyRules(state, settings)
    ledger = ReplyLedger(state, keep_days=settings.keep_days, fence=fence)

    # poll: who may be answered, and what the claim must check
    refusal = rules.refusal(mention, me)
    limits = rules.limits(mention)

    # ledger: what is known of this mention
    record = ledger.get(mention.id)
    if record.held:  # the review queue has it, whatever became of it there
        return ReplyOutcome.HELD
    if record.outcome:
        return ReplyOutcome.ALREADY_REPLIED
    if refusal is not None and (refusal.holds_on_retry or not record.is_open):
        return _refuse(state, rules, ledger, mention, refusal)
    if record.is_open:  # an earlier attempt may have gone out: look before sending again
        looked = _reconcile(platform, ledger, settings, mention, record, record.model_version)
        if looked is not None:
            return looked

    # generation: the text, its batch counted
    generated, batch = service.generate_reply(mention, handle=me.handle, recent=recent)
    record_batch(state, batch)
    if generated is None:
        return _failed_attempt(
            ledger, settings, mention, limits, ReplyOutcome.NOT_READY, "no acceptable text"
        )

    if held is not None and batch is not None and not record.is_open:
        return _hold(held, service, mention, generated, batch)

    # ledger: the claim
    claim = ledger.claim(mention.id, generated.model_version, limits, retry=record.is_open)
    if claim is not ReplyClaim.CLAIMED:
        return _not_claimed(mention, claim)

    # platform, then ledger: the reply and its outcome
    return _send(platform, ledger, settings, mention, limits, generated)


def _reconcile(
    platform: Platform,
    ledger: ReplyLedger,
    settings: RepliesConfig,
    mention: Tweet,
    record: ReplyRecord,
    version: str,
) -> ReplyOutcome | None:
    """An open record's reply looked for on the platform (after the grace): PENDING within
    it, RECONCILED (recorded) when found, None when surely not sent (try again)."""
    if record.age() < settings.reconcile_grace_seconds:
        return ReplyOutcome.PENDING
    existing = platform.find_reply(mention.id)
    if existing is None:
        return None
    ledger.record_reply(mention, existing, model_version=version, outcome=ReplyOutcome.RECONCILED)
    log.info("reply.reconciled", mention_id=mention.id, tweet_id=existing.id)
    return ReplyOutcome.RECONCILED


def _hold(
    held: HeldLedger, service: GenerationService, mention: Tweet, generated: Generated, batch: Batch
) -> ReplyOutcome:
    """Hold the reply for the operator; the mention is settled for the poll from now on."""
    answer = held.hold_reply(mention, generated.text, service.provenance(generated, batch))
    if answer is HoldAnswer.FENCED:
        log.warning("reply.fenced", mention_id=mention.id, reason="lease_lost")
        return ReplyOutcome.FENCED
    if answer is HoldAnswer.EXISTS:
        return ReplyOutcome.HELD
    log.info(
        "reply.held",
        mention_id=mention.id,
        author=mention.author_handle,
        item=reply_item_id(mention.id),
        text=generated.text,
        model_version=generated.model_version,
    )
    return ReplyOutcome.HELD


def _refuse(
    state: BotState, rules: ReplyRules, ledger: ReplyLedger, mention: Tweet, refusal: Refusal
) -> ReplyOutcome:
    """Record the outcome of a mention the rules refuse; an opt-out or opt-in with it."""
    if refusal.command is None:
        ledger.record_outcome(mention.id, refusal.outcome)
        log.info("reply.skipped", mention_id=mention.id, reason=str(refusal.outcome))
        return refusal.outcome
    pipe = state.redis.pipeline(transaction=True)  # the opt-out and the outcome, at once
    rules.record_command(mention, refusal.command, pipeline=pipe)
    ledger.record_outcome(mention.id, refusal.outcome, pipeline=pipe)
    pipe.execute()
    event = "reply.opted_out" if refusal.command is Command.OPT_OUT else "reply.opted_in"
    log.info(event, mention_id=mention.id, author=mention.author_handle)
    return refusal.outcome


def _not_claimed(mention: Tweet, claim: ReplyClaim) -> ReplyOutcome:
    """What a refused claim means for this poll (the claim recorded any outcome itself)."""
    if claim is ReplyClaim.FENCED:
        log.warning("reply.fenced", mention_id=mention.id, reason="lease_lost")
        return ReplyOutcome.FENCED
    if claim in CLAIM_SKIPS:
        log.info("reply.skipped", mention_id=mention.id, reason=str(CLAIM_SKIPS[claim]))
        return CLAIM_SKIPS[claim]
    return ReplyOutcome.PENDING  # INTENT_EXISTS: another process claimed it a moment ago


def _send(
    platform: Platform,
    ledger: ReplyLedger,
    settings: RepliesConfig,
    mention: Tweet,
    limits: ReplyLimits,
    generated: Generated,
) -> ReplyOutcome:
    """Send a claimed reply and record what came of it."""
    try:
        reply = platform.reply(mention, generated.text)
    except OutcomeUnknown as exc:
        log.warning("reply.outcome_unknown", mention_id=mention.id, error=str(exc))
        return ReplyOutcome.PENDING
    except ReplyNotAllowed as exc:
        ledger.record_outcome(mention.id, ReplyOutcome.REJECTED, error=str(exc))
        log.warning("reply.rejected", mention_id=mention.id, error=str(exc))
        return ReplyOutcome.REJECTED
    except PlatformError as exc:
        ledger.release(mention.id, limits)  # surely not sent: the next poll starts afresh
        platform_failed("reply.deferred", exc, mention_id=mention.id)
        if is_transient(exc):  # it will pass by itself: no attempt spent
            return ReplyOutcome.DEFERRED
        reason = f"{type(exc).__name__}: {exc}"
        return _failed_attempt(ledger, settings, mention, limits, ReplyOutcome.DEFERRED, reason)
    version = generated.model_version
    ledger.record_reply(mention, reply, model_version=version, outcome=ReplyOutcome.REPLIED)
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
    ledger: ReplyLedger,
    settings: RepliesConfig,
    mention: Tweet,
    limits: ReplyLimits,
    outcome: ReplyOutcome,
    reason: str,
) -> ReplyOutcome:
    """Count a poll that failed for a reason of this mention's own; after
    `replies.max_attempts` of them, give up so the cursor moves on to the others."""
    attempts = ledger.count_attempt(mention.id, reason)
    if attempts < settings.max_attempts:
        return outcome
    # An earlier attempt's claim, if any, is given back: its reply was not found.
    ledger.release(mention.id, limits)
    ledger.record_outcome(mention.id, ReplyOutcome.GAVE_UP)
    log.warning("reply.gave_up", mention_id=mention.id, attempts=attempts, reason=reason)
    return ReplyOutcome.GAVE_UP


def send_approved(
    platform: Platform,
    state: BotState,
    held: HeldLedger,
    *,
    settings: RepliesConfig | None = None,
    expire_seconds: float | None = None,
) -> list[ReplyOutcome]:
    """Send the held replies the operator approved, oldest approval first; expire first the
    ones left undecided longer than `expire_seconds`.

    Each goes through its mention's reply record like any reply: the claim (fenced, with the
    opt-out and the limits checked now), the reply, the outcome. An approved item whose
    earlier send may have gone out is looked for on the platform first, as a poll would.
    Stops at the first that the platform or the lease holds back (a budget, a rate limit,
    the network, a lost lease): the rest keep their order for the next poll.
    """
    settings = settings or RepliesConfig()
    if expire_seconds is not None:
        for item_id in held.expire_due(expire_seconds):
            log.info("review.expired", item=item_id)
    ledger = ReplyLedger(state, keep_days=settings.keep_days, fence=held.fence)
    rules = ReplyRules(state, settings)
    outcomes = []
    for item in held.approved():
        outcome = _send_approved_item(platform, held, ledger, rules, settings, item)
        outcomes.append(outcome)
        if outcome in (ReplyOutcome.DEFERRED, ReplyOutcome.FENCED):
            break
    return outcomes


def _send_approved_item(
    platform: Platform,
    held: HeldLedger,
    ledger: ReplyLedger,
    rules: ReplyRules,
    settings: RepliesConfig,
    item: HeldItem,
) -> ReplyOutcome:
    mention = item.mention_tweet()
    record = ledger.get(mention.id)
    version = str(item.provenance.get("model_version", ""))
    if record.outcome in (ReplyOutcome.REPLIED, ReplyOutcome.RECONCILED):
        held.mark_sent(item.id, record.tweet_id)  # sent before; the item was not marked yet
        return ReplyOutcome.ALREADY_REPLIED
    limits = rules.limits(mention)
    if record.is_open:  # an earlier send may have gone out: look before sending again
        looked = _reconcile(platform, ledger, settings, mention, record, version)
        if looked is ReplyOutcome.RECONCILED:
            held.mark_sent(item.id, ledger.get(mention.id).tweet_id)
        if looked is not None:
            return looked
        claim = ledger.claim(mention.id, version, limits, retry=True)
    else:
        claim = ledger.claim(mention.id, version, limits, held=True)
    if claim is ReplyClaim.INTENT_EXISTS and not record.is_open:
        # The record left the held outcome (it expired with `replies.keep_days`, or was
        # settled by hand): nothing says the mention is still waiting for this reply.
        held.mark_skipped(item.id, f"its reply record is no longer held ({record.outcome!r})")
        return ReplyOutcome.ALREADY_REPLIED
    if claim is not ReplyClaim.CLAIMED:
        outcome = _not_claimed(mention, claim)
        if outcome not in WAIT_OUTCOMES:
            held.mark_skipped(item.id, str(outcome))
        return outcome
    approved = Generated(item.final_text, version)
    outcome = _send(platform, ledger, settings, mention, limits, approved)
    if outcome is ReplyOutcome.REPLIED:
        held.mark_sent(item.id, ledger.get(mention.id).tweet_id)
    elif outcome not in WAIT_OUTCOMES:  # X refused it for good, or it failed too often
        held.mark_skipped(item.id, str(outcome))
    return outcome
