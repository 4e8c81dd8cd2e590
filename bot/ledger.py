"""The ledger: the one owner of every record of an intent to post and of its outcome.

A record written from several modules is a protocol nobody can see whole (DESIGN.md, "The
reply ledger"), so each kind of record is read and written here and nowhere else: its Redis
hash, its fields, its Lua scripts, its TTL and the enums of its claims and outcomes. Two kinds
live here today, each a record class, a claim enum, an outcome enum and a ledger class:

- a scheduled post's slot (`PostSlot`, `SlotClaim`, `SlotOutcome`, `PostLedger`);
- a mention's reply record (`ReplyRecord`, `ReplyClaim`, `ReplyOutcome`, `ReplyLedger`).

The review queue's held items ([console] issue) are to be the third, in the same shape: a
candidate waiting for the operator, whose approval takes the claim of its post slot or mention
above, so an approved item goes out through the same exactly-once path.

Every claim is one Lua script that starts with the poster lease's fencing check
(`bot.lease.FENCE_CHECK`, which answers 'fenced'): a daemon that lost its lease claims nothing.
The strings a script writes or answers are generated from the enums below, never copied.

**Post slots.** A slot is one scheduled post: the post that follows the cadence point in
Redis (`keys.last_post`, the time the previous slot closed, or `keys.post_schedule_start`
before the first). Its id is that point's stored text, so every attempt at the same post
(the next firing after a lost answer, a new leader after a crash) maps to the same record,
whichever daemon makes it and whatever the post job's scheduled run time was. The scheduled
run time would not do: APScheduler 3 does not hand it to the job, and a new leader clamps an
overdue run to "now", so two attempts at one post would carry two run times; a cadence-based
due time would change with a config edit of the interval and orphan an open slot.

A slot's record is a hash: the intent (`text`, `model_version`, `intent_at`, `since_id`: the
newest tweet in the posted history when the intent was made, which bounds the reconciling
read, and `attempts`) is written before the POST by one fenced Lua script; the outcome
(`tweet_id`, `outcome`) after, in one MULTI with the posted history and the new cadence
point, which is what opens the next slot. A slot with an intent and no outcome is open: the
post may exist, so it is reconciled against the bot's own timeline before anything is posted.

**Reply records.** One hash per mention, `keys.reply(mention_id)`: the intent (`intent_at`,
`model_version`) is claimed before the reply is sent, and the outcome (`outcome`, and for a
reply `tweet_id`, in one MULTI with the posted history) recorded after. A mention that gets
no reply has only an `outcome`; a refused one also its `error`; a poll that failed for a
reason of the mention's own counts `attempts` and keeps its `last_reason`. An intent without
an outcome is open: the reply may exist, so it is looked for before anything is sent again.
The claim checks, in the same Redis step, the limits `bot.rules` names (`ReplyLimits`: the
opt-out, the conversation cap, the author cooldown), so an opt-out that lands while a reply is
being generated still wins. Every write renews the record's TTL of `replies.keep_days`.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from enum import StrEnum
from string import Template
from typing import Any

from bot.lease import FENCE_CHECK, Fence, fence_args
from bot.platform.base import Tweet
from bot.state import BotState, PostedTweet

DAY_SECONDS = 24 * 3600
# A closed slot is only history (the posted stream holds the post): keep it a while for
# the operator, then let Redis drop it.
SLOT_KEEP_SECONDS = 60 * DAY_SECONDS


def _lua_strings(*enums: type[StrEnum]) -> dict[str, str]:
    """`$<enum>_<member>` -> the member's value as a Lua string literal, for `Template`."""
    return {
        f"{enum.__name__}_{member.name}": json.dumps(str(member))
        for enum in enums
        for member in enum
    }


# --- scheduled post slots -------------------------------------------------------------


class SlotOutcome(StrEnum):
    POSTED = "posted"  # X (or the outbox) answered the POST
    RECONCILED = "reconciled"  # the answer was lost; the post was found on the timeline


class SlotClaim(StrEnum):
    CLAIMED = "claimed"  # the intent is recorded: this attempt may POST
    FENCED = "fenced"  # the lease is no longer ours: post nothing (FENCE_CHECK's answer)
    TAKEN = "taken"  # another attempt changed the slot since it was read: post nothing
    CLOSED = "closed"  # the slot already has its outcome


