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
from bot.datasets import dataset_path
from bot.scrape import scrape_target
from tests.conftest import x_config_data

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
