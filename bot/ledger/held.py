"""The review queue's held items: a reply or a post candidate that waits for the operator.

A post candidate (`review.posts: hold`, id `post-<ns>`) has no mention and no reply record:
the post job posts the oldest approved one through its slot (`bot.posting`), recording the
slot on the item first, so a candidate whose slot closed is known to have gone out. What
follows is said of replies, and holds for candidates but for the reply record.

An item is one hash, `keys.review_item(id)`: the model's text, its provenance, the mention it
answers, and the operator's decision. Its id is the mention's (`reply-<mention id>`), so a
mention is held at most once, however often it is polled. The item's state moves one way:

    held ──approve──▶ approved ──the leader sends it──▶ sent | skipped
      ├──reject───▶ rejected
      └──expire───▶ expired (not decided within `review.expire_hours`)

Each step is one Lua script that moves the state only from the one before, so two approvals
(two tabs, two hosts) approve once, and an approval that races an expiry loses or wins whole.
Holding sets the mention's reply record to the `held` outcome with the item's id in the same
step: the mentions cursor moves past it, and the poll never answers it again. Rejecting or
expiring settles that record (`declined`, `expired`); sending goes through the reply record's
own claim (`ReplyLedger.claim(held=True)`: the lease, the opt-out and the limits checked at the
moment of sending, not of holding), so an approved reply goes out exactly once, like any other.

Sorted sets index the items by state, scored by when they got there: `review_held` (oldest
first, what the operator reads), `review_approved` (what the leader sends next) and
`review_decided` (what `parrotbot review export` writes). A decided item's hash expires after
`review.keep_days`; the decided index is trimmed to the same window.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from string import Template
from typing import Any

from bot.lease import FENCE_CHECK, Fence, fence_args
from bot.ledger.lua import lua_strings
from bot.ledger.replies import ReplyOutcome
from bot.ledger.slots import DAY_SECONDS
from bot.platform.base import Tweet
from bot.state import BotState


class HeldState(StrEnum):
    HELD = "held"  # waiting for the operator
    APPROVED = "approved"  # the leader sends it: a reply at its next poll, a post next slot
    REJECTED = "rejected"
    EXPIRED = "expired"  # not decided within `review.expire_hours`
    SENT = "sent"  # the reply went out (or was found on X after a lost answer)
    SKIPPED = "skipped"  # approved, but not sendable when its turn came (an opt-out, a limit)


# The states an operator's decision can no longer change.
DECIDED = frozenset(HeldState) - {HeldState.HELD}


@dataclass(frozen=True)
class HeldItem:
    id: str
    state: HeldState
    text: str  # what the model wrote
    final_text: str  # what goes out: the text, or the operator's edit
    held_at: float
    mention: dict[str, Any]  # the Tweet it answers, as `Tweet` fields
    provenance: dict[str, Any] = field(default_factory=dict)
    decided_at: float | None = None
    decided_by: str = ""
    reason: str = ""  # a rejection's reason, or why an approved item was skipped
    tweet_id: str = ""  # the reply or post, once sent
    kind: str = "reply"  # or "post": a scheduled post's candidate (`review.posts: hold`)
    slot: str = ""  # a post: the slot it was last tried in (`bot.ledger.slots`)

    @property
    def edited(self) -> bool:
        return self.state in DECIDED and self.final_text != self.text

    @property
    def mention_id(self) -> str:
        return str(self.mention["id"])  # a reply's (a post answers no mention)

    def mention_tweet(self) -> Tweet:
        return Tweet(**self.mention)

    def as_json(self) -> dict[str, Any]:
        """The item as `review list --json` and `review export` write it."""
        return {
            "id": self.id,
            "kind": self.kind,
            "state": str(self.state),
            "text": self.text,
            "final_text": self.final_text,
            "edited": self.edited,
            "held_at": self.held_at,
            "decided_at": self.decided_at,
            "decided_by": self.decided_by,
            "reason": self.reason,
            "tweet_id": self.tweet_id,
            "mention": self.mention,
            "provenance": self.provenance,
        }


class HoldAnswer(StrEnum):
    HELD = "held"
    EXISTS = "exists"  # the mention was held before: one item per mention
    FENCED = "fenced"  # the lease is no longer ours: nothing held (FENCE_CHECK's answer)


def reply_item_id(mention_id: str) -> str:
    return f"reply-{mention_id}"


POST_PREFIX = "post-"


def _kind_of(item_id: str) -> str:
    return "post" if item_id.startswith(POST_PREFIX) else "reply"


# KEYS: lease, the item, the held index, the mention's reply record.
# ARGV: fence token, item id, held_at, text, mention JSON, provenance JSON, reply record ttl.
_HOLD = FENCE_CHECK + Template("""
if redis.call('EXISTS', KEYS[2]) == 1 then return $HoldAnswer_EXISTS end
redis.call('HSET', KEYS[2], 'state', $HeldState_HELD, 'text', ARGV[4], 'final_text', ARGV[4],
           'held_at', ARGV[3], 'mention', ARGV[5], 'provenance', ARGV[6])
