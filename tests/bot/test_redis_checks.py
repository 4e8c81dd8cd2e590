"""Start-up checks of Redis durability, against real servers: the shared one, read only, and
private ones started here with the settings under test (the shared server is never changed)."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis
import yaml
from structlog.testing import capture_logs

from bot.redis_checks import check_redis_durability, inspect_durability
from tests.support.configs import offline_config_data
from tests.support.daemon_process import DaemonProcess

pytestmark = pytest.mark.skipif(shutil.which("redis-server") is None, reason="no redis-server")
ACL_LINE_IN_DOCS = "ACL SETUSER parrotbot-poorrichard"


def _start_server(folder: Path, *settings: str) -> tuple[subprocess.Popen[bytes], Path]:
    """A private redis-server on a unix socket only (no port to collide with)."""
    folder.mkdir(parents=True, exist_ok=True)
    socket = folder / "redis.sock"
    process = subprocess.Popen(
        ["redis-server", "--port", "0", "--unixsocket", str(socket), "--dir", str(folder),
         "--save", "", *settings],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    client = redis.Redis(unix_socket_path=str(socket))
    deadline = time.monotonic() + 20
    while True:
        try:
            client.ping()
            break
        except redis.ConnectionError:
            assert process.poll() is None, "redis-server exited"
            assert time.monotonic() < deadline, "redis-server did not answer"
            time.sleep(0.05)
    client.close()
    return process, socket


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[Callable[..., Path]]:
    """Start private servers with the given settings; their socket paths; stopped after."""
    started: list[subprocess.Popen[bytes]] = []

    def start(*settings: str) -> Path:
        process, socket = _start_server(tmp_path / f"redis-{len(started)}", *settings)
        started.append(process)
        return socket

    yield start
    for process in started:
        process.terminate()
        process.wait(timeout=10)


def _client(socket: Path, **options: str) -> redis.Redis:
    return redis.Redis(unix_socket_path=str(socket), decode_responses=True, **options)


def test_the_shared_server_is_read_as_it_is(redis_client: redis.Redis) -> None:
    found = inspect_durability(redis_client)
    assert found.unchecked == []
    assert found.aof_enabled == (redis_client.info("persistence")["aof_enabled"] == 1)
    policy = redis_client.config_get("maxmemory-policy")["maxmemory-policy"]
    assert found.maxmemory_policy == policy
    assert found.durable == (found.aof_enabled and policy == "noeviction")


@pytest.mark.parametrize("policy", ["volatile-lru", "allkeys-lru", "volatile-ttl"])
def test_aof_off_and_an_evicting_policy_are_warned_about_by_name(
    private_redis, policy: str
) -> None:
    socket = private_redis("--appendonly", "no", "--maxmemory-policy", policy)
    with capture_logs() as logs:
        assert check_redis_durability(_client(socket), require_durable=False)
    risks = [e["risk"] for e in logs if e["event"] == "redis.durability_risk"]
    assert len(risks) == 2 and all(e["log_level"] == "warning" for e in logs), logs
    assert "AOF is off" in risks[0] and "reply or post twice" in risks[0]
    assert f"maxmemory-policy {policy}" in risks[1] and "use noeviction" in risks[1]
    assert ("keys with a TTL" in risks[1]) == policy.startswith("volatile")


def test_a_durable_server_passes_quietly(private_redis) -> None:
    socket = private_redis("--appendonly", "yes", "--maxmemory-policy", "noeviction")
    with capture_logs() as logs:
        assert check_redis_durability(_client(socket), require_durable=True)
    assert [e["event"] for e in logs] == ["redis.durability_checked"]


def test_require_durable_refuses_a_server_that_may_lose_state(private_redis) -> None:
    socket = private_redis("--appendonly", "no")
    with capture_logs() as logs:
        assert not check_redis_durability(_client(socket), require_durable=True)
    (refusal,) = [e for e in logs if e["event"] == "redis.not_durable"]
    assert refusal["log_level"] == "error" and "refusing to start" in refusal["error"]
    assert "AOF is off" in refusal["risks"][0]


def test_a_user_refused_config_is_told_what_could_not_be_checked(private_redis) -> None:
    """Managed Redis and ACLs often refuse CONFIG: a warning says so, require_durable refuses."""
    socket = private_redis("--appendonly", "yes")
    admin = _client(socket)
    admin.execute_command("ACL", "SETUSER", "noconfig", "on", ">pw-noconfig", "~*", "+@all",
                          "-config")  # fmt: skip
    limited = _client(socket, username="noconfig", password="pw-noconfig")
    with capture_logs() as logs:
        assert check_redis_durability(limited, require_durable=False)
    (unchecked,) = [e for e in logs if e["event"] == "redis.durability_unchecked"]
    assert unchecked["reason"].startswith("CONFIG GET maxmemory-policy:")
    assert "redis.durability_risk" not in [e["event"] for e in logs]
    with capture_logs() as logs:
        assert not check_redis_durability(limited, require_durable=True)
    assert (
        "could not be checked"
        in next(e for e in logs if e["event"] == "redis.not_durable")["error"]
    )


def test_the_documented_acl_user_can_run_the_checks_and_only_its_own_keys(private_redis) -> None:
    """The ACL line in docs/operations.md, run as written against a real server."""
    docs = (Path(__file__).resolve().parents[2] / "docs" / "operations.md").read_text()
    line = next(x.strip() for x in docs.splitlines() if x.strip().startswith(ACL_LINE_IN_DOCS))
    socket = private_redis("--appendonly", "yes")
    admin = _client(socket)
    words = [w for w in line.split() if w != "<password>"]
    words = [">pw-docs" if w == "><password>" else w for w in words]
    assert admin.execute_command(*words) == "OK"
    user = _client(socket, username="parrotbot-poorrichard", password="pw-docs")
    assert inspect_durability(user).durable
    user.set("parrotbot:poorrichard:probe", "1", ex=60)
    with pytest.raises(redis.exceptions.NoPermissionError):
        user.set("parrotbot:otheraccount:probe", "1")


def test_the_daemon_exits_2_when_durability_is_required_and_missing(
    private_redis, tmp_path: Path, account: str
) -> None:
    """A real `parrotbot run`: the refusal is the exit code and one error line naming why."""
    socket = private_redis("--appendonly", "no")
    data = offline_config_data(tmp_path / "volume", account, f"unix://{socket}")
    data["redis"] = {"require_durable": True}
    config = tmp_path / "bot.yaml"
    config.write_text(yaml.safe_dump(data))
    daemon = DaemonProcess(config, tmp_path / "daemon.log").start()
    assert daemon.process is not None
    assert daemon.process.wait(timeout=120) == 2, daemon.tail()
    (refusal,) = daemon.named("redis.not_durable")
    assert "redis.require_durable is true" in refusal["error"]
    assert "lease.acquired" not in [e["event"] for e in daemon.events()]


def test_a_daemon_runs_as_the_documented_acl_user(
    private_redis, tmp_path: Path, account: str
) -> None:
    """The ACL in the docs is enough to run: lease, scheduler, scrape, queue, launcher."""
    docs = (Path(__file__).resolve().parents[2] / "docs" / "operations.md").read_text()
    line = next(x.strip() for x in docs.splitlines() if x.strip().startswith(ACL_LINE_IN_DOCS))
    socket = private_redis("--appendonly", "yes")
    words = [">pw-docs" if w == "><password>" else w for w in line.split()]
    words = [w.replace("poorrichard", account) for w in words]
    assert _client(socket).execute_command(*words) == "OK"
    url = f"unix://parrotbot-{account}:pw-docs@{socket}"
    data = offline_config_data(tmp_path / "volume", account, url)
    data["redis"] = {"require_durable": True}
    config = tmp_path / "bot.yaml"
    config.write_text(yaml.safe_dump(data))
    daemon = DaemonProcess(config, tmp_path / "daemon.log").start()
    try:
        daemon.wait_for("lease.acquired")
        daemon.wait_for("launcher.job_taken", timeout=180)
    finally:
        assert daemon.stop(timeout=30) == 0, daemon.tail()
    text = daemon.text()
    assert "NOPERM" not in text and "redis.durability_unchecked" not in text, daemon.tail()
