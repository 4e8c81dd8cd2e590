"""The review queue: a held reply waits, and goes out once, as approved, or never."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest
import redis
import yaml
from typer.testing import CliRunner

from bot.cli import app
from bot.config import BotConfig, ReviewConfig, load_config
from bot.filters import novelty_corpus
from bot.ledger import ReplyClaim, ReplyLedger, ReplyOutcome
from bot.ledger.held import HeldLedger, HeldState
from bot.replies import poll_mentions, send_approved
from bot.review import Review, ReviewRefused
from bot.rules import Command, ReplyRules
from tests.support.replies import add_mention, replies_to, serving


@pytest.fixture
def config_file(write_config) -> Path:
    return write_config(review={"replies": "hold"})


@pytest.fixture
def config(config_file: Path) -> BotConfig:
    return load_config(config_file)


@pytest.fixture
def setup(config: BotConfig, trained_checkpoints: Path, redis_client: redis.Redis):
    platform, state, service = serving(
        config.data_dir, trained_checkpoints, redis_client, config.account
    )
    held = HeldLedger(state, keep_days=90, reply_keep_days=60)
    yield platform, state, service, held
    service.close()


def hold(setup, mention_id: str = "100", author: str = "alice") -> str:
    """A mention polled with review on: the id of its held item."""
    platform, state, service, held = setup
    add_mention(platform, mention_id, author=author)
    outcomes = poll_mentions(platform, state, service, me=platform.me(), held=held)
    assert outcomes[-1] is ReplyOutcome.HELD
    return f"reply-{mention_id}"


def send(setup, **options) -> list[ReplyOutcome]:
    platform, state, _service, held = setup
    return send_approved(platform, state, held, **options)


def test_replies_on_x_are_held_unless_the_operator_says_auto() -> None:
    assert ReviewConfig().holds_replies("x")
    assert not ReviewConfig().holds_replies("local")
    assert not ReviewConfig(replies="auto").holds_replies("x")
    assert ReviewConfig(replies="hold").holds_replies("local")


def test_a_held_reply_waits_with_its_provenance_and_the_cursor_moves_on(setup, config) -> None:
    platform, state, service, held = setup
    item_id = hold(setup)
    assert replies_to(platform, "100") == []
    assert state.cursor("mentions") == "100"
    (item,) = Review(config, state).held()
    assert item.id == item_id and item.state is HeldState.HELD and item.text
    assert item.mention["author_handle"] == "alice"
    provenance = item.provenance
    assert provenance["model_version"] == service.current.version
    assert provenance["step"] == service.current.manifest.step
    assert provenance["sampling"]["temperature"] == service.settings.temperature
    assert "too_long" in provenance["filters"]["passed"]
    nearest = provenance["nearest_training_tweet"]  # the char-RNN trained on Poor Richard
    assert nearest is None or (nearest["text"] in novelty_corpus(config) and nearest["overlap"] > 0)
    state.redis.delete(state.keys.cursor("mentions"))  # polled again: still one item
    assert poll_mentions(platform, state, service, me=platform.me(), held=held) == [
        ReplyOutcome.HELD
    ]
    assert held.held_count() == 1
    assert send(setup) == [] and replies_to(platform, "100") == []


def test_an_approved_edit_goes_out_once(setup, config) -> None:
    platform, state, _service, _held = setup
    item_id = hold(setup)
    review = Review(config, state)
    approved = review.approve(item_id, text="A penny saved   is a penny to spare.", by="test")
    assert approved.state is HeldState.APPROVED and approved.edited
    assert send(setup) == [ReplyOutcome.REPLIED]
    (reply,) = replies_to(platform, "100")
    assert reply["text"] == "A penny saved is a penny to spare."
    item = review.item(item_id)
    assert item.state is HeldState.SENT and item.tweet_id == reply["id"]
    assert state.recent_posted(1)[0]["tweet_id"] == reply["id"]
    with pytest.raises(ReviewRefused, match="is sent, not held"):
        review.approve(item_id, by="another tab")
    assert send(setup) == []
    assert len(replies_to(platform, "100")) == 1


def test_two_approvals_at_once_approve_once(setup, config) -> None:
    platform, _state, _service, held = setup
    item_id = hold(setup)
    barrier = threading.Barrier(8)
    answers: list[str] = []

    def approve() -> None:
        barrier.wait()
        answers.append(held.approve(item_id, by=threading.current_thread().name))

    threads = [threading.Thread(target=approve) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(answers) == ["approved"] * 7 + ["held"]
    assert send(setup) == [ReplyOutcome.REPLIED] and send(setup) == []
    assert len(replies_to(platform, "100")) == 1


def test_a_rejected_reply_is_never_sent(setup, config) -> None:
    platform, state, service, held = setup
    item_id = hold(setup)
    rejected = Review(config, state).reject(item_id, reason="off topic", by="test")
    assert rejected.state is HeldState.REJECTED and rejected.reason == "off topic"
    assert send(setup) == []
    assert ReplyLedger(state, keep_days=60).get("100").outcome == ReplyOutcome.DECLINED
    state.redis.delete(state.keys.cursor("mentions"))
    assert poll_mentions(platform, state, service, me=platform.me(), held=held) == [
        ReplyOutcome.HELD
    ]
    assert replies_to(platform, "100") == []


def test_an_edit_the_filters_refuse_changes_nothing(setup, config) -> None:
    _platform, state, _service, _held = setup
    item_id = hold(setup)
    review = Review(config, state)
    with pytest.raises(ReviewRefused, match=r"too_long check: weighted length 300, over X's 280"):
        review.approve(item_id, text="a" * 300, by="test")
    with pytest.raises(ReviewRefused, match="mention check: @someone"):
        review.approve(item_id, text="ask @someone else", by="test")
    assert review.item(item_id).state is HeldState.HELD
    with pytest.raises(ReviewRefused, match="no review item 'reply-999'"):
        review.approve("reply-999", by="test")


def test_an_undecided_reply_expires_unsent(setup, config) -> None:
    platform, state, _service, _held = setup
    item_id = hold(setup)
    assert send(setup, expire_seconds=3600) == []  # not due yet
    assert Review(config, state).item(item_id).state is HeldState.HELD
    assert send(setup, expire_seconds=0) == []
    assert Review(config, state).item(item_id).state is HeldState.EXPIRED
    assert ReplyLedger(state, keep_days=60).get("100").outcome == ReplyOutcome.EXPIRED
    with pytest.raises(ReviewRefused, match="is expired, not held"):
        Review(config, state).approve(item_id, by="too late")
    assert replies_to(platform, "100") == []


def test_an_opt_out_after_the_approval_still_wins(setup, config) -> None:
    platform, state, _service, held = setup
    item_id = hold(setup)
    Review(config, state).approve(item_id, by="test")
    mention = held.get(item_id).mention_tweet()
    ReplyRules(state, config.replies).record_command(mention, Command.OPT_OUT)
    assert send(setup) == [ReplyOutcome.SKIPPED_OPTED_OUT]
    assert replies_to(platform, "100") == []
    assert held.get(item_id).state is HeldState.SKIPPED


def test_an_approved_reply_whose_send_lost_its_answer_is_reconciled_not_resent(
    setup, config
) -> None:
    """The leader died after X took the reply and before its outcome was recorded."""
    platform, state, _service, held = setup
    item_id = hold(setup)
    Review(config, state).approve(item_id, by="test")
    item = held.get(item_id)
    mention = item.mention_tweet()
    limits = ReplyRules(state, config.replies).limits(mention)
    ledger = ReplyLedger(state, keep_days=60)
    assert ledger.claim(mention.id, "v", limits, held=True) is ReplyClaim.CLAIMED
    assert ledger.claim(mention.id, "v", limits, held=True) is ReplyClaim.INTENT_EXISTS
    platform.reply(mention, item.final_text)
    assert send(setup) == [ReplyOutcome.PENDING]  # within the grace: nothing resent
    assert send_approved(
        platform, state, held, settings=config.replies.model_copy(
            update={"reconcile_grace_seconds": 0}
        )
    ) == [ReplyOutcome.RECONCILED]  # fmt: skip
    assert len(replies_to(platform, "100")) == 1
    assert held.get(item_id).state is HeldState.SENT


def test_export_writes_each_decision_with_its_provenance(setup, config, config_file) -> None:
    _platform, state, _service, _held = setup
    review = Review(config, state)
    edited = hold(setup, "100")
    rejected = hold(setup, "101", author="bob")
    waiting = hold(setup, "102", author="carol")
    review.approve(edited, text="Well done is better than well said.", by="test")
    review.reject(rejected, reason="too glib", by="test")
    out = config.data_dir / "decisions.jsonl"
    result = CliRunner().invoke(app, ["review", "export", "-o", str(out), "-c", str(config_file)])
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(d["id"], d["state"]) for d in lines] == [(edited, "approved"), (rejected, "rejected")]
    assert lines[0]["edited"] and lines[0]["final_text"] == "Well done is better than well said."
    assert lines[1]["reason"] == "too glib" and lines[1]["provenance"]["model_version"]
    assert waiting not in out.read_text()


def test_the_cli_lists_approves_and_rejects(setup, config_file) -> None:
    _platform, _state, _service, held = setup
    first, second = hold(setup, "100"), hold(setup, "101", author="bob")
    path = str(config_file)
    runner = CliRunner()
    listed = runner.invoke(app, ["review", "list", "--json", "-c", path])
    assert listed.exit_code == 0, listed.output
    assert [json.loads(line)["id"] for line in listed.stdout.splitlines()] == [first, second]
    approved = runner.invoke(app, ["review", "approve", first, "--text", "Be brief.", "-c", path])
    assert approved.exit_code == 0 and "approved (edited): Be brief." in approved.stdout
    again = runner.invoke(app, ["review", "approve", first, "-c", path])
    assert again.exit_code == 1 and "not held" in again.stderr
    too_long = runner.invoke(app, ["review", "approve", second, "--text", "x" * 281, "-c", path])
    assert too_long.exit_code == 1 and "weighted length 281" in too_long.stderr
    rejected = runner.invoke(app, ["review", "reject", second, "--reason", "no", "-c", path])
    assert rejected.exit_code == 0
    assert [held.get(i).state for i in (first, second)] == [HeldState.APPROVED, HeldState.REJECTED]
    assert yaml.safe_load(Path(path).read_text())["review"] == {"replies": "hold"}


def test_status_counts_the_queue(setup, config_file) -> None:
    first = hold(setup, "100")
    hold(setup, "101", author="bob")
    _platform, _state, _service, held = setup
    held.approve(first, by="test")
    runner = CliRunner()
    report = json.loads(runner.invoke(app, ["status", "--json", "-c", str(config_file)]).stdout)
    assert report["review"] == {"replies": "hold", "held": 1, "approved_waiting": 1}
    screen = runner.invoke(app, ["status", "-c", str(config_file)]).stdout
    assert "1 held, 1 approved to send (replies: hold)" in screen


def test_an_approved_reply_whose_send_was_deferred_goes_out_at_the_next_poll(setup, config) -> None:
    """Regression (chaos suite, a 429 storm): a deferred send releases its claim, and the
    record, no longer `held`, refused the next claim: the approved reply was never sent."""
    platform, state, _service, held = setup
    item_id = hold(setup)
    Review(config, state).approve(item_id, by="test")
    mention = held.get(item_id).mention_tweet()
    limits = ReplyRules(state, config.replies).limits(mention)
    ledger = ReplyLedger(state, keep_days=60)
    assert ledger.claim(mention.id, "v", limits, held=True) is ReplyClaim.CLAIMED
    ledger.release(mention.id, limits)  # what a 429 on the POST does
    assert send(setup) == [ReplyOutcome.REPLIED]
    assert len(replies_to(platform, "100")) == 1
    assert held.get(item_id).state is HeldState.SENT
