"""`parrotbot`: the operator's command line (the only module that prints)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from bot.config import BotConfig, ConfigError, load_config

app = typer.Typer(
    help="parrotbot: a bot for X that learns to write like its targets.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

ConfigOption = Annotated[
    Path, typer.Option("--config", "-c", help="The bot's YAML config.", show_default=True)
]
DEFAULT_CONFIG = Path("config/offline.yaml")

EXIT_BAD_CONFIG = 2


@app.callback()
def _main(
    log_level: Annotated[
        str, typer.Option(help="Log level for commands other than run (run uses the config's).")
    ] = "WARNING",
) -> None:
    """Logs go to stderr in every command, so stdout carries only the command's output."""
    from bot.logging import configure_logging

    configure_logging(log_level)


def _load_or_exit(path: Path) -> BotConfig:
    try:
        return load_config(path)
    except ConfigError as exc:
        for problem in exc.problems:
            typer.echo(problem, err=True)
        raise typer.Exit(EXIT_BAD_CONFIG) from None


@app.command()
def run(config: ConfigOption = DEFAULT_CONFIG) -> None:
    """Run the daemon: scrape, train, hot-load, post and reply until stopped."""
    from bot.daemon import Daemon
    from bot.logging import configure_logging

    settings = _load_or_exit(config)
    configure_logging(settings.logging.level)
    daemon = Daemon(settings, config.resolve())
    code = daemon.run()
    if daemon.abandoned_jobs:
        # A job thread is still inside a long call; everything it does is crash-safe, so
        # exit now rather than overrun the stop deadline waiting for it.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    raise typer.Exit(code)


@app.command("check-config")
def check_config(path: Annotated[Path, typer.Argument(help="Config file to validate.")]) -> None:
    """Validate a config file: exit 0 if usable, 2 with one line per problem if not."""
    settings = _load_or_exit(path)
    typer.echo(f"{path}: ok (account {settings.account}, {len(settings.targets)} target(s))")


@app.command()
def mention(
    text: Annotated[str, typer.Argument(help="What the mention says.")],
    author: Annotated[str, typer.Option(help="Handle of the mentioning user.")] = "friend",
    config: ConfigOption = DEFAULT_CONFIG,
) -> None:
    """Append a mention to the local platform's mentions file (offline testing)."""
    from bot.platform.local import append_line, new_tweet_id, now_iso

    settings = _load_or_exit(config)
    if settings.platform.kind != "local":
        typer.echo("mention only works with platform.kind: local", err=True)
        raise typer.Exit(1)
    handle = settings.platform.handle
    if f"@{handle}".lower() not in text.lower():
        text = f"@{handle} {text}"  # a mention names the bot, or the bot does not answer it
    record = {"id": new_tweet_id(), "author": author, "text": text, "created_at": now_iso()}
    path = settings.data_dir / "local" / "mentions.jsonl"
    append_line(path, json.dumps(record, ensure_ascii=False))
    typer.echo(f"appended mention {record['id']} to {path}")


@app.command("import-archive")
def import_archive(
    path: Annotated[
        Path, typer.Argument(help="The X archive: .zip, unpacked folder or tweets.js.")
    ],
    handle: Annotated[str, typer.Option(help="Whose tweets these are: the dataset's name.")],
    config: ConfigOption = DEFAULT_CONFIG,
) -> None:
    """Import an X data export (data/tweets.js) into the handle's dataset, deduplicated."""
    import re

    from bot.archive import ArchiveError, read_archive
    from bot.config import HANDLE_PATTERN
    from bot.datasets import dataset_path, merge_records

    settings = _load_or_exit(config)
    if not re.match(HANDLE_PATTERN, handle):
        typer.echo(f"--handle: {handle!r} is not an X handle (letters, digits, _; 1-15)", err=True)
        raise typer.Exit(EXIT_BAD_CONFIG)
    try:
        records = read_archive(path)
    except ArchiveError as exc:
        typer.echo(f"cannot import: {exc}", err=True)
        raise typer.Exit(1) from None
    dataset = dataset_path(settings.data_dir, handle)
    added = merge_records(dataset, records)
    _count_new_tweets(settings, added)
    typer.echo(f"imported {added} new of {len(records)} tweets from {path} into {dataset}")


def _count_new_tweets(settings: BotConfig, added: int) -> None:
    """Feed the auto-retrain trigger; the import itself stands even if Redis is away."""
    import redis

    from bot.scrape import record_new_tweets
    from bot.state import BotState, connect

    try:
        record_new_tweets(BotState(connect(settings), settings.account), added)
    except redis.RedisError as exc:
        typer.echo(f"note: new-tweet count not updated (Redis: {exc})", err=True)


@app.command()
def generate(
    config: ConfigOption = DEFAULT_CONFIG,
    n: Annotated[int, typer.Option("-n", min=1, max=100, help="How many texts.")] = 5,
    seed: Annotated[str, typer.Option(help="Text every sample starts with.")] = "",
    temperature: Annotated[float | None, typer.Option(min=0.01, max=5.0)] = None,
    checkpoint: Annotated[
        Path | None, typer.Option(help="A version folder; default: the one LATEST names.")
    ] = None,
) -> None:
    """Print texts generated by a published checkpoint."""
    from training.models import load_model
    from training.publish import CheckpointError, read_latest, verify_version

    settings = _load_or_exit(config)
    folder = checkpoint
    if folder is None:
        latest = read_latest(settings.model_dir)
        if latest is None:
            typer.echo(f"no published model in {settings.model_dir} (LATEST missing)", err=True)
            raise typer.Exit(1)
        folder = settings.model_dir / latest
    try:
        manifest = verify_version(folder)
        model = load_model(manifest.model_kind, folder)
    except (CheckpointError, NotImplementedError, ValueError) as exc:
        typer.echo(f"cannot load {folder}: {exc}", err=True)
        raise typer.Exit(1) from None
    texts = model.generate(
        [seed] * n,
        max_length=settings.generation.max_length,
        temperature=temperature or settings.generation.temperature,
    )
    for text in texts:
        typer.echo(text)


if __name__ == "__main__":
    app()
