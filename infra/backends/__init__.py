"""Training backends: `local` (a child process) and `aws` (a spot instance), and their factory.

This module is the bot's one door to what a backend brings: the backend the launcher drives,
the exchange finished versions arrive through, and the account's long-lived AWS resources
behind `parrotbot infra setup/teardown/gc`. The bot names a backend by its config
(`training.backend`, `training.aws`) and never imports `infra.aws` or a backend module itself
(the import contracts in pyproject.toml hold it to that), so a new backend changes this file and
its own package, not the bot. Everything behind these functions is imported when called, so
boto3 loads only on the paths that use AWS.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from infra.aws.exchange import S3Exchange
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


def build_exchange(kind: str, *, account: str, aws: AwsSettings | None = None) -> S3Exchange | None:
    """Where the daemon pulls finished versions from besides its checkpoints folder.

    With spot training they reach this host through S3; the local backend publishes straight
    into the folder, so there is nothing to pull (None).
    """
    if kind != "aws" or aws is None:
        return None
    from infra.aws.exchange import S3Exchange

    return S3Exchange(aws, account)


def aws_setup(aws: AwsSettings, account: str) -> list[str]:
    """`parrotbot infra setup`: make what spot training needs (idempotent); one line per step."""
    from infra.aws.cloud import Cloud
    from infra.aws.setup import setup

    return setup(Cloud(aws, account))


def aws_teardown(aws: AwsSettings, account: str) -> list[str]:
    """`parrotbot infra teardown`: remove all setup made, bucket contents and data volume too."""
    from infra.aws.cloud import Cloud
    from infra.aws.setup import teardown

    return teardown(Cloud(aws, account))


def aws_gc(aws: AwsSettings, account: str, busy_jobs: Iterable[str]) -> list[str]:
    """`parrotbot infra gc`: remove strays no job in `busy_jobs` uses; one line per removal."""
    from infra.aws.cloud import Cloud
    from infra.aws.gc import collect

    return collect(Cloud(aws, account), set(busy_jobs))
