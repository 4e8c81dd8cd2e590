"""The APScheduler set-up: a Redis job store namespaced per account, and the bot's jobs.

Jobs have explicit ids and are added with `replace_existing`, so a restarted or newly
elected daemon rewrites the schedule instead of stacking duplicates; `coalesce` and a
misfire grace time turn a backlog after downtime into one run, not a burst of posts.
Rewriting would restart the post interval at every takeover, so the post job's first run
is computed from where the cadence stands in Redis (see `_next_post_time`).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import redis
import structlog
from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.jobstores.redis import RedisJobStore
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger

from bot import jobs
from bot.config import BotConfig
from bot.keys import Keys

log = structlog.get_logger(__name__)

MISFIRE_GRACE_SECONDS = 60
WORKER_THREADS = 4


def build_scheduler(config: BotConfig, raw_client: redis.Redis) -> BackgroundScheduler:
    """`raw_client` must not decode responses: the job store keeps pickled jobs."""
    keys = Keys(config.account)
    store = RedisJobStore(
        jobs_key=keys.scheduler_jobs,
        run_times_key=keys.scheduler_run_times,
        connection_pool=raw_client.connection_pool,
    )
    return BackgroundScheduler(
        jobstores={"default": store},
        executors={"default": ThreadPoolExecutor(WORKER_THREADS)},
        job_defaults={
            "coalesce": True,
            "max_instances": 1,
            "misfire_grace_time": MISFIRE_GRACE_SECONDS,
        },
        timezone=config.schedule.timezone,
    )


def schedule_jobs(
    scheduler: BackgroundScheduler, config: BotConfig, *, cadence_from: datetime | None
) -> None:
    """(Re)write every job from the config; safe to call again after a config change.

    `cadence_from` is where the post interval counts from (`posting.post_cadence_start`: the
    last scheduled post, or when posting was first scheduled), so that a new leader or a
    config edit keeps the post cadence instead of restarting it.
    """
    schedule = config.schedule
    now = datetime.now(UTC)
    soon = now + timedelta(seconds=1)
    post_trigger = _post_trigger(config)
    next_post = _next_post_time(post_trigger, cadence_from, now)
    triggers: dict[str, tuple[BaseTrigger, datetime | None]] = {
        jobs.SCRAPE: (IntervalTrigger(seconds=schedule.scrape_every_seconds), now),
        jobs.CHECKPOINTS: (IntervalTrigger(seconds=schedule.checkpoint_poll_seconds), soon),
        jobs.MENTIONS: (IntervalTrigger(seconds=schedule.mentions_every_seconds), soon),
        jobs.CONFIG: (IntervalTrigger(seconds=schedule.config_poll_seconds), None),
        jobs.POOL: (IntervalTrigger(seconds=schedule.pool_refill_seconds), soon),
        jobs.POST: (post_trigger, next_post),
    }
    for name, (trigger, first_run) in triggers.items():
        options = {"next_run_time": first_run} if first_run is not None else {}
        scheduler.add_job(
            jobs.run_job,
            trigger=trigger,
            args=(name,),
            id=f"{config.account}:{name}",
            name=name,
            replace_existing=True,
            **options,
        )
    log.info(
        "scheduler.post_scheduled",
        next_run=next_post.isoformat() if next_post else None,  # None: the trigger's own
        cadence_from=cadence_from.isoformat() if cadence_from else None,
    )


def prune_unknown_jobs(scheduler: BackgroundScheduler, config: BotConfig) -> list[str]:
    """Remove jobs a previous version of the bot left in the persistent job store."""
    wanted = {f"{config.account}:{name}" for name in jobs.JOB_NAMES}
    stale = [job.id for job in scheduler.get_jobs() if job.id not in wanted]
    for job_id in stale:
        scheduler.remove_job(job_id)
    return stale


def _post_trigger(config: BotConfig) -> BaseTrigger:
    schedule = config.schedule
    if schedule.post_cron:
        return CronTrigger.from_crontab(schedule.post_cron, timezone=schedule.timezone)
    return IntervalTrigger(seconds=schedule.post_every_seconds)


def _next_post_time(
    trigger: BaseTrigger, cadence_from: datetime | None, now: datetime
) -> datetime | None:
    """The post job's first run: one period after `cadence_from`, or now if that has passed.

    Clamping an overdue run to now matters: a run time older than the misfire grace would
    be dropped as missed, and one due time makes the backlog one post, not a burst. None
    leaves the first run to the trigger.
    """
    if cadence_from is None:
        return None
    if isinstance(trigger, IntervalTrigger):
        due = cadence_from + trigger.interval
    else:  # cron: the first slot after it
        due = trigger.get_next_fire_time(None, cadence_from)
    return None if due is None else max(due, now)