@dataclass(frozen=True)
class PostSlot:
    id: str
    text: str = ""
    model_version: str = ""
    intent_at: str = ""  # epoch seconds as stored; "" before any intent
    since_id: str = ""
    attempts: int = 0
    tweet_id: str = ""
    outcome: str = ""

    @property
    def is_open(self) -> bool:
        """An attempt was made and nobody knows yet whether it went out."""
        return bool(self.intent_at) and not self.outcome

    def age(self, now: float | None = None) -> float:
        return (now if now is not None else time.time()) - float(self.intent_at)


# KEYS[1] lease, KEYS[2] the slot; ARGV[1] fence token (FENCE_CHECK), ARGV[2] the intent_at
# this attempt read ('' for a first attempt: compare-and-set, so two attempts never both
# claim), ARGV[3..6] intent_at, text, model_version, since_id.
_CLAIM_SLOT = FENCE_CHECK + Template("""
if redis.call('HEXISTS', KEYS[2], 'outcome') == 1 then return $SlotClaim_CLOSED end
local seen = redis.call('HGET', KEYS[2], 'intent_at') or ''
if seen ~= ARGV[2] then return $SlotClaim_TAKEN end
redis.call('HSET', KEYS[2], 'intent_at', ARGV[3], 'text', ARGV[4], 'model_version', ARGV[5],
           'since_id', ARGV[6])
redis.call('HINCRBY', KEYS[2], 'attempts', 1)
return $SlotClaim_CLAIMED
""").substitute(_lua_strings(SlotClaim))

# KEYS[1] the slot; ARGV[1] the intent_at of the attempt that is surely not sent.
_RELEASE_SLOT = """
if redis.call('HGET', KEYS[1], 'intent_at') == ARGV[1]
   and redis.call('HEXISTS', KEYS[1], 'outcome') == 0 then
  redis.call('HDEL', KEYS[1], 'intent_at', 'text', 'model_version', 'since_id')
  return 1
end
return 0
"""


class PostLedger:
    """The scheduled post slots of one account (see the module docstring)."""

    def __init__(self, state: BotState, fence: Fence | None = None) -> None:
        self.state = state
        self.fence = fence

    def cadence_point(self, *, start: bool = False) -> str | None:
        """The stored text of the point the current slot follows; `start` sets the schedule's
        start when nothing was posted yet (the first leader's scheduling time)."""
        keys, client = self.state.keys, self.state.redis
        point = client.get(keys.last_post)
        if point is None and start:
            client.set(keys.post_schedule_start, f"{time.time():.3f}", nx=True)
        return point if point is not None else client.get(keys.post_schedule_start)

    def current(self) -> PostSlot:
        """The slot the next post belongs to (read, or a fresh one)."""
        slot_id = self.cadence_point(start=True)
        assert slot_id is not None  # set just above
        return self.read(slot_id)

    def peek(self) -> PostSlot | None:
        """The current slot without writing anything; None before posting was scheduled."""
        slot_id = self.cadence_point()
        return None if slot_id is None else self.read(slot_id)

    def read(self, slot_id: str) -> PostSlot:
        record = self.state.redis.hgetall(self.state.keys.post_slot(slot_id))
        return PostSlot(
            id=slot_id,
            text=record.get("text", ""),
            model_version=record.get("model_version", ""),
            intent_at=record.get("intent_at", ""),
            since_id=record.get("since_id", ""),
            attempts=int(record.get("attempts", 0)),
            tweet_id=record.get("tweet_id", ""),
            outcome=record.get("outcome", ""),
        )

    def claim(self, slot: PostSlot, text: str, model_version: str) -> tuple[SlotClaim, PostSlot]:
        """Record the intent to post `text` for `slot`, fenced; only CLAIMED may POST."""
        keys = self.state.keys
        lease_key, token = fence_args(self.fence, keys.lease)
        newest = self.state.recent_posted(1)
        since_id = newest[0]["tweet_id"] if newest else ""
        intent_at = f"{time.time():.3f}"
        answer = self.state.redis.eval(
            _CLAIM_SLOT,
            2,
            lease_key,
            keys.post_slot(slot.id),
            token,
            slot.intent_at,
            intent_at,
            text,
            model_version,
            since_id,
        )
        claimed = PostSlot(
            id=slot.id,
            text=text,
            model_version=model_version,
            intent_at=intent_at,
            since_id=since_id,
            attempts=slot.attempts + 1,
        )
        return SlotClaim(answer), claimed

    def release(self, slot: PostSlot) -> None:
        """Forget an attempt that surely did not go out, so the next firing starts afresh."""
        self.state.redis.eval(_RELEASE_SLOT, 1, self.state.keys.post_slot(slot.id), slot.intent_at)

    def close(self, slot: PostSlot, tweet: Tweet, outcome: SlotOutcome) -> None:
        """Record the post, its place in the history and the next cadence point, at once.

        A reconciled post went out about when its intent was made: the cadence counts from
        then, so the slot after it is not pushed back by how long the answer took to find.
        The next point is always later than this slot's own: written back as the same text
        (an intent in the millisecond the slot opened) or an earlier one (another daemon's
        clock behind), the point would name this closed slot, or an older one, and every
        later firing would be refused as closed.
        """
        keys = self.state.keys
        posted_at = float(slot.intent_at) if outcome is SlotOutcome.RECONCILED else time.time()
        next_point = f"{max(posted_at, float(slot.id) + 0.001):.3f}"
        pipe = self.state.redis.pipeline(transaction=True)
        pipe.hset(keys.post_slot(slot.id), mapping={"tweet_id": tweet.id, "outcome": outcome})
        pipe.expire(keys.post_slot(slot.id), SLOT_KEEP_SECONDS)
        self.state.record_posted(
            PostedTweet(
                tweet_id=tweet.id, text=tweet.text, kind="post", model_version=slot.model_version
            ),
            pipeline=pipe,
        )
        pipe.set(keys.last_post, next_point)
        pipe.execute()


