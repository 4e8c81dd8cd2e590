"""What /metrics adds to the events it counts: X calls and 429s, budgets left, queue depth."""

from __future__ import annotations

import pytest
import redis
from prometheus_client import REGISTRY, CollectorRegistry, generate_latest

from bot.config import XBudgetsConfig, XPricesConfig
from bot.keys import Keys
from bot.ledger.held import HeldLedger
from bot.platform.base import RateLimited, Tweet
from bot.platform.budgets import Budgets, Spend
from bot.platform.x_session import endpoint_name
from bot.redis_metrics import RedisStateCollector
from bot.state import BotState
from infra.retrain_queue import RetrainQueue
from tests.support.retrain import job_spec
from tests.support.x_emulator import MENTIONS


def scrape(collector: RedisStateCollector) -> str:
    registry = CollectorRegistry()
    registry.register(collector)
    return generate_latest(registry).decode()


def test_budget_remaining_spend_and_queue_depth_are_read_at_scrape_time(
    redis_client: redis.Redis, account: str
) -> None:
    budgets = Budgets(
        redis_client,
        Keys(account),
        XBudgetsConfig(posts_per_day=5, posts_per_month=100, reads_per_month=None),
        XPricesConfig(post=0.25),
    )
    queue = RetrainQueue(redis_client, account)
    collector = RedisStateCollector(redis_client, queue, budgets)
    before = scrape(collector)
    assert 'parrotbot_x_budget_remaining{budget="posts_per_day"} 5.0' in before
    assert 'parrotbot_retrain_jobs{state="queued"} 0.0' in before
    assert "reads_per_month" not in before  # no cap, nothing to count down

    budgets.reserve(Spend.POST, 2)
    queue.request(job_spec(account, ["/data/datasets/a.jsonl"]))
    after = scrape(collector)
    assert "parrotbot_redis_up 1.0" in after
    assert 'parrotbot_x_budget_remaining{budget="posts_per_day"} 3.0' in after
    assert 'parrotbot_x_budget_remaining{budget="posts_per_month"} 98.0' in after
    assert 'parrotbot_x_spend_usd{period="day"} 0.5' in after
    assert 'parrotbot_x_spend_kind_usd{kind="post",period="day"} 0.5' in after
    assert 'parrotbot_x_spend_kind_usd{kind="reply",period="month"} 0.0' in after
    assert 'parrotbot_retrain_jobs{state="queued"} 1.0' in after


def test_the_review_queue_is_counted_at_scrape_time(redis_client: redis.Redis, account: str):
    held = HeldLedger(BotState(redis_client, account), keep_days=1, reply_keep_days=1)
    collector = RedisStateCollector(redis_client, RetrainQueue(redis_client, account), None, held)
    assert 'parrotbot_review_items{state="held"} 0.0' in scrape(collector)
    for number in ("1", "2"):
        mention = Tweet(id=number, text="@bot hi", author_id="9", author_handle="a", created_at="")
        held.hold_reply(mention, "a reply", {})
    held.approve("reply-1", by="test")
    text = scrape(collector)
    assert 'parrotbot_review_items{state="held"} 1.0' in text
    assert 'parrotbot_review_items{state="approved"} 1.0' in text


def test_a_scrape_while_redis_is_down_says_so_instead_of_failing(account: str) -> None:
    down = redis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.2)
    collector = RedisStateCollector(down, RetrainQueue(down, account), None)
    text = scrape(collector)
    assert "parrotbot_redis_up 0.0" in text
    assert "parrotbot_retrain_jobs" not in text


def test_x_calls_are_counted_by_endpoint_and_status(emulator, x_platform_factory) -> None:
    def calls(status: str) -> float:
        labels = {"endpoint": MENTIONS, "status": status}
        return REGISTRY.get_sample_value("parrotbot_x_api_calls_total", labels) or 0.0

    platform = x_platform_factory(x={"rate_limit_max_sleep_seconds": 0})
    platform.me()
    ok_before, limited_before = calls("200"), calls("429")
    platform.mentions(None)
    emulator.exhaust(MENTIONS, reset_in=30)
    with pytest.raises(RateLimited):
        platform.mentions(None)
    assert calls("200") == ok_before + 1
    assert calls("429") == limited_before + 1


def test_endpoint_names_keep_the_api_version_and_hide_ids() -> None:
    url = "http://127.0.0.1:8080/2/users/1234/mentions?max_results=5"
    assert endpoint_name("get", url) == MENTIONS
    assert endpoint_name("GET", "https://api.x.com/2/users/by/username/alice") == (
        "GET /2/users/by/username/:username"
    )
