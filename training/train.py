"""The entry point a training backend runs: ``python -m training.train --request REQUEST.json``.

The request is a JSON object, one :class:`training.request.TrainRequest` (the format is
described there; every launcher builds that type).

It runs in its own process so the daemon never imports a framework and a crash here cannot
take the bot down. It logs one JSON object per line to stderr (``train.started``,
``train.epoch_done`` / ``train.eval_done``, ``train.published``, ``train.failed``) for the
launcher to relay.

Training state lives in a run folder (``checkpoints/runs/<kind>/<run>/``, see
:mod:`training.runs`); ``resume: true`` (or ``--resume``) continues the newest one.

Exit status: 0 when a version was published, or when a stop request (SIGTERM/SIGINT) came
before anything worth publishing (a checkpoint is saved, nothing is published); 1 with one
``train.failed`` line when the request, a dataset or training fails. A second signal stops
at once.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import sys
import tempfile
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from types import FrameType
from typing import Any

import structlog

from training.child_process import configure_logging
from training.dataset import DatasetError
from training.models import EpochReport
from training.prepare import prepare
from training.publish import CheckpointError, Manifest, new_staging_dir, publish
from training.request import RequestError, TrainRequest
from training.runs import ResumeError, find_resumable_run, new_run_dir

log = structlog.get_logger(__name__)


class TrainingStopped(Exception):
    """A stop request came before anything worth publishing; a checkpoint may remain."""


def _run_dir(req: TrainRequest, identity: dict[str, Any]) -> tuple[Path, bool]:
    """(run folder, resuming?): the newest resumable run, or a new one."""
    if req.resume:
        try:
            return find_resumable_run(req.checkpoints_dir, req.model_kind, identity), True
        except ResumeError as e:
            log.warning("train.resume_fresh", reason=str(e))
    if not _is_main_process():
        # Under torchrun only rank 0 owns the run folder; the others need a scratch folder
        # for the (deterministic) tokenizer they train, and never write a checkpoint.
        return Path(tempfile.mkdtemp(prefix="parrotbot-rank-")), False
    return new_run_dir(req.checkpoints_dir, req.model_kind, identity), False


def _is_main_process() -> bool:
    """Rank 0 of a torchrun/accelerate launch, or a plain single process."""
    return os.environ.get("RANK", "0") == "0"


def _fit(req: TrainRequest, config: Any, prepared: Any, run_dir: Path, resume: bool, stop: Any):
    """Run the family's loop; return (model, step, train_loss, val_loss, publishable)."""
    if req.model_kind == "char_rnn":
        from training import char_rnn_train

        completed = 0

        def on_epoch(report: EpochReport) -> None:
            nonlocal completed
            completed += report.complete
            log.info("train.epoch_done", **asdict(report))

        model, result = char_rnn_train.fit(
            prepared.train_texts, prepared.val_texts, config,
            stop=stop, on_epoch=on_epoch, run_dir=run_dir, resume=resume,
        )  # fmt: skip
        ok = completed > 0 or (resume and result.val_loss is not None)
        return model, result.step, result.train_loss, result.val_loss, ok
    from training.gpt2_train import fit

    def on_eval(report: Any) -> None:
        log.info("train.eval_done", **asdict(report))

    result = fit(
        prepared.train_texts, prepared.val_texts, config,
        run_dir=run_dir, resume=resume, stop=stop, on_eval=on_eval,
    )  # fmt: skip
    ok = bool(result.best_step)
    return result.model, result.step, result.train_loss, result.val_loss, ok


