"""The S3 exchange against moto: datasets up, finished versions down, only complete ones."""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import tarfile
from pathlib import Path

import boto3
import pytest
import redis
from botocore.config import Config as BotoConfig
from structlog.testing import capture_logs

from bot.config import FilterConfig, GenerationConfig
from bot.generation import GenerationService
from bot.hotload import CheckpointWatcher
from bot.state import BotState
from infra.aws.cloud import Cloud, is_transient
from infra.aws.exchange import S3Exchange, training_code_archive
from infra.aws.setup import setup
from infra.settings import DownloadRetry
from tests.support.aws import latest_version, publish_to_s3
from tests.support.aws_faults import AwsFaults
from training.publish import list_versions, read_latest

# s3transfer reads a cut-off body 5 times before it gives up: this many cuts spend one try of
# ours. (botocore absorbs 5 retries of a throttled request with sleeps of up to 20 s each, too
# slow to replay here: `test_what_counts_as_transient` checks that S3's own answers are sorted.)
ONE_TRY = 5


@pytest.fixture
def exchange(cloud: Cloud) -> S3Exchange:
    setup(cloud)
    return S3Exchange(cloud.settings, cloud.account, cloud)


def test_the_job_upload_holds_dataset_request_and_code(
    exchange: S3Exchange, tmp_path: Path
) -> None:
    dataset = tmp_path / "poorrichard.jsonl"
    dataset.write_text('{"id": "1", "text": "Early to bed"}\n')
    exchange.upload_job("job-1", [dataset], {"model_kind": "char_rnn"})
    prefix = exchange.job_prefix("job-1")
    keys = set(exchange._list(prefix + "/"))
    assert keys == {
        f"{prefix}/datasets/poorrichard.jsonl",
        f"{prefix}/request.json",
        f"{prefix}/code.tar.gz",
    }
    body = exchange.s3.get_object(
        Bucket=exchange.bucket, Key=f"{prefix}/datasets/poorrichard.jsonl"
    )
    assert body["Body"].read() == dataset.read_bytes()


def test_a_job_uploaded_again_sends_only_what_changed(exchange: S3Exchange, tmp_path: Path) -> None:
    dataset = tmp_path / "poorrichard.jsonl"
    dataset.write_text('{"id": "1", "text": "Early to bed"}\n')
    prefix = exchange.job_prefix("job-1")
    # An older launcher's upload: the same bytes, but no sha256 in the metadata.
    same = json.dumps({"model_kind": "char_rnn"}, indent=2, sort_keys=True)
    exchange.s3.put_object(Bucket=exchange.bucket, Key=f"{prefix}/request.json", Body=same)

    def sent(request: dict[str, str]) -> int:
        with capture_logs() as logs:
            exchange.upload_job("job-1", [dataset], request)
        (uploaded,) = [e for e in logs if e["event"] == "exchange.job_uploaded"]
        return uploaded["sent"]

    assert sent({"model_kind": "char_rnn"}) == 3
    assert sent({"model_kind": "char_rnn"}) == 0
    dataset.write_text('{"id": "1", "text": "Early to BED"}\n')  # same size, other bytes
    assert sent({"model_kind": "char_rnn"}) == 1
    assert sent({"model_kind": "gpt2"}) == 1
    key = f"{prefix}/datasets/poorrichard.jsonl"
    assert exchange._get(key) == dataset.read_text()
    assert json.loads(exchange._get(f"{prefix}/request.json")) == {"model_kind": "gpt2"}


def test_the_code_archive_depends_on_the_files_only() -> None:
    archive = training_code_archive()
    assert archive[4:8] == bytes(4), "gzip's header holds no time: later archives are the same"
    assert training_code_archive() == archive
    with tarfile.open(fileobj=io.BytesIO(archive), mode="r:gz") as opened:
        assert "training/train.py" in opened.getnames()


