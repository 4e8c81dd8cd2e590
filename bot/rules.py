"""X's automation rules for replies and posts, enforced in code rather than hoped for.

- Reply only when summoned: the mention's own words name the bot's handle. (X refuses replies
  to posts that did not mention the bot; checking first spends no call on a certain refusal.)
  A retweet is never a summons, though X serves it in the mentions timeline (its text is
  `RT @author: …`); a quote summons only when the quoter's own words, not the quoted part or
  the link X appends, name the bot.
- Reply to the mention's author, in reply to the mention, never to the bot itself, at most
  once per mention (the reply record in `bot.replies`).
- Anyone can opt out: `@bot stop` (`replies.opt_out_words`) records the author, and the bot
  never replies to them again until `@bot start` (`replies.opt_in_words`).
- At most `replies.per_conversation_cap` replies in one conversation, and after answering
  someone, skip their mentions for `replies.author_cooldown_seconds`: two bots answering
  each other stop after a few rounds.
- Generated text never mentions anyone: the cleaning placeholders (`<user>`, `<url>`) and any
  @handle a model invents are removed before a post or reply is sent.

The opt-out, the cap and the cooldown are checked in the same Redis step that records the
reply intent, behind the poster lease's fence (`bot.lease.FENCE_CHECK`), and the claim is
given back if the reply was surely not sent.
"""

from __future__ import annotations

import json
import re
import time
from enum import StrEnum
from typing import Any

from bot.config import RepliesConfig
from bot.lease import FENCE_CHECK, Fence, fence_args
from bot.platform.base import Tweet
from bot.state import BotState

CONVERSATION_TTL_SECONDS = 14 * 24 * 3600
DAY_SECONDS = 24 * 3600
_RETWEET_TEXT = re.compile(r"^\s*RT\s+[@＠][A-Za-z0-9_]+:", re.IGNORECASE)
# What a quote's text holds besides the quoter's words: the link to the quoted post X
# appends, and (in the older hand-made form) the quoted words in quotation marks.
_QUOTED_PART = re.compile(r"\"[^\"]*\"|“[^”]*”|«[^»]*»|https?://\S+")


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


class Claim(StrEnum):
    CLAIMED = "claimed"
    INTENT_EXISTS = "intent_exists"
    CONVERSATION_CAP = "conversation_cap"
    AUTHOR_COOLDOWN = "author_cooldown"
    OPTED_OUT = "opted_out"
    FENCED = "fenced"


class Command(StrEnum):
    """A mention that asks the bot for something other than a reply."""

    OPT_OUT = "opt_out"
    OPT_IN = "opt_in"


def is_retweet(mention: Tweet) -> bool:
    """X marks a retweet with a `retweeted` reference; its text starts `RT @author:`."""
    return mention.is_retweet or _RETWEET_TEXT.match(mention.text) is not None


def own_words(mention: Tweet) -> str:
    """The author's own words: a quote without the quoted part and the link X appends."""
    return _QUOTED_PART.sub(" ", mention.text) if mention.is_quote else mention.text


def _handle_pattern(handle: str) -> str:
    return rf"(?<![A-Za-z0-9_])[@＠]{re.escape(handle)}(?![A-Za-z0-9_])"


def is_summoned(mention: Tweet, handle: str) -> bool:
    """The mention's own words name `@handle` (any case), as a whole handle; no retweet does."""
    if is_retweet(mention):
        return False
    return re.search(_handle_pattern(handle), own_words(mention), re.IGNORECASE) is not None


def command(mention: Tweet, handle: str, settings: RepliesConfig) -> Command | None:
    """An opt-out or opt-in word, as a whole word right after `@handle` (any case)."""
    if is_retweet(mention):
        return None
    text = own_words(mention)
    for kind, words in ((Command.OPT_OUT, settings.opt_out_words),
                        (Command.OPT_IN, settings.opt_in_words)):  # fmt: skip
        choices = "|".join(r"\s+".join(map(re.escape, word.split())) for word in words)
        pattern = rf"{_handle_pattern(handle)}[\s,:]+(?:{choices})(?![A-Za-z0-9_])"
        if re.search(pattern, text, re.IGNORECASE):
            return kind
    return None


# KEYS: the lease, the reply record, the conversation's reply count, the author's cooldown,
# the opted-out authors.
# ARGV: fence token, now, model version, cap, cooldown ms, conversation ttl s, record ttl s,
# author id, retry ('1': the record's earlier intent was not found on the platform), then the
# outcomes recorded for the cap, the cooldown and an opted-out author.
_CLAIM = (
    FENCE_CHECK
    + """
local retry = ARGV[9] == '1'
if retry then
  if redis.call('HEXISTS', KEYS[2], 'outcome') == 1 then return 'intent_exists' end
elseif redis.call('HEXISTS', KEYS[2], 'intent_at') == 1 then
  return 'intent_exists'
end
local function skip(outcome, claim)
  redis.call('HSET', KEYS[2], 'outcome', outcome)
  redis.call('EXPIRE', KEYS[2], ARGV[7])
  return claim
end
if redis.call('HEXISTS', KEYS[5], ARGV[8]) == 1 then return skip(ARGV[12], 'opted_out') end
if not retry then
  if tonumber(redis.call('GET', KEYS[3]) or '0') >= tonumber(ARGV[4]) then
    return skip(ARGV[10], 'conversation_cap')
  end
  if tonumber(ARGV[5]) > 0 and redis.call('EXISTS', KEYS[4]) == 1 then
    return skip(ARGV[11], 'author_cooldown')
  end
end
redis.call('HSET', KEYS[2], 'intent_at', ARGV[2], 'model_version', ARGV[3])
redis.call('EXPIRE', KEYS[2], ARGV[7])
if not retry then
  redis.call('INCR', KEYS[3])
  redis.call('EXPIRE', KEYS[3], tonumber(ARGV[6]))
  if tonumber(ARGV[5]) > 0 then redis.call('SET', KEYS[4], ARGV[2], 'PX', ARGV[5]) end
end
return 'claimed'
"""
)