def run_training(
    request: TrainRequest | Mapping[str, Any], *, stop: threading.Event | None = None
) -> Manifest | None:
    """Load, clean and split the datasets, train (or resume), then publish a new version.

    Raises RequestError / DatasetError for bad input, and TrainingStopped when ``stop`` was
    set before anything worth serving existed (the run folder keeps a checkpoint to resume).
    Returns None on the non-zero ranks of a data-parallel launch: rank 0 publishes.
    """
    from training.trainlog import LOG_NAME, PLOT_NAME, save_plot

    if not isinstance(request, TrainRequest):
        request = TrainRequest.from_dict(request)
    req = request.resolved()
    config = req.settings()
    prepared = prepare(req.datasets, req.weights, config.val_fraction, req.cleaning)
    identity = {
        "model_kind": req.model_kind,
        "dataset_hash": prepared.dataset_hash,
        "config": config.to_dict(),
    }
    if stop is not None and stop.is_set():
        raise TrainingStopped("stop requested before training started")
    run_dir, resuming = _run_dir(req, identity)
    log.info(
        "train.started",
        model_kind=req.model_kind,
        trigger=req.trigger,
        tweets=prepared.tweets,
        train_tweets=len(prepared.train_texts),
        val_tweets=len(prepared.val_texts),
        dataset_hash=prepared.dataset_hash,
        config=config.to_dict(),
        run_dir=str(run_dir),
        resumed=resuming,
    )
    model, step, train_loss, val_loss, publishable = _fit(
        req, config, prepared, run_dir, resuming, stop
    )
    if stop is not None and stop.is_set():
        log.info("train.stop_requested", signal=getattr(stop, "signal_name", None), step=step)
    if not _is_main_process():
        log.info("train.rank_done", rank=os.environ.get("RANK"), step=step)
        return None
    if (run_dir / LOG_NAME).exists():
        save_plot(run_dir / LOG_NAME)
    if not publishable:
        raise TrainingStopped(f"stopped at step {step} before a validated model existed")

    model_dir = req.checkpoints_dir / req.model_kind
    staging = new_staging_dir(model_dir)
    try:
        model.save(staging)
        for name in (LOG_NAME, PLOT_NAME):
            if (run_dir / name).exists():
                shutil.copyfile(run_dir / name, staging / name)
        manifest = publish(
            staging,
            model_kind=req.model_kind,
            step=step,
            train_loss=train_loss,
            val_loss=val_loss,
            dataset_hash=prepared.dataset_hash,
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
        run_dir=str(run_dir),
    )
    return manifest


class StopRequest(threading.Event):
    """The stop flag, plus which signal set it (for the log line the trainer writes)."""

    signal_name: str | None = None


def install_signal_handlers(stop: threading.Event) -> Callable[[], None]:
    """First SIGTERM/SIGINT: checkpoint after the current batch and wrap up; second: exit now.

    The handler only sets the flag. Logging from it could deadlock: it runs between two
    bytecodes of the main thread, possibly while that thread holds the log writer's lock.
    Returns a function that puts the previous handlers back (for in-process callers).
    """

    def handle(signum: int, _frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        if stop.is_set():
            line = json.dumps({"event": "train.killed", "signal": name, "level": "warning"})
            os.write(2, (line + "\n").encode())
            os._exit(128 + signum)
        if isinstance(stop, StopRequest):
            stop.signal_name = name
        stop.set()

    previous = {sig: signal.signal(sig, handle) for sig in (signal.SIGTERM, signal.SIGINT)}

    def restore() -> None:
        for sig, old in previous.items():
            signal.signal(sig, old)

    return restore


def main(argv: Sequence[str] | None = None) -> int:
    """Parse arguments, run one training request, map the outcome to an exit status."""
    parser = argparse.ArgumentParser(prog="python -m training.train", description=__doc__)
    parser.add_argument("--request", required=True, type=Path, help="request JSON file")
    parser.add_argument("--resume", action="store_true", help="continue the newest run folder")
    args = parser.parse_args(argv)
    configure_logging()
    stop = StopRequest()
    install_signal_handlers(stop)
    try:
        try:
            request = json.loads(args.request.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise RequestError(f"{args.request}: cannot read request ({e})") from e
        if args.resume and isinstance(request, dict):
            request["resume"] = True
        run_training(request, stop=stop)
    except TrainingStopped as e:
        log.info("train.stopped", reason=str(e))
    except (RequestError, DatasetError, CheckpointError, ResumeError, ValueError) as e:
        log.error("train.failed", error=str(e), error_type=type(e).__name__)
        return 1
    except Exception as e:
        # A bug, not bad input: keep the traceback, but still as one JSON line.
        log.error("train.failed", error=str(e), error_type=type(e).__name__, exc_info=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
