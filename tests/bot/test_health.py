"""/healthz answers 200 only when the daemon can serve, and says why when it cannot."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import pytest

from bot import metrics
from bot.health import Health, HealthServer


def get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


@pytest.mark.parametrize(
    ("health", "status", "problem"),
    [
        (Health(redis=True, model_version="v1", scheduler_running=True), 200, None),
        (Health(redis=False, model_version="v1", scheduler_running=True), 503, "redis"),
        (Health(redis=True, model_version=None, scheduler_running=True), 503, "no model"),
        (Health(redis=True, model_version="v1", scheduler_running=False), 503, "standby"),
    ],
)
def test_healthz_states(health: Health, status: int, problem: str | None) -> None:
    server = HealthServer("127.0.0.1", 0, lambda: health)
    port = server.start()
    try:
        code, body = get(port, "/healthz")
    finally:
        server.stop()
    assert code == status
    report = json.loads(body)
    if problem is None:
        assert report == {"status": "ok", "problems": [], "model_version": "v1"}
    else:
        assert report["status"] == "unavailable"
        assert any(problem in line for line in report["problems"])


def test_a_daemon_without_redis_is_not_called_a_standby() -> None:
    problems = Health(redis=False, model_version="v1", scheduler_running=False).problems
    assert problems == ["redis does not answer", "scheduler not running (the lease needs Redis)"]


def test_metrics_and_unknown_paths() -> None:
    metrics.POSTS.labels(source="pool").inc()
    metrics.set_model("v7")
    server = HealthServer("127.0.0.1", 0, lambda: Health(True, "v7", True))
    port = server.start()
    try:
        code, text = get(port, "/metrics")
        missing, _ = get(port, "/nope")
    finally:
        server.stop()
    assert code == 200
    assert 'parrotbot_posts_total{source="pool"}' in text
    assert 'parrotbot_model_info{version="v7"} 1.0' in text
    assert missing == 404
