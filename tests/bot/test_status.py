"""`parrotbot status`: text and JSON, read back from what the bot records."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import redis
import yaml
from typer.testing import CliRunner

from bot.cli import app
from bot.config import load_config
from bot.generation import GenerationService
from bot.hotload import CheckpointWatcher
from bot.lease import Lease
from bot.platform.local import LocalPlatform
from bot.pool import TweetPool
from bot.posting import refill_pool
from bot.scrape import scrape_target
from bot.state import BotState, PostedTweet, connect
from infra.job import JobState
from infra.retrain_queue import RetrainQueue
from tests.support.retrain import job_spec

runner = CliRunner()


def test_status_reports_what_the_bot_recorded(write_config, trained_checkpoints: Path) -> None:
    path = write_config()
    config = load_config(path)
    state = BotState(connect(config), config.account)
    shutil.copytree(trained_checkpoints, config.data_dir / "checkpoints")
    service = GenerationService(config.generation, config.filters)
    assert CheckpointWatcher(config.model_dir, "char_rnn", service, state).check()
    platform = LocalPlatform(
        config.data_dir / "local", "parrotbot", config.platform.local.seed_timelines_dir
    )
    platform.prepare()
    scraped = scrape_target(platform, state, config.data_dir, "poorrichard").new_tweets
    state.record_posted(PostedTweet(tweet_id="1", text="a", kind="post", model_version="v"))
    state.record_posted(
        PostedTweet(tweet_id="2", text="b", kind="reply", model_version="v", in_reply_to="9")
    )
    added = refill_pool(state, service, TweetPool(state), target=3, batch_size=4)
    state.redis.hset(state.keys.reply("501"), mapping={"intent_at": 1.0})  # crashed mid-reply
    state.redis.hset(state.keys.reply("502"), mapping={"intent_at": 1.0, "outcome": "replied"})
    Lease(state.redis, state.keys.lease, "host:1:abc", ttl_ms=10_000).acquire()

    queued = runner.invoke(app, ["retrain", "-c", str(path)])
    assert queued.exit_code == 0, queued.output

    result = runner.invoke(app, ["status", "--json", "-c", str(path)])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    (job,) = report["training"]
    assert job["state"] == "queued" and job["trigger"] == "cli"
    assert job["id"] in queued.stdout
    assert report["daemon"]["lease_holder"] == "host:1:abc"
    assert report["model"]["version"] == service.current.version
    assert report["model"]["step"] == service.current.manifest.step
    assert report["pool_size"] == added
    assert report["today"] == {"posts": 1, "replies": 1}
    assert report["x_budget"]["usd_today"] == 0 and report["x_budget"]["usd_this_month"] == 0
    assert report["filters"]["checked"] == 4
    assert report["targets"]["poorrichard"]["new_tweets_last_scrape"] == scraped
    assert report["new_tweets_since_training"] == 0  # the queued job took them
    assert report["replies_awaiting_outcome"] == 1

    text = runner.invoke(app, ["status", "-c", str(path)])
    assert text.exit_code == 0
    assert service.current.version in text.stdout
    assert "1 posts, 1 replies" in text.stdout
    assert "@poorrichard" in text.stdout
    assert "replies awaiting an outcome" in text.stdout


def test_status_of_an_account_that_never_ran(write_config) -> None:
    path = write_config()
    result = runner.invoke(app, ["status", "-c", str(path)])
    assert result.exit_code == 0, result.output
    assert "none (no daemon running)" in result.stdout
    report = json.loads(runner.invoke(app, ["status", "--json", "-c", str(path)]).stdout)
    assert report["model"]["version"] is None and report["training"] == []
    assert yaml.safe_load(path.read_text())["account"] == report["account"]


def test_status_shows_a_job_waiting_for_capacity_and_a_cost_nobody_knows(
    write_config, redis_client: redis.Redis, account: str
) -> None:
    path = write_config()
    queue = RetrainQueue(redis_client, account)
    now = time.time()
    # The records the launcher writes (tests/infra/test_aws_backend.py makes them for real).
    waiting = queue.request(job_spec(account, ["/v/datasets/a.jsonl"])).job
    queue.set_state(
        waiting, JobState.QUEUED, started_at=now - 600, launch_failures=3,
        launch_waiting_since=now - 600, launch_retry_at=now + 120,
        outcome="waiting to launch: no spot capacity: InsufficientInstanceCapacity: none left",
    )  # fmt: skip
    unpriced = queue.request(job_spec(account, ["/v/datasets/a.jsonl"], model_kind="gpt2")).job
    queue.set_state(
        unpriced, JobState.RUNNING, attempt=1, instance_id="i-0123456789abcdef0",
        started_at=now - 60, spot_price=None, cost_unknown=True,
    )  # fmt: skip

    report = json.loads(runner.invoke(app, ["status", "--json", "-c", str(path)]).stdout)
    jobs = {job["id"]: job for job in report["training"]}
    wait = jobs[waiting.id]["waiting_to_launch"]
    assert wait["failed_launches"] == 3 and 590 <= wait["since_s"] <= 700
    assert 0 < wait["next_try_in_s"] <= 120
    assert wait["reason"].startswith("no spot capacity: InsufficientInstanceCapacity")
    assert jobs[waiting.id]["cost_estimate"] == 0
    assert jobs[unpriced.id]["cost_estimate"] is None, "unknown, not $0"
    assert jobs[unpriced.id]["waiting_to_launch"] is None

    text = runner.invoke(app, ["status", "-c", str(path)])
    assert text.exit_code == 0, text.output
    shown = " ".join(text.stdout.split())  # rich may wrap a long line
    assert "waiting to launch for 0h 10m" in shown
    assert "(3 launches failed: no spot capacity)" in shown
    assert "next try in 0h 1m" in shown or "next try in 0h 2m" in shown
    assert "i-0123456789abcdef0, 0h 1m" in shown and "cost unknown" in shown
    assert "$0.0000" in shown  # the waiting job ran no machine: it cost nothing

    listing = runner.invoke(app, ["jobs", "-c", str(path)])
    assert listing.exit_code == 0, listing.output
    rows = {line.split("│")[1].strip(): line for line in listing.stdout.splitlines() if "│" in line}
    assert "unknown" in rows[unpriced.id] and "$" not in rows[unpriced.id]
    assert "$0.0000" in rows[waiting.id]
