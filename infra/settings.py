"""Settings infra/ needs, as strict pydantic models the bot's config embeds (`training.aws`).

They live here rather than in bot/config.py because the launcher and `parrotbot infra` use
them without the rest of the bot; bot/config.py imports them (bot → infra, never back).
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

# S3's bucket naming rules, the part that a typo usually breaks.
BUCKET_PATTERN = r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$"
DEFAULT_BOOTSTRAP = (
    # The Deep Learning AMIs ship Python with TensorFlow and PyTorch; the trainer needs little more.
    "python3 -m pip install --quiet 'structlog>=24.1' 'numpy>=1.26'",
)


class _Backoff(BaseModel):
    """Waits that double after each failure, from `first_seconds` up to `max_seconds`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    first_seconds: Annotated[float, Field(gt=0)]
    max_seconds: Annotated[float, Field(gt=0)]

    @field_validator("max_seconds")
    @classmethod
    def _not_below_first(cls, value: float, info: ValidationInfo) -> float:
        first = info.data.get("first_seconds")
        if first is not None and value < first:
            raise ValueError(f"{value:g} is below first_seconds ({first:g}): the waits only grow")
        return value

    def delay(self, failures: int) -> float:
        """The wait after the `failures`-th failure in a row (1: `first_seconds`)."""
        return min(self.max_seconds, self.first_seconds * 2 ** min(max(failures - 1, 0), 62))


class LaunchRetry(_Backoff):
    """A launch EC2 cannot serve now (no spot capacity, throttled): the job waits and retries."""

    first_seconds: Annotated[float, Field(gt=0)] = Field(
        default=60.0, description="Wait after the first launch that found no spot capacity."
    )
    max_seconds: Annotated[float, Field(gt=0)] = Field(
        default=900.0, validate_default=True, description="The waits double up to this."
    )
    # Spot capacity for a GPU type usually returns within hours, and a retrain is seldom urgent.
    give_up_seconds: Annotated[float, Field(ge=0)] = Field(
        default=12 * 3600.0,
        description="Fail the job when no instance could be had for this long; 0: at once.",
    )


class DownloadRetry(_Backoff):
    """A published version's download that S3 throttled, failed (5xx) or cut off."""

    first_seconds: Annotated[float, Field(gt=0)] = 1.0
    max_seconds: Annotated[float, Field(gt=0)] = Field(default=10.0, validate_default=True)
    attempts: Annotated[int, Field(ge=1, le=20)] = Field(
        default=4,
        description="Tries per file in one checkpoint poll; then the next poll tries again.",
    )


class AwsSettings(BaseModel):
    """Where and how spot training runs. No credentials: boto3's own chain provides them."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    region: str = "us-east-1"
    bucket: Annotated[str, Field(pattern=BUCKET_PATTERN)] = Field(
        description="Private bucket for datasets and published versions (created by setup)."
    )
    prefix: Annotated[str, Field(pattern=r"^[A-Za-z0-9._-]+(/[A-Za-z0-9._-]+)*$")] = "parrotbot"
    ami_id: Annotated[str, Field(pattern=r"^ami-[0-9a-f]{8,17}$")] = Field(
        description="A Deep Learning AMI in `region` (Python with TensorFlow/PyTorch)."
    )
    instance_types: Annotated[list[str], Field(min_length=1)] = [
        "g5.xlarge",
        "g4dn.xlarge",
        "g6.xlarge",
    ]
    max_price: Annotated[float, Field(gt=0)] | None = Field(
        default=None, description="USD per instance-hour; absent: the on-demand price caps it."
    )
    max_run_seconds: Annotated[int, Field(gt=0)] = 6 * 3600
    volume_size_gb: Annotated[int, Field(ge=1, le=16384)] = 100
    availability_zones: list[str] = Field(
        default_factory=list, description="Allowed zones in order of preference; empty: all."
    )
    subnet_ids: list[str] = Field(
        default_factory=list, description="Subnets to launch in; empty: the default subnets."
    )
    security_group_ids: list[str] = Field(default_factory=list)
    key_name: str | None = Field(default=None, description="EC2 key pair for SSH, if wanted.")
    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9-]{1,32}$")] = "parrotbot"
    mount_dir: Annotated[str, Field(pattern=r"^/[A-Za-z0-9._/-]+$")] = "/mnt/parrotbot"
    python: str = "python3"
    bootstrap: list[str] = Field(default_factory=lambda: list(DEFAULT_BOOTSTRAP))
    poll_seconds: Annotated[float, Field(gt=0)] = 15.0
    notice_poll_seconds: Annotated[int, Field(ge=1, le=60)] = 5
    shutdown_grace_seconds: Annotated[float, Field(ge=0)] = 300.0
    launch_retry: LaunchRetry = Field(
        default_factory=LaunchRetry,
        description="How a job waits for spot capacity before it fails.",
    )
    download_retry: DownloadRetry = Field(
        default_factory=DownloadRetry,
        description="How the daemon retries S3 errors while it downloads a published version.",
    )
    # Datasets, code, logs and versions of old jobs pile up; a daemon pulls a version within a
    # checkpoint poll of its promotion, so what is older than this has long been pulled.
    job_expiry_days: Annotated[int, Field(ge=0, le=36500)] = Field(
        default=90,
        description="S3 deletes objects under `jobs/` this many days after upload "
        "(a bucket lifecycle rule setup writes); 0: never.",
    )

    @field_validator("instance_types")
    @classmethod
    def _instance_type_names(cls, value: list[str]) -> list[str]:
        for name in value:
            if not name or "." not in name:
                raise ValueError(f"{name!r} is not an instance type like g5.xlarge")
        return value

    @field_validator("bootstrap", "python")
    @classmethod
    def _one_line_each(cls, value: list[str] | str) -> list[str] | str:
        for line in [value] if isinstance(value, str) else value:
            if "\n" in line or "'''" in line:
                raise ValueError("one shell command per entry, without newlines")
        return value

    def resource_name(self, account: str, what: str) -> str:
        """`<name>-<account>-<what>`: IAM and template names are per account."""
        return f"{self.name}-{account}-{what}"

    def root(self, account: str) -> str:
        """The S3 key prefix every object of this account lives under."""
        return f"{self.prefix}/{account}"
