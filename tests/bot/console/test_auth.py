"""Access: the token file, the login, the session cookie and the CSRF check."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from bot.config import BotConfig, ConsoleConfig
from bot.console.app import build_app
from bot.console.auth import COOKIE_NAME, load_or_create_token, token_path
from bot.state import BotState
from tests.support.browser import csrf_of

PAGES = ["/", "/overview/fragment", "/history", "/models", "/opt-outs"]
POSTS = ["/models/rollback", "/models/retrain", "/opt-outs/remove"]


def test_the_token_file_is_created_private_and_then_reused(tmp_path: Path) -> None:
    token = load_or_create_token(tmp_path / "volume")
    path = token_path(tmp_path / "volume")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert len(token) >= 40
    assert load_or_create_token(tmp_path / "volume") == token


def test_a_token_file_others_can_read_is_made_private(tmp_path: Path) -> None:
    path = token_path(tmp_path)
    path.write_text("operator-chosen-token\n")
    path.chmod(0o644)
    assert load_or_create_token(tmp_path) == "operator-chosen-token"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


@pytest.mark.parametrize("page", PAGES)
def test_every_page_is_401_without_a_session(client: TestClient, page: str) -> None:
    response = client.get(page)
    assert response.status_code == 401
    assert "login" in response.text


def test_a_forged_cookie_is_401(client: TestClient) -> None:
    client.cookies.set(COOKIE_NAME, "0123456789abcdef.0123456789abcdef")
    assert client.get("/").status_code == 401


@pytest.mark.parametrize("offered", [None, "", "wrong-token"])
def test_login_with_a_wrong_token_is_401_and_sets_no_cookie(
    client: TestClient, offered: str | None
) -> None:
    params = {} if offered is None else {"token": offered}
    response = client.get("/login", params=params, follow_redirects=False)
    assert response.status_code == 401
    assert "set-cookie" not in response.headers
    assert client.get("/").status_code == 401


def test_login_sets_a_strict_http_only_cookie_and_redirects_to_the_overview(
    client: TestClient, token: str
) -> None:
    response = client.get("/login", params={"token": token}, follow_redirects=False)
    assert response.status_code == 303
    assert response.headers["location"] == "/"
    cookie = response.headers["set-cookie"]
    assert cookie.startswith(f"{COOKIE_NAME}=")
    assert "HttpOnly" in cookie
    assert "SameSite=strict" in cookie
    overview = client.get("/")
    assert overview.status_code == 200
    assert "<h1>Overview</h1>" in overview.text
    assert overview.headers["referrer-policy"] == "no-referrer"  # the login URL holds the token


@pytest.mark.parametrize("path", POSTS)
def test_a_post_without_a_csrf_token_is_403(logged_in: TestClient, path: str) -> None:
    assert logged_in.post(path, data={"handle": "x", "confirm": "yes"}).status_code == 403


@pytest.mark.parametrize("path", POSTS)
def test_a_post_with_a_wrong_csrf_token_is_403(logged_in: TestClient, path: str) -> None:
    sent = logged_in.post(path, data={"csrf": "f" * 64, "handle": "x", "confirm": "yes"})
    assert sent.status_code == 403
    header = logged_in.post(path, headers={"X-CSRF-Token": "0" * 64}, data={"handle": "x"})
    assert header.status_code == 403


def test_a_post_without_a_session_is_401(client: TestClient) -> None:
    assert (
        client.post("/opt-outs/remove", data={"csrf": "a" * 64, "handle": "x"}).status_code == 401
    )


def test_the_csrf_token_of_another_session_is_refused(
    config: BotConfig, state: BotState, token: str
) -> None:
    first, second = (TestClient(build_app(config, state, token)) for _ in range(2))
    for browser in (first, second):
        assert browser.get("/login", params={"token": token}).status_code == 200
    theirs = csrf_of(first.get("/models").text)
    assert second.post("/opt-outs/remove", data={"csrf": theirs, "handle": "x"}).status_code == 403
    mine = csrf_of(second.get("/models").text)
    assert mine != theirs
    assert second.post("/opt-outs/remove", data={"csrf": mine, "handle": "x"}).status_code == 200


def test_the_htmx_header_carries_the_csrf_token_too(logged_in: TestClient) -> None:
    page = logged_in.get("/models").text
    csrf = csrf_of(page)
    assert f'hx-headers=\'{{"X-CSRF-Token": "{csrf}"}}\'' in page
    response = logged_in.post(
        "/opt-outs/remove", headers={"X-CSRF-Token": csrf}, data={"handle": "x"}
    )
    assert response.status_code == 200


def test_the_console_host_follows_the_health_servers_loopback_rule() -> None:
    assert ConsoleConfig(host="::1").host == "::1"
    assert ConsoleConfig(host="localhost").host == "localhost"
    assert ConsoleConfig().port == 9465
    with pytest.raises(ValueError, match="loopback"):
        ConsoleConfig(host="0.0.0.0")
