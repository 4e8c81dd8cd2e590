"""Render the instance's user-data from `infra/templates/userdata.sh` for one job attempt.

Only the parameter block is generated, one shell-quoted assignment per value, so nothing from
the config or the job can break out of its quotes; the rest of the script is fixed text that
shellcheck checks in the tests. No secret goes in: the instance role grants what it needs.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from importlib import resources

TEMPLATE = "userdata.sh"
MARKER = "@PARAMETERS@"
# EC2 refuses user-data over 16 KiB (before base64).
MAX_BYTES = 16 * 1024


@dataclass(frozen=True)
class UserDataParams:
    job_id: str
    attempt: int
    region: str
    s3_job: str  # s3://bucket/prefix/account/jobs/<job>
    model_kind: str
    mount_dir: str
    python: str = "python3"
    bootstrap: tuple[str, ...] = ()
    notice_poll_seconds: int = 5
    # Stand-ins for tests; on EC2 these are the real metadata service and /dev.
    imds_url: str = "http://169.254.169.254"
    dev_dir: str = "/dev"
    poll_seconds: int = 5
    tag_wait_tries: int = 360  # 30 minutes at 5 s: a volume relocation can take that long


def render(params: UserDataParams) -> str:
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
    }
    lines = [f"{name}={shlex.quote(value)}" for name, value in values.items()]
    commands = " ".join(shlex.quote(command) for command in params.bootstrap)
    lines.append(f"BOOTSTRAP=({commands})")
    template = resources.files("infra.templates").joinpath(TEMPLATE).read_text(encoding="utf-8")
    script = template.replace(MARKER, "\n".join(lines))
    if len(script.encode()) > MAX_BYTES:
        raise ValueError(f"user-data is {len(script.encode())} bytes; EC2 allows {MAX_BYTES}")
    return script
