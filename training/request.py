"""What a training backend asks the trainer to run: one type, built by every launcher.

The same request goes to a local child process (`infra.backends.local`), to a spot instance
(`infra.backends.aws`, as ``request.json`` on S3) and to the trainer in this process
(`parrotbot train`). On the wire it is one JSON object::

    {"model_kind": "char_rnn" | "gpt2", "datasets": ["/abs/datasets/a.jsonl"],
     "checkpoints_dir": "/abs/checkpoints", "model_config": {...}, "trigger": "first_start",
     "weights": [1.0], "resume": false, "cleaning": {...}}

`model_config` and `trigger` may be absent or null; `weights`, `resume` and `cleaning` may be
absent. Unknown keys are tolerated with a warning: a launcher may tag requests (job ids)
without the trainer knowing them.

`model_config` stays a plain mapping here and is parsed into the family's settings by
`settings()`, in the trainer: a job with bad settings then fails as a training failure with
the trainer's message, as it always has, rather than in the launcher that builds the request.

`training` imports neither `bot` nor `infra`, so `for_job` takes any object with a job's
fields (`infra.job.Job` is one; see `JobLike`) rather than the job type itself.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, Protocol

import structlog
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    Strict,
    ValidationError,
    field_serializer,
    field_validator,
    model_validator,
)

from training.cleaning import DEFAULT_OPTIONS, CleaningOptions
from training.models import MODEL_KINDS

log = structlog.get_logger(__name__)

WIRE_FIELDS = (
    "model_kind", "datasets", "checkpoints_dir", "model_config", "trigger", "weights", "resume",
    "cleaning",
)  # fmt: skip


class RequestError(ValueError):
    """The training request is malformed; the message says which field."""


class JobLike(Protocol):
    """What `TrainRequest.for_job` reads from a job (`infra.job.JobSpec` has these fields)."""

    @property
    def model_kind(self) -> str: ...
    @property
    def datasets(self) -> Sequence[str]: ...
    @property
    def model_config(self) -> Mapping[str, Any]: ...
    @property
    def trigger(self) -> str: ...
    @property
    def weights(self) -> Sequence[float] | None: ...
    @property
    def cleaning(self) -> Mapping[str, Any]: ...


Number = Annotated[float, Strict()]  # an int or a float; never a bool or a numeric string


class TrainRequest(BaseModel):
    """A validated request. Frozen: what a launcher wrote is what the trainer runs."""

    model_config = ConfigDict(
        frozen=True,
        extra="ignore",
        protected_namespaces=(),
        validate_by_name=True,
        validate_by_alias=True,
    )

    model_kind: str
    datasets: Annotated[tuple[Path, ...], Field(min_length=1)]
    checkpoints_dir: Path
    # On the wire `model_config` (a name pydantic keeps for itself on a model).
    model_settings: dict[str, Any] = Field(default_factory=dict, alias="model_config")
    trigger: Annotated[str, Strict()] | None = None
    weights: tuple[Number, ...] | None = None
    resume: Annotated[bool, Strict()] = False
    cleaning: CleaningOptions = DEFAULT_OPTIONS

    @classmethod
    def for_job(
        cls,
        job: JobLike,
        *,
        checkpoints_dir: str | Path,
        datasets: Sequence[str | Path] | None = None,
        resume: bool = False,
    ) -> TrainRequest:
        """The request for one attempt of `job`: its datasets (or `datasets`, the same files
        where the trainer will see them, as on a spot instance's volume) and settings."""
        return cls(
            model_kind=job.model_kind,
            datasets=tuple(job.datasets if datasets is None else datasets),
            checkpoints_dir=checkpoints_dir,
            model_settings=dict(job.model_config),
            trigger=job.trigger,
            weights=None if job.weights is None else tuple(job.weights),
            resume=resume,
            cleaning=job.cleaning,
        )

    @classmethod
    def from_dict(cls, raw: Any) -> TrainRequest:
        """Parse a decoded request; every fault is a RequestError naming the field."""
        if not isinstance(raw, Mapping):
            raise RequestError("request must be a JSON object")
        unknown = sorted(set(raw) - set(WIRE_FIELDS))
        if unknown:
            log.warning("train.request_unknown_keys", keys=unknown)
        try:
            return cls.model_validate(raw, by_alias=True, by_name=False)
        except ValidationError as exc:
            raise RequestError(_describe(exc)) from None

    @classmethod
    def from_json(cls, text: str | bytes) -> TrainRequest:
        try:
            raw = json.loads(text)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise RequestError(f"request is not JSON ({exc})") from exc
        return cls.from_dict(raw)

    def to_dict(self) -> dict[str, Any]:
        """The wire form: plain JSON types, `model_config` by its wire name."""
        return self.model_dump(mode="json", by_alias=True)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    def resolved(self) -> TrainRequest:
        """Paths made absolute and real, so log lines and errors name real files."""
        return self.model_copy(
            update={
                "datasets": tuple(path.resolve() for path in self.datasets),
                "checkpoints_dir": self.checkpoints_dir.resolve(),
            }
        )

    def settings(self) -> Any:
        """The family's typed settings, parsed strictly; importing them loads no framework."""
        try:
            if self.model_kind == "char_rnn":
                from training.char_rnn_config import CharRNNConfig

                return CharRNNConfig.from_dict(self.model_settings)
            from training.gpt2_config import GPT2Settings

            return GPT2Settings.from_dict(self.model_settings)
        except (TypeError, ValueError) as exc:
            raise RequestError(f"'model_config': {exc}") from exc

    @field_validator("model_kind")
    @classmethod
    def _known_kind(cls, kind: str) -> str:
        if kind not in MODEL_KINDS:
            raise ValueError(
                f"unknown model_kind {kind!r}; expected one of {', '.join(MODEL_KINDS)}"
            )
        return kind

    @field_validator("datasets", mode="before")
    @classmethod
    def _dataset_paths(cls, value: Any) -> Any:
        if not isinstance(value, list | tuple) or not value or not all(map(_is_path, value)):
            raise ValueError("'datasets' must be a non-empty list of file paths")
        return value

    @field_validator("checkpoints_dir", mode="before")
    @classmethod
    def _checkpoints_path(cls, value: Any) -> Any:
        if not _is_path(value):
            raise ValueError("'checkpoints_dir' must be a path")
        return value

    @field_validator("weights", mode="before")
    @classmethod
    def _numbers(cls, value: Any) -> Any:
        if value is not None and (
            not isinstance(value, list | tuple)
            or not all(isinstance(w, int | float) and not isinstance(w, bool) for w in value)
        ):
            raise ValueError("'weights' must be a list of numbers, one per dataset")
        return value

    @field_validator("model_settings", mode="before")
    @classmethod
    def _settings_object(cls, value: Any) -> Any:
        if value is None:
            return {}
        if not isinstance(value, Mapping):
            raise ValueError("'model_config' must be an object")
        return dict(value)

    @field_validator("cleaning", mode="before")
    @classmethod
    def _cleaning_options(cls, value: Any) -> CleaningOptions:
        if isinstance(value, CleaningOptions):
            return value
        try:
            return CleaningOptions.from_dict(value)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"'cleaning': {exc}") from exc

    @field_serializer("cleaning")
    def _cleaning_dict(self, cleaning: CleaningOptions) -> dict[str, Any]:
        return cleaning.to_dict()

    @model_validator(mode="after")
    def _one_weight_per_dataset(self) -> TrainRequest:
        if self.weights is not None and len(self.weights) != len(self.datasets):
            raise ValueError("'weights' must be a list of numbers, one per dataset")
        return self


def _is_path(value: Any) -> bool:
    return isinstance(value, Path) or (isinstance(value, str) and bool(value))


def _describe(exc: ValidationError) -> str:
    """One line: the missing fields together, then each bad one by its wire name."""
    errors = exc.errors()
    missing = [str(e["loc"][0]) for e in errors if e["type"] == "missing"]
    problems = [f"request is missing {', '.join(missing)}"] if missing else []
    for error in errors:
        if error["type"] == "missing":
            continue
        name = str(error["loc"][0]) if error["loc"] else ""
        message = error["msg"].removeprefix("Value error, ")
        if name and f"'{name}'" not in message and "model_kind" not in message:
            message = f"'{name}': {message}"
        problems.append(message)
    return "; ".join(problems)
