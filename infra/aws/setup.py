"""`parrotbot infra setup` / `teardown`: the resources spot training needs, made idempotently.

Setup creates what is missing and reports what already exists, so running it twice does what
running it once did: the trainer's IAM role, its least-privilege policy and instance profile,
the private encrypted bucket, the gp3 data volume and the launch template. Teardown removes all
of it (after ending any job's instances), bucket contents and data volume included.
"""

from __future__ import annotations

import contextlib
import json
from typing import Any

import structlog
from botocore.exceptions import ClientError

from infra.aws.cloud import GONE_STATES, Cloud
from infra.aws.fleet import Fleets, launch_template_data
from infra.aws.iam import TRUST_POLICY, as_json, trainer_policy
from infra.aws.volume import DataVolume

log = structlog.get_logger(__name__)

POLICY_NAME = "parrotbot-trainer"
TLS_ONLY_SID = "ParrotbotDenyInsecureTransport"


class Report(list[str]):
    """Lines like `created bucket my-bucket`, in the order things were done."""

    def add(self, verb: str, kind: str, name: str) -> None:
        self.append(f"{verb} {kind} {name}")
        log.info("infra.resource", verb=verb, kind=kind, name=name)


def setup(cloud: Cloud) -> Report:
    report = Report()
    name = cloud.settings.resource_name(cloud.account, "trainer")
    _role(cloud, name, report)
    _instance_profile(cloud, name, report)
    _bucket(cloud, report)
    _data_volume(cloud, report)
    _launch_template(cloud, name, report)
    return report


def teardown(cloud: Cloud) -> Report:
    report = Report()
    name = cloud.settings.resource_name(cloud.account, "trainer")
    ec2 = cloud.ec2
    fleets = Fleets(cloud)
    for fleet in cloud.fleets():
        fleets.delete(fleet["FleetId"])
        report.add("deleted", "fleet", fleet["FleetId"])
    for instance in cloud.instances():
        if instance["State"]["Name"] not in GONE_STATES:
            fleets.terminate(instance["InstanceId"], None)
            report.add("terminated", "instance", instance["InstanceId"])
    try:
        ec2.delete_launch_template(LaunchTemplateName=name)
        report.add("deleted", "launch template", name)
    except ClientError:
        report.add("absent", "launch template", name)
    for volume in cloud.volumes():
        DataVolume(cloud).wait_detached(volume["VolumeId"])
        ec2.delete_volume(VolumeId=volume["VolumeId"])
        report.add("deleted", "volume", volume["VolumeId"])
    for snapshot in cloud.snapshots():
        ec2.delete_snapshot(SnapshotId=snapshot["SnapshotId"])
        report.add("deleted", "snapshot", snapshot["SnapshotId"])
    _delete_bucket(cloud, report)
    _delete_iam(cloud, name, report)
    return report


def _role(cloud: Cloud, name: str, report: Report) -> None:
    iam = cloud.iam
    try:
        iam.get_role(RoleName=name)
        report.add("exists", "role", name)
    except iam.exceptions.NoSuchEntityException:
        iam.create_role(
            RoleName=name,
            AssumeRolePolicyDocument=json.dumps(TRUST_POLICY),
            Description="parrotbot spot trainer",
            Tags=cloud.tags("trainer"),
        )
        report.add("created", "role", name)
    wanted = trainer_policy(cloud.settings, cloud.account)
    try:
        current = iam.get_role_policy(RoleName=name, PolicyName=POLICY_NAME)["PolicyDocument"]
        if isinstance(current, str):
            current = json.loads(current)
    except iam.exceptions.NoSuchEntityException:
        current = None
    if current is not None and as_json(current) == as_json(wanted):
        report.add("exists", "role policy", POLICY_NAME)
        return
    iam.put_role_policy(RoleName=name, PolicyName=POLICY_NAME, PolicyDocument=json.dumps(wanted))
    report.add("created" if current is None else "updated", "role policy", POLICY_NAME)


def _instance_profile(cloud: Cloud, name: str, report: Report) -> None:
    iam = cloud.iam
    try:
        profile = iam.get_instance_profile(InstanceProfileName=name)["InstanceProfile"]
        report.add("exists", "instance profile", name)
    except iam.exceptions.NoSuchEntityException:
        profile = iam.create_instance_profile(InstanceProfileName=name, Tags=cloud.tags("trainer"))
        profile = profile["InstanceProfile"]
        report.add("created", "instance profile", name)
    if not any(role["RoleName"] == name for role in profile.get("Roles", [])):
        iam.add_role_to_instance_profile(InstanceProfileName=name, RoleName=name)
        report.add("attached", "role to instance profile", name)


