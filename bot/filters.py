"""The checks every generated text passes before it may be posted.

A language model trained on someone's tweets will sometimes hand their tweets back
verbatim, invent @handles, or run past X's length rules. Each candidate is checked here,
and the first failing check is its rejection reason; the reasons are counted in Redis so an
operator can see what the filters are eating.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
import warnings
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from functools import cache
from typing import Any

from bot.config import BotConfig, FilterConfig

MAX_WEIGHTED_LENGTH = 280
# Placeholders the cleaning step puts where URLs and @mentions were; never posted as such.
PLACEHOLDER = re.compile(r"<(?:url|user|mention|handle)>", re.IGNORECASE)
MENTION = re.compile(r"(?<![\w@])[@＠][A-Za-z0-9_]{1,15}\b")
_WORD = re.compile(r"\w+", re.UNICODE)


class RejectReason(StrEnum):
    EMPTY = "empty"
    TOO_LONG = "too_long"
    PLACEHOLDER = "placeholder"
    MENTION = "mention"
    URL = "url"
    BLOCKLIST = "blocklist"
    NOT_NOVEL = "not_novel"
    REPEAT = "repeat"


@dataclass(frozen=True)
class Verdict:
    reason: RejectReason | None = None
    detail: str = ""

    @property
    def accepted(self) -> bool:
        return self.reason is None


ACCEPTED = Verdict()


@dataclass(frozen=True)
class _TwitterText:
    parse_tweet: Callable[[str], Any]
    extract_urls: Callable[[str], list[str]]
    extract_urls_with_indices: Callable[[str], list[dict[str, Any]]]
    url_length: int  # what any URL weighs (t.co's length)


@cache
def _twitter_text() -> _TwitterText:
    # twitter-text-parser imports pkg_resources, which warns on import; the warning is about
    # that package's packaging, not something an operator can act on.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from twitter_text import parse_tweet
        from twitter_text.config import config
        from twitter_text.extract_urls import extract_urls, extract_urls_with_indices
    return _TwitterText(
        parse_tweet=parse_tweet,
        extract_urls=extract_urls,
        extract_urls_with_indices=extract_urls_with_indices,
        url_length=config["defaults"]["transformed_url_length"],
    )


_LINE_ENDING = re.compile(r"\r\n|\r|\n")


def weighted_length(text: str) -> int:
    """X's weighted length (twitter-text v3: CJK and emoji weigh 2, any URL 23).

    ASCII text, most of what the models write, takes a short cut to the same number: it holds
    no emoji and each of its characters weighs 1, so only its URLs need finding. The full
    parse spends 90% of its time in the emoji scan, and this check runs on every candidate.
    tests/bot/test_filters.py holds the short cut to the full parse (conformance cases and
    random ASCII with URLs and line endings).
    """
    library = _twitter_text()
    if not text.isascii():
        return library.parse_tweet(text).weightedLength
    normalized = _LINE_ENDING.sub("\n", text)  # twitter-text counts a CRLF as one character
    urls = library.extract_urls_with_indices(normalized)
    return len(normalized) + sum(library.url_length - len(url["url"]) for url in urls)


def find_urls(text: str) -> list[str]:
    """URLs as X recognises them, with or without a scheme (its TLD list decides)."""
    return _twitter_text().extract_urls(text)


def words(text: str) -> list[str]:
    """Case- and accent-folded words: what "the same text" means for novelty."""
    folded = unicodedata.normalize("NFKC", text).casefold()
    return _WORD.findall(folded)


def _digest(tokens: Sequence[str]) -> bytes:
    return hashlib.blake2b(" ".join(tokens).encode(), digest_size=8).digest()


class NoveltyIndex:
    """Word n-grams of the training tweets, hashed: built once per model version.

    A candidate is a copy when it shares any `n`-word run with a training tweet, or contains
    a whole training tweet shorter than `n` words. Checking a candidate costs a few set
    lookups per word, whatever the size of the corpus.
    """

    def __init__(self, texts: Iterable[str], ngram: int) -> None:
        self.ngram = ngram
        self._texts = list(texts)  # for `nearest`, which a held item's provenance asks
        self._nearest: NearestTweets | None = None
        self._grams: set[bytes] = set()
        self._short: dict[int, set[bytes]] = {}
        for text in self._texts:
            tokens = words(text)
            if not tokens:
                continue
            if len(tokens) < ngram:
                self._short.setdefault(len(tokens), set()).add(_digest(tokens))
            else:
                self._grams.update(_digest(g) for g in _ngrams(tokens, ngram))

    def __len__(self) -> int:
        return len(self._grams) + sum(len(group) for group in self._short.values())

    def copies(self, text: str) -> bool:
        tokens = words(text)
        if any(_digest(g) in self._grams for g in _ngrams(tokens, self.ngram)):
            return True
        return any(
            _digest(g) in group
            for length, group in self._short.items()
            if length <= len(tokens)
            for g in _ngrams(tokens, length)
        )

    def nearest(self, text: str) -> Nearest | None:
        """The training tweet closest to `text` (None: no word in common but the commonest).
        The word index it needs is built at the first call, so a bot that holds nothing
        never pays for it."""
        if self._nearest is None:
            self._nearest = NearestTweets(self._texts)
        return self._nearest.find(text)


@dataclass(frozen=True)
class Nearest:
    text: str  # the training tweet
    overlap: float  # the share of the candidate's distinct words that the tweet holds too


class NearestTweets:
    """The training tweet sharing most of a candidate's words, for the operator's eyes.

    An inverted index from word to tweets, leaving out words found in more than
    `COMMON_SHARE` of the tweets: they say nothing about which tweet is nearest and would
    make each lookup walk most of the corpus. The few tweets sharing most indexed words are
    then scored on all words.
    """

    COMMON_SHARE = 0.05
    SHORTLIST = 8

    def __init__(self, texts: Sequence[str]) -> None:
        self._texts = texts
        postings: dict[str, list[int]] = {}
        for index, text in enumerate(texts):
            for word in set(words(text)):
                postings.setdefault(word, []).append(index)
        limit = max(1, int(len(texts) * self.COMMON_SHARE))
        self._postings = {w: ids for w, ids in postings.items() if len(ids) <= limit}

    def find(self, text: str) -> Nearest | None:
        wanted = set(words(text))
        if not wanted:
            return None
        hits: Counter[int] = Counter()
        for word in wanted:
            hits.update(self._postings.get(word, ()))
        best: Nearest | None = None
        for index, _count in hits.most_common(self.SHORTLIST):
            overlap = len(wanted & set(words(self._texts[index]))) / len(wanted)
            if best is None or overlap > best.overlap:
                best = Nearest(self._texts[index], round(overlap, 3))
        return best


def novelty_corpus(config: BotConfig) -> list[str]:
    """The texts a post must not copy: the targets' datasets as the trainer sees them now,
    cleaned with the config's `cleaning` options (the ones each training request carries).
    """
    from training.dataset import dataset_path, training_texts

    paths = [dataset_path(config.data_dir, target.handle) for target in config.targets]
    return training_texts([path for path in paths if path.exists()], config.cleaning)


def _ngrams(tokens: Sequence[str], n: int) -> Iterable[Sequence[str]]:
    return (tokens[i : i + n] for i in range(len(tokens) - n + 1))


class CandidateFilter:
    def __init__(self, settings: FilterConfig, novelty: NoveltyIndex | None = None) -> None:
        self.settings = settings
        self.novelty = novelty
        self._blocked_words = {word.casefold() for word in settings.blocklist_words}
        self._blocked_patterns = [re.compile(p, re.IGNORECASE) for p in settings.blocklist_patterns]

    def check(self, text: str, *, recent: Iterable[str] = ()) -> Verdict:
        """The first check `text` fails, or ACCEPTED; `recent` are the bot's own last posts."""
        if not text.strip():
            return Verdict(RejectReason.EMPTY)
        if PLACEHOLDER.search(text):
            return Verdict(RejectReason.PLACEHOLDER, "cleaning placeholders are never posted")
        length = weighted_length(text)
        if length > MAX_WEIGHTED_LENGTH:
            return Verdict(
                RejectReason.TOO_LONG, f"weighted length {length}, over X's {MAX_WEIGHTED_LENGTH}"
            )
        if not self.settings.allow_mentions and (match := MENTION.search(text)):
            return Verdict(RejectReason.MENTION, match.group(0))
        if not self.settings.allow_urls and (urls := find_urls(text)):
            return Verdict(RejectReason.URL, urls[0])
        if blocked := self._blocked(text):
            return Verdict(RejectReason.BLOCKLIST, blocked)
        if self.novelty is not None and self.novelty.copies(text):
            return Verdict(RejectReason.NOT_NOVEL)
        if any(words(text) == words(previous) for previous in recent):
            return Verdict(RejectReason.REPEAT)
        return ACCEPTED

    def _blocked(self, text: str) -> str | None:
        for word in words(text):
            if word in self._blocked_words:
                return word
        for pattern in self._blocked_patterns:
            if pattern.search(text):
                return pattern.pattern
        return None
