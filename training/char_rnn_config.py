"""The char-RNN's settings, in a module of their own so parsing them imports no TensorFlow."""

from __future__ import annotations

import dataclasses
from typing import ClassVar

from training.settings import StrictSettings

_INT_FIELDS = ("embedding_dim", "units", "layers", "seq_len", "batch_size", "epochs", "seed")
# May be 0: patience 0 turns early stopping off, interval 0 checkpoints at epoch ends only.
_COUNT_FIELDS = ("early_stopping_patience", "checkpoint_interval")


@dataclasses.dataclass(frozen=True)
class CharRNNConfig(StrictSettings):
    """Architecture and training settings; saved with every checkpoint."""

    family: ClassVar[str] = "char_rnn"

    embedding_dim: int = 64
    units: int = 256
    layers: int = 1
    cell: str = "gru"
    seq_len: int = 100
    batch_size: int = 64
    epochs: int = 10
    learning_rate: float = 3e-3
    val_fraction: float = 0.1
    seed: int = 0
    dropout: float = 0.0
    early_stopping_patience: int = 5
    checkpoint_interval: int = 500
    # XLA: ~10-30% more chars/s at 256 units, but seconds of compiling first (slower for
    # tiny models and short runs), so opt-in.
    jit_compile: bool = False

    def __post_init__(self) -> None:
        for name in (*_INT_FIELDS, *_COUNT_FIELDS):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(f"char_rnn config {name!r} must be an integer, got {value!r}")
            if value < (0 if name in (*_COUNT_FIELDS, "seed") else 1):
                raise ValueError(f"char_rnn config {name!r} is out of range: {value}")
        if not isinstance(self.jit_compile, bool):
            raise ValueError(
                f"char_rnn config 'jit_compile' must be true or false: {self.jit_compile!r}"
            )
        for name in ("learning_rate", "val_fraction", "dropout"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ValueError(f"char_rnn config {name!r} must be a number, got {value!r}")
        if self.cell not in ("gru", "lstm"):
            raise ValueError(f"char_rnn config 'cell' must be 'gru' or 'lstm', got {self.cell!r}")
        if not self.learning_rate > 0:
            raise ValueError(f"char_rnn config 'learning_rate' must be > 0: {self.learning_rate}")
        if not 0 <= self.val_fraction < 1 or not 0 <= self.dropout < 1:
            raise ValueError("char_rnn config 'val_fraction' and 'dropout' must be in [0, 1)")
