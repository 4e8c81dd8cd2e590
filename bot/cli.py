"""`parrotbot`: the operator's command line (the only module that prints)."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Literal

import typer

from bot.archive import DEFAULT_MAX_FILE_MIB, DEFAULT_MAX_TOTAL_MIB
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
EXIT_NO_REDIS = 3
ModelKind = Literal["char_rnn", "gpt2"]


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
    daemon = Daemon(settings, config.resolve(), show_login=_login_shower())
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
    max_file_mib: Annotated[
        int, typer.Option(min=1, help="MiB: refuse a tweets file bigger than this, decompressed.")
    ] = DEFAULT_MAX_FILE_MIB,
    max_total_mib: Annotated[
        int, typer.Option(min=1, help="MiB: refuse tweets files bigger than this together.")
    ] = DEFAULT_MAX_TOTAL_MIB,
) -> None:
    """Import an X data export (data/tweets.js) into the handle's dataset, deduplicated."""
    import re

    from bot.archive import MIB, ArchiveError, Limits, read_archive
    from bot.config import HANDLE_PATTERN
    from training.dataset import dataset_path, merge_records

    settings = _load_or_exit(config)
    if not re.match(HANDLE_PATTERN, handle):
        typer.echo(f"--handle: {handle!r} is not an X handle (letters, digits, _; 1-15)", err=True)
        raise typer.Exit(EXIT_BAD_CONFIG)
    try:
        records = read_archive(path, Limits(max_file_mib * MIB, max_total_mib * MIB))
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
    top_k: Annotated[
        int | None, typer.Option(help="Only the k likeliest tokens (0: off, 1: greedy).")
    ] = None,
    top_p: Annotated[
        float | None, typer.Option(help="Only the likeliest tokens holding this mass (1: off).")
    ] = None,
    repetition_penalty: Annotated[
        float | None, typer.Option(help="Penalty on tokens already read or written (1: off).")
    ] = None,
    context: Annotated[
        str, typer.Option(help="A tweet to answer: read first, as the reply's mention is.")
    ] = "",
    checkpoint: Annotated[
        Path | None, typer.Option(help="A version folder; default: the one LATEST names.")
    ] = None,
    model: Annotated[
        ModelKind | None, typer.Option(help="Model family; default: the config's model.kind.")
    ] = None,
) -> None:
    """Print texts generated by a published checkpoint, with the config's sampling settings.

    Options given here override the config's `generation` section for this command only.
    """
    from pydantic import ValidationError

    from bot.config import GenerationConfig
    from training.models import load_model
    from training.publish import CheckpointError, read_latest, verify_version

    settings = _load_or_exit(config)
    overrides = {
        "temperature": temperature,
        "top_k": top_k,
        "top_p": top_p,
        "repetition_penalty": repetition_penalty,
    }
    try:
        sampling = GenerationConfig.model_validate(
            settings.generation.model_dump() | {k: v for k, v in overrides.items() if v is not None}
        ).sampling()
    except ValidationError as exc:
        for error in exc.errors():
            typer.echo(f"--{str(error['loc'][0]).replace('_', '-')}: {error['msg']}", err=True)
        raise typer.Exit(EXIT_BAD_CONFIG) from None
    model_dir = settings.data_dir / "checkpoints" / (model or settings.model.kind)
    folder = checkpoint
    if folder is None:
        latest = read_latest(model_dir)
        if latest is None:
            typer.echo(f"no published model in {model_dir} (LATEST missing)", err=True)
            raise typer.Exit(1)
        folder = model_dir / latest
    try:
        manifest = verify_version(folder)
        loaded = load_model(manifest.model_kind, folder)
    except (CheckpointError, NotImplementedError, ValueError) as exc:
        typer.echo(f"cannot load {folder}: {exc}", err=True)
        raise typer.Exit(1) from None
    from bot.generation import mention_prompt

    texts = loaded.generate([seed] * n, context=mention_prompt(context) or None, **sampling)
    for text in texts:
        typer.echo(text)


