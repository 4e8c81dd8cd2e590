"""The long-running daemon: lease, scheduler, config watch, signals.

The main thread only keeps the lease and waits on the stop event; the scheduler's
threads do the work. Only the lease holder runs a scheduler, because APScheduler forbids
two schedulers on one job store; a standby daemon keeps trying and takes over when the
holder's lease lapses.
"""

from __future__ import annotations

import os
import secrets
import signal
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import redis
import structlog
from prometheus_client import REGISTRY
from prometheus_client.registry import Collector

from bot import jobs, metrics
from bot.config import BotConfig, ConfigError, load_config
from bot.filters import novelty_corpus
from bot.generation import GenerationService
from bot.health import Health, HealthServer
from bot.hotload import CheckpointWatcher
from bot.instance_lock import LOCK_FILE_NAME, InstanceLock
from bot.lease import Lease
from bot.ledger.held import HeldLedger
from bot.platform.base import Platform, PlatformError
from bot.platform.budgets import Budgets
from bot.platform.local import LocalPlatform
from bot.posting import post_cadence_start
from bot.redis_checks import check_redis_durability
from bot.redis_metrics import RedisStateCollector
from bot.retrain import RetrainTriggers, build_launcher
from bot.scheduling import build_scheduler, prune_unknown_jobs, schedule_jobs
from bot.state import BotState, connect
from infra.launcher import Launcher
from infra.retrain_queue import RetrainQueue

log = structlog.get_logger(__name__)

# Settings the daemon reads once at start; changing them needs a restart.
RESTART_FIELDS = (
    "account",
    "redis_url",
    "data_dir",
    "platform",
    "model",
    "logging",
    "health",
    "console",
)
# How long running jobs get to finish after a stop signal, and the trainer after them.
JOB_DRAIN_SECONDS = 5.0
# How soon the main thread sees a stop signal that another thread received.
STOP_POLL_SECONDS = 0.25
TRAINER_STOP_SECONDS = 3.0