def _bucket(cloud: Cloud, report: Report) -> None:
    s3 = cloud.s3
    bucket = cloud.settings.bucket
    try:
        s3.head_bucket(Bucket=bucket)
        report.add("exists", "bucket", bucket)
    except ClientError:
        options: dict[str, Any] = {}
        if cloud.settings.region != "us-east-1":
            options["CreateBucketConfiguration"] = {"LocationConstraint": cloud.settings.region}
        s3.create_bucket(Bucket=bucket, **options)
        report.add("created", "bucket", bucket)
    # Re-applied every time (each call is idempotent): private, encrypted, owner-enforced.
    s3.put_public_access_block(
        Bucket=bucket,
        PublicAccessBlockConfiguration={
            "BlockPublicAcls": True,
            "IgnorePublicAcls": True,
            "BlockPublicPolicy": True,
            "RestrictPublicBuckets": True,
        },
    )
    s3.put_bucket_encryption(
        Bucket=bucket,
        ServerSideEncryptionConfiguration={
            "Rules": [
                {
                    "ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"},
                    "BucketKeyEnabled": True,
                }
            ]
        },
    )
    s3.put_bucket_ownership_controls(
        Bucket=bucket,
        OwnershipControls={"Rules": [{"ObjectOwnership": "BucketOwnerEnforced"}]},
    )
    s3.put_bucket_tagging(Bucket=bucket, Tagging={"TagSet": cloud.tags("bucket")})
    _bucket_policy(cloud, report)
    _lifecycle(cloud, report)


def tls_only_statement(bucket: str) -> dict[str, Any]:
    """Deny every request to the bucket that does not come over TLS."""
    arn = f"arn:aws:s3:::{bucket}"
    return {
        "Sid": TLS_ONLY_SID,
        "Effect": "Deny",
        "Principal": "*",
        "Action": "s3:*",
        "Resource": [arn, f"{arn}/*"],
        "Condition": {"Bool": {"aws:SecureTransport": "false"}},
    }


def _bucket_policy(cloud: Cloud, report: Report) -> None:
    """Add (or refresh) our statement, keeping whatever else the bucket's policy says."""
    s3 = cloud.s3
    bucket = cloud.settings.bucket
    try:
        policy = json.loads(s3.get_bucket_policy(Bucket=bucket)["Policy"])
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") != "NoSuchBucketPolicy":
            raise
        policy = {"Version": "2012-10-17", "Statement": []}
    wanted = tls_only_statement(bucket)
    others = [st for st in policy.get("Statement", []) if st.get("Sid") != TLS_ONLY_SID]
    if len(others) < len(policy.get("Statement", [])) and wanted in policy["Statement"]:
        report.add("exists", "bucket policy", TLS_ONLY_SID)
        return
    policy["Statement"] = [*others, wanted]
    s3.put_bucket_policy(Bucket=bucket, Policy=json.dumps(policy))
    report.add("created", "bucket policy", TLS_ONLY_SID)


def lifecycle_rules(cloud: Cloud) -> list[dict[str, Any]]:
    """This account's rules: old job objects expire; unfinished multipart uploads go."""
    root = cloud.settings.root(cloud.account)
    rules: list[dict[str, Any]] = [
        {
            "ID": cloud.settings.resource_name(cloud.account, "abort-uploads"),
            "Filter": {"Prefix": f"{root}/"},
            "Status": "Enabled",
            "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": 7},
        }
    ]
    if cloud.settings.job_expiry_days:
        rules.append(
            {
                "ID": cloud.settings.resource_name(cloud.account, "expire-jobs"),
                "Filter": {"Prefix": f"{root}/jobs/"},
                "Status": "Enabled",
                "Expiration": {"Days": cloud.settings.job_expiry_days},
            }
        )
    return rules


def _lifecycle(cloud: Cloud, report: Report) -> None:
    """Write this account's lifecycle rules, keeping other accounts' (one bucket, many bots)."""
    s3 = cloud.s3
    bucket = cloud.settings.bucket
    try:
        current = s3.get_bucket_lifecycle_configuration(Bucket=bucket)["Rules"]
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") != "NoSuchLifecycleConfiguration":
            raise
        current = []
    ours = cloud.settings.resource_name(cloud.account, "")
    others = [rule for rule in current if not rule.get("ID", "").startswith(ours)]
    wanted = lifecycle_rules(cloud)
    if [rule for rule in current if rule not in others] == wanted:
        report.add("exists", "lifecycle rules", ours + "*")
        return
    s3.put_bucket_lifecycle_configuration(
        Bucket=bucket, LifecycleConfiguration={"Rules": [*others, *wanted]}
    )
    report.add(
        "updated" if len(current) > len(others) else "created", "lifecycle rules", ours + "*"
    )


