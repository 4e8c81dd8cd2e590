"""`parrotbot infra setup` / `teardown` / `gc` against moto_server over HTTP."""

from __future__ import annotations

import fnmatch
import json
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from typer.testing import CliRunner

from bot.cli import app
from infra.aws.cloud import Cloud
from infra.aws.exchange import S3Exchange
from infra.aws.gc import collect
from infra.aws.setup import POLICY_NAME, setup, teardown
from tests.support.aws import latest_version, live_instances, publish_to_s3


def inventory(cloud: Cloud) -> dict[str, Any]:
    """Everything of the account that setup makes, by kind (to compare runs)."""
    name = cloud.settings.resource_name(cloud.account, "trainer")
    ec2, iam, s3 = cloud.ec2, cloud.iam, cloud.s3
    found: dict[str, Any] = {
        "volumes": sorted(v["VolumeId"] for v in cloud.volumes()),
        "templates": sorted(
            t["LaunchTemplateName"]
            for t in ec2.describe_launch_templates()["LaunchTemplates"]
            if t["LaunchTemplateName"] == name
        ),
        "roles": [r["RoleName"] for r in iam.list_roles()["Roles"] if r["RoleName"] == name],
        "profiles": [
            p["InstanceProfileName"]
            for p in iam.list_instance_profiles()["InstanceProfiles"]
            if p["InstanceProfileName"] == name
        ],
        "buckets": [
            b["Name"] for b in s3.list_buckets()["Buckets"] if b["Name"] == cloud.settings.bucket
        ],
        "snapshots": [s["SnapshotId"] for s in cloud.snapshots()],
        "fleets": [f["FleetId"] for f in cloud.fleets()],
        "instances": live_instances(cloud),
    }
    return found


def test_setup_twice_is_setup_once(cloud: Cloud) -> None:
    first = setup(cloud)
    after_first = inventory(cloud)
    second = setup(cloud)
    assert inventory(cloud) == after_first
    assert all(line.startswith(("created", "attached")) for line in first), first
    assert all(line.startswith("exists") for line in second), second
    assert len(after_first["volumes"]) == 1 and len(after_first["roles"]) == 1
    assert after_first["buckets"] == [cloud.settings.bucket]

    # What was made is what the issue asks for: private encrypted bucket, gp3 volume, IMDSv2.
    s3 = cloud.s3
    block = s3.get_public_access_block(Bucket=cloud.settings.bucket)
    assert all(block["PublicAccessBlockConfiguration"].values())
    rules = s3.get_bucket_encryption(Bucket=cloud.settings.bucket)[
        "ServerSideEncryptionConfiguration"
    ]["Rules"]
    assert rules[0]["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"] == "AES256"
    (volume,) = cloud.volumes()
    assert volume["VolumeType"] == "gp3" and volume["Encrypted"]
    name = cloud.settings.resource_name(cloud.account, "trainer")
    data = cloud.ec2.describe_launch_template_versions(
        LaunchTemplateName=name, Versions=["$Default"]
    )["LaunchTemplateVersions"][0]["LaunchTemplateData"]
    assert data["MetadataOptions"]["HttpTokens"] == "required"
    assert data["InstanceInitiatedShutdownBehavior"] == "terminate"
    assert data["ImageId"] == cloud.settings.ami_id
    assert data["IamInstanceProfile"]["Name"] == name


def test_the_trainer_policy_is_scoped_by_tag_and_prefix(cloud: Cloud) -> None:
    setup(cloud)
    name = cloud.settings.resource_name(cloud.account, "trainer")
    document = cloud.iam.get_role_policy(RoleName=name, PolicyName=POLICY_NAME)["PolicyDocument"]
    policy = document if isinstance(document, dict) else json.loads(document)
    for statement in policy["Statement"]:
        actions = (
            statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
        )
        assert not any(a.endswith("*") or a.startswith("iam:") for a in actions), statement
        mutating = [a for a in actions if not a.startswith(("ec2:Describe", "s3:"))]
        if mutating:  # every change to EC2 is limited by the account's tag
            condition = json.dumps(statement.get("Condition", {}))
            assert (
                f'parrotbot:account": "{cloud.account}' in condition or "CreateAction" in condition
            )
        if any(a.startswith("s3:") for a in actions):
            assert cloud.settings.root(cloud.account) in json.dumps(statement)
    trust = cloud.iam.get_role(RoleName=name)["Role"]["AssumeRolePolicyDocument"]
    assert "ec2.amazonaws.com" in json.dumps(trust)


def stored_policy(cloud: Cloud) -> dict[str, Any]:
    """The trainer role's policy as IAM holds it after setup."""
    name = cloud.settings.resource_name(cloud.account, "trainer")
    document = cloud.iam.get_role_policy(RoleName=name, PolicyName=POLICY_NAME)["PolicyDocument"]
    return document if isinstance(document, dict) else json.loads(document)


