"""The X platform: the `Platform` interface on X API v2 through tweepy (`XApi` does the calls).

- The bot's own account comes from `GET /2/users/me` once and is kept in Redis; handles of
  targets are resolved once and kept too.
- Timelines and mentions are read newest first in pages of 100 (`since_id`, pagination
  tokens) and handed back oldest first. X serves a timeline's latest 3,200 posts and the
  latest 800 mentions; older history comes from the archive (`parrotbot import-archive`).
  With no mentions cursor yet, only the newest page is read: a new bot does not answer
  a backlog.
- A reply is reconciled by reading the bot's own posts newer than the mention and looking
  for one that `referenced_tweets` it as `replied_to`.
- With `platform.dry_run` reads are real, and posts and replies go to the local outbox
  file through the same budgets, rules and bookkeeping.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import structlog

from bot.config import BotConfig, Secrets
from bot.platform.base import NotFound, Tweet, User, tweet_id_key
from bot.platform.budgets import Spend
from bot.platform.local import LocalPlatform
from bot.platform.x_api import XApi
from bot.state import BotState

log = structlog.get_logger(__name__)

PAGE_SIZE = 100  # X's largest page
MIN_PAGE_SIZE = 5  # X's smallest max_results
TIMELINE_CAP = 3200
TWEET_FIELDS = [
    "author_id",
    "conversation_id",
    "created_at",
    "in_reply_to_user_id",
    "lang",
    "referenced_tweets",
]


class XPlatform:
    timeline_cap: int | None = TIMELINE_CAP

    def __init__(self, config: BotConfig, state: BotState, secrets: Secrets | None = None) -> None:
        """No request here: credentials are checked, the client is built, `me` comes later."""
        self.settings = config.platform
        self.state = state
        self.api = XApi(config.platform, secrets or Secrets.from_env(), state)
        self.outbox = (
            LocalPlatform(Path(config.data_dir) / "local", handle=config.platform.handle)
            if config.platform.dry_run
            else None
        )
        self._me: User | None = None

    def prepare(self) -> None:
        if self.outbox is not None:
            self.outbox.prepare()
            log.info("x.dry_run", outbox=str(self.outbox.outbox_path))

    def writes_left_today(self) -> int | None:
        return self.api.budgets.writes_left_today()

    # --- accounts --------------------------------------------------------------------
    def me(self) -> User:
        if self._me is not None:
            return self._me
        cached = self.state.redis.hgetall(self.state.keys.me)
        # A cached identity that is not the configured handle is stale (the tokens were
        # changed to fix an `x.handle_mismatch`): ask X again rather than trust it forever.
        if cached.get("id") and cached.get("handle", "").lower() == self.settings.handle.lower():
            self._me = User(id=cached["id"], handle=cached["handle"])
            return self._me
        if self.api.has_user_context:
            body = self.api.read(
                lambda _n: self.api.client.get_me(user_auth=True), kind=Spend.USER_READ
            )
            data = body.get("data") or {}
            me = User(id=str(data["id"]), handle=str(data["username"]))
        else:  # a dry run reading with a bearer token only
            me = self.lookup_user(self.settings.handle)
        if me.handle.lower() != self.settings.handle.lower():
            log.warning("x.handle_mismatch", configured=self.settings.handle, actual=me.handle)
        self.state.redis.hset(self.state.keys.me, mapping={"id": me.id, "handle": me.handle})
        log.info("x.me", user_id=me.id, handle=me.handle)
        self._me = me
        return me

    def lookup_user(self, handle: str) -> User:
        known = self.state.redis.hget(self.state.keys.user_ids, handle.lower())
        if known:
            return User(id=known, handle=handle)
        body = self.api.read(
            lambda _n: self.api.client.get_user(username=handle, user_auth=self.api.read_user_auth),
            kind=Spend.USER_READ,
        )
        data = body.get("data")
        if not data:
            raise NotFound(f"no X user @{handle}")
        self.state.redis.hset(self.state.keys.user_ids, handle.lower(), str(data["id"]))
        return User(id=str(data["id"]), handle=str(data.get("username") or handle))

    # --- reads -----------------------------------------------------------------------
    def timeline(self, user: User, since_id: str | None) -> list[Tweet]:
        pages = self._user_posts(
            user, since_id, kind=Spend.READ, exclude=list(self.settings.x.exclude)
        )
        tweets = [_tweet(data, {user.id: user.handle}) for body in pages for data in _data(body)]
        return _oldest_first(tweets)

    def mentions(self, since_id: str | None) -> list[Tweet]:
        me = self.me()
        pages = self._pages(
            lambda n, token: self.api.client.get_users_mentions(
                me.id,
                since_id=since_id,
                max_results=n,
                pagination_token=token,
                tweet_fields=TWEET_FIELDS,
                expansions=["author_id"],
                user_fields=["username"],
                user_auth=self.api.read_user_auth,
            ),
            kind=Spend.OWN_READ,
            max_pages=None if since_id else 1,
        )
        tweets = []
        for body in pages:
            handles = {u["id"]: u["username"] for u in body.get("includes", {}).get("users", [])}
            tweets += [_tweet(data, handles) for data in _data(body)]
        return _oldest_first(tweets)

    def find_reply(self, mention_id: str) -> Tweet | None:
        if self.outbox is not None:
            return self.outbox.find_reply(mention_id)
        me = self.me()
        bodies = self._user_posts(
            me,
            mention_id,  # the reply is newer than the mention
            kind=Spend.OWN_READ,
            max_pages=self.settings.x.find_reply_pages,
            until=lambda body: any(_replies_to(d, mention_id) for d in _data(body)),
        )
        for body in bodies:
            for data in _data(body):
                if _replies_to(data, mention_id):
                    return _tweet(data, {me.id: me.handle})
        return None

    def find_post(self, text: str, *, since_id: str | None = None) -> Tweet | None:
        """The bot's own post with `text` among its latest (replies and retweets left out)."""
        if self.outbox is not None:
            return self.outbox.find_post(text, since_id=since_id)
        me = self.me()
        wanted = _comparable(text)

        def matches(data: dict[str, Any]) -> bool:
            return _comparable(str(data.get("text", ""))) == wanted

        bodies = self._user_posts(
            me,
            since_id,
            kind=Spend.OWN_READ,
            exclude=["replies", "retweets"],
            max_pages=self.settings.x.find_reply_pages,
            until=lambda body: any(matches(d) for d in _data(body)),
        )
        for body in bodies:
            for data in _data(body):  # newest first: the latest match
                if matches(data):
                    return _tweet(data, {me.id: me.handle})
        return None

    def _user_posts(
        self,
        user: User,
        since_id: str | None,
        *,
        kind: Spend,
        exclude: list[str] | None = None,
        max_pages: int | None = None,
        until: Callable[[dict[str, Any]], bool] | None = None,
    ) -> list[dict[str, Any]]:
        """Pages of `GET /2/users/:id/tweets` newer than `since_id`, billed as `kind` (the
        bot's own posts cost less to read than a target's)."""
        return self._pages(
            lambda n, token: self.api.client.get_users_tweets(
                user.id,
                since_id=since_id,
                max_results=n,
                pagination_token=token,
                exclude=exclude or None,
                tweet_fields=TWEET_FIELDS,
                user_auth=self.api.read_user_auth,
            ),
            kind=kind,
            max_pages=max_pages,
            until=until,
        )

    def _pages(
        self,
        fetch: Callable[[int, str | None], dict[str, Any]],
        *,
        kind: Spend,
        max_pages: int | None = None,
        until: Callable[[dict[str, Any]], bool] | None = None,
    ) -> list[dict[str, Any]]:
        """Follow `next_token` until X has no more (or `max_pages`, or `until` says stop)."""
        bodies: list[dict[str, Any]] = []
        token: str | None = None
        while True:
            body = self.api.read(
                lambda n, token=token: fetch(n, token),
                kind=kind,
                want=PAGE_SIZE,
                minimum=MIN_PAGE_SIZE,
            )
            bodies.append(body)
            token = body.get("meta", {}).get("next_token")
            if not token or (max_pages and len(bodies) >= max_pages) or (until and until(body)):
                return bodies

    # --- writes ----------------------------------------------------------------------
    def post(self, text: str) -> Tweet:
        kind = _write_kind(Spend.POST, text)
        if self.outbox is not None:
            return self.api.write(kind, lambda: self.outbox.post(text))  # type: ignore[union-attr]
        body = self.api.write(kind, lambda: self.api.client.create_tweet(text=text, user_auth=True))
        return self._created(body, in_reply_to=None)

    def reply(self, to: Tweet, text: str) -> Tweet:
        kind = _write_kind(Spend.REPLY, text)
        if self.outbox is not None:
            return self.api.write(kind, lambda: self.outbox.reply(to, text), reply=True)  # type: ignore[union-attr]
        body = self.api.write(
            kind,
            lambda: self.api.client.create_tweet(
                text=text, in_reply_to_tweet_id=to.id, user_auth=True
            ),
            reply=True,
        )
        return self._created(body, in_reply_to=to)

    def _created(self, body: dict[str, Any], in_reply_to: Tweet | None) -> Tweet:
        data = body["data"]
        me = self.me()
        return Tweet(
            id=str(data["id"]),
            text=str(data.get("text", "")),
            author_id=me.id,
            author_handle=me.handle,
            created_at=str(data.get("created_at", "")),
            in_reply_to_tweet_id=in_reply_to.id if in_reply_to else None,
            conversation_id=(in_reply_to.conversation_id or in_reply_to.id)
            if in_reply_to
            else None,
            is_reply=in_reply_to is not None,
        )


