"""What the X emulator knows: accounts and posts, and X's rules for reading and replying.

Kept apart from the HTTP layer so the rules read plainly:

- timelines serve a user's latest 3,200 posts, mentions the latest 800, newest first;
- `since_id`/`until_id` are exclusive bounds, `exclude` drops retweets and/or replies;
- pages hold `max_results` posts and carry a `next_token` only when more remain;
- a reply is allowed only to a post that mentions the replying account or quotes one of its
  posts (X's rule since 2026-02-23);
- a retweet's text is `RT @author: <the original's text>`, so it mentions the original's
  author and shows in their mentions timeline; a quote's text is the quoter's own words plus
  a t.co link to the quoted post, and it shows in the quoted author's mentions timeline
  whether or not those words @-mention them.

Not thread-safe by itself: the server holds its lock around every call.
"""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

TIMELINE_CAP = 3200
MENTIONS_CAP = 800
FIRST_ID = 1_800_000_000_000_000_000


@dataclass
class Account:
    id: str
    username: str
    access_token: str | None = None

    @property
    def name(self) -> str:
        return self.username.title()


@dataclass
class Post:
    id: str
    text: str
    author_id: str
    created_at: str
    conversation_id: str
    in_reply_to_user_id: str | None = None
    referenced_tweets: list[dict[str, str]] = field(default_factory=list)
    lang: str = "en"

    def references(self, kind: str) -> list[str]:
        return [ref["id"] for ref in self.referenced_tweets if ref["type"] == kind]


