"""The local backend: training in a child process on this machine.

A separate process keeps TensorFlow's threads and memory away from the daemon, so the bot
keeps posting and replying while it trains; the trainer publishes through the checkpoint
protocol and the daemon's watcher picks the result up like any other version.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import structlog

from infra.training_request import TrainingRequest

log = structlog.get_logger(__name__)


@dataclass
class LocalRun:
    process: subprocess.Popen[bytes]
    log_path: Path
    request: TrainingRequest

    @property
    def pid(self) -> int:
        return self.process.pid

    def poll(self) -> int | None:
        """The exit code once the trainer has finished, else None."""
        return self.process.poll()

    def log_tail(self, lines: int = 5) -> list[str]:
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:]
        except OSError:
            return []

    def stop(self, timeout: float = 8.0) -> int | None:
        """SIGTERM lets the trainer save what it has; SIGKILL if it does not end in time."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode


class LocalBackend:
    name = "local"

    def __init__(self, work_dir: Path) -> None:
        self.work_dir = work_dir

    def start(self, request: TrainingRequest) -> LocalRun:
        self.work_dir.mkdir(parents=True, exist_ok=True)
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
        request_path = self.work_dir / f"train-{stamp}-{os.getpid()}.json"
        request_path.write_text(request.to_json(), encoding="utf-8")
        log_path = request_path.with_suffix(".log")
        with log_path.open("wb") as log_file:
            process = subprocess.Popen(
                [sys.executable, "-m", "training.train", "--request", str(request_path)],
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                # Its own process group: a Ctrl-C meant for the daemon reaches the daemon,
                # which then stops the trainer in order.
                start_new_session=True,
            )
        log.info(
            "training.started",
            backend=self.name,
            pid=process.pid,
            trigger=request.trigger,
            log=str(log_path),
        )
        return LocalRun(process=process, log_path=log_path, request=request)
