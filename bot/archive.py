"""Reading the official X data export: `data/tweets.js` (`window.YTD.tweets.part0 = [...]`).

X's API is pay-per-use and serves only a timeline's latest 3,200 posts, so the archive a user
downloads from their settings is how most bots get a full history. It comes zipped or
unpacked, and large histories are split into `tweets-part1.js`, `tweets-part2.js`, …
(older exports say `tweet.js` and `window.YTD.tweet.part0`). All of them are read.

The whole archive is parsed before anything is written: a malformed one raises
`ArchiveError` naming the file and the line and column (or the entry) at fault, and the
dataset stays as it was.
"""

from __future__ import annotations

import json
import re
import zipfile
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

_PART_FILE = re.compile(r"(?:^|/)data/tweets?(?:-part\d+)?\.js$")
_PREFIX = re.compile(r"\s*window\.YTD\.tweets?\.part\d+\s*=\s*")
_ARCHIVE_TIME = "%a %b %d %H:%M:%S %z %Y"  # "Wed Oct 10 20:19:24 +0000 2018"


class ArchiveError(Exception):
    """The archive cannot be imported; the message names the file and the position."""


def read_archive(path: Path) -> list[dict[str, Any]]:
    """Every tweet in the archive at `path` (a .zip, an unpacked folder, or a tweets.js)."""
    records: list[dict[str, Any]] = []
    for name, text in _part_files(path):
        records += parse_part(name, text)
    return records


def _part_files(path: Path) -> Iterator[tuple[str, str]]:
    if not path.exists():
        raise ArchiveError(f"{path}: no such file or folder")
    if path.is_dir():
        found = sorted(p for p in path.rglob("*.js") if _PART_FILE.search(p.as_posix()))
        if not found:
            raise ArchiveError(f"{path}: no data/tweets.js in this folder (is it an X archive?)")
        for part in found:
            yield str(part), _decode(str(part), part.read_bytes())
        return
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            names = sorted(n for n in archive.namelist() if _PART_FILE.search(n))
            if not names:
                raise ArchiveError(f"{path}: no data/tweets.js inside (is it an X archive?)")
            for name in names:
                yield f"{path}:{name}", _decode(f"{path}:{name}", archive.read(name))
        return
    yield str(path), _decode(str(path), path.read_bytes())


def _decode(name: str, raw: bytes) -> str:
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise ArchiveError(f"{name}: line {line}: not UTF-8 ({exc.reason})") from None


def parse_part(name: str, text: str) -> list[dict[str, Any]]:
    """The tweets of one `tweets.js` file, as dataset records."""
    prefix = _PREFIX.match(text)
    if prefix is None:
        raise ArchiveError(
            f"{name}: line 1, column 1: expected 'window.YTD.tweets.part0 = [' at the start "
            "(is this an X archive's data/tweets.js?)"
        )
    return [_record(name, line, entry) for line, entry in _entries(name, text, prefix.end())]


def _entries(name: str, text: str, start: int) -> Iterator[tuple[int, Any]]:
    """The array's elements with the line each starts on, read one by one so errors have a place."""
    decoder = json.JSONDecoder()
    position = _skip_space(text, start)
    if text[position : position + 1] != "[":
        raise _syntax(name, text, position, "expected '['")
    position = _skip_space(text, position + 1)
    if text[position : position + 1] == "]":
        return
    while True:
        try:
            entry, end = decoder.raw_decode(text, position)
        except json.JSONDecodeError as exc:
            raise _syntax(name, text, exc.pos, f"invalid JSON ({exc.msg})") from None
        yield text.count("\n", 0, position) + 1, entry
        position = _skip_space(text, end)
        separator = text[position : position + 1]
        if separator == "]":
            break
        if separator != ",":
            found = repr(separator) if separator else "the end of the file"
            raise _syntax(name, text, position, f"expected ',' or ']' but found {found}")
        position = _skip_space(text, position + 1)
    rest = text[position + 1 :].strip()
    if rest not in ("", ";"):
        raise _syntax(name, text, position + 1, "unexpected text after the array")


def _skip_space(text: str, position: int) -> int:
    while position < len(text) and text[position] in " \t\r\n":
        position += 1
    return position


def _syntax(name: str, text: str, position: int, message: str) -> ArchiveError:
    line = text.count("\n", 0, position) + 1
    column = position - (text.rfind("\n", 0, position) + 1) + 1
    return ArchiveError(f"{name}: line {line}, column {column}: {message}")


def _record(name: str, line: int, entry: Any) -> dict[str, Any]:
    where = f"{name}: line {line}"
    tweet = entry.get("tweet", entry) if isinstance(entry, dict) else None
    if not isinstance(tweet, dict):
        raise ArchiveError(f'{where}: expected an object like {{"tweet": {{...}}}}')
    tweet_id = str(tweet.get("id_str") or tweet.get("id") or "")
    if not tweet_id.isdigit():
        raise ArchiveError(f"{where}: tweet has no numeric 'id_str' (got {tweet_id!r})")
    text = tweet.get("full_text", tweet.get("text"))
    if not isinstance(text, str):
        raise ArchiveError(f"{where}: tweet {tweet_id} has no 'full_text' string")
    created = tweet.get("created_at")
    try:
        created_at = (
            datetime.strptime(created, _ARCHIVE_TIME)
            .astimezone(UTC)
            .strftime("%Y-%m-%dT%H:%M:%S.000Z")
            if created
            else None
        )
    except (TypeError, ValueError):
        raise ArchiveError(
            f"{where}: tweet {tweet_id} has an unreadable 'created_at' {created!r} "
            "(expected like 'Wed Oct 10 20:19:24 +0000 2018')"
        ) from None
    return {
        "id": tweet_id,
        "text": text,
        "created_at": created_at,
        "is_reply": bool(tweet.get("in_reply_to_status_id_str")),
        "is_quote": bool(tweet.get("is_quote_status") or tweet.get("quoted_status_id_str")),
        "is_retweet": text.startswith("RT @") or bool(tweet.get("retweeted_status")),
        "lang": tweet.get("lang"),
    }
