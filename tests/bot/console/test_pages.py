"""Every page renders, on an empty account and on a full one, and never shows a secret."""

from __future__ import annotations

import re

import pytest
from starlette.testclient import TestClient

from bot.config import BotConfig
from bot.console.app import build_app
from bot.state import BotState
from tests.support.browser import seed_full
from tests.support.configs import X_SECRETS, offline_config_data

PAGES = ["/", "/overview/fragment", "/review", "/history", "/models", "/opt-outs"]


@pytest.mark.parametrize("page", PAGES)
def test_every_page_renders_on_an_empty_account(logged_in: TestClient, page: str) -> None:
    response = logged_in.get(page)
    assert response.status_code == 200
    assert "text/html" in response.headers["content-type"]


def test_the_empty_pages_say_there_is_nothing_yet(logged_in: TestClient) -> None:
    overview = logged_in.get("/").text
    assert "none (no daemon holds the lease)" in overview
    assert 'hx-trigger="every 5s"' in overview and 'hx-get="/overview/fragment"' in overview
    assert "nothing posted yet" in logged_in.get("/history").text
    assert "nothing published yet" in logged_in.get("/models").text
    assert "nobody has opted out" in logged_in.get("/opt-outs").text
    assert "nothing waits for a decision" in logged_in.get("/review").text


def test_the_overview_shows_the_status(
    logged_in: TestClient, config: BotConfig, state: BotState
) -> None:
    seeded = seed_full(config, state)
    page = logged_in.get("/").text
    assert f'<td id="serving-version">{seeded.serving}</td>' in page
    assert '<td id="lease-holder">leader-host:100:aaaaaa</td>' in page
    assert "standby-host:200:bbbbbb" in page  # the standby, from its worker record
    assert seeded.bad_version in page and "smoke test failed: empty output" in page
    assert "30/40 accepted (75%)" in page
    # Each daemon's model worker ([serving]): pid, version, RSS, requests, restarts.
    worker = f"<td>4242</td><td>leader-host</td><td>{seeded.serving}</td>"
    assert worker in page and "<td>150 MiB</td>" in page
    assert f"@{config.targets[0].handle}" in page
    assert re.search(r"<th>posts</th><td>34</td>", page)  # 50 items: every third a reply
    assert re.search(r"<th>replies</th><td>16</td>", page)
    fragment = logged_in.get("/overview/fragment").text
    assert seeded.serving in fragment and "<html" not in fragment  # a fragment, not a page


def test_the_history_shows_each_item_with_its_provenance(
    logged_in: TestClient, config: BotConfig, state: BotState
) -> None:
    seeded = seed_full(config, state)
    page = logged_in.get("/history").text
    assert page.count('<tr class="item') == seeded.history  # 50: one page
    assert "reply number 47 about thrift" in page  # newest first
    assert "10000047" in page and "20000047" in page  # tweet id, and the reply's mention id
    assert f'href="/models?version={seeded.serving}"' in page
    assert page.index("number 49") < page.index("number 0 ")


def test_the_models_page_lists_versions_and_draws_the_loss_curves(
    logged_in: TestClient, config: BotConfig, state: BotState
) -> None:
    seeded = seed_full(config, state)
    newer, older = seeded.versions
    page = logged_in.get("/models").text
    assert newer in page and older in page
    assert '<span class="tag serving">serving</span>' in page
    assert page.count("<svg") == 1  # the serving version's curve
    train = re.search(r'class="loss-train"[^>]* points="([^"]+)"', page)
    val = re.search(r'class="loss-val"[^>]* points="([^"]+)"', page)
    assert train and len(train.group(1).split()) == 40  # a point per logged step
    assert val and len(val.group(1).split()) == 4  # validation every 10 steps
    assert '"units": 32' in page  # the manifest's config
    compared = logged_in.get("/models", params={"version": newer, "compare": older}).text
    assert compared.count("<svg") == 2
    assert f'data-version="{older}"' in compared and "(compared)" in compared


def test_an_unknown_version_in_the_query_falls_back_to_the_serving_one(
    logged_in: TestClient, config: BotConfig, state: BotState
) -> None:
    seeded = seed_full(config, state, history=0)
    page = logged_in.get("/models", params={"version": "../../etc", "compare": "nope"}).text
    assert f'data-version="{seeded.serving}"' in page
    assert page.count("<svg") == 1


@pytest.mark.parametrize("page", PAGES)
def test_every_page_renders_on_a_full_account(
    logged_in: TestClient, config: BotConfig, state: BotState, page: str
) -> None:
    seed_full(config, state)
    assert logged_in.get(page).status_code == 200


def test_no_page_shows_a_secret(
    monkeypatch: pytest.MonkeyPatch, tmp_path, account: str, redis_url: str, state: BotState
) -> None:
    """X credentials in the environment, a Redis password in the URL, the console token:
    none of them is ever in a page (the config is shown, redacted)."""
    for name, value in X_SECRETS.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "awsSecretKeyZ9q8ConsoleTest")
    data = offline_config_data(tmp_path / "volume", account, redis_url)
    data["redis_url"] = "redis://:RedisPassw0rdConsole@127.0.0.1:6379/0"
    config = BotConfig.model_validate(data)
    from bot.console.auth import load_or_create_token

    token = load_or_create_token(config.data_dir)
    client = TestClient(build_app(config, state, token))  # its Redis: the test's own client
    assert client.get("/login", params={"token": token}).status_code == 200
    seed_full(config, state)
    secrets = [*X_SECRETS.values(), "awsSecretKeyZ9q8ConsoleTest", "RedisPassw0rdConsole", token]
    shown = [client.get(page).text for page in PAGES]
    assert "127.0.0.1:6379" in shown[0]  # the config is there, its password masked
    for text in shown:
        assert not [secret for secret in secrets if secret in text]
