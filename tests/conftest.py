"""Shared fixtures: a real Redis with a per-test namespace, and offline configs in tmp dirs."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
import yaml

# Nothing in the tests may reach a model hub: tiny configs and locally trained tokenizers only.
# Set here so it also reaches the trainer subprocesses the tests start.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

REPO = Path(__file__).resolve().parents[1]
SAMPLE_TIMELINE = REPO / "config" / "sample_timelines" / "poorrichard.jsonl"
TEST_REDIS_URL = os.environ.get("PARROTBOT_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


@pytest.fixture(scope="session")
def redis_url() -> str:
    client = redis.Redis.from_url(TEST_REDIS_URL)
    try:
        client.ping()
    except redis.ConnectionError:
        pytest.fail(
            f"no Redis answers at {TEST_REDIS_URL}: run `make redis` (tools/ensure-redis.sh)"
        )
    return TEST_REDIS_URL


@pytest.fixture
def account(redis_url: str) -> Iterator[str]:
    """A fresh account name; its keys are deleted afterwards (never FLUSHALL a shared server)."""
    name = f"test-{uuid.uuid4().hex[:10]}"
    yield name
    client = redis.Redis.from_url(redis_url)
    keys = list(client.scan_iter(match=f"parrotbot:{name}:*", count=1000))
    if keys:
        client.delete(*keys)


@pytest.fixture
def redis_client(redis_url: str) -> redis.Redis:
    return redis.Redis.from_url(redis_url, decode_responses=True)


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
    return data


@pytest.fixture
def write_config(tmp_path: Path, account: str, redis_url: str):
    """Write a test config; returns its path. Keyword overrides replace top-level sections."""

    def write(name: str = "bot.yaml", *, embedded_redis: bool = False, **overrides) -> Path:
        data = offline_config_data(
            tmp_path / "volume", account, None if embedded_redis else redis_url
        )
        data.update(overrides)
        path = tmp_path / name
        path.write_text(yaml.safe_dump(data, sort_keys=False))
        return path

    return write


@pytest.fixture(scope="session")
def trained_checkpoints(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny char-RNN trained once by the real entry point; tests copy its checkpoints."""
    root = tmp_path_factory.mktemp("pretrained")
    dataset = root / "poorrichard.jsonl"
    shutil.copyfile(SAMPLE_TIMELINE, dataset)
    request = {
        "model_kind": "char_rnn",
        "datasets": [str(dataset)],
        "checkpoints_dir": str(root / "checkpoints"),
        "model_config": {"units": 32, "embedding_dim": 16, "seq_len": 32, "epochs": 1},
        "trigger": "test",
    }
    request_path = root / "request.json"
    request_path.write_text(json.dumps(request))
    subprocess.run(
        [sys.executable, "-m", "training.train", "--request", str(request_path)],
        check=True,
        timeout=300,
        capture_output=True,
    )
    return root / "checkpoints"


# --- X: the API emulator, credentials, and configs that point the bot at it --------------
X_SECRETS = {
    # Distinctive values, so a leak into any log line is found by a plain substring search.
    "CONSUMER_KEY": "ckXemuConsumerKey7f3a",
    "CONSUMER_SECRET": "csXemuConsumerSecret91bd",
    "ACCESS_TOKEN": "1000-atXemuAccessToken55c2",
    "ACCESS_TOKEN_SECRET": "atsXemuAccessSecret0e4f",
}


@pytest.fixture
def emulator():
    """A fresh X API v2 emulator on loopback; the bot's account holds the test credentials."""
    from tests.x_emulator import XEmulator

    server = XEmulator().start()
    server.bot = server.add_user("parrotbot", access_token=X_SECRETS["ACCESS_TOKEN"])
    yield server
    server.stop()


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
    return data


@pytest.fixture
def x_platform_factory(tmp_path: Path, account: str, redis_url: str, emulator):
    """Build XPlatform objects (in this process) against the emulator; `x` overrides merge in."""
    from bot.config import BotConfig, Secrets
    from bot.platform.x import XPlatform
    from bot.state import BotState

    def make(*, x: dict | None = None, dry_run: bool = False, replies: dict | None = None):
        data = x_config_data(tmp_path / "volume", account, redis_url, emulator.url)
        data["platform"]["x"].update(x or {})
        data["platform"]["dry_run"] = dry_run
        data["replies"].update(replies or {})
        config = BotConfig.model_validate(data)
        client = redis.Redis.from_url(redis_url, decode_responses=True)
        secrets = Secrets(**{name.lower(): value for name, value in X_SECRETS.items()})
        return XPlatform(config, BotState(client, account), secrets)

    return make


@pytest.fixture
def service(tmp_path: Path, trained_checkpoints: Path, redis_client: redis.Redis, account: str):
    """A generation service serving the session's trained char-RNN (a copy per test)."""
    from bot.config import FilterConfig, GenerationConfig
    from bot.generation import GenerationService
    from bot.hotload import CheckpointWatcher
    from bot.state import BotState

    shutil.copytree(trained_checkpoints, tmp_path / "checkpoints")
    service = GenerationService(GenerationConfig(max_length=60), FilterConfig())
    watcher = CheckpointWatcher(tmp_path / "checkpoints" / "char_rnn", "char_rnn", service,
                                BotState(redis_client, account))  # fmt: skip
    assert watcher.check()
    return service
