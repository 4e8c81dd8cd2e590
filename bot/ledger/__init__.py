"""The ledger: the one owner of every record of an intent to post and of its outcome.

A record written from several modules is a protocol nobody can see whole (DESIGN.md, "The
reply ledger"), so each kind of record is read and written here and nowhere else: its Redis
hash, its fields, its Lua scripts, its TTL and the enums of its claims and outcomes. Three
kinds live here, a module each, each a record class, its enums and a ledger class:

- a scheduled post's slot (`slots`: `PostSlot`, `SlotClaim`, `SlotOutcome`, `PostLedger`);
- a mention's reply record (`replies`: `ReplyRecord`, `ReplyClaim`, `ReplyOutcome`,
  `ReplyLedger`);
- a reply held in the review queue (`held`: `HeldItem`, `HeldState`, `HeldLedger`): a
  candidate waiting for the operator, whose approval takes its mention's reply claim above,
  so an approved reply goes out through the same exactly-once path. Held posts, when they
  come, take their post slot's claim the same way.

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

from bot.ledger.replies import (
    CLAIM_SKIPS,
    ReplyBacklog,
    ReplyClaim,
    ReplyLedger,
    ReplyLimits,
    ReplyOutcome,
    ReplyRecord,
    reply_backlog,
)
from bot.ledger.slots import PostLedger, PostSlot, SlotClaim, SlotOutcome

__all__ = [
    "CLAIM_SKIPS",
    "PostLedger",
    "PostSlot",
    "ReplyBacklog",
    "ReplyClaim",
    "ReplyLedger",
    "ReplyLimits",
    "ReplyOutcome",
    "ReplyRecord",
    "SlotClaim",
    "SlotOutcome",
    "reply_backlog",
]
