"""`parrotbot status`: text and JSON, read back from what the bot records."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

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