def test_a_published_version_is_pulled_verified_and_hot_loaded(
    exchange: S3Exchange,
    cloud: Cloud,
    trained_checkpoints: Path,
    tmp_path: Path,
    redis_client: redis.Redis,
    account: str,
) -> None:
    source = latest_version(trained_checkpoints)
    prefix = f"{exchange.job_prefix('job-1')}/versions/char_rnn/{source.name}"
    publish_to_s3(cloud, prefix, source)
    assert exchange.complete_version("job-1", "char_rnn") == prefix
    exchange.promote("char_rnn", prefix)

    model_dir = tmp_path / "volume" / "checkpoints" / "char_rnn"
    model_dir.mkdir(parents=True)
    result = exchange.pull(model_dir)
    assert result.installed == source.name and not result.refused
    assert read_latest(model_dir) == source.name
    assert not [p for p in model_dir.iterdir() if p.name.startswith(".")], "staging left behind"
    assert exchange.pull(model_dir).installed is None  # already here: nothing downloaded again

    service = GenerationService(GenerationConfig(max_length=40), FilterConfig())
    watcher = CheckpointWatcher(model_dir, "char_rnn", service, BotState(redis_client, account))
    assert watcher.check()
    assert service.current is not None and service.current.version == source.name


def test_a_version_without_its_manifest_is_never_complete(
    exchange: S3Exchange, cloud: Cloud, trained_checkpoints: Path, tmp_path: Path
) -> None:
    source = latest_version(trained_checkpoints)
    prefix = f"{exchange.job_prefix('job-2')}/versions/char_rnn/{source.name}"
    publish_to_s3(cloud, prefix, source, manifest=False)
    assert exchange.complete_version("job-2", "char_rnn") is None
    # Even if something pointed LATEST at it, the daemon side would not take it.
    exchange.promote("char_rnn", prefix)
    model_dir = tmp_path / "checkpoints" / "char_rnn"
    model_dir.mkdir(parents=True)
    result = exchange.pull(model_dir)
    assert result.installed is None and not result.refused
    assert list_versions(model_dir) == [] and read_latest(model_dir) is None

    # A manifest naming a file that is not uploaded is not complete either.
    manifest = json.loads((source / "manifest.json").read_text())
    manifest["files"]["missing.bin"] = "0" * 64
    cloud.s3.put_object(
        Bucket=cloud.settings.bucket, Key=f"{prefix}/manifest.json", Body=json.dumps(manifest)
    )
    assert exchange.complete_version("job-2", "char_rnn") is None


def test_a_version_with_a_wrong_sha256_is_refused(
    exchange: S3Exchange, cloud: Cloud, trained_checkpoints: Path, tmp_path: Path
) -> None:
    source = tmp_path / "source"
    shutil.copytree(latest_version(trained_checkpoints), source / "v")
    version = latest_version(trained_checkpoints).name
    tampered = next(
        p for p in sorted((source / "v").rglob("*")) if p.is_file() and p.name != "manifest.json"
    )
    tampered.write_bytes(tampered.read_bytes() + b"tampered")
    prefix = f"{exchange.job_prefix('job-3')}/versions/char_rnn/{version}"
    publish_to_s3(cloud, prefix, source / "v")
    exchange.promote("char_rnn", prefix)

    model_dir = tmp_path / "checkpoints" / "char_rnn"
    model_dir.mkdir(parents=True)
    result = exchange.pull(model_dir)
    assert result.installed is None
    assert "sha256" in result.refused[version]
    assert list_versions(model_dir) == [] and read_latest(model_dir) is None
    assert not list(model_dir.iterdir()), "nothing of the refused version stays"
    # Once recorded as bad, it is not downloaded again.
    assert exchange.pull(model_dir, skip=result.refused).refused == {}


@pytest.fixture
def flaky_exchange(aws_faults: AwsFaults, cloud: Cloud) -> S3Exchange:
    """An exchange whose S3 goes through the fault proxy, retrying after 10-50 ms."""
    setup(cloud)
    fast = DownloadRetry(first_seconds=0.01, max_seconds=0.05, attempts=3)
    settings = cloud.settings.model_copy(update={"download_retry": fast})
    return S3Exchange(settings, cloud.account, cloud)


