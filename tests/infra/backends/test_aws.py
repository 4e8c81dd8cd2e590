"""Whole jobs on the aws backend: the real launcher and queue, Redis, and moto_server.

moto does not run user-data, so the tests play the instance's part: they publish a version to
the job's S3 prefix (what the user-data does after training) or end the instance (what a spot
reclaim does).
"""

from __future__ import annotations

import base64
import dataclasses
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis
from structlog.testing import capture_logs

from infra.aws.cloud import TAG_JOB, TAG_VOLUME, Cloud, tag_value
from infra.aws.exchange import S3Exchange
from infra.aws.fleet import Fleets
from infra.aws.setup import setup
from infra.backend import TransientLaunchError
from infra.backends.aws import AwsBackend
from infra.job import Job, JobState
from infra.launcher import Launcher
from infra.retrain_queue import RetrainQueue
from infra.settings import AwsSettings
from tests.support.aws import act_as_instance, aws_settings_data, live_instances
from tests.support.aws_faults import AwsFaults
from tests.support.configs import SAMPLE_TIMELINE
from tests.support.network import free_port
from tests.support.retrain import job_spec, scrape_more, wait_job
from training.dataset import dataset_hash, load_tweets


@pytest.fixture
def queue(redis_client: redis.Redis, account: str) -> RetrainQueue:
    return RetrainQueue(redis_client, account)


@pytest.fixture
def start_launcher(
    queue: RetrainQueue, tmp_path: Path, account: str
) -> Iterator[Callable[..., Launcher]]:
    started: list[Launcher] = []

    def start(settings: AwsSettings, *, retries: int = 5) -> Launcher:
        """`retries`: botocore's per call (fewer keep replayed throttling fast)."""
        cloud = Cloud(settings, account, retries=retries)
        backend = AwsBackend(settings, account=account, data_dir=tmp_path / "volume", cloud=cloud)
        launcher = Launcher(queue, backend, claim_idle_seconds=60, max_attempts=3, block_ms=100)
        launcher.start()
        started.append(launcher)
        return launcher

    yield start
    for launcher in started:
        launcher.stop(timeout=5)


def request(queue: RetrainQueue, account: str, tmp_path: Path) -> Job:
    dataset = tmp_path / "datasets" / "poorrichard.jsonl"
    dataset.parent.mkdir(parents=True, exist_ok=True)
    dataset.write_bytes(SAMPLE_TIMELINE.read_bytes())
    return queue.request(job_spec(account, [str(dataset)])).job


def running_on(queue: RetrainQueue, job_id: str, cloud: Cloud, attempt: int = 1) -> Job:
    """Wait until the attempt's instance is tagged with the volume (the user-data's cue)."""

    def ready(job: Job) -> bool:
        if job.state is not JobState.RUNNING or job.attempt != attempt:
            return False
        (instance,) = [i for i in cloud.instances() if i["InstanceId"] == job.instance_id]
        return tag_value(instance, TAG_VOLUME) is not None

    return wait_job(queue, job_id, ready, f"ran attempt {attempt}")


def user_data(cloud: Cloud, instance_id: str) -> str:
    reply = cloud.ec2.describe_instance_attribute(InstanceId=instance_id, Attribute="userData")
    return base64.b64decode(reply["UserData"]["Value"]).decode()


def assert_nothing_left(cloud: Cloud, job: Job) -> None:
    assert live_instances(cloud) == []
    assert cloud.fleets() == []
    assert [v["VolumeId"] for v in cloud.volumes()] == [cloud.volumes("data")[0]["VolumeId"]]
    assert cloud.volumes("data")[0]["State"] == "available"  # detached
    assert Fleets(cloud).job_templates() == {}


