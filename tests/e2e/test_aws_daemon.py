"""The daemon with `training.backend: aws`: first start → spot job → S3 → pulled → hot-loaded."""

from __future__ import annotations

from pathlib import Path

import redis

from infra.aws.cloud import Cloud
from infra.aws.setup import setup
from infra.job import JobState
from infra.retrain_queue import RetrainQueue
from tests.support.aws import act_as_instance, aws_settings_data, live_instances
from tests.support.daemon_process import DaemonProcess
from tests.support.retrain import wait_job


def test_the_daemon_trains_on_spot_and_hot_loads_the_version_from_s3(
    cloud: Cloud,
    aws: dict[str, str],
    ami_id: str,
    write_config,
    redis_client: redis.Redis,
    account: str,
    tmp_path: Path,
    trained_checkpoints: Path,
) -> None:
    setup(cloud)
    aws_section = aws_settings_data(ami_id, bucket=cloud.settings.bucket)
    # One process for the test: the daemon consumes its own queue (the Procfile runs two).
    training = {"backend": "aws", "launcher": "inline", "aws": aws_section}
    config = write_config(training=training)
    daemon = DaemonProcess(config, tmp_path / "daemon.log", env=aws).start()
    try:
        triggered = daemon.wait_for("training.triggered", lambda e: e["trigger"] == "first_start")
        queue = RetrainQueue(redis_client, account)
        job = wait_job(queue, triggered["job_id"], lambda j: j.state is JobState.RUNNING, "ran")
        version = act_as_instance(cloud, job, trained_checkpoints)
        daemon.wait_for("launcher.job_done", lambda e: e["version"] == version, timeout=60)
        daemon.wait_for("exchange.version_pulled", lambda e: e["version"] == version, timeout=60)
        daemon.wait_for("hotload.swapped", lambda e: e["version"] == version, timeout=120)
        daemon.wait_for("post.published", timeout=60)
        assert live_instances(cloud) == [] and cloud.fleets() == []
        assert daemon.stop() == 0
    finally:
        daemon.kill()
