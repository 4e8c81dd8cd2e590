"""The chaos suite's verdict, computed from what the outside world saw (pure functions).

The suite's claims rest on these counts, so they are computed only from facts that do not
depend on the bot telling the truth about itself: the posts the X emulator holds, the
mentions the suite created, the log files on disk. Redis records are read only to check that
they agree with X. Kept free of processes and I/O (but for `scan_logs`) so a fast test in the
default run can plant a duplicate, a lost mention or a leaked secret and see it counted.
"""

from __future__ import annotations

import bisect
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

# Reply-record outcomes that explain, by a documented rule, why an eligible mention has no reply.
RULE_OUTCOMES = {
    "skipped_conversation_cap": "conversation cap",
    "skipped_author_cooldown": "author cooldown",
    "rejected": "refused by X",
    "gave_up": "gave up after replies.max_attempts",
    # A held reply's limits are checked when it is sent: an author who opted out after the
    # mention (eligible when made) and before the approval went out gets nothing.
    "skipped_opted_out": "opted out before the held reply was sent",
}
ANSWERED_OUTCOMES = ("replied", "reconciled")
BUDGET_REASON = "budget spent"


# Why the rules say a mention must not be answered (Mention.kind); "summoned" is answered.
SUMMONED = "summoned"
NOT_SUMMONED_KINDS = ("not_summoned", "retweet", "quote")  # never named the bot in its own text
OPT_OUT_KINDS = ("opt_out", "opted_out")  # the opt-out itself, and a mention while opted out


@dataclass(frozen=True)
class Mention:
    """A mention the suite created; `eligible`: the rules say the bot must answer it.

    `kind` says which rule applies to an ineligible one, so a reply to it is counted under
    that rule: a reply to a retweet and a reply to an opted-out author are different faults.
    """

    id: str
    eligible: bool
    kind: str = SUMMONED


@dataclass(frozen=True)
class BotReply:
    """A post by the bot's account, as X holds it, in reply to `in_reply_to`."""

    tweet_id: str
    in_reply_to: str


@dataclass
class Verdict:
    mentions: int = 0
    eligible: int = 0
    replies: int = 0
    duplicates: int = 0
    duplicate_ids: list[str] = field(default_factory=list)
    lost: int = 0
    lost_ids: list[str] = field(default_factory=list)
    accounted: dict[str, int] = field(default_factory=dict)  # reason -> eligible, unanswered
    unwanted_replies: int = 0  # replies to mentions the rules say to leave alone
    replies_not_summoned: int = 0  # of those: to retweets, quotes, replies without the @
    replies_opted_out: int = 0  # of those: to an opt-out, or to an author who opted out
    record_mismatches: int = 0  # Redis says something X contradicts
    mismatch_ids: list[str] = field(default_factory=list)
    unreconciled: int = 0  # a reply on X whose Redis intent has no outcome yet (not a fault)
    bot_posts: int = 0
    posts_over_budget: int = 0


def _key(tweet_id: str) -> int:
    return int(tweet_id)


def judge(
    mentions: Sequence[Mention],
    replies: Sequence[BotReply],
    records: Mapping[str, Mapping[str, str]],
    *,
    bot_posts: int,
    post_cap: int | None,
    budget_spent: bool,
) -> Verdict:
    """Count duplicates, lost mentions, unwanted replies, record mismatches and overspend.

    An eligible mention without a reply is lost unless a documented reason covers it: a rule
    outcome recorded for it, or the post budget being spent when its turn came. The bot
    answers oldest first and stops at the first mention it cannot answer, so "its turn came
    after the budget ran out" means: the budget is spent, and no newer mention got a reply.
    """
    verdict = Verdict(mentions=len(mentions), replies=len(replies), bot_posts=bot_posts)
    per_target = Counter(reply.in_reply_to for reply in replies)
    reply_of = {reply.in_reply_to: reply.tweet_id for reply in replies}
    verdict.duplicate_ids = sorted((t for t, n in per_target.items() if n > 1), key=_key)
    verdict.duplicates = sum(per_target[t] - 1 for t in verdict.duplicate_ids)
    eligible = [m for m in mentions if m.eligible]
    verdict.eligible = len(eligible)
    verdict.unwanted_replies = sum(per_target[m.id] for m in mentions if not m.eligible)
    verdict.replies_not_summoned = sum(
        per_target[m.id] for m in mentions if m.kind in NOT_SUMMONED_KINDS
    )
    verdict.replies_opted_out = sum(per_target[m.id] for m in mentions if m.kind in OPT_OUT_KINDS)
    answered = [_key(m.id) for m in eligible if per_target[m.id]]
    newest_answered = max(answered, default=-1)
    accounted: Counter[str] = Counter()
    for mention in eligible:
        record = records.get(mention.id, {})
        outcome = record.get("outcome", "")
        if per_target[mention.id]:
            if outcome in ANSWERED_OUTCOMES:
                if record.get("tweet_id") != reply_of[mention.id]:
                    verdict.mismatch_ids.append(mention.id)
            elif record.get("intent_at") and not outcome:
                verdict.unreconciled += 1
            else:
                verdict.mismatch_ids.append(mention.id)
            continue
        if outcome in ANSWERED_OUTCOMES:
            verdict.mismatch_ids.append(mention.id)  # Redis claims a reply X does not have
        elif outcome in RULE_OUTCOMES:
            accounted[RULE_OUTCOMES[outcome]] += 1
        elif budget_spent and _key(mention.id) > newest_answered:
            accounted[BUDGET_REASON] += 1
        else:
            verdict.lost_ids.append(mention.id)
    verdict.lost = len(verdict.lost_ids)
    verdict.record_mismatches = len(verdict.mismatch_ids)
    verdict.accounted = dict(accounted)
    if post_cap is not None:
        verdict.posts_over_budget = max(0, bot_posts - post_cap)
    return verdict


def secret_forms(value: str) -> set[str]:
    """A secret as it could appear in a log: as is, and percent-encoded (OAuth sends it so)."""
    return {value, quote(value, safe="")}


def scan_logs(paths: Iterable[Path], secrets: Mapping[str, str]) -> dict[str, list[str]]:
    """Secret name -> the files that contain its value in any form (empty: no leak)."""
    leaks: dict[str, list[str]] = {}
    for path in paths:
        text = path.read_bytes().decode("utf-8", errors="replace")
        for name, value in secrets.items():
            if any(form in text for form in secret_forms(value)):
                leaks.setdefault(name, []).append(path.name)
    return leaks


def recovery_times(faults: Sequence[float], healthy: Sequence[float]) -> list[float | None]:
    """For each fault time, seconds until the next healthy observation (None: never seen).

    `healthy` must be sorted: the times at which some daemon answered /healthz with 200.
    """
    found: list[float | None] = []
    for at in faults:
        index = bisect.bisect_right(healthy, at)
        found.append(healthy[index] - at if index < len(healthy) else None)
    return found


def must_be_zero(verdict: Verdict, leaks: Mapping[str, list[str]], **extra: int) -> dict[str, int]:
    """The counts that fail the suite when any is nonzero."""
    return {
        "duplicates": verdict.duplicates,
        "lost": verdict.lost,
        "posts_over_budget": verdict.posts_over_budget,
        "secret_leaks": sum(len(files) for files in leaks.values()),
        "unwanted_replies": verdict.unwanted_replies,
        "replies_to_not_summoned": verdict.replies_not_summoned,
        "replies_to_opted_out": verdict.replies_opted_out,
        "record_mismatches": verdict.record_mismatches,
        **extra,
    }