def test_a_job_goes_queued_launching_running_done_and_cleans_up(
    cloud: Cloud, queue: RetrainQueue, start_launcher, account: str, tmp_path: Path,
    trained_checkpoints: Path,
) -> None:  # fmt: skip
    setup(cloud)
    job = request(queue, account, tmp_path)
    start_launcher(cloud.settings)
    job = running_on(queue, job.id, cloud)
    (volume,) = cloud.volumes("data")
    (instance,) = [i for i in cloud.instances() if i["InstanceId"] == job.instance_id]
    assert instance["InstanceLifecycle"] == "spot"
    assert instance["Placement"]["AvailabilityZone"] == volume["AvailabilityZone"]  # preferred
    assert tag_value(instance, TAG_JOB) == job.id
    script = user_data(cloud, job.instance_id)
    assert f"JOB_ID={job.id}" in script and "ATTEMPT=1" in script
    assert "SECRET" not in script.upper().replace("NO SECRETS", "")
    exchange = S3Exchange(cloud.settings, account, cloud)
    assert exchange._get_or_none(f"{exchange.job_prefix(job.id)}/datasets/poorrichard.jsonl")

    version = act_as_instance(cloud, job, trained_checkpoints)
    job = wait_job(queue, job.id, lambda j: j.state.terminal, "finished")
    assert job.state is JobState.DONE and job.version == version
    assert queue.history(job.id) == ["queued", "launching", "running", "done"]
    assert job.spot_price is not None and job.cost_estimate > 0
    assert job.instance_type in cloud.settings.instance_types
    pointer = exchange._get_or_none(f"{exchange.root}/checkpoints/char_rnn/LATEST")
    assert pointer.strip().endswith(f"/{job.id}/versions/char_rnn/{version}")
    assert_nothing_left(cloud, job)


def test_an_interrupted_job_is_requeued_and_resumes_on_the_same_volume(
    cloud: Cloud, queue: RetrainQueue, start_launcher, account: str, tmp_path: Path,
    trained_checkpoints: Path,
) -> None:  # fmt: skip
    setup(cloud)
    job = request(queue, account, tmp_path)
    start_launcher(cloud.settings)
    first = running_on(queue, job.id, cloud)
    (volume,) = cloud.volumes("data")
    cloud.ec2.terminate_instances(InstanceIds=[first.instance_id])  # AWS reclaims the spot

    second = running_on(queue, job.id, cloud, attempt=2)
    assert second.instance_id != first.instance_id
    (instance,) = [i for i in cloud.instances() if i["InstanceId"] == second.instance_id]
    assert tag_value(instance, TAG_VOLUME) == volume["VolumeId"]  # the checkpoints are there
    assert "ATTEMPT=2" in user_data(cloud, second.instance_id)
    assert second.outcome.startswith("interrupted")

    act_as_instance(cloud, second, trained_checkpoints)
    done = wait_job(queue, job.id, lambda j: j.state.terminal, "finished")
    assert done.state is JobState.DONE and done.attempt == 2
    assert queue.history(job.id) == [
        "queued", "launching", "running", "queued", "launching", "running", "done",
    ]  # fmt: skip
    assert_nothing_left(cloud, done)


def test_capacity_only_elsewhere_moves_the_volume_first(
    cloud: Cloud, queue: RetrainQueue, start_launcher, account: str, tmp_path: Path,
    ami_id: str, trained_checkpoints: Path,
) -> None:  # fmt: skip
    setup(cloud)  # the data volume lands in us-east-1a
    (old,) = cloud.volumes("data")
    assert old["AvailabilityZone"] == "us-east-1a"
    elsewhere = AwsSettings.model_validate(
        aws_settings_data(ami_id, bucket=cloud.settings.bucket, availability_zones=["us-east-1b"])
    )
    job = request(queue, account, tmp_path)
    start_launcher(elsewhere)
    job = running_on(queue, job.id, cloud)
    (new,) = cloud.volumes("data")
    assert new["AvailabilityZone"] == job.availability_zone == "us-east-1b"
    assert new["VolumeId"] != old["VolumeId"]
    (instance,) = [i for i in cloud.instances() if i["InstanceId"] == job.instance_id]
    assert tag_value(instance, TAG_VOLUME) == new["VolumeId"]
    act_as_instance(cloud, job, trained_checkpoints)
    done = wait_job(queue, job.id, lambda j: j.state.terminal, "finished")
    assert done.state is JobState.DONE
    assert_nothing_left(cloud, done)
    assert cloud.snapshots() == []


