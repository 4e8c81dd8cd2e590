"""`parrotbot status`: one screen about an account, read from Redis and the volume.

Everything is read from where the daemon keeps it (Redis, the checkpoint folder), so the
command works the same while the daemon runs, after it stopped, or from another host.
"""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any

from bot.config import BotConfig
from bot.ledger import reply_backlog
from bot.ledger.held import HeldLedger
from bot.replies import MENTIONS_CURSOR
from bot.rules import opted_out_authors
from bot.state import BotState

if TYPE_CHECKING:
    from infra.job import Job


def collect(config: BotConfig, state: BotState) -> dict[str, Any]:
    """The status as plain data (what `--json` prints and the screen renders)."""
    redis = state.redis
    now = time.time()
    daemon = redis.hgetall(state.keys.daemon)
    holder = state.lease_holder()
    current = redis.hgetall(state.keys.model_current)
    manifest = json.loads(current.get("manifest", "{}") or "{}")
    scrapes = {
        handle: json.loads(raw) for handle, raw in redis.hgetall(state.keys.last_scrape).items()
    }
    from infra.retrain_queue import RetrainQueue

    recent_jobs = RetrainQueue(redis, config.account).list_jobs(5)
    return {
        "account": config.account,
        "at": now,
        "daemon": {
            "lease_holder": holder,
            "instance": daemon.get("instance"),
            "uptime_s": _age(daemon.get("started_at"), now) if holder else None,
            "heartbeat_age_s": _age(daemon.get("heartbeat_at"), now),
        },
        "model": {
            "version": current.get("version"),
            "loaded_age_s": _age(current.get("loaded_at"), now),
            "step": manifest.get("step"),
            "val_loss": manifest.get("val_loss"),
            "created_at": manifest.get("created_at"),
            "bad_versions": state.bad_versions(),
        },
        "workers": state.workers(max_age=3 * config.schedule.lease_ttl_seconds),
        "pool_size": int(redis.llen(state.keys.pool)),
        "filters": state.filter_counts(),
        "targets": {
            target.handle: {
                "last_scrape_age_s": _age(scrapes.get(target.handle, {}).get("at"), now),
                "new_tweets_last_scrape": scrapes.get(target.handle, {}).get("new_tweets"),
                "cursor": state.cursor(f"timeline:{target.handle}"),
            }
            for target in config.targets
        },
        "new_tweets_since_training": int(redis.get(state.keys.new_tweets_since_training) or 0),
        "mentions_cursor": state.cursor(MENTIONS_CURSOR),
        **_reply_records(state),
        "review": _review_queue(config, state),
        "opted_out": sorted(
            str(entry.get("handle", author_id))
            for author_id, entry in opted_out_authors(state).items()
        ),
        "today": state.posted_today(),
        "x_budget": _x_budget(config, state),
        "training": [
            {
                "id": job.id,
                "trigger": job.trigger,
                "state": job.state.value,
                "attempt": job.attempt,
                "instance": job.instance_id or None,
                "duration_s": job.duration,
                "cost_estimate": job.cost_usd,  # None: unknown (no price), which is not $0
                "outcome": job.outcome or None,
                "waiting_to_launch": _waiting_to_launch(job, now),
            }
            for job in recent_jobs
        ],
    }


def _waiting_to_launch(job: Job, now: float) -> dict[str, Any] | None:
    """A queued job waiting for spot capacity: since when, how many tries, the next one."""
    if job.state.terminal or job.launch_retry_at is None:
        return None
    return {
        "since_s": _age(job.launch_waiting_since, now),
        "failed_launches": job.launch_failures,
        "next_try_in_s": round(max(0.0, job.launch_retry_at - now), 1),
        "reason": job.outcome.removeprefix("waiting to launch: ") or None,
    }


def _reply_records(state: BotState) -> dict[str, int]:
    """Mentions with a recorded intent but no outcome (the backlog the next poll reconciles),
    and mentions given up after `replies.max_attempts` (read by the ledger, their owner)."""
    backlog = reply_backlog(state)
    return {
        "replies_awaiting_outcome": backlog.awaiting_outcome,
        "replies_gave_up": backlog.gave_up,
    }


def _review_queue(config: BotConfig, state: BotState) -> dict[str, Any]:
    held = HeldLedger(
        state, keep_days=config.review.keep_days, reply_keep_days=config.replies.keep_days
    )
    holds = config.review.holds_replies(config.platform.kind)
    return {
        "replies": "hold" if holds else "auto",
        "held": held.held_count(),
        "approved_waiting": held.approved_count(),
    }


def _x_budget(config: BotConfig, state: BotState) -> dict[str, Any]:
    """Caps, writes left today and estimated X spend (pay-per-use prices from the config)."""
    from bot.platform.budgets import Budgets

    x = config.platform.x
    budgets = Budgets(state.redis, state.keys, x.budgets, x.prices)
    today = budgets.spend_today()
    return {
        "posts_per_day": x.budgets.posts_per_day,
        "writes_left_today": budgets.writes_left_today(),
        "calls_today": {kind: int(count) for kind, count in today.items() if kind != "usd"},
        "usd_today": round(today["usd"], 4),
        "usd_this_month": round(budgets.spend_this_month(), 4),
        "usd_by_kind_today": _rounded(budgets.usd_by_kind()),
        "usd_by_kind_this_month": _rounded(budgets.usd_by_kind(month=True)),
    }


def _rounded(usd: dict[str, float]) -> dict[str, float]:
    return {kind: round(value, 4) for kind, value in usd.items()}


def _age(stamp: str | float | None, now: float) -> float | None:
    return round(now - float(stamp), 1) if stamp not in (None, "") else None


