"""Hot-loading: follow `LATEST`, and put each new complete version into service.

Each version is served by a worker process of its own (`bot.model_worker`): the worker
verifies the version (manifest and every file's sha256), loads it, and asks it for a test
generation; only then does the daemon switch new requests to it and stop the old worker once
its request in flight is answered. A version that fails any step is recorded in Redis as bad
and never tried again; the old worker keeps serving. Peak memory stays at two models.

Replies must not slow down while a version loads. In one process they did: the loader's
pure-Python parts (building the Keras graph, tracing the sampling step) held the interpreter
lock for a switch interval each time the serving thread wanted it back. Across processes
there is no shared lock, and the new worker loads at a lower OS priority, so the one serving
keeps the CPU first. What still runs in the daemon is the novelty index, built in a nicer
thread and reused while a new version was trained on the same data (the manifest's dataset
hash).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterable
from dataclasses import asdict
from pathlib import Path
from typing import Any, TypeVar

import structlog

from bot import metrics
from bot.filters import NoveltyIndex
from bot.generation import GenerationService, LoadedModel
from bot.model_worker import ModelWorker, WorkerFailed
from bot.pool import TweetPool
from bot.state import BotState

log = structlog.get_logger(__name__)

T = TypeVar("T")
# How much nicer than the serving worker a loading worker (and the daemon's loader thread)
# runs: on a busy two-core box the serving worker then gets the CPU first.
LOADER_NICENESS = 10


class CheckpointWatcher:
    def __init__(
        self,
        model_dir: Path,
        model_kind: str,
        service: GenerationService,
        state: BotState,
        *,
        corpus: Callable[[], Iterable[str]] = tuple,
    ) -> None:
        """`corpus` yields the training texts the novelty filter guards (read at each load),
        cleaned as the trainer cleaned them (the daemon passes `training.dataset.training_texts`
        with the config's options): a candidate is compared with what the model learned."""
        self.model_dir = model_dir
        self.model_kind = model_kind
        self.service = service
        self.state = state
        self.corpus = corpus
        self.pool = TweetPool(state)
        # (dataset hash, n-gram length) -> the index built for it: versions retrained on the
        # same data share one index instead of re-reading and re-hashing the corpus.
        self._novelty: tuple[tuple[str, int], NoveltyIndex] | None = None
        # Checks run one at a time: the start-up preload and the scheduler's checkpoint poll
        # overlap, and two checks at once would start two workers for the same version.
        self._checking = threading.Lock()
        # Guards `_closed` and the swap: a load that ends after `close()` never serves.
        self._swapping = threading.Lock()
        self._closed = False

    def check(self) -> bool:
        """Load what `LATEST` names if it is new; True when a new version went into service.

        With nothing serving yet (a fresh start), a broken `LATEST` falls back to the newest
        version that verifies, so one bad publish cannot keep the bot mute. With an older
        version serving (a standby that preloaded before the last good publish, then took
        over), a refused `LATEST` falls back to the newest good version newer than it, so a
        failover does not quietly go back to an older model. A check that finds another one
        running waits for it, so it then sees what that one put into service.
        """
        with self._checking:
            return self._check()

    def check_in_background(self) -> threading.Thread:
        """Run a check on a thread of its own, holding the check lock from this call on.

        The daemon's start-up preload: the daemon competes for the lease, and is ready as a
        leader, while the worker imports its framework and loads the version (seconds),
        instead of after. The lock is taken here, in the caller's thread, so a checkpoint
        poll that the new leader's scheduler runs at once waits for this load (and its
        retrain trigger then sees the model) instead of starting a second one.
        """
        self._checking.acquire()

        def preload() -> None:
            try:
                self._check()
            except Exception as exc:  # the checkpoint poll tries again; the daemon goes on
                log.warning("hotload.preload_failed", error=f"{type(exc).__name__}: {exc}")
            finally:
                self._checking.release()

        thread = threading.Thread(target=preload, name="preload", daemon=True)
        thread.start()
        return thread

    def close(self) -> None:
        """Stop the serving worker (the daemon is stopping); a load that ends later is
        stopped too, never put into service."""
        with self._swapping:
            self._closed = True
            self.service.close()

    def _check(self) -> bool:
        from training.publish import list_versions, read_latest

        latest = read_latest(self.model_dir)
        current = self.service.current
        candidates = [latest] if latest else []
        bad = self.state.bad_versions()
        if current is None:
            candidates += [v for v in list_versions(self.model_dir) if v != latest]
        elif latest in bad:
            newer = [v for v in list_versions(self.model_dir) if v > current.version]
            candidates += [v for v in newer if v != latest]
        for version in candidates:
            if current is not None and version == current.version:
                return False
            if version in bad:
                continue
            if self._try_load(version):
                return True
        return False

    def _try_load(self, version: str) -> bool:
        from training.publish import MANIFEST_NAME, Manifest

        folder = self.model_dir / version
        log.info("hotload.loading", version=version, folder=str(folder))

        def load() -> tuple[Manifest, ModelWorker, str, NoveltyIndex]:
            started = ModelWorker.start(self.model_kind, folder, niceness=LOADER_NICENESS)
            try:
                manifest = Manifest.from_json(started.manifest_json, folder / MANIFEST_NAME)
                novelty = self._novelty_index(manifest.dataset_hash)
            except BaseException:
                started.worker.close()
                raise
            return manifest, started.worker, started.smoke_sample, novelty

        try:
            manifest, worker, sample, novelty = run_in_background(load)
        except Exception as exc:  # any failure must leave the old model serving
            reason = str(exc) if isinstance(exc, WorkerFailed) else f"{type(exc).__name__}: {exc}"
            self.state.mark_bad_version(version, reason)
            metrics.MODEL_REFUSED.inc()
            log.error("hotload.refused", version=version, reason=reason)
            return False
        with self._swapping:
            if self._closed:
                worker.close()
                log.info("hotload.abandoned", version=version, reason="the daemon is stopping")
                return False
            old = self.service.swap(
                LoadedModel(version=version, manifest=manifest, model=worker, novelty=novelty)
            )
        self.pool.discard()  # texts of the previous version must never be posted now
        self.state.set_current_model(version, asdict(manifest))
        metrics.MODEL_SWAPS.inc()
        metrics.set_model(version)
        log.info(
            "hotload.swapped",
            version=version,
            step=manifest.step,
            val_loss=manifest.val_loss,
            smoke_sample=sample,
            novelty_ngrams=len(novelty),
            worker=worker.pid,
        )
        if old is not None:
            close_model(old.model)  # waits for its request in flight, if one is
        return True

    def _novelty_index(self, dataset_hash: str) -> NoveltyIndex:
        """The index of the training texts, reused while the dataset hash is unchanged."""
        key = (dataset_hash, self.service.filters.novelty_ngram_words)
        if dataset_hash and self._novelty is not None and self._novelty[0] == key:
            log.debug("hotload.novelty_reused", dataset_hash=dataset_hash)
            return self._novelty[1]
        index = NoveltyIndex(self.corpus(), key[1])
        self._novelty = (key, index)
        return index


def run_in_background(work: Callable[[], T]) -> T:
    """``work()`` in a fresh thread at a lower OS priority; its result or its exception.

    A thread of its own because on Linux a thread's niceness can be raised but, without
    privileges, never lowered again: the thread ends with the load, so the caller (a
    scheduler thread that also runs other jobs) keeps its priority.
    """
    outcome: dict[str, Any] = {}

    def target() -> None:
        try:
            tid = threading.get_native_id()
            os.setpriority(
                os.PRIO_PROCESS, tid, os.getpriority(os.PRIO_PROCESS, tid) + LOADER_NICENESS
            )
        except (AttributeError, OSError) as exc:  # not Linux, or a sandbox that forbids it
            log.debug("hotload.priority_unchanged", error=str(exc))
        try:
            outcome["value"] = work()
        except BaseException as exc:  # handed to the caller's thread, which decides
            outcome["error"] = exc

    thread = threading.Thread(target=target, name="hotload", daemon=True)
    thread.start()
    thread.join()
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


def close_model(model: object) -> None:
    """Stop a model that holds a process (a worker); an in-process model needs nothing."""
    close = getattr(model, "close", None)
    if callable(close):
        close()


class RollbackError(Exception):
    """No version to roll back to; the message says why."""


def rollback(model_dir: Path, state: BotState) -> tuple[str, str]:
    """Point `LATEST` at the newest good version older than the one it names now.

    The version rolled away from is recorded as bad, so neither this daemon nor a restarted
    one falls back to it; the watcher then loads the older version like any new one.
    Returns (from_version, to_version).
    """
    from training.publish import CheckpointError, list_versions, read_latest, set_latest

    current = read_latest(model_dir)
    if current is None:
        raise RollbackError(f"nothing to roll back: no LATEST in {model_dir}")
    bad = state.bad_versions()
    older = [v for v in list_versions(model_dir, verified=True) if v < current and v not in bad]
    if not older:
        raise RollbackError(f"no good version older than {current} in {model_dir}")
    target = older[0]
    try:
        set_latest(model_dir, target)
    except CheckpointError as exc:
        raise RollbackError(str(exc)) from None
    state.mark_bad_version(current, "rolled back by the operator")
    log.warning("hotload.rolled_back", from_version=current, to_version=target)
    return current, target
