"""training.cleaning on real-looking tweets: entities, links, handles, scripts, emoji sequences."""

from __future__ import annotations

import unicodedata

import pytest

from training.cleaning import CleaningOptions, clean_text, clean_tweets, is_retweet
from training.dataset import clean_text as dataset_clean_text

FAMILY = "👨\u200d👩\u200d👧\u200d👦"  # one emoji: four people joined by zero-width joiners
RAINBOW_FLAG = "🏳️\u200d🌈"


@pytest.mark.parametrize(
    ("raw", "cleaned"),
    [
        ("Fish &amp; chips &lt;3 &gt; salad", "Fish & chips <3 > salad"),
        ("read this https://t.co/AbC123xyz", "read this <url>"),
        ("see https://t.co/AbC123xyz. Then www.example.org/a?b=1, ok", "see <url>. Then <url>, ok"),
        ("pic.twitter.com/Zz9 and t.co/abc", "<url> and <url>"),
        ("@alice @Bob_99 thanks!", "<user> <user> thanks!"),
        ("mail me at ann@example.com", "mail me at ann@example.com"),  # an address, not a handle
        ("fullwidth ＠someone hi", "fullwidth <user> hi"),
        ("line one\n\nline\ttwo   end  ", "line one line two end"),
        ("non\u00a0breaking space", "non breaking space"),
    ],
)
def test_clean_text_defaults(raw: str, cleaned: str) -> None:
    assert clean_text(raw) == cleaned


def test_cjk_rtl_and_emoji_sequences_survive_intact() -> None:
    cjk = f"今日は良い天気ですね@tanaka さん {FAMILY} https://t.co/q1"
    assert clean_text(cjk) == f"今日は良い天気ですね<user> さん {FAMILY} <url>"

    arabic = "مرحبا @user_1 بالعالم \u200fhttps://t.co/x"
    assert clean_text(arabic) == "مرحبا <user> بالعالم \u200f<url>"

    hebrew = "שלום עולם! 🇮🇱 #בדיקה"
    assert clean_text(hebrew) == hebrew

    flags = f"pride {RAINBOW_FLAG}{RAINBOW_FLAG} 👍🏽"
    out = clean_text(flags)
    assert out == flags and out.count("\u200d") == 2  # ZWJs kept: the sequences stay whole


def test_decomposed_accents_are_composed() -> None:
    decomposed = "cafe\u0301 crème"
    out = clean_text(unicodedata.normalize("NFD", decomposed))
    assert out == "café crème" and unicodedata.is_normalized("NFC", out)


def test_options_keep_or_drop_instead_of_placeholders() -> None:
    text = "hi @bob see https://t.co/x &amp; more"
    keep = CleaningOptions(urls="keep", mentions="keep", unescape_html=False)
    assert clean_text(text, keep) == text
    drop = CleaningOptions(urls="drop", mentions="drop")
    assert clean_text(text, drop) == "hi see & more"
    with pytest.raises(ValueError, match="urls must be one of"):
        CleaningOptions(urls="erase")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unknown cleaning option"):
        CleaningOptions.from_dict({"url": "drop"})


def test_clean_tweets_drops_retweets_empties_and_exact_duplicates() -> None:
    tweets = [
        {"id": "1", "text": "Good morning &amp; welcome"},
        {"id": "2", "text": "RT @news: something happened"},
        {"id": "3", "text": "quoted in full", "is_retweet": True},
        {"id": "4", "text": "https://t.co/only @and_a_handle"},
        {"id": "5", "text": "Good   morning & welcome"},  # the same as 1 once cleaned
        {"id": "6", "text": f"family {FAMILY}", "lang": "en"},
    ]
    result = clean_tweets(tweets)
    assert [t["id"] for t in result.tweets] == ["1", "6"]
    assert result.tweets[0]["text"] == "Good morning & welcome"
    assert result.tweets[1] == {"id": "6", "text": f"family {FAMILY}", "lang": "en"}
    assert (result.retweets, result.empty, result.duplicates) == (2, 1, 1)

    lenient = CleaningOptions(drop_retweets=False, drop_duplicates=False, min_chars=0)
    kept = clean_tweets(tweets, lenient)
    assert [t["id"] for t in kept.tweets] == ["1", "2", "3", "4", "5", "6"]


def test_retweet_detection_and_the_dataset_helper_agree() -> None:
    assert is_retweet({"text": "RT @someone: words"})
    assert not is_retweet({"text": "ART @ the museum"})
    assert dataset_clean_text("a &amp; b\n@c") == "a & b <user>"
