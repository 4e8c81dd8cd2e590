"""The retrain queue: a Redis stream read by a consumer group of launchers, plus job records.

Protocol (DESIGN.md):
- a trigger calls `request()`: a new job is recorded and its id `XADD`ed, unless a job for the
  same model is still waiting, in which case the request is merged into that one (coalesced);
- a launcher takes entries with `XREADGROUP` and calls `acquire()`: at most one job per model
  is in flight (a "running slot" per model), a second one stays pending until the slot frees;
- while a job runs its launcher `touch()`es the entry (resetting its idle time); a launcher that
  died stops touching, and after `claim_idle` another launcher takes the entry over with
  `XAUTOCLAIM` and adopts the job where it stood;
- `XACK` happens only in `finish()`, in the same transaction that records the outcome.

Every state change writes the record, moves the job between state indexes and appends to its
history in one MULTI (`set_state(..., pipeline=...)`), so the indexes never disagree with the
records.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import redis
import structlog

from infra.job import Job, JobSpec, JobState
from infra.keys import LAUNCHER_GROUP, InfraKeys

log = structlog.get_logger(__name__)

# Approximate stream length kept (acked entries are history; the job records hold the rest).
STREAM_MAXLEN = 1000
# How long a stopping launcher's entry looks idle, so the next launcher may claim it at once.
RELEASED_IDLE_MS = 10 * 365 * 24 * 3600 * 1000

# Reset the idle time of an entry, but only while this consumer still owns it: a launcher that
# was paused past claim_idle must not steal back a job another launcher has adopted.
_TOUCH = """
local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[2], ARGV[2], 1)
if p[1] == nil or p[1][2] ~= ARGV[3] then return 0 end
redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[3], 0, ARGV[2], 'IDLE', ARGV[4], 'JUSTID')
return 1
"""

# Take the model's running slot if it is free or already ours; leaving the queued slot frees
# it for the next request, which then queues a new job instead of merging into this one.
_ACQUIRE = """
local holder = redis.call('GET', KEYS[1])
if holder and holder ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[1])
if redis.call('GET', KEYS[2]) == ARGV[1] then redis.call('DEL', KEYS[2]) end
return 1
"""


@dataclass(frozen=True)
class Requested:
    """What `request()` did: queued `job`, or merged the request into it (`coalesced`)."""

    job: Job
    coalesced: bool


@dataclass(frozen=True)
class Delivery:
    """A stream entry handed to a consumer; `job_id` is None when the entry was trimmed."""

    entry_id: str
    job_id: str | None


class RetrainQueue:
    def __init__(self, client: redis.Redis, account: str) -> None:
        """`client` must decode responses (the bot's and the launcher's clients do)."""
        self.redis = client
        self.account = account
        self.keys = InfraKeys(account)

    # --- producer side ---------------------------------------------------------------
    def request(self, spec: JobSpec) -> Requested:
        """Queue a job for `spec`, or merge into the one already waiting for its model."""
        slot = self.keys.queued_slot(spec.model_kind)
        outcome: dict[str, Any] = {}

        def transaction(pipe: Any) -> None:
            waiting = self._waiting_job(pipe, slot)
            pipe.multi()
            if waiting is not None:
                waiting.coalesced.append(spec.trigger)
                waiting.updated_at = time.time()
                pipe.hset(self.keys.job(waiting.id), mapping=waiting.to_fields(["coalesced"]))
                outcome.update(job=waiting, coalesced=True)
                return
            job = Job.create(spec)
            pipe.hset(self.keys.job(job.id), mapping=job.to_fields())
            pipe.zadd(self.keys.jobs, {job.id: job.created_at})
            self._index(pipe, job.id, JobState.QUEUED, job.created_at)
            pipe.set(slot, job.id)
            pipe.xadd(self.keys.stream, {"job": job.id}, maxlen=STREAM_MAXLEN, approximate=True)
            outcome.update(job=job, coalesced=False)

        self.redis.transaction(transaction, slot)
        return Requested(job=outcome["job"], coalesced=outcome["coalesced"])

    def _waiting_job(self, pipe: Any, slot: str) -> Job | None:
        """The job in the queued slot if it is really still waiting (else the slot is stale)."""
        job_id = pipe.get(slot)
        if not job_id:
            return None
        pipe.watch(self.keys.job(job_id))
        raw = pipe.hgetall(self.keys.job(job_id))
        if not raw:
            return None
        job = Job.from_fields(raw)
        return job if job.state is JobState.QUEUED and job.attempt == 0 else None

    # --- records ----------------------------------------------------------------------
    def get(self, job_id: str) -> Job | None:
        raw = self.redis.hgetall(self.keys.job(job_id))
        return Job.from_fields(raw) if raw else None

    def list_jobs(self, limit: int = 20) -> list[Job]:
        """The newest `limit` jobs, newest first."""
        ids = self.redis.zrevrange(self.keys.jobs, 0, limit - 1)
        pipe = self.redis.pipeline(transaction=False)
        for job_id in ids:
            pipe.hgetall(self.keys.job(job_id))
        return [Job.from_fields(raw) for raw in pipe.execute() if raw]

    def history(self, job_id: str) -> list[str]:
        """The states the job went through, oldest first ("running", "done", …)."""
        return [
            entry.split(" ")[0] for entry in self.redis.lrange(self.keys.job_history(job_id), 0, -1)
        ]

    def in_flight(self, model_kind: str) -> tuple[str | None, str | None]:
        """(the waiting job's id, the running job's id) for a model."""
        queued, running = self.redis.mget(
            self.keys.queued_slot(model_kind), self.keys.running_slot(model_kind)
        )
        return queued, running

    def set_state(self, job: Job, state: JobState, *, pipeline: Any = None, **fields: Any) -> None:
        """Change `job`'s state (and any other fields) in its record and the state indexes."""
        now = time.time()
        job.state = state
        job.updated_at = now
        for name, value in fields.items():
            setattr(job, name, value)
        pipe = pipeline if pipeline is not None else self.redis.pipeline(transaction=True)
        pipe.hset(self.keys.job(job.id), mapping=job.to_fields(["state", "updated_at", *fields]))
        self._index(pipe, job.id, state, now)
        if pipeline is None:
            pipe.execute()
        log.info("job.state_changed", job_id=job.id, state=state.value, attempt=job.attempt)

    def update(self, job: Job, **fields: Any) -> None:
        """Record progress that is not a state change (cost so far, log tail)."""
        for name, value in fields.items():
            setattr(job, name, value)
        self.redis.hset(self.keys.job(job.id), mapping=job.to_fields(list(fields)))

    def _index(self, pipe: Any, job_id: str, state: JobState, now: float) -> None:
        for other in JobState:
            if other is not state:
                pipe.zrem(self.keys.state_index(other.value), job_id)
        pipe.zadd(self.keys.state_index(state.value), {job_id: now})
        pipe.rpush(self.keys.job_history(job_id), f"{state.value} {now:.3f}")

    def ids_in_state(self, state: JobState) -> list[str]:
        return self.redis.zrange(self.keys.state_index(state.value), 0, -1)

    def count_in_state(self, state: JobState) -> int:
        return int(self.redis.zcard(self.keys.state_index(state.value)))

    # --- consumer side ----------------------------------------------------------------
    def ensure_group(self) -> None:
        try:
            self.redis.xgroup_create(self.keys.stream, LAUNCHER_GROUP, id="0", mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    def reclaim(self, consumer: str, min_idle_ms: int) -> list[Delivery]:
        """Take over entries another launcher left pending for longer than `min_idle_ms`."""
        found: list[Delivery] = []
        start = "0-0"
        while True:
            reply = self.redis.xautoclaim(
                self.keys.stream, LAUNCHER_GROUP, consumer, min_idle_ms, start_id=start, count=10
            )
            start, entries = reply[0], reply[1]
            deleted = reply[2] if len(reply) > 2 else []
            found += [_delivery(entry_id, fields) for entry_id, fields in entries]
            found += [Delivery(entry_id, None) for entry_id in deleted]
            if start in ("0-0", b"0-0"):
                break
        for delivery in found:
            log.warning("queue.entry_reclaimed", entry=delivery.entry_id, job_id=delivery.job_id)
        return found

    def pending(self, consumer: str) -> list[Delivery]:
        """Entries this consumer holds and has not acked yet (reclaimed ones included)."""
        return self._read(consumer, "0", block_ms=None, count=100)

    def read_new(self, consumer: str, block_ms: int) -> list[Delivery]:
        return self._read(consumer, ">", block_ms=block_ms, count=1)

    def _read(
        self, consumer: str, start: str, *, block_ms: int | None, count: int
    ) -> list[Delivery]:
        reply = self.redis.xreadgroup(
            LAUNCHER_GROUP, consumer, {self.keys.stream: start}, count=count, block=block_ms
        )
        if not reply:
            return []
        _stream, entries = reply[0]
        return [_delivery(entry_id, fields) for entry_id, fields in entries]

    def acquire(self, job: Job) -> bool:
        """Take the model's running slot for `job`; False while another job of it is in flight."""
        running = self.keys.running_slot(job.model_kind)
        args = (running, self.keys.queued_slot(job.model_kind), job.id)
        if self.redis.eval(_ACQUIRE, 2, *args):
            return True
        holder_id = self.redis.get(running)
        holder = self.get(holder_id) if holder_id else None
        if holder_id and (holder is None or holder.state.terminal):
            # A slot left behind by a job that has an outcome (or no record): free it.
            self.redis.eval(_RELEASE_SLOT, 1, running, holder_id)
            return bool(self.redis.eval(_ACQUIRE, 2, *args))
        return False

    def touch(self, entry_id: str, consumer: str) -> bool:
        """Reset the entry's idle time; False when this consumer no longer owns it."""
        args = (LAUNCHER_GROUP, entry_id, consumer, 0)
        return bool(self.redis.eval(_TOUCH, 1, self.keys.stream, *args))

    def release(self, entry_id: str, consumer: str) -> None:
        """Leave the entry pending but make it look long idle: the next launcher claims it."""
        args = (LAUNCHER_GROUP, entry_id, consumer, RELEASED_IDLE_MS)
        self.redis.eval(_TOUCH, 1, self.keys.stream, *args)

    def ack(self, entry_id: str) -> None:
        """Drop an entry that carries no job to run (trimmed, or its job already ended)."""
        self.redis.xack(self.keys.stream, LAUNCHER_GROUP, entry_id)

    def finish(self, job: Job, entry_id: str, state: JobState, **fields: Any) -> None:
        """Record the outcome, ack the entry and free the model's slot, all in one MULTI."""
        if not state.terminal:
            raise ValueError(f"{state.value} is not an outcome")
        running = self.keys.running_slot(job.model_kind)

        def transaction(pipe: Any) -> None:
            holder = pipe.get(running)
            pipe.multi()
            self.set_state(job, state, pipeline=pipe, finished_at=time.time(), **fields)
            pipe.xack(self.keys.stream, LAUNCHER_GROUP, entry_id)
            if holder == job.id:
                pipe.delete(running)

        self.redis.transaction(transaction, running)


_RELEASE_SLOT = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


def _delivery(entry_id: str, fields: dict[str, str] | None) -> Delivery:
    return Delivery(entry_id=entry_id, job_id=(fields or {}).get("job"))
