"""Deciding when to train, and keeping track of the one training run in flight.

Two causes start a run: a fresh bot with data but no model (`first_start`), and the
operator bumping `training.retrain_request` (one run per bump; bumps made while a run is
in flight coalesce into one more run after it). The request already handled is kept in
Redis, so a restart does not train again for an old bump.
"""

from __future__ import annotations

import time
from pathlib import Path

import structlog

from bot.config import BotConfig
from bot.scrape import dataset_path
from bot.state import BotState
from infra.backends.local import LocalBackend, LocalRun
from infra.training_request import TrainingRequest

log = structlog.get_logger(__name__)


class RetrainController:
    def __init__(self, state: BotState, backend: LocalBackend) -> None:
        self.state = state
        self.backend = backend
        self._run: LocalRun | None = None
        self._first_start_tried = False

    @property
    def running(self) -> bool:
        return self._run is not None

    def tick(self, config: BotConfig, *, have_model: bool) -> None:
        """Called on every checkpoint poll: reap a finished run, start a wanted one."""
        if self._run is not None:
            if self._run.poll() is None:
                return
            self._finish(self._run)
            self._run = None
        trigger = self._wanted(config, have_model=have_model)
        if trigger is not None:
            self._start(config, trigger)

    def stop(self, timeout: float = 8.0) -> None:
        """Stop a run in flight (the trainer gets SIGTERM, then SIGKILL after `timeout`)."""
        if self._run is not None:
            code = self._run.stop(timeout)
            log.info("training.stopped", pid=self._run.pid, exit_code=code)
            self._record(state="stopped", exit_code=str(code))
            self._run = None

    def _wanted(self, config: BotConfig, *, have_model: bool) -> str | None:
        requested = config.training.retrain_request
        handled = int(self.state.redis.get(self.state.keys.retrain_request_handled) or 0)
        if requested > handled:
            return f"retrain_request:{requested}"
        if not have_model and not self._first_start_tried and self._datasets(config):
            return "first_start"
        return None

    def _start(self, config: BotConfig, trigger: str) -> None:
        datasets = self._datasets(config)
        if not datasets:
            log.warning("training.no_data", trigger=trigger, targets=_handles(config))
            return
        request = TrainingRequest(
            model_kind=config.model.kind,
            datasets=[str(path) for path in datasets],
            checkpoints_dir=str(config.data_dir / "checkpoints"),
            model_config=config.model.hyperparameters(),
            trigger=trigger,
            cleaning=config.cleaning.to_dict(),
        )
        log.info("training.triggered", trigger=trigger, datasets=len(datasets))
        self._run = self.backend.start(request)
        if trigger == "first_start":
            self._first_start_tried = True
        else:
            self.state.redis.set(
                self.state.keys.retrain_request_handled, config.training.retrain_request
            )
        self.state.redis.set(self.state.keys.new_tweets_since_training, 0)
        self._record(
            state="running",
            trigger=trigger,
            pid=str(self._run.pid),
            started_at=f"{time.time():.3f}",
            log=str(self._run.log_path),
            exit_code="",
        )

    def _finish(self, run: LocalRun) -> None:
        code = run.poll()
        tail = run.log_tail()
        if code == 0:
            log.info("training.finished", pid=run.pid, trigger=run.request.trigger)
        else:
            log.error(
                "training.failed", pid=run.pid, exit_code=code, log=str(run.log_path), tail=tail
            )
        self._record(
            state="done" if code == 0 else "failed",
            exit_code=str(code),
            finished_at=f"{time.time():.3f}",
        )

    def _record(self, **fields: str) -> None:
        self.state.redis.hset(self.state.keys.training, mapping=fields)

    @staticmethod
    def _datasets(config: BotConfig) -> list[Path]:
        paths = [dataset_path(config.data_dir, target.handle) for target in config.targets]
        return [path for path in paths if path.exists() and path.stat().st_size > 0]


def _handles(config: BotConfig) -> list[str]:
    return [target.handle for target in config.targets]
