"""The interface every platform implements: the local files today, X through tweepy next.

The daemon only ever talks to this interface, so the offline default exercises the same
scraping, posting and replying code paths that run against X.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


class PlatformError(Exception):
    """A platform call failed in a way the caller should log and move past."""


@dataclass(frozen=True)
class User:
    id: str
    handle: str


@dataclass(frozen=True)
class Tweet:
    id: str
    text: str
    author_id: str
    author_handle: str
    created_at: str
    in_reply_to_tweet_id: str | None = None
    conversation_id: str | None = None
    is_reply: bool = False
    is_quote: bool = False
    lang: str | None = None

    def as_dataset_record(self) -> dict[str, object]:
        """The fields training needs, as one dataset line holds them."""
        return {
            "id": self.id,
            "text": self.text,
            "created_at": self.created_at,
            "is_reply": self.is_reply,
            "is_quote": self.is_quote,
            "lang": self.lang,
        }


def tweet_id_key(tweet_id: str) -> int:
    """Tweet ids are decimal strings; order them as numbers, never as text."""
    return int(tweet_id)


class Platform(Protocol):
    def me(self) -> User:
        """The bot's own account."""
        ...

    def lookup_user(self, handle: str) -> User: ...

    def timeline(self, user: User, since_id: str | None) -> list[Tweet]:
        """The user's tweets newer than `since_id`, oldest first."""
        ...

    def mentions(self, since_id: str | None) -> list[Tweet]:
        """Tweets mentioning the bot newer than `since_id`, oldest first."""
        ...

    def post(self, text: str) -> Tweet: ...

    def reply(self, to: Tweet, text: str) -> Tweet: ...

    def find_reply(self, mention_id: str) -> Tweet | None:
        """The bot's own reply to a mention, if one exists: reconciles an unknown outcome."""
        ...
