"""The trainer instance's IAM role: trust and a least-privilege policy scoped by tag.

The instance may describe what it looks at; attach, detach, snapshot and delete only volumes
and snapshots tagged for its account; create volumes and snapshots only with those tags;
terminate only instances of its account (itself), delete only its account's fleets; and read
and write only its account's prefix of the bucket. Nothing else: no IAM, no other buckets.
"""

from __future__ import annotations

import json
from typing import Any

from infra.cloud import TAG_ACCOUNT
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


def trainer_policy(settings: AwsSettings, account: str) -> dict[str, Any]:
    tagged = {"StringEquals": {f"aws:ResourceTag/{TAG_ACCOUNT}": account}}
    requested = {"StringEquals": {f"aws:RequestTag/{TAG_ACCOUNT}": account}}
    bucket = f"arn:aws:s3:::{settings.bucket}"
    root = settings.root(account)
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
                "Action": [
                    "ec2:AttachVolume",
                    "ec2:DetachVolume",
                    "ec2:DeleteVolume",
                    "ec2:CreateSnapshot",
                    "ec2:DeleteSnapshot",
                ],
                "Resource": ["arn:aws:ec2:*:*:volume/*", "arn:aws:ec2:*:*:snapshot/*"],
                "Condition": tagged,
            },
            {
                "Sid": "CreateOnlyTagged",
                "Effect": "Allow",
                "Action": ["ec2:CreateVolume", "ec2:CreateSnapshot"],
                "Resource": ["arn:aws:ec2:*:*:volume/*", "arn:aws:ec2:*:*:snapshot/*"],
                "Condition": requested,
            },
            {
                "Sid": "TagOnCreate",
                "Effect": "Allow",
                "Action": "ec2:CreateTags",
                "Resource": ["arn:aws:ec2:*:*:volume/*", "arn:aws:ec2:*:*:snapshot/*"],
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
            {
                "Sid": "ListOwnPrefix",
                "Effect": "Allow",
                "Action": "s3:ListBucket",
                "Resource": bucket,
                "Condition": {"StringLike": {"s3:prefix": [f"{root}/*"]}},
            },
            {
                "Sid": "ReadWriteOwnPrefix",
                "Effect": "Allow",
                "Action": ["s3:GetObject", "s3:PutObject"],
                "Resource": f"{bucket}/{root}/*",
            },
        ],
    }


def as_json(document: dict[str, Any]) -> str:
    return json.dumps(document, sort_keys=True, separators=(",", ":"))
