"""Reply records: one per mention, intent before the reply and outcome after (see `bot.ledger`)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from enum import StrEnum
from string import Template
from typing import Any

from bot.lease import FENCE_CHECK, Fence, fence_args
from bot.ledger.lua import lua_strings
from bot.ledger.slots import DAY_SECONDS
from bot.platform.base import Tweet
from bot.state import BotState, PostedTweet


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
    HELD = "held"  # the reply waits in the review queue; sending it is the queue's (held.py)
    DECLINED = "declined"  # the operator rejected the held reply
    EXPIRED = "expired"  # the held reply was not decided within `review.expire_hours`
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
    held: str = ""  # the review queue's item for this mention, once it was held

    @property
    def is_open(self) -> bool:
        """An attempt was claimed and nobody knows yet whether its reply went out."""
        return bool(self.intent_at) and not self.outcome

    def age(self, now: float | None = None) -> float:
        return (now if now is not None else time.time()) - float(self.intent_at)


# KEYS: the lease, the reply record, the opted-out authors, the conversation's reply count,
# the author's cooldown.
# ARGV: fence token, intent_at, model version, mode ('0' a first attempt; '1' a retry: the
# record's earlier intent was not found on the platform; 'held' the first attempt at an
# approved held reply, whose record holds the `held` outcome until now), author id, cap,
# cooldown ms, conversation ttl s, record ttl s.
_CLAIM_REPLY = FENCE_CHECK + Template("""
local retry = ARGV[4] == '1'
if ARGV[4] == 'held' then
  -- Held, or held and then released (a send that surely did not go out: the record keeps
  -- its `held` item id with neither an outcome nor an intent).
  local outcome = redis.call('HGET', KEYS[2], 'outcome')
  if redis.call('HEXISTS', KEYS[2], 'intent_at') == 1
     or redis.call('HEXISTS', KEYS[2], 'held') == 0
     or (outcome and outcome ~= $ReplyOutcome_HELD) then
    return $ReplyClaim_INTENT_EXISTS
  end
  redis.call('HDEL', KEYS[2], 'outcome')
elseif retry then
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
""").substitute(lua_strings(ReplyClaim, ReplyOutcome))

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
            held=record.get("held", ""),
        )

    def claim(
        self,
        mention_id: str,
        model_version: str,
        limits: ReplyLimits,
        *,
        retry: bool = False,
        held: bool = False,
    ) -> ReplyClaim:
        """Record the intent to answer the mention, unless the lease, an opt-out, a cap or a
        cooldown says no. `retry` renews the intent of an earlier attempt that was not found
        on the platform (it already counted towards the cap and the cooldown). `held` is the
        first attempt at an approved held reply: its record's `held` outcome gives way to the
        intent (the limits are checked now, at sending, not when it was held)."""
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
            "held" if held else "1" if retry else "0",
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
