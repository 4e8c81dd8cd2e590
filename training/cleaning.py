"""Tweet cleaning, shared by every source of tweets (X scrapes, archive imports) and by training.

Datasets on the volume keep the text as X sent it; cleaning happens when a dataset is turned
into training text, so changing these options needs no re-scrape. What it does, in order:

1. HTML entities are unescaped (X's API and archives send ``&amp;``, ``&lt;``, ``&gt;``).
2. Unicode is put in NFC form (composed accents), which keeps emoji, ZWJ sequences
   (👨‍👩‍👧), CJK and right-to-left text intact.
3. URLs become ``<url>`` and @mentions ``<user>`` (or are kept, or dropped): the model learns
   *that* a tweet links or addresses someone without learning real addresses and handles to
   repeat. The bot never posts these tokens (``bot.rules`` strips them).
4. Whitespace runs (newlines included) become one space; the model's only boundary is its own
   end-of-tweet token.

At the record level retweets are dropped (their words are someone else's), tweets left with
nothing but placeholders are dropped, and exact duplicates (after cleaning) are dropped, the
oldest kept. Pure Python, so the daemon may import it.
"""

from __future__ import annotations

import html
import re
import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields
from typing import Any, Literal

Treatment = Literal["placeholder", "drop", "keep"]
_TREATMENTS = ("placeholder", "drop", "keep")

URL_TOKEN = "<url>"
MENTION_TOKEN = "<user>"

# Scheme or www. links, and bare domains followed by a path (t.co/abc, pic.twitter.com/x).
_URL = re.compile(
    r"(?:\b(?:https?://|www\.)[^\s<>\"]+)"
    r"|(?:\b(?:[a-z0-9-]+\.)+[a-z]{2,}/[^\s<>\"]*)",
    re.IGNORECASE,
)
# Trailing punctuation belongs to the sentence, not the link ("see https://t.co/x.").
_URL_TRAILING = ".,;:!?)]}'\""
# An @ (or the fullwidth ＠ X also accepts) starting a handle, not inside an e-mail address or
# a word: twitter-text's rule, widened to any length so no @name ever survives.
_MENTION = re.compile(r"(?<![A-Za-z0-9_!#$%&*@＠])[@＠][A-Za-z0-9_]+")
_WHITESPACE = re.compile(r"\s+")
_RETWEET_PREFIX = re.compile(r"^RT [@＠][A-Za-z0-9_]+:?")


@dataclass(frozen=True)
class CleaningOptions:
    """How tweets are cleaned; the bot config's `cleaning` section sets these."""

    unescape_html: bool = True
    unicode_nfc: bool = True
    urls: Treatment = "placeholder"
    mentions: Treatment = "placeholder"
    normalize_whitespace: bool = True
    drop_retweets: bool = True
    drop_duplicates: bool = True
    # Tweets with fewer characters than this once placeholders are set aside are dropped.
    min_chars: int = 1

    def __post_init__(self) -> None:
        for name in ("urls", "mentions"):
            if getattr(self, name) not in _TREATMENTS:
                raise ValueError(f"{name} must be one of {', '.join(_TREATMENTS)}")
        if self.min_chars < 0:
            raise ValueError("min_chars must be 0 or more")

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any] | None) -> CleaningOptions:
        """Options from a plain mapping (a training request); unknown keys are errors."""
        raw = dict(raw or {})
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise ValueError(f"unknown cleaning option(s): {', '.join(unknown)}")
        return cls(**raw)

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


DEFAULT_OPTIONS = CleaningOptions()


@dataclass(frozen=True)
class Cleaned:
    """Cleaned tweets, and how many of each kind were dropped (logged by the trainer)."""

    tweets: list[dict[str, Any]]
    retweets: int = 0
    empty: int = 0
    duplicates: int = 0


def clean_text(text: str, options: CleaningOptions = DEFAULT_OPTIONS) -> str:
    """One tweet's text, cleaned (see the module docstring for the steps)."""
    if options.unescape_html:
        text = html.unescape(text)
    if options.unicode_nfc:
        text = unicodedata.normalize("NFC", text)
    if options.urls != "keep":
        token = URL_TOKEN if options.urls == "placeholder" else " "
        text = _URL.sub(lambda match: _replace_url(match, token), text)
    if options.mentions != "keep":
        token = MENTION_TOKEN if options.mentions == "placeholder" else " "
        text = _MENTION.sub(token, text)
    if options.normalize_whitespace:
        text = _WHITESPACE.sub(" ", text).strip()
    return text


def _replace_url(match: re.Match[str], token: str) -> str:
    url = match.group(0)
    stripped = url.rstrip(_URL_TRAILING)
    return token + url[len(stripped) :]


def is_retweet(record: Mapping[str, Any]) -> bool:
    """Flagged by the source (the API's `retweeted` reference), or an old-style "RT @x:"."""
    return bool(record.get("is_retweet")) or bool(_RETWEET_PREFIX.match(str(record["text"])))


def substance(text: str) -> str:
    """The text without placeholders and spaces: what is left to learn from."""
    return _WHITESPACE.sub("", text.replace(URL_TOKEN, "").replace(MENTION_TOKEN, ""))


def clean_tweets(
    tweets: Iterable[Mapping[str, Any]], options: CleaningOptions = DEFAULT_OPTIONS
) -> Cleaned:
    """Clean every tweet's text and drop retweets, near-empty tweets and exact duplicates.

    Records keep their other fields; `text` is replaced by the cleaned text. Order is kept,
    so with tweets sorted by id the oldest copy of a duplicate survives.
    """
    kept: list[dict[str, Any]] = []
    seen: set[str] = set()
    retweets = empty = duplicates = 0
    for record in tweets:
        if options.drop_retweets and is_retweet(record):
            retweets += 1
            continue
        text = clean_text(str(record["text"]), options)
        if not text or len(substance(text)) < options.min_chars:
            empty += 1
            continue
        if options.drop_duplicates:
            if text in seen:
                duplicates += 1
                continue
            seen.add(text)
        kept.append({**record, "text": text})
    return Cleaned(tweets=kept, retweets=retweets, empty=empty, duplicates=duplicates)
