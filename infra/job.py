"""A retrain job: what to train (the spec) and what became of it (the record).

A job is stored as one Redis hash. Text fields are stored as they are, so `redis-cli HGETALL`
reads naturally; lists, dicts and numbers as JSON. `JobState` is a `str, Enum`: the value
written to Redis is the state's name, and each state has its own index (infra/keys.py).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import secrets
import time
from dataclasses import dataclass, field
from enum import Enum, StrEnum
from typing import Any

from infra.redaction import redact, redact_lines


class JobState(StrEnum):
    QUEUED = "queued"
    LAUNCHING = "launching"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"

    @property
    def terminal(self) -> bool:
        return self in (JobState.DONE, JobState.FAILED)


def new_job_id() -> str:
    """`YYYYmmddTHHMMSSZ-<6 hex>`: sorts by creation, unique across processes."""
    return f"{dt.datetime.now(dt.UTC).strftime('%Y%m%dT%H%M%SZ')}-{secrets.token_hex(3)}"


@dataclass
class JobSpec:
    """What a trigger asks for; everything a backend needs to train, nothing about where."""

    account: str
    model_kind: str
    targets: list[str]
    datasets: list[str]
    dataset_hash: str
    model_config: dict[str, Any]
    trigger: str
    # One sampling weight per dataset (the targets' `weight`); None: all equal.
    weights: list[float] | None = None
    # training.cleaning options (the config's `cleaning` section); empty: the defaults.
    cleaning: dict[str, Any] = field(default_factory=dict)


@dataclass
class Job(JobSpec):
    """A spec with its id and its record (the fields after `id`)."""

    id: str = ""
    state: JobState = JobState.QUEUED
    # Triggers merged into this job while it waited (a request while one is queued coalesces).
    coalesced: list[str] = field(default_factory=list)
    created_at: float = 0.0
    updated_at: float = 0.0
    started_at: float | None = None
    finished_at: float | None = None
    attempt: int = 0
    backend: str = ""
    consumer: str = ""
    instance_id: str = ""
    fleet_id: str = ""
    availability_zone: str = ""
    instance_type: str = ""
    spot_price: float | None = None
    cost_estimate: float = 0.0
    # What earlier attempts cost (their instances are gone); the running one adds to it.
    cost_prior_attempts: float = 0.0
    # An attempt ran at a price nobody knew (no spot price, no max_price): cost_estimate then
    # covers only the priced attempts and is no total; `cost_usd` says unknown.
    cost_unknown: bool = False
    # Launches EC2 could not serve now (no spot capacity), in a row; reset by a launch.
    launch_failures: int = 0
    # When the current wait for capacity began, and when the next launch is due.
    launch_waiting_since: float | None = None
    launch_retry_at: float | None = None
    # Seconds spent waiting for capacity after the first launch; not counted as run time.
    launch_waited_s: float = 0.0
    outcome: str = ""
    version: str = ""
    log_tail: list[str] = field(default_factory=list)

    @classmethod
    def create(cls, spec: JobSpec, *, now: float | None = None) -> Job:
        now = time.time() if now is None else now
        return cls(**dataclasses.asdict(spec), id=new_job_id(), created_at=now, updated_at=now)

    @property
    def spec(self) -> JobSpec:
        names = [f.name for f in dataclasses.fields(JobSpec)]
        return JobSpec(**{name: getattr(self, name) for name in names})

    @property
    def cost_usd(self) -> float | None:
        """The estimated cost in USD, or None when part of it is unknown (not $0)."""
        return None if self.cost_unknown else self.cost_estimate

    @property
    def duration(self) -> float | None:
        """Seconds from the first launch to the outcome (or to now while it runs)."""
        if self.started_at is None:
            return None
        return (self.finished_at or time.time()) - self.started_at

    def to_fields(self, names: list[str] | None = None) -> dict[str, str]:
        """The hash fields for `names` (default: all), encoded for Redis.

        The trainer's words (its log tail, the failure text) are redacted on the way: a
        traceback or a library's debug line may carry a credential, and `status` shows them.
        """
        names = names or [f.name for f in dataclasses.fields(self)]
        return {name: _encode(_redacted(name, getattr(self, name))) for name in names}

    @classmethod
    def from_fields(cls, raw: dict[str, str]) -> Job:
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            if f.name not in raw:
                continue
            text = raw[f.name]
            values[f.name] = text if _is_text(f.type) else json.loads(text)
        values["state"] = JobState(values.get("state", JobState.QUEUED))
        return cls(**values)


def _redacted(name: str, value: Any) -> Any:
    if name == "log_tail":
        return redact_lines(value)
    if name == "outcome":
        return redact(value)
    return value


def _is_text(annotation: Any) -> bool:
    # Annotations are strings here (`from __future__ import annotations`).
    return annotation in ("str", "JobState")


def _encode(value: Any) -> str:
    if isinstance(value, Enum):
        return str(value.value)
    if isinstance(value, str):
        return value
    return json.dumps(value, sort_keys=True)
