"""What both model families' settings share: one pydantic model each, parsed two ways.

Each family defines its settings once (`training.char_rnn_config.CharRNNConfig`,
`training.gpt2.GPT2Settings`); the bot's config embeds the same classes under `model.*`, so
the operator's limits and the trainer's are one set. Pydantic only: importing this imports
no framework, so the daemon and the CLI can validate settings without TensorFlow or PyTorch.

Two doors, on purpose:

- The YAML config validates them as every other config section (pydantic's lax mode): YAML
  1.1 reads ``3e-4`` as a string, and the operator's file is where such forms are written.
- `from_dict` (a training request, a checkpoint's saved settings) is strict: that JSON is
  written by code from an already validated model, so ``"32"`` for an integer or ``1`` for
  a flag is a bug or a tampered file, refused rather than coerced.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar, Self

from pydantic import BaseModel, ConfigDict, ValidationError


class ModelSettings(BaseModel):
    """Base of each family's settings: frozen, unknown keys are errors (a typo never falls
    back to a default silently); ``to_dict`` is the resolved set saved with every checkpoint."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    family: ClassVar[str]

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> Self:
        """Strictly parsed settings; a ValueError naming every bad or unknown key."""
        if not isinstance(raw, Mapping):
            raise ValueError(f"{cls.family} config must be a mapping, got {type(raw).__name__}")
        try:
            return cls.model_validate(dict(raw), strict=True)
        except ValidationError as exc:
            raise ValueError(cls._describe(exc)) from None

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump()

    @classmethod
    def _describe(cls, exc: ValidationError) -> str:
        """One line: the unknown keys together (as before), then each bad value by name."""
        unknown = sorted(str(e["loc"][0]) for e in exc.errors() if e["type"] == "extra_forbidden")
        problems = [f"unknown {cls.family} config keys: {', '.join(unknown)}"] if unknown else []
        for error in exc.errors():
            if error["type"] == "extra_forbidden":
                continue
            name = ".".join(str(part) for part in error["loc"])
            where = f"{cls.family} config {name!r}" if name else f"{cls.family} config"
            message = error["msg"].removeprefix("Value error, ")
            got = f" (got {error['input']!r})" if name else ""
            problems.append(f"{where}: {message}{got}")
        return "; ".join(problems)