# --- reply records ----------------------------------------------------------------------


class ReplyOutcome(StrEnum):
    """What became of one mention; all but the wait outcomes are recorded in its record."""

    REPLIED = "replied"
    ALREADY_REPLIED = "already_replied"  # an outcome was recorded before (any outcome)
    RECONCILED = "reconciled"  # a previous attempt's reply was found on the platform
    SKIPPED_SELF = "skipped_self"
    SKIPPED_RETWEET = "skipped_retweet"
    SKIPPED_NOT_SUMMONED = "skipped_not_summoned"
    SKIPPED_OPTED_OUT = "skipped_opted_out"  # the author opted out of replies
    SKIPPED_CONVERSATION_CAP = "skipped_conversation_cap"
    SKIPPED_AUTHOR_COOLDOWN = "skipped_author_cooldown"
    OPTED_OUT = "opted_out"  # the mention was an opt-out: recorded, not answered
    OPTED_IN = "opted_in"  # the mention was an opt-in: recorded, not answered
    REJECTED = "rejected"  # X refused this reply for good (the author did not mention the bot)
    GAVE_UP = "gave_up"  # failed `replies.max_attempts` polls for a reason of its own
    # The cursor stays at these; the mention is taken up again on the next poll:
    NOT_READY = "not_ready"  # no model, or no acceptable text
    PENDING = "pending"  # the reply may have gone out: reconcile before anything else
    DEFERRED = "deferred"  # surely not sent (budget, rate limit, credentials, network, refusal)
    FENCED = "fenced"  # this daemon lost the poster lease: nothing was claimed or sent


class ReplyClaim(StrEnum):
    CLAIMED = "claimed"  # the intent is recorded: this attempt may reply
    INTENT_EXISTS = "intent_exists"  # another attempt holds it, or (a retry) it has an outcome
    CONVERSATION_CAP = "conversation_cap"
    AUTHOR_COOLDOWN = "author_cooldown"
    OPTED_OUT = "opted_out"
    FENCED = "fenced"  # the lease is no longer ours: nothing claimed (FENCE_CHECK's answer)


# The claims that settle a mention, and the outcome the claim records for each.
CLAIM_SKIPS = {
    ReplyClaim.CONVERSATION_CAP: ReplyOutcome.SKIPPED_CONVERSATION_CAP,
    ReplyClaim.AUTHOR_COOLDOWN: ReplyOutcome.SKIPPED_AUTHOR_COOLDOWN,
    ReplyClaim.OPTED_OUT: ReplyOutcome.SKIPPED_OPTED_OUT,
}


@dataclass(frozen=True)
class ReplyLimits:
    """What a reply's claim checks beside its record, in the same Redis step.

    `bot.rules` says what they are for a mention (`ReplyRules.limits`); the ledger only
    enforces them, atomically with the intent.
    """

    author_id: str
    opted_out_key: str  # hash: author id -> opt-out entry
    conversation_key: str  # integer: replies made in the mention's conversation
    per_conversation_cap: int
    conversation_ttl_seconds: int
    cooldown_key: str  # set (to the intent's time) while the author is in cooldown
    cooldown_ms: int  # 0: no cooldown


