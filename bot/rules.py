"""X's automation rules for replies and posts, enforced in code rather than hoped for.

- Reply only when summoned: the mention's own words name the bot's handle. (X refuses replies
  to posts that did not mention the bot; checking first spends no call on a certain refusal.)
  A retweet is never a summons, though X serves it in the mentions timeline (its text is
  `RT @author: …`); a quote summons only when the quoter's own words, not the quoted part or
  the link X appends, name the bot.
- Reply to the mention's author, in reply to the mention, never to the bot itself, at most
  once per mention (the reply record in `bot.ledger`).
- Anyone can opt out: `@bot stop` (`replies.opt_out_words`) records the author, and the bot
  never replies to them again until `@bot start` (`replies.opt_in_words`).
- At most `replies.per_conversation_cap` replies in one conversation, and after answering
  someone, skip their mentions for `replies.author_cooldown_seconds`: two bots answering
  each other stop after a few rounds.
- Generated text never mentions anyone: the cleaning placeholders (`<user>`, `<url>`) and any
  @handle a model invents are removed before a post or reply is sent.

This module decides and names; it does not write the reply record. The opt-out, the cap and
the cooldown are handed to the ledger's claim as `ReplyLimits` and checked there, in the same
Redis step that records the intent, behind the poster lease's fence.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from bot.config import RepliesConfig
from bot.ledger import ReplyLimits, ReplyOutcome
from bot.platform.base import Tweet, User
from bot.state import BotState

CONVERSATION_TTL_SECONDS = 14 * 24 * 3600
_RETWEET_TEXT = re.compile(r"^\s*RT\s+[@＠][A-Za-z0-9_]+:", re.IGNORECASE)
# What a quote's text holds besides the quoter's words: the link to the quoted post X
# appends, and (in the older hand-made form) the quoted words in quotation marks.
_QUOTED_PART = re.compile(r"\"[^\"]*\"|“[^”]*”|«[^»]*»|https?://\S+")


class Command(StrEnum):
    """A mention that asks the bot for something other than a reply."""

    OPT_OUT = "opt_out"
    OPT_IN = "opt_in"


_COMMAND_OUTCOMES = {Command.OPT_OUT: ReplyOutcome.OPTED_OUT, Command.OPT_IN: ReplyOutcome.OPTED_IN}


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


@dataclass(frozen=True)
class Refusal:
    """Why a mention gets no reply: the outcome to record, and an opt-out or opt-in to record
    with it."""

    outcome: ReplyOutcome
    command: Command | None = None
    # The bot never answers itself or a retweet. A mention whose earlier attempt may have gone
    # out passed the other rules when it was claimed: it is reconciled, not refused (an opt-out
    # since then is caught by the claim if a reply is still to be sent).
    holds_on_retry: bool = False


class ReplyRules:
    """The rules for one account: who may be answered, the opt-outs, and the limits."""

    def __init__(self, state: BotState, settings: RepliesConfig) -> None:
        self.state = state
        self.settings = settings

    def refusal(self, mention: Tweet, me: User) -> Refusal | None:
        """Why `mention` must get no reply, the first rule that says so; None: it may get one.

        Read only: the caller records the refusal (`record_command` for an opt-out or opt-in).
        """
        if mention.author_id == me.id:
            return Refusal(ReplyOutcome.SKIPPED_SELF, holds_on_retry=True)
        if is_retweet(mention):
            return Refusal(ReplyOutcome.SKIPPED_RETWEET, holds_on_retry=True)
        if not is_summoned(mention, me.handle):
            return Refusal(ReplyOutcome.SKIPPED_NOT_SUMMONED)
        kind = command(mention, me.handle, self.settings)
        if kind is not None:
            return Refusal(_COMMAND_OUTCOMES[kind], command=kind)
        if self.is_opted_out(mention):  # checked again in the claim, which decides
            return Refusal(ReplyOutcome.SKIPPED_OPTED_OUT)
        return None

    def limits(self, mention: Tweet) -> ReplyLimits:
        """What the ledger's claim must check for `mention` (no Redis call)."""
        keys = self.state.keys
        cooldown = self.settings.author_cooldown_seconds
        return ReplyLimits(
            author_id=mention.author_id,
            opted_out_key=keys.opted_out,
            conversation_key=keys.conversation_replies(mention.conversation_id or mention.id),
            per_conversation_cap=self.settings.per_conversation_cap,
            conversation_ttl_seconds=CONVERSATION_TTL_SECONDS,
            cooldown_key=keys.author_cooldown(mention.author_id),
            cooldown_ms=cooldown * 1000,
        )

    def is_opted_out(self, mention: Tweet) -> bool:
        return bool(self.state.redis.hexists(self.state.keys.opted_out, mention.author_id))

    def record_command(self, mention: Tweet, kind: Command, *, pipeline: Any = None) -> None:
        """Opt the mention's author out (or back in). With a `pipeline`, the write joins the
        caller's MULTI (the one that records the mention's outcome)."""
        keys = self.state.keys
        target = pipeline if pipeline is not None else self.state.redis
        if kind is Command.OPT_OUT:
            entry = {"handle": mention.author_handle, "at": time.time(), "mention_id": mention.id}
            target.hset(keys.opted_out, mention.author_id, json.dumps(entry))
        else:
            target.hdel(keys.opted_out, mention.author_id)


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
