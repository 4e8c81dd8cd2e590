"""Helpers for the infra tests: settings, and what a spot instance would do to S3."""

from __future__ import annotations

import uuid
from pathlib import Path

from infra.aws.cloud import Cloud
from infra.aws.exchange import S3Exchange
from infra.job import Job

REGION = "us-east-1"
# moto.server, with the bucket policy's TLS condition judged as AWS judges it (see the file).
MOTO_SERVER = Path(__file__).with_name("moto_server.py")


def aws_settings_data(ami_id: str, **overrides: object) -> dict[str, object]:
    """Settings for tests: fast polling, no shutdown grace (moto runs no user-data)."""
    data: dict[str, object] = {
        "region": REGION,
        "bucket": f"parrotbot-test-{uuid.uuid4().hex[:12]}",
        "ami_id": ami_id,
        "instance_types": ["g5.xlarge", "g4dn.xlarge"],
        "max_price": 0.9,
        "availability_zones": ["us-east-1a", "us-east-1b"],
        "volume_size_gb": 10,
        "poll_seconds": 0.1,
        "shutdown_grace_seconds": 0,
    }
    data.update(overrides)
    return data


def publish_to_s3(cloud: Cloud, prefix: str, version_dir: Path, *, manifest: bool = True) -> None:
    """Upload a version folder as the instance does: every file, then the manifest last."""
    files = sorted(p for p in version_dir.rglob("*") if p.is_file())
    for path in files:
        if path.name != "manifest.json":
            key = f"{prefix}/{path.relative_to(version_dir).as_posix()}"
            cloud.s3.upload_file(str(path), cloud.settings.bucket, key)
    if manifest:
        cloud.s3.upload_file(
            str(version_dir / "manifest.json"), cloud.settings.bucket, f"{prefix}/manifest.json"
        )


def latest_version(checkpoints: Path, model_kind: str = "char_rnn") -> Path:
    model_dir = checkpoints / model_kind
    return model_dir / (model_dir / "LATEST").read_text().strip()


def live_instances(cloud: Cloud) -> list[str]:
    return [
        i["InstanceId"]
        for i in cloud.instances()
        if i["State"]["Name"] not in ("terminated", "shutting-down")
    ]


def act_as_instance(cloud: Cloud, job: Job, trained_checkpoints: Path) -> str:
    """What the user-data does after training: publish the version, manifest last."""
    source = latest_version(trained_checkpoints)
    exchange = S3Exchange(cloud.settings, cloud.account, cloud)
    prefix = f"{exchange.job_prefix(job.id)}/versions/char_rnn/{source.name}"
    publish_to_s3(cloud, prefix, source)
    return source.name
