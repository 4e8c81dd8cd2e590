"""The launcher: consumes the retrain queue and drives each job to an outcome on a backend.

One launcher drives one job at a time. It runs in its own process (`parrotbot launcher`, the
Procfile's second process) or, for the offline default, as a thread inside the daemon. Several
launchers may consume one account's queue; the queue keeps one job per model in flight and
hands a dead launcher's job to a live one, which adopts the attempt where it stood.

A job's life: queued → launching → running → done | failed; an interrupted attempt (a spot
reclaim, a launcher stopping a local trainer) goes back to queued and runs again, resuming
from its last checkpoint, until `max_attempts` is spent. A launch that cannot be served now
(no spot capacity) goes back to queued too, without spending an attempt: the launcher tries
again after a delay that doubles each time (the backend's `launch_retry`), and fails the job
only once it has waited `give_up_seconds`.

Meanwhile the waiting job is *parked*, not waited for: the launcher keeps its entry claimed (the
heartbeat touches it) and its model's slot taken, and goes on taking jobs of other models. Once
the next launch is due and the launcher is free it drives the job again. It is free only
between jobs: a launcher follows one run at a time (on aws every job needs the account's one
data volume), so a launch that falls due while another job runs is tried when that job ends.
A stopping launcher hands its parked jobs on; a dead one's are claimed by another launcher,
which parks them until the same `launch_retry_at`.
"""

from __future__ import annotations

import contextlib
import math
import os
import secrets
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import redis
import structlog

from infra.backend import (
    Backend,
    LaunchError,
    Outcome,
    OutcomeKind,
    Progress,
    Run,
    TransientLaunchError,
)
from infra.job import Job, JobState
from infra.keys import LAUNCHER_GROUP
from infra.retrain_queue import Delivery, RetrainQueue

log = structlog.get_logger(__name__)

# Consumers with nothing pending and silent this long are dropped from the group's listing.
STALE_CONSUMER_MS = 24 * 3600 * 1000