def test_ec2_failing_to_describe_a_running_instance_is_not_an_interruption(
    aws_faults: AwsFaults, cloud: Cloud, queue: RetrainQueue, start_launcher, account: str,
    tmp_path: Path, trained_checkpoints: Path,
) -> None:  # fmt: skip
    """Regression: a poll whose DescribeInstances failed read the instance as gone, so the
    launcher requeued the job and launched it again while the first instance trained on."""
    setup(cloud)
    job = request(queue, account, tmp_path)
    start_launcher(cloud.settings, retries=0)
    running = running_on(queue, job.id, cloud)
    with capture_logs() as logs:
        aws_faults.ec2_fault("DescribeInstances", "error", times=3)
        deadline = time.monotonic() + 30
        while aws_faults.hits["error"] < 3:
            assert time.monotonic() < deadline, "the launcher stopped polling the instance"
            time.sleep(0.05)
    events = [entry["event"] for entry in logs]
    assert "aws.poll_failed" in events and "launcher.step_failed" not in events
    act_as_instance(cloud, running, trained_checkpoints)
    done = wait_job(queue, job.id, lambda j: j.state.terminal, "finished")
    assert done.state is JobState.DONE and done.attempt == 1
    assert queue.history(job.id) == ["queued", "launching", "running", "done"]
    assert aws_faults.requests["ec2:CreateFleet"] == 1, "launched once"
    assert_nothing_left(cloud, done)


def test_a_job_past_its_max_run_time_is_terminated_and_failed(
    cloud: Cloud, queue: RetrainQueue, start_launcher, account: str, tmp_path: Path, ami_id: str
) -> None:
    setup(cloud)
    short = AwsSettings.model_validate(
        aws_settings_data(ami_id, bucket=cloud.settings.bucket, max_run_seconds=1)
    )
    job = request(queue, account, tmp_path)
    start_launcher(short)
    failed = wait_job(queue, job.id, lambda j: j.state.terminal, "finished")
    assert failed.state is JobState.FAILED
    assert "max run time" in failed.outcome
    assert failed.instance_id.startswith("i-")
    assert_nothing_left(cloud, failed)


def test_a_launch_that_fails_outside_aws_capacity_fails_the_job_with_its_cause(
    cloud: Cloud, queue: RetrainQueue, start_launcher, account: str, tmp_path: Path
) -> None:
    setup(cloud)
    cloud.s3.delete_bucket(Bucket=cloud.settings.bucket)  # someone tidied up too much
    job = request(queue, account, tmp_path)
    start_launcher(cloud.settings)
    job = wait_job(queue, job.id, lambda j: j.state.terminal, "failed")
    assert job.state is JobState.FAILED
    assert "NoSuchBucket" in job.outcome
    assert job.attempt == 1  # not relaunched until max_attempts ran out
    assert live_instances(cloud) == []


def settings_with(cloud: Cloud, ami_id: str, **overrides: object) -> AwsSettings:
    """The test settings on the same bucket, with some fields changed."""
    data = aws_settings_data(ami_id, bucket=cloud.settings.bucket, **overrides)
    return AwsSettings.model_validate(data)


