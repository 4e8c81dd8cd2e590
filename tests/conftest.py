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

from tests.support.configs import (
    SAMPLE_TIMELINE,
    TEST_REDIS_URL,
    X_SECRETS,
    offline_config_data,
    x_config_data,
)

# The moto_server fixtures, for the infra suites and the real-process ones that use AWS.
pytest_plugins = ("tests.support.aws_fixtures",)

# Nothing in the tests may reach a model hub: tiny configs and locally trained tokenizers only.
# Set here so it also reaches the trainer subprocesses the tests start.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"


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


# --- X: the API emulator and platforms that point the bot at it ----------------------------
@pytest.fixture
def emulator():
    """A fresh X API v2 emulator on loopback; the bot's account holds the test credentials."""
    from tests.support.x_emulator import XEmulator

    server = XEmulator().start()
    server.bot = server.add_user("parrotbot", access_token=X_SECRETS["ACCESS_TOKEN"])
    yield server
    server.stop()


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
