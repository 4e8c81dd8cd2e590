"""When the daemon asks for training: one job per bump, coalescing, auto, first start, CLI."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import redis
import yaml
from structlog.testing import capture_logs
from typer.testing import CliRunner

from bot.cli import app
from bot.config import BotConfig, load_config
from bot.retrain import RetrainTriggers
from bot.state import BotState
from infra.job import JobState
from infra.retrain_queue import RetrainQueue
from tests.support.configs import SAMPLE_TIMELINE


@pytest.fixture
def config_path(write_config) -> Path:
    path = write_config()
    data_dir = Path(yaml.safe_load(path.read_text())["data_dir"])
    (data_dir / "datasets").mkdir(parents=True)
    shutil.copyfile(SAMPLE_TIMELINE, data_dir / "datasets" / "poorrichard.jsonl")
    return path


@pytest.fixture
def queue(redis_client: redis.Redis, account: str) -> RetrainQueue:
    queue = RetrainQueue(redis_client, account)
    queue.ensure_group()
    return queue


@pytest.fixture
def triggers(queue: RetrainQueue, redis_client: redis.Redis, account: str) -> RetrainTriggers:
    return RetrainTriggers(BotState(redis_client, account), queue)


def bumped(config_path: Path, value: int, **training: object) -> BotConfig:
    data = yaml.safe_load(config_path.read_text())
    data["training"].update(retrain_request=value, **training)
    config_path.write_text(yaml.safe_dump(data, sort_keys=False))
    return load_config(config_path)


def test_a_bump_queues_exactly_one_job_and_says_why(
    triggers: RetrainTriggers, queue: RetrainQueue, config_path: Path
) -> None:
    config = bumped(config_path, 1)
    with capture_logs() as logs:
        triggers.on_config(config)
        triggers.on_config(config)  # the same config seen again (config watch, then a poll)
        triggers.tick(config, have_model=True)
    jobs = queue.list_jobs()
    assert [job.trigger for job in jobs] == ["retrain_request:1"]
    triggered = [e for e in logs if e["event"] == "training.triggered"]
    assert len(triggered) == 1
    assert triggered[0]["cause"] == "training.retrain_request bumped from 0 to 1"
    assert triggered[0]["job_id"] == jobs[0].id and not triggered[0]["coalesced"]
    assert jobs[0].model_config["units"] == config.model.char_rnn.units
    assert jobs[0].dataset_hash and jobs[0].targets == ["poorrichard"]


def test_two_quick_bumps_while_a_job_runs_coalesce_into_one_more(
    triggers: RetrainTriggers, queue: RetrainQueue, config_path: Path
) -> None:
    triggers.on_config(bumped(config_path, 1))
    (delivery,) = queue.read_new("launcher", block_ms=100)
    running = queue.get(delivery.job_id)
    assert queue.acquire(running)
    queue.set_state(running, JobState.RUNNING)

    triggers.on_config(bumped(config_path, 2))
    triggers.on_config(bumped(config_path, 3))
    jobs = queue.list_jobs()
    assert len(jobs) == 2
    follow_up = next(job for job in jobs if job.id != running.id)
    assert follow_up.state is JobState.QUEUED
    assert follow_up.trigger == "retrain_request:2" and follow_up.coalesced == ["retrain_request:3"]
    assert queue.redis.xlen(queue.keys.stream) == 2


def test_enough_new_tweets_queue_one_job_and_reset_the_count(
    triggers: RetrainTriggers, queue: RetrainQueue, config_path: Path, redis_client: redis.Redis
) -> None:
    config = bumped(config_path, 0, auto_after_new_tweets=50)
    counter = BotState(redis_client, config.account).keys.new_tweets_since_training
    redis_client.set(counter, 49)
    triggers.tick(config, have_model=True)
    assert queue.list_jobs() == []
    redis_client.incrby(counter, 3)
    with capture_logs() as logs:
        triggers.tick(config, have_model=True)
        triggers.tick(config, have_model=True)
    (job,) = queue.list_jobs()
    assert job.trigger == "auto:new_tweets"
    assert int(redis_client.get(counter)) == 0
    (event,) = [e for e in logs if e["event"] == "training.triggered"]
    assert event["cause"] == "52 new tweets since the last training (threshold 50)"


def test_first_start_queues_once_and_not_while_a_job_is_in_flight(
    triggers: RetrainTriggers, queue: RetrainQueue, config_path: Path, redis_client, account: str
) -> None:
    config = load_config(config_path)
    triggers.tick(config, have_model=False)
    triggers.tick(config, have_model=False)
    (job,) = queue.list_jobs()
    assert job.trigger == "first_start"
    # A restarted daemon while that job waits does not queue another.
    RetrainTriggers(BotState(redis_client, account), queue).tick(config, have_model=False)
    assert len(queue.list_jobs()) == 1


def test_parrotbot_retrain_queues_a_job(config_path: Path, queue: RetrainQueue) -> None:
    result = CliRunner().invoke(app, ["retrain", "-c", str(config_path)])
    assert result.exit_code == 0, result.output
    (job,) = queue.list_jobs()
    assert result.stdout.strip() == f"queued job {job.id}" and job.trigger == "cli"
    again = CliRunner().invoke(app, ["retrain", "-c", str(config_path)])
    assert again.stdout.strip() == f"merged into waiting job {job.id}"


def test_an_edit_that_a_redis_error_interrupts_is_applied_at_the_next_poll(
    config_path: Path, redis_client: redis.Redis, redis_url: str, account: str, queue: RetrainQueue
) -> None:
    """The config watch must not mark an edit as seen before it took effect: the bump (and
    a schedule change) would be lost until the next edit."""
    import socket
    from types import SimpleNamespace

    from bot.daemon import Daemon
    from bot.scheduling import build_scheduler

    with socket.socket() as probe:  # a port nothing listens on: every Redis call fails
        probe.bind(("127.0.0.1", 0))
        dead = redis.Redis(port=probe.getsockname()[1], socket_connect_timeout=0.5)

    def wire(daemon: Daemon, client: redis.Redis, raw: redis.Redis) -> None:
        daemon.state = BotState(client, account)
        daemon.triggers = RetrainTriggers(daemon.state, RetrainQueue(client, account))
        daemon._scheduler = build_scheduler(daemon.config, raw)  # the job store: no decoding

    daemon = Daemon(load_config(config_path), config_path)
    daemon.jobs = SimpleNamespace(config=daemon.config)
    daemon.service = SimpleNamespace(settings=None, filters=None)
    data = yaml.safe_load(config_path.read_text())
    data["training"]["retrain_request"] = 1
    data["schedule"] = {**data.get("schedule", {}), "post_every_seconds": 1234}
    config_path.write_text(yaml.safe_dump(data, sort_keys=False))

    wire(daemon, dead, dead)
    with pytest.raises(redis.ConnectionError):
        daemon._check_config()
    assert daemon.config.training.retrain_request == 0, "nothing applied halfway"
    assert queue.list_jobs() == []

    wire(daemon, redis_client, redis.Redis.from_url(redis_url))
    daemon._scheduler.start(paused=True)
    try:
        daemon._check_config()  # the same, unchanged file: applied now
        post = daemon._scheduler.get_job(f"{account}:post")
        assert post is not None and post.trigger.interval.total_seconds() == 1234
    finally:
        daemon._scheduler.shutdown(wait=False)
    assert daemon.config.training.retrain_request == 1
    assert daemon.jobs.config is daemon.config
    assert [job.trigger for job in queue.list_jobs()] == ["retrain_request:1"]
