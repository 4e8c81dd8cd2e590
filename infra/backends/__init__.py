"""Training backends: `local` (a child process) and `aws` (a spot instance)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from infra.backend import Backend
    from infra.settings import AwsSettings


def build_backend(
    kind: str, *, account: str, data_dir: Path, aws: AwsSettings | None = None
) -> Backend:
    """The backend named by `training.backend`; boto3 is imported only for aws."""
    if kind == "local":
        from infra.backends.local import LocalBackend

        return LocalBackend(data_dir)
    if kind == "aws":
        if aws is None:
            raise ValueError("the aws backend needs training.aws settings")
        from infra.backends.aws import AwsBackend

        return AwsBackend(aws, account=account, data_dir=data_dir)
    raise ValueError(f"unknown training backend {kind!r}")
