"""The operator's review actions: what `parrotbot review` and the console both call.

The records and their state changes are the ledger's (`bot.ledger.held`); this module adds
what an operator's action needs around them: a clear refusal (an unknown id, an item decided
already, an edit the filters would not let out) and the export of decisions. Approving only
moves the item to `approved`: the daemon holding the lease sends it at its next mentions poll,
through the reply's exactly-once path, so neither the CLI nor the console needs X credentials,
and an approval from any host (or two at once) posts once.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import TextIO

from bot.config import BotConfig
from bot.filters import CandidateFilter, NoveltyIndex, novelty_corpus
from bot.ledger.held import HeldItem, HeldLedger, HeldState
from bot.state import BotState


class ReviewRefused(Exception):
    """An action that changed nothing; the message says why."""


class Review:
    def __init__(self, config: BotConfig, state: BotState) -> None:
        self.config = config
        self.state = state
        self.ledger = HeldLedger(
            state, keep_days=config.review.keep_days, reply_keep_days=config.replies.keep_days
        )
        self._filter: CandidateFilter | None = None

    def held(self, offset: int = 0, count: int = -1) -> list[HeldItem]:
        """What waits for a decision, oldest first."""
        return self.ledger.held(offset, count)

    def item(self, item_id: str) -> HeldItem:
        found = self.ledger.get(item_id)
        if found is None:
            raise ReviewRefused(f"no review item {item_id!r} (expired, or never held)")
        return found

    def approve(self, item_id: str, *, text: str | None = None, by: str) -> HeldItem:
        """Approve a held item as it is, or with `text` in place of the model's words.

        An edit passes the filters a generated text passes (X's weighted length, no @handles
        or URLs unless allowed, the blocklist, no copy of a training tweet, no repeat of the
        bot's recent posts); a refusal names the check.
        """
        item = self.item(item_id)
        self._decided(item_id, item.state)  # decided already: say so, whatever the edit
        edit = None if text is None else " ".join(text.split())
        if edit is not None and edit != item.text:
            self._check_edit(edit)
        self._decided(item_id, self.ledger.approve(item_id, text=edit, by=by))
        return self.item(item_id)

    def reject(self, item_id: str, *, reason: str = "", by: str) -> HeldItem:
        """Reject a held item: its mention stays unanswered (recorded `declined`)."""
        self.item(item_id)
        self._decided(item_id, self.ledger.reject(item_id, reason=reason, by=by))
        return self.item(item_id)

    def export(self, out: TextIO) -> int:
        """Every decision still kept, as JSON lines, oldest first; how many were written."""
        return write_jsonl(self.ledger.decided(), out)

    def _decided(self, item_id: str, previous: str) -> None:
        if previous != HeldState.HELD:
            raise ReviewRefused(f"{item_id} is {previous or 'gone'}, not held: nothing changed")

    def _check_edit(self, text: str) -> None:
        verdict = self._edit_filter().check(
            text, recent=self.state.recent_texts(self.config.filters.recent_posts_checked)
        )
        if not verdict.accepted:
            detail = f": {verdict.detail}" if verdict.detail else ""
            raise ReviewRefused(f"the edit fails the {verdict.reason} check{detail}")

    def _edit_filter(self) -> CandidateFilter:
        """The daemon's filters, novelty index included (built once per Review)."""
        if self._filter is None:
            filters = self.config.filters
            novelty = NoveltyIndex(novelty_corpus(self.config), filters.novelty_ngram_words)
            self._filter = CandidateFilter(filters, novelty)
        return self._filter


def write_jsonl(items: Iterable[HeldItem], out: TextIO) -> int:
    written = 0
    for item in items:
        out.write(json.dumps(item.as_json(), ensure_ascii=False) + "\n")
        written += 1
    return written
