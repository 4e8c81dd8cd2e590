"""Budgets: counted in Redis before each call, atomically, across processes; spend in dollars."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import redis
import yaml

from bot.config import XBudgetsConfig, XPricesConfig
from bot.keys import Keys
from bot.platform.base import BudgetExhausted
from bot.platform.budgets import Budgets, Spend
from tests.support.configs import X_SECRETS, x_config_data
from tests.support.x_emulator import CREATE

REPO = Path(__file__).resolve().parents[3]


def budgets(redis_client: redis.Redis, account: str, **caps: int | None) -> Budgets:
    return Budgets(redis_client, Keys(account), XBudgetsConfig(**caps), XPricesConfig())


def test_posts_and_replies_share_the_daily_cap(redis_client: redis.Redis, account: str) -> None:
    spend = budgets(redis_client, account, posts_per_day=3, posts_per_month=100)
    spend.reserve(Spend.POST)
    spend.reserve(Spend.REPLY)
    last = spend.reserve(Spend.POST)
    assert spend.writes_left_today() == 0
    with pytest.raises(BudgetExhausted, match="posts_per_day"):
        spend.reserve(Spend.REPLY)
    spend.refund(last)  # a write X refused gives its unit back
    assert spend.writes_left_today() == 1
    spend.reserve(Spend.REPLY)
    report = spend.spend_today()
    assert (report["post"], report["reply"]) == (1, 2)
    assert report["usd"] == pytest.approx(0.015 + 2 * 0.010)


def test_reads_are_granted_up_to_what_is_left_and_the_unused_part_returns(
    redis_client: redis.Redis, account: str
) -> None:
    spend = budgets(redis_client, account, reads_per_month=150)
    first = spend.reserve(Spend.READ, 100, minimum=5)
    second = spend.reserve(Spend.READ, 100, minimum=5)
    assert (first.amount, second.amount) == (100, 50)
    with pytest.raises(BudgetExhausted, match="reads_per_month"):
        spend.reserve(Spend.READ, 100, minimum=5)
    spend.refund(second, 48)  # the page held only 2 posts
    assert spend.reserve(Spend.READ, 100, minimum=5).amount == 48
    assert spend.spend_today()["usd"] == pytest.approx(150 * 0.005)


def test_each_kind_is_billed_at_its_price_and_reads_share_one_cap(
    redis_client: redis.Redis, account: str
) -> None:
    """X's price card: a URL post, an own read and a user read cost what they cost."""
    spend = budgets(redis_client, account, reads_per_month=30)
    spend.reserve(Spend.POST_WITH_URL)
    spend.reserve(Spend.POST)
    own = spend.reserve(Spend.OWN_READ, 20, minimum=5)
    spend.refund(own, 15)  # the mentions page held 5 posts
    spend.reserve(Spend.USER_READ)
    spend.reserve(Spend.READ, 100, minimum=5)  # what the cap leaves: 30 - 5 - 1
    with pytest.raises(BudgetExhausted, match="reads_per_month"):
        spend.reserve(Spend.OWN_READ, 5, minimum=5)
    by_kind = spend.usd_by_kind()
    assert by_kind == pytest.approx(
        {
            "post": 0.015,
            "post_with_url": 0.20,
            "reply": 0.0,
            "read": 24 * 0.005,
            "own_read": 5 * 0.001,
            "user_read": 0.010,
        }
    )
    assert spend.spend_today()["usd"] == pytest.approx(sum(by_kind.values()))
    assert spend.usd_by_kind(month=True) == pytest.approx(by_kind)


def test_no_cap_means_unlimited_and_writes_left_is_none(
    redis_client: redis.Redis, account: str
) -> None:
    spend = budgets(redis_client, account, posts_per_day=None, posts_per_month=None)
    for _ in range(50):
        spend.reserve(Spend.POST)
    assert spend.writes_left_today() is None


def test_two_processes_for_one_account_never_post_beyond_the_daily_budget(
    tmp_path: Path, account: str, redis_url: str, emulator, redis_client: redis.Redis
) -> None:
    data = x_config_data(tmp_path / "volume", account, redis_url, emulator.url)
    data["platform"]["x"]["budgets"] = {"posts_per_day": 7, "posts_per_month": 100}
    config = tmp_path / "bot.yaml"
    config.write_text(yaml.safe_dump(data))
    go = tmp_path / "go"
    env = {**os.environ, **X_SECRETS, "PYTHONPATH": str(REPO)}
    command = [sys.executable, "-m", "tests.support.x_post_worker", str(config), "10", str(go)]
    workers = [
        subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env=env, cwd=REPO)
        for _ in range(2)
    ]
    try:
        for worker in workers:
            assert worker.stdout is not None and worker.stdout.readline().strip() == "ready"
        go.touch()  # both start posting together
        results = [json.loads(worker.communicate(timeout=60)[0]) for worker in workers]
    finally:
        for worker in workers:
            worker.kill()
    assert sum(r["posted"] for r in results) == 7
    assert sum(r["refused"] for r in results) == 13
    assert len(emulator.requests_to(CREATE)) == 7  # the budget held on the wire, too
    assert Budgets(redis_client, Keys(account), XBudgetsConfig(posts_per_day=7),
                   XPricesConfig()).writes_left_today() == 0  # fmt: skip


def test_spend_this_month_adds_up_the_days(redis_client, account: str) -> None:
    from bot.config import XBudgetsConfig, XPricesConfig
    from bot.keys import Keys
    from bot.platform.budgets import Budgets, Spend

    budgets = Budgets(redis_client, Keys(account), XBudgetsConfig(), XPricesConfig(post=0.015))
    budgets.reserve(Spend.POST)
    budgets.reserve(Spend.POST)
    assert budgets.spend_today()["usd"] == 0.03
    assert budgets.spend_this_month() == 0.03
