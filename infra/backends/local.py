"""The local backend: training in a child process on this machine (the offline default).

A separate process keeps TensorFlow's threads and memory away from the daemon, so the bot
keeps posting while it trains. Here the volume is simply `data_dir`: the trainer reads
`data_dir/datasets`, publishes into `data_dir/checkpoints` through the checkpoint protocol, and
the daemon's watcher picks the result up like any other version.

The outcome is read from the trainer's own JSON log lines (`train.published`, `train.failed`,
`train.stopped`) as well as its exit status, so a launcher that adopts a trainer it did not
start (its first launcher was killed) still learns how it ended.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import structlog

from infra.backend import (
    LaunchError,
    Outcome,
    OutcomeKind,
    Progress,
    as_fields,
    current_dataset_hash,
    tail_lines,
)
from infra.job import Job
from infra.settings import LaunchRetry
from training.child_process import framework_environment
from training.request import TrainRequest

log = structlog.get_logger(__name__)

TRAINER = ("-m", "training.train")
class LocalRun:
    """One trainer process: a child we started, or (adopted) a pid a dead launcher left."""

    def __init__(
        self,
        pid: int,
        log_path: Path,
        request_path: Path,
        process: subprocess.Popen[bytes] | None = None,
    ) -> None:
        self.pid = pid
        self.log_path = log_path
        self.request_path = request_path
        self.process = process
        self.instance_id = f"local:{socket.gethostname()}:{pid}"
        self._stop_reason: tuple[OutcomeKind, str] | None = None

    def poll(self) -> Outcome | None:
        if self._alive():
            return None
        code = self.process.returncode if self.process is not None else None
        events = {event.get("event"): event for event in self._events()}
        if self._stop_reason is not None and "train.published" not in events:
            kind, detail = self._stop_reason
            return Outcome(kind, detail, log_tail=self.log_tail())
        if "train.published" in events and code in (0, None):
            version = str(events["train.published"].get("version", ""))
            return Outcome(OutcomeKind.DONE, f"published {version}", version=version)
        if "train.failed" in events or code not in (0, None):
            error = events.get("train.failed", {}).get("error", f"exit status {code}")
            return Outcome(OutcomeKind.FAILED, f"trainer failed: {error}", log_tail=self.log_tail())
        # Ended without publishing or failing: stopped by a signal from outside, or killed.
        return Outcome(
            OutcomeKind.INTERRUPTED, "trainer stopped before publishing", log_tail=self.log_tail()
        )

    def cost(self) -> float:
        return 0.0

    def log_tail(self, lines: int = 20) -> list[str]:
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return []
        return tail_lines(text, lines)

    def interrupt(self, timeout: float) -> None:
        self._stop(OutcomeKind.INTERRUPTED, "launcher stopping", timeout)

    def terminate(self, reason: str) -> None:
        self._stop(OutcomeKind.FAILED, reason, timeout=10.0)

    def cleanup(self) -> None:
        if self._alive():
            self._stop(OutcomeKind.INTERRUPTED, "cleanup", timeout=10.0)

    def _stop(self, kind: OutcomeKind, detail: str, timeout: float) -> None:
        """SIGTERM lets the trainer save what it has; SIGKILL if it does not end in time."""
        self._stop_reason = (kind, detail)
        if not self._alive():
            return
        os.kill(self.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while self._alive() and time.monotonic() < deadline:
            time.sleep(0.05)
        if self._alive():
            os.kill(self.pid, signal.SIGKILL)
            while self._alive():
                time.sleep(0.05)
        log.info("training.stopped", pid=self.pid, reason=detail)

    def _alive(self) -> bool:
        if self.process is not None:
            return self.process.poll() is None
        return _is_trainer(self.pid, self.request_path)

    def _events(self) -> list[dict[str, object]]:
        found = []
        for line in self.log_tail(200):
            if line.startswith("{"):
                try:
                    found.append(json.loads(line))
                except ValueError:
                    continue
        return found


class LocalBackend:
    name = "local"
    max_run_seconds: float | None = None
    poll_seconds = 0.5
    survives_launcher = False
    launch_retry = LaunchRetry()  # a local launch never waits for capacity

    def __init__(self, data_dir: Path, work_dir: Path | None = None) -> None:
        self.data_dir = data_dir
        self.work_dir = work_dir or data_dir / "logs" / "training"

    def start(self, job: Job, progress: Progress) -> LocalRun:
        self.work_dir.mkdir(parents=True, exist_ok=True)
        request = TrainRequest.for_job(job, checkpoints_dir=self.data_dir / "checkpoints")
        request_path, log_path = self._paths(job)
        request_path.write_text(request.to_json(), encoding="utf-8")
        command = [sys.executable, *TRAINER, "--request", str(request_path)]
        if job.attempt > 1 and trainer_can_resume():
            command.append("--resume")
        # The trainer reads the datasets a moment later; a scrape landing in between shows in
        # its manifest, which remains the authority on what a version was trained on.
        data_hash = current_dataset_hash(job.datasets)
        try:
            with log_path.open("ab") as log_file:
                process = subprocess.Popen(
                    command,
                    stdin=subprocess.DEVNULL,
                    stdout=log_file,
                    stderr=subprocess.STDOUT,
                    # Its own process group: a Ctrl-C meant for the daemon reaches the daemon,
                    # which then stops the trainer in order.
                    start_new_session=True,
                    env=framework_environment(os.environ, debug=log_debug_enabled()),
                )
        except OSError as exc:
            raise LaunchError(f"cannot start the trainer: {exc}") from exc
        run = LocalRun(process.pid, log_path, request_path, process)
        progress(instance_id=run.instance_id, **as_fields(dataset_hash=data_hash))
        log.info(
            "training.started",
            backend=self.name,
            job_id=job.id,
            pid=process.pid,
            trigger=job.trigger,
            resume="--resume" in command,
            log=str(log_path),
        )
        return run

    def adopt(self, job: Job) -> LocalRun | None:
        """The trainer a killed launcher started keeps running in its own session: follow it."""
        host, _, pid = job.instance_id.removeprefix("local:").rpartition(":")
        if host != socket.gethostname() or not pid.isdigit():
            return None
        request_path, log_path = self._paths(job)
        if not _is_trainer(int(pid), request_path):
            return None
        log.info("training.adopted", job_id=job.id, pid=int(pid))
        return LocalRun(int(pid), log_path, request_path)

    def _paths(self, job: Job) -> tuple[Path, Path]:
        stem = self.work_dir / f"{job.id}-{job.attempt}"
        return stem.with_suffix(".json"), stem.with_suffix(".log")


def log_debug_enabled() -> bool:
    """Whether this process logs at DEBUG (the daemon's `logging.level`)."""
    return logging.getLogger().isEnabledFor(logging.DEBUG)


def _is_trainer(pid: int, request_path: Path) -> bool:
    """True while `pid` is the trainer for this request (pids are reused: check its command)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    try:
        status = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        status = ""
    return status != "Z" and str(request_path).encode() in cmdline


@functools.cache
def trainer_can_resume() -> bool:
    """Whether `training.train` takes `--resume` (the [training] issue adds it)."""
    try:
        result = subprocess.run(
            [sys.executable, *TRAINER, "--help"], capture_output=True, text=True, timeout=120
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return "--resume" in result.stdout
