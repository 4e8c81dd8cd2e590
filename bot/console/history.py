"""The posted history, a page at a time, newest first, from the stream the bot appends to.

The stream (`Keys.posted`, written by `BotState.record_posted`) holds up to 10,000 entries.
A page is one `XREVRANGE` from a cursor (the id of the last entry shown, exclusive), so the
cost of a page does not grow with the stream. A search has no index to use: it reads
backwards in chunks and stops at a full page or after `SEARCH_SCAN_LIMIT` entries, handing
back a cursor to go on from, so no request reads the whole stream.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from bot.state import BotState

PAGE_SIZE = 50
SEARCH_CHUNK = 500
# Most entries one search request reads; a search over more goes on from its cursor.
SEARCH_SCAN_LIMIT = 5_000


@dataclass(frozen=True)
class HistoryItem:
    entry_id: str  # the stream id: its first part is when it was written, in epoch millis
    kind: str  # "post" or "reply"
    text: str
    tweet_id: str
    model_version: str
    mention_id: str | None  # a reply's mention (`in_reply_to`), when the stream has it
    at: datetime


@dataclass(frozen=True)
class HistoryPage:
    items: list[HistoryItem]
    next_cursor: str | None  # pass back as `cursor` for the older entries; None: no more
    scanned: int  # entries read for this page (a search reads more than it shows)
    scan_capped: bool  # the search stopped at SEARCH_SCAN_LIMIT before filling the page


def read_page(
    state: BotState, *, cursor: str | None = None, query: str = "", size: int = PAGE_SIZE
) -> HistoryPage:
    """One page of the history older than `cursor`, optionally only texts holding `query`."""
    needle = query.strip().casefold()
    if not needle:
        entries = _read_back(state, cursor, size + 1)
        items = [_item(entry_id, fields) for entry_id, fields in entries[:size]]
        more = len(entries) > size
        return HistoryPage(items, items[-1].entry_id if more else None, len(items), False)
    found: list[HistoryItem] = []
    scanned = 0
    position = cursor
    while scanned < SEARCH_SCAN_LIMIT:
        wanted = min(SEARCH_CHUNK, SEARCH_SCAN_LIMIT - scanned)
        chunk = _read_back(state, position, wanted)
        for entry_id, fields in chunk:
            scanned += 1
            position = entry_id
            if needle in fields.get("text", "").casefold():
                found.append(_item(entry_id, fields))
                if len(found) == size:
                    return HistoryPage(found, position, scanned, False)
        if len(chunk) < wanted:  # the stream's oldest entry was read
            return HistoryPage(found, None, scanned, False)
    if not _read_back(state, position, 1):  # the limit fell on the oldest entry itself
        return HistoryPage(found, None, scanned, False)
    return HistoryPage(found, position, scanned, True)


def total(state: BotState) -> int:
    return int(state.redis.xlen(state.keys.posted))


def _read_back(state: BotState, cursor: str | None, count: int) -> list[tuple[str, dict]]:
    newest = f"({cursor}" if cursor else "+"  # "(" excludes the cursor's own entry
    return state.redis.xrevrange(state.keys.posted, max=newest, min="-", count=count)


def _item(entry_id: str, fields: dict[str, str]) -> HistoryItem:
    millis = int(entry_id.split("-", 1)[0])
    at = float(fields["at"]) if fields.get("at") else millis / 1000
    return HistoryItem(
        entry_id=entry_id,
        kind=fields.get("kind", "post"),
        text=fields.get("text", ""),
        tweet_id=fields.get("tweet_id", ""),
        model_version=fields.get("model_version", ""),
        mention_id=fields.get("in_reply_to") or None,
        at=datetime.fromtimestamp(at, UTC),
    )


def valid_cursor(cursor: str | None) -> str | None:
    """A stream id as `read_page` hands out (`<millis>-<seq>`), or None for anything else."""
    if not cursor:
        return None
    millis, _, sequence = cursor.partition("-")
    return cursor if millis.isdigit() and sequence.isdigit() else None