@dataclass(frozen=True)
class ReplyRecord:
    mention_id: str
    intent_at: str = ""  # epoch seconds as stored; "" without an intent
    model_version: str = ""
    attempts: int = 0
    last_reason: str = ""
    outcome: str = ""
    tweet_id: str = ""
    error: str = ""

    @property
    def is_open(self) -> bool:
        """An attempt was claimed and nobody knows yet whether its reply went out."""
        return bool(self.intent_at) and not self.outcome

    def age(self, now: float | None = None) -> float:
        return (now if now is not None else time.time()) - float(self.intent_at)


# KEYS: the lease, the reply record, the opted-out authors, the conversation's reply count,
# the author's cooldown.
# ARGV: fence token, intent_at, model version, retry ('1': the record's earlier intent was not
# found on the platform), author id, cap, cooldown ms, conversation ttl s, record ttl s.
_CLAIM_REPLY = FENCE_CHECK + Template("""
local retry = ARGV[4] == '1'
if retry then
  if redis.call('HEXISTS', KEYS[2], 'outcome') == 1 then return $ReplyClaim_INTENT_EXISTS end
elseif redis.call('HEXISTS', KEYS[2], 'intent_at') == 1 then
  return $ReplyClaim_INTENT_EXISTS
end
local function skip(outcome, claim)
  redis.call('HSET', KEYS[2], 'outcome', outcome)
  redis.call('EXPIRE', KEYS[2], ARGV[9])
  return claim
end
if redis.call('HEXISTS', KEYS[3], ARGV[5]) == 1 then
  return skip($ReplyOutcome_SKIPPED_OPTED_OUT, $ReplyClaim_OPTED_OUT)
end
if not retry then
  if tonumber(redis.call('GET', KEYS[4]) or '0') >= tonumber(ARGV[6]) then
    return skip($ReplyOutcome_SKIPPED_CONVERSATION_CAP, $ReplyClaim_CONVERSATION_CAP)
  end
  if tonumber(ARGV[7]) > 0 and redis.call('EXISTS', KEYS[5]) == 1 then
    return skip($ReplyOutcome_SKIPPED_AUTHOR_COOLDOWN, $ReplyClaim_AUTHOR_COOLDOWN)
  end
end
redis.call('HSET', KEYS[2], 'intent_at', ARGV[2], 'model_version', ARGV[3])
redis.call('EXPIRE', KEYS[2], ARGV[9])
if not retry then
  redis.call('INCR', KEYS[4])
  redis.call('EXPIRE', KEYS[4], tonumber(ARGV[8]))
  if tonumber(ARGV[7]) > 0 then redis.call('SET', KEYS[5], ARGV[2], 'PX', ARGV[7]) end
end
return $ReplyClaim_CLAIMED
""").substitute(_lua_strings(ReplyClaim, ReplyOutcome))

# Undo a claim whose reply surely did not go out (X refused it, the budget was spent).
# KEYS: the reply record, the conversation's reply count, the author's cooldown.
# ARGV: record ttl s.
_RELEASE_REPLY = """
if redis.call('HEXISTS', KEYS[1], 'outcome') == 1 then return 0 end
local intent = redis.call('HGET', KEYS[1], 'intent_at')
if not intent then return 0 end
redis.call('HDEL', KEYS[1], 'intent_at', 'model_version')
if redis.call('EXISTS', KEYS[1]) == 1 then redis.call('EXPIRE', KEYS[1], ARGV[1]) end
if tonumber(redis.call('GET', KEYS[2]) or '0') > 0 then redis.call('DECR', KEYS[2]) end
if redis.call('GET', KEYS[3]) == intent then redis.call('DEL', KEYS[3]) end
return 1
"""


