"""A console app on the test's own account, and Starlette test clients for it."""

from __future__ import annotations

from pathlib import Path

import pytest
import redis
from starlette.testclient import TestClient

from bot.config import BotConfig
from bot.console.app import build_app
from bot.console.auth import load_or_create_token
from bot.state import BotState
from tests.support.configs import offline_config_data


@pytest.fixture
def config(tmp_path: Path, account: str, redis_url: str) -> BotConfig:
    return BotConfig.model_validate(offline_config_data(tmp_path / "volume", account, redis_url))


@pytest.fixture
def state(config: BotConfig, redis_client: redis.Redis) -> BotState:
    return BotState(redis_client, config.account)


@pytest.fixture
def token(config: BotConfig) -> str:
    return load_or_create_token(config.data_dir)


@pytest.fixture
def client(config: BotConfig, state: BotState, token: str) -> TestClient:
    """Not logged in."""
    return TestClient(build_app(config, state, token))


@pytest.fixture
def logged_in(client: TestClient, token: str) -> TestClient:
    response = client.get("/login", params={"token": token}, follow_redirects=False)
    assert response.status_code == 303
    return client


@pytest.fixture
def x_logged_in(tmp_path: Path, account: str, redis_url: str, state: BotState) -> TestClient:
    """Logged in to a console whose config is on platform x (URLs allowed in texts)."""
    from tests.support.configs import x_config_data

    data = x_config_data(tmp_path / "x-volume", account, redis_url, "http://127.0.0.1:9")
    data["filters"] = {**data.get("filters", {}), "allow_urls": True}
    config = BotConfig.model_validate(data)
    token = load_or_create_token(config.data_dir)
    client = TestClient(build_app(config, state, token))
    assert client.get("/login", params={"token": token}, follow_redirects=False).status_code == 303
    return client