def test_no_spot_capacity_waits_with_growing_delays_and_launches_once_it_returns(
    aws_faults: AwsFaults, cloud: Cloud, queue: RetrainQueue, start_launcher, account: str,
    tmp_path: Path, ami_id: str, trained_checkpoints: Path,
) -> None:  # fmt: skip
    setup(cloud)
    aws_faults.no_instances()  # every spot pool is empty
    retry = {"first_seconds": 0.05, "max_seconds": 0.2, "give_up_seconds": 300}
    job = request(queue, account, tmp_path)
    with capture_logs() as logs:
        start_launcher(settings_with(cloud, ami_id, launch_retry=retry))
        waiting = wait_job(
            queue, job.id, lambda j: j.state is JobState.QUEUED and j.launch_failures >= 4,
            "waited for capacity",
        )  # fmt: skip
        assert waiting.attempt == 0, "a launch EC2 could not serve spends no attempt"
        assert waiting.outcome.startswith("waiting to launch: no spot capacity: ")
        assert "InsufficientInstanceCapacity" in waiting.outcome
        assert waiting.launch_waiting_since <= waiting.updated_at < waiting.launch_retry_at
        assert live_instances(cloud) == []

        aws_faults.capacity_back()
        running = running_on(queue, job.id, cloud)
    delays = [e["retry_in_s"] for e in logs if e["event"] == "launcher.launch_deferred"]
    assert delays[:4] == [0.05, 0.1, 0.2, 0.2], delays  # doubling, up to max_seconds
    assert running.launch_failures == 0 and running.launch_retry_at is None
    assert running.launch_waited_s > 0

    act_as_instance(cloud, running, trained_checkpoints)
    done = wait_job(queue, job.id, lambda j: j.state.terminal, "finished")
    assert done.state is JobState.DONE and done.attempt == 1
    history = queue.history(job.id)
    assert history[:4] == ["queued", "launching", "queued", "launching"]
    assert history[-3:] == ["launching", "running", "done"]
    assert_nothing_left(cloud, done)  # no fleet or job template of the failed tries either


def test_no_spot_capacity_for_the_whole_give_up_window_fails_the_job_with_the_cause(
    aws_faults: AwsFaults, cloud: Cloud, queue: RetrainQueue, start_launcher, account: str,
    tmp_path: Path, ami_id: str,
) -> None:  # fmt: skip
    setup(cloud)
    aws_faults.no_instances()
    retry = {"first_seconds": 0.1, "max_seconds": 0.1, "give_up_seconds": 0.5}
    job = request(queue, account, tmp_path)
    start_launcher(settings_with(cloud, ami_id, launch_retry=retry))
    failed = wait_job(queue, job.id, lambda j: j.state.terminal, "gave up")
    assert failed.state is JobState.FAILED
    assert failed.outcome.startswith("no spot capacity: InsufficientInstanceCapacity")
    assert "gave up waiting to launch after" in failed.outcome
    assert failed.launch_failures >= 2 and failed.launch_retry_at is None
    assert failed.attempt == 1
    assert live_instances(cloud) == [] and cloud.fleets() == []
    assert Fleets(cloud).job_templates() == {}


def test_a_spot_launch_ec2_refuses_fails_at_once_with_the_cause(
    aws_faults: AwsFaults, cloud: Cloud, queue: RetrainQueue, start_launcher, account: str,
    tmp_path: Path, ami_id: str,
) -> None:  # fmt: skip
    setup(cloud)
    aws_faults.no_instances(
        "Unsupported", "The requested configuration is currently not supported."
    )  # a setting no wait will fix (here: every type, in every allowed zone)
    retry = {"first_seconds": 30, "max_seconds": 30, "give_up_seconds": 3600}
    job = request(queue, account, tmp_path)
    start_launcher(settings_with(cloud, ami_id, launch_retry=retry))
    failed = wait_job(queue, job.id, lambda j: j.state.terminal, "failed", timeout=20)
    assert failed.state is JobState.FAILED and failed.attempt == 1
    assert failed.outcome.startswith("spot launch refused: Unsupported: ")
    assert failed.launch_failures == 0
    assert queue.history(job.id) == ["queued", "launching", "failed"]
    assert live_instances(cloud) == [] and Fleets(cloud).job_templates() == {}


