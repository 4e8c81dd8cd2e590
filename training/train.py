"""The entry point a training backend runs: ``python -m training.train --request REQUEST.json``.

The request is a JSON object::

    {"model_kind": "char_rnn", "datasets": ["/abs/datasets/a.jsonl"],
     "checkpoints_dir": "/abs/checkpoints", "model_config": {...}, "trigger": "first_start"}

It runs in its own process so the daemon never imports a framework and a crash here cannot
take the bot down. It logs one JSON object per line to stderr (``train.started``,
``train.epoch_done``, ``train.published``, ``train.failed``) for the launcher to relay.

Exit status: 0 when a version was published, or when a stop request (SIGTERM/SIGINT) came
before the first epoch finished (nothing is published then); 1 with one ``train.failed`` line
when the request, a dataset or training fails. A second signal stops at once.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import sys
import threading
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from types import FrameType
from typing import Any

import structlog

from training.cleaning import DEFAULT_OPTIONS, CleaningOptions, clean_tweets
from training.dataset import DatasetError, dataset_hash, load_tweets, split_by_id
from training.models import MODEL_KINDS, EpochReport
from training.publish import CheckpointError, Manifest, new_staging_dir, publish

log = structlog.get_logger(__name__)

_REQUIRED = ("model_kind", "datasets", "checkpoints_dir")
_KNOWN = (*_REQUIRED, "model_config", "trigger", "cleaning")


class RequestError(ValueError):
    """The training request is malformed; the message says which field."""


class TrainingStopped(Exception):
    """A stop request came before the first epoch completed, so nothing was published."""


@dataclass(frozen=True)
class TrainRequest:
    """A validated request; paths resolved so log lines and errors name real files."""

    model_kind: str
    datasets: tuple[Path, ...]
    checkpoints_dir: Path
    model_config: dict[str, Any]
    trigger: str | None
    cleaning: CleaningOptions = DEFAULT_OPTIONS

    @classmethod
    def from_dict(cls, raw: Any) -> TrainRequest:
        if not isinstance(raw, dict):
            raise RequestError("request must be a JSON object")
        missing = [k for k in _REQUIRED if k not in raw]
        if missing:
            raise RequestError(f"request is missing {', '.join(missing)}")
        unknown = sorted(set(raw) - set(_KNOWN))
        if unknown:
            # Tolerated: a launcher may tag requests (job ids) without this entry point knowing.
            log.warning("train.request_unknown_keys", keys=unknown)
        kind = raw["model_kind"]
        if kind not in MODEL_KINDS:
            raise RequestError(
                f"unknown model_kind {kind!r}; expected one of {', '.join(MODEL_KINDS)}"
            )
        datasets = raw["datasets"]
        if (
            not isinstance(datasets, list)
            or not datasets
            or not all(isinstance(d, str) and d for d in datasets)
        ):
            raise RequestError("'datasets' must be a non-empty list of file paths")
        if not isinstance(raw["checkpoints_dir"], str) or not raw["checkpoints_dir"]:
            raise RequestError("'checkpoints_dir' must be a path")
        model_config = raw.get("model_config") or {}
        if not isinstance(model_config, dict):
            raise RequestError("'model_config' must be an object")
        trigger = raw.get("trigger")
        if trigger is not None and not isinstance(trigger, str):
            raise RequestError("'trigger' must be a string")
        try:
            cleaning = CleaningOptions.from_dict(raw.get("cleaning"))
        except (TypeError, ValueError) as e:
            raise RequestError(f"'cleaning': {e}") from e
        return cls(
            model_kind=kind,
            datasets=tuple(Path(d).resolve() for d in datasets),
            checkpoints_dir=Path(raw["checkpoints_dir"]).resolve(),
            model_config=dict(model_config),
            trigger=trigger,
            cleaning=cleaning,
        )


def _log_epoch(report: EpochReport) -> None:
    log.info("train.epoch_done", **asdict(report))


def run_training(request: dict[str, Any], *, stop: threading.Event | None = None) -> Manifest:
    """Load, clean and split the datasets, train, then publish a new version.

    Raises RequestError / DatasetError for bad input, and TrainingStopped when ``stop`` was
    set before one epoch completed (a model that never saw the whole data is not worth
    serving). A stop after that publishes what training reached.
    """
    req = TrainRequest.from_dict(request)
    if req.model_kind != "char_rnn":
        raise NotImplementedError(f"training model kind {req.model_kind!r} is not implemented yet")
    tweets = load_tweets(req.datasets)
    # Import only now: TensorFlow takes seconds to load, and bad input should fail fast.
    from training.char_rnn import CharRNN, CharRNNConfig

    try:
        config = CharRNNConfig.from_dict(req.model_config)
    except (TypeError, ValueError) as e:
        raise RequestError(f"'model_config': {e}") from e
    cleaned = clean_tweets(tweets, req.cleaning)
    train, val = split_by_id(cleaned.tweets, config.val_fraction)
    train_texts = [x["text"] for x in train]
    val_texts = [x["text"] for x in val]
    if not train_texts:
        names = ", ".join(str(p) for p in req.datasets)
        raise DatasetError(f"{names}: no non-empty tweets to train on")
    data_hash = dataset_hash(tweets)
    log.info(
        "train.started",
        model_kind=req.model_kind,
        trigger=req.trigger,
        tweets=len(tweets),
        train_tweets=len(train_texts),
        val_tweets=len(val_texts),
        dropped={
            "retweets": cleaned.retweets,
            "empty": cleaned.empty,
            "duplicates": cleaned.duplicates,
        },
        dataset_hash=data_hash,
        config=config.to_dict(),
    )
    completed = 0
    announced = False

    def on_epoch(report: EpochReport) -> None:
        nonlocal completed, announced
        if stop is not None and stop.is_set() and not announced:
            # Logged here, not in the signal handler: see _install_signal_handlers.
            log.info("train.stop_requested", signal=getattr(stop, "signal_name", None))
            announced = True
        completed += report.complete
        _log_epoch(report)

    if stop is not None and stop.is_set():
        raise TrainingStopped("stop requested before training started")
    model, result = CharRNN.train(train_texts, val_texts, config, stop=stop, on_epoch=on_epoch)
    if completed == 0:
        raise TrainingStopped(f"stopped after {result.step} steps, before the first epoch ended")

    model_dir = req.checkpoints_dir / req.model_kind
    staging = new_staging_dir(model_dir)
    try:
        model.save(staging)
        manifest = publish(
            staging,
            model_kind=req.model_kind,
            step=result.step,
            train_loss=result.train_loss,
            val_loss=result.val_loss,
            dataset_hash=data_hash,
            config=config.to_dict(),
        )
    except BaseException:
        # A failed publish must not leave a half-filled folder behind for the next run.
        shutil.rmtree(staging, ignore_errors=True)
        raise
    log.info(
        "train.published",
        model_kind=req.model_kind,
        version=manifest.version,
        step=manifest.step,
        train_loss=manifest.train_loss,
        val_loss=manifest.val_loss,
        path=str(model_dir / manifest.version),
    )
    return manifest


def configure_logging() -> None:
    """JSON lines on stderr: the launcher parses them, and stdout stays free."""
    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(),
        ],
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
    )


class StopFlag(threading.Event):
    """The stop event, and the name of the signal that set it (for the trainer's log line)."""

    signal_name: str | None = None


def _install_signal_handlers(stop: StopFlag) -> None:
    """First SIGTERM/SIGINT: finish the current batch and wrap up; second: exit now.

    The handler only sets the flag: it runs in the main thread between two bytecodes, maybe
    while that thread holds the log writer's lock, so logging from it can deadlock.
    """

    def handle(signum: int, _frame: FrameType | None) -> None:
        if stop.is_set():
            os._exit(128 + signum)
        stop.signal_name = signal.Signals(signum).name
        stop.set()

    signal.signal(signal.SIGTERM, handle)
    signal.signal(signal.SIGINT, handle)


def main(argv: Sequence[str] | None = None) -> int:
    """Parse arguments, run one training request, map the outcome to an exit status."""
    parser = argparse.ArgumentParser(prog="python -m training.train", description=__doc__)
    parser.add_argument("--request", required=True, type=Path, help="request JSON file")
    args = parser.parse_args(argv)
    configure_logging()
    stop = StopFlag()
    _install_signal_handlers(stop)
    try:
        try:
            request = json.loads(args.request.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise RequestError(f"{args.request}: cannot read request ({e})") from e
        run_training(request, stop=stop)
    except TrainingStopped as e:
        log.info("train.stopped", reason=str(e))
    except (RequestError, DatasetError, CheckpointError, NotImplementedError) as e:
        log.error("train.failed", error=str(e), error_type=type(e).__name__)
        return 1
    except Exception as e:
        # A bug, not bad input: keep the traceback, but still as one JSON line.
        log.error("train.failed", error=str(e), error_type=type(e).__name__, exc_info=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
