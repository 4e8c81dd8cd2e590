"""Scheduled post slots: one record per post the cadence calls for (see `bot.ledger`)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from enum import StrEnum
from string import Template

from bot.lease import FENCE_CHECK, Fence, fence_args
from bot.ledger.lua import lua_strings
from bot.platform.base import Tweet
from bot.state import BotState, PostedTweet

DAY_SECONDS = 24 * 3600
# A closed slot is only history (the posted stream holds the post): keep it a while for
# the operator, then let Redis drop it.
SLOT_KEEP_SECONDS = 60 * DAY_SECONDS


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
""").substitute(lua_strings(SlotClaim))

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
