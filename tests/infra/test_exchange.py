"""The S3 exchange against moto: datasets up, finished versions down, only complete ones."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import redis

from bot.config import FilterConfig, GenerationConfig
from bot.generation import GenerationService
from bot.hotload import CheckpointWatcher
from bot.state import BotState
from infra.cloud import Cloud
from infra.exchange import S3Exchange
from infra.setup import setup
from tests.infra.helpers import latest_version, publish_to_s3
from training.publish import list_versions, read_latest


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