def promote_trained(exchange: S3Exchange, cloud: Cloud, trained_checkpoints: Path) -> str:
    """Publish the trained version under a job's prefix and point S3's LATEST at it."""
    source = latest_version(trained_checkpoints)
    prefix = f"{exchange.job_prefix('job-4')}/versions/char_rnn/{source.name}"
    publish_to_s3(cloud, prefix, source)
    exchange.promote("char_rnn", prefix)
    return prefix


def test_a_download_cut_off_is_retried_and_the_version_installed(
    flaky_exchange: S3Exchange, aws_faults: AwsFaults, cloud: Cloud, trained_checkpoints: Path,
    tmp_path: Path,
) -> None:  # fmt: skip
    prefix = promote_trained(flaky_exchange, cloud, trained_checkpoints)
    aws_faults.s3_fault(cloud.settings.bucket, prefix + "/", "cut", times=ONE_TRY)
    model_dir = tmp_path / "checkpoints" / "char_rnn"
    model_dir.mkdir(parents=True)

    with capture_logs() as logs:
        result = flaky_exchange.pull(model_dir)
    assert aws_faults.hits["cut"] == ONE_TRY
    version = prefix.rsplit("/", 1)[-1]
    assert result.installed == version and not result.refused
    assert read_latest(model_dir) == version
    retries = [e for e in logs if e["event"] == "exchange.s3_retry"]
    assert len(retries) == 1 and retries[0]["call"] == "download_file", retries


@pytest.mark.parametrize("kind", ["cut", "deny"])
def test_a_download_s3_keeps_failing_is_left_for_the_next_poll_not_refused(
    flaky_exchange: S3Exchange, aws_faults: AwsFaults, cloud: Cloud, trained_checkpoints: Path,
    tmp_path: Path, kind: str,
) -> None:  # fmt: skip
    prefix = promote_trained(flaky_exchange, cloud, trained_checkpoints)
    aws_faults.s3_fault(cloud.settings.bucket, prefix + "/", kind)
    model_dir = tmp_path / "checkpoints" / "char_rnn"
    model_dir.mkdir(parents=True)

    with capture_logs() as logs:
        result = flaky_exchange.pull(model_dir)  # raises nothing: the daemon's poll goes on
    assert result.installed is None
    assert result.refused == {}, "an S3 failure says nothing about the version: not bad"
    assert list_versions(model_dir) == [] and read_latest(model_dir) is None
    assert not list(model_dir.iterdir()), "nothing half-downloaded stays"
    (failed,) = [e for e in logs if e["event"] == "exchange.download_failed"]
    assert failed["transient"] is (kind == "cut")
    # A refusal (403) is not retried within the poll; a cut-off body is, `attempts` times.
    assert aws_faults.hits[kind] == (1 if kind == "deny" else 3 * ONE_TRY)

    aws_faults.s3_healthy()  # S3 is back by the next checkpoint poll
    result = flaky_exchange.pull(model_dir)
    version = prefix.rsplit("/", 1)[-1]
    assert result.installed == version and read_latest(model_dir) == version


@pytest.mark.parametrize(
    ("kind", "transient"), [("throttle", True), ("error", True), ("deny", False), ("cut", True)]
)
def test_what_counts_as_transient(
    aws_faults: AwsFaults, cloud: Cloud, tmp_path: Path, kind: str, transient: bool
) -> None:
    """S3's real answers, through a client that does not retry, sorted by `is_transient`."""
    bucket = cloud.settings.bucket
    cloud.s3.create_bucket(Bucket=bucket)
    cloud.s3.put_object(Bucket=bucket, Key="probe/object", Body=b"x" * 4096)
    aws_faults.s3_fault(bucket, "probe/", kind)
    no_retries = BotoConfig(retries={"total_max_attempts": 1})
    once = boto3.client("s3", region_name=cloud.settings.region, config=no_retries)
    with pytest.raises(Exception) as caught:  # which exception it is, is what is tested
        once.download_file(bucket, "probe/object", str(tmp_path / "object"))
    assert is_transient(caught.value) is transient, repr(caught.value)
    assert aws_faults.hits[kind] >= 1


