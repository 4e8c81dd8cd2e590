"""The trainer instance's IAM role: trust and a least-privilege policy scoped by tag.

The instance may describe what it looks at; attach, detach and delete only volumes and
snapshots tagged for its account; snapshot only its account's volumes and make volumes only
from its account's snapshots, the new ones tagged for the account; terminate only instances of
its account (itself), delete only its account's fleets; read its account's jobs in the bucket
and write only a job's outputs there (version, log, status). Nothing else: no IAM, no other
buckets, no `checkpoints/*`, no job code, request or dataset.
"""

from __future__ import annotations

import json
from typing import Any

from infra.aws.cloud import TAG_ACCOUNT
from infra.settings import AwsSettings

TRUST_POLICY = {
    "Version": "2012-10-17",
    "Statement": [
        {
            "Effect": "Allow",
            "Principal": {"Service": "ec2.amazonaws.com"},
            "Action": "sts:AssumeRole",
        }
    ],
}


# What the trainer writes under its job's prefix: the finished version, its log, its status.
# Everything else there (datasets, request, code) and `checkpoints/*` are the launcher's.
TRAINER_OUTPUTS = ("versions", "logs", "status")
VOLUMES = "arn:aws:ec2:*:*:volume/*"
SNAPSHOTS = "arn:aws:ec2:*:*:snapshot/*"


def trainer_policy(settings: AwsSettings, account: str) -> dict[str, Any]:
    """The trainer role's policy document; `account` is the bot account its tags name."""
    tagged = {"StringEquals": {f"aws:ResourceTag/{TAG_ACCOUNT}": account}}
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "Look",
                "Effect": "Allow",
                "Action": [
                    "ec2:DescribeVolumes",
                    "ec2:DescribeSnapshots",
                    "ec2:DescribeInstances",
                    "ec2:DescribeTags",
                    "ec2:DescribeFleets",
                ],
                "Resource": "*",
            },
            {
                "Sid": "OwnVolumesAndSnapshots",
                "Effect": "Allow",
                "Action": ["ec2:AttachVolume", "ec2:DetachVolume", "ec2:DeleteVolume"],
                "Resource": VOLUMES,
                "Condition": tagged,
            },
            {
                "Sid": "DeleteOwnSnapshots",
                "Effect": "Allow",
                "Action": "ec2:DeleteSnapshot",
                "Resource": SNAPSHOTS,
                "Condition": tagged,
            },
            *copy_statements(account),
            {
                "Sid": "TagOnCreate",
                "Effect": "Allow",
                "Action": "ec2:CreateTags",
                "Resource": [VOLUMES, SNAPSHOTS],
                "Condition": {
                    "StringEquals": {"ec2:CreateAction": ["CreateVolume", "CreateSnapshot"]}
                },
            },
            {
                "Sid": "EndItself",
                "Effect": "Allow",
                "Action": ["ec2:AttachVolume", "ec2:DetachVolume", "ec2:TerminateInstances"],
                "Resource": "arn:aws:ec2:*:*:instance/*",
                "Condition": tagged,
            },
            {
                "Sid": "DeleteOwnFleet",
                "Effect": "Allow",
                "Action": "ec2:DeleteFleets",
                "Resource": "arn:aws:ec2:*:*:fleet/*",
                "Condition": tagged,
            },
            *s3_statements(settings, account),
        ],
    }


def copy_statements(account: str) -> list[dict[str, Any]]:
    """CreateSnapshot and CreateVolume, with the source and the new resource judged apart.

    IAM authorises these calls against every resource they touch: CreateSnapshot against the
    source volume and the new snapshot, CreateVolume against the new volume and the snapshot
    it is made from. `aws:RequestTag` says only what the call asks to tag the new resource
    with, so under one such condition any source in the AWS account would pass: the source
    must carry the bot account's tag (`ec2:ResourceTag`), the new resource must be asked for
    with it (`aws:RequestTag`).
    """
    source = {"StringEquals": {f"ec2:ResourceTag/{TAG_ACCOUNT}": account}}
    requested = {"StringEquals": {f"aws:RequestTag/{TAG_ACCOUNT}": account}}
    return [
        {
            "Sid": "SnapshotOnlyOwnVolumes",
            "Effect": "Allow",
            "Action": "ec2:CreateSnapshot",
            "Resource": VOLUMES,
            "Condition": source,
        },
        {
            "Sid": "NewSnapshotsTagged",
            "Effect": "Allow",
            "Action": "ec2:CreateSnapshot",
            "Resource": SNAPSHOTS,
            "Condition": requested,
        },
        {
            "Sid": "VolumesOnlyFromOwnSnapshots",
            "Effect": "Allow",
            "Action": "ec2:CreateVolume",
            "Resource": SNAPSHOTS,
            "Condition": source,
        },
        {
            "Sid": "NewVolumesTagged",
            "Effect": "Allow",
            "Action": "ec2:CreateVolume",
            "Resource": VOLUMES,
            "Condition": requested,
        },
    ]


def s3_statements(settings: AwsSettings, account: str) -> list[dict[str, Any]]:
    """Read the account's jobs; write only what a trainer produces (`TRAINER_OUTPUTS`).

    A trainer must not move `checkpoints/*/LATEST` (that is the launcher's verdict that a
    version is complete) nor replace a job's code, request or datasets, which the next attempt
    of a job would run. IAM cannot tell one job's instance from another's here (the role is
    the account's), so the outputs are those of any of the account's jobs.
    """
    bucket = f"arn:aws:s3:::{settings.bucket}"
    jobs = f"{settings.root(account)}/jobs"
    return [
        {
            "Sid": "ListOwnJobs",
            "Effect": "Allow",
            "Action": "s3:ListBucket",
            "Resource": bucket,
            "Condition": {"StringLike": {"s3:prefix": [f"{jobs}/*"]}},
        },
        {
            "Sid": "ReadOwnJobs",
            "Effect": "Allow",
            "Action": "s3:GetObject",
            "Resource": f"{bucket}/{jobs}/*",
        },
        {
            "Sid": "WriteOnlyJobOutputs",
            "Effect": "Allow",
            "Action": "s3:PutObject",
            "Resource": [f"{bucket}/{jobs}/*/{output}/*" for output in TRAINER_OUTPUTS],
        },
    ]


def as_json(document: dict[str, Any]) -> str:
    return json.dumps(document, sort_keys=True, separators=(",", ":"))