def grants(policy: dict[str, Any], action: str) -> list[tuple[str, dict[str, Any]]]:
    """(resource pattern, condition) of every Allow of `action` in `policy`."""
    found = []
    for statement in policy["Statement"]:
        actions, resources = statement["Action"], statement["Resource"]
        actions = actions if isinstance(actions, list) else [actions]
        resources = resources if isinstance(resources, list) else [resources]
        if statement["Effect"] == "Allow" and action in actions:
            found += [(resource, statement.get("Condition", {})) for resource in resources]
    return found


def condition_keys(condition: dict[str, Any]) -> set[str]:
    return {key for clause in condition.values() for key in clause}


@pytest.mark.parametrize(
    ("action", "source", "new"),
    [("ec2:CreateSnapshot", "volume", "snapshot"), ("ec2:CreateVolume", "snapshot", "volume")],
)
def test_a_copy_needs_an_own_source_and_tags_only_the_new_resource(
    cloud: Cloud, action: str, source: str, new: str
) -> None:
    """The source of a snapshot or volume copy is judged by its tag, never by the request's."""
    setup(cloud)
    tag = "parrotbot:account"
    by_type: dict[str, list[dict[str, Any]]] = {}
    for resource, condition in grants(stored_policy(cloud), action):
        by_type.setdefault(resource.rsplit(":", 1)[-1].split("/")[0], []).append(condition)
    assert set(by_type) == {source, new}, by_type
    for condition in by_type[source]:
        assert condition_keys(condition) == {f"ec2:ResourceTag/{tag}"}, (source, condition)
        assert condition["StringEquals"][f"ec2:ResourceTag/{tag}"] == cloud.account
    for condition in by_type[new]:
        assert condition_keys(condition) == {f"aws:RequestTag/{tag}"}, (new, condition)
        assert condition["StringEquals"][f"aws:RequestTag/{tag}"] == cloud.account


def test_the_trainer_writes_only_its_jobs_outputs(cloud: Cloud) -> None:
    setup(cloud)
    bucket = f"arn:aws:s3:::{cloud.settings.bucket}"
    root = cloud.settings.root(cloud.account)
    writable = [resource for resource, _ in grants(stored_policy(cloud), "s3:PutObject")]

    def may_write(key: str) -> bool:  # IAM's `*` matches across `/`, as fnmatch's does
        return any(fnmatch.fnmatchcase(f"{bucket}/{key}", pattern) for pattern in writable)

    job = f"{root}/jobs/20260101T000000Z-abc123"
    for key in (
        f"{job}/versions/char_rnn/v1/manifest.json",
        f"{job}/logs/attempt-1.log",
        f"{job}/status/attempt-1",
    ):
        assert may_write(key), key
    for key in (
        f"{root}/checkpoints/char_rnn/LATEST",
        f"{job}/code.tar.gz",
        f"{job}/request.json",
        f"{job}/datasets/poorrichard.jsonl",
        f"{cloud.settings.prefix}/someone-else/jobs/j/versions/char_rnn/v1/manifest.json",
    ):
        assert not may_write(key), key


def test_teardown_leaves_nothing(cloud: Cloud) -> None:
    setup(cloud)
    cloud.s3.put_object(Bucket=cloud.settings.bucket, Key="parrotbot/x/data", Body=b"1")
    report = teardown(cloud)
    assert any(line.startswith("deleted bucket") for line in report)
    left = inventory(cloud)
    assert all(not value for value in left.values()), left
    with pytest.raises(ClientError):
        cloud.s3.head_bucket(Bucket=cloud.settings.bucket)
    assert all(line.startswith("absent") for line in teardown(cloud))  # idempotent too


def test_gc_removes_strays_but_not_the_data_volume_or_busy_jobs(cloud: Cloud) -> None:
    setup(cloud)
    from infra.aws.fleet import Fleets

    fleets = Fleets(cloud)
    template = cloud.settings.resource_name(cloud.account, "trainer")
    template_id = cloud.ec2.describe_launch_templates(LaunchTemplateNames=[template])[
        "LaunchTemplates"
    ][0]["LaunchTemplateId"]
    strays = []
    for job_id in ("job-dead", "job-busy"):
        job_template = fleets.job_template(template_id, "#!/bin/bash\n", job_id)
        strays.append(fleets.launch(job_template, job_id, None))
    report = collect(cloud, busy_jobs={"job-busy"})
    assert f"deleted fleet {strays[0].fleet_id}" in report  # which ended its instance too
    assert live_instances(cloud) == [strays[1].instance_id]
    assert [f["FleetId"] for f in cloud.fleets()] == [strays[1].fleet_id]
    assert len(cloud.volumes("data")) == 1
    assert list(fleets.job_templates()) == ["job-busy"]


def test_the_cli_prints_what_it_did(cloud: Cloud, write_config, tmp_path) -> None:
    aws = {"bucket": cloud.settings.bucket, "ami_id": cloud.settings.ami_id, "region": "us-east-1"}
    config = write_config(training={"backend": "aws", "aws": aws})
    runner = CliRunner()
    result = runner.invoke(app, ["infra", "setup", "-c", str(config)])
    assert result.exit_code == 0, result.output
    assert f"created bucket {cloud.settings.bucket}" in result.stdout
    result = runner.invoke(app, ["infra", "teardown", "-c", str(config), "--yes"])
    assert result.exit_code == 0, result.output
    assert f"deleted bucket {cloud.settings.bucket}" in result.stdout