# --- a trainer that is not trusted: what it writes to S3 cannot reach past the staging folder ---


def files_outside(root: Path, model_dir: Path) -> list[Path]:
    """Files under `root` that are not in the model's installed versions (none expected)."""
    return sorted(p for p in root.rglob("*") if p.is_file() and model_dir not in p.parents)


def publish_with_extra(
    cloud: Cloud, prefix: str, source: Path, tmp_path: Path, name: str, *, listed: bool
) -> None:
    """A version, plus an object at `<prefix>/<name>` (in its manifest when `listed`)."""
    version = tmp_path / "source" / source.name
    shutil.copytree(source, version)
    payload = b"written by the trainer"
    if listed:
        manifest = json.loads((version / "manifest.json").read_text())
        manifest["files"][name] = hashlib.sha256(payload).hexdigest()
        (version / "manifest.json").write_text(json.dumps(manifest))
    publish_to_s3(cloud, prefix, version)
    key = f"{prefix}/{name}"
    cloud.s3.put_object(Bucket=cloud.settings.bucket, Key=key, Body=payload)
    assert key in S3Exchange(cloud.settings, cloud.account, cloud)._list(prefix + "/")


@pytest.mark.parametrize("listed", [False, True], ids=["unlisted", "in-manifest"])
@pytest.mark.parametrize("shape", ["dotdot", "absolute"])
def test_a_key_that_climbs_out_writes_nothing_and_the_version_is_refused(
    exchange: S3Exchange, cloud: Cloud, trained_checkpoints: Path, tmp_path: Path,
    shape: str, listed: bool,
) -> None:  # fmt: skip
    host = tmp_path / "host"
    model_dir = host / "volume" / "checkpoints" / "char_rnn"
    model_dir.mkdir(parents=True)
    # From <model_dir>/.staging-x/<version>/: four levels up is `host`; or an absolute path.
    name = "../../../../escaped.txt" if shape == "dotdot" else f"{host.as_posix()}/escaped.txt"
    source = latest_version(trained_checkpoints)
    prefix = f"{exchange.job_prefix('job-5')}/versions/char_rnn/{source.name}"
    publish_with_extra(cloud, prefix, source, tmp_path, name, listed=listed)
    exchange.promote("char_rnn", prefix)

    result = exchange.pull(model_dir)
    assert files_outside(host, model_dir) == [], "the trainer wrote on the bot's host"
    assert result.installed is None and read_latest(model_dir) is None
    reason = result.refused[source.name]
    assert ("not listed in the manifest" if not listed else "manifest entry") in reason, reason
    assert not list(model_dir.iterdir()), "nothing of the refused version stays"


@pytest.mark.parametrize("where", ["other-account", "dotdot", "checkpoints"])
def test_a_latest_pointing_outside_the_job_versions_is_refused(
    exchange: S3Exchange, cloud: Cloud, trained_checkpoints: Path, tmp_path: Path, where: str
) -> None:
    source = latest_version(trained_checkpoints)
    other = f"{cloud.settings.prefix}/someone-else/jobs/job-7/versions/char_rnn/{source.name}"
    publish_to_s3(cloud, other, source)  # a complete, valid version, but not this account's
    pointer = {
        "other-account": other,
        "dotdot": f"{exchange.job_prefix('job-7')}/versions/char_rnn/../../../../someone-else"
        f"/jobs/job-7/versions/char_rnn/{source.name}",
        "checkpoints": f"{exchange.root}/checkpoints/char_rnn/{source.name}",
    }[where]
    if where == "checkpoints":
        publish_to_s3(cloud, pointer, source)
    exchange.promote("char_rnn", pointer)
    model_dir = tmp_path / "checkpoints" / "char_rnn"
    model_dir.mkdir(parents=True)

    result = exchange.pull(model_dir)
    assert result.installed is None and read_latest(model_dir) is None
    assert "LATEST points at" in result.refused[source.name]
    assert not list(model_dir.iterdir())
