"""Scheduled posts on hold: candidates wait, the operator picks, one approved post per slot."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import redis

from bot.config import ReviewConfig
from bot.ledger import PostLedger, SlotOutcome
from bot.ledger.held import HeldLedger, HeldState
from bot.pool import TweetPool
from bot.posting import post_scheduled
from bot.review import Review
from tests.support.configs import offline_config_data
from tests.support.replies import serving


@pytest.fixture
def setup(tmp_path: Path, trained_checkpoints: Path, redis_client: redis.Redis, account: str):
    platform, state, service = serving(tmp_path, trained_checkpoints, redis_client, account)
    held = HeldLedger(state, keep_days=90, reply_keep_days=60)
    yield platform, state, service, held
    service.close()


def fire(setup, **options):
    """One firing of the post job with posts on hold."""
    platform, state, service, held = setup
    options = {"reconcile_grace_seconds": 0, "candidates": 3, **options}
    return post_scheduled(platform, state, service, TweetPool(state), held=held, **options)


def outbox(platform) -> list[str]:
    if not platform.outbox_path.exists():
        return []
    return [json.loads(line)["text"] for line in platform.outbox_path.read_text().splitlines()]


def review(setup, tmp_path: Path, redis_url: str) -> Review:
    from bot.config import BotConfig

    _platform, state, _service, _held = setup
    data = offline_config_data(tmp_path / "review-volume", state.keys.account, redis_url)
    return Review(BotConfig.model_validate(data), state)


def test_posts_are_posted_as_generated_unless_the_operator_holds_them() -> None:
    assert ReviewConfig().posts == "auto"
    assert ReviewConfig(posts="hold").post_candidates == 3


def test_candidates_wait_up_to_their_number_and_nothing_is_posted(setup) -> None:
    platform, _state, service, held = setup
    for _ in range(5):
        assert fire(setup) is None
    items = [item for item in held.held() if item.kind == "post"]
    assert len(items) == 3 and outbox(platform) == []
    assert all(item.id.startswith("post-") and item.mention == {} for item in items)
    assert items[0].provenance["model_version"] == service.current.version


def test_one_approved_post_per_slot_in_approval_order_and_a_rejected_one_never(
    setup, tmp_path: Path, redis_url: str
) -> None:
    platform, _state, _service, held = setup
    for _ in range(3):
        fire(setup)
    first, second, third = (item.id for item in held.held())
    decide = review(setup, tmp_path, redis_url)
    decide.approve(second, text="Well done is better than well said.", by="test")
    decide.approve(first, by="test")
    decide.reject(third, reason="dull", by="test")
    assert decide.item(third).state is HeldState.REJECTED

    posted = fire(setup)  # two approved wait: this slot posts the first approved only
    assert posted is not None and posted.text == "Well done is better than well said."
    assert outbox(platform) == [posted.text]
    again = fire(setup)  # the next slot
    assert again is not None and again.text == held.get(first).final_text
    assert fire(setup) is None  # none approved: a new candidate is held instead
    assert outbox(platform) == [posted.text, again.text]
    assert [held.get(i).state for i in (first, second, third)] == [
        HeldState.SENT, HeldState.SENT, HeldState.REJECTED
    ]  # fmt: skip


def test_an_approved_post_that_went_out_before_a_crash_is_not_posted_again(
    setup, tmp_path: Path, redis_url: str
) -> None:
    platform, state, service, held = setup
    fire(setup)
    (item,) = held.held()
    review(setup, tmp_path, redis_url).approve(item.id, by="test")
    # What a leader that died between the POST and the record leaves: the candidate tried
    # in the slot, the slot's intent, the post on the platform.
    ledger = PostLedger(state)
    slot = ledger.current()
    held.mark_slot(item.id, slot.id)
    ledger.claim(slot, item.final_text, service.current.version)
    platform.post(item.final_text)

    assert fire(setup) is None  # reconciled, settled, and a new candidate held instead
    assert ledger.read(slot.id).outcome == SlotOutcome.RECONCILED
    assert held.get(item.id).state is HeldState.SENT and held.approved("post") == []
    assert outbox(platform) == [item.final_text]
    assert held.held_posts_count() == 1
