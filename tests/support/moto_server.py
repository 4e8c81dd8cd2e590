"""`moto.server`, judging a bucket policy's `aws:SecureTransport` condition as AWS does.

moto evaluates only `StringEquals` conditions in bucket policies, takes any other as met, and
answers "denied" for a statement whose condition fails whatever its effect, so the
deny-plain-HTTP statement `parrotbot infra setup` writes would refuse every object request.
Here a statement whose condition names only keys of the request's context is judged first,
and left out where it does not apply, as AWS does. On AWS, boto3 talks HTTPS and that
statement refuses none of its requests; the tests' plain HTTP to loopback stands for that
HTTPS, so every request here counts as TLS. Run as
`python tests/infra/moto_server.py -H HOST -p PORT` (the same arguments as moto.server).
"""

from __future__ import annotations

import json
from typing import Any

from moto.iam.access_control import IAMPolicy
from moto.s3 import models
from moto.server import main

# What AWS knows of each request and moto does not: it came over TLS.
REQUEST_CONTEXT = {"aws:SecureTransport": "true"}


def applies(statement: dict[str, Any]) -> bool:
    """False for a statement whose `Bool`/`StringEquals` condition on known keys is not met."""
    for operator, clause in (statement.get("Condition") or {}).items():
        for key, expected in clause.items():
            if operator not in ("Bool", "StringEquals") or key not in REQUEST_CONTEXT:
                continue  # moto's own judgement, as before
            wanted = expected if isinstance(expected, list) else [expected]
            actual = REQUEST_CONTEXT[key]
            if operator == "Bool":
                wanted, actual = [str(value).lower() for value in wanted], actual.lower()
            if actual not in wanted:
                return False
    return True


def get_permission(self: Any, action: str, resource: str) -> Any:
    """FakeBucket.get_permission, without the statements the request's context rules out."""
    from moto.iam.access_control import PermissionResult

    if self.policy is None:
        return PermissionResult.NEUTRAL
    document = json.loads(self.policy.decode())
    statements = document.get("Statement", [])
    statements = statements if isinstance(statements, list) else [statements]
    document["Statement"] = [st for st in statements if applies(st)]
    if not document["Statement"]:
        return PermissionResult.NEUTRAL
    return IAMPolicy(json.dumps(document)).is_action_permitted(action, resource)


if __name__ == "__main__":
    models.FakeBucket.get_permission = get_permission
    main()
