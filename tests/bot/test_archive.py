"""`parrotbot import-archive`: X data exports, zipped or not, merged with scraped tweets."""

from __future__ import annotations

import json
import zipfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import redis
import yaml
from typer.testing import CliRunner

from bot.cli import app
from bot.scrape import scrape_target
from tests.support.configs import x_config_data
from training.dataset import dataset_path

runner = CliRunner()
FIRST_ID = 1_500_000_000_000_000_000


def archive_entry(tweet_id: int, text: str, *, reply_to: int | None = None) -> dict:
    """One element of tweets.js, with the fields a real export carries."""
    created = datetime(2020, 1, 1, tzinfo=UTC) + timedelta(minutes=tweet_id % 1_000_000)
    tweet = {
        "edit_info": {"initial": {"editTweetIds": [str(tweet_id)], "editable": "false"}},
        "retweeted": False,
        "source": '<a href="https://mobile.twitter.com" rel="nofollow">Twitter Web App</a>',
        "entities": {"hashtags": [], "symbols": [], "user_mentions": [], "urls": []},
        "display_text_range": ["0", str(len(text))],
        "favorite_count": "3",
        "id_str": str(tweet_id),
        "truncated": False,
        "retweet_count": "0",
        "id": str(tweet_id),
        "created_at": created.strftime("%a %b %d %H:%M:%S +0000 %Y"),
        "favorited": False,
        "full_text": text,
        "lang": "en",
    }
    if reply_to is not None:
        tweet["in_reply_to_status_id_str"] = str(reply_to)
    return {"tweet": tweet}


def tweets_js(entries: list[dict], part: int = 0) -> str:
    """Laid out as X lays it out: two-space indents and ' : ' separators."""
    body = json.dumps(entries, indent=2, separators=(",", " : "), ensure_ascii=False)
    return f"window.YTD.tweets.part{part} = {body}"


def generated(first: int, count: int) -> list[dict]:
    entries = []
    for n in range(count):
        tweet_id = FIRST_ID + first + n
        if n % 50 == 0:
            text = f"RT @someone: shared thing {n}"
        elif n % 7 == 0:
            entries.append(archive_entry(tweet_id, f"@friend reply {n} ✨", reply_to=FIRST_ID))
            continue
        else:
            text = f"archived thought {first + n} &amp; 家族 👨\u200d👩\u200d👧"
        entries.append(archive_entry(tweet_id, text))
    return entries


def import_archive(config: Path, path: Path, handle: str = "target"):
    args = ["import-archive", str(path), "--handle", handle, "--config", str(config)]
    return runner.invoke(app, args)


def dataset_ids(data_dir: Path) -> list[str]:
    lines = dataset_path(data_dir, "target").read_text().splitlines()
    return [json.loads(line)["id"] for line in lines]


@pytest.fixture
def x_config(tmp_path: Path, account: str, redis_url: str, emulator) -> Path:
    path = tmp_path / "bot.yaml"
    data = x_config_data(tmp_path / "volume", account, redis_url, emulator.url)
    path.write_text(yaml.safe_dump(data))
    return path