def render(status: dict[str, Any]) -> Any:
    """A rich renderable of `collect`'s data."""
    from rich.console import Group
    from rich.table import Table

    def table(title: str, rows: list[tuple[str, Any]]) -> Table:
        grid = Table(title=title, title_justify="left", show_header=False, box=None)
        grid.add_column(style="bold")
        grid.add_column()
        for name, value in rows:
            grid.add_row(name, "—" if value is None else str(value))
        return grid

    daemon, model = status["daemon"], status["model"]
    parts = [
        table(
            f"parrotbot · {status['account']}",
            [
                ("lease holder", daemon["lease_holder"] or "none (no daemon running)"),
                ("uptime", _duration(daemon["uptime_s"])),
                ("last heartbeat", _ago(daemon["heartbeat_age_s"])),
            ],
        ),
        table(
            "model",
            [
                ("serving", model["version"]),
                ("step / val loss", f"{model['step']} / {_number(model['val_loss'])}"),
                ("created", model["created_at"]),
                ("loaded", _ago(model["loaded_age_s"])),
                ("bad versions", ", ".join(model["bad_versions"]) or "none"),
                ("ready posts in pool", status["pool_size"]),
            ],
        ),
        table(
            "model workers",
            [
                (instance, _worker_line(worker))
                for instance, worker in sorted(status["workers"].items())
            ]
            or [("none", "no daemon serves a model")],
        ),
        table(
            "activity",
            [
                (
                    "today",
                    f"{status['today']['posts']} posts, {status['today']['replies']} replies",
                ),
                ("X budget", _budget_line(status["x_budget"])),
                ("mentions cursor", status["mentions_cursor"]),
                ("replies awaiting an outcome", status["replies_awaiting_outcome"]),
                ("mentions given up", status["replies_gave_up"]),
                ("review queue", _review_line(status["review"])),
                ("opted out of replies", _handles(status["opted_out"])),
                ("new tweets since training", status["new_tweets_since_training"]),
                ("filtered", _filters(status["filters"])),
                ("retrain jobs", _training(status["training"])),
            ],
        ),
        table(
            "targets",
            [
                (f"@{handle}", f"scraped {_ago(t['last_scrape_age_s'])}, cursor {t['cursor']}")
                for handle, t in status["targets"].items()
            ],
        ),
    ]
    return Group(*parts)


def _review_line(review: dict[str, Any]) -> str:
    line = f"{review['held']} held, {review['approved_waiting']} approved to send"
    return f"{line} (replies: {review['replies']})"


def _worker_line(worker: dict[str, Any]) -> str:
    restarts = worker["restarts"]
    return (
        f"pid {worker['pid']} on {worker['host']}, {worker['version']}, "
        f"{worker['rss_bytes'] / 2**20:.0f} MiB, {worker['requests']} requests"
        + (f", restarted {restarts}×" if restarts else "")
    )


def _handles(handles: list[str]) -> str:
    if not handles:
        return "nobody"
    shown = ", ".join(f"@{h}" for h in handles[:10])
    return shown + (f" and {len(handles) - 10} more" if len(handles) > 10 else "")


def _duration(seconds: float | None) -> str | None:
    if seconds is None:
        return None
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    days, hours = divmod(hours, 24)
    return f"{days}d {hours}h {minutes}m" if days else f"{hours}h {minutes}m {secs}s"


def _ago(seconds: float | None) -> str | None:
    return None if seconds is None else f"{_duration(seconds)} ago"


def _number(value: Any) -> str:
    return f"{value:.3f}" if isinstance(value, float) else str(value)


def _budget_line(budget: dict[str, Any]) -> str:
    left = budget["writes_left_today"]
    writes = "no daily cap" if left is None else f"{left} of {budget['posts_per_day']} writes left"
    spent = [f"{kind} ${usd:.3f}" for kind, usd in budget["usd_by_kind_today"].items() if usd]
    by_kind = f" ({', '.join(spent)})" if spent else ""
    return (
        f"{writes}; est. spend ${budget['usd_today']:.3f} today{by_kind}, "
        f"${budget['usd_this_month']:.3f} this month"
    )


def _filters(counts: dict[str, int]) -> str:
    checked = counts.get("checked", 0)
    if not checked:
        return "nothing generated yet"
    reasons = {
        k.removeprefix("rejected:"): v for k, v in counts.items() if k.startswith("rejected:")
    }
    detail = ", ".join(
        f"{reason} {count / checked:.0%}" for reason, count in sorted(reasons.items())
    )
    return f"{counts.get('accepted', 0)}/{checked} accepted" + (
        f" (rejected: {detail})" if detail else ""
    )


def _training(jobs: list[dict[str, Any]]) -> str:
    if not jobs:
        return "no retrain jobs yet"
    lines = []
    for job in jobs:
        where = f" on {job['instance']}" if job["instance"] else ""
        cost = job["cost_estimate"]
        line = (
            f"{job['id']} {job['state']} ({job['trigger']}){where}, "
            f"{_duration(job['duration_s']) or '—'}, "
            + ("cost unknown" if cost is None else f"${cost:.4f}")
        )
        waiting = job.get("waiting_to_launch")
        if waiting:
            why = (waiting["reason"] or "").split(":", 1)[0] or "launch failed"
            line += (
                f"; waiting to launch for {_duration(waiting['since_s']) or '—'} "
                f"({waiting['failed_launches']} launches failed: {why}), "
                f"next try in {_duration(waiting['next_try_in_s'])}"
            )
        lines.append(line)
    return "\n".join(lines)