redis.call('ZADD', KEYS[3], ARGV[3], ARGV[2])
redis.call('HSET', KEYS[4], 'outcome', $ReplyOutcome_HELD, 'held', ARGV[2])
redis.call('EXPIRE', KEYS[4], ARGV[7])
return $HoldAnswer_HELD
""").substitute(lua_strings(HeldState, ReplyOutcome, HoldAnswer))

# KEYS: lease, the item, the held index. ARGV: fence token, item id, held_at, text,
# provenance JSON. A post candidate answers no mention: no reply record to settle.
_HOLD_POST = FENCE_CHECK + Template("""
redis.call('HSET', KEYS[2], 'state', $HeldState_HELD, 'text', ARGV[4],
           'final_text', ARGV[4], 'held_at', ARGV[3], 'mention', '{}', 'provenance', ARGV[5])
redis.call('ZADD', KEYS[3], ARGV[3], ARGV[2])
return $HoldAnswer_HELD
""").substitute(lua_strings(HeldState, HoldAnswer))

# An operator's decision, or an expiry: only a held item moves; the answer is the state found.
# KEYS: the item, the held index, the index it moves to, the decided index, the mention's
# reply record.
# ARGV: new state, decided_at, final text ('' keeps it), decided_by, reason, item id, the
# record's new outcome ('' leaves the record as it is: an approval, which the send settles),
# item ttl, record ttl.
_DECIDE = Template("""
local state = redis.call('HGET', KEYS[1], 'state')
if state ~= $HeldState_HELD then return state or '' end
redis.call('HSET', KEYS[1], 'state', ARGV[1], 'decided_at', ARGV[2], 'decided_by', ARGV[4],
           'reason', ARGV[5])
if ARGV[3] ~= '' then redis.call('HSET', KEYS[1], 'final_text', ARGV[3]) end
redis.call('EXPIRE', KEYS[1], ARGV[8])
redis.call('ZREM', KEYS[2], ARGV[6])
redis.call('ZADD', KEYS[3], ARGV[2], ARGV[6])
if KEYS[3] ~= KEYS[4] then redis.call('ZADD', KEYS[4], ARGV[2], ARGV[6]) end
if ARGV[7] ~= '' then
  redis.call('HSET', KEYS[5], 'outcome', ARGV[7])
  redis.call('EXPIRE', KEYS[5], ARGV[9])
