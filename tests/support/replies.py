"""A served model and the local platform, for tests of the reply path (bot/replies.py)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import redis

from bot.config import FilterConfig, GenerationConfig
from bot.generation import GenerationService
from bot.hotload import CheckpointWatcher
from bot.platform.local import LocalPlatform
from bot.state import BotState


def serving(
    tmp_path: Path, trained_checkpoints: Path, client: redis.Redis, account: str
) -> tuple[LocalPlatform, BotState, GenerationService]:
    """The local platform (handle parrotbot), the account's state, and a service serving the
    trained char-RNN (a worker process: close the service when done)."""
    shutil.copytree(trained_checkpoints, tmp_path / "checkpoints")
    state = BotState(client, account)
    service = GenerationService(GenerationConfig(max_length=60), FilterConfig())
    assert CheckpointWatcher(
        tmp_path / "checkpoints" / "char_rnn", "char_rnn", service, state
    ).check()
    platform = LocalPlatform(tmp_path / "local", handle="parrotbot")
    platform.prepare()
    return platform, state, service


def add_mention(
    platform: LocalPlatform, mention_id: str, author: str = "alice", text: str = "@parrotbot hi"
) -> None:
    with platform.mentions_path.open("a") as f:
        f.write(json.dumps({"id": mention_id, "author": author, "text": text}) + "\n")


def replies_to(platform: LocalPlatform, mention_id: str) -> list[dict]:
    """The replies to `mention_id` in the local outbox."""
    if not platform.outbox_path.exists():
        return []
    lines = platform.outbox_path.read_text().splitlines()
    return [t for t in map(json.loads, lines) if t.get("in_reply_to_tweet_id") == mention_id]
