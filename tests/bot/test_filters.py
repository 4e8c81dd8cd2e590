"""Each filter rejects what it should and passes what it should."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from bot.config import FilterConfig
from bot.filters import CandidateFilter, NoveltyIndex, RejectReason, weighted_length

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
