"""The review page: each decision changes the ledger as `parrotbot review` does, or nothing."""

from __future__ import annotations

from starlette.testclient import TestClient

from bot.config import BotConfig
from bot.ledger import ReplyOutcome
from bot.ledger.held import HeldLedger, HeldState
from bot.state import BotState
from tests.support.browser import csrf_of, seed_held

HTMX = {"HX-Request": "true"}


def _ledger(state: BotState) -> HeldLedger:
    return HeldLedger(state, keep_days=90, reply_keep_days=60)


def _decide(client: TestClient, item_id: str, action: str, **fields: str):
    csrf = csrf_of(client.get("/models").text)  # every form of a session carries the same
    return client.post(
        "/review/decide", data={"csrf": csrf, "id": item_id, "action": action, **fields}
    )


def test_the_queue_shows_each_held_reply_oldest_first_with_its_provenance(
    logged_in: TestClient, state: BotState
) -> None:
    first, second = seed_held(state, 2)
    page = logged_in.get("/review").text
    assert page.index(first) < page.index(second)
    assert "@asker0" in page and "question 0: is thrift a virtue?" in page
    # The reply box holds the text as it would go out, so Approve as it is sends just that.
    assert 'aria-label="reply text">A penny saved is answer 1.</textarea>' in page
    assert "v-test" in page and "d" * 64 in page and "temperature=0.8" in page
    assert "5 of 8 accepted; too_long 3" in page
    flat = " ".join(page.split())
    assert "A penny saved is a penny earned.</q> (80% of the reply's words)" in flat
    assert "nothing: platform local is not X" in page  # the cost estimate, offline


def test_approving_moves_the_item_to_approved_once(logged_in: TestClient, state: BotState) -> None:
    (item_id,) = seed_held(state, 1)
    response = _decide(logged_in, item_id, "approve", text="A penny saved is answer 0.")
    assert response.status_code == 200
    assert "approved: the daemon sends it at its next mentions poll" in response.text
    assert [item.id for item in _ledger(state).approved()] == [item_id]
    again = _decide(logged_in, item_id, "approve", text="something else entirely")
    assert "is approved, not held: nothing changed" in again.text
    late_edit = _decide(
        logged_in, item_id, "approve", text=""
    )  # refused for the state, not the edit
    assert "is approved, not held: nothing changed" in late_edit.text
    item = _ledger(state).get(item_id)
    assert item is not None and item.final_text == "A penny saved is answer 0."
    assert item.decided_by == "console"


def test_an_edit_is_what_goes_out(logged_in: TestClient, state: BotState) -> None:
    (item_id,) = seed_held(state, 1)
    edited = "Early to bed, and early to rise."
    response = _decide(logged_in, item_id, "approve", text=edited)
    assert "approved with your edit" in response.text
    item = _ledger(state).get(item_id)
    assert item is not None and item.state is HeldState.APPROVED
    assert item.final_text == edited and item.edited


def test_an_edit_the_filters_refuse_changes_nothing_and_says_why(
    logged_in: TestClient, state: BotState
) -> None:
    (item_id,) = seed_held(state, 1)
    too_long = "thrift " * 50  # 350 weighted characters
    response = logged_in.post(
        "/review/decide",
        data={
            "csrf": csrf_of(logged_in.get("/models").text),
            "id": item_id,
            "action": "approve",
            "text": too_long,
        },
        headers=HTMX,
    )
    assert response.status_code == 200
    assert "the edit fails the too_long check" in response.text
    assert "<html" not in response.text  # htmx gets the item alone, swapped in place
    assert too_long.strip() in response.text  # the operator's draft is kept to fix
    item = _ledger(state).get(item_id)
    assert item is not None and item.state is HeldState.HELD
    assert item.final_text == "A penny saved is answer 0."


def test_rejecting_declines_the_mention_with_the_reason(
    logged_in: TestClient, state: BotState
) -> None:
    (item_id,) = seed_held(state, 1)
    response = _decide(logged_in, item_id, "reject", reason="off topic")
    assert "rejected: the mention stays unanswered" in response.text
    item = _ledger(state).get(item_id)
    assert item is not None and item.state is HeldState.REJECTED and item.reason == "off topic"
    assert state.redis.hget(state.keys.reply("7000"), "outcome") == ReplyOutcome.DECLINED
    assert _ledger(state).approved() == []
    assert "off topic" in logged_in.get("/review").text  # among the recent decisions


def test_an_unknown_item_or_action_is_refused_by_name(
    logged_in: TestClient, state: BotState
) -> None:
    (item_id,) = seed_held(state, 1)
    gone = _decide(logged_in, "reply-404", "approve")
    assert "no review item &#39;reply-404&#39;" in gone.text
    odd = _decide(logged_in, item_id, "publish")
    assert "unknown action &#39;publish&#39;" in odd.text
    item = _ledger(state).get(item_id)
    assert item is not None and item.state is HeldState.HELD


def test_a_decision_without_the_csrf_token_is_forbidden(
    logged_in: TestClient, state: BotState, config: BotConfig
) -> None:
    (item_id,) = seed_held(state, 1)
    response = logged_in.post("/review/decide", data={"id": item_id, "action": "approve"})
    assert response.status_code == 403
    item = _ledger(state).get(item_id)
    assert item is not None and item.state is HeldState.HELD


def test_on_x_each_item_shows_what_sending_it_would_cost(
    x_logged_in: TestClient, state: BotState
) -> None:
    client = x_logged_in
    (item_id,) = seed_held(state, 1)
    assert "$0.010 (platform.x.prices.reply)" in client.get("/review").text
    response = client.post(
        "/review/decide",
        data={
            "csrf": csrf_of(client.get("/models").text),
            "id": item_id,
            "action": "approve",
            "text": "see poorrichard.example.com",
        },
        headers=HTMX,
    )
    assert "$0.200 (platform.x.prices.post_with_url: it holds a URL)" in response.text


def test_a_post_candidate_is_shown_and_decided_as_a_post(
    logged_in: TestClient, state: BotState
) -> None:
    item_id = _ledger(state).hold_post("Haste makes waste.", {"model_version": "v-test"})
    assert item_id is not None
    page = logged_in.get("/review").text
    assert "A candidate for a scheduled post" in page and "Haste makes waste." in page
    response = _decide(logged_in, item_id, "reject", reason="dull")
    assert "rejected: never posted" in response.text
    item = _ledger(state).get(item_id)
    assert item is not None and item.state is HeldState.REJECTED and item.kind == "post"
    assert not state.redis.exists(state.keys.reply(item_id.removeprefix("reply-")))