@app.command()
def status(
    config: ConfigOption = DEFAULT_CONFIG,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """One screen about the account: daemon, model, pool, activity, targets."""
    from bot.state import BotState, connect
    from bot.status import collect, render

    settings = _load_or_exit(config)
    report = collect(settings, BotState(connect(settings), settings.account))
    if as_json:
        typer.echo(json.dumps(report, indent=2, sort_keys=True))
        return
    from rich.console import Console

    Console().print(render(report))


def _show_login(url: str) -> None:
    typer.echo(f"console: open {url}", err=True)


def _login_shower() -> Callable[[str], None] | None:
    """The console's login link holds its token: show it on a terminal, never in a log
    (a daemon under a process manager writes stderr to its logs; the token is in
    data_dir/console.token there)."""
    return _show_login if sys.stderr.isatty() else None


@app.command()
def console(config: ConfigOption = DEFAULT_CONFIG) -> None:
    """Serve the web console on its own, until Ctrl-C (for a host that runs no daemon).

    The login link is shown once at start, on stderr; the token lives in
    data_dir/console.token. Served even when `console.enabled` is false: that setting is
    about the daemon.
    """
    import threading

    from bot.console.server import ConsoleServer
    from bot.daemon import install_stop_signals
    from bot.logging import configure_logging
    from bot.state import BotState, connect

    settings = _load_or_exit(config)
    configure_logging(settings.logging.level)
    server = ConsoleServer(settings, lambda: BotState(connect(settings), settings.account))
    stop = threading.Event()
    install_stop_signals(stop)
    try:
        server.start()
    except OSError as exc:
        typer.echo(f"cannot serve the console on port {settings.console.port}: {exc}", err=True)
        raise typer.Exit(1) from None
    assert server.login_url is not None
    _show_login(server.login_url)
    while not stop.wait(timeout=1.0):  # a timed wait, so the signal handler gets to run
        pass
    server.stop()


@app.command("opt-outs")
def opt_outs(
    action: Annotated[
        Literal["list", "remove"], typer.Argument(help="list them, or remove HANDLE.")
    ] = "list",
    handle: Annotated[str | None, typer.Argument(help="The author to opt back in.")] = None,
    config: ConfigOption = DEFAULT_CONFIG,
) -> None:
    """Authors who opted out of replies (`@bot stop`); `remove HANDLE` opts one back in."""
    from bot.rules import opted_out_authors, remove_opt_out
    from bot.state import BotState, connect

    settings = _load_or_exit(config)
    state = BotState(connect(settings), settings.account)
    if action == "remove":
        if not handle:
            typer.echo("opt-outs remove needs a HANDLE", err=True)
            raise typer.Exit(2)
        if not remove_opt_out(state, handle):
            typer.echo(f"@{handle.removeprefix('@')} has not opted out", err=True)
            raise typer.Exit(1)
        typer.echo(f"@{handle.removeprefix('@')} opted back in: the bot may answer them again")
        return
    authors = opted_out_authors(state)
    if not authors:
        typer.echo("nobody has opted out")
    for author_id, entry in sorted(authors.items(), key=lambda item: item[1].get("at", 0)):
        typer.echo(f"@{entry.get('handle', '?')}\t{author_id}\tmention {entry.get('mention_id')}")


review_app = typer.Typer(
    help="The review queue: held replies, read and decided before they go out.",
    no_args_is_help=True,
)
app.add_typer(review_app, name="review")
ItemId = Annotated[str, typer.Argument(help="The item's id, as `review list` shows it.")]


def _review(config: Path):  # -> bot.review.Review (imported lazily, like every command's deps)
    from bot.review import Review
    from bot.state import BotState, connect

    settings = _load_or_exit(config)
    return Review(settings, BotState(connect(settings), settings.account))


@review_app.command("list")
def review_list(
    config: ConfigOption = DEFAULT_CONFIG,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line.")] = False,
) -> None:
    """What waits for a decision, oldest first."""
    from bot.review import write_jsonl

    items = _review(config).held()
    if as_json:
        write_jsonl(items, sys.stdout)
        return
    if not items:
        typer.echo("nothing is held")
    for item in items:
        if item.kind == "post":
            typer.echo(f"{item.id}\t(a scheduled post's candidate)")
            typer.echo(f"\tpost: {item.text}")
            continue
        mention = item.mention
        typer.echo(f"{item.id}\t@{mention.get('author_handle', '?')}: {mention.get('text', '')}")
        typer.echo(f"\treply: {item.text}")


@review_app.command("approve")
def review_approve(
    item_id: ItemId,
    text: Annotated[
        str | None, typer.Option("--text", help="Send this instead (it passes the filters too).")
    ] = None,
    config: ConfigOption = DEFAULT_CONFIG,
) -> None:
    """Approve a held reply; the daemon holding the lease sends it at its next mentions poll."""
    from bot.review import ReviewRefused

    try:
        item = _review(config).approve(item_id, text=text, by="cli")
    except ReviewRefused as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(1) from None
    typer.echo(f"{item.id} approved{' (edited)' if item.edited else ''}: {item.final_text}")


@review_app.command("reject")
def review_reject(
    item_id: ItemId,
    reason: Annotated[str, typer.Option("--reason", help="Kept with the decision.")] = "",
    config: ConfigOption = DEFAULT_CONFIG,
) -> None:
    """Reject a held reply: its mention stays unanswered."""
    from bot.review import ReviewRefused

    try:
        item = _review(config).reject(item_id, reason=reason, by="cli")
    except ReviewRefused as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(1) from None
    typer.echo(f"{item.id} rejected")


@review_app.command("export")
def review_export(
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="Write here instead of stdout.")
    ] = None,
    config: ConfigOption = DEFAULT_CONFIG,
) -> None:
    """Every decision kept (approved, edited, rejected, expired) as JSON lines with its
    provenance: material for tuning the filters or the model."""
    review = _review(config)
    if out is None:
        review.export(sys.stdout)
        return
    with out.open("w", encoding="utf-8") as handle:
        written = review.export(handle)
    typer.echo(f"{written} decisions written to {out}", err=True)