def _data_volume(cloud: Cloud, report: Report) -> None:
    volumes = DataVolume(cloud)
    volume = volumes.find()
    if volume is not None:
        report.add("exists", "volume", f"{volume['VolumeId']} ({volume['AvailabilityZone']})")
        return
    zones = Fleets(cloud).subnets_by_zone()
    if not zones:
        raise RuntimeError("no subnet to place the data volume in (see training.aws.subnet_ids)")
    volume = volumes.create(next(iter(zones)))
    report.add("created", "volume", f"{volume['VolumeId']} ({volume['AvailabilityZone']})")


def _launch_template(cloud: Cloud, name: str, report: Report) -> None:
    ec2 = cloud.ec2
    wanted = launch_template_data(cloud)
    try:
        template = ec2.describe_launch_templates(LaunchTemplateNames=[name])["LaunchTemplates"][0]
    except ClientError:
        ec2.create_launch_template(
            LaunchTemplateName=name,
            LaunchTemplateData=wanted,
            TagSpecifications=[cloud.tag_spec("launch-template", "trainer")],
        )
        report.add("created", "launch template", name)
        return
    current = ec2.describe_launch_template_versions(
        LaunchTemplateId=template["LaunchTemplateId"], Versions=["$Default"]
    )["LaunchTemplateVersions"][0]["LaunchTemplateData"]
    changed = _changed_fields(current, wanted)
    if not changed:
        report.add("exists", "launch template", name)
        return
    log.info("infra.template_changed", fields=changed)
    version = ec2.create_launch_template_version(
        LaunchTemplateId=template["LaunchTemplateId"],
        LaunchTemplateData=wanted,
        VersionDescription="parrotbot setup",
    )["LaunchTemplateVersion"]["VersionNumber"]
    ec2.modify_launch_template(
        LaunchTemplateId=template["LaunchTemplateId"], DefaultVersion=str(version)
    )
    report.add("updated", "launch template", f"{name} (version {version})")


def _changed_fields(current: dict[str, Any], wanted: dict[str, Any]) -> list[str]:
    """Fields of the template's data that differ from what the config asks for.

    Only the tag specifications for resource types we set are compared: moto echoes the
    template's own tags in there too.
    """
    changed = []
    for key, value in wanted.items():
        have = current.get(key)
        if key == "TagSpecifications":
            kinds = {spec["ResourceType"] for spec in value}
            have = [spec for spec in have or [] if spec["ResourceType"] in kinds]
        if have != value:
            changed.append(key)
    return sorted(changed)


def _delete_bucket(cloud: Cloud, report: Report) -> None:
    s3 = cloud.s3
    bucket = cloud.settings.bucket
    try:
        s3.head_bucket(Bucket=bucket)
    except ClientError:
        report.add("absent", "bucket", bucket)
        return
    pages = s3.get_paginator("list_object_versions").paginate(Bucket=bucket)
    for page in pages:
        doomed = [
            {"Key": item["Key"], "VersionId": item["VersionId"]}
            for item in page.get("Versions", []) + page.get("DeleteMarkers", [])
        ]
        if doomed:
            s3.delete_objects(Bucket=bucket, Delete={"Objects": doomed, "Quiet": True})
    s3.delete_bucket(Bucket=bucket)
    report.add("deleted", "bucket", bucket)


def _delete_iam(cloud: Cloud, name: str, report: Report) -> None:
    iam = cloud.iam
    with contextlib.suppress(iam.exceptions.NoSuchEntityException):
        iam.remove_role_from_instance_profile(InstanceProfileName=name, RoleName=name)
    try:
        iam.delete_instance_profile(InstanceProfileName=name)
        report.add("deleted", "instance profile", name)
    except iam.exceptions.NoSuchEntityException:
        report.add("absent", "instance profile", name)
    try:
        iam.delete_role_policy(RoleName=name, PolicyName=POLICY_NAME)
        report.add("deleted", "role policy", POLICY_NAME)
    except iam.exceptions.NoSuchEntityException:
        report.add("absent", "role policy", POLICY_NAME)
    try:
        iam.delete_role(RoleName=name)
        report.add("deleted", "role", name)
    except iam.exceptions.NoSuchEntityException:
        report.add("absent", "role", name)
