"""ConsoleServer: a real uvicorn on a loopback port, in a thread, leaving signals alone."""

from __future__ import annotations

import signal
import socket
import urllib.error
import urllib.request

import pytest
import redis
from structlog.testing import capture_logs

from bot.config import BotConfig
from bot.console.auth import load_or_create_token
from bot.console.server import ConsoleServer
from bot.state import BotState
from tests.support.network import free_port


def _status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


def _cookie_browser() -> urllib.request.OpenerDirector:
    """A urllib opener that keeps cookies, as a browser following the login link does."""
    import http.cookiejar

    return urllib.request.build_opener(
        urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar())
    )


def _server(config: BotConfig, state: BotState, port: int) -> ConsoleServer:
    settings = config.model_copy(
        update={"console": config.console.model_copy(update={"port": port})}
    )
    return ConsoleServer(settings, lambda: state)


def test_it_serves_in_a_thread_logs_where_but_never_the_token_and_keeps_the_signals(
    config: BotConfig, state: BotState
) -> None:
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    port = free_port()
    server = _server(config, state, port)
    with capture_logs() as logs:
        assert server.start() == port
        try:
            base = f"http://127.0.0.1:{port}"
            assert _status(f"{base}/") == 401
            assert server.login_url == f"{base}/login?token={load_or_create_token(config.data_dir)}"
            with _cookie_browser().open(server.login_url, timeout=10) as overview:
                assert overview.status == 200  # the redirect, followed with the cookie
                assert overview.url == f"{base}/"
            assert {sig: signal.getsignal(sig) for sig in handlers} == handlers
        finally:
            server.stop()
    listening = [entry for entry in logs if entry["event"] == "console.listening"]
    assert [entry["url"] for entry in listening] == [f"{base}/"]
    token = load_or_create_token(config.data_dir)
    assert not [entry for entry in logs if token in repr(entry)]  # a credential: never logged
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", port), timeout=2):
        pass  # stopped: nothing listens any more


def test_port_zero_picks_a_free_port(config: BotConfig, state: BotState) -> None:
    server = _server(config, state, 0)
    port = server.start()
    try:
        assert port > 0 and _status(f"http://127.0.0.1:{port}/") == 401
    finally:
        server.stop()


def test_a_taken_port_is_an_oserror_at_start(config: BotConfig, state: BotState) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        server = _server(config, state, taken.getsockname()[1])
        with pytest.raises(OSError):
            server.start()
        assert not server.running


def test_the_live_config_is_read_at_each_request(
    config: BotConfig, redis_client: redis.Redis
) -> None:
    """The daemon hands the console a callable, so a config edit shows without a restart."""
    current = {
        "config": config.model_copy(
            update={"console": config.console.model_copy(update={"port": 0})}
        )
    }
    server = ConsoleServer(
        lambda: current["config"], lambda: BotState(redis_client, config.account)
    )
    port = server.start()
    try:
        opener = _cookie_browser()
        opener.open(server.login_url, timeout=10).read()
        renamed = config.targets[0].model_copy(update={"handle": "renamedtarget"})
        current["config"] = current["config"].model_copy(update={"targets": [renamed]})
        page = opener.open(f"http://127.0.0.1:{port}/", timeout=10).read().decode()
        assert "@renamedtarget" in page
    finally:
        server.stop()


def test_parrotbot_console_serves_alone_shows_the_link_on_stderr_and_stops_on_sigterm(
    write_config,
) -> None:
    """The command for a host that runs no daemon: the link on the terminal, not in a log."""
    import subprocess
    import sys

    config = write_config()
    command = [sys.executable, "-m", "bot.cli", "console", "-c", str(config)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert process.stderr is not None
        logged: list[str] = []
        for line in process.stderr:  # the log lines, then the link once the server is up
            if line.startswith("console: open "):
                break
            logged.append(line)
        else:
            raise AssertionError("no login link: " + "".join(logged))
        login = line.removeprefix("console: open ").strip()
        assert login.startswith("http://127.0.0.1:")
        with _cookie_browser().open(login, timeout=10) as overview:
            assert overview.status == 200
        process.send_signal(signal.SIGTERM)
        _, rest = process.communicate(timeout=30)
        assert process.returncode == 0
        logs = "".join(logged) + rest
        assert "console.listening" in logs and "console.stopped" in logs
        assert login.split("token=", 1)[1] not in logs  # the link is shown once, never logged
    finally:
        process.kill()