end
return state
""").substitute(lua_strings(HeldState))


class HeldLedger:
    """The held items of one account (see the module docstring).

    `reply_ttl` is the reply records' TTL (`replies.keep_days`), renewed on every write to a
    record; `keep_days` (`review.keep_days`) is how long a decided item is kept for export.
    """

    def __init__(
        self, state: BotState, *, keep_days: int, reply_keep_days: int, fence: Fence | None = None
    ) -> None:
        self.state = state
        self.fence = fence
        self.item_ttl = keep_days * DAY_SECONDS
        self.reply_ttl = reply_keep_days * DAY_SECONDS

    # --- the leader's side: hold, send, expire ---------------------------------------
    def hold_reply(self, mention: Tweet, text: str, provenance: dict[str, Any]) -> HoldAnswer:
        """Hold `text` as the reply to `mention`, unless it was held before or the lease is
        no longer this daemon's."""
        keys = self.state.keys
        item_id = reply_item_id(mention.id)
        lease_key, token = fence_args(self.fence, keys.lease)
        answer = self.state.redis.eval(
            _HOLD,
            4,
            lease_key,
            keys.review_item(item_id),
            keys.review_held,
            keys.reply(mention.id),
            token,
            item_id,
            f"{time.time():.3f}",
            text,
            json.dumps(asdict(mention)),
            json.dumps(provenance, default=str),
            self.reply_ttl,
        )
        return HoldAnswer(answer.decode() if isinstance(answer, bytes) else answer)

    def hold_post(self, text: str, provenance: dict[str, Any]) -> str | None:
        """Hold `text` as a candidate for a scheduled post; its id (None: fenced)."""
        keys = self.state.keys
        item_id = f"{POST_PREFIX}{time.time_ns()}"
        lease_key, token = fence_args(self.fence, keys.lease)
        answer = self.state.redis.eval(
            _HOLD_POST,
            3,
            lease_key,
            keys.review_item(item_id),
            keys.review_held,
            token,
            item_id,
            f"{time.time():.3f}",
            text,
            json.dumps(provenance, default=str),
        )
        held = (answer.decode() if isinstance(answer, bytes) else answer) == HoldAnswer.HELD
        return item_id if held else None

    def held_posts_count(self) -> int:
        """Post candidates waiting for a decision."""
        ids = self.state.redis.zrange(self.state.keys.review_held, 0, -1)
        return sum(1 for item_id in ids if _kind_of(item_id) == "post")

    def mark_slot(self, item_id: str, slot_id: str) -> None:
        """An approved post is about to be tried in `slot_id`: once that slot is closed, the
        post went out (`bot.posting` settles it), whichever leader closed it."""
        self.state.redis.hset(self.state.keys.review_item(item_id), "slot", slot_id)

    def approved(self, kind: str = "reply") -> list[HeldItem]:
        """The approved items of `kind` not yet sent, in the order they were approved (an id
        whose hash expired, unsent for `keep_days`, leaves the index)."""
        keys = self.state.keys
        items = []
        ids = self.state.redis.zrange(keys.review_approved, 0, -1)
        for item_id in (i for i in ids if _kind_of(i) == kind):
            item = self.get(item_id)
            if item is None:
                self.state.redis.zrem(keys.review_approved, item_id)
            else:
                items.append(item)
        return items

    def approved_count(self) -> int:
        return int(self.state.redis.zcard(self.state.keys.review_approved))

    def mark_sent(self, item_id: str, tweet_id: str) -> None:
        self._settle(item_id, HeldState.SENT, tweet_id=tweet_id)

    def mark_skipped(self, item_id: str, reason: str) -> None:
        self._settle(item_id, HeldState.SKIPPED, reason=reason)

    def expire_due(self, expire_seconds: float, now: float | None = None) -> list[str]:
        """Expire the items held longer than `expire_seconds`; their ids. Also trims the
        decided index to `keep_days` (the hashes expire by themselves)."""
        now = time.time() if now is None else now
        keys = self.state.keys
        due = self.state.redis.zrangebyscore(keys.review_held, "-inf", now - expire_seconds)
        expired = [
            item_id
            for item_id in due
            if self._decide(item_id, HeldState.EXPIRED, by="expiry", outcome=ReplyOutcome.EXPIRED)
            == HeldState.HELD
        ]
        self.state.redis.zremrangebyscore(keys.review_decided, "-inf", now - self.item_ttl)
        return expired

    # --- the operator's side: read, approve, reject ----------------------------------
    def get(self, item_id: str) -> HeldItem | None:
        return _item(item_id, self.state.redis.hgetall(self.state.keys.review_item(item_id)))

    def _many(self, ids: list[str]) -> list[HeldItem]:
        """The items of `ids` in one round trip (a page of the queue is a hundred of them)."""
        pipe = self.state.redis.pipeline(transaction=False)
        for item_id in ids:
            pipe.hgetall(self.state.keys.review_item(item_id))
        found = (_item(i, record) for i, record in zip(ids, pipe.execute(), strict=True))
        return [item for item in found if item is not None]

    def held(self, offset: int = 0, count: int = -1) -> list[HeldItem]:
        """Held items, oldest first (`count` -1: all from `offset`)."""
        end = -1 if count < 0 else offset + count - 1
        ids = self.state.redis.zrange(self.state.keys.review_held, offset, end)
        return self._many(ids)

    def held_count(self) -> int:
        return int(self.state.redis.zcard(self.state.keys.review_held))

    def decided(self) -> list[HeldItem]:
        """Every decided item still kept, oldest decision first."""
        ids = self.state.redis.zrange(self.state.keys.review_decided, 0, -1)
        return self._many(ids)

    def recent_decisions(self, count: int) -> list[HeldItem]:
        """The `count` latest decisions, newest first."""
        ids = self.state.redis.zrevrange(self.state.keys.review_decided, 0, count - 1)
        return self._many(ids)

    def approve(self, item_id: str, *, text: str | None = None, by: str) -> str:
        """Approve a held item, with `text` in place of the model's; the state it was in
        (`held` means this call approved it; anything else: nothing changed)."""
        return self._decide(item_id, HeldState.APPROVED, by=by, text=text or "")

    def reject(self, item_id: str, *, reason: str = "", by: str) -> str:
        """Reject a held item (its mention is settled unanswered); the state it was in."""
        return self._decide(
            item_id, HeldState.REJECTED, by=by, reason=reason, outcome=ReplyOutcome.DECLINED
        )

    # --- the scripts' callers ------------------------------------------------------------
    def _decide(
        self,
        item_id: str,
        to: HeldState,
        *,
        by: str,
        text: str = "",
        reason: str = "",
        outcome: ReplyOutcome | None = None,
    ) -> str:
        keys = self.state.keys
        target = keys.review_approved if to is HeldState.APPROVED else keys.review_decided
        mention_id = item_id.removeprefix("reply-")
        if _kind_of(item_id) == "post":  # no mention, so no reply record to settle
            outcome, record = None, keys.review_item(item_id)
        else:
            record = keys.reply(mention_id)
        answer = self.state.redis.eval(
            _DECIDE,
            5,
            keys.review_item(item_id),
            keys.review_held,
            target,
            keys.review_decided,
            record,
            str(to),
            f"{time.time():.6f}",  # the approved index keeps approval order
            text,
            by,
            reason,
            item_id,
            str(outcome) if outcome is not None else "",
            self.item_ttl,
            self.reply_ttl,
        )
        return answer.decode() if isinstance(answer, bytes) else str(answer)

    def _settle(self, item_id: str, to: HeldState, *, tweet_id: str = "", reason: str = "") -> None:
        """An approved item's end: sent or skipped, out of the approved index."""
        keys = self.state.keys
        fields = {"state": str(to), **({"tweet_id": tweet_id} if tweet_id else {})}
        if reason:
            fields["reason"] = reason
        pipe = self.state.redis.pipeline(transaction=True)
        pipe.hset(keys.review_item(item_id), mapping=fields)
        pipe.expire(keys.review_item(item_id), self.item_ttl)
        pipe.zrem(keys.review_approved, item_id)
        pipe.execute()


def _item(item_id: str, record: dict[str, str]) -> HeldItem | None:
    """An item from its hash; None for an id whose hash expired."""
    if not record:
        return None
    decided_at = record.get("decided_at")
    return HeldItem(
        id=item_id,
        state=HeldState(record["state"]),
        text=record.get("text", ""),
        final_text=record.get("final_text", ""),
        held_at=float(record.get("held_at", 0)),
        mention=json.loads(record.get("mention", "{}")),
        provenance=json.loads(record.get("provenance", "{}")),
        decided_at=float(decided_at) if decided_at else None,
        decided_by=record.get("decided_by", ""),
        reason=record.get("reason", ""),
        tweet_id=record.get("tweet_id", ""),
        kind=_kind_of(item_id),  # the id says it: one owner for the kind
        slot=record.get("slot", ""),
    )
