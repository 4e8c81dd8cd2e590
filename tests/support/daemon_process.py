"""Run the real daemon as a child process and read its JSON log lines as events."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

Event = dict[str, Any]


def parse_events(text: str) -> list[Event]:
    """Our JSON log lines; TensorFlow's C++ start-up lines and half-written lines are skipped."""
    found = []
    for line in text.splitlines():
        if not line.startswith("{"):
            continue
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and "event" in record:
            found.append(record)
    return found


class DaemonProcess:
    """A `parrotbot` process (`run` by default; `launcher` for the Procfile's second one)."""

    def __init__(
        self,
        config: Path,
        log_path: Path,
        env: dict[str, str] | None = None,
        *,
        command: str = "run",
    ) -> None:
        self.config = config
        self.command = command
        self.log_path = log_path
        self.env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> DaemonProcess:
        with self.log_path.open("ab") as log_file:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "bot.cli", self.command, "--config", str(self.config)],
                stdout=log_file,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=self.env,
            )
        return self

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def text(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def events(self) -> list[Event]:
        return parse_events(self.text())

    def named(self, name: str) -> list[Event]:
        return [event for event in self.events() if event["event"] == name]

    def wait_for(
        self,
        name: str,
        where: Callable[[Event], bool] = lambda _event: True,
        *,
        after: int = 0,
        timeout: float = 120.0,
    ) -> Event:
        """The first event called `name` (past the first `after` events) that matches."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for event in self.events()[after:]:
                if event["event"] == name and where(event):
                    return event
            if self.process is not None and self.process.poll() is not None:
                raise AssertionError(
                    f"daemon exited ({self.process.returncode}) before {name!r}:\n{self.tail()}"
                )
            time.sleep(0.1)
        raise AssertionError(f"no {name!r} event within {timeout}s:\n{self.tail()}")

    def tail(self, lines: int = 40) -> str:
        return "\n".join(self.text().splitlines()[-lines:])

    def stop(self, timeout: float = 10.0) -> int:
        """SIGTERM, and the daemon must be gone within `timeout` seconds."""
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise AssertionError(f"daemon did not stop within {timeout}s:\n{self.tail()}") from None

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def wait_until(predicate: Callable[[], Any], *, timeout: float, message: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(message)


# --- the offline platform's files on a test daemon's volume ---------------------------
def volume_of(config_path: Path) -> Path:
    return Path(yaml.safe_load(config_path.read_text())["data_dir"])


def with_model(config_path: Path, checkpoints: Path) -> Path:
    shutil.copytree(checkpoints, volume_of(config_path) / "checkpoints", dirs_exist_ok=True)
    return config_path


def outbox(config_path: Path) -> list[dict]:
    return read_jsonl(volume_of(config_path) / "local" / "outbox.jsonl")


def append_mention(config_path: Path, mention_id: str, text: str, author: str = "alice") -> None:
    path = volume_of(config_path) / "local" / "mentions.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as mentions:
        mentions.write(json.dumps({"id": mention_id, "author": author, "text": text}) + "\n")


def replies_to(config_path: Path, mention_id: str) -> list[dict]:
    return [t for t in outbox(config_path) if t.get("in_reply_to_tweet_id") == mention_id]
