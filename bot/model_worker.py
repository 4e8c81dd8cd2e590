"""The daemon's side of a model worker: start one per version, ask it for texts, stop it.

A :class:`ModelWorker` stands where the loaded model stood: the generation service calls its
``generate`` like any :class:`training.models.TextModel`, and each call is one request to a
``python -m training.worker`` process (the protocol is described there). The daemon itself
never imports a framework.

A worker that dies mid-request (a native crash, the OOM killer) is seen at once, as the end
of its stdout; the request is retried once on a fresh worker of the same version, so the
reply waiting for it still goes out. A worker that dies before it reports ready is started
once more, and a version whose worker dies twice that way is refused (:class:`WorkerDied`);
one that reports a load error is refused at once (:class:`WorkerFailed`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import structlog

from training.child_process import framework_environment
from training.worker import ProtocolError, read_frame, write_frame

log = structlog.get_logger(__name__)

WORKER_MODULE = "training.worker"
# Loading imports a framework and reads weights: minutes on a slow volume are not a hang.
LOAD_TIMEOUT_SECONDS = 600.0
# One batch of candidates takes well under a second; a request this slow is a stuck worker.
REQUEST_TIMEOUT_SECONDS = 120.0
STOP_TIMEOUT_SECONDS = 5.0
_PAGE_SIZE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


class WorkerFailed(Exception):
    """The worker could not load its version and said why (the message is its reason)."""


class WorkerDied(Exception):
    """The worker process ended without an answer (a crash, a kill, a timeout)."""


@dataclass(frozen=True)
class WorkerStats:
    """What `status` and `/metrics` show about the worker serving now."""

    pid: int
    version: str
    rss_bytes: int
    requests: int
    restarts: int


class _Process:
    """One worker process and its two pipes; reads wait with a deadline."""

    def __init__(self, kind: str, folder: Path, niceness: int) -> None:
        level = logging.getLevelName(logging.getLogger().getEffectiveLevel())
        command = [sys.executable, "-m", WORKER_MODULE, kind, str(folder), "--log-level", level]
        if niceness:
            command += ["--niceness", str(niceness)]
        debug = logging.getLogger().isEnabledFor(logging.DEBUG)
        self.popen = subprocess.Popen(
            command,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            bufsize=0,
            env=framework_environment(os.environ, debug=debug),
            # Its own session: a Ctrl-C meant for the daemon does not cut a request short;
            # the daemon stops its worker by closing stdin, in order.
            start_new_session=True,
        )
        assert self.popen.stdin is not None and self.popen.stdout is not None
        self.stdin: IO[bytes] = self.popen.stdin
        self.stdout: IO[bytes] = self.popen.stdout
        self._deadline = 0.0

    @property
    def pid(self) -> int:
        return self.popen.pid

    def send(self, message: dict[str, Any]) -> None:
        try:
            write_frame(self.stdin, message)  # type: ignore[arg-type]
        except (BrokenPipeError, ValueError) as exc:  # ValueError: the pipe is closed
            raise WorkerDied(self._ended("while sent a request")) from exc

    def receive(self, timeout: float) -> dict[str, Any]:
        self._deadline = time.monotonic() + timeout
        try:
            message = read_frame(self)  # type: ignore[arg-type]
        except TimeoutError:
            self.kill()
            raise WorkerDied(f"worker {self.pid} gave no answer in {timeout:.0f} s") from None
        except (ProtocolError, ValueError) as exc:
            self.kill()
            raise WorkerDied(self._ended(f"with a broken answer ({exc})")) from None
        if message is None:
            raise WorkerDied(self._ended("before it answered"))
        return message

    def read(self, size: int) -> bytes:
        """`read_frame`'s source: the pipe, waiting no longer than the current deadline."""
        remaining = self._deadline - time.monotonic()
        if remaining <= 0 or not select.select([self.stdout], [], [], remaining)[0]:
            raise TimeoutError
        return self.stdout.read(size) or b""

    def _ended(self, when: str) -> str:
        try:
            code = self.popen.wait(timeout=STOP_TIMEOUT_SECONDS)
        except subprocess.TimeoutExpired:
            self.kill()
            code = self.popen.wait()
        how = f"signal {signal.Signals(-code).name}" if code < 0 else f"exit status {code}"
        return f"worker {self.pid} ended ({how}) {when}"

    def stop(self) -> None:
        """Close stdin (the worker's stop signal) and reap it; kill it if it lingers."""
        with contextlib.suppress(OSError):
            self.stdin.close()
        try:
            self.popen.wait(timeout=STOP_TIMEOUT_SECONDS)
        except subprocess.TimeoutExpired:
            self.kill()
        self.stdout.close()

    def kill(self) -> None:
        if self.popen.poll() is None:
            self.popen.kill()
            self.popen.wait()

    def rss_bytes(self) -> int:
        try:
            return int(Path(f"/proc/{self.pid}/statm").read_text().split()[1]) * _PAGE_SIZE
        except (OSError, IndexError, ValueError):
            return 0


