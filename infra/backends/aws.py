"""The aws backend: one attempt of a job on one EC2 spot instance.

Launching: upload the job to S3 (recording on the job the hash of the datasets sent, which may
be newer than when it was queued), make the job's launch template with the rendered user-data,
get one instance from an instant spot fleet (the data volume's zone first), move the volume
into the instance's zone if it is elsewhere, then tag the instance with the volume and fleet
ids, which is what the waiting user-data reads to attach the volume. Until the fleet has
launched, AWS failing transiently (throttling, a 5xx, a dropped connection) sends the job back
to wait like a shortage of capacity; the uploads it already made are not repeated. From the
launch on, an error is not retried that way: a second launch could leave two instances. The
calls after the launch ride out a short outage themselves (`after_launch`), and if one still
fails the attempt is cleaned up (instance, fleet, job template) before the job fails; only the
spot price, needed for nothing but the cost estimate, may fail without failing the launch.

Tracking (every `poll_seconds`): a complete version under the job's S3 prefix means done (the
launcher promotes it for the daemons to pull); a "failed" status means failed; an instance gone
without either means interrupted (a spot reclaim), and the launcher runs the job again on the
same volume, where the trainer resumes from its checkpoints. "Gone" is what EC2 says (ended, or
no longer listed); EC2 failing to answer a poll is not gone, only unknown until the next.
Cleanup leaves no instance, fleet or job template behind, and the volume detached.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import structlog
from botocore.exceptions import BotoCoreError, ClientError, WaiterError

from infra.aws.cloud import (
    GONE_STATES,
    TAG_FLEET,
    TAG_JOB,
    TAG_VOLUME,
    Cloud,
    aws_error,
    is_transient,
)
from infra.aws.exchange import S3Exchange
from infra.aws.fleet import (
    Fleets,
    InstanceNotVisible,
    after_launch,
    before_launch,
    instance_not_listed,
    left_running,
)
from infra.aws.userdata import UserDataParams, render
from infra.aws.volume import DataVolume
from infra.backend import (
    LaunchError,
    Outcome,
    OutcomeKind,
    Progress,
    current_dataset_hash,
)
from infra.job import Job
from infra.settings import AwsSettings
from training.request import TrainRequest

log = structlog.get_logger(__name__)


class AwsBackend:
    name = "aws"
    survives_launcher = True

    def __init__(
        self, settings: AwsSettings, *, account: str, data_dir: Path, cloud: Cloud | None = None
    ) -> None:
        self.settings = settings
        self.account = account
        self.data_dir = data_dir
        self.cloud = cloud or Cloud(settings, account)
        self.exchange = S3Exchange(settings, account, self.cloud)
        self.fleets = Fleets(self.cloud)
        self.volume = DataVolume(self.cloud)
        self.max_run_seconds: float | None = settings.max_run_seconds
        self.poll_seconds = settings.poll_seconds
        self.launch_retry = settings.launch_retry

    @property
    def template_name(self) -> str:
        return self.settings.resource_name(self.account, "trainer")

    def template_id(self) -> str:
        with before_launch(f"cannot read launch template {self.template_name}"):
            try:
                reply = self.cloud.ec2.describe_launch_templates(
                    LaunchTemplateNames=[self.template_name]
                )
            except ClientError as exc:
                if "NotFound" in exc.response.get("Error", {}).get("Code", ""):
                    raise LaunchError(
                        f"launch template {self.template_name} "
                        "not found: run `parrotbot infra setup`"
                    ) from exc
                raise
        return reply["LaunchTemplates"][0]["LaunchTemplateId"]

    def start(self, job: Job, progress: Progress) -> AwsRun:
        with before_launch("cannot end the job's leftover instances"):
            self._end_leftovers(job)
        template_id = self.template_id()
        self._upload(job, progress)
        with before_launch("cannot find the data volume"):
            data_volume = self.volume.find()
        prefer = data_volume["AvailabilityZone"] if data_volume else None
        user_data = render(
            UserDataParams(
                job_id=job.id,
                attempt=job.attempt,
                region=self.settings.region,
                s3_job=self.exchange.url(self.exchange.job_prefix(job.id)),
                model_kind=job.model_kind,
                mount_dir=self.settings.mount_dir,
                max_run_seconds=self.settings.max_run_seconds,
                python=self.settings.python,
                bootstrap=tuple(self.settings.bootstrap),
                notice_poll_seconds=self.settings.notice_poll_seconds,
            )
        )
        with before_launch("cannot make the job's launch template"):
            self.fleets.delete_job_template(job.id)  # an earlier try's, if one left it
            job_template = self.fleets.job_template(template_id, user_data, job.id)
        try:
            launched = self.fleets.launch(job_template, job.id, prefer)
        except LaunchError:
            # When EC2 is what failed this may fail too: the next try deletes it first (gc if none).
            with contextlib.suppress(ClientError, BotoCoreError):
                self.fleets.delete_job_template(job.id)
            raise
        price = self.fleets.spot_price(launched.instance_type, launched.availability_zone)
        if price is None:
            price = self.settings.max_price  # what it costs at most
        if price is None:
            log.warning(
                "aws.spot_price_unknown",
                instance_type=launched.instance_type,
                zone=launched.availability_zone,
                cost="unknown",
            )
        progress(
            instance_id=launched.instance_id,
            fleet_id=launched.fleet_id,
            availability_zone=launched.availability_zone,
            instance_type=launched.instance_type,
            spot_price=price,
        )
        run = AwsRun(self, job, launched.instance_id, launched.fleet_id)
        zone = launched.availability_zone
        try:
            volume = self.volume.ensure_in(zone)
        except (BotoCoreError, ClientError) as exc:
            raise self._abandon(run, f"cannot bring the data volume to {zone}", exc) from exc
        try:
            # The user-data waits for these tags before it attaches the volume.
            after_launch(
                self.cloud.ec2.create_tags,
                Resources=[launched.instance_id],
                Tags=[
                    {"Key": TAG_VOLUME, "Value": volume["VolumeId"]},
                    {"Key": TAG_FLEET, "Value": launched.fleet_id},
                ],
            )
        except (BotoCoreError, ClientError) as exc:
            step = f"cannot tag instance {launched.instance_id} with its volume (create_tags)"
            raise self._abandon(run, step, exc) from exc
        log.info(
            "aws.job_launched",
            job_id=job.id,
            instance_id=launched.instance_id,
            zone=launched.availability_zone,
            volume_id=volume["VolumeId"],
            spot_price=price,
        )
        return run

    def _abandon(self, run: AwsRun, step: str, exc: Exception) -> LaunchError:
        """The attempt cannot go on after its launch: end it, then say why (step, AWS code).

        Raising out of `start()` with the instance up left it waiting for its volume tag, and
        its fleet and job template in place, until `parrotbot infra gc`.
        """
        reason = f"{step}: {aws_error(exc)}"
        log.error("aws.launch_abandoned", instance_id=run.instance_id, reason=reason)
        try:
            after_launch(run.cleanup)
        except (BotoCoreError, ClientError) as cleanup_exc:
            log.error(
                "aws.cleanup_failed",
                instance_id=run.instance_id,
                error=aws_error(cleanup_exc),
                next_step="parrotbot infra gc",
            )
            reason += left_running(run.instance_id)
        return LaunchError(reason)

    def adopt(self, job: Job) -> AwsRun | None:
        """Follow the instance a stopped or dead launcher left (or learn how it ended)."""
        if not job.instance_id.startswith("i-"):
            return None
        return AwsRun(self, job, job.instance_id, job.fleet_id)

    def _upload(self, job: Job, progress: Progress) -> None:
        """Upload the job for the instance, and record the hash of the datasets it sent.

        The datasets are copied first and both hashed and sent from the copies: the scraper
        renames new files over them at any time, and the record must name what was sent.
        """
        with tempfile.TemporaryDirectory(prefix="parrotbot-upload-") as folder:
            datasets = [Path(shutil.copyfile(p, Path(folder) / Path(p).name)) for p in job.datasets]
            data_hash = current_dataset_hash(datasets)
            with before_launch("cannot upload the job to S3"):
                self.exchange.upload_job(job.id, datasets, self._request(job))
        if data_hash is not None:
            progress(dataset_hash=data_hash)

    def _request(self, job: Job) -> dict[str, Any]:
        """The training request in the instance's paths: everything of the job on the volume."""
        job_dir = f"{self.settings.mount_dir}/jobs/{job.id}"
        return TrainRequest.for_job(
            job,
            datasets=[f"{job_dir}/datasets/{Path(p).name}" for p in job.datasets],
            checkpoints_dir=f"{job_dir}/checkpoints",
        ).to_dict()

    def _end_leftovers(self, job: Job) -> None:
        """Instances an earlier, half-finished launch of this job left running."""
        for instance in self.cloud.instances(**{TAG_JOB: job.id}):
            if instance["State"]["Name"] not in GONE_STATES:
                log.warning("aws.leftover_terminated", instance_id=instance["InstanceId"])
                self.fleets.terminate(instance["InstanceId"], None)


