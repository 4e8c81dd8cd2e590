"""Reading the official X data export: `data/tweets.js` (`window.YTD.tweets.part0 = [...]`).

X's API is pay-per-use and serves only a timeline's latest 3,200 posts, so the archive a user
downloads from their settings is how most bots get a full history. It comes zipped or
unpacked, and large histories are split into `tweets-part1.js`, `tweets-part2.js`, …
(older exports say `tweet.js` and `window.YTD.tweet.part0`). All of them are read.

The whole archive is parsed before anything is written: a malformed one raises
`ArchiveError` naming the file and the line and column (or the entry) at fault, and the
dataset stays as it was.

The work is linear in the archive's size (line numbers are counted as the parse moves on, each
newline once) and bounded by `Limits`: a tweets file bigger than `file_bytes` once
decompressed, or tweets files bigger than `total_bytes` together, are refused before they fill
the memory. A zip member's declared size is checked before it is read, and the bytes actually
decompressed are counted as they come, in chunks, since a header can lie.
"""

from __future__ import annotations

import json
import re
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

_PART_FILE = re.compile(r"(?:^|/)data/tweets?(?:-part\d+)?\.js$")
_PREFIX = re.compile(r"\s*window\.YTD\.tweets?\.part\d+\s*=\s*")
_SPACE = re.compile(r"[ \t\r\n]*")
_ARCHIVE_TIME = "%a %b %d %H:%M:%S %z %Y"  # "Wed Oct 10 20:19:24 +0000 2018"

MIB = 1024 * 1024
# X's tweets.js runs to about 1-3 KB per tweet (entities, media, edit_info, pretty-printed), so
# a 300,000-tweet account is about 300-900 MB, and big histories come split into parts. 1 GiB a
# file takes the biggest accounts whole; the parse holds one file at a time, at up to 5 times
# its size (its bytes, then its text: 4 bytes a character once it holds one emoji).
DEFAULT_MAX_FILE_MIB = 1024
# All the parts together: only their records (a few hundred bytes a tweet) stay in memory.
DEFAULT_MAX_TOTAL_MIB = 4096
_CHUNK = 4 * MIB
# X's exports are deflated. bzip2 and lzma decompress a whole read at once in zipfile, with no
# bound on the output, so a small member could fill the memory before a cap is checked.
_ZIP_METHODS = frozenset({zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED})


class ArchiveError(Exception):
    """The archive cannot be imported; the message names the file and the position."""


@dataclass(frozen=True)
class Limits:
    """The most decompressed bytes read: per tweets file (zip member or file), and in all."""

    file_bytes: int = DEFAULT_MAX_FILE_MIB * MIB
    total_bytes: int = DEFAULT_MAX_TOTAL_MIB * MIB


class _Budget:
    """Counts the decompressed bytes read against `Limits`, so that no reader overruns them."""

    def __init__(self, limits: Limits, archive: Path) -> None:
        self.limits = limits
        self.archive = archive
        self.total = 0

    def admit(self, name: str, declared: int) -> None:
        """Refuse a file by its declared size, before reading any of it."""
        if declared > self.limits.file_bytes:
            raise ArchiveError(
                f"{name}: {_size(declared)} uncompressed, over the cap of "
                f"{_size(self.limits.file_bytes)} per tweets file (--max-file-mib)"
            )

    def admit_all(self, declared: int) -> None:
        """Refuse the archive by its files' declared sizes together."""
        if declared > self.limits.total_bytes:
            raise ArchiveError(
                f"{self.archive}: its tweets files hold {_size(declared)} uncompressed, over "
                f"the cap of {_size(self.limits.total_bytes)} in all (--max-total-mib)"
            )

    def read(self, name: str, stream: IO[bytes], declared: int) -> bytearray:
        """The stream's bytes, read in chunks and stopped as soon as a cap is passed."""
        data = bytearray()
        # One byte past the cap is enough to know it is passed.
        while chunk := stream.read(min(_CHUNK, self.limits.file_bytes + 1 - len(data))):
            data += chunk
            self.total += len(chunk)
            if len(data) > self.limits.file_bytes:
                raise ArchiveError(
                    f"{name}: declared {_size(declared)} but holds more than the cap of "
                    f"{_size(self.limits.file_bytes)} per tweets file (--max-file-mib)"
                )
            if self.total > self.limits.total_bytes:
                raise ArchiveError(
                    f"{name}: the tweets files hold more than the cap of "
                    f"{_size(self.limits.total_bytes)} in all (--max-total-mib)"
                )
        return data


def _size(count: int) -> str:
    if count and count % MIB == 0:
        return f"{count // MIB:,} MiB"
    return f"{count:,} bytes"


