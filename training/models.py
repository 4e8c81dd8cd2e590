"""The interface both model families implement, and a loader that imports them lazily.

The daemon only ever talks to a :class:`TextModel`; which framework sits behind it is decided
by the checkpoint's ``model_kind``. Importing this module must stay cheap (no TensorFlow, no
PyTorch) so the daemon and CLI start fast; the heavy import happens in :func:`load_model`.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

MODEL_KINDS: tuple[str, ...] = ("char_rnn", "gpt2")


@runtime_checkable
class TextModel(Protocol):
    """A trained text generator, whatever its framework."""

    kind: str

    def generate(
        self,
        seeds: Sequence[str],
        *,
        max_length: int,
        temperature: float,
        top_k: int = 0,
        top_p: float = 1.0,
        repetition_penalty: float = 1.0,
        context: str | Sequence[str] | None = None,
        max_new_tokens: int | None = None,
        random_seed: int | None = None,
    ) -> list[str]:
        """Return one continuation per seed, computed as one batch.

        Each result starts with its seed and ends at the end-of-tweet boundary (not
        included), after ``max_length`` characters or after ``max_new_tokens`` sampled
        tokens, whichever comes first. ``context`` (one text for every row, or one per seed)
        is read first as the previous tweet, so a reply answers it; it is never part of the
        result. The sampling controls are :class:`training.sampling.Sampling`'s (0 and 1.0
        switch a control off); a bad value is a ValueError naming it.
        """
        ...

    def save(self, directory: Path) -> None:
        """Write every file needed to :func:`load_model` this model again into ``directory``."""
        ...


@dataclass(frozen=True)
class TrainResult:
    """What a training run reached; goes into the manifest."""

    step: int
    train_loss: float
    val_loss: float | None


@dataclass(frozen=True)
class EpochReport:
    """One epoch's numbers, handed to a trainer's ``on_epoch`` callback for logging.

    ``complete`` is False when a stop request cut the epoch short; the entry point only
    publishes a model once at least one epoch completed.
    """

    epoch: int
    step: int
    train_loss: float
    val_loss: float | None
    val_bits_per_char: float | None
    seconds: float
    complete: bool


def load_model(kind: str, directory: Path) -> TextModel:
    """Load a saved model of ``kind`` from ``directory``, importing its framework only now.

    A missing or corrupt file is a :class:`training.publish.ModelLoadError`.
    """
    if kind == "char_rnn":
        from training.char_rnn import CharRNN

        return CharRNN.load(Path(directory))
    if kind == "gpt2":
        from training.gpt2 import GPT2

        return GPT2.load(Path(directory))
    raise ValueError(f"unknown model kind {kind!r}; expected one of {', '.join(MODEL_KINDS)}")


def import_framework(kind: str) -> None:
    """Import ``kind``'s family module and so its framework: the slow part of a load.

    A model worker does this in its nicer loading thread, then calls
    :func:`start_thread_pools` from the thread that will serve.
    """
    modules = {"char_rnn": "training.char_rnn", "gpt2": "training.gpt2"}
    if kind not in modules:
        raise ValueError(f"unknown model kind {kind!r}; expected one of {', '.join(MODEL_KINDS)}")
    importlib.import_module(modules[kind])


def start_thread_pools(kind: str) -> None:
    """Create the framework's compute threads now, from the calling thread.

    Linux threads inherit their creator's niceness, and TensorFlow creates its process-wide
    compute pool at the first eager op: were that the loading thread's op, every later
    request would run at the loader's lower priority, and the next version's load would
    compete with it as an equal. PyTorch's OpenMP team belongs to the thread that runs the
    parallel region (the serving thread), so it needs nothing here.
    """
    if kind == "char_rnn":
        import tensorflow as tf

        tf.add(0.0, 0.0)  # the first eager op creates the pools
