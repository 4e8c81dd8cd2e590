"""Render the instance's user-data from `infra/aws/templates/userdata.sh` for one job attempt.

Only the parameter block is generated, one shell-quoted assignment per value, so nothing from
the config or the job can break out of its quotes; the rest of the script is fixed text that
shellcheck checks in the tests. No secret goes in: the instance role grants what it needs.
"""

from __future__ import annotations

import math
import shlex
from dataclasses import dataclass
from importlib import resources

TEMPLATE = "userdata.sh"
MARKER = "@PARAMETERS@"
# EC2 refuses user-data over 16 KiB (before base64).
MAX_BYTES = 16 * 1024
# On top of the trainer's max run time and the wait for the volume's tag, the backstop shutdown
# leaves this long for the rest: attach, bootstrap, fetching the job, publishing, cleaning up.
BACKSTOP_MARGIN_SECONDS = 30 * 60


@dataclass(frozen=True)
class UserDataParams:
    job_id: str
    attempt: int
    region: str
    s3_job: str  # s3://bucket/prefix/account/jobs/<job>
    model_kind: str
    mount_dir: str
    max_run_seconds: int  # training.aws.max_run_seconds: the trainer's `timeout`
    python: str = "python3"
    bootstrap: tuple[str, ...] = ()
    notice_poll_seconds: int = 5
    # Stand-ins for tests; on EC2 these are the real metadata service and /dev.
    imds_url: str = "http://169.254.169.254"
    dev_dir: str = "/dev"
    poll_seconds: int = 5
    tag_wait_tries: int = 360  # 30 minutes at 5 s: a volume relocation can take that long


def backstop_minutes(params: UserDataParams) -> int:
    """Minutes after boot when the instance shuts itself down, whatever else happens.

    Long enough for the slowest run that still ends on its own: the wait for the volume's tag
    (a relocation), the trainer's max run time and its minute of grace, and the margin.
    """
    tag_wait = params.tag_wait_tries * params.poll_seconds
    total = tag_wait + params.max_run_seconds + 60 + BACKSTOP_MARGIN_SECONDS
    return math.ceil(total / 60)


def render(params: UserDataParams) -> str:
    if params.max_run_seconds <= 0:
        raise ValueError(f"max_run_seconds must be positive, not {params.max_run_seconds}")
    values = {
        "JOB_ID": params.job_id,
        "ATTEMPT": str(params.attempt),
        "REGION": params.region,
        "S3_JOB": params.s3_job,
        "MODEL_KIND": params.model_kind,
        "MOUNT_DIR": params.mount_dir,
        "PYTHON": params.python,
        "NOTICE_POLL_SECONDS": str(params.notice_poll_seconds),
        "IMDS_URL": params.imds_url,
        "DEV_DIR": params.dev_dir,
        "POLL_SECONDS": str(params.poll_seconds),
        "TAG_WAIT_TRIES": str(params.tag_wait_tries),
        "MAX_RUN_SECONDS": str(params.max_run_seconds),
        "BACKSTOP_MINUTES": str(backstop_minutes(params)),
    }
    lines = [f"{name}={shlex.quote(value)}" for name, value in values.items()]
    commands = " ".join(shlex.quote(command) for command in params.bootstrap)
    lines.append(f"BOOTSTRAP=({commands})")
    template = resources.files("infra.aws.templates").joinpath(TEMPLATE).read_text(encoding="utf-8")
    script = template.replace(MARKER, "\n".join(lines))
    if len(script.encode()) > MAX_BYTES:
        raise ValueError(f"user-data is {len(script.encode())} bytes; EC2 allows {MAX_BYTES}")
    return script