def _write_kind(kind: Spend, text: str) -> Spend:
    """A post or reply holding a URL is billed at X's URL price."""
    from bot.filters import find_urls

    return Spend.POST_WITH_URL if find_urls(text) else kind


def _data(body: dict[str, Any]) -> list[dict[str, Any]]:
    data = body.get("data")
    return data if isinstance(data, list) else []


def _references(data: dict[str, Any], kind: str) -> list[str]:
    return [str(r["id"]) for r in data.get("referenced_tweets") or [] if r.get("type") == kind]


def _replies_to(data: dict[str, Any], tweet_id: str) -> bool:
    return tweet_id in _references(data, "replied_to")


def _comparable(text: str) -> str:
    """A post's text as X may hand it back: `&amp;`-escaped, NFC-normalised, trimmed."""
    import html
    import unicodedata

    return unicodedata.normalize("NFC", html.unescape(text)).strip()


def _tweet(data: dict[str, Any], handles: dict[str, str]) -> Tweet:
    author_id = str(data.get("author_id", ""))
    replied = _references(data, "replied_to")
    return Tweet(
        id=str(data["id"]),
        text=str(data.get("text", "")),
        author_id=author_id,
        author_handle=handles.get(author_id, ""),
        created_at=str(data.get("created_at", "")),
        in_reply_to_tweet_id=replied[0] if replied else None,
        conversation_id=str(data["conversation_id"]) if data.get("conversation_id") else None,
        is_reply=bool(replied) or bool(data.get("in_reply_to_user_id")),
        is_quote=bool(_references(data, "quoted")),
        is_retweet=bool(_references(data, "retweeted")),
        lang=data.get("lang"),
    )


def _oldest_first(tweets: list[Tweet]) -> list[Tweet]:
    unique = {tweet.id: tweet for tweet in tweets}
    return sorted(unique.values(), key=lambda tweet: tweet_id_key(tweet.id))
