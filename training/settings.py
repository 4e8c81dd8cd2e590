"""What both model families' settings share: strict parsing from JSON/YAML and back."""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar, Self


class StrictSettings:
    """Mixin for frozen dataclasses: unknown keys are errors, so a typo never silently
    falls back to a default; ``to_dict`` is the resolved set saved with every checkpoint."""

    family: ClassVar[str]

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Self:
        known = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        unknown = sorted(set(raw) - known)
        if unknown:
            raise ValueError(f"unknown {cls.family} config keys: {', '.join(unknown)}")
        return cls(**raw)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)  # type: ignore[call-overload]
