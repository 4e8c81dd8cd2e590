"""Prometheus metrics of the daemon, served on /metrics by bot/health.py.

Module-level metrics in the default registry, the prometheus-client convention: one daemon
per process, so there is one set per daemon.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from prometheus_client import Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from bot.model_worker import WorkerStats

POSTS = Counter("parrotbot_posts_total", "Scheduled posts published.", ["source"])
REPLIES = Counter("parrotbot_replies_total", "Replies to mentions, by outcome.", ["outcome"])
CANDIDATES_REJECTED = Counter(
    "parrotbot_candidates_rejected_total", "Generated texts refused, by filter.", ["reason"]
)
CANDIDATES_ACCEPTED = Counter(
    "parrotbot_candidates_accepted_total", "Generated texts that passed every filter."
)
GENERATION_SECONDS = Histogram(
    "parrotbot_generation_seconds",
    "Time to sample one batch of candidates.",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
MODEL_INFO = Gauge("parrotbot_model_info", "The model version serving now (value 1).", ["version"])
MODEL_SWAPS = Counter("parrotbot_model_swaps_total", "New model versions put into service.")
MODEL_REFUSED = Counter("parrotbot_model_refused_total", "Model versions refused by hot-loading.")
POOL_SIZE = Gauge("parrotbot_pool_size", "Ready posts waiting in the pool.")
JOB_FAILURES = Counter("parrotbot_job_failures_total", "Scheduler jobs that raised.", ["job"])
LEADER = Gauge("parrotbot_leader", "1 while this daemon holds the poster lease.")
X_API_CALLS = Counter(
    "parrotbot_x_api_calls_total",
    "Requests sent to X, by endpoint and HTTP status (429: rate limited; 'error': no answer).",
    ["endpoint", "status"],
)


def set_model(version: str) -> None:
    MODEL_INFO.clear()
    MODEL_INFO.labels(version=version).set(1)


class WorkerCollector(Collector):
    """The serving model's worker process, read at scrape time (it changes at every swap)."""

    def __init__(self, stats: Callable[[], WorkerStats | None]) -> None:
        self.stats = stats

    def collect(self) -> Iterator[Metric]:
        stats = self.stats()
        if stats is None:
            return
        labels = ["version", "pid"]
        values = [stats.version, str(stats.pid)]
        rss = GaugeMetricFamily(
            "parrotbot_worker_rss_bytes", "Resident memory of the model worker.", labels=labels
        )
        rss.add_metric(values, stats.rss_bytes)
        requests = CounterMetricFamily(
            "parrotbot_worker_requests", "Generation requests the worker answered.", labels=labels
        )
        requests.add_metric(values, stats.requests)
        restarts = CounterMetricFamily(
            "parrotbot_worker_restarts",
            "Times the worker died serving and was replaced by a fresh one.",
            labels=labels,
        )
        restarts.add_metric(values, stats.restarts)
        yield from (rss, requests, restarts)
