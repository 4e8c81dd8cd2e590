"""What a training backend is asked to run: the same JSON for a local process or a spot VM."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class TrainingRequest:
    model_kind: str
    datasets: list[str]
    checkpoints_dir: str
    model_config: dict[str, Any] = field(default_factory=dict)
    trigger: str = "manual"
    # One sampling weight per dataset (a target's `weight`); None: all equal.
    weights: list[float] | None = None
    # Continue the newest run folder of this model kind (after a spot interruption, say).
    resume: bool = False
    # training.cleaning options; empty: the defaults.
    cleaning: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True)