@app.command("config-reference")
def config_reference() -> None:
    """Print the configuration reference (Markdown), generated from the config models."""
    from bot.config_reference import render

    typer.echo(render(), nl=False)


@app.command()
def rollback(config: ConfigOption = DEFAULT_CONFIG) -> None:
    """Point LATEST at the previous good model version; the running daemon swaps to it."""
    from bot.hotload import RollbackError
    from bot.hotload import rollback as roll_back
    from bot.state import BotState, connect

    settings = _load_or_exit(config)
    state = BotState(connect(settings), settings.account)
    try:
        old, new = roll_back(settings.model_dir, state)
    except RollbackError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(1) from None
    typer.echo(f"LATEST now names {new} (was {old}, recorded as bad)")


# --- retraining: the queue, the launcher, and the AWS resources -------------------------------
infra_app = typer.Typer(
    help="AWS resources for spot training (training.aws).", no_args_is_help=True
)
app.add_typer(infra_app, name="infra")


def _queue(settings: BotConfig):  # -> RetrainQueue (imported lazily, like every command's deps)
    from bot.state import connect
    from infra.retrain_queue import RetrainQueue

    return RetrainQueue(connect(settings), settings.account)


@app.command()
def launcher(config: ConfigOption = DEFAULT_CONFIG) -> None:
    """Consume the retrain queue and run each job on the configured backend (Procfile)."""
    from bot.daemon import install_stop_signals
    from bot.logging import configure_logging
    from bot.retrain import build_launcher

    settings = _load_or_exit(config)
    configure_logging(settings.logging.level)
    worker = build_launcher(settings)

    # First signal: hand the job in flight on and stop; a second one: stop at once.
    install_stop_signals(worker.stop_event)
    worker.run()


@app.command()
def retrain(config: ConfigOption = DEFAULT_CONFIG) -> None:
    """Queue a retrain of the config's model on its targets' datasets."""
    from bot.retrain import request_training
    from bot.state import BotState

    settings = _load_or_exit(config)
    queue = _queue(settings)
    state = BotState(queue.redis, settings.account)
    requested = request_training(settings, state, queue, "cli", "parrotbot retrain")
    if requested is None:
        typer.echo("nothing to train on yet: no dataset for the targets", err=True)
        raise typer.Exit(1)
    verb = "merged into waiting job" if requested.coalesced else "queued job"
    typer.echo(f"{verb} {requested.job.id}")


@app.command()
def jobs(
    config: ConfigOption = DEFAULT_CONFIG,
    limit: Annotated[int, typer.Option("-n", min=1, help="How many, newest first.")] = 20,
) -> None:
    """List retrain jobs: state, instance, duration and estimated cost."""
    from rich.console import Console
    from rich.table import Table

    table = Table("job", "trigger", "state", "attempt", "instance", "duration", "cost", "outcome")
    for job in _queue(_load_or_exit(config)).list_jobs(limit):
        duration = job.duration
        table.add_row(
            job.id,
            job.trigger + (f" (+{len(job.coalesced)})" if job.coalesced else ""),
            job.state.value,
            str(job.attempt),
            job.instance_id or "-",
            "-" if duration is None else f"{duration / 60:.1f} min",
            "unknown" if job.cost_usd is None else f"${job.cost_usd:.4f}",
            job.outcome or "-",
        )
    Console(width=160).print(table)


def _aws_or_exit(config: Path):  # -> (BotConfig, infra.settings.AwsSettings)
    """The config and its `training.aws`, which every `parrotbot infra` command needs.

    The commands reach AWS only through infra.backends (the bot's door to backend code, see
    pyproject's import contracts), so boto3 loads only when one of them runs.
    """
    settings = _load_or_exit(config)
    if settings.training.aws is None:
        typer.echo(f"{config}: training.aws is not set", err=True)
        raise typer.Exit(EXIT_BAD_CONFIG)
    return settings, settings.training.aws


