"""What the scheduler runs: scrape targets, post, answer mentions, follow checkpoints.

APScheduler's Redis job store pickles each job as a textual reference plus arguments, so
every job is `bot.jobs:run_job` with the job's name; `run_job` hands it to the daemon
that currently holds this process's scheduler.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import structlog

from bot.config import BotConfig
from bot.generation import GenerationService
from bot.hotload import CheckpointWatcher
from bot.lease import Fence
from bot.ledger.held import HeldLedger
from bot.platform.base import Platform, PlatformError, User, platform_failed
from bot.pool import TweetPool
from bot.posting import post_scheduled, refill_pool
from bot.replies import poll_mentions, send_approved
from bot.retrain import RetrainTriggers
from bot.scrape import scrape_target
from bot.state import BotState

log = structlog.get_logger(__name__)

SCRAPE, POST, MENTIONS, CHECKPOINTS, CONFIG, POOL = (
    "scrape",
    "post",
    "mentions",
    "checkpoints",
    "config",
    "pool_refill",
)

JOB_NAMES = (SCRAPE, POST, MENTIONS, CHECKPOINTS, CONFIG, POOL)

_dispatch_lock = threading.Lock()
_dispatcher: Callable[[str], None] | None = None


def set_dispatcher(dispatcher: Callable[[str], None] | None) -> None:
    global _dispatcher
    with _dispatch_lock:
        _dispatcher = dispatcher


def run_job(name: str) -> None:
    """The scheduler's entry point for every job (see the module docstring)."""
    dispatcher = _dispatcher
    if dispatcher is None:
        log.warning("job.no_daemon", job=name)
        return
    dispatcher(name)


@dataclass
class BotJobs:
    """The jobs' bodies; the daemon owns their schedule, the lease and error handling."""

    config: BotConfig
    state: BotState
    platform: Platform
    service: GenerationService
    watcher: CheckpointWatcher
    triggers: RetrainTriggers
    # infra.aws.exchange.S3Exchange with the aws backend: pulls finished versions from S3.
    exchange: Any = None
    # The poster lease's token: intents to post are recorded only while it holds.
    fence: Fence | None = None

    def __post_init__(self) -> None:
        self._me: User | None = None
        self.pool = TweetPool(self.state)

    def _recent(self) -> list[str]:
        return self.state.recent_texts(self.config.filters.recent_posts_checked)

    def scrape(self) -> None:
        for target in self.config.targets:
            try:
                scrape_target(self.platform, self.state, self.config.data_dir, target.handle)
            except PlatformError as exc:
                platform_failed("scrape.failed", exc, handle=target.handle)

    def post(self) -> None:
        if self._writes_spent("post.skipped"):
            return
        post_scheduled(
            self.platform,
            self.state,
            self.service,
            self.pool,
            recent=self._recent(),
            fence=self.fence,
            reconcile_grace_seconds=self.config.schedule.post_reconcile_grace_seconds,
            held=self._held() if self.config.review.posts == "hold" else None,
            candidates=self.config.review.post_candidates,
        )

    def pool_refill(self) -> None:
        generation = self.config.generation
        refill_pool(
            self.state,
            self.service,
            self.pool,
            target=generation.pool_size,
            batch_size=generation.pool_batch_size,
            recent=self._recent(),
        )

    def mentions(self) -> None:
        # With no post budget left, reading mentions would only spend the read budget.
        if self._writes_spent("mentions.skipped"):
            return
        review = self.config.review
        held = self._held()
        try:
            # Approved replies first (they were waiting already), even with review off now.
            send_approved(
                self.platform,
                self.state,
                held,
                settings=self.config.replies,
                expire_seconds=review.expire_hours * 3600,
            )
            if self._me is None:
                self._me = self.platform.me()
            poll_mentions(
                self.platform,
                self.state,
                self.service,
                me=self._me,
                settings=self.config.replies,
                recent=self._recent(),
                fence=self.fence,
                held=held if review.holds_replies(self.config.platform.kind) else None,
            )
        except PlatformError as exc:
            platform_failed("mentions.failed", exc)

    def _held(self) -> HeldLedger:
        return HeldLedger(
            self.state,
            keep_days=self.config.review.keep_days,
            reply_keep_days=self.config.replies.keep_days,
            fence=self.fence,
        )

    def _writes_spent(self, event: str) -> bool:
        writes_left = getattr(self.platform, "writes_left_today", None)
        if writes_left is not None and writes_left() == 0:
            log.info(event, reason="budget_spent")
            return True
        return False

    def checkpoints(self) -> None:
        if self.exchange is not None:
            pulled = self.exchange.pull(self.config.model_dir, skip=self.state.bad_versions())
            for version, reason in pulled.refused.items():
                self.state.mark_bad_version(version, reason)
        self.watcher.check()
        self.triggers.tick(self.config, have_model=self.service.current is not None)