# Undo a claim whose reply surely did not go out (X refused it, the budget was spent).
# KEYS: the reply record, the conversation's reply count, the author's cooldown.
# ARGV: record ttl s.
_RELEASE = """
if redis.call('HEXISTS', KEYS[1], 'outcome') == 1 then return 0 end
local intent = redis.call('HGET', KEYS[1], 'intent_at')
if not intent then return 0 end
redis.call('HDEL', KEYS[1], 'intent_at', 'model_version')
if redis.call('EXISTS', KEYS[1]) == 1 then redis.call('EXPIRE', KEYS[1], ARGV[1]) end
if tonumber(redis.call('GET', KEYS[2]) or '0') > 0 then redis.call('DECR', KEYS[2]) end
if redis.call('GET', KEYS[3]) == intent then redis.call('DEL', KEYS[3]) end
return 1
"""


class ReplyGuard:
    """The Redis side of the rules: reply intent, opt-outs, conversation cap, author cooldown.

    With a `fence`, a claim succeeds only while the poster lease still holds its token.
    """

    def __init__(self, state: BotState, settings: RepliesConfig, fence: Fence | None = None):
        self.state = state
        self.settings = settings
        self.fence = fence

    @property
    def record_ttl(self) -> int:
        """Seconds a reply record lives after its last write (`replies.keep_days`)."""
        return self.settings.keep_days * DAY_SECONDS

    def claim(self, mention: Tweet, model_version: str, *, retry: bool = False) -> Claim:
        """Record the intent to answer `mention`, unless the lease, an opt-out, a cap or a
        cooldown says no. `retry` renews the intent of an earlier attempt that was not found
        on the platform (it already counted towards the cap and the cooldown)."""
        lease_key, token = fence_args(self.fence, self.state.keys.lease)
        record, conversation, cooldown = self._keys(mention)
        result = self.state.redis.eval(
            _CLAIM,
            5,
            lease_key,
            record,
            conversation,
            cooldown,
            self.state.keys.opted_out,
            token,
            f"{time.time():.6f}",
            model_version,
            self.settings.per_conversation_cap,
            self.settings.author_cooldown_seconds * 1000,
            CONVERSATION_TTL_SECONDS,
            self.record_ttl,
            mention.author_id,
            "1" if retry else "0",
            ReplyOutcome.SKIPPED_CONVERSATION_CAP,
            ReplyOutcome.SKIPPED_AUTHOR_COOLDOWN,
            ReplyOutcome.SKIPPED_OPTED_OUT,
        )
        return Claim(result.decode() if isinstance(result, bytes) else result)

    def release(self, mention: Tweet) -> None:
        self.state.redis.eval(_RELEASE, 3, *self._keys(mention), self.record_ttl)

    def is_opted_out(self, mention: Tweet) -> bool:
        return bool(self.state.redis.hexists(self.state.keys.opted_out, mention.author_id))

    def record_command(self, mention: Tweet, kind: Command) -> ReplyOutcome:
        """Opt the author out (or back in) and record the mention's outcome, in one MULTI."""
        keys = self.state.keys
        outcome = ReplyOutcome.OPTED_OUT if kind is Command.OPT_OUT else ReplyOutcome.OPTED_IN
        entry = {"handle": mention.author_handle, "at": time.time(), "mention_id": mention.id}
        pipe = self.state.redis.pipeline(transaction=True)
        if kind is Command.OPT_OUT:
            pipe.hset(keys.opted_out, mention.author_id, json.dumps(entry))
        else:
            pipe.hdel(keys.opted_out, mention.author_id)
        pipe.hset(keys.reply(mention.id), "outcome", outcome)
        pipe.expire(keys.reply(mention.id), self.record_ttl)
        pipe.execute()
        return outcome

    def _keys(self, mention: Tweet) -> tuple[str, str, str]:
        keys = self.state.keys
        conversation = mention.conversation_id or mention.id
        return (
            keys.reply(mention.id),
            keys.conversation_replies(conversation),
            keys.author_cooldown(mention.author_id),
        )


def opted_out_authors(state: BotState) -> dict[str, dict[str, Any]]:
    """Author id -> {"handle", "at", "mention_id"} of everyone opted out of replies."""
    return {
        author_id: json.loads(raw)
        for author_id, raw in state.redis.hgetall(state.keys.opted_out).items()
    }


def remove_opt_out(state: BotState, handle: str) -> list[str]:
    """Opt `handle` (with or without @, any case) back in; the author ids that were removed."""
    wanted = handle.removeprefix("@").lower()
    ids = [
        author_id
        for author_id, entry in opted_out_authors(state).items()
        if str(entry.get("handle", "")).lower() == wanted
    ]
    if ids:
        state.redis.hdel(state.keys.opted_out, *ids)
    return ids
