"""X's automation rules for replies and posts, enforced in code rather than hoped for.

- Reply only when summoned: the mention's text names the bot's handle. (X refuses replies to
  posts that did not mention the bot; checking first spends no call on a certain refusal.)
- Reply to the mention's author, in reply to the mention, never to the bot itself, at most
  once per mention (the reply record in `bot.replies`).
- At most `replies.per_conversation_cap` replies in one conversation, and after answering
  someone, skip their mentions for `replies.author_cooldown_seconds`: two bots answering
  each other stop after a few rounds.
- Generated text never mentions anyone: the cleaning placeholders (`<user>`, `<url>`) and any
  @handle a model invents are removed before a post or reply is sent.

The cap and the cooldown are claimed in the same Redis step that records the reply intent,
and given back if the reply was surely not sent.
"""

from __future__ import annotations

import re
import time
from enum import StrEnum

from bot.config import RepliesConfig
from bot.platform.base import Tweet
from bot.state import BotState

CONVERSATION_TTL_SECONDS = 14 * 24 * 3600
_HANDLE = re.compile(r"(?<![A-Za-z0-9_])[@＠][A-Za-z0-9_]+")
_WHITESPACE = re.compile(r"\s+")


class Claim(StrEnum):
    CLAIMED = "claimed"
    INTENT_EXISTS = "intent_exists"
    CONVERSATION_CAP = "conversation_cap"
    AUTHOR_COOLDOWN = "author_cooldown"


def is_summoned(mention: Tweet, handle: str) -> bool:
    """The mention's text names `@handle` (any case), as a whole handle."""
    pattern = rf"(?<![A-Za-z0-9_])[@＠]{re.escape(handle)}(?![A-Za-z0-9_])"
    return re.search(pattern, mention.text, re.IGNORECASE) is not None


# KEYS: the reply record, the conversation's reply count, the author's cooldown.
# ARGV: now, model version, cap, cooldown ms, conversation ttl s.
_CLAIM = """
if redis.call('HEXISTS', KEYS[1], 'intent_at') == 1 then return 'intent_exists' end
if tonumber(redis.call('GET', KEYS[2]) or '0') >= tonumber(ARGV[3]) then
  redis.call('HSET', KEYS[1], 'outcome', 'skipped_conversation_cap')
  return 'conversation_cap'
end
if tonumber(ARGV[4]) > 0 and redis.call('EXISTS', KEYS[3]) == 1 then
  redis.call('HSET', KEYS[1], 'outcome', 'skipped_author_cooldown')
  return 'author_cooldown'
end
redis.call('HSET', KEYS[1], 'intent_at', ARGV[1], 'model_version', ARGV[2])
redis.call('INCR', KEYS[2])
redis.call('EXPIRE', KEYS[2], tonumber(ARGV[5]))
if tonumber(ARGV[4]) > 0 then redis.call('SET', KEYS[3], ARGV[1], 'PX', ARGV[4]) end
return 'claimed'
"""

# Undo a claim whose reply surely did not go out (X refused it, the budget was spent).
_RELEASE = """
if redis.call('HEXISTS', KEYS[1], 'outcome') == 1 then return 0 end
local intent = redis.call('HGET', KEYS[1], 'intent_at')
if not intent then return 0 end
redis.call('HDEL', KEYS[1], 'intent_at', 'model_version')
if tonumber(redis.call('GET', KEYS[2]) or '0') > 0 then redis.call('DECR', KEYS[2]) end
if redis.call('GET', KEYS[3]) == intent then redis.call('DEL', KEYS[3]) end
return 1
"""


class ReplyGuard:
    """The Redis side of the rules: reply intent, conversation cap and author cooldown."""

    def __init__(self, state: BotState, settings: RepliesConfig) -> None:
        self.state = state
        self.settings = settings

    def claim(self, mention: Tweet, model_version: str) -> Claim:
        """Record the intent to answer `mention`, unless a cap or cooldown says no."""
        result = self.state.redis.eval(
            _CLAIM,
            3,
            *self._keys(mention),
            f"{time.time():.6f}",
            model_version,
            self.settings.per_conversation_cap,
            self.settings.author_cooldown_seconds * 1000,
            CONVERSATION_TTL_SECONDS,
        )
        return Claim(result.decode() if isinstance(result, bytes) else result)

    def release(self, mention: Tweet) -> None:
        self.state.redis.eval(_RELEASE, 3, *self._keys(mention))

    def _keys(self, mention: Tweet) -> tuple[str, str, str]:
        keys = self.state.keys
        conversation = mention.conversation_id or mention.id
        return (
            keys.reply(mention.id),
            keys.conversation_replies(conversation),
            keys.author_cooldown(mention.author_id),
        )
