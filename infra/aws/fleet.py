"""Spot capacity: an EC2 `CreateFleet` of type `instant` for one GPU instance.

One request lists every configured instance type in every subnet of a zone group, lets the
`price-capacity-optimized` strategy choose, and caps the price. Zones are tried in order: the
data volume's zone first (no relocation needed), then the others. The per-job user-data goes
into a new launch template version (CreateFleet takes no user-data of its own), which is
deleted with the job.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import structlog
from boto3.exceptions import Boto3Error
from botocore.exceptions import BotoCoreError, ClientError
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential,
)

from infra.aws.cloud import ROLE_TRAINER, TAG_JOB, TRANSIENT_CODES, Cloud, aws_error, is_transient
from infra.backend import LaunchError, TransientLaunchError

log = structlog.get_logger(__name__)

T = TypeVar("T")

WAIT = {"Delay": 5, "MaxAttempts": 120}

# Once the instance exists, AWS failing cannot send the job back to wait (a relaunch could leave
# two instances), so the calls right after the launch ride out a short outage themselves, on top
# of botocore's own retries: this many tries, the waits between them doubling from the first.
AFTER_LAUNCH_TRIES = 4
AFTER_LAUNCH_FIRST_WAIT_SECONDS = 0.5
AFTER_LAUNCH_MAX_WAIT_SECONDS = 4.0

# CreateFleet errors that mean "no instance at this price here, now": capacity comes back and
# prices move, so the launch is tried again later. Any other error (an unsupported type, a
# bad parameter, a spot quota of zero) would meet the same refusal every time.
CAPACITY_CODES = frozenset(
    {
        "InsufficientInstanceCapacity",
        "InsufficientCapacity",
        "InsufficientHostCapacity",
        "UnfulfillableCapacity",
        "SpotMaxPriceTooLow",
        "capacity-not-available",
        "price-too-low",
    }
)


@contextlib.contextmanager
def before_launch(step: str) -> Iterator[None]:
    """A step of a launch taken before any instance exists; `step` says what failed.

    Nothing of the attempt runs yet, so the whole launch can be tried again later: an AWS
    error that outlasted botocore's retries (throttling, a 5xx, a dropped connection) raises
    TransientLaunchError, and the job waits as it does for spot capacity. A refusal with a
    code (AccessDenied, NoSuchBucket) raises LaunchError: no wait changes it. Anything else
    (missing credentials, a dataset gone) passes through as it is.
    """
    try:
        yield
    except (BotoCoreError, ClientError, Boto3Error) as exc:
        if is_transient(exc):
            raise TransientLaunchError(f"{step}: {aws_error(exc)}") from exc
        if isinstance(exc, ClientError):
            raise LaunchError(f"{step}: {aws_error(exc)}") from exc
        raise


class InstanceNotVisible(Exception):
    """DescribeInstances does not list the instance asked for."""


def instance_not_listed(exc: BaseException) -> bool:
    """EC2 does not know the instance: `InvalidInstanceID.NotFound`, or an empty listing.

    What that means depends on when: right after a launch "not yet" (EC2's API is eventually
    consistent), for an instance that ran a while "long ended".
    """
    if isinstance(exc, InstanceNotVisible):
        return True
    code = exc.response.get("Error", {}).get("Code") if isinstance(exc, ClientError) else None
    return code == "InvalidInstanceID.NotFound"


def _transient_after_launch(exc: BaseException) -> bool:
    """`is_transient`, plus EC2 not knowing a just-launched instance yet."""
    return instance_not_listed(exc) or is_transient(exc)


def after_launch(call: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """`call(...)`, tried again after a short wait while AWS fails transiently.

    For the steps after the fleet launch: their caller ends the instance if this still fails.
    """
    retrying = Retrying(
        retry=retry_if_exception(_transient_after_launch),
        wait=wait_exponential(
            multiplier=AFTER_LAUNCH_FIRST_WAIT_SECONDS, max=AFTER_LAUNCH_MAX_WAIT_SECONDS
        ),
        stop=stop_after_attempt(AFTER_LAUNCH_TRIES),
        before_sleep=_log_retry,
        reraise=True,
    )
    return retrying(call, *args, **kwargs)


def _log_retry(state: RetryCallState) -> None:
    exc = state.outcome.exception() if state.outcome else None
    log.warning(
        "fleet.aws_retry",
        call=getattr(state.fn, "__name__", str(state.fn)),
        attempt=state.attempt_number,
        wait_s=round(state.upcoming_sleep, 2),
        error=aws_error(exc) if exc else None,
    )


def left_running(instance_id: str) -> str:
    """What a launch's failure adds when its instance could not be ended either."""
    return f" (instance {instance_id} may still run: `parrotbot infra gc` ends it)"