@infra_app.command("setup")
def infra_setup(config: ConfigOption = DEFAULT_CONFIG) -> None:
    """Create (idempotently) the role, policy, profile, bucket, data volume and template."""
    from infra.backends import aws_setup

    settings, aws = _aws_or_exit(config)
    for line in aws_setup(aws, settings.account):
        typer.echo(line)


@infra_app.command("teardown")
def infra_teardown(
    config: ConfigOption = DEFAULT_CONFIG,
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask: the data goes too.")] = False,
) -> None:
    """Remove everything setup made, the bucket's contents and the data volume included."""
    from infra.backends import aws_teardown

    settings, aws = _aws_or_exit(config)
    if not yes:
        typer.confirm(f"Delete all AWS resources of account {settings.account}?", abort=True)
    for line in aws_teardown(aws, settings.account):
        typer.echo(line)


@infra_app.command("gc")
def infra_gc(config: ConfigOption = DEFAULT_CONFIG) -> None:
    """Remove strays (instances, fleets, volumes, snapshots) no job in flight uses."""
    from infra.backends import aws_gc
    from infra.job import JobState

    settings, aws = _aws_or_exit(config)
    queue = _queue(settings)
    busy = set(queue.ids_in_state(JobState.LAUNCHING)) | set(queue.ids_in_state(JobState.RUNNING))
    busy |= set(queue.ids_in_state(JobState.QUEUED))  # a requeued job keeps its volume moves
    report = aws_gc(aws, settings.account, busy)
    for line in report or ["nothing to collect"]:
        typer.echo(line)


@app.command()
def train(
    profile: Annotated[
        list[str], typer.Option("--profile", "-p", help="Target handle to learn from (repeatable).")
    ],
    model: Annotated[
        ModelKind | None, typer.Option(help="Model family; default: the config's model.kind.")
    ] = None,
    resume: Annotated[bool, typer.Option(help="Continue the newest run of this model.")] = False,
    config: ConfigOption = DEFAULT_CONFIG,
) -> None:
    """Train on data_dir/datasets/<profile>.jsonl in this process and publish a version.

    Ctrl-C (or SIGTERM) saves a checkpoint and stops; `--resume` continues from it.
    """
    from bot.logging import configure_logging
    from training.dataset import DatasetError, dataset_path
    from training.request import TrainRequest
    from training.runs import ResumeError
    from training.train import (
        StopRequest,
        TrainingStopped,
        install_signal_handlers,
        run_training,
    )

    settings = _load_or_exit(config)
    configure_logging(settings.logging.level)
    kind = model or settings.model.kind
    weight_of = {t.handle: t.weight for t in settings.targets}
    request = TrainRequest(
        model_kind=kind,
        datasets=tuple(dataset_path(settings.data_dir, handle) for handle in profile),
        checkpoints_dir=settings.data_dir / "checkpoints",
        model_settings=getattr(settings.model, kind).to_dict(),
        trigger="cli",
        weights=tuple(weight_of.get(handle, 1.0) for handle in profile),
        resume=resume,
        cleaning=settings.cleaning,  # as a queued job trains, and as the daemon's novelty index
    )
    stop = StopRequest()
    restore_signals = install_signal_handlers(stop)
    try:
        manifest = run_training(request, stop=stop)
    except TrainingStopped as exc:
        typer.echo(f"stopped: {exc}; continue with --resume")
        raise typer.Exit(0) from None
    except (DatasetError, ResumeError, ValueError) as exc:
        typer.echo(f"cannot train: {exc}", err=True)
        raise typer.Exit(1) from None
    finally:
        restore_signals()
    if manifest is None:  # a non-zero rank of a data-parallel launch; rank 0 published
        return
    val = "n/a" if manifest.val_loss is None else f"{manifest.val_loss:.4f}"
    typer.echo(
        f"published {kind} version {manifest.version} (step {manifest.step}, val loss {val}) "
        f"in {settings.data_dir / 'checkpoints' / kind}"
    )


@app.command()
def plot(
    run: Annotated[Path, typer.Argument(help="A run or version folder, or a train.log file.")],
) -> None:
    """Draw a run's train.log (training and validation loss by step) in the terminal."""
    from training.trainlog import find_log, terminal_plot

    try:
        typer.echo(terminal_plot(find_log(run)))
    except ValueError as exc:
        typer.echo(f"cannot plot: {exc}", err=True)
        raise typer.Exit(1) from None


def main() -> None:
    """The `parrotbot` script: the app, with an unreachable Redis told in one line."""
    import redis

    from bot.logging import redact

    try:
        app()
    except redis.ConnectionError as exc:
        typer.echo(
            f"cannot reach Redis ({redact(str(exc))}): is it running, and is the config's "
            "redis_url right? `redis-cli -u URL ping` checks",
            err=True,
        )
        sys.exit(EXIT_NO_REDIS)


if __name__ == "__main__":
    main()
