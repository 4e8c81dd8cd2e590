"""boto3 clients for one account's AWS resources, and the tags that find those resources again.

Every resource parrotbot creates carries `parrotbot:account` and `parrotbot:role` tags (and
`parrotbot:job` where it belongs to one job): the instance role's policy is scoped by them,
`parrotbot infra gc` finds strays by them, and teardown removes exactly what they name.
Endpoints and credentials come from boto3's own chain (`AWS_ENDPOINT_URL` included), never
from the config.
"""

from __future__ import annotations

import functools
from typing import Any

import boto3
from boto3.exceptions import RetriesExceededError, S3UploadFailedError
from botocore import exceptions as boto_errors
from botocore.config import Config as BotoConfig

from infra.settings import AwsSettings

TAG_ACCOUNT = "parrotbot:account"
TAG_ROLE = "parrotbot:role"
TAG_JOB = "parrotbot:job"
# Read by the instance from its metadata (tag keys there allow letters, digits and `:`).
TAG_VOLUME = "parrotbot:volume"
TAG_FLEET = "parrotbot:fleet"

ROLE_DATA = "data"
ROLE_RELOCATING = "data-relocating"
ROLE_SNAPSHOT = "relocation"
ROLE_TRAINER = "trainer"

OWNER_PARAM = "ExpectedBucketOwner"

# Instances in these states cost nothing more and hold no volume.
GONE_STATES = ("shutting-down", "terminated", "stopping", "stopped")
LIVE_STATES = ("pending", "running")

# Error codes that say "not now" rather than "never": throttling, and the service's own faults.
TRANSIENT_CODES = frozenset(
    {
        "SlowDown",
        "Throttling",
        "ThrottlingException",
        "RequestLimitExceeded",
        "RequestThrottled",
        "RequestThrottledException",
        "TooManyRequestsException",
        "EC2ThrottledException",
        "BandwidthLimitExceeded",
        "RequestTimeout",
        "RequestTimeoutException",
        "PriorRequestNotComplete",
        "InternalError",
        "InternalFailure",
        "ServiceUnavailable",
        "Unavailable",
    }
)


