"""The scheduler's jobs live in Redis under the account; stale ones are pruned."""

from __future__ import annotations

from pathlib import Path

import redis

from bot import jobs
from bot.config import BotConfig
from bot.scheduling import build_scheduler, prune_unknown_jobs, schedule_jobs


def test_jobs_are_stored_per_account_and_stale_ones_pruned(
    account: str, redis_url: str, tmp_path: Path
) -> None:
    config = BotConfig(account=account, data_dir=tmp_path, redis_url=redis_url, targets=["a"])
    raw = redis.Redis.from_url(redis_url)
    scheduler = build_scheduler(config, raw)
    schedule_jobs(scheduler, config)
    scheduler.add_job(jobs.run_job, "interval", seconds=60, args=("gone",), id=f"{account}:gone")
    scheduler.start(paused=True)
    try:
        assert prune_unknown_jobs(scheduler, config) == [f"{account}:gone"]
        stored = {key.decode() for key in raw.hkeys(f"parrotbot:{account}:scheduler:jobs")}
        assert stored == {f"{account}:{name}" for name in jobs.JOB_NAMES}
        schedule_jobs(scheduler, config)  # a second leader rewrites, never duplicates
        assert len(scheduler.get_jobs()) == len(jobs.JOB_NAMES)
    finally:
        scheduler.shutdown(wait=False)
