"""Test configs and their constants: the shipped offline config made tiny, and X's variant.

Plain functions and values, not fixtures: the fixtures in `tests/conftest.py` and the
real-process suites (chaos, benchmarks) build their configs from these.
"""

from __future__ import annotations

import os
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
SAMPLE_TIMELINE = REPO / "config" / "sample_timelines" / "poorrichard.jsonl"
TEST_REDIS_URL = os.environ.get("PARROTBOT_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")

# Distinctive values, so a leak into any log line is found by a plain substring search.
X_SECRETS = {
    "CONSUMER_KEY": "ckXemuConsumerKey7f3a",
    "CONSUMER_SECRET": "csXemuConsumerSecret91bd",
    "ACCESS_TOKEN": "1000-atXemuAccessToken55c2",
    "ACCESS_TOKEN_SECRET": "atsXemuAccessSecret0e4f",
}


def offline_config_data(data_dir: Path, account: str, redis_url: str | None) -> dict:
    """The shipped offline config, made tiny and fast, pointed at a temporary volume."""
    data = yaml.safe_load((REPO / "config" / "offline.yaml").read_text())
    data["account"] = account
    data["data_dir"] = str(data_dir)
    data["platform"]["local"]["seed_timelines_dir"] = str(REPO / "config" / "sample_timelines")
    if redis_url is None:
        data.pop("redis_url", None)
    else:
        data["redis_url"] = redis_url
    data["schedule"].update(
        post_every_seconds=2,
        mentions_every_seconds=1,
        checkpoint_poll_seconds=1,
        config_poll_seconds=1,
        lease_ttl_seconds=3,
    )
    data["model"]["char_rnn"] = {
        "units": 32,
        "embedding_dim": 16,
        "seq_len": 32,
        "epochs": 1,
        "batch_size": 64,
    }
    data["generation"] = {"temperature": 0.8, "max_length": 60}
    data["logging"] = {"level": "DEBUG"}
    data["health"] = {"port": 0}  # a free port each: tests run daemons side by side
    data["console"] = {"port": 0}
    return data


def x_config_data(data_dir: Path, account: str, redis_url: str, api_base_url: str) -> dict:
    """The tiny offline test config, switched to the X platform at `api_base_url`."""
    data = offline_config_data(data_dir, account, redis_url)
    data["platform"] = {
        "kind": "x",
        "api_base_url": api_base_url,
        "handle": "parrotbot",
        "x": {
            "exclude": ["retweets", "replies"],
            "connect_timeout_seconds": 2,
            "read_timeout_seconds": 3,
            "budgets": {
                "posts_per_day": 1000,
                "posts_per_month": 10000,
                "reads_per_month": 1_000_000,
            },
        },
    }
    data["replies"] = {"author_cooldown_seconds": 0, "reconcile_grace_seconds": 0}
    # On X replies are held for the operator by default; these tests drive the reply path
    # itself, as an app X has approved for AI replies runs it.
    data["review"] = {"replies": "auto"}
    return data


# A minimal valid config, for tests that parse configs.
VALID = """\
account: demo
data_dir: ./volume
targets:
  - poorrichard
schedule:
  post_every_seconds: 60
"""


def write_config_text(tmp_path: Path, text: str) -> Path:
    """`text` as `tmp_path/bot.yaml`: for tests of config parsing."""
    path = tmp_path / "bot.yaml"
    path.write_text(text)
    return path
