"""The generation service: sampling settings from config, and replies that read the mention."""

from __future__ import annotations

import dataclasses
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
import redis
import yaml
from typer.testing import CliRunner

from bot.cli import app
from bot.config import ConfigError, FilterConfig, GenerationConfig, load_config
from bot.generation import GenerationService, mention_prompt
from bot.hotload import CheckpointWatcher
from bot.platform.base import Tweet
from bot.state import BotState

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")


class Reading:
    """The real model, with a note of what each `generate` call was given to read."""

    def __init__(self, model: Any) -> None:
        self.model = model
        self.kind = model.kind
        self.calls: list[dict[str, Any]] = []

    def generate(self, seeds: Sequence[str], **kwargs: Any) -> list[str]:
        self.calls.append(kwargs)
        return self.model.generate(seeds, **kwargs)


@pytest.fixture
def service(
    tmp_path: Path, trained_checkpoints: Path, redis_client: redis.Redis, account: str
) -> GenerationService:
    shutil.copytree(trained_checkpoints, tmp_path / "checkpoints")
    settings = GenerationConfig(max_length=60, top_k=20, top_p=0.9, repetition_penalty=1.1)
    service = GenerationService(settings, FilterConfig())
    state = BotState(redis_client, account)
    assert CheckpointWatcher(
        tmp_path / "checkpoints" / "char_rnn", "char_rnn", service, state
    ).check()
    loaded = service.current
    service.swap(dataclasses.replace(loaded, model=Reading(loaded.model)))
    return service


def tweet(text: str) -> Tweet:
    return Tweet(id="1", text=text, author_id="9", author_handle="alice", created_at="")


def test_a_mention_prompt_drops_the_addressing_handles() -> None:
    assert mention_prompt("@parrotbot @alice_b what of  thrift?", "parrotbot") == "what of thrift?"
    assert mention_prompt("so @ParrotBot, money?", "parrotbot") == "so , money?"
    assert mention_prompt("ask @bob about it", "parrotbot") == "ask @bob about it"
    assert mention_prompt("@parrotbot", "parrotbot") == ""
    assert mention_prompt("@parrotbotx hi", "parrotbot") == "hi"  # a leading handle anyway


def test_a_reply_reads_the_mention_without_handles(service: GenerationService) -> None:
    mention = tweet("@parrotbot @alice a penny saved is what?")
    generated, batch = service.generate_reply(mention, handle="parrotbot")
    (call,) = service.current.model.calls
    assert call["context"] == "a penny saved is what?"
    assert call | {"context": None} == {"context": None, **service.settings.sampling()}
    assert batch is not None and generated is not None
    for text in batch.accepted:
        assert "a penny saved is what?" not in text and "@" not in text


def test_posts_read_no_context(service: GenerationService) -> None:
    service.generate_post()
    (call,) = service.current.model.calls
    assert call["context"] is None


def test_bad_sampling_settings_are_config_errors_naming_the_field(
    write_config, tmp_path: Path
) -> None:
    path = write_config(generation={"top_k": -1, "top_p": 0, "repetition_penalty": 0.5})
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    problems = "\n".join(caught.value.problems)
    for field in ("generation.top_k", "generation.top_p", "generation.repetition_penalty"):
        assert field in problems, problems
    assert load_config(write_config(generation={"top_k": 1})).generation.top_k == 1


def test_generate_command_takes_sampling_options(write_config, trained_checkpoints: Path) -> None:
    config = write_config()
    data_dir = Path(yaml.safe_load(config.read_text())["data_dir"])
    shutil.copytree(trained_checkpoints, data_dir / "checkpoints")
    runner = CliRunner()
    base = ["generate", "-c", str(config), "-n", "3", "--seed", "A"]
    greedy = runner.invoke(app, [*base, "--top-k", "1", "--context", "@parrotbot what of time?"])
    assert greedy.exit_code == 0, greedy.output
    lines = greedy.stdout.splitlines()
    assert len(lines) == 3 and len(set(lines)) == 1 and lines[0].startswith("A")
    bad = runner.invoke(app, [*base, "--top-p", "1.5"])
    assert bad.exit_code == 2 and "--top-p" in bad.stderr