class Cloud:
    """The account's clients and tag helpers; nothing is called until a client is used.

    `retries` is how often botocore repeats a failing request before the error reaches us.
    It waits a random time before each, up to 1, 2, 4, 8, 16 s after a throttling answer
    (1/20 of that after a 5xx): tests that replay throttling ask for fewer.
    """

    def __init__(self, settings: AwsSettings, account: str, *, retries: int = 5) -> None:
        self.settings = settings
        self.account = account
        self.retries = retries

    @functools.cached_property
    def session(self) -> boto3.session.Session:
        return boto3.session.Session(region_name=self.settings.region)

    def client(self, service: str) -> Any:
        return self._client(service)

    @functools.cache  # noqa: B019 - one Cloud per process; clients are meant to be reused
    def _client(self, service: str) -> Any:
        config = BotoConfig(
            retries={"max_attempts": self.retries, "mode": "standard"},
            connect_timeout=10,
            read_timeout=60,
        )
        client = self.session.client(service, config=config)
        if service == "s3":
            client.meta.events.register("provide-client-params.s3", self._expect_owner)
        return client

    @functools.cached_property
    def aws_account_id(self) -> str:
        """The AWS account these credentials act in (asked of STS once, on the first S3 call)."""
        return self.client("sts").get_caller_identity()["Account"]

    def _expect_owner(self, params: dict[str, Any], model: Any, **_: Any) -> None:
        """Every S3 call that can name the bucket's owner names ours: `ExpectedBucketOwner`.

        A bucket name is global: if ours were deleted and taken by another AWS account, S3
        would answer that account's bucket. With the owner named, it refuses (403) instead of
        reading their objects or handing them our datasets. Registered on the client, so
        every call made through it carries it (s3transfer's downloads and uploads included);
        calls that take no owner (CreateBucket, ListBuckets) are left as they are.
        """
        shape = model.input_shape
        if shape is not None and OWNER_PARAM in shape.members and OWNER_PARAM not in params:
            params[OWNER_PARAM] = self.aws_account_id

    @property
    def ec2(self) -> Any:
        return self.client("ec2")

    @property
    def s3(self) -> Any:
        return self.client("s3")

    @property
    def iam(self) -> Any:
        return self.client("iam")

    def tags(self, role: str, **extra: str) -> list[dict[str, str]]:
        values = {TAG_ACCOUNT: self.account, TAG_ROLE: role, **extra}
        values.setdefault("Name", self.settings.resource_name(self.account, role))
        return [{"Key": key, "Value": value} for key, value in values.items()]

    def tag_spec(self, resource_type: str, role: str, **extra: str) -> dict[str, Any]:
        return {"ResourceType": resource_type, "Tags": self.tags(role, **extra)}

    def filters(self, role: str | None = None, **extra: str) -> list[dict[str, Any]]:
        """`tag:` filters (moto implements these; some other filters it answers with a 500)."""
        wanted = {TAG_ACCOUNT: self.account, **extra}
        if role is not None:
            wanted[TAG_ROLE] = role
        return [{"Name": f"tag:{key}", "Values": [value]} for key, value in wanted.items()]

    def instances(self, **tags: str) -> list[dict[str, Any]]:
        """This account's instances (any state) that carry `tags`."""
        pages = self.ec2.get_paginator("describe_instances").paginate(Filters=self.filters(**tags))
        return [i for page in pages for r in page["Reservations"] for i in r["Instances"]]

    def volumes(self, role: str | None = None, **tags: str) -> list[dict[str, Any]]:
        pages = self.ec2.get_paginator("describe_volumes").paginate(
            Filters=self.filters(role, **tags)
        )
        return [v for page in pages for v in page["Volumes"] if v["State"] != "deleting"]

    def snapshots(self, role: str | None = None) -> list[dict[str, Any]]:
        pages = self.ec2.get_paginator("describe_snapshots").paginate(
            OwnerIds=["self"], Filters=self.filters(role)
        )
        return [s for page in pages for s in page["Snapshots"]]

    def fleets(self) -> list[dict[str, Any]]:
        """This account's fleets that are not deleted (filtered here: moto ignores tag filters)."""
        pages = self.ec2.get_paginator("describe_fleets").paginate()
        return [
            fleet
            for page in pages
            for fleet in page["Fleets"]
            if tag_value(fleet, TAG_ACCOUNT) == self.account
            and not fleet["FleetState"].startswith("deleted")
        ]


def is_transient(exc: BaseException) -> bool:
    """True for an AWS error that the same call may well not meet again in a while.

    botocore has already retried these a few times when they reach us; what is left is an
    outage longer than its retries (throttling, 5xx, a connection that drops, a body cut off
    in transit). Refusals (access denied, no such key or bucket, bad parameters) and missing
    credentials are not transient: retrying them only delays the real message.
    """
    if isinstance(exc, RetriesExceededError):  # s3transfer gave up on a download's stream
        return True
    if isinstance(exc, S3UploadFailedError) and exc.__context__ is not None:
        return is_transient(exc.__context__)  # `upload_file` wraps the ClientError it met
    if isinstance(exc, boto_errors.ClientError):
        error = exc.response.get("Error", {})
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0
        return error.get("Code") in TRANSIENT_CODES or int(status) >= 500
    return isinstance(
        exc,
        (
            boto_errors.ConnectionError,  # no answer: refused, timed out, dropped
            boto_errors.HTTPClientError,
            boto_errors.IncompleteReadError,  # a body shorter than its Content-Length
            boto_errors.FlexibleChecksumError,  # a body damaged in transit
        ),
    )


def aws_error(exc: BaseException) -> str:
    """`Code: message` of an AWS error (the class name for one without a code)."""
    if isinstance(exc, S3UploadFailedError) and exc.__context__ is not None:
        exc = exc.__context__
    if isinstance(exc, boto_errors.ClientError):
        error = exc.response.get("Error", {})
        return f"{error.get('Code')}: {error.get('Message')}"
    return f"{type(exc).__name__}: {exc}"


def tag_value(resource: dict[str, Any], key: str) -> str | None:
    for tag in resource.get("Tags") or []:
        if tag["Key"] == key:
            return tag["Value"]
    return None