def test_a_launcher_stopped_while_its_job_waits_hands_the_wait_on(
    aws_faults: AwsFaults, cloud: Cloud, queue: RetrainQueue, start_launcher, account: str,
    tmp_path: Path, ami_id: str,
) -> None:  # fmt: skip
    setup(cloud)
    aws_faults.no_instances()
    settings = settings_with(
        cloud, ami_id, launch_retry={"first_seconds": 2, "max_seconds": 2, "give_up_seconds": 60}
    )
    job = request(queue, account, tmp_path)
    first = start_launcher(settings)
    waiting = wait_job(queue, job.id, lambda j: j.launch_failures == 1, "waited for capacity")
    stopping = time.monotonic()
    first.stop(timeout=5)
    assert time.monotonic() - stopping < 1.5, "a stop cuts the 2 s wait short"
    assert not first._thread.is_alive()
    assert queue.get(job.id).state is JobState.QUEUED

    aws_faults.capacity_back()
    second = start_launcher(settings)
    running = running_on(queue, job.id, cloud)
    assert running.consumer == second.consumer
    launched_at = float(queue.redis.lrange(queue.keys.job_history(job.id), -2, -2)[0].split()[1])
    assert launched_at >= waiting.launch_retry_at, "the next launcher kept the wait"


def test_with_no_spot_price_and_no_max_price_the_cost_is_unknown_not_zero(
    aws_faults: AwsFaults, cloud: Cloud, queue: RetrainQueue, start_launcher, account: str,
    tmp_path: Path, ami_id: str, trained_checkpoints: Path,
) -> None:  # fmt: skip
    setup(cloud)
    aws_faults.no_spot_prices()  # DescribeSpotPriceHistory has nothing for the type
    job = request(queue, account, tmp_path)
    start_launcher(settings_with(cloud, ami_id, max_price=None))
    running = running_on(queue, job.id, cloud)
    running = wait_job(queue, job.id, lambda j: j.cost_unknown, "had its cost marked unknown")
    assert running.spot_price is None and running.cost_usd is None
    assert aws_faults.hits["no_spot_prices"] >= 1

    act_as_instance(cloud, running, trained_checkpoints)
    done = wait_job(queue, job.id, lambda j: j.state.terminal, "finished")
    assert done.state is JobState.DONE
    assert done.cost_unknown and done.cost_usd is None, "an unknown price is not $0"


# Tries come fast; the longest wait (0.3 s) still leaves a 0.1 s poll time to see it queued.
FAST_RETRY = {"first_seconds": 0.05, "max_seconds": 0.3, "give_up_seconds": 300}


def waited(queue: RetrainQueue, job_id: str, failures: int) -> Job:
    """The job back in the queue after `failures` launches in a row that AWS could not serve."""
    return wait_job(
        queue, job_id, lambda j: j.state is JobState.QUEUED and j.launch_failures >= failures,
        f"waited after {failures} failed launches",
    )  # fmt: skip


def test_s3_failing_the_upload_makes_the_job_wait_and_it_launches_once_s3_is_back(
    aws_faults: AwsFaults, cloud: Cloud, queue: RetrainQueue, start_launcher, account: str,
    tmp_path: Path, ami_id: str, trained_checkpoints: Path,
) -> None:  # fmt: skip
    setup(cloud)
    job = request(queue, account, tmp_path)
    prefix = S3Exchange(cloud.settings, account, cloud).job_prefix(job.id)
    aws_faults.s3_fault(cloud.settings.bucket, prefix + "/", "error", method="PUT")
    start_launcher(settings_with(cloud, ami_id, launch_retry=FAST_RETRY))  # botocore's 5 retries

    waiting = waited(queue, job.id, 2)
    assert waiting.outcome.startswith(
        "waiting to launch: cannot upload the job to S3: InternalError: "
    ), waiting.outcome
    assert waiting.attempt == 0, "no machine ran: no attempt spent"
    assert aws_faults.hits["error"] >= 2 * 6, "botocore retried each upload before we did"
    assert aws_faults.requests["ec2:CreateFleet"] == 0 and live_instances(cloud) == []

    aws_faults.s3_healthy()
    running = running_on(queue, job.id, cloud)
    assert running.launch_failures == 0 and running.launch_waited_s > 0
    act_as_instance(cloud, running, trained_checkpoints)
    done = wait_job(queue, job.id, lambda j: j.state.terminal, "finished")
    assert done.state is JobState.DONE and done.attempt == 1
    assert queue.history(job.id)[:4] == ["queued", "launching", "queued", "launching"]
    assert_nothing_left(cloud, done)


