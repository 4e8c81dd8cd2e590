"""Deciding when to train, and asking the retrain queue for it.

Four causes queue a job, each logged as `training.triggered` with its cause:
- `first_start`: data and no model yet (once per daemon start);
- `retrain_request:<n>`: the operator bumped `training.retrain_request` (one job per bump; the
  bump already handled is kept in Redis, so a restart does not queue an old bump again);
- `auto:new_tweets`: `training.auto_after_new_tweets` tweets scraped since the last request;
- `cli`: `parrotbot retrain`.
The queue coalesces: a request while a job of the model waits merges into it, so bumps made
while one job runs end up as one more job after it. Running the job is the launcher's part.
"""

from __future__ import annotations

import threading
from pathlib import Path

import structlog

from bot.config import BotConfig
from bot.state import BotState, connect
from infra.backends import build_backend
from infra.job import JobSpec
from infra.launcher import Launcher
from infra.retrain_queue import Requested, RetrainQueue
from training.dataset import dataset_path

log = structlog.get_logger(__name__)

# How long the launcher's XREADGROUP waits for a new entry before it looks at its parked ones.
LAUNCHER_BLOCK_SECONDS = 1.0


def build_launcher(config: BotConfig) -> Launcher:
    """The retrain queue's consumer for `config`: the one place a launcher is wired.

    Both the daemon's inline launcher and `parrotbot launcher` come from here. The launcher
    gets its own Redis client, because its blocking reads need a socket timeout longer than
    the daemon's lease-bound one (`bot.state.connect`).
    """
    training = config.training
    client = connect(config, blocking_seconds=LAUNCHER_BLOCK_SECONDS)
    backend = build_backend(
        training.backend, account=config.account, data_dir=config.data_dir, aws=training.aws
    )
    return Launcher(
        RetrainQueue(client, config.account),
        backend,
        claim_idle_seconds=training.claim_idle_seconds,
        max_attempts=training.max_attempts,
        block_ms=int(LAUNCHER_BLOCK_SECONDS * 1000),
    )


class RetrainTriggers:
    def __init__(self, state: BotState, queue: RetrainQueue) -> None:
        self.state = state
        self.queue = queue
        self._first_start_tried = False
        # The config watch and the checkpoint poll run on different scheduler threads; one
        # bump must become one request, not one per thread.
        self._lock = threading.Lock()

    def tick(self, config: BotConfig, *, have_model: bool) -> None:
        """Called on every checkpoint poll: queue whatever is wanted now."""
        with self._lock:
            self._bumped(config)
            if not have_model and not self._first_start_tried:
                self._first_start(config)
            threshold = config.training.auto_after_new_tweets
            if have_model and threshold is not None:
                new = int(self.state.redis.get(self.state.keys.new_tweets_since_training) or 0)
                if new >= threshold:
                    cause = f"{new} new tweets since the last training (threshold {threshold})"
                    request_training(config, self.state, self.queue, "auto:new_tweets", cause)

    def on_config(self, config: BotConfig) -> None:
        """Called by the config watch once a changed config is applied."""
        with self._lock:
            self._bumped(config)

    def _bumped(self, config: BotConfig) -> None:
        requested = config.training.retrain_request
        handled = int(self.state.redis.get(self.state.keys.retrain_request_handled) or 0)
        if requested <= handled:
            return
        cause = f"training.retrain_request bumped from {handled} to {requested}"
        request_training(config, self.state, self.queue, f"retrain_request:{requested}", cause)
        # Recorded even when there was no data to train on: the bump was seen and answered.
        self.state.redis.set(self.state.keys.retrain_request_handled, requested)

    def _first_start(self, config: BotConfig) -> None:
        if not datasets(config):
            return  # nothing scraped yet; try again on the next poll
        self._first_start_tried = True
        queued, running = self.queue.in_flight(config.model.kind)
        if queued or running:
            log.info("training.already_queued", queued=queued, running=running)
            return
        cause = "data and no model yet"
        request_training(config, self.state, self.queue, "first_start", cause)


def request_training(
    config: BotConfig, state: BotState, queue: RetrainQueue, trigger: str, cause: str
) -> Requested | None:
    """Queue a job for the config's model and targets (or merge into the waiting one)."""
    from training.dataset import DatasetError, dataset_hash, load_tweets

    paths = datasets(config)
    if not paths:
        log.warning("training.no_data", trigger=trigger, cause=cause, targets=_handles(config))
        return None
    try:
        data_hash = dataset_hash(load_tweets(paths))
    except DatasetError as exc:
        log.error("training.bad_dataset", trigger=trigger, error=str(exc))
        return None
    seen = int(state.redis.get(state.keys.new_tweets_since_training) or 0)
    spec = JobSpec(
        account=config.account,
        model_kind=config.model.kind,
        targets=_handles(config),
        datasets=[str(path) for path in paths],
        dataset_hash=data_hash,
        model_config=config.model.hyperparameters(),
        trigger=trigger,
        weights=[
            target.weight
            for target in config.targets
            if dataset_path(config.data_dir, target.handle) in paths
        ],
        cleaning=config.cleaning.to_dict(),
    )
    requested = queue.request(spec)
    # The tweets counted so far are in this job's data; ones scraped meanwhile stay counted.
    state.redis.decrby(state.keys.new_tweets_since_training, seen)
    log.info(
        "training.triggered",
        trigger=trigger,
        cause=cause,
        job_id=requested.job.id,
        coalesced=requested.coalesced,
        datasets=len(paths),
        dataset_hash=data_hash,
    )
    return requested


def datasets(config: BotConfig) -> list[Path]:
    paths = [dataset_path(config.data_dir, target.handle) for target in config.targets]
    return [path for path in paths if path.exists() and path.stat().st_size > 0]


def _handles(config: BotConfig) -> list[str]:
    return [target.handle for target in config.targets]
