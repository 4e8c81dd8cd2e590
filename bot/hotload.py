"""Hot-loading: follow `LATEST`, and put each new complete version into service.

A version is verified (manifest and every file's sha256), loaded off the serving path,
asked for a test generation, and only then swapped in. A version that fails any step is
recorded in Redis as bad and never tried again; the old model keeps serving.

The serving thread must not slow down while a version loads. On a small machine it loses
time in two ways: to the CPU the loader takes, and to the GIL, which the loader's pure-Python
parts (building the Keras graph, tracing the sampling step, indexing the corpus) hold for a
switch interval each time the serving thread wants it back between two framework calls. So
the load runs in its own thread at a lower OS priority, the novelty index is reused while the
new version was trained on the same data (the manifest's dataset hash), and the smoke test
traces the sampling step off the serving path. Peak memory stays at two models: the new one
is built while the old one serves, and the old one is dropped at the swap.
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
from bot.pool import TweetPool
from bot.state import BotState

log = structlog.get_logger(__name__)

T = TypeVar("T")
# How much nicer than the daemon the loader thread runs: on a busy two-core box the serving
# thread then gets the CPU first whenever both are runnable.
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

    def check(self) -> bool:
        """Load what `LATEST` names if it is new; True when a new version went into service.

        With nothing serving yet (a fresh start), a broken `LATEST` falls back to the newest
        version that verifies, so one bad publish cannot keep the bot mute. With an older
        version serving (a standby that preloaded before the last good publish, then took
        over), a refused `LATEST` falls back to the newest good version newer than it, so a
        failover does not quietly go back to an older model.
        """
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
        from training.models import load_model
        from training.publish import verify_version

        folder = self.model_dir / version
        log.info("hotload.loading", version=version, folder=str(folder))

        def load() -> tuple[Any, Any, str, NoveltyIndex]:
            manifest = verify_version(folder, expected_kind=self.model_kind)
            novelty = self._novelty_index(manifest.dataset_hash)
            model = load_model(self.model_kind, folder)
            return manifest, model, _smoke_test(model), novelty

        try:
            manifest, model, sample, novelty = run_in_background(load)
        except Exception as exc:  # any failure must leave the old model serving
            reason = f"{type(exc).__name__}: {exc}"
            self.state.mark_bad_version(version, reason)
            metrics.MODEL_REFUSED.inc()
            log.error("hotload.refused", version=version, reason=reason)
            return False
        self.service.swap(
            LoadedModel(version=version, manifest=manifest, model=model, novelty=novelty)
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
        )
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


SMOKE_SAMPLES = 4


def _smoke_test(model: Any) -> str:
    """A short batch from the new model: it must generate, and not only empty texts.

    Weights full of NaN (what an fp16 overflow leaves behind) load fine and then sample
    nothing but end-of-tweet tokens; this is where such a version is caught.
    """
    samples = model.generate([""] * SMOKE_SAMPLES, max_length=40, temperature=1.0)
    if len(samples) != SMOKE_SAMPLES or not all(isinstance(s, str) for s in samples):
        raise TypeError(f"smoke generation returned {samples!r:.80}, not {SMOKE_SAMPLES} texts")
    if not any(sample.strip() for sample in samples):
        raise ValueError("smoke generation produced only empty texts")
    return max(samples, key=len)


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