@dataclass(frozen=True)
class Started:
    """A worker that reported ready, with what it read and sampled while loading."""

    worker: ModelWorker
    manifest_json: str
    smoke_sample: str


class ModelWorker:
    """A published version served by its own process; a :class:`TextModel` to its callers."""

    def __init__(self, kind: str, folder: Path, process: _Process) -> None:
        self.kind = kind
        self.folder = folder
        self.version = folder.name
        self._process = process
        # One request at a time per worker: the pipe carries one conversation.
        self._lock = threading.Lock()
        self._requests = 0
        self._restarts = 0
        self._in_flight = False
        self._closed = False

    @classmethod
    def start(cls, kind: str, folder: Path, *, niceness: int = 0) -> Started:
        """Start a worker for ``folder`` and wait until it is ready; see the module docstring.

        ``niceness`` is added to the priority of the worker's loading, so the worker still
        serving keeps the CPU first; the new one answers at the daemon's own priority.
        """
        process, manifest, sample = _start_ready(kind, folder, niceness)
        return Started(cls(kind, folder, process), manifest, sample)

    @property
    def pid(self) -> int:
        return self._process.pid

    @property
    def in_flight(self) -> bool:
        """Whether a request is being answered now."""
        return self._in_flight

    def stats(self) -> WorkerStats:
        return WorkerStats(
            pid=self.pid,
            version=self.version,
            rss_bytes=self._process.rss_bytes(),
            requests=self._requests,
            restarts=self._restarts,
        )

    def generate(self, seeds: Sequence[str], **options: Any) -> list[str]:
        """The worker's texts for ``seeds``; retried once on a fresh worker if this one dies."""
        request = {"generate": {"seeds": list(seeds), "options": options}}
        with self._lock:
            if self._closed:
                raise WorkerDied(f"the worker of {self.version} was stopped")
            self._in_flight = True
            try:
                try:
                    answer = self._ask(request)
                except WorkerDied as exc:
                    log.warning("worker.died", version=self.version, reason=str(exc))
                    self._replace()
                    answer = self._ask(request)
            finally:
                self._in_flight = False
        if "error" in answer:
            raise ValueError(answer["error"])
        self._requests += 1
        return list(answer["texts"])

    def save(self, directory: Path) -> None:
        raise NotImplementedError("a worker serves a published version; it saves nothing")

    def close(self) -> None:
        """Stop the worker once the request in flight (if any) is answered."""
        with self._lock:
            if not self._closed:
                self._closed = True
                self._process.stop()
                log.info("worker.stopped", version=self.version, pid=self.pid)

    def _ask(self, request: dict[str, Any]) -> dict[str, Any]:
        self._process.send(request)
        return self._process.receive(REQUEST_TIMEOUT_SECONDS)

    def _replace(self) -> None:
        """A fresh worker of the same version in place of a dead one, at full priority."""
        self._process.kill()
        self._process, _, _ = _start_ready(self.kind, self.folder, 0)
        self._restarts += 1
        log.info("worker.restarted", version=self.version, pid=self.pid, restarts=self._restarts)


def _start_ready(kind: str, folder: Path, niceness: int) -> tuple[_Process, str, str]:
    """A worker process that reported ready; a second try if the first one died loading."""
    for attempt in (1, 2):
        process = _Process(kind, folder, niceness)
        log.info("worker.starting", version=folder.name, pid=process.pid, attempt=attempt)
        try:
            message = process.receive(LOAD_TIMEOUT_SECONDS)
        except WorkerDied as exc:
            if attempt == 2:
                raise WorkerDied(f"died twice while loading: {exc}") from None
            log.warning("worker.died_loading", version=folder.name, reason=str(exc))
            continue
        if "failed" in message:
            process.stop()
            raise WorkerFailed(str(message["failed"]))
        ready = message.get("ready")
        if not isinstance(ready, dict):
            process.kill()
            raise WorkerDied(f"worker {process.pid} sent {sorted(message)} instead of ready")
        log.info("worker.ready", version=folder.name, pid=process.pid)
        return process, str(ready["manifest"]), str(ready["smoke"])
    raise AssertionError("unreachable")