class World:
    def __init__(self) -> None:
        self.accounts: dict[str, Account] = {}
        self.posts: dict[str, Post] = {}
        self._next_id = FIRST_ID

    # --- building ----------------------------------------------------------------------
    def add_account(self, username: str, access_token: str | None = None) -> Account:
        account = Account(id=str(len(self.accounts) + 1000), username=username,
                          access_token=access_token)  # fmt: skip
        self.accounts[account.id] = account
        return account

    def account_named(self, username: str) -> Account | None:
        wanted = username.lower()
        return next((a for a in self.accounts.values() if a.username.lower() == wanted), None)

    def account_with_token(self, token: str) -> Account | None:
        return next((a for a in self.accounts.values() if a.access_token == token), None)

    def new_id(self) -> str:
        self._next_id += 1
        return str(self._next_id)

    def add_post(
        self,
        author: Account,
        text: str,
        *,
        post_id: str | None = None,
        reply_to: Post | None = None,
        quote_of: Post | None = None,
        retweet_of: Post | None = None,
        lang: str = "en",
    ) -> Post:
        new_id = post_id or self.new_id()
        self._next_id = max(self._next_id, int(new_id))
        references = []
        if reply_to is not None:
            references.append({"type": "replied_to", "id": reply_to.id})
        if quote_of is not None:
            references.append({"type": "quoted", "id": quote_of.id})
        if retweet_of is not None:
            references.append({"type": "retweeted", "id": retweet_of.id})
        post = Post(
            id=new_id,
            text=text,
            author_id=author.id,
            created_at=datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z"),
            conversation_id=reply_to.conversation_id if reply_to else new_id,
            in_reply_to_user_id=reply_to.author_id if reply_to else None,
            referenced_tweets=references,
            lang=lang,
        )
        self.posts[post.id] = post
        return post

    def add_retweet(self, author: Account, original: Post) -> Post:
        """A retweet as X serves it: `RT @<original's author>: <original's text>`."""
        original_author = self.accounts[original.author_id]
        text = f"RT @{original_author.username}: {original.text}"
        return self.add_post(author, text, retweet_of=original, lang=original.lang)

    def add_quote(
        self, author: Account, quoted: Post, text: str, *, reply_to: Post | None = None
    ) -> Post:
        """A quote as X serves it: the quoter's own `text`, then a t.co link to `quoted`."""
        link = f"https://t.co/{encode_token(quoted.id)[:10]}"
        return self.add_post(author, f"{text} {link}".strip(), quote_of=quoted, reply_to=reply_to)

    # --- X's rules -----------------------------------------------------------------------
    def mentions(self, post: Post, account: Account) -> bool:
        pattern = rf"(?<![A-Za-z0-9_])@{re.escape(account.username)}(?![A-Za-z0-9_])"
        return re.search(pattern, post.text, re.IGNORECASE) is not None

    def may_reply(self, account: Account, target: Post) -> bool:
        """The author of `target` mentioned `account` or quoted one of its posts."""
        if target.author_id == account.id or self.mentions(target, account):
            return True
        quoted = [self.posts.get(i) for i in target.references("quoted")]
        return any(post is not None and post.author_id == account.id for post in quoted)

    def replies_to(self, post_id: str) -> list[Post]:
        return [p for p in self.posts.values() if post_id in p.references("replied_to")]

    # --- reading -----------------------------------------------------------------------
    def newest_first(self, posts: list[Post]) -> list[Post]:
        return sorted(posts, key=lambda post: int(post.id), reverse=True)

    def timeline(self, user_id: str, exclude: set[str]) -> list[Post]:
        window = self.newest_first([p for p in self.posts.values() if p.author_id == user_id])
        window = window[:TIMELINE_CAP]
        if "retweets" in exclude:
            window = [p for p in window if not p.references("retweeted")]
        if "replies" in exclude:
            window = [p for p in window if p.in_reply_to_user_id is None]
        return window

    def mention_feed(self, account: Account) -> list[Post]:
        feed = [
            p
            for p in self.posts.values()
            if self.mentions(p, account)
            or p.in_reply_to_user_id == account.id
            or self._quotes_a_post_of(p, account)
        ]
        return self.newest_first(feed)[:MENTIONS_CAP]

    def _quotes_a_post_of(self, post: Post, account: Account) -> bool:
        quoted = (self.posts.get(ref) for ref in post.references("quoted"))
        return any(q is not None and q.author_id == account.id for q in quoted)

    def render(self, post: Post, fields: set[str]) -> dict[str, Any]:
        data: dict[str, Any] = {"id": post.id, "text": post.text,
                                "edit_history_tweet_ids": [post.id]}  # fmt: skip
        optional = {
            "author_id": post.author_id,
            "created_at": post.created_at,
            "conversation_id": post.conversation_id,
            "in_reply_to_user_id": post.in_reply_to_user_id,
            "referenced_tweets": post.referenced_tweets or None,
            "lang": post.lang,
        }
        for name, value in optional.items():
            if name in fields and value is not None:
                data[name] = value
        return data

    def render_user(self, account: Account) -> dict[str, str]:
        return {"id": account.id, "name": account.name, "username": account.username}


def page(
    posts: list[Post],
    *,
    since_id: str | None,
    until_id: str | None,
    token: str | None,
    max_results: int,
) -> tuple[list[Post], str | None]:
    """One page of `posts` (newest first) and the token for the next, if any remain."""
    floor = int(since_id) if since_id else -1
    ceiling = int(until_id) if until_id else None
    if token:
        below = int(decode_token(token))
        ceiling = below if ceiling is None else min(ceiling, below)
    eligible = [p for p in posts if int(p.id) > floor and (ceiling is None or int(p.id) < ceiling)]
    chosen = eligible[:max_results]
    next_token = encode_token(chosen[-1].id) if len(eligible) > max_results else None
    return chosen, next_token


def encode_token(post_id: str) -> str:
    """Opaque-looking like X's tokens; they encode where the next page starts."""
    return base64.b32hexencode(post_id.encode()).decode().lower().rstrip("=")


def decode_token(token: str) -> str:
    padded = token.upper() + "=" * (-len(token) % 8)
    value = base64.b32hexdecode(padded).decode()
    if not value.isdigit():
        raise ValueError("bad token")
    return value
