"""Each filter rejects what it should and passes what it should."""

from __future__ import annotations

import random
import string
import warnings
from pathlib import Path

import pytest
import yaml

from bot.config import FilterConfig
from bot.filters import (
    CandidateFilter,
    Nearest,
    NoveltyIndex,
    RejectReason,
    find_urls,
    weighted_length,
)

FIXTURES = Path(__file__).resolve().parents[1] / "support" / "fixtures"
CONFORMANCE = FIXTURES / "twitter-text-validate.yml"
WEIGHTED_CASES = yaml.safe_load(CONFORMANCE.read_text())["tests"][
    "WeightedTweetsWithDiscountedEmojiCounterTest"
]

TRAINING = [
    "Early to bed and early to rise, makes a man healthy, wealthy, and wise.",
    "A word to the wise is enough.",
    "Lost time is never found again.",
]


@pytest.mark.parametrize("case", WEIGHTED_CASES, ids=[c["description"] for c in WEIGHTED_CASES])
def test_weighted_length_matches_twitter_text_conformance(case: dict) -> None:
    assert weighted_length(case["text"]) == case["expected"]["weightedLength"]


# Pieces of ASCII tweets that twitter-text treats specially: URLs with and without a scheme,
# TLD look-alikes, line endings (a CRLF counts once), keycap bases, entities.
ASCII_PIECES = [
    "word",
    " ",
    "  ",
    ".",
    ",",
    "\r\n",
    "\r",
    "\n",
    "\t",
    "https://example.com/a?b=1&c=2",
    "http://t.co/xyz",
    "example.com",
    "www.Example.org.",
    "foo.bar",
    "a.museum",
    "e.g.",
    "...",
    "http://",
    "https://",
    "x.y.z/path",
    "@user",
    "#tag",
    "$CASH",
    "123",
    "#1",
    "*",
    "1.5",
    "bit.ly/abc",
    "(see example.net)",
    "user@mail.com",
    "a" * 30,
    "ftp://files.example.com",
]


def _full_parse(text: str) -> int:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from twitter_text import parse_tweet
    return parse_tweet(text).weightedLength


def _conformance_texts() -> list[str]:
    sections = yaml.safe_load(CONFORMANCE.read_text())["tests"].values()
    return [case["text"] for cases in sections for case in cases if isinstance(case, dict)]


def test_the_ascii_short_cut_gives_the_full_parse_length() -> None:
    rng = random.Random(20261204)
    texts = [text for text in _conformance_texts() if text.isascii()]
    texts += [
        "".join(rng.choice(ASCII_PIECES) for _ in range(rng.randint(1, 40))) for _ in range(600)
    ]
    texts += [
        "".join(rng.choice(string.printable) for _ in range(rng.randint(0, 300)))
        for _ in range(300)
    ]
    assert sum(bool(find_urls(text)) for text in texts) > 200  # URLs are well exercised
    mismatched = [(t, weighted_length(t), _full_parse(t)) for t in texts if t.isascii()]
    assert [m for m in mismatched if m[1] != m[2]] == []


def check(text: str, *, recent: tuple[str, ...] = (), **settings) -> RejectReason | None:
    novelty = NoveltyIndex(TRAINING, ngram=6)
    return CandidateFilter(FilterConfig(**settings), novelty).check(text, recent=recent).reason


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("A fresh thought on thrift and patience.", None),
        ("", RejectReason.EMPTY),
        ("   ", RejectReason.EMPTY),
        ("<user> <url>", RejectReason.PLACEHOLDER),
        ("Thanks <user> for the idea", RejectReason.PLACEHOLDER),
        ("x" * 281, RejectReason.TOO_LONG),
        ("猫" * 141, RejectReason.TOO_LONG),  # CJK weighs 2: 282
        ("猫" * 140, None),
        ("Ask @benfranklin about it", RejectReason.MENTION),
        ("Mail someone@example.org", None),  # neither a mention nor a URL to twitter-text
        ("Read more at https://example.com/now", RejectReason.URL),
        ("Read more at example.com", RejectReason.URL),
        ("Early to bed and early to rise makes sense", RejectReason.NOT_NOVEL),
        ("EARLY TO BED, AND EARLY TO RISE!", RejectReason.NOT_NOVEL),  # case and punctuation
        ("Indeed, a word to the wise is enough.", RejectReason.NOT_NOVEL),  # a whole short one
        ("A word to the wise: plenty.", None),  # 5 shared words < 6
        ("A word to the wise is plenty.", RejectReason.NOT_NOVEL),  # 6 shared words
    ],
)
def test_candidate_filter(text: str, reason: RejectReason | None) -> None:
    assert check(text) == reason


def test_mentions_and_urls_pass_when_the_config_allows_them() -> None:
    assert check("Ask @benfranklin at example.com", allow_mentions=True, allow_urls=True) is None


def test_blocklist_words_and_patterns() -> None:
    assert check("A penny saved is a Turnip earned", blocklist_words=["turnip"]) == (
        RejectReason.BLOCKLIST
    )
    assert check("Turnips for all", blocklist_words=["turnip"]) is None  # whole words only
    assert check("buy now!!!", blocklist_patterns=[r"buy\s+now"]) == RejectReason.BLOCKLIST


def test_no_repeat_of_the_bots_recent_posts() -> None:
    recent = ("Patience is a quiet kind of wealth.",)
    assert check("patience is a quiet kind of WEALTH", recent=recent) == RejectReason.REPEAT
    assert check("Patience is a loud kind of wealth.", recent=recent) is None


def test_novelty_index_is_built_once_and_does_not_scan() -> None:
    index = NoveltyIndex(TRAINING * 1000, ngram=6)
    # Duplicated training text adds nothing: the index holds distinct hashed n-grams.
    assert len(index) == len(NoveltyIndex(TRAINING, ngram=6))


def test_the_nearest_training_tweet_shares_most_of_the_words() -> None:
    corpus = [
        "Early to bed and early to rise makes a man healthy.",
        "A penny saved is a penny earned.",
        "Lost time is never found again.",
        *[f"the and of a to, filler number {i}" for i in range(100)],  # common words galore
    ]
    index = NoveltyIndex(corpus, 4)
    nearest = index.nearest("A penny saved is time lost")
    assert nearest is not None and nearest.text == "A penny saved is a penny earned."
    assert nearest.overlap == round(4 / 6, 3)  # a, penny, saved, is of six distinct words
    assert index.nearest("lost time, found") == Nearest("Lost time is never found again.", 1.0)
    assert index.nearest("the and of") is None  # only words most tweets hold: nothing telling
    assert index.nearest("") is None