def test_a_throttled_launch_template_read_makes_the_job_wait_and_it_launches_after(
    aws_faults: AwsFaults, cloud: Cloud, queue: RetrainQueue, start_launcher, account: str,
    tmp_path: Path, ami_id: str, trained_checkpoints: Path,
) -> None:  # fmt: skip
    setup(cloud)
    aws_faults.ec2_fault("DescribeLaunchTemplates", "throttle")
    job = request(queue, account, tmp_path)
    start_launcher(settings_with(cloud, ami_id, launch_retry=FAST_RETRY), retries=1)

    waiting = waited(queue, job.id, 2)
    template = cloud.settings.resource_name(account, "trainer")
    assert waiting.outcome == (
        f"waiting to launch: cannot read launch template {template}: "
        "RequestLimitExceeded: Request limit exceeded."
    )
    assert waiting.attempt == 0
    assert aws_faults.hits["throttle"] >= 2 * 2  # botocore's one retry, then ours
    assert aws_faults.requests["ec2:CreateFleet"] == 0 and live_instances(cloud) == []

    aws_faults.ec2_healthy()
    running = running_on(queue, job.id, cloud)
    act_as_instance(cloud, running, trained_checkpoints)
    done = wait_job(queue, job.id, lambda j: j.state.terminal, "finished")
    assert done.state is JobState.DONE and done.attempt == 1
    assert_nothing_left(cloud, done)


def test_an_upload_s3_denies_fails_the_job_at_once_with_the_cause(
    aws_faults: AwsFaults, cloud: Cloud, queue: RetrainQueue, start_launcher, account: str,
    tmp_path: Path, ami_id: str,
) -> None:  # fmt: skip
    setup(cloud)
    job = request(queue, account, tmp_path)
    prefix = S3Exchange(cloud.settings, account, cloud).job_prefix(job.id)
    aws_faults.s3_fault(cloud.settings.bucket, prefix + "/", "deny", method="PUT")
    retry = {"first_seconds": 30, "max_seconds": 30, "give_up_seconds": 3600}  # no time to wait
    start_launcher(settings_with(cloud, ami_id, launch_retry=retry))

    failed = wait_job(queue, job.id, lambda j: j.state.terminal, "failed", timeout=20)
    assert failed.state is JobState.FAILED and failed.attempt == 1
    assert failed.outcome == "cannot upload the job to S3: AccessDenied: Access Denied"
    assert failed.launch_failures == 0
    assert queue.history(job.id) == ["queued", "launching", "failed"]
    assert aws_faults.hits["deny"] == 1, "a refusal is retried neither by botocore nor by us"
    assert live_instances(cloud) == [] and Fleets(cloud).job_templates() == {}


def test_a_job_waiting_for_capacity_uploads_its_objects_once(
    aws_faults: AwsFaults, cloud: Cloud, queue: RetrainQueue, start_launcher, account: str,
    tmp_path: Path, ami_id: str,
) -> None:  # fmt: skip
    setup(cloud)
    aws_faults.no_instances()
    job = request(queue, account, tmp_path)
    exchange = S3Exchange(cloud.settings, account, cloud)
    prefix = f"{cloud.settings.bucket}/{exchange.job_prefix(job.id)}/"

    def puts() -> dict[str, int]:
        return {
            seen.removeprefix(f"PUT {prefix}"): count
            for seen, count in aws_faults.requests.items()
            if seen.startswith(f"PUT {prefix}")
        }

    with capture_logs() as logs:
        start_launcher(settings_with(cloud, ami_id, launch_retry=FAST_RETRY))
        waited(queue, job.id, 4)
        once = {"datasets/poorrichard.jsonl": 1, "request.json": 1, "code.tar.gz": 1}
        assert puts() == once
        assert aws_faults.requests[f"HEAD {prefix}code.tar.gz"] >= 4, "looked each time"

        # The scraper replaces the dataset while the job waits: the next try sends it again.
        dataset = Path(job.datasets[0])
        replacement = dataset.with_name(".replacement.tmp")
        replacement.write_bytes(dataset.read_bytes() + b'{"id": "9", "text": "Lost time"}\n')
        os.replace(replacement, dataset)
        failures = queue.get(job.id).launch_failures
        waited(queue, job.id, failures + 2)
    assert puts() == once | {"datasets/poorrichard.jsonl": 2}
    uploads = [e for e in logs if e["event"] == "exchange.job_uploaded"]
    assert uploads[0]["sent"] == 3 and len(uploads) >= 6
    assert sum(e["sent"] for e in uploads[1:]) == 1
    key = f"{exchange.job_prefix(job.id)}/datasets/poorrichard.jsonl"
    assert exchange._get(key).encode() == dataset.read_bytes()


