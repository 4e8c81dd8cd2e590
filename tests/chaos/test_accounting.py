"""The chaos suite's checker, checked: planted faults must be counted (fast, default run).

The chaos run itself is minutes long and not in the default run; its verdict is only worth
something if these counters really see a duplicate, a lost mention or a leaked secret.
"""

from __future__ import annotations

from pathlib import Path

from tests.chaos import report
from tests.chaos.accounting import (
    BotReply,
    Mention,
    judge,
    must_be_zero,
    recovery_times,
    scan_logs,
)

MENTIONS = [
    Mention("101", True),
    Mention("102", True),
    Mention("103", False, kind="not_summoned"),
    Mention("104", True),
]


def records(*answered: tuple[str, str]) -> dict[str, dict[str, str]]:
    return {m: {"intent_at": "1.0", "outcome": "replied", "tweet_id": t} for m, t in answered}


ONE_EACH = [BotReply("201", "101"), BotReply("202", "102"), BotReply("204", "104")]
RECORDED = records(("101", "201"), ("102", "202"), ("104", "204"))


def test_a_clean_run_counts_nothing_bad() -> None:
    verdict = judge(MENTIONS, ONE_EACH, RECORDED, bot_posts=4, post_cap=10, budget_spent=False)
    assert (verdict.mentions, verdict.eligible, verdict.replies) == (4, 3, 3)
    assert set(must_be_zero(verdict, {}).values()) == {0}


def test_a_planted_duplicate_is_counted() -> None:
    replies = [*ONE_EACH, BotReply("205", "101")]
    verdict = judge(MENTIONS, replies, RECORDED, bot_posts=4, post_cap=10, budget_spent=False)
    assert verdict.duplicates == 1 and verdict.duplicate_ids == ["101"]


def test_a_planted_lost_mention_is_counted_unless_the_budget_explains_it() -> None:
    replies = [BotReply("201", "101"), BotReply("204", "104")]
    answered = records(("101", "201"), ("104", "204"))
    # 102 is older than an answered mention: skipped, whatever the budget says.
    for spent in (False, True):
        verdict = judge(MENTIONS, replies, answered, bot_posts=2, post_cap=2, budget_spent=spent)
        assert verdict.lost_ids == ["102"]
    # After the last answered one, the rest went unanswered because the budget ran out.
    tail = judge(
        MENTIONS, replies[:1], records(("101", "201")), bot_posts=1, post_cap=1, budget_spent=True
    )
    assert tail.lost_ids == [] and tail.accounted == {"budget spent": 2}
    # The same mention with budget left is lost.
    assert (
        judge(
            MENTIONS,
            replies[:1],
            records(("101", "201")),
            bot_posts=1,
            post_cap=9,
            budget_spent=False,
        ).lost
        == 2
    )


def test_unwanted_replies_overspend_and_record_mismatches_are_counted() -> None:
    replies = [
        BotReply("201", "101"),
        BotReply("202", "102"),
        BotReply("203", "103"),
        BotReply("204", "104"),
    ]
    wrong = records(("101", "201"), ("102", "999"), ("104", "204"))
    verdict = judge(MENTIONS, replies, wrong, bot_posts=12, post_cap=10, budget_spent=True)
    assert verdict.unwanted_replies == 1  # 103 did not summon the bot
    assert (verdict.replies_not_summoned, verdict.replies_opted_out) == (1, 0)
    assert verdict.posts_over_budget == 2
    assert verdict.mismatch_ids == ["102"]
    phantom = judge(
        MENTIONS, [], records(("101", "201")), bot_posts=0, post_cap=10, budget_spent=False
    )
    assert "101" in phantom.mismatch_ids  # Redis says replied, X has nothing


def test_replies_to_retweets_quotes_and_opted_out_authors_are_counted_by_rule() -> None:
    mentions = [
        Mention("101", True),
        Mention("102", False, kind="retweet"),
        Mention("103", False, kind="quote"),
        Mention("104", False, kind="opt_out"),
        Mention("105", False, kind="opted_out"),
    ]
    replies = [BotReply(f"2{n}", f"1{n}") for n in ("01", "02", "03", "04", "05")]
    verdict = judge(
        mentions, replies, records(("101", "201")), bot_posts=5, post_cap=10, budget_spent=False
    )
    zero = must_be_zero(verdict, {})
    assert (zero["replies_to_not_summoned"], zero["replies_to_opted_out"]) == (2, 2)
    assert zero["unwanted_replies"] == 4


def test_a_planted_secret_is_found_in_any_form(tmp_path: Path) -> None:
    clean, leaky, encoded = (tmp_path / name for name in ("a.log", "b.log", "c.log"))
    clean.write_text('{"event": "reply.published", "author": "***"}\n')
    leaky.write_text('{"event": "oops", "header": "OAuth oauth_token=\\"1000-at+Secret/x\\""}\n')
    encoded.write_text("oauth_token%3D1000-at%2BSecret%2Fx%26\n")
    secrets = {"ACCESS_TOKEN": "1000-at+Secret/x", "CONSUMER_KEY": "never-logged-key"}
    leaks = scan_logs([clean, leaky, encoded], secrets)
    assert leaks == {"ACCESS_TOKEN": ["b.log", "c.log"]}
    verdict = judge([], [], {}, bot_posts=0, post_cap=None, budget_spent=False)
    assert must_be_zero(verdict, leaks)["secret_leaks"] == 2


def test_recovery_is_measured_to_the_next_healthy_answer() -> None:
    assert recovery_times([1.0, 5.0, 9.0], [0.5, 3.5, 6.0]) == [2.5, 1.0, None]


def test_the_readme_section_replaces_only_what_lies_between_the_markers(tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    readme.write_text(f"# x\nbefore\n{report.BEGIN}\nold\n{report.END}\nafter\n")
    results = {
        "passed": False,
        "finished_at": "now",
        "machine": "2 CPUs",
        "seed": 1,
        "faults": {"daemon SIGKILL": {"count": 3, "detail": "3 leader", "verified": True}},
        "counts": {"mentions": 5, "eligible": 4, "replies": 4, "bot_posts": 6, "accounted": {}},
        "must_be_zero": {"duplicates": 1},
        "timing": {
            "max_recovery_s": 4.0,
            "worst_recovery": "kill",
            "wall_s": 9,
            "fault_phase_s": 5,
            "median_leader_recovery_s": 3.0,
            "max_kill_to_reply_s": 5.0,
        },
    }
    report.write(results, tmp_path / "results.json", readme, "make chaos")
    text = readme.read_text()
    assert text.startswith("# x\nbefore\n") and text.endswith(f"{report.END}\nafter\n")
    assert "old" not in text and "| duplicates | 1 | FAILED |" in text and "**FAILED**" in text