def read_archive(path: Path, limits: Limits | None = None) -> list[dict[str, Any]]:
    """Every tweet in the archive at `path` (a .zip, an unpacked folder, or a tweets.js)."""
    records: list[dict[str, Any]] = []
    for name, text in _part_files(path, _Budget(limits or Limits(), path)):
        records += parse_part(name, text)
    return records


def _part_files(path: Path, budget: _Budget) -> Iterator[tuple[str, str]]:
    """Each tweets file's name and text, one at a time (only one is held in memory)."""
    if not path.exists():
        raise ArchiveError(f"{path}: no such file or folder")
    if path.is_dir():
        found = sorted(p for p in path.rglob("*.js") if _PART_FILE.search(p.as_posix()))
        if not found:
            raise ArchiveError(f"{path}: no data/tweets.js in this folder (is it an X archive?)")
        yield from _disk_files(found, budget)
        return
    if _starts_like_a_zip(path):
        yield from _zip_members(path, budget)
        return
    yield from _disk_files([path], budget)


def _starts_like_a_zip(path: Path) -> bool:
    """A zip's first local header; not `zipfile.is_zipfile`, which reads a file's tail whole
    (all of `/dev/zero`, say) looking for the directory."""
    with path.open("rb") as stream:
        return stream.read(4) in (b"PK\x03\x04", b"PK\x05\x06")


def _disk_files(paths: list[Path], budget: _Budget) -> Iterator[tuple[str, str]]:
    sizes = [part.stat().st_size for part in paths]
    for part, size in zip(paths, sizes, strict=True):
        budget.admit(str(part), size)
    budget.admit_all(sum(sizes))
    for part, size in zip(paths, sizes, strict=True):
        with part.open("rb") as stream:  # read capped too: the file may grow meanwhile
            yield str(part), _decode(str(part), budget.read(str(part), stream, size))


def _zip_members(path: Path, budget: _Budget) -> Iterator[tuple[str, str]]:
    try:
        with zipfile.ZipFile(path) as archive:
            members = sorted(
                (info for info in archive.infolist() if _PART_FILE.search(info.filename)),
                key=lambda info: info.filename,
            )
            if not members:
                raise ArchiveError(f"{path}: no data/tweets.js inside (is it an X archive?)")
            for info in members:
                _admit_member(f"{path}:{info.filename}", info, budget)
            budget.admit_all(sum(info.file_size for info in members))
            for info in members:
                yield _read_member(path, archive, info, budget)
    except zipfile.BadZipFile as exc:
        raise ArchiveError(f"{path}: not a readable zip ({exc})") from None


def _admit_member(name: str, info: zipfile.ZipInfo, budget: _Budget) -> None:
    if info.compress_type not in _ZIP_METHODS:
        raise ArchiveError(
            f"{name}: compressed with method {info.compress_type}; only stored or deflated "
            "members are read (X's exports are deflated)"
        )
    budget.admit(name, info.file_size)


def _read_member(
    path: Path, archive: zipfile.ZipFile, info: zipfile.ZipInfo, budget: _Budget
) -> tuple[str, str]:
    name = f"{path}:{info.filename}"
    try:
        with archive.open(info) as stream:
            raw = budget.read(name, stream, info.file_size)
    except (zipfile.BadZipFile, zlib.error, EOFError) as exc:
        # zipfile stops at the declared size, so a member that holds more than its header
        # says ends here, on its CRC.
        raise ArchiveError(
            f"{name}: damaged, or its data does not match its header ({exc})"
        ) from None
    except RuntimeError as exc:  # an encrypted member
        raise ArchiveError(f"{name}: cannot be read ({exc})") from None
    return name, _decode(name, raw)


def _decode(name: str, raw: bytes | bytearray) -> str:
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


class _Lines:
    """Line numbers of increasing positions in a text, each newline counted once.

    Counting from the start of the file for every entry made an import quadratic: 4,000
    tweets took 6 s, 50,000 would take twenty minutes.
    """

    def __init__(self, text: str) -> None:
        self._text = text
        self._position = 0
        self._line = 1

    def at(self, position: int) -> int:
        if position < self._position:
            raise ValueError("positions must not go back")
        self._line += self._text.count("\n", self._position, position)
        self._position = position
        return self._line


def _entries(name: str, text: str, start: int) -> Iterator[tuple[int, Any]]:
    """The array's elements with the line each starts on, read one by one so errors have a place."""
    decoder = json.JSONDecoder()
    lines = _Lines(text)
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
        yield lines.at(position), entry
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
    match = _SPACE.match(text, position)
    return match.end() if match else position


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
