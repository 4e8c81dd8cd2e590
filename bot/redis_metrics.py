"""Gauges read from Redis at scrape time: budgets left, X spend, retrain and review queues.

These numbers live in Redis and change in other processes (a second daemon's spending, the
launcher moving jobs), so a gauge set by this process would go stale. A collector reads
them at scrape time instead; a scrape while Redis is down reports `parrotbot_redis_up 0`
rather than failing, so the rest of /metrics still arrives.
"""

from __future__ import annotations

from collections.abc import Iterator

import redis
import structlog
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from bot.ledger.held import HeldLedger
from bot.platform.budgets import Budgets
from infra.job import JobState
from infra.retrain_queue import RetrainQueue

log = structlog.get_logger(__name__)

# States of a job that has not finished: what an operator means by "queue depth".
_OPEN_STATES = tuple(state for state in JobState if not state.terminal)


class RedisStateCollector(Collector):
    """Budgets (None on the local platform, which spends nothing), the retrain queue and,
    given one, the review queue."""

    def __init__(
        self,
        client: redis.Redis,
        queue: RetrainQueue,
        budgets: Budgets | None,
        review: HeldLedger | None = None,
    ) -> None:
        self.client = client
        self.queue = queue
        self.budgets = budgets
        self.review = review

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily("parrotbot_redis_up", "1 when Redis answered this scrape.")
        try:
            families = list(self._families())
        except redis.RedisError as exc:
            log.debug("metrics.redis_unavailable", error=str(exc))
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        yield from families

    def _families(self) -> Iterator[Metric]:
        depth = GaugeMetricFamily(
            "parrotbot_retrain_jobs", "Retrain jobs not yet finished, by state.", labels=["state"]
        )
        for state in _OPEN_STATES:
            depth.add_metric([state.value], self.queue.count_in_state(state))
        yield depth
        if self.review is not None:
            review = GaugeMetricFamily(
                "parrotbot_review_items",
                "Review queue: replies held for a decision, and approved ones not yet sent.",
                labels=["state"],
            )
            review.add_metric(["held"], self.review.held_count())
            review.add_metric(["approved"], self.review.approved_count())
            yield review
        if self.budgets is None:
            return
        left = GaugeMetricFamily(
            "parrotbot_x_budget_remaining",
            "Calls each capped X budget still allows in its current period (config field name).",
            labels=["budget"],
        )
        for name, value in self.budgets.remaining().items():
            left.add_metric([name], value)
        yield left
        spend = GaugeMetricFamily(
            "parrotbot_x_spend_usd",
            "Estimated X spend in US dollars, for the current UTC day and month.",
            labels=["period"],
        )
        spend.add_metric(["day"], self.budgets.spend_today()["usd"])
        spend.add_metric(["month"], self.budgets.spend_this_month())
        yield spend
        by_kind = GaugeMetricFamily(
            "parrotbot_x_spend_kind_usd",
            "Estimated X spend in US dollars by kind of call (post, post_with_url, reply, read, "
            "own_read, user_read), for the current UTC day and month.",
            labels=["period", "kind"],
        )
        for period, month in (("day", False), ("month", True)):
            for kind, usd in self.budgets.usd_by_kind(month=month).items():
                by_kind.add_metric([period, kind], usd)
        yield by_kind
