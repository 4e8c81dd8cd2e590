"""The scheduler's jobs live in Redis under the account; stale ones are pruned; the post
cadence outlives a change of leader."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import redis
from apscheduler.events import EVENT_JOB_EXECUTED, JobExecutionEvent
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.cron import CronTrigger

from bot import jobs
from bot.config import BotConfig
from bot.posting import last_post_at, post_cadence_start
from bot.scheduling import build_scheduler, prune_unknown_jobs, schedule_jobs
from bot.state import BotState
from tests.support.daemon_process import wait_until

ONE_MS = timedelta(milliseconds=1)


def test_jobs_are_stored_per_account_and_stale_ones_pruned(
    account: str, redis_url: str, tmp_path: Path
) -> None:
    config = BotConfig(account=account, data_dir=tmp_path, redis_url=redis_url, targets=["a"])
    raw = redis.Redis.from_url(redis_url)
    scheduler = build_scheduler(config, raw)
    schedule_jobs(scheduler, config, cadence_from=None)
    scheduler.add_job(jobs.run_job, "interval", seconds=60, args=("gone",), id=f"{account}:gone")
    scheduler.start(paused=True)
    try:
        assert prune_unknown_jobs(scheduler, config) == [f"{account}:gone"]
        stored = {key.decode() for key in raw.hkeys(f"parrotbot:{account}:scheduler:jobs")}
        assert stored == {f"{account}:{name}" for name in jobs.JOB_NAMES}
        # A second leader rewrites, never duplicates.
        schedule_jobs(scheduler, config, cadence_from=None)
        assert len(scheduler.get_jobs()) == len(jobs.JOB_NAMES)
    finally:
        scheduler.shutdown(wait=False)


def post_config(account: str, redis_url: str, tmp_path: Path, **schedule: object) -> BotConfig:
    return BotConfig(
        account=account, data_dir=tmp_path, redis_url=redis_url, targets=["a"], schedule=schedule
    )


@contextmanager
def leader(
    config: BotConfig, redis_url: str, *, cadence_from: datetime | None
) -> Iterator[BackgroundScheduler]:
    """What a newly elected daemon does with its scheduler (paused: nothing runs here)."""
    scheduler = build_scheduler(config, redis.Redis.from_url(redis_url))
    schedule_jobs(scheduler, config, cadence_from=cadence_from)
    scheduler.start(paused=True)
    try:
        yield scheduler
    finally:
        scheduler.shutdown(wait=False)


def next_post(scheduler: BackgroundScheduler, account: str) -> datetime:
    return scheduler.get_job(f"{account}:{jobs.POST}").next_run_time


def test_a_new_leader_keeps_the_post_cadence_of_the_last_post(
    account: str, redis_url: str, redis_client: redis.Redis, tmp_path: Path
) -> None:
    config = post_config(account, redis_url, tmp_path, post_every_seconds=3600)
    state = BotState(redis_client, account)
    assert last_post_at(state) is None
    with leader(config, redis_url, cadence_from=None) as first:
        # Nothing posted yet: the trigger's own first run, one interval from now.
        assert next_post(first, account) - datetime.now(UTC) > timedelta(minutes=59)

    posted = datetime.now(UTC) - timedelta(minutes=20)
    redis_client.set(state.keys.last_post, f"{posted.timestamp():.3f}")
    for _takeover in range(2):
        with leader(config, redis_url, cadence_from=last_post_at(state)) as scheduler:
            # 40 minutes from now, not 60: the interval runs from the last post.
            assert abs(next_post(scheduler, account) - (posted + timedelta(hours=1))) < ONE_MS
            assert len(scheduler.get_jobs()) == len(jobs.JOB_NAMES)


@pytest.mark.parametrize(
    "schedule",
    [{"post_every_seconds": 3600}, {"post_cron": "0 * * * *"}],
    ids=["interval", "cron"],
)
def test_a_long_overdue_post_runs_once_promptly_after_takeover(
    account: str, redis_url: str, tmp_path: Path, schedule: dict
) -> None:
    config = post_config(account, redis_url, tmp_path, **schedule)
    runs: list[str] = []
    finished = threading.Event()

    def on_executed(event: JobExecutionEvent) -> None:
        if event.job_id == f"{account}:{jobs.POST}":
            finished.set()

    scheduler = build_scheduler(config, redis.Redis.from_url(redis_url))
    # Over ten periods missed, the latest half a period ago: beyond the misfire grace,
    # which would drop that run as missed if it were scheduled as it fell.
    schedule_jobs(
        scheduler, config, cadence_from=datetime.now(UTC) - timedelta(hours=10, minutes=30)
    )
    scheduler.add_listener(on_executed, EVENT_JOB_EXECUTED)
    jobs.set_dispatcher(lambda name: runs.append(name) if name == jobs.POST else None)
    scheduler.start()
    try:
        assert finished.wait(timeout=10), "the overdue post did not run after takeover"
        wait_until(
            lambda: next_post(scheduler, account) > datetime.now(UTC),
            timeout=10,
            message="the post job was not rescheduled after its run",
        )
        assert runs == [jobs.POST]  # the backlog coalesced into one post
    finally:
        jobs.set_dispatcher(None)
        scheduler.shutdown(wait=False)


def test_a_changed_post_schedule_in_the_config_takes_effect(
    account: str, redis_url: str, tmp_path: Path
) -> None:
    posted = datetime.now(UTC) - timedelta(minutes=5)
    hourly = post_config(account, redis_url, tmp_path, post_every_seconds=3600)
    with leader(hourly, redis_url, cadence_from=posted) as scheduler:
        assert abs(next_post(scheduler, account) - (posted + timedelta(hours=1))) < ONE_MS

        # What the daemon does on a live config edit.
        shorter = post_config(account, redis_url, tmp_path, post_every_seconds=600)
        schedule_jobs(scheduler, shorter, cadence_from=posted)
        assert abs(next_post(scheduler, account) - (posted + timedelta(minutes=10))) < ONE_MS

        shortest = post_config(account, redis_url, tmp_path, post_every_seconds=60)
        before = datetime.now(UTC)
        schedule_jobs(scheduler, shortest, cadence_from=posted)
        assert before <= next_post(scheduler, account) <= datetime.now(UTC)  # already due: now

        just_posted = datetime.now(UTC)
        daily = post_config(account, redis_url, tmp_path, post_cron="30 9 * * *")
        schedule_jobs(scheduler, daily, cadence_from=just_posted)
        cron = CronTrigger.from_crontab("30 9 * * *", timezone="UTC")
        assert next_post(scheduler, account) == cron.get_next_fire_time(None, just_posted)


def test_takeovers_before_the_first_post_keep_the_first_schedule(
    account: str, redis_url: str, redis_client: redis.Redis, tmp_path: Path
) -> None:
    config = post_config(account, redis_url, tmp_path, post_every_seconds=3600)
    state = BotState(redis_client, account)
    first_start = post_cadence_start(state)
    assert last_post_at(state) is None and datetime.now(UTC) - first_start < timedelta(seconds=5)
    with leader(config, redis_url, cadence_from=first_start) as first:
        due = next_post(first, account)
    # Twenty minutes on, another leader takes over: the first post is still due when it was.
    redis_client.set(state.keys.post_schedule_start, f"{first_start.timestamp() - 1200:.3f}")
    started = post_cadence_start(state)
    assert abs((first_start - started) - timedelta(minutes=20)) < ONE_MS
    with leader(config, redis_url, cadence_from=started) as second:
        assert abs(next_post(second, account) - (due - timedelta(minutes=20))) < ONE_MS
    # Once a post went out, the cadence counts from it.
    posted = datetime.now(UTC) - timedelta(minutes=5)
    redis_client.set(state.keys.last_post, f"{posted.timestamp():.3f}")
    assert abs(post_cadence_start(state) - posted) < ONE_MS
