"""The generation service: the model serving now, and the texts it writes for posts and replies.

The serving model is one reference, replaced whole by the hot-loader, so a post or reply in
progress always finishes on the model it started with.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING

import structlog

from bot.config import GenerationConfig
from bot.platform.base import Tweet
from bot.rules import sanitize_generated

if TYPE_CHECKING:
    from training.models import TextModel
    from training.publish import Manifest

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class LoadedModel:
    version: str
    manifest: Manifest
    model: TextModel


@dataclass(frozen=True)
class Generated:
    text: str
    model_version: str


class GenerationService:
    def __init__(self, settings: GenerationConfig) -> None:
        self.settings = settings
        self._current: LoadedModel | None = None
        # Keras models are not safe to call from two threads at once; posts and replies
        # run on different scheduler threads.
        self._lock = threading.Lock()

    @property
    def current(self) -> LoadedModel | None:
        return self._current

    def swap(self, loaded: LoadedModel) -> None:
        """Put a verified, smoke-tested model into service: one reference assignment."""
        self._current = loaded

    def generate_post(self) -> Generated | None:
        return self._generate(seed="")

    def generate_reply(self, mention: Tweet) -> Generated | None:
        # Conditioning on the mention's text comes with the serving work; for now a reply
        # is a fresh generation, which is what the char-RNN does best anyway.
        return self._generate(seed="")

    def _generate(self, seed: str) -> Generated | None:
        loaded = self._current
        if loaded is None:
            return None
        settings = self.settings
        for attempt in range(1, settings.attempts + 1):
            with self._lock:
                (raw,) = loaded.model.generate(
                    [seed], max_length=settings.max_length, temperature=settings.temperature
                )
            # Never @someone, and never a cleaning placeholder: see bot.rules.
            text = sanitize_generated(raw)
            if text and len(text) <= settings.max_length:
                return Generated(text=text, model_version=loaded.version)
            log.debug("generation.rejected", attempt=attempt, length=len(text))
        log.warning("generation.gave_up", attempts=settings.attempts, version=loaded.version)
        return None
