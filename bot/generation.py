"""The generation service: the model serving now, and filtered texts for posts and replies.

The serving model is one reference, replaced whole by the hot-loader, so a post or reply in
progress always finishes on the model it started with. Candidates are sampled as one batch
and the first one that passes every filter is used. Every batch is counted by whoever asked
for it (`record_batch`): what was checked, accepted and rejected by which filter, in Redis (what
`parrotbot status` shows) and on `/metrics`.
"""

from __future__ import annotations

import re
import threading
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import structlog

from bot import metrics
from bot.config import FilterConfig, GenerationConfig
from bot.filters import CandidateFilter, NoveltyIndex, RejectReason
from bot.platform.base import Tweet

if TYPE_CHECKING:
    from bot.model_worker import WorkerStats
    from bot.state import BotState
    from training.models import TextModel
    from training.publish import Manifest

log = structlog.get_logger(__name__)


_LEADING_HANDLES = re.compile(r"^(?:\s*[@＠][A-Za-z0-9_]{1,15}(?![A-Za-z0-9_]))+")


def mention_prompt(text: str, handle: str = "") -> str:
    """A mention's content: without the @handles it opens with, nor the bot's own handle.

    "@parrotbot @alice what do you think?" becomes "what do you think?". The handles that
    open a tweet only say whom it is addressed to; fed to the model they would pull the
    reply towards writing @handles, which the filters reject anyway.
    """
    text = _LEADING_HANDLES.sub("", text)
    if handle:
        own = rf"(?<![A-Za-z0-9_])[@＠]{re.escape(handle)}(?![A-Za-z0-9_])"
        text = re.sub(own, "", text, flags=re.IGNORECASE)
    return " ".join(text.split())


@dataclass(frozen=True)
class LoadedModel:
    version: str
    manifest: Manifest
    model: TextModel
    novelty: NoveltyIndex | None = None


@dataclass(frozen=True)
class Generated:
    text: str
    model_version: str


@dataclass
class Batch:
    """One round of sampling: what passed, and how many failed each filter."""

    version: str
    accepted: list[str] = field(default_factory=list)
    rejected: Counter[str] = field(default_factory=Counter)

    @property
    def checked(self) -> int:
        return len(self.accepted) + sum(self.rejected.values())


class GenerationService:
    def __init__(self, settings: GenerationConfig, filters: FilterConfig) -> None:
        self.settings = settings
        self.filters = filters
        self._current: LoadedModel | None = None
        # Keras and torch models are not safe to call from two threads at once; posts,
        # replies and pool refills run on different scheduler threads.
        self._lock = threading.Lock()

    @property
    def current(self) -> LoadedModel | None:
        return self._current

    def swap(self, loaded: LoadedModel) -> LoadedModel | None:
        """Put a verified, smoke-tested model into service: one reference assignment.

        Returns the model it replaces, for the caller to stop once its request in flight
        is answered (a request already running keeps the model it started with).
        """
        old, self._current = self._current, loaded
        return old

    def worker_stats(self) -> WorkerStats | None:
        """The serving model's worker process (None: no model, or one served in-process)."""
        loaded = self._current
        stats = getattr(loaded.model, "stats", None) if loaded is not None else None
        return stats() if callable(stats) else None

    def close(self) -> None:
        """Stop the serving model's worker, if it has one (the daemon is stopping)."""
        loaded, self._current = self._current, None
        close = getattr(loaded.model, "close", None) if loaded is not None else None
        if callable(close):
            close()

    def sample(
        self, count: int, *, recent: Sequence[str] = (), seed: str = "", context: str = ""
    ) -> Batch | None:
        """`count` candidates from the serving model as one batch, filtered; None if no model.

        `context` is what the model reads first as the previous tweet (a reply's mention).
        """
        loaded = self._current
        if loaded is None:
            return None
        with self._lock, metrics.GENERATION_SECONDS.time():
            raw = loaded.model.generate(
                [seed] * count, context=context or None, **self.settings.sampling()
            )
        check = CandidateFilter(self.filters, loaded.novelty).check
        batch = Batch(version=loaded.version)
        seen: set[str] = set()
        for text in (" ".join(candidate.split()) for candidate in raw):
            verdict = check(text, recent=[*recent, *seen])
            if verdict.accepted:
                batch.accepted.append(text)
                seen.add(text)
            else:
                batch.rejected[verdict.reason] += 1
                log.debug("generation.rejected", reason=str(verdict.reason), detail=verdict.detail)
        return batch

    def generate_post(self, *, recent: Sequence[str] = ()) -> tuple[Generated | None, Batch | None]:
        return self._first(self.sample(self.settings.attempts, recent=recent))

    def generate_reply(
        self, mention: Tweet, *, handle: str = "", recent: Sequence[str] = ()
    ) -> tuple[Generated | None, Batch | None]:
        """A reply that answers `mention`: the model reads its text before writing.

        `handle` is the bot's own; it and the @handles that open the mention are addressing,
        not content, so the model does not see them (see `mention_prompt`).
        """
        context = mention_prompt(mention.text, handle)
        return self._first(self.sample(self.settings.attempts, recent=recent, context=context))

    def provenance(self, generated: Generated, batch: Batch) -> dict[str, Any]:
        """Where a text came from, as a held item shows it to the operator: the version and
        its manifest, the training tweet nearest to it and their overlap, the sampling
        settings, and what the filters made of its batch."""
        loaded = self._current
        found: dict[str, Any] = {"model_version": generated.model_version}
        if loaded is not None and loaded.version == generated.model_version:
            manifest = loaded.manifest
            found |= {
                "step": manifest.step,
                "val_loss": manifest.val_loss,
                "dataset_hash": manifest.dataset_hash,
            }
            if loaded.novelty is not None:
                nearest = loaded.novelty.nearest(generated.text)
                found["nearest_training_tweet"] = asdict(nearest) if nearest else None
        skipped = {
            RejectReason.MENTION: self.filters.allow_mentions,
            RejectReason.URL: self.filters.allow_urls,
            RejectReason.NOT_NOVEL: loaded is None or loaded.novelty is None,
        }
        return found | {
            "sampling": self.settings.sampling(),
            "filters": {
                "passed": [str(reason) for reason in RejectReason if not skipped.get(reason)],
                "batch_checked": batch.checked,
                "batch_accepted": len(batch.accepted),
                "batch_rejected": {str(k): v for k, v in batch.rejected.items()},
            },
        }

    @staticmethod
    def _first(batch: Batch | None) -> tuple[Generated | None, Batch | None]:
        if batch is None or not batch.accepted:
            return None, batch
        return Generated(text=batch.accepted[0], model_version=batch.version), batch


def record_batch(state: BotState, batch: Batch | None) -> None:
    """Count a batch's filter verdicts in Redis and on /metrics (a batch of nothing: no-op)."""
    if batch is not None and batch.checked:
        state.count_filtered(batch.checked, len(batch.accepted), batch.rejected)
        metrics.CANDIDATES_ACCEPTED.inc(len(batch.accepted))
        for reason, count in batch.rejected.items():
            metrics.CANDIDATES_REJECTED.labels(reason=reason).inc(count)
