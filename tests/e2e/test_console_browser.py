"""The console in a real browser: Debian's Chromium, driven by Playwright, against a real
ConsoleServer over real Redis with a seeded account, and against a real daemon on the
offline default whose replies wait for review.

Screenshots of each page land in build/test-artifacts/console/<page>.png.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from bot.config import BotConfig
from bot.console.auth import token_path
from bot.console.server import ConsoleServer
from bot.rules import opted_out_authors
from bot.state import BotState
from tests.support.browser import ARTIFACTS, browser_unavailable, launch_chromium, seed_full
from tests.support.configs import offline_config_data
from tests.support.daemon_process import append_mention, replies_to, volume_of, with_model
from tests.support.network import free_port

pytestmark = pytest.mark.skipif(
    browser_unavailable() is not None, reason=browser_unavailable() or ""
)


@pytest.fixture
def console(tmp_path: Path, account: str, redis_url: str) -> Iterator[dict[str, Any]]:
    data = offline_config_data(tmp_path / "volume", account, redis_url)
    data["console"] = {"port": free_port()}
    config = BotConfig.model_validate(data)
    state = BotState(redis.Redis.from_url(redis_url, decode_responses=True), account)
    seeded = seed_full(config, state)
    server = ConsoleServer(config, lambda: state)
    server.start()
    yield {"server": server, "state": state, "seeded": seeded, "config": config}
    server.stop()


@pytest.fixture
def browser() -> Iterator[Any]:
    """A browser context (one cookie jar: its pages are the operator's tabs)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = launch_chromium(playwright)
        try:
            yield chromium.new_context(viewport={"width": 1280, "height": 900})
        finally:
            chromium.close()


@pytest.fixture
def page(browser: Any) -> Any:
    return browser.new_page()


def _no_script_errors(page: Any) -> list[str]:
    """Collects the page's console errors (a script error, a refusal by the CSP, a 404)."""
    errors: list[str] = []
    page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
    return errors


def _shoot(page: Any, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def test_an_operator_logs_in_and_uses_every_page(page: Any, console: dict[str, Any]) -> None:
    from playwright.sync_api import expect

    server, state, seeded = console["server"], console["state"], console["seeded"]
    base = f"http://127.0.0.1:{server.port}"
    errors = _no_script_errors(page)

    page.goto(server.login_url)
    expect(page).to_have_url(f"{base}/")  # the cookie is set and the overview opens
    expect(page.locator("#serving-version")).to_have_text(seeded.serving)
    expect(page.locator("#lease-holder")).to_have_text("leader-host:100:aaaaaa")
    _shoot(page, "overview")

    # htmx polls the fragment: a change in Redis shows without a reload.
    state.redis.hset(state.keys.model_current, "version", "20990101T000000000000Z-new000")
    expect(page.locator("#serving-version")).to_have_text(
        "20990101T000000000000Z-new000", timeout=15_000
    )
    state.redis.hset(state.keys.model_current, "version", seeded.serving)

    page.get_by_role("link", name="History").click()
    expect(page).to_have_url(f"{base}/history")
    expect(page.locator("tr.item")).to_have_count(50)
    page.get_by_role("searchbox").fill("number 7 about")
    page.get_by_role("button", name="Search").click()
    expect(page.locator("tr.item")).to_have_count(1)
    expect(page.locator("tr.item td.text")).to_have_text("post number 7 about thrift")
    page.goto(f"{base}/history")
    _shoot(page, "history")

    page.get_by_role("link", name="Models").click()
    expect(page).to_have_url(f"{base}/models")
    curve = page.locator("svg.loss-chart polyline.loss-train")
    expect(curve).to_have_count(1)
    points = curve.get_attribute("points") or ""
    assert len(re.findall(r"[\d.]+,[\d.]+", points)) == 40
    expect(page.locator("svg.loss-chart polyline.loss-val")).to_have_count(1)
    page.get_by_role("link", name="compare").first.click()
    expect(page.locator("svg.loss-chart")).to_have_count(2)
    _shoot(page, "models")

    page.get_by_role("link", name="Opt-outs").click()
    expect(page.get_by_role("cell", name="@alice_optout", exact=True)).to_be_visible()
    _shoot(page, "opt-outs")
    page.get_by_role("button", name="remove @alice_optout").click()
    expect(page.get_by_role("status")).to_contain_text("@alice_optout opted back in")
    expect(page.get_by_role("cell", name="@alice_optout", exact=True)).to_have_count(0)
    assert set(opted_out_authors(state)) == {"502"}

    assert errors == []  # no script error, no refusal by the Content-Security-Policy


def test_an_operator_edits_approves_and_rejects_held_replies_of_a_real_daemon(
    write_config, daemons, trained_checkpoints, browser: Any
) -> None:
    """A mention arrives, its held reply shows in the browser, the operator edits and
    approves it: exactly one reply with the edited text lands in the outbox. A second tab's
    approve posts nothing more, a reject posts nothing, an edit over 280 is refused."""
    from playwright.sync_api import expect

    config = with_model(write_config(review={"replies": "hold"}), trained_checkpoints)
    daemon = daemons(config)
    daemon.wait_for("hotload.swapped", timeout=120)
    base = daemon.wait_for("console.listening", timeout=30)["url"].rstrip("/")
    token = token_path(volume_of(config)).read_text().strip()
    asked, declined, waiting = "9200000000000000001", "9200000000000000002", "9200000000000000003"
    append_mention(config, asked, "@parrotbot is time money?")
    append_mention(config, declined, "@parrotbot and thrift?", author="bob")
    append_mention(config, waiting, "@parrotbot what of sleep?", author="carol")
    daemon.wait_for("reply.held", lambda e: e["mention_id"] == waiting, timeout=60)

    page = browser.new_page()
    errors = _no_script_errors(page)
    page.goto(f"{base}/login?token={token}")
    page.get_by_role("link", name="Review").click()
    first = page.locator(f'form.review-item[data-item="reply-{asked}"]')
    expect(first).to_contain_text("@alice wrote")
    expect(page.locator("form.review-item")).to_have_count(3)
    other_tab = browser.new_page()
    other_tab.goto(f"{base}/review")  # the same session, opened before the approval
    _shoot(page, "review")

    first.get_by_role("textbox", name="reply text").fill("thrift " * 50)
    first.get_by_role("button", name="Approve").click()
    expect(first.get_by_role("alert")).to_contain_text("the edit fails the too_long check")
    _shoot(page, "review-refused")

    edited = "Time is money, and so is sleep."
    first.get_by_role("textbox", name="reply text").fill(edited)
    first.get_by_role("button", name="Approve").click()
    expect(first.get_by_role("status")).to_contain_text("approved with your edit")

    stale = other_tab.locator(f'form.review-item[data-item="reply-{asked}"]')
    stale.get_by_role("button", name="Approve").click()
    expect(stale.get_by_role("alert")).to_contain_text("is approved, not held: nothing changed")

    second = page.locator(f'form.review-item[data-item="reply-{declined}"]')
    second.get_by_role("textbox", name="reject reason").fill("off topic")
    second.get_by_role("button", name="Reject").click()
    expect(second.get_by_role("status")).to_contain_text("rejected")

    sent = daemon.wait_for("reply.published", timeout=60)
    assert sent["mention_id"] == asked and sent["text"] == edited
    daemon.wait_for("mentions.polled", after=len(daemon.events()), timeout=60)
    assert [reply["text"] for reply in replies_to(config, asked)] == [edited]
    assert replies_to(config, declined) == [] and replies_to(config, waiting) == []
    page.goto(f"{base}/review")
    expect(page.locator(f'tr.decision[data-item="reply-{asked}"]')).to_contain_text("sent")
    _shoot(page, "review-decided")

    # The models page draws the loss curve the trainer logged for the version that serves.
    page.get_by_role("link", name="Models").click()
    serving = page.locator("tr.chosen .tag.serving")
    expect(serving).to_have_count(1)
    curve = page.locator("svg.loss-chart polyline.loss-train")
    expect(curve).to_have_count(1)
    assert len(re.findall(r"[\d.]+,[\d.]+", curve.get_attribute("points") or "")) >= 2
    _shoot(page, "models-trained")
    assert errors == []
    assert daemon.stop() == 0
