"""What the end-to-end tests share: daemons as real processes, killed at the end."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.daemon_process import DaemonProcess


@pytest.fixture
def daemons(tmp_path: Path):
    """Start daemons; whatever is still running at the end is killed."""
    started: list[DaemonProcess] = []

    def start(config: Path, name: str = "daemon", env: dict[str, str] | None = None):
        daemon = DaemonProcess(config, tmp_path / f"{name}.log", env=env).start()
        started.append(daemon)
        return daemon

    yield start
    for daemon in started:
        daemon.kill()