@dataclass(frozen=True)
class Launched:
    fleet_id: str
    instance_id: str
    instance_type: str
    availability_zone: str


class Fleets:
    def __init__(self, cloud: Cloud) -> None:
        self.cloud = cloud
        self.ec2 = cloud.ec2
        self.settings = cloud.settings

    def subnets_by_zone(self) -> dict[str, list[str]]:
        """Usable subnets per zone, zones in the configured order of preference."""
        settings = self.settings
        if settings.subnet_ids:
            found = self.ec2.describe_subnets(SubnetIds=settings.subnet_ids)["Subnets"]
        else:  # the default VPC's subnets (filtered here rather than by a server-side filter)
            found = [s for s in self.ec2.describe_subnets()["Subnets"] if s.get("DefaultForAz")]
        zones: dict[str, list[str]] = {}
        for subnet in found:
            zones.setdefault(subnet["AvailabilityZone"], []).append(subnet["SubnetId"])
        order = settings.availability_zones or sorted(zones)
        return {zone: zones[zone] for zone in order if zone in zones}

    def job_template(self, base_template_id: str, user_data: str, job_id: str) -> str:
        """A launch template for one job: the setup template's data plus the job's user-data.

        A template of its own rather than a version of the base one, so that cleanup can delete
        it whole (and moto, which the tests run against, has no DeleteLaunchTemplateVersions).
        """
        base = self.ec2.describe_launch_template_versions(
            LaunchTemplateId=base_template_id, Versions=["$Default"]
        )["LaunchTemplateVersions"][0]["LaunchTemplateData"]
        data = dict(base)
        # Only instance and volume tags belong in template data (moto echoes the template's own).
        data["TagSpecifications"] = [
            spec
            for spec in base.get("TagSpecifications", [])
            if spec["ResourceType"] in ("instance", "volume")
        ]
        data["UserData"] = base64.b64encode(user_data.encode()).decode()
        template = self.ec2.create_launch_template(
            LaunchTemplateName=self.job_template_name(job_id),
            VersionDescription=f"parrotbot job {job_id}",
            LaunchTemplateData=data,
            TagSpecifications=[
                self.cloud.tag_spec("launch-template", ROLE_TRAINER, **{TAG_JOB: job_id})
            ],
        )
        return template["LaunchTemplate"]["LaunchTemplateId"]

    def job_template_name(self, job_id: str) -> str:
        return self.settings.resource_name(self.cloud.account, f"job-{job_id}")

    def job_templates(self) -> dict[str, str]:
        """Job id → template id of every job template of this account still there."""
        prefix = self.job_template_name("")
        pages = self.ec2.get_paginator("describe_launch_templates").paginate()
        return {
            template["LaunchTemplateName"].removeprefix(prefix): template["LaunchTemplateId"]
            for page in pages
            for template in page["LaunchTemplates"]
            if template["LaunchTemplateName"].startswith(prefix)
        }

    def delete_job_template(self, job_id: str) -> bool:
        try:
            self.ec2.delete_launch_template(LaunchTemplateName=self.job_template_name(job_id))
        except ClientError:
            return False  # already gone
        return True

    def launch(self, template_id: str, job_id: str, prefer_zone: str | None) -> Launched:
        """One spot instance, in `prefer_zone` when it has capacity, else in another zone."""
        with before_launch("cannot list the subnets"):
            zones = self.subnets_by_zone()
        if not zones:
            raise LaunchError("no subnet to launch in (check training.aws.subnet_ids and zones)")
        groups = [[prefer_zone]] if prefer_zone in zones else []
        groups.append([zone for zone in zones if zone != prefer_zone])
        errors: list[tuple[str, str]] = []
        for group in groups:
            if not group:
                continue
            launched = self._try(template_id, job_id, group, zones, errors)
            if launched is not None:
                return launched
        detail = "; ".join(sorted({f"{code}: {message}" for code, message in errors}))
        codes = {code for code, _message in errors}
        if not codes or codes & (CAPACITY_CODES | TRANSIENT_CODES):
            raise TransientLaunchError(f"no spot capacity: {detail or 'no instance returned'}")
        raise LaunchError(f"spot launch refused: {detail}")

    def _try(
        self,
        template_id: str,
        job_id: str,
        group: list[str],
        zones: dict[str, list[str]],
        errors: list[tuple[str, str]],
    ) -> Launched | None:
        settings = self.settings
        overrides = [
            {"InstanceType": instance_type, "SubnetId": subnet}
            | ({"MaxPrice": f"{settings.max_price}"} if settings.max_price else {})
            for zone in group
            for subnet in zones[zone]
            for instance_type in settings.instance_types
        ]
        spot_options: dict[str, Any] = {
            "AllocationStrategy": "price-capacity-optimized",
            "InstanceInterruptionBehavior": "terminate",
        }
        if settings.max_price:
            spot_options["MaxTotalPrice"] = f"{settings.max_price}"
        try:
            reply = self._create_fleet(template_id, job_id, overrides, spot_options)
        except ClientError as exc:
            error = exc.response.get("Error", {})
            if not is_transient(exc):
                raise LaunchError(
                    f"spot launch refused: {error.get('Code')}: {error.get('Message')}"
                ) from exc
            errors.append((str(error.get("Code")), str(error.get("Message"))))
            log.warning("fleet.no_capacity", zones=group, errors=errors)
            return None
        fleet_id = reply["FleetId"]
        for error in reply.get("Errors", []):
            errors.append((str(error.get("ErrorCode")), str(error.get("ErrorMessage"))))
        instances = [i for i in reply.get("Instances", []) if i.get("InstanceIds")]
        if not instances:
            self.delete(fleet_id)
            log.warning("fleet.no_capacity", zones=group, errors=errors)
            return None
        instance_id = instances[0]["InstanceIds"][0]
        try:
            described = after_launch(self.describe, instance_id)
        except (BotoCoreError, ClientError, InstanceNotVisible) as exc:
            ended = self.abandon(instance_id, fleet_id)
            raise LaunchError(
                f"cannot describe the launched instance {instance_id} (describe_instances): "
                f"{aws_error(exc)}{'' if ended else left_running(instance_id)}"
            ) from exc
        launched = Launched(
            fleet_id=fleet_id,
            instance_id=instance_id,
            instance_type=described["InstanceType"],
            availability_zone=described["Placement"]["AvailabilityZone"],
        )
        log.info("fleet.launched", **launched.__dict__)
        return launched

    def _create_fleet(
        self,
        template_id: str,
        job_id: str,
        overrides: list[dict[str, Any]],
        spot_options: dict[str, Any],
    ) -> dict[str, Any]:
        return self.ec2.create_fleet(
            Type="instant",
            TargetCapacitySpecification={
                "TotalTargetCapacity": 1,
                "DefaultTargetCapacityType": "spot",
            },
            SpotOptions=spot_options,
            LaunchTemplateConfigs=[
                {
                    "LaunchTemplateSpecification": {
                        "LaunchTemplateId": template_id,
                        "Version": "$Latest",
                    },
                    "Overrides": overrides,
                }
            ],
            TagSpecifications=[
                self.cloud.tag_spec("fleet", ROLE_TRAINER, **{TAG_JOB: job_id}),
                self.cloud.tag_spec("instance", ROLE_TRAINER, **{TAG_JOB: job_id}),
            ],
        )

    def describe(self, instance_id: str) -> dict[str, Any]:
        reply = self.ec2.describe_instances(InstanceIds=[instance_id])
        for reservation in reply["Reservations"]:
            for instance in reservation["Instances"]:
                return instance
        raise InstanceNotVisible(f"DescribeInstances does not list {instance_id} yet")

    def spot_price(self, instance_type: str, zone: str) -> float | None:
        """The current spot price in USD per hour, for the cost estimate.

        None when AWS cannot say, even after a short retry: the instance is up by now, and a
        cost estimate (then capped by `max_price`, or unknown) is not worth ending it for.
        """
        try:
            history = after_launch(
                self.ec2.describe_spot_price_history,
                InstanceTypes=[instance_type],
                Filters=[{"Name": "availability-zone", "Values": [zone]}],
                ProductDescriptions=["Linux/UNIX"],
                StartTime=dt.datetime.now(dt.UTC),
                MaxResults=1,
            )["SpotPriceHistory"]
        except (BotoCoreError, ClientError) as exc:
            log.warning("fleet.spot_price_unknown", error=aws_error(exc))
            return None
        return float(history[0]["SpotPrice"]) if history else None

    def abandon(self, instance_id: str, fleet_id: str | None) -> bool:
        """End an instance whose launch cannot go on; False (logged) when AWS would not let us.

        Left running it would wait for its volume tag until `parrotbot infra gc`. No wait for
        the end (DescribeInstances may be what is failing): nothing is attached to it yet, and
        EC2 ends an instance whose termination it accepted.
        """
        try:
            if fleet_id:
                after_launch(self.delete, fleet_id)
            after_launch(self.ec2.terminate_instances, InstanceIds=[instance_id])
        except (BotoCoreError, ClientError) as exc:
            log.error(
                "fleet.instance_left_running",
                instance_id=instance_id,
                fleet_id=fleet_id,
                error=aws_error(exc),
                next_step="parrotbot infra gc",
            )
            return False
        log.warning("fleet.instance_abandoned", instance_id=instance_id, fleet_id=fleet_id)
        return True

    def terminate(self, instance_id: str, fleet_id: str | None) -> None:
        """Delete the fleet (terminating its instance) and wait until the instance is gone."""
        if fleet_id:
            self.delete(fleet_id)
        self.ec2.terminate_instances(InstanceIds=[instance_id])
        self.ec2.get_waiter("instance_terminated").wait(
            InstanceIds=[instance_id], WaiterConfig=WAIT
        )

    def delete(self, fleet_id: str) -> None:
        try:
            self.ec2.delete_fleets(FleetIds=[fleet_id], TerminateInstances=True)
        except ClientError as exc:
            log.warning("fleet.not_deleted", fleet_id=fleet_id, error=str(exc))


