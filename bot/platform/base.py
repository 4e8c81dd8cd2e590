"""The interface every platform implements: the local files today, X through tweepy next.

The daemon only ever talks to this interface, so the offline default exercises the same
scraping, posting and replying code paths that run against X.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import structlog

log = structlog.get_logger(__name__)


class PlatformError(Exception):
    """A platform call failed in a way the caller should log and move past.

    Unless it is an `OutcomeUnknown`, a failed write is known not to have happened, so the
    caller may try it again later without risking a duplicate.
    """


class RateLimited(PlatformError):
    """The platform said 429 (or an earlier 429 has not reset yet): nothing was sent."""

    def __init__(self, message: str, *, reset_at: float) -> None:
        super().__init__(message)
        self.reset_at = reset_at


class AuthError(PlatformError):
    """401, or credentials missing: the operator must fix the keys; retrying will not help."""


class Forbidden(PlatformError):
    """403: the app or account may not do this (permissions, a suspended account, policy)."""


class NotPermitted(Forbidden):
    """403 because the app or its token lacks a permission: every write fails the same way
    until the operator fixes the app, so it says nothing about the post being written."""


class ReplyNotAllowed(Forbidden):
    """403 on a reply: the author did not mention the bot, so X refuses the reply."""


class NotFound(PlatformError):
    """The user or tweet does not exist (or is not visible to the bot)."""


class ServerError(PlatformError):
    """5xx or a network failure on a read, after the retries were spent."""


class OutcomeUnknown(PlatformError):
    """A write was sent but its answer was lost (timeout, dropped connection, 5xx).

    The post may exist: reconcile against the platform before ever sending it again.
    """


class BudgetExhausted(PlatformError):
    """A configured budget is spent for this period; the call was not made."""


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
    is_retweet: bool = False
    lang: str | None = None

    def as_dataset_record(self) -> dict[str, object]:
        """The fields training needs, as one dataset line holds them."""
        return {
            "id": self.id,
            "text": self.text,
            "created_at": self.created_at,
            "is_reply": self.is_reply,
            "is_quote": self.is_quote,
            "is_retweet": self.is_retweet,
            "lang": self.lang,
        }


def tweet_id_key(tweet_id: str) -> int:
    """Tweet ids are decimal strings; order them as numbers, never as text."""
    return int(tweet_id)


class Platform(Protocol):
    # The most tweets `timeline` can reach back (X: the latest 3,200); None when unbounded.
    timeline_cap: int | None

    def prepare(self) -> None:
        """Get ready to serve (create folders); never fails on a network problem."""
        ...

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

    def find_post(self, text: str, *, since_id: str | None = None) -> Tweet | None:
        """The bot's own recent post (not a reply) with `text`, newer than `since_id`.

        Reconciles a scheduled post whose outcome is unknown (bot/ledger.py).
        """
        ...


def is_transient(exc: PlatformError) -> bool:
    """The failure will pass without the request changing: a spent budget, a rate limit,
    X or the network failing, a lost answer, or credentials and permissions the operator
    must fix (they fail every call alike). Anything else (a 400, a 404, a 403 about this
    post) is about the request itself and may never pass."""
    return isinstance(
        exc, RateLimited | BudgetExhausted | ServerError | OutcomeUnknown | AuthError | NotPermitted
    )


def platform_failed(event: str, exc: PlatformError, **context: object) -> None:
    """Log a failed platform call; credentials and permissions need the operator (ERROR).

    Shared by every caller (scrape, mentions, posts, replies) so a read-only app, which can
    read but gets 403 on every write, shows up at ERROR like a revoked token does.
    """
    report = log.error if isinstance(exc, AuthError | Forbidden) else log.warning
    report(event, reason=type(exc).__name__, error=str(exc), **context)
