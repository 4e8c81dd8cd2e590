"""The offline platform's files behave like X: ordered ids, since_id, whole lines only."""

from __future__ import annotations

import json
from pathlib import Path

from bot.platform.local import LocalPlatform, user_id_for


def make(tmp_path: Path) -> LocalPlatform:
    seeds = tmp_path / "seeds"
    seeds.mkdir()
    lines = [{"id": str(10 + i), "text": f"tweet {i}", "created_at": "2024-01-01T00:00:00Z"}
             for i in range(5)]  # fmt: skip
    (seeds / "someone.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    platform = LocalPlatform(tmp_path / "local", handle="parrotbot", seed_timelines_dir=seeds)
    platform.prepare()
    return platform


def test_timeline_since_id_is_numeric_and_oldest_first(tmp_path: Path) -> None:
    platform = make(tmp_path)
    user = platform.lookup_user("someone")
    assert [t.id for t in platform.timeline(user, None)] == ["10", "11", "12", "13", "14"]
    assert [t.id for t in platform.timeline(user, "12")] == ["13", "14"]
    assert platform.timeline(user, "9") and platform.timeline(user, "14") == []


def test_mentions_skip_bad_and_unfinished_lines(tmp_path: Path) -> None:
    platform = make(tmp_path)
    platform.mentions_path.write_text(
        '{"id": "100", "author": "alice", "text": "@parrotbot hi"}\n'
        "not json\n"
        '{"text": "no id"}\n'
        '{"id": "99", "author": "bob", "text": "@parrotbot older"}\n'
        '{"id": "101", "author": "carol", "text": "half writ'  # still being appended
    )
    mentions = platform.mentions(None)
    assert [(m.id, m.author_handle) for m in mentions] == [("99", "bob"), ("100", "alice")]
    assert mentions[0].author_id == user_id_for("bob")


def test_posts_and_replies_land_in_the_outbox_with_rising_ids(tmp_path: Path) -> None:
    platform = make(tmp_path)
    platform.mentions_path.write_text('{"id": "100", "author": "alice", "text": "hey"}\n')
    (mention,) = platform.mentions(None)
    first = platform.post("hello world")
    reply = platform.reply(mention, "hello alice")
    assert int(reply.id) > int(first.id)
    records = [json.loads(line) for line in platform.outbox_path.read_text().splitlines()]
    assert [r["text"] for r in records] == ["hello world", "hello alice"]
    assert records[1]["in_reply_to_tweet_id"] == "100"
    assert platform.find_reply("100").id == reply.id
    assert platform.find_reply("555") is None