def test_aws_out_of_reach_before_the_launch_is_a_reason_to_wait(
    aws_settings: AwsSettings, queue: RetrainQueue, account: str, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")  # nobody listens
    cloud = Cloud(aws_settings, account, retries=0)
    backend = AwsBackend(aws_settings, account=account, data_dir=tmp_path, cloud=cloud)
    job = request(queue, account, tmp_path)
    with pytest.raises(TransientLaunchError) as raised:
        backend.start(job, lambda **fields: None)
    assert str(raised.value).startswith(
        "cannot end the job's leftover instances: EndpointConnectionError: "
    ), raised.value


def test_a_job_that_waited_records_the_data_its_launch_uploaded(
    aws_faults: AwsFaults, cloud: Cloud, queue: RetrainQueue, start_launcher, account: str,
    tmp_path: Path, ami_id: str,
) -> None:  # fmt: skip
    """Regression: the record kept the dataset hash of when the job was queued, though each
    launch uploads the datasets as they are then (the instance trains on those)."""
    setup(cloud)
    aws_faults.no_instances()
    dataset = tmp_path / "datasets" / "poorrichard.jsonl"
    dataset.parent.mkdir(parents=True)
    dataset.write_bytes(SAMPLE_TIMELINE.read_bytes())
    queued_hash = dataset_hash(load_tweets([dataset]))
    spec = dataclasses.replace(job_spec(account, [str(dataset)]), dataset_hash=queued_hash)
    job = queue.request(spec).job
    with capture_logs() as logs:
        start_launcher(settings_with(cloud, ami_id, launch_retry=FAST_RETRY))
        assert waited(queue, job.id, 2).dataset_hash == queued_hash  # uploaded as queued

        new_hash = scrape_more(dataset)
        aws_faults.capacity_back()
        running = running_on(queue, job.id, cloud)
    assert running.dataset_hash == new_hash != queued_hash
    exchange = S3Exchange(cloud.settings, account, cloud)
    key = f"{exchange.job_prefix(job.id)}/datasets/poorrichard.jsonl"
    assert exchange._get(key).encode() == dataset.read_bytes()
    changed = [e for e in logs if e["event"] == "launcher.dataset_changed"]
    assert [(e["old_hash"], e["new_hash"]) for e in changed] == [(queued_hash, new_hash)]


def job_instances(cloud: Cloud, job: Job) -> list[str]:
    """The states of every instance launched for the job (terminated ones included)."""
    return [i["State"]["Name"] for i in cloud.instances(**{TAG_JOB: job.id})]


def test_tagging_the_launched_instance_failing_for_good_ends_it_and_fails_the_job(
    aws_faults: AwsFaults, cloud: Cloud, queue: RetrainQueue, start_launcher, account: str,
    tmp_path: Path,
) -> None:  # fmt: skip
    """Regression: a CreateTags error raised out of start(); the job failed and its instance
    ran on (waiting for its volume tag) until `parrotbot infra gc`."""
    setup(cloud)
    aws_faults.ec2_fault("CreateTags", "error")
    job = request(queue, account, tmp_path)
    start_launcher(cloud.settings, retries=0)  # no botocore retries: each fault reaches us
    failed = wait_job(queue, job.id, lambda j: j.state.terminal, "failed", timeout=60)
    assert failed.state is JobState.FAILED and failed.attempt == 1
    assert "(create_tags): InternalError: " in failed.outcome, failed.outcome
    assert "may still run" not in failed.outcome
    assert aws_faults.hits["error"] > 1, "a transient error is retried before giving up"
    aws_faults.ec2_healthy()
    assert job_instances(cloud, failed) == ["terminated"]
    assert cloud.fleets() == [] and Fleets(cloud).job_templates() == {}
    assert cloud.volumes("data")[0]["State"] == "available"


@pytest.mark.parametrize(
    ("action", "kind", "times"),
    [
        ("CreateTags", "error", 1),
        # EC2 is eventually consistent: right after CreateFleet it may not know the instance
        # yet. That means "not yet", and must not fail the job.
        ("DescribeInstances", "not_found", 2),
    ],
)
def test_a_transient_failure_after_the_launch_is_retried_and_the_job_runs(
    aws_faults: AwsFaults, cloud: Cloud, queue: RetrainQueue, start_launcher, account: str,
    tmp_path: Path, trained_checkpoints: Path, action: str, kind: str, times: int,
) -> None:  # fmt: skip
    setup(cloud)
    aws_faults.ec2_fault(action, kind, times=times, after="CreateFleet")
    job = request(queue, account, tmp_path)
    start_launcher(cloud.settings, retries=0)
    running = running_on(queue, job.id, cloud)
    assert aws_faults.hits[kind] == times
    assert aws_faults.requests["ec2:CreateFleet"] == 1 and job_instances(cloud, running) == [
        "running"
    ], "one launch, one instance"
    act_as_instance(cloud, running, trained_checkpoints)
    done = wait_job(queue, job.id, lambda j: j.state.terminal, "finished")
    assert done.state is JobState.DONE and done.attempt == 1
    assert_nothing_left(cloud, done)


def test_describing_the_launched_instance_failing_for_good_ends_it_and_fails_the_job(
    aws_faults: AwsFaults, cloud: Cloud, queue: RetrainQueue, start_launcher, account: str,
    tmp_path: Path,
) -> None:  # fmt: skip
    """Regression: DescribeInstances failing right after CreateFleet raised out of the launch;
    the instance, its fleet and the job's template were left for `parrotbot infra gc`."""
    setup(cloud)
    aws_faults.ec2_fault("DescribeInstances", "error", after="CreateFleet")
    job = request(queue, account, tmp_path)
    start_launcher(cloud.settings, retries=0)
    failed = wait_job(queue, job.id, lambda j: j.state.terminal, "failed", timeout=60)
    assert failed.state is JobState.FAILED and failed.attempt == 1
    assert "(describe_instances): InternalError: " in failed.outcome, failed.outcome
    assert "may still run" not in failed.outcome, "EC2 accepted the termination"
    assert aws_faults.hits["error"] > 1
    aws_faults.ec2_healthy()
    assert job_instances(cloud, failed) == ["terminated"]
    assert cloud.fleets() == [] and Fleets(cloud).job_templates() == {}


def test_the_spot_price_lookup_failing_leaves_the_cost_unknown_and_the_job_runs(
    aws_faults: AwsFaults, cloud: Cloud, queue: RetrainQueue, start_launcher, account: str,
    tmp_path: Path, ami_id: str, trained_checkpoints: Path,
) -> None:  # fmt: skip
    """Regression: a dropped DescribeSpotPriceHistory connection raised out of start() and
    failed the launch, its instance left running; a cost estimate is not worth a launch."""
    setup(cloud)
    aws_faults.ec2_fault("DescribeSpotPriceHistory", "drop")
    job = request(queue, account, tmp_path)
    start_launcher(settings_with(cloud, ami_id, max_price=None), retries=0)
    running = running_on(queue, job.id, cloud)
    assert running.spot_price is None and aws_faults.hits["drop"] > 1
    running = wait_job(queue, job.id, lambda j: j.cost_unknown, "had its cost marked unknown")
    act_as_instance(cloud, running, trained_checkpoints)
    done = wait_job(queue, job.id, lambda j: j.state.terminal, "finished")
    assert done.state is JobState.DONE and done.cost_usd is None
    assert_nothing_left(cloud, done)
