"""The operator of a chaos run: decides every held reply while the daemons are being killed.

The suite's daemons hold every reply (`review.replies: hold`); this thread approves each one
it finds through `bot.review.Review`, what `parrotbot review` and the console call, and at
once approves it a second time, as a second tab would. Every `EDIT_EVERY`-th item is approved
with an edited text, and the accounting checks that X then holds exactly that text. What it
counts feeds the suite's must-be-zero table: a second approval that was accepted, and an
edited reply that went out with other words.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

import redis
import structlog

from bot.config import BotConfig
from bot.review import Review, ReviewRefused
from bot.state import BotState

log = structlog.get_logger(__name__)

EDIT_EVERY = 4
POLL_SECONDS = 0.3


def edit_for(mention_id: str) -> str:
    """The operator's words for an edited reply: unique per mention, so X's copy is checkable."""
    return f"Edited by the operator for mention {mention_id[-6:]}, as approved."


@dataclass
class Operator:
    config: BotConfig
    client: redis.Redis
    stop: threading.Event = field(default_factory=threading.Event)
    approved: dict[str, str] = field(default_factory=dict)  # mention id -> the text approved
    edited: dict[str, str] = field(default_factory=dict)  # mention id -> the edit
    second_approvals_accepted: int = 0
    redis_errors: int = 0

    def start(self) -> None:
        threading.Thread(target=self._run, name="operator", daemon=True).start()

    def _run(self) -> None:
        review = Review(self.config, BotState(self.client, self.config.account))
        while not self.stop.wait(POLL_SECONDS):
            try:
                for item in review.held():
                    self._decide(review, item.id, item.mention_id, item.text)
            except redis.RedisError:  # a Redis restart fault: decide at the next poll
                self.redis_errors += 1

    def _decide(self, review: Review, item_id: str, mention_id: str, text: str) -> None:
        edit = edit_for(mention_id) if len(self.approved) % EDIT_EVERY == 0 else None
        try:
            review.approve(item_id, text=edit, by="chaos operator")
        except ReviewRefused as exc:
            log.warning("chaos.approval_refused", item=item_id, error=str(exc))
            return
        self.approved[mention_id] = edit or text
        if edit is not None:
            self.edited[mention_id] = edit
        try:
            review.approve(item_id, by="chaos operator, second tab")
        except ReviewRefused:
            return  # as it must be
        self.second_approvals_accepted += 1
        log.error("chaos.second_approval_accepted", item=item_id)
