"""The char-RNN's settings, in a module of their own so parsing them imports no TensorFlow.

The bot's config embeds this class as `model.char_rnn`; the trainer parses the request's
`model_config` and a checkpoint's `config.json` with it (see `training.settings`).
"""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal

from pydantic import Field

from training.settings import ModelSettings


class CharRNNConfig(ModelSettings):
    """Architecture and training settings; saved with every checkpoint."""

    family: ClassVar[str] = "char_rnn"

    embedding_dim: Annotated[int, Field(gt=0)] = Field(
        default=64, description="Width of each character's embedding."
    )
    units: Annotated[int, Field(gt=0)] = Field(default=256, description="Width of each layer.")
    layers: Annotated[int, Field(ge=1, le=4)] = Field(
        default=1, description="Stacked recurrent layers."
    )
    cell: Literal["gru", "lstm"] = Field(
        default="gru", description="gru trains through the fused fast path; lstm is stock Keras."
    )
    seq_len: Annotated[int, Field(ge=8)] = Field(
        default=100, description="Characters per training window."
    )
    batch_size: Annotated[int, Field(gt=0)] = Field(default=64, description="Windows per step.")
    epochs: Annotated[int, Field(gt=0)] = 10
    learning_rate: Annotated[float, Field(gt=0)] = Field(default=3e-3, description="Adam's.")
    val_fraction: Annotated[float, Field(ge=0, lt=1)] = Field(
        default=0.1, description="Share of tweets held out for validation (by id hash)."
    )
    dropout: Annotated[float, Field(ge=0, lt=1)] = 0.0
    seed: Annotated[int, Field(ge=0)] = Field(
        default=0, description="Weights, window offsets and shuffles are functions of it."
    )
    early_stopping_patience: Annotated[int, Field(ge=0)] = Field(
        default=5, description="Epochs without a better validation loss before stopping; 0: off."
    )
    checkpoint_interval: Annotated[int, Field(ge=0)] = Field(
        default=500, description="Steps between checkpoints; 0: at epoch ends only."
    )
    # XLA: ~10-30% more chars/s at 256 units, but seconds of compiling first (slower for
    # tiny models and short runs), so opt-in.
    jit_compile: bool = Field(
        default=False, description="XLA: faster for large models and long runs, slow to start."
    )