def test_archives_zipped_and_unpacked_merge_with_scraped_tweets_without_duplicates(
    tmp_path: Path, x_config: Path, emulator, x_platform_factory, redis_client: redis.Redis
) -> None:
    data_dir = tmp_path / "volume"
    # An unpacked export split in two parts (3,000 + 2,000 tweets)…
    unpacked = tmp_path / "export"
    (unpacked / "data").mkdir(parents=True)
    (unpacked / "data" / "tweets.js").write_text(tweets_js(generated(0, 3000)))
    (unpacked / "data" / "tweets-part1.js").write_text(tweets_js(generated(3000, 2000), part=1))
    result = import_archive(x_config, unpacked)
    assert result.exit_code == 0, result.output
    assert "imported 5000 new of 5000 tweets" in result.stdout
    assert len(dataset_ids(data_dir)) == 5000

    # …then a later, zipped export overlapping it by 1,000 and adding 1,500.
    zipped = tmp_path / "twitter-2026-03-01.zip"
    with zipfile.ZipFile(zipped, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("data/tweets.js", tweets_js(generated(4000, 2500)))
        archive.writestr("data/manifest.js", "window.__THAR_CONFIG = {}")
    result = import_archive(x_config, zipped)
    assert result.exit_code == 0, result.output
    assert "imported 1500 new of 2500 tweets" in result.stdout

    # The same account scraped on X: 300 tweets the archive already has, 40 it does not.
    target = emulator.add_user("target")
    for n in range(6200, 6540):
        emulator.add_post(target, f"archived thought {n}", post_id=str(FIRST_ID + n))
    platform = x_platform_factory(x={"exclude": []})
    assert scrape_target(platform, platform.state, data_dir, "target").new_tweets == 40

    ids = dataset_ids(data_dir)
    assert len(ids) == len(set(ids)) == 6540
    records = [json.loads(x) for x in dataset_path(data_dir, "target").read_text().splitlines()]
    first = records[1]
    assert first["text"] == "archived thought 1 &amp; 家族 👨\u200d👩\u200d👧"
    assert first["created_at"].endswith("Z") and first["lang"] == "en"
    assert records[0]["is_retweet"] and records[7]["is_reply"]
    assert int(redis_client.get(platform.state.keys.new_tweets_since_training)) == 6540


def _compact(entries: list[dict]) -> str:
    """One entry per line (line 2 holds entry 0), so the expected error lines are exact."""
    return "window.YTD.tweets.part0 = [\n" + ",\n".join(json.dumps(e) for e in entries) + "\n]"


def test_import_archive_is_a_listed_command() -> None:
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0 and "import-archive" in result.output


def test_malformed_archives_fail_clearly_and_write_nothing(tmp_path: Path, x_config: Path) -> None:
    data_dir = tmp_path / "volume"
    good = tmp_path / "good.js"
    good.write_text(_compact([archive_entry(FIRST_ID + i, f"fine {i}") for i in range(3)]))
    assert import_archive(x_config, good).exit_code == 0
    dataset = dataset_path(data_dir, "target")
    before = dataset.read_bytes()

    entries = [archive_entry(FIRST_ID + 100 + i, f"entry {i}") for i in range(10)]
    truncated = tmp_path / "truncated" / "data" / "tweets.js"
    truncated.parent.mkdir(parents=True)
    text = _compact(entries)
    truncated.write_text(text[: text.index('"entry 6"')])  # cut inside entry 6 (line 8)

    no_tweets = tmp_path / "likes-only.zip"
    with zipfile.ZipFile(no_tweets, "w") as archive:
        archive.writestr("data/like.js", "window.YTD.like.part0 = []")

    missing_text = tmp_path / "missing-text.js"
    broken = [*entries]
    del broken[4]["tweet"]["full_text"]
    missing_text.write_text(_compact(broken))

    wrong_prefix = tmp_path / "not-tweets.js"
    wrong_prefix.write_text("window.YTD.account.part0 = []")

    expected = {
        truncated.parent.parent: f"{truncated}: line 8, column ",
        no_tweets: f"{no_tweets}: no data/tweets.js inside",
        missing_text: f"{missing_text}: line 6: tweet {FIRST_ID + 104} has no 'full_text'",
        wrong_prefix: f"{wrong_prefix}: line 1, column 1: expected 'window.YTD.tweets.part0",
    }
    for path, message in expected.items():
        result = import_archive(x_config, path)
        assert result.exit_code == 1, result.output
        assert message in result.stderr, result.stderr
        assert "Traceback" not in result.output
        assert dataset.read_bytes() == before  # nothing half-written


def _imports_nothing(x_config: Path, tmp_path: Path) -> tuple[Path, bytes]:
    """A dataset with three tweets in it, to show that a refused archive leaves it alone."""
    good = tmp_path / "good.js"
    good.write_text(_compact([archive_entry(FIRST_ID + i, f"fine {i}") for i in range(3)]))
    assert import_archive(x_config, good).exit_code == 0
    dataset = dataset_path(tmp_path / "volume", "target")
    return dataset, dataset.read_bytes()


def _refused(x_config: Path, path: Path, message: str, *options: str) -> None:
    args = ["import-archive", str(path), "--handle", "target", "--config", str(x_config)]
    result = runner.invoke(app, [*args, *options])
    assert result.exit_code == 1, result.output
    assert f"cannot import: {message}" in result.stderr, result.stderr
    assert "Traceback" not in result.output


def _bomb(size: int) -> str:
    """A valid, empty tweets.js padded with spaces: `size` characters that deflate to ~0.1%."""
    head, tail = "window.YTD.tweets.part0 = [", "]"
    return head + " " * (size - len(head) - len(tail)) + tail


def test_zip_bomb_members_are_refused_by_their_declared_size(
    tmp_path: Path, x_config: Path
) -> None:
    dataset, before = _imports_nothing(x_config, tmp_path)
    bomb = tmp_path / "bomb.zip"
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("data/tweets.js", _bomb(3 * 1024 * 1024))
    assert bomb.stat().st_size < 20_000
    _refused(
        x_config,
        bomb,
        f"{bomb}:data/tweets.js: 3 MiB uncompressed, over the cap of 1 MiB per tweets file "
        "(--max-file-mib)",
        "--max-file-mib",
        "1",
    )
    # Parts each under the cap per file, over the cap in all.
    parts = tmp_path / "parts.zip"
    with zipfile.ZipFile(parts, "w", zipfile.ZIP_DEFLATED) as archive:
        for part in range(3):
            archive.writestr(f"data/tweets-part{part}.js", _bomb(1024 * 1024))
    _refused(
        x_config,
        parts,
        f"{parts}: its tweets files hold 3 MiB uncompressed, over the cap of 2 MiB in all "
        "(--max-total-mib)",
        "--max-file-mib",
        "1",
        "--max-total-mib",
        "2",
    )
    assert dataset.read_bytes() == before


def _under_declare(path: Path, size: int) -> None:
    """Rewrite the zip's only member to declare `size` bytes uncompressed, in both headers."""
    raw = bytearray(path.read_bytes())
    assert raw[:4] == b"PK\x03\x04"
    raw[22:26] = size.to_bytes(4, "little")  # the local header's uncompressed size
    central = raw.index(b"PK\x01\x02")
    raw[central + 24 : central + 28] = size.to_bytes(4, "little")
    path.write_bytes(bytes(raw))


def test_a_member_that_holds_more_than_its_header_says_is_refused(
    tmp_path: Path, x_config: Path
) -> None:
    dataset, before = _imports_nothing(x_config, tmp_path)
    liar = tmp_path / "liar.zip"
    with zipfile.ZipFile(liar, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("data/tweets.js", _bomb(3 * 1024 * 1024))
    _under_declare(liar, 1000)
    assert zipfile.ZipFile(liar).getinfo("data/tweets.js").file_size == 1000
    # zipfile stops at the declared size; the member's CRC then gives the lie away.
    _refused(
        x_config,
        liar,
        f"{liar}:data/tweets.js: damaged, or its data does not match its header (Bad CRC-32",
        "--max-file-mib",
        "1",
    )
    assert dataset.read_bytes() == before


def test_a_file_that_never_ends_is_read_only_up_to_the_cap(tmp_path: Path, x_config: Path) -> None:
    """/dev/zero says it is empty and never ends: the bytes read are counted, not its size."""
    dataset, before = _imports_nothing(x_config, tmp_path)
    endless = Path("/dev/zero")
    _refused(
        x_config,
        endless,
        f"{endless}: declared 0 bytes but holds more than the cap of 1 MiB per tweets file",
        "--max-file-mib",
        "1",
    )
    assert dataset.read_bytes() == before


def test_errors_name_the_right_line_deep_in_big_and_split_archives(tmp_path: Path) -> None:
    from bot.archive import ArchiveError, read_archive

    entries = generated(0, 3000)
    entries[2500]["tweet"]["created_at"] = "yesterday"
    broken = tweets_js(entries, part=1)
    zipped = tmp_path / "split.zip"
    with zipfile.ZipFile(zipped, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("data/tweets.js", tweets_js(generated(5000, 2000)))
        archive.writestr("data/tweets-part1.js", broken)
    with pytest.raises(ArchiveError) as error:
        read_archive(zipped)
    # The entry's line: the one with its opening brace, two spaces in, as X lays it out.
    opening = broken.rfind('\n  {\n    "tweet"', 0, broken.index('"yesterday"')) + 1
    expected = broken.count("\n", 0, opening) + 1
    assert expected > 2500 * 20
    assert str(error.value).startswith(
        f"{zipped}:data/tweets-part1.js: line {expected}: tweet {FIRST_ID + 2500} has an "
        "unreadable 'created_at' 'yesterday'"
    )

    cut = tmp_path / "data" / "tweets.js"
    cut.parent.mkdir()
    text = _compact(generated(0, 3000))
    cut.write_text(text.replace(f'"id_str": "{FIRST_ID + 2900}"', f'"id_str" "{FIRST_ID + 2900}"'))
    with pytest.raises(ArchiveError, match=rf"{cut}: line 2902, column \d+: invalid JSON"):
        read_archive(tmp_path)


class _TallyingText(str):
    """A text that adds up the characters its searches (count, find, rfind, …) go over."""

    scanned = 0

    def _tally(self, start: int | None, end: int | None) -> None:
        start, end, _ = slice(start, end).indices(len(self))
        self.scanned += max(0, end - start)

    def count(self, sub, start=None, end=None):  # type: ignore[no-untyped-def, override]
        self._tally(start, end)
        return super().count(sub, start, end)

    def find(self, sub, start=None, end=None):  # type: ignore[no-untyped-def, override]
        self._tally(start, end)
        return super().find(sub, start, end)

    def rfind(self, sub, start=None, end=None):  # type: ignore[no-untyped-def, override]
        self._tally(start, end)
        return super().rfind(sub, start, end)

    def index(self, sub, start=None, end=None):  # type: ignore[no-untyped-def, override]
        self._tally(start, end)
        return super().index(sub, start, end)


def test_counting_lines_goes_over_the_text_once_not_once_per_entry() -> None:
    """Linear, shown without a clock: searching from the start per entry went over n²/2 entries.

    (Speed itself is measured by tests/benchmarks/archive_import.py.)
    """
    from bot.archive import parse_part

    text = _TallyingText(tweets_js(generated(0, 2000)))
    assert len(parse_part("tweets.js", text)) == 2000
    assert text.scanned <= len(text)
