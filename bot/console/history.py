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
    if needle.isascii():
        return _search_in_redis(state, cursor, needle, size)
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


# KEYS: the stream. ARGV: newest id to read ('+' or '(<id>'), the needle (lower-case ASCII),
# matches wanted, scan limit, chunk. Answers {matching ids, the last id read ('' when the
# oldest entry was read), entries read, 1 when the scan limit stopped it}.
_SEARCH = """
local needle, wanted = ARGV[2], tonumber(ARGV[3])
local limit, chunk = tonumber(ARGV[4]), tonumber(ARGV[5])
local found, scanned, position, last = {}, 0, ARGV[1], ''
while scanned < limit do
  local count = math.min(chunk, limit - scanned)
  local entries = redis.call('XREVRANGE', KEYS[1], position, '-', 'COUNT', count)
  for _, entry in ipairs(entries) do
    scanned = scanned + 1
    last = entry[1]
    local fields = entry[2]
    for i = 1, #fields, 2 do
      if fields[i] == 'text' and string.find(string.lower(fields[i + 1]), needle, 1, true) then
        found[#found + 1] = entry[1]
      end
    end
    if #found == wanted then return {found, last, scanned, 0} end
  end
  if #entries < count then return {found, '', scanned, 0} end
  position = '(' .. last
end
if #redis.call('XREVRANGE', KEYS[1], position, '-', 'COUNT', 1) == 0 then
  return {found, '', scanned, 0}
end
return {found, last, scanned, 1}
"""


def _search_in_redis(state: BotState, cursor: str | None, needle: str, size: int) -> HistoryPage:
    """The search for an ASCII needle, run in Redis: only the matching entries cross the
    wire, where the scan in Python parsed every entry read (60 ms for 2,000 of them).
    Redis lower-cases ASCII only, which is what an ASCII needle can match, bar the odd
    letter whose case-fold is ASCII (the long s, the Kelvin sign)."""
    newest = f"({cursor}" if cursor else "+"
    ids, last, scanned, capped = state.redis.eval(
        _SEARCH, 1, state.keys.posted, newest, needle, size, SEARCH_SCAN_LIMIT, SEARCH_CHUNK
    )
    pipe = state.redis.pipeline(transaction=False)
    for entry_id in ids:
        pipe.xrange(state.keys.posted, min=entry_id, max=entry_id)
    items = [_item(*entries[0]) for entries in pipe.execute() if entries]
    return HistoryPage(items, last or None, int(scanned), bool(capped))


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
