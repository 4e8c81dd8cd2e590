"""GPT-2's settings, in a module of their own so parsing them imports neither torch nor numpy.

The bot's config embeds `GPT2Settings` as `model.gpt2`, so loading a config stays light.
"""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal

from pydantic import Field, model_validator

from training.settings import ModelSettings

Precision = Literal["auto", "fp32", "bf16", "fp16"]


class GPT2Settings(ModelSettings):
    """Model and training settings; the resolved set is saved with every checkpoint.

    The bot's config embeds this class as `model.gpt2` (see `training.settings`).
    """

    family: ClassVar[str] = "gpt2"

    base_model: str | None = Field(
        default="gpt2",
        description="Hub name (gpt2, distilgpt2, ...) or local folder; null: from scratch.",
    )
    n_layer: Annotated[int, Field(ge=1, le=48)] = Field(
        default=4, description="From-scratch size: transformer blocks."
    )
    n_head: Annotated[int, Field(ge=1, le=64)] = Field(
        default=4, description="From-scratch size: attention heads (must divide n_embd)."
    )
    n_embd: Annotated[int, Field(ge=8)] = Field(
        default=256, description="From-scratch size: model width."
    )
    vocab_size: Annotated[int, Field(ge=300)] = Field(
        default=8192, description="From scratch: the byte-level BPE trained on the dataset "
        "(256 bytes + merges)."
    )
    block_size: Annotated[int, Field(ge=4, le=1024)] = Field(
        default=128, description="Tokens per packed block."
    )
    batch_size: Annotated[int, Field(gt=0)] = Field(
        default=16, description="Blocks per micro-batch (per rank)."
    )
    grad_accum: Annotated[int, Field(gt=0)] = Field(
        default=1, description="Micro-batches per optimizer step."
    )
    learning_rate: Annotated[float, Field(gt=0)] = Field(
        default=3e-4, description="Peak, after a linear warm-up; cosine decay after it."
    )
    min_lr_ratio: Annotated[float, Field(ge=0, le=1)] = Field(
        default=0.1, description="The decay ends at this share of the peak."
    )
    warmup_steps: Annotated[int, Field(ge=0)] = Field(
        default=50, description="At most a tenth of the run."
    )
    weight_decay: Annotated[float, Field(ge=0)] = Field(
        default=0.1, description="AdamW's, on matrices only."
    )
    grad_clip: Annotated[float, Field(gt=0)] = Field(
        default=1.0, description="Global gradient-norm clip."
    )
    dropout: Annotated[float, Field(ge=0, lt=1)] = 0.1
    epochs: Annotated[int, Field(gt=0)] = 3
    max_steps: Annotated[int, Field(gt=0)] | None = Field(
        default=None, description="Optimizer steps; wins over epochs when set."
    )
    eval_interval: Annotated[int, Field(gt=0)] = Field(
        default=50, description="Optimizer steps between validations."
    )
    checkpoint_interval: Annotated[int, Field(gt=0)] = Field(
        default=50, description="Optimizer steps between checkpoints."
    )
    early_stopping_patience: Annotated[int, Field(ge=0)] = Field(
        default=5,
        description="Evaluations without a better validation loss before stopping; 0: off.",
    )
    val_fraction: Annotated[float, Field(ge=0, lt=1)] = Field(
        default=0.1, description="Share of tweets held out for validation (by id hash)."
    )
    precision: Precision = Field(
        default="auto",
        description="auto: bf16 where the GPU or CPU has it, else fp16 (GPU) or fp32 (CPU).",
    )
    compile: bool = Field(default=False, description="Wrap the model in torch.compile.")
    device: str = Field(default="auto", description="auto, cpu, cuda, cuda:1, ...")
    seed: Annotated[int, Field(ge=0)] = 0
    log_interval: Annotated[int, Field(gt=0)] = Field(
        default=10, description="Optimizer steps between train.log rows."
    )

    @model_validator(mode="after")
    def _heads_divide_width(self) -> GPT2Settings:
        if self.n_embd % self.n_head:
            raise ValueError("n_embd must be a multiple of n_head")
        return self
