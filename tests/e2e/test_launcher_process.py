"""`parrotbot launcher` as real processes: a killed launcher's job is adopted by another."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import redis
import yaml
from typer.testing import CliRunner

from bot.cli import app
from infra.aws.cloud import TAG_JOB, Cloud
from infra.aws.setup import setup
from infra.job import JobState
from infra.retrain_queue import RetrainQueue
from tests.support.aws import act_as_instance, aws_settings_data, live_instances
from tests.support.configs import SAMPLE_TIMELINE
from tests.support.daemon_process import parse_events, wait_until
from tests.support.retrain import wait_job


def start_launcher(config: Path, log_path: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    with log_path.open("ab") as log_file:
        return subprocess.Popen(
            [sys.executable, "-m", "bot.cli", "launcher", "--config", str(config)],
            stdout=log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, **env, "PYTHONUNBUFFERED": "1"},
        )


def events(log_path: Path) -> list[dict]:
    return parse_events(log_path.read_text(errors="replace"))


def test_a_killed_launchers_job_is_reclaimed_and_adopted_by_another(
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
    training = {"backend": "aws", "claim_idle_seconds": 2, "aws": aws_section}
    config = write_config(training=training)
    data_dir = Path(yaml.safe_load(config.read_text())["data_dir"])
    (data_dir / "datasets").mkdir(parents=True)
    shutil.copyfile(SAMPLE_TIMELINE, data_dir / "datasets" / "poorrichard.jsonl")

    runner = CliRunner()
    queued = runner.invoke(app, ["retrain", "-c", str(config)])
    assert queued.exit_code == 0, queued.output
    job_id = queued.stdout.split()[-1]
    queue = RetrainQueue(redis_client, account)

    first_log, second_log = tmp_path / "first.log", tmp_path / "second.log"
    first = start_launcher(config, first_log, aws)
    second = None
    try:
        job = wait_job(queue, job_id, lambda j: j.state is JobState.RUNNING, "ran")
        first_consumer = job.consumer
        first.send_signal(signal.SIGKILL)  # no goodbye: its entry stays pending
        first.wait(10)

        second = start_launcher(config, second_log, aws)
        wait_until(
            lambda: any(e["event"] == "launcher.job_adopted" for e in events(second_log)),
            timeout=60,
            message=f"no adoption:\n{second_log.read_text()[-3000:]}",
        )
        adopted = queue.get(job_id)
        assert adopted.consumer != first_consumer and adopted.instance_id == job.instance_id
        assert any(e["event"] == "queue.entry_reclaimed" for e in events(second_log))

        act_as_instance(cloud, adopted, trained_checkpoints)
        done = wait_job(queue, job_id, lambda j: j.state.terminal, "finished")
        assert done.state is JobState.DONE and done.attempt == 1
        # One instance for the whole job: the second launcher followed the first one's.
        assert [i["InstanceId"] for i in cloud.instances(**{TAG_JOB: job_id})] == [job.instance_id]
        assert live_instances(cloud) == [] and cloud.fleets() == []

        listing = runner.invoke(app, ["jobs", "-c", str(config)])
        assert listing.exit_code == 0, listing.output
        row = next(line for line in listing.stdout.splitlines() if job_id in line)
        assert "done" in row and job.instance_id in row and "$" in row

        second.send_signal(signal.SIGTERM)
        assert second.wait(15) == 0
    finally:
        for process in (first, second):
            if process is not None and process.poll() is None:
                process.kill()
                process.wait()