class Launcher:
    def __init__(
        self,
        queue: RetrainQueue,
        backend: Backend,
        *,
        claim_idle_seconds: float = 60.0,
        max_attempts: int = 3,
        block_ms: int = 1000,
        consumer: str | None = None,
    ) -> None:
        """No threads or connections here: `run()` (or `start()`) begins consuming."""
        self.queue = queue
        self.backend = backend
        self.claim_idle_ms = int(claim_idle_seconds * 1000)
        self.max_attempts = max_attempts
        self.block_ms = block_ms
        self.consumer = consumer or f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"
        self.stop_event = threading.Event()
        self.stop_timeout = 8.0
        self._thread: threading.Thread | None = None
        self._claim_lock = threading.Lock()  # a heartbeat's touch never lands after a release
        # Entries the heartbeat keeps claimed: the job being driven and the parked ones.
        self._held: set[str] = set()
        # Parked entries (jobs waiting to launch) and when each one's next launch is due.
        self._parked: dict[str, float] = {}

    # --- lifecycle -------------------------------------------------------------------
    def start(self) -> None:
        """Consume in a background thread (the daemon's in-process launcher)."""
        self._thread = threading.Thread(target=self.run, name="launcher", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 8.0) -> None:
        """Stop consuming; a job in flight is interrupted (local) or left to be adopted (aws)."""
        self.stop_timeout = timeout
        self.stop_event.set()
        if self._thread is not None:
            self._thread.join(timeout + 2.0)

    def run(self) -> None:
        log.info("launcher.started", consumer=self.consumer, backend=self.backend.name)
        with self._heartbeat():
            self._consume()
        self._hand_on_parked()
        log.info("launcher.stopped", consumer=self.consumer)

    def _consume(self) -> None:
        ready = False
        while not self.stop_event.is_set():
            try:
                if not ready:
                    self.queue.ensure_group()
                    self._forget_stale_consumers()
                    ready = True
                self.step()
            except redis.RedisError as exc:
                log.warning("redis.unavailable", error=str(exc), during="launcher")
                self.stop_event.wait(1.0)
            except Exception:
                log.exception("launcher.step_failed")
                self.stop_event.wait(1.0)

    def step(self) -> bool:
        """Take one job that can run now and drive it; False when there was none.

        `run()` keeps the entries of parked jobs claimed; a caller of `step()` alone must.
        """
        self.queue.reclaim(self.consumer, self.claim_idle_ms)
        for delivery in self.queue.pending(self.consumer):
            if self._process(delivery):
                return True
        if self.stop_event.is_set():
            return False
        for delivery in self.queue.read_new(self.consumer, self._block_ms()):
            if self._process(delivery):
                return True
        return False

    def _block_ms(self) -> int:
        """How long to wait for a new entry: no longer than until a parked launch is due."""
        with self._claim_lock:  # the heartbeat drops parked entries another launcher took
            soonest = min(self._parked.values(), default=None)
        if soonest is None:
            return self.block_ms
        due_in_ms = (soonest - time.time()) * 1000
        return max(1, min(self.block_ms, math.ceil(due_in_ms)))  # BLOCK 0 would wait forever

    # --- one job ---------------------------------------------------------------------
    def _process(self, delivery: Delivery) -> bool:
        due_at = self._parked.get(delivery.entry_id)
        if due_at is not None and due_at > time.time():
            return False  # parked: its next launch is not due yet
        job = self.queue.get(delivery.job_id) if delivery.job_id else None
        if job is None or job.state.terminal:
            # Trimmed, or its outcome is recorded already: nothing to run.
            self._let_go_of(delivery.entry_id)
            self.queue.ack(delivery.entry_id)
            return False
        if not self.queue.acquire(job):
            log.debug("launcher.job_waiting", job_id=job.id, model_kind=job.model_kind)
            return False
        with (
            structlog.contextvars.bound_contextvars(job_id=job.id),
            self._holding(delivery.entry_id),
        ):
            if due_at is None:
                log.info("launcher.job_taken", trigger=job.trigger, state=job.state.value)
            else:
                log.info("launcher.launch_due", failures=job.launch_failures)
            self._drive(job, delivery.entry_id)
        return True

    def _drive(self, job: Job, entry_id: str) -> None:
        while True:
            if self.stop_event.is_set():
                self._release(entry_id)
                return
            run = self._adopt(job)
            if run is None:
                if self._park(job, entry_id):
                    return  # back to it once its next launch is due
                if job.attempt >= self.max_attempts:
                    self._finish(job, entry_id, _failed(f"gave up after {job.attempt} attempts"))
                    return
                run = self._launch(job, entry_id)
                if run is None:
                    if job.state is JobState.QUEUED:
                        continue  # no capacity now: the next try is due at launch_retry_at
                    return
            outcome = self._follow(job, entry_id, run)
            if outcome is None:
                return  # left for another launcher, or requeued by a stop
            run.cleanup()
            if outcome.kind is OutcomeKind.INTERRUPTED:
                self.queue.set_state(
                    job, JobState.QUEUED, outcome=f"interrupted: {outcome.detail}",
                    log_tail=outcome.log_tail or run.log_tail(),
                )  # fmt: skip
                log.warning("launcher.job_requeued", reason=outcome.detail, attempt=job.attempt)
                continue
            self._finish(job, entry_id, outcome, run)
            return

    def _adopt(self, job: Job) -> Run | None:
        if job.state not in (JobState.LAUNCHING, JobState.RUNNING) or not job.instance_id:
            return None
        run = self.backend.adopt(job)
        if run is not None:
            self.queue.set_state(job, JobState.RUNNING, consumer=self.consumer)
            log.info("launcher.job_adopted", instance_id=run.instance_id, attempt=job.attempt)
        return run

    def _park(self, job: Job, entry_id: str) -> bool:
        """Set aside a job whose next launch is not due yet; False when it is due now.

        Sleeping here instead held the launcher for the whole wait (up to `give_up_seconds`)
        while jobs of other models that could run now waited behind it. Parked, the job keeps
        its entry (the heartbeat touches it) and its model's slot, so no other launcher takes
        it and no second job of its model starts; `step()` drives it again once it is due.
        """
        due_at = job.launch_retry_at or 0.0
        delay = due_at - time.time()
        if delay <= 0:
            return False
        with self._claim_lock:
            self._parked[entry_id] = due_at
        log.info(
            "launcher.launch_waiting", retry_in_s=round(delay, 1), failures=job.launch_failures
        )
        return True

    def _launch(self, job: Job, entry_id: str) -> Run | None:
        now = time.time()
        attempt_before = job.attempt
        self.queue.set_state(
            job,
            JobState.LAUNCHING,
            attempt=job.attempt + 1,
            consumer=self.consumer,
            backend=self.backend.name,
            started_at=job.started_at or now,
            cost_prior_attempts=job.cost_estimate,
            instance_id="",
            fleet_id="",
        )
        try:
            run = self.backend.start(job, self._progress(job))
        except TransientLaunchError as exc:
            self._launch_later(job, entry_id, exc, attempt_before)
            return None
        except LaunchError as exc:
            self._finish(job, entry_id, _failed(str(exc)))
            return None
        except redis.RedisError:
            raise  # our own state store blinked: the run loop waits and retries the job
        except Exception as exc:
            # Anything else (no AWS credentials, a missing bucket, a dataset gone) would fail
            # the same way on every attempt: record the cause instead of burning the attempts.
            log.exception("launcher.launch_failed")
            self._finish(job, entry_id, _failed(f"launch failed: {type(exc).__name__}: {exc}"))
            return None
        fields: dict[str, Any] = {"instance_id": run.instance_id}
        if job.launch_waiting_since is not None:  # the wait for capacity is over
            waited = time.time() - job.launch_waiting_since
            fields.update(
                launch_failures=0,
                launch_waiting_since=None,
                launch_retry_at=None,
                launch_waited_s=job.launch_waited_s + waited,
            )
        self.queue.set_state(job, JobState.RUNNING, **fields)
        return run

    def _progress(self, job: Job) -> Progress:
        """What a backend reports as the attempt gets going, written to the job's record."""

        def report(**fields: Any) -> None:
            new_hash = fields.get("dataset_hash")
            if new_hash == job.dataset_hash:
                del fields["dataset_hash"]
            elif new_hash is not None:
                # The scraper added data while the job waited: this attempt trains on more.
                log.info("launcher.dataset_changed", old_hash=job.dataset_hash, new_hash=new_hash)
            if fields:
                self.queue.update(job, **fields)

        return report

    def _launch_later(
        self, job: Job, entry_id: str, exc: TransientLaunchError, attempt_before: int
    ) -> None:
        """Back to queued to try again after a growing delay, or failed past the give-up window.

        The attempt is not counted (no machine ran), so a long wait does not use up
        `max_attempts`; the wait is recorded on the job for `parrotbot status`.
        """
        policy = self.backend.launch_retry
        now = time.time()
        since = job.launch_waiting_since or now
        failures = job.launch_failures + 1
        give_up_at = since + policy.give_up_seconds
        if now >= give_up_at:
            reason = (
                f"{exc}; gave up waiting to launch after {now - since:.0f} s "
                f"({failures} launch{'es' if failures != 1 else ''})"
            )
            self._finish(
                job, entry_id, _failed(reason), launch_failures=failures, launch_retry_at=None
            )
            return
        retry_at = min(now + policy.delay(failures), give_up_at)
        self.queue.set_state(
            job,
            JobState.QUEUED,
            attempt=attempt_before,
            outcome=f"waiting to launch: {exc}",
            launch_failures=failures,
            launch_waiting_since=since,
            launch_retry_at=retry_at,
        )
        log.warning(
            "launcher.launch_deferred",
            reason=str(exc),
            failures=failures,
            retry_in_s=round(retry_at - now, 2),
            gives_up_in_s=round(give_up_at - now, 1),
        )

    @contextlib.contextmanager
    def _heartbeat(self) -> Iterator[None]:
        """Touch the entries this launcher holds, so no other launcher takes them for dead.

        A spot launch or a cleanup can outlast `claim_idle_seconds` (uploads, the fleet,
        moving the volume, waiting for an instance to end), and a parked job waits far longer;
        an entry left idle that long is claimed by a live launcher, which would launch the job
        a second time. Only a dead launcher stops touching; a stopping one releases its
        entries and must not touch them again.
        """
        done = threading.Event()

        def beat() -> None:
            while not done.wait(self.claim_idle_ms / 3000):
                self._touch_held()

        thread = threading.Thread(target=beat, name="launch-heartbeat", daemon=True)
        thread.start()
        try:
            yield
        finally:
            done.set()
            thread.join()

    def _touch_held(self) -> None:
        with self._claim_lock:
            if self.stop_event.is_set():
                return
            for entry_id in sorted(self._held):
                try:
                    owned = self.queue.touch(entry_id, self.consumer)
                except redis.RedisError as exc:
                    log.warning("redis.unavailable", error=str(exc), during="launcher heartbeat")
                    return
                if not owned and self._parked.pop(entry_id, None) is not None:
                    # This launcher stalled past claim_idle and another one took the job over.
                    self._held.discard(entry_id)
                    log.warning("launcher.job_lost", entry=entry_id, reason="claimed while parked")

    @contextlib.contextmanager
    def _holding(self, entry_id: str) -> Iterator[None]:
        """Keep the entry claimed while its job is driven, and after that if it was parked."""
        with self._claim_lock:
            self._parked.pop(entry_id, None)
            self._held.add(entry_id)
            # At once: it may have waited for its model's slot, untouched, nearly claim_idle.
            self.queue.touch(entry_id, self.consumer)
        try:
            yield
        finally:
            with self._claim_lock:
                if entry_id not in self._parked:
                    self._held.discard(entry_id)

    def _let_go_of(self, entry_id: str) -> None:
        with self._claim_lock:
            self._parked.pop(entry_id, None)
            self._held.discard(entry_id)

    def _release(self, entry_id: str) -> None:
        """Hand the entry on at once (the launcher is stopping; the heartbeat has ended)."""
        with self._claim_lock:
            self._parked.pop(entry_id, None)
            self._held.discard(entry_id)
            self.queue.release(entry_id, self.consumer)

    def _hand_on_parked(self) -> None:
        """The launcher stops: its parked jobs go to the next launcher, waits and all."""
        for entry_id in sorted(self._parked):
            try:
                self._release(entry_id)
            except redis.RedisError as exc:
                # Left pending: another launcher claims it after claim_idle instead of at once.
                log.warning("redis.unavailable", error=str(exc), during="launcher stop")
                return
            log.info("launcher.wait_handed_on", entry=entry_id)

    def _follow(self, job: Job, entry_id: str, run: Run) -> Outcome | None:
        """Poll the run until it has an outcome; None when this launcher let go of the job."""
        limit = self.backend.max_run_seconds
        while True:
            outcome = run.poll()
            cost = run.cost()
            if cost is not None:
                self.queue.update(job, cost_estimate=job.cost_prior_attempts + cost)
            elif not job.cost_unknown:
                log.warning("launcher.cost_unknown", instance_id=run.instance_id)
                self.queue.update(job, cost_unknown=True)
            if outcome is not None:
                return outcome
            # Time spent waiting for capacity ran no machine: it is not run time.
            if limit is not None and job.started_at and _run_time(job) > limit:
                reason = f"max run time of {limit:.0f} s exceeded"
                log.error("launcher.job_timed_out", limit_seconds=limit)
                run.terminate(reason)
                return _failed(reason, run.log_tail())
            if not self.queue.touch(entry_id, self.consumer):
                log.warning("launcher.job_lost", reason="another launcher claimed the job")
                if not self.backend.survives_launcher:
                    run.interrupt(self.stop_timeout)
                return None
            if self.stop_event.wait(self.backend.poll_seconds):
                return self._let_go(job, entry_id, run)

    def _let_go(self, job: Job, entry_id: str, run: Run) -> Outcome | None:
        """The launcher is stopping: hand the job on rather than lose it."""
        if self.backend.survives_launcher:
            log.info("launcher.job_left", instance_id=run.instance_id)
        else:
            run.interrupt(self.stop_timeout)
            outcome = run.poll()
            run.cleanup()
            if outcome is not None and outcome.kind is OutcomeKind.DONE:
                return outcome  # it published just in time
            self.queue.set_state(
                job, JobState.QUEUED, outcome="interrupted: launcher stopped",
                log_tail=run.log_tail(),
            )  # fmt: skip
            log.info("launcher.job_requeued", reason="launcher stopped", attempt=job.attempt)
        self._release(entry_id)
        return None

    def _finish(
        self, job: Job, entry_id: str, outcome: Outcome, run: Run | None = None, **extra: Any
    ) -> None:
        state = JobState.DONE if outcome.kind is OutcomeKind.DONE else JobState.FAILED
        tail = outcome.log_tail or (run.log_tail() if run is not None else [])
        fields: dict[str, Any] = {"outcome": outcome.detail, "log_tail": tail, **extra}
        if outcome.version:
            fields["version"] = outcome.version
        self.queue.finish(job, entry_id, state, **fields)
        duration = job.duration
        if state is JobState.DONE:
            log.info(
                "launcher.job_done",
                version=outcome.version,
                attempts=job.attempt,
                duration_s=round(duration or 0, 1),
                cost_usd=None if job.cost_usd is None else round(job.cost_usd, 4),
            )
        else:
            log.error("launcher.job_failed", reason=outcome.detail, attempts=job.attempt, tail=tail)

    def _forget_stale_consumers(self) -> None:
        client = self.queue.redis
        stream = self.queue.keys.stream
        for consumer in client.xinfo_consumers(stream, LAUNCHER_GROUP):
            if consumer["pending"] == 0 and consumer["idle"] > STALE_CONSUMER_MS:
                client.xgroup_delconsumer(stream, LAUNCHER_GROUP, consumer["name"])


def _run_time(job: Job) -> float:
    """Seconds the job has run since its first launch, less its waits for capacity."""
    return time.time() - (job.started_at or time.time()) - job.launch_waited_s


def _failed(detail: str, tail: list[str] | None = None) -> Outcome:
    return Outcome(OutcomeKind.FAILED, detail, log_tail=tail or [])