class Daemon:
    def __init__(
        self,
        config: BotConfig,
        config_path: Path,
        *,
        show_login: Callable[[str], None] | None = None,
    ) -> None:
        """No threads, handlers or connections here: `run()` starts everything.

        `show_login` gets the console's login link (it holds the token, so it is never
        logged): the CLI passes a function that shows it on the operator's terminal.
        """
        self.config = config
        self._show_login = show_login
        self.console: Any = None  # a bot.console.server.ConsoleServer once serving
        self.config_path = config_path
        self.instance_id = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"
        self.stop_event = threading.Event()
        self._scheduler: Any = None
        self._in_flight = 0
        self._in_flight_changed = threading.Condition()
        self._config_stamp = _file_stamp(config_path)
        self.abandoned_jobs = False
        self.health: HealthServer | None = None
        self.collectors: list[Collector] = []
        self.launcher: Launcher | None = None

    # --- lifecycle -----------------------------------------------------------------
    def run(self) -> int:
        self._install_signal_handlers()
        structlog.contextvars.bind_contextvars(account=self.config.account)
        log.info("daemon.starting", instance=self.instance_id, config=str(self.config_path))
        client = connect(self.config)
        if not check_redis_durability(client, require_durable=self.config.redis.require_durable):
            return 2  # the reason is logged
        self.state = BotState(client, self.config.account)
        try:
            self.platform = self._build_platform()
        except PlatformError as exc:  # missing X credentials: nothing to run with
            log.error("daemon.platform_unavailable", error=str(exc))
            return 2
        self.service = GenerationService(self.config.generation, self.config.filters)
        self.watcher = CheckpointWatcher(
            self.config.model_dir,
            self.config.model.kind,
            self.service,
            self.state,
            corpus=self._training_texts,
        )
        queue = RetrainQueue(client, self.config.account)
        self.triggers = RetrainTriggers(self.state, queue)
        self.exchange = self._build_exchange()
        if self.config.training.inline_launcher:
            self.launcher = build_launcher(self.config)
            self.launcher.start()
        self.health = self._start_health_server()
        if self.health is not None:
            self.collectors = self._register_collectors(client, queue)
        self.console = self._start_console()
        ttl = self.config.schedule.lease_ttl_seconds
        self.lease = Lease(client, self.state.keys.lease, self.instance_id, ttl_ms=ttl * 1000)
        self.instance_lock: InstanceLock | None = InstanceLock(
            self.config.data_dir / LOCK_FILE_NAME, self.instance_id
        )
        self._dead_holder: str | None = None
        self._preload_model()
        try:
            self._keep_lease(ttl)
        finally:
            self._shutdown()
            if self.instance_lock is not None:
                self.instance_lock.release()
        log.info("daemon.stopped", instance=self.instance_id)
        return 0

    def _preload_model(self) -> None:
        """Load the published model while competing for the lease: a warm standby.

        A standby that takes over from a dead daemon then answers at once instead of first
        spending seconds importing a framework and loading weights. In the background, so a
        daemon restarted after a crash takes its dead predecessor's lease (and scrapes,
        polls, reconciles) within a second rather than after the load; it answers mentions
        once the model serves (the mentions job skips until then).
        """
        self.watcher.check_in_background()

    def _claim_volume(self) -> None:
        """Try for this volume's instance lock; getting it means its last holder is dead.

        Tried on every lease round until held, so a standby on the same volume also learns
        at its next round that the daemon beside it died. A volume that cannot hold the lock
        (read-only, no locking) costs only the fast takeover: the daemon then waits out the
        TTL as before.
        """
        lock = self.instance_lock
        if lock is None or lock.held:
            return
        try:
            if not lock.try_acquire():
                return
        except OSError as exc:
            log.warning("instance_lock.unavailable", path=str(lock.path), error=str(exc))
            self.instance_lock = None
            return
        log.info("instance_lock.acquired", path=str(lock.path), previous=lock.previous)
        self._dead_holder = lock.previous

    def _take_over_dead_lease(self) -> None:
        """If the lease still names the dead holder, take it now instead of waiting it out."""
        dead = self._dead_holder
        if dead is None:
            return
        remaining_ms = self.lease.take_over_from(dead)  # a Redis error: tried again next round
        self._dead_holder = None
        if remaining_ms is not None:
            log.info("lease.taken_over", dead_instance=dead, remaining_ms=remaining_ms)

    def _wait_for_stop(self, seconds: float) -> None:
        """Sleep until the next lease round, waking within STOP_POLL_SECONDS of a stop.

        In short waits, not one `Event.wait(seconds)`: the kernel may hand SIGTERM to any
        thread (a scheduler worker, the health server), and Python runs the handler, which
        sets the event, only when the main thread next wakes. One long wait then held a stop
        back for up to a third of the lease TTL (20 s with a 60 s TTL).
        """
        deadline = time.monotonic() + seconds
        while not self.stop_event.is_set() and (left := deadline - time.monotonic()) > 0:
            self.stop_event.wait(min(left, STOP_POLL_SECONDS))

    def _keep_lease(self, ttl: int) -> None:
        last_renewed = 0.0
        waiting_logged = False
        while not self.stop_event.is_set():
            self._claim_volume()
            try:
                self._report_worker()
                if self._scheduler is None:
                    self._take_over_dead_lease()
                    if self.lease.acquire():
                        last_renewed = time.monotonic()
                        self._become_leader()
                    elif not waiting_logged:
                        log.info("lease.waiting", holder=self.lease.holder())
                        waiting_logged = True
                elif self.lease.renew():
                    last_renewed = time.monotonic()
                    self.state.redis.hset(self.state.keys.daemon, "heartbeat_at", time.time())
                else:
                    log.warning("lease.lost", holder=self.lease.holder())
                    self._step_down()
            except redis.RedisError as exc:
                log.warning("redis.unavailable", error=str(exc), during="lease")
                if self._scheduler is not None and time.monotonic() - last_renewed > ttl:
                    log.warning("lease.expired", reason="redis unreachable for longer than ttl")
                    self._step_down()
            self._wait_for_stop(ttl / 3)

    def _report_worker(self) -> None:
        """Record this daemon's model worker in Redis, for `status` on any host."""
        stats = self.service.worker_stats()
        record = None if stats is None else {**asdict(stats), "host": socket.gethostname()}
        self.state.record_worker(self.instance_id, record)

    def _become_leader(self) -> None:
        log.info("lease.acquired", instance=self.instance_id)
        now = time.time()
        self.state.redis.hset(
            self.state.keys.daemon,
            mapping={"instance": self.instance_id, "started_at": now, "heartbeat_at": now},
        )
        self.platform.prepare()
        self.jobs = jobs.BotJobs(
            config=self.config,
            state=self.state,
            platform=self.platform,
            service=self.service,
            watcher=self.watcher,
            triggers=self.triggers,
            exchange=self.exchange,
            fence=self.lease.fence,
        )
        jobs.set_dispatcher(self.run_job)
        self._scheduler = self._start_scheduler()
        metrics.LEADER.set(1)

    def _start_scheduler(self) -> Any:
        """All or nothing: a scheduler that runs, or none (nothing left running).

        It starts paused, so no job runs while the Redis steps that follow may still fail
        (pruning reads the job store, which a scheduler reads only once started). Were a
        half-started scheduler dropped, the next lease round would start another beside it,
        and every job would then run twice.
        """
        raw = connect(self.config, decode_responses=False)
        scheduler = build_scheduler(self.config, raw)
        try:
            schedule_jobs(scheduler, self.config, cadence_from=post_cadence_start(self.state))
            scheduler.start(paused=True)
            if stale := prune_unknown_jobs(scheduler, self.config):
                log.info("scheduler.pruned_stale_jobs", jobs=stale)
            scheduler.resume()
        except BaseException:
            if scheduler.running:
                scheduler.shutdown(wait=False)
            jobs.set_dispatcher(None)
            raw.close()
            raise
        return scheduler

    def _step_down(self) -> None:
        if self._scheduler is not None:
            self._scheduler.shutdown(wait=False)
            self._scheduler = None
        metrics.LEADER.set(0)
        jobs.set_dispatcher(None)

    def _shutdown(self) -> None:
        log.info("daemon.stopping", instance=self.instance_id)
        self._step_down()
        if self.health is not None:
            self.health.stop()
        if self.console is not None:
            self.console.stop()
        for collector in self.collectors:
            REGISTRY.unregister(collector)
        with self._in_flight_changed:
            drained = self._in_flight_changed.wait_for(
                lambda: self._in_flight == 0, timeout=JOB_DRAIN_SECONDS
            )
        if not drained:
            log.warning("daemon.jobs_abandoned", running=self._in_flight)
        self.abandoned_jobs = not drained
        if drained:  # an abandoned job may still be asking the worker; it dies with us anyway
            self.watcher.close()
        if self.launcher is not None:
            self.launcher.stop(TRAINER_STOP_SECONDS)
        try:
            self.lease.release()
        except redis.RedisError as exc:
            log.warning("lease.release_failed", error=str(exc))

    def _install_signal_handlers(self) -> None:
        install_stop_signals(self.stop_event)

    # --- jobs ----------------------------------------------------------------------
    def run_job(self, name: str) -> None:
        if self.stop_event.is_set():
            return
        if name not in jobs.JOB_NAMES:
            log.warning("job.unknown", job=name)
            return
        body = self._check_config if name == jobs.CONFIG else getattr(self.jobs, name)
        with self._in_flight_changed:
            self._in_flight += 1
        try:
            with structlog.contextvars.bound_contextvars(job=name):
                body()
        except redis.RedisError as exc:
            log.warning("redis.unavailable", error=str(exc), during=name)
        except Exception:
            metrics.JOB_FAILURES.labels(job=name).inc()
            log.exception("job.failed", job=name)
        finally:
            with self._in_flight_changed:
                self._in_flight -= 1
                self._in_flight_changed.notify_all()

    def _check_config(self) -> None:
        stamp = _file_stamp(self.config_path)
        if stamp == self._config_stamp:
            return
        try:
            new = load_config(self.config_path)
        except ConfigError as exc:
            self._config_stamp = stamp  # one error per bad edit, not one per poll
            log.error("config.invalid", problems=exc.problems, keeping="previous config")
            return
        self._apply_config(new)
        # Only once applied: an edit that a Redis error interrupted is applied at the next poll.
        self._config_stamp = stamp

    def _apply_config(self, new: BotConfig) -> None:
        """Apply a valid edit; the Redis steps come first, so a Redis error changes nothing.

        Both Redis steps are idempotent (the schedule is rewritten whole, a retrain bump is
        answered once), so applying the same edit again after an error is safe.
        """
        old = self.config
        frozen = [name for name in RESTART_FIELDS if getattr(new, name) != getattr(old, name)]
        if frozen:
            log.warning("config.restart_required", fields=frozen)
            new = new.model_copy(update={name: getattr(old, name) for name in frozen})
        if new.schedule != old.schedule:
            schedule_jobs(self._scheduler, new, cadence_from=post_cadence_start(self.state))
        self.triggers.on_config(new)
        self.config = new
        self.jobs.config = new
        self.service.settings = new.generation
        self.service.filters = new.filters
        log.info("config.applied", retrain_request=new.training.retrain_request)

    def _build_exchange(self) -> Any:
        """With spot training, finished versions reach this host through S3 (None locally)."""
        from infra.backends import build_exchange

        training = self.config.training
        return build_exchange(training.backend, account=self.config.account, aws=training.aws)

    def _start_health_server(self) -> HealthServer | None:
        settings = self.config.health
        if not settings.enabled:
            return None
        server = HealthServer(settings.host, settings.port, self._health)
        try:
            server.start()
        except OSError as exc:
            # A clash on the port must not keep the bot from posting; say so loudly instead.
            log.error("health.unavailable", port=settings.port, error=str(exc))
            return None
        return server

    def _start_console(self) -> Any:
        """The operator's console, served by every daemon of the account (all its state is
        in Redis, so a standby's console shows what the leader's does)."""
        if not self.config.console.enabled:
            return None
        from bot.console.server import ConsoleServer

        server = ConsoleServer(lambda: self.config, lambda: self.state)
        try:
            server.start()
        except OSError as exc:
            # As with the health port: a clash must not keep the bot from posting.
            log.error("console.unavailable", port=self.config.console.port, error=str(exc))
            return None
        if self._show_login is not None and server.login_url is not None:
            self._show_login(server.login_url)
        return server

    def _register_collectors(self, client: redis.Redis, queue: RetrainQueue) -> list[Collector]:
        """The /metrics read at scrape time: Redis's numbers and the model worker's."""
        budgets = None
        if self.config.platform.kind == "x":
            x = self.config.platform.x
            budgets = Budgets(client, self.state.keys, x.budgets, x.prices)
        collectors = [
            RedisStateCollector(client, queue, budgets, review=self._held_ledger()),
            metrics.WorkerCollector(self.service.worker_stats),
        ]
        for collector in collectors:
            REGISTRY.register(collector)
        return collectors

    def _held_ledger(self) -> HeldLedger:
        review = self.config.review
        return HeldLedger(
            self.state, keep_days=review.keep_days, reply_keep_days=self.config.replies.keep_days
        )

    def _health(self) -> Health:
        current = self.service.current
        scheduler = self._scheduler
        return Health(
            redis=self.state.ping(),
            model_version=current.version if current else None,
            scheduler_running=bool(scheduler is not None and scheduler.running),
        )

    def _training_texts(self) -> list[str]:
        return novelty_corpus(self.config)  # the config as it is now, edits applied

    def _build_platform(self) -> Platform:
        platform = self.config.platform
        if platform.kind == "x":
            from bot.platform.x import XPlatform

            return XPlatform(self.config, self.state)
        return LocalPlatform(
            self.config.data_dir / "local",
            handle=platform.handle,
            seed_timelines_dir=platform.local.seed_timelines_dir,
        )


def install_stop_signals(stop: threading.Event) -> None:
    """SIGTERM/SIGINT: the first sets `stop` (drain and stop); a second one stops at once."""

    def handle(signum: int, _frame: object) -> None:
        if stop.is_set():
            os._exit(128 + signum)
        stop.set()

    signal.signal(signal.SIGTERM, handle)
    signal.signal(signal.SIGINT, handle)


def _file_stamp(path: Path) -> tuple[int, int] | None:
    try:
        info = path.stat()
    except OSError:
        return None
    return (info.st_mtime_ns, info.st_size)