def root_device_name(cloud: Cloud) -> str:
    """The AMI's root device (`/dev/sda1`, `/dev/xvda`): the mapping that encrypts it names it."""
    images = cloud.ec2.describe_images(ImageIds=[cloud.settings.ami_id])["Images"]
    if not images or not images[0].get("RootDeviceName"):
        raise LaunchError(
            f"AMI {cloud.settings.ami_id} (training.aws.ami_id) not found in "
            f"{cloud.settings.region}, or it names no root device"
        )
    return images[0]["RootDeviceName"]


def launch_template_data(cloud: Cloud) -> dict[str, Any]:
    """The template every job's instance starts from (setup creates it; jobs add user-data)."""
    settings = cloud.settings
    data: dict[str, Any] = {
        "ImageId": settings.ami_id,
        "InstanceType": settings.instance_types[0],
        "IamInstanceProfile": {"Name": settings.resource_name(cloud.account, "trainer")},
        # IMDSv2 only; instance tags readable from the metadata (the volume id travels there).
        "MetadataOptions": {
            "HttpTokens": "required",
            "HttpEndpoint": "enabled",
            "HttpPutResponseHopLimit": 1,
            "InstanceMetadataTags": "enabled",
        },
        # `shutdown -h` from inside ends the instance for good: nothing is left running.
        "InstanceInitiatedShutdownBehavior": "terminate",
        # The root volume holds the job's code, request and logs while it runs: encrypted
        # (the AMI's snapshot may not be), gone with the instance, tagged so gc sees it.
        "BlockDeviceMappings": [
            {
                "DeviceName": root_device_name(cloud),
                "Ebs": {"Encrypted": True, "DeleteOnTermination": True, "VolumeType": "gp3"},
            }
        ],
        "TagSpecifications": [cloud.tag_spec("volume", ROLE_TRAINER)],
    }
    if settings.key_name:
        data["KeyName"] = settings.key_name
    if settings.security_group_ids:
        data["SecurityGroupIds"] = settings.security_group_ids
    return data