class AwsRun:
    def __init__(self, backend: AwsBackend, job: Job, instance_id: str, fleet_id: str) -> None:
        self.backend = backend
        self.job = job
        self.instance_id = instance_id
        self.fleet_id = fleet_id
        self.attempt = job.attempt
        self._launched_at: float | None = None
        self._ended_at: float | None = None

    def poll(self) -> Outcome | None:
        exchange = self.backend.exchange
        done = self._done()
        if done is not None:
            return done
        status = exchange.status(self.job.id, self.attempt) or ""
        if status.startswith("failed"):
            return Outcome(
                OutcomeKind.FAILED, f"instance reported {status}", log_tail=self.log_tail()
            )
        known, instance = self._look()
        if not known:
            return None
        state = instance["State"]["Name"] if instance else "gone"
        if state not in GONE_STATES and state != "gone":
            return None
        self._ended_at = self._ended_at or time.time()
        done = self._done()  # published just before it went away
        if done is not None:
            return done
        reason = (instance or {}).get("StateReason", {}).get("Message") or state
        detail = f"instance {self.instance_id} {state} ({status or reason})"
        return Outcome(OutcomeKind.INTERRUPTED, detail, log_tail=self.log_tail())

    def _done(self) -> Outcome | None:
        exchange = self.backend.exchange
        prefix = exchange.complete_version(self.job.id, self.job.model_kind)
        if prefix is None:
            return None
        exchange.promote(self.job.model_kind, prefix)
        version = prefix.rsplit("/", 1)[-1]
        return Outcome(OutcomeKind.DONE, f"published {version}", version=version)

    def cost(self) -> float | None:
        """Spot price × hours the instance has run (an estimate: AWS bills per second).

        None when no price is known (no spot price history, no `max_price`): an unknown cost
        is not $0.
        """
        price = self.job.spot_price
        if price is None:
            return None
        if self._launched_at is None:
            known, instance = self._look()
            if not known:  # the record keeps its figure until EC2 answers
                return max(0.0, self.job.cost_estimate - self.job.cost_prior_attempts)
            if instance is None:
                return 0.0
            self._launched_at = instance["LaunchTime"].timestamp()
        end = self._ended_at or time.time()
        return price * max(0.0, end - self._launched_at) / 3600

    def log_tail(self, lines: int = 20) -> list[str]:
        return self.backend.exchange.log_tail(self.job.id, self.attempt, lines)

    def interrupt(self, timeout: float) -> None:
        """Nothing to do: the instance goes on, and the next launcher adopts it."""

    def terminate(self, reason: str) -> None:
        log.warning("aws.instance_terminating", instance_id=self.instance_id, reason=reason)
        self.backend.fleets.terminate(self.instance_id, self.fleet_id)
        self._ended_at = time.time()

    def cleanup(self) -> None:
        """Give the instance its grace to detach and end itself; then make sure of it."""
        fleets = self.backend.fleets
        ec2 = self.backend.cloud.ec2
        grace = self.backend.settings.shutdown_grace_seconds
        if grace > 0 and self._instance() is not None:
            attempts = max(1, int(grace // 5))
            try:
                ec2.get_waiter("instance_terminated").wait(
                    InstanceIds=[self.instance_id],
                    WaiterConfig={"Delay": 5, "MaxAttempts": attempts},
                )
            except WaiterError:
                log.warning("aws.instance_overstayed", instance_id=self.instance_id, grace_s=grace)
        instance = self._instance()
        if instance is not None and instance["State"]["Name"] != "terminated":
            fleets.terminate(self.instance_id, self.fleet_id or None)
        elif self.fleet_id:
            fleets.delete(self.fleet_id)
        self._ended_at = self._ended_at or time.time()
        volume = self.backend.volume.find()
        if volume is not None:
            self.backend.volume.detach(volume["VolumeId"], self.instance_id)
        self.backend.fleets.delete_job_template(self.job.id)
        log.info("aws.cleaned_up", job_id=self.job.id, instance_id=self.instance_id)

    def _look(self) -> tuple[bool, dict[str, Any] | None]:
        """``(True, self._instance())``, or ``(False, None)`` when EC2 failed to answer now.

        Not knowing is not "gone": read as an interruption, it would relaunch the job while
        its instance trains on. The next poll asks again.
        """
        try:
            return True, self._instance()
        except (BotoCoreError, ClientError) as exc:
            if not is_transient(exc):
                raise
            log.warning("aws.poll_failed", instance_id=self.instance_id, error=aws_error(exc))
            return False, None

    def _instance(self) -> dict[str, Any] | None:
        """The instance as EC2 describes it; None once EC2 no longer lists it (long ended).

        Any other error is raised: only its caller knows whether "unknown now" can wait.
        """
        try:
            return self.backend.fleets.describe(self.instance_id)
        except (ClientError, InstanceNotVisible) as exc:
            if instance_not_listed(exc):
                return None
            raise
