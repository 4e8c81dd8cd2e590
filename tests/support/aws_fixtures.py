"""AWS for the infra tests: a real `moto_server` process on loopback, reached over HTTP.

boto3 finds it through `AWS_ENDPOINT_URL` (its own configuration chain, as in production), with
dummy credentials. The server is started once per session and reset before each test.
"""

from __future__ import annotations

import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator

import boto3
import pytest

from infra.aws.cloud import Cloud
from infra.settings import AwsSettings
from tests.support.aws import MOTO_SERVER, REGION, aws_settings_data
from tests.support.aws_faults import AwsFaults
from tests.support.network import free_port


@pytest.fixture(scope="session")
def moto_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    port = free_port()
    log_path = tmp_path_factory.mktemp("moto") / "moto.log"
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            [sys.executable, str(MOTO_SERVER), "-H", "127.0.0.1", "-p", str(port)],
            stdout=log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            urllib.request.urlopen(f"{url}/moto-api/", timeout=2).close()
            break
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                pytest.fail(f"moto_server did not start:\n{log_path.read_text()[-2000:]}")
            time.sleep(0.1)
    yield url
    process.terminate()
    process.wait(10)


AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": REGION,
}


@pytest.fixture
def aws(moto_server: str, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """A clean moto state and the environment boto3 needs to reach it (for subprocesses too)."""
    request = urllib.request.Request(f"{moto_server}/moto-api/reset", method="POST")
    urllib.request.urlopen(request, timeout=10).close()
    env = {**AWS_ENV, "AWS_ENDPOINT_URL": moto_server}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    for name in ("AWS_PROFILE", "AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE"):
        monkeypatch.delenv(name, raising=False)
    return env


@pytest.fixture
def aws_faults(
    aws: dict[str, str], moto_server: str, monkeypatch: pytest.MonkeyPatch
) -> Iterator[AwsFaults]:
    """moto behind a proxy that answers as AWS does when it fails (see aws_faults.py).

    Request it before anything makes a boto3 client: clients read the endpoint once.
    """
    faults = AwsFaults(moto_server)
    faults.start()
    monkeypatch.setenv("AWS_ENDPOINT_URL", faults.url)
    aws["AWS_ENDPOINT_URL"] = faults.url
    yield faults
    faults.stop()


@pytest.fixture(scope="session")
def ami_id(moto_server: str) -> str:
    """An image moto knows (its catalogue stands in for a Deep Learning AMI; listed once)."""
    ec2 = boto3.client(
        "ec2",
        region_name=REGION,
        endpoint_url=moto_server,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    images = ec2.describe_images(Owners=["amazon"])["Images"]
    return next(i["ImageId"] for i in images if len(i["ImageId"]) <= 21)


@pytest.fixture
def aws_settings(aws: dict[str, str], ami_id: str) -> AwsSettings:
    return AwsSettings.model_validate(aws_settings_data(ami_id))


@pytest.fixture
def cloud(aws_settings: AwsSettings, account: str) -> Cloud:
    return Cloud(aws_settings, account)
