"""The interface the launcher drives every training backend through.

A backend starts (or adopts) one attempt of a job; the attempt is polled until it has an
`Outcome`. The launcher owns the queue, the states and the clock (max run time); backends own
processes, instances and volumes, and leave nothing running once `cleanup()` returns.

It sits beside the launcher, not in `infra/backends/`, because both sides of the interface use
it: the launcher, the backends, and the AWS code below the aws backend (`infra/aws/fleet.py`
raises the launch errors). Inside `backends/` it made that package and `infra/aws/` import
each other.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, Protocol

import structlog

from infra.job import Job
from infra.settings import LaunchRetry

log = structlog.get_logger(__name__)


class OutcomeKind(StrEnum):
    DONE = "done"  # a version was published
    FAILED = "failed"  # the trainer failed, or the job cannot run; retrying will not help
    INTERRUPTED = "interrupted"  # the machine went away (spot reclaim, stop): run it again


@dataclass(frozen=True)
class Outcome:
    kind: OutcomeKind
    detail: str
    version: str = ""
    log_tail: list[str] = field(default_factory=list)


class LaunchError(Exception):
    """The attempt could not be started (bad settings, a refusal); the message says why.

    Launching again would fail the same way, so the job fails at once with this message.
    """


class TransientLaunchError(LaunchError):
    """The attempt could not be started *now* (no spot capacity, the API throttled us).

    The same launch may succeed later: the launcher puts the job back to wait and tries again
    with growing delays (the backend's `launch_retry`), failing it only after the give-up window.
    """


# Called by a backend as the attempt gets its machine: fields for the job record
# (instance_id, availability_zone, spot_price, the dataset_hash of what it trains on, …).
Progress = Callable[..., None]


class Run(Protocol):
    """One attempt of a job, on one machine."""

    instance_id: str

    def poll(self) -> Outcome | None:
        """The outcome once there is one; None while it is still running."""

    def cost(self) -> float | None:
        """Estimated cost of this attempt so far, in USD; None when no price is known."""

    def log_tail(self, lines: int = 20) -> list[str]:
        """The last lines of the trainer's log, as far as they are known here."""

    def interrupt(self, timeout: float) -> None:
        """The launcher is stopping: let the attempt save what it can (it will be resumed)."""

    def terminate(self, reason: str) -> None:
        """Stop the attempt for good (max run time exceeded)."""

    def cleanup(self) -> None:
        """Leave nothing behind: no process, instance, fleet or extra volume."""


class Backend(Protocol):
    name: str
    # Jobs running longer than this are terminated and failed (None: no limit).
    max_run_seconds: float | None
    # How often the launcher polls a run.
    poll_seconds: float
    # Whether a launcher that stops may leave the attempt running for another to adopt.
    survives_launcher: bool
    # How a job waits after a TransientLaunchError, and for how long at most.
    launch_retry: LaunchRetry

    def start(self, job: Job, progress: Progress) -> Run:
        """Launch a new attempt of `job` (raise LaunchError when it cannot, TransientLaunchError
        when it cannot now but may later)."""

    def adopt(self, job: Job) -> Run | None:
        """Resume tracking an attempt a stopped or dead launcher left behind, if it lives."""


def tail_lines(text: str, lines: int) -> list[str]:
    return text.splitlines()[-lines:]


def as_fields(**values: Any) -> dict[str, Any]:
    """Drop None values: a backend reports only what it knows."""
    return {name: value for name, value in values.items() if value is not None}


def current_dataset_hash(paths: Sequence[str | Path]) -> str | None:
    """The hash of the datasets as they are now, as the trainer's manifest will record it.

    A job's `dataset_hash` is taken when it is queued; a job that waited (for capacity, for its
    model's slot, for another attempt) trains on what the scraper has added since, so each
    attempt records what it actually gets. None when the files cannot be read as a dataset:
    the trainer then fails with the reason, which is the better place to report it.
    """
    from training.dataset import DatasetError, dataset_hash, load_tweets

    try:
        return dataset_hash(load_tweets([Path(p) for p in paths]))
    except DatasetError as exc:
        log.warning("launcher.dataset_unreadable", error=str(exc))
        return None