class ReplyLedger:
    """The reply records of one account (see the module docstring).

    With a `fence`, a claim succeeds only while the poster lease still holds its token. Every
    write renews the record's TTL of `keep_days` (`replies.keep_days`). A write that takes a
    `pipeline` queues onto it (the caller's MULTI) instead of running its own.
    """

    def __init__(self, state: BotState, *, keep_days: int, fence: Fence | None = None) -> None:
        self.state = state
        self.fence = fence
        self.record_ttl = keep_days * DAY_SECONDS  # seconds after the record's last write

    def get(self, mention_id: str) -> ReplyRecord:
        record = self.state.redis.hgetall(self.state.keys.reply(mention_id))
        return ReplyRecord(
            mention_id=mention_id,
            intent_at=record.get("intent_at", ""),
            model_version=record.get("model_version", ""),
            attempts=int(record.get("attempts", 0)),
            last_reason=record.get("last_reason", ""),
            outcome=record.get("outcome", ""),
            tweet_id=record.get("tweet_id", ""),
            error=record.get("error", ""),
        )

    def claim(
        self, mention_id: str, model_version: str, limits: ReplyLimits, *, retry: bool = False
    ) -> ReplyClaim:
        """Record the intent to answer the mention, unless the lease, an opt-out, a cap or a
        cooldown says no. `retry` renews the intent of an earlier attempt that was not found
        on the platform (it already counted towards the cap and the cooldown)."""
        lease_key, token = fence_args(self.fence, self.state.keys.lease)
        answer = self.state.redis.eval(
            _CLAIM_REPLY,
            5,
            lease_key,
            self.state.keys.reply(mention_id),
            limits.opted_out_key,
            limits.conversation_key,
            limits.cooldown_key,
            token,
            f"{time.time():.6f}",
            model_version,
            "1" if retry else "0",
            limits.author_id,
            limits.per_conversation_cap,
            limits.cooldown_ms,
            limits.conversation_ttl_seconds,
            self.record_ttl,
        )
        return ReplyClaim(answer.decode() if isinstance(answer, bytes) else answer)

    def release(self, mention_id: str, limits: ReplyLimits) -> None:
        """Give back a claim whose reply surely did not go out, with its count in the
        conversation and the author's cooldown, so the next poll starts afresh."""
        self.state.redis.eval(
            _RELEASE_REPLY,
            3,
            self.state.keys.reply(mention_id),
            limits.conversation_key,
            limits.cooldown_key,
            self.record_ttl,
        )

    def record_outcome(
        self,
        mention_id: str,
        outcome: ReplyOutcome,
        *,
        error: str | None = None,
        pipeline: Any = None,
    ) -> None:
        """Settle a mention that got no reply (skipped, a command, refused, given up)."""
        fields = {"outcome": str(outcome), **({"error": error} if error is not None else {})}
        self._write(mention_id, fields, pipeline)

    def record_reply(
        self, mention: Tweet, reply: Tweet, *, model_version: str, outcome: ReplyOutcome
    ) -> None:
        """The reply's id and outcome (replied or reconciled) with the posted history, at once."""
        pipe = self.state.redis.pipeline(transaction=True)
        self._write(mention.id, {"tweet_id": reply.id, "outcome": str(outcome)}, pipe)
        self.state.record_posted(
            PostedTweet(
                tweet_id=reply.id,
                text=reply.text,
                kind="reply",
                model_version=model_version,
                in_reply_to=mention.id,
            ),
            pipeline=pipe,
        )
        pipe.execute()

    def count_attempt(self, mention_id: str, reason: str) -> int:
        """Count a poll that failed for a reason of the mention's own; the attempts so far."""
        key = self.state.keys.reply(mention_id)
        pipe = self.state.redis.pipeline(transaction=True)
        pipe.hincrby(key, "attempts", 1)
        pipe.hset(key, "last_reason", reason)
        pipe.expire(key, self.record_ttl)
        return int(pipe.execute()[0])

    def _write(self, mention_id: str, fields: dict[str, str], pipeline: Any = None) -> None:
        key = self.state.keys.reply(mention_id)
        pipe = pipeline if pipeline is not None else self.state.redis.pipeline(transaction=True)
        pipe.hset(key, mapping=fields)
        pipe.expire(key, self.record_ttl)
        if pipeline is None:
            pipe.execute()


@dataclass(frozen=True)
class ReplyBacklog:
    awaiting_outcome: int  # an intent without an outcome: the next poll reconciles it
    gave_up: int  # given up after `replies.max_attempts`


def reply_backlog(state: BotState) -> ReplyBacklog:
    """What the account's reply records hold that an operator watches.

    A scan over the account's reply records; they are one small hash per mention and expire
    after `replies.keep_days`, so even a busy account's take a fraction of a second.
    """
    keys = list(state.redis.scan_iter(match=state.keys.reply("*"), count=1000))
    pipe = state.redis.pipeline(transaction=False)
    for key in keys:
        pipe.hmget(key, "intent_at", "outcome")
    fields = pipe.execute() if keys else []
    return ReplyBacklog(
        awaiting_outcome=sum(1 for intent, outcome in fields if intent and not outcome),
        gave_up=sum(1 for _intent, outcome in fields if outcome == ReplyOutcome.GAVE_UP),
    )