def test_the_bucket_refuses_plain_http_and_old_job_objects_expire(cloud: Cloud) -> None:
    s3, bucket = cloud.s3, cloud.settings.bucket
    setup(cloud)
    policy = json.loads(s3.get_bucket_policy(Bucket=bucket)["Policy"])
    (deny,) = [st for st in policy["Statement"] if st["Effect"] == "Deny"]
    assert deny["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
    assert deny["Action"] == "s3:*" and deny["Principal"] == "*"
    assert sorted(deny["Resource"]) == [f"arn:aws:s3:::{bucket}", f"arn:aws:s3:::{bucket}/*"]

    root = cloud.settings.root(cloud.account)
    rules = s3.get_bucket_lifecycle_configuration(Bucket=bucket)["Rules"]
    expiring = {rule["Filter"]["Prefix"]: rule["Expiration"]["Days"] for rule in rules
                if "Expiration" in rule}  # fmt: skip
    assert expiring == {f"{root}/jobs/": 90}, rules
    assert all(rule["Status"] == "Enabled" for rule in rules)
    assert all(not rule["Filter"]["Prefix"].startswith(f"{root}/checkpoints") for rule in rules)

    # Another bot account's rule in the same bucket stays; a new expiry replaces ours.
    other = {"ID": "someone-else", "Filter": {"Prefix": "parrotbot/someone-else/jobs/"},
             "Status": "Enabled", "Expiration": {"Days": 3}}  # fmt: skip
    s3.put_bucket_lifecycle_configuration(
        Bucket=bucket, LifecycleConfiguration={"Rules": [*rules, other]}
    )
    shorter = Cloud(cloud.settings.model_copy(update={"job_expiry_days": 7}), cloud.account)
    assert any(line.startswith("updated lifecycle rules") for line in setup(shorter))
    rules = s3.get_bucket_lifecycle_configuration(Bucket=bucket)["Rules"]
    expiring = {rule["Filter"]["Prefix"]: rule["Expiration"]["Days"] for rule in rules
                if "Expiration" in rule}  # fmt: skip
    assert expiring == {f"{root}/jobs/": 7, "parrotbot/someone-else/jobs/": 3}
    assert len(json.loads(s3.get_bucket_policy(Bucket=bucket)["Policy"])["Statement"]) == 1


def test_the_trainers_root_volume_is_encrypted(cloud: Cloud) -> None:
    setup(cloud)
    name = cloud.settings.resource_name(cloud.account, "trainer")
    data = cloud.ec2.describe_launch_template_versions(
        LaunchTemplateName=name, Versions=["$Default"]
    )["LaunchTemplateVersions"][0]["LaunchTemplateData"]
    (image,) = cloud.ec2.describe_images(ImageIds=[cloud.settings.ami_id])["Images"]
    (root,) = data["BlockDeviceMappings"]
    assert root["DeviceName"] == image["RootDeviceName"]
    assert root["Ebs"]["Encrypted"] is True and root["Ebs"]["DeleteOnTermination"] is True


# S3 operations that cannot name the bucket's owner (there is none yet, or no bucket at all).
NO_OWNER = {"CreateBucket", "ListBuckets"}


def test_every_s3_call_names_the_buckets_owner(
    cloud: Cloud, trained_checkpoints: Path, tmp_path: Path
) -> None:
    """Seen on the wire: each request of setup, the exchange, gc and teardown carries it."""
    sent: list[tuple[str, str | None]] = []

    def record(model: Any, params: dict[str, Any], **_: Any) -> None:
        sent.append((model.name, params["headers"].get("x-amz-expected-bucket-owner")))

    cloud.s3.meta.events.register("before-call.s3", record)
    owner = boto3.client("sts", region_name=cloud.settings.region).get_caller_identity()["Account"]

    setup(cloud)
    exchange = S3Exchange(cloud.settings, cloud.account, cloud)
    dataset = tmp_path / "poorrichard.jsonl"
    dataset.write_text('{"id": "1", "text": "Early to bed"}\n')
    exchange.upload_job("job-1", [dataset], {"model_kind": "char_rnn"})
    source = latest_version(trained_checkpoints)
    prefix = f"{exchange.job_prefix('job-1')}/versions/char_rnn/{source.name}"
    publish_to_s3(cloud, prefix, source)
    assert exchange.complete_version("job-1", "char_rnn") == prefix
    exchange.promote("char_rnn", prefix)
    assert exchange.pull(tmp_path / "checkpoints" / "char_rnn").installed == source.name
    exchange.status("job-1", 1)
    exchange.log_tail("job-1", 1)
    collect(cloud, busy_jobs=set())
    teardown(cloud)

    operations = {name for name, _ in sent}
    assert {"PutBucketPolicy", "PutObject", "GetObject", "ListObjectsV2", "DeleteBucket"} <= (
        operations
    )
    missing = sorted({name for name, value in sent if value != owner and name not in NO_OWNER})
    assert missing == [], f"S3 calls without ExpectedBucketOwner={owner}: {missing}"
