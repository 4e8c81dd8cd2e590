"""The CLI's commands: listed in --help, and each doing what it says."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import yaml
from typer.testing import CliRunner

from bot.cli import app

runner = CliRunner()


def test_help_lists_every_command() -> None:
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for command in ("run", "check-config", "mention", "generate", "rollback"):
        assert command in result.output


def test_mention_appends_to_the_local_mentions_file(write_config) -> None:
    config = write_config()
    result = runner.invoke(
        app, ["mention", "@parrotbot hello", "--author", "bob", "-c", str(config)]
    )
    assert result.exit_code == 0, result.output
    data_dir = Path(yaml.safe_load(config.read_text())["data_dir"])
    (line,) = (data_dir / "local" / "mentions.jsonl").read_text().splitlines()
    record = json.loads(line)
    assert record["author"] == "bob" and record["text"] == "@parrotbot hello"
    assert record["id"].isdigit()


def test_generate_prints_samples_from_the_latest_checkpoint(
    write_config, trained_checkpoints: Path
) -> None:
    config = write_config()
    data_dir = Path(yaml.safe_load(config.read_text())["data_dir"])
    result = runner.invoke(app, ["generate", "-c", str(config), "-n", "2"])
    assert result.exit_code == 1
    assert "LATEST missing" in result.stderr

    shutil.copytree(trained_checkpoints, data_dir / "checkpoints")
    result = runner.invoke(app, ["generate", "-c", str(config), "-n", "3", "--seed", "A "])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert len(lines) == 3 and all(line.startswith("A ") for line in lines)


def test_rollback_without_a_previous_version_exits_1(write_config) -> None:
    config = write_config()
    result = runner.invoke(app, ["rollback", "-c", str(config)])
    assert result.exit_code == 1
    assert "nothing to roll back" in result.stderr


def test_a_mention_without_the_handle_gets_it_so_the_bot_is_summoned(write_config) -> None:
    config = write_config()
    result = runner.invoke(app, ["mention", "what is wisdom?", "-c", str(config)])
    assert result.exit_code == 0, result.output
    data_dir = Path(yaml.safe_load(config.read_text())["data_dir"])
    (line,) = (data_dir / "local" / "mentions.jsonl").read_text().splitlines()
    assert json.loads(line)["text"] == "@parrotbot what is wisdom?"


def test_an_unreachable_redis_is_one_line_not_a_traceback(write_config) -> None:
    path = write_config(redis_url="redis://:hunter2-secret@127.0.0.1:1/0")
    result = subprocess.run(
        [sys.executable, "-m", "bot.cli", "status", "-c", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 3
    assert "cannot reach Redis" in result.stderr and "redis_url" in result.stderr
    assert "Traceback" not in result.stderr
    assert "hunter2-secret" not in result.stderr
