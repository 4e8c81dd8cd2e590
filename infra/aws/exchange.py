"""The S3 exchange between this host and a spot instance (they never share a block device).

Layout under `s3://<bucket>/<prefix>/<account>/`::

    jobs/<job>/datasets/<handle>.jsonl        the job's dataset snapshot (the launcher uploads)
    jobs/<job>/request.json                   the training request, in the instance's paths
    jobs/<job>/code.tar.gz                    the `training` package the instance runs
    jobs/<job>/versions/<model>/<version>/…   the finished version, manifest.json written last
    jobs/<job>/logs/attempt-<n>.log           the trainer's log of each attempt
    jobs/<job>/status/attempt-<n>             "done <version>", "failed <code>" or "interrupted"
    checkpoints/<model>/LATEST                key prefix of the newest finished version

The launcher's uploads carry the sha256 of their bytes in the object's metadata
(`x-amz-meta-sha256`); a job uploaded again (each try while it waits for spot capacity) sends
only what changed.

The launcher moves `checkpoints/<model>/LATEST` once a job's version is complete (manifest
present, every listed file present). The daemon's checkpoint poll (`pull`) checks that it names
a job version of this account and model, downloads that version's manifest and only the files
it lists into a staging folder under `data_dir/checkpoints/<model>` (each path checked to stay
inside it: the trainer wrote them and is not trusted), verifies every sha256 with
`training.publish.verify_version`, renames it into place and moves the local `LATEST`; the
hot-loader then picks it up like a locally trained version. S3 trouble on the way (throttling,
5xx, a dropped connection) is retried with backoff (`download_retry`); what still fails leaves
nothing behind and is tried again on the next poll. A version is refused when its files do not
match their sha256, when its prefix holds objects the manifest does not list, when the manifest
lists a path that is not plain (absolute, empty, `.` or `..` segments), or when `LATEST` points
anywhere but `jobs/<job>/versions/<model>/<version>`.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import re
import shutil
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

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

from infra.aws.cloud import Cloud, is_transient
from infra.settings import AwsSettings

log = structlog.get_logger(__name__)

MANIFEST = "manifest.json"
LATEST = "LATEST"
# A job id or version name: letters, digits, `.`, `_`, `-`, not starting with a dot.
SAFE_NAME = r"[A-Za-z0-9_-][A-Za-z0-9._-]*"
MAX_MANIFEST_BYTES = 1 << 20
SHA256_META = "sha256"  # x-amz-meta-sha256: the hex sha256 of the object's bytes
# What S3 and boto3 raise; none of it says anything about the version itself.
S3_ERRORS = (BotoCoreError, ClientError, Boto3Error)


@dataclass
class PullResult:
    """What one `pull` did: the version it installed, and versions it refused (and why)."""

    installed: str | None = None
    refused: dict[str, str] = field(default_factory=dict)


class S3Exchange:
    def __init__(self, settings: AwsSettings, account: str, cloud: Cloud | None = None) -> None:
        self.settings = settings
        self.cloud = cloud or Cloud(settings, account)
        self.bucket = settings.bucket
        self.root = settings.root(account)

    @property
    def s3(self) -> Any:
        return self.cloud.s3

    def job_prefix(self, job_id: str) -> str:
        return f"{self.root}/jobs/{job_id}"

    def url(self, key: str) -> str:
        return f"s3://{self.bucket}/{key}"

    # --- launcher side: what the instance needs --------------------------------------
    def upload_job(self, job_id: str, datasets: list[Path], request: dict[str, Any]) -> None:
        """The dataset snapshot, the request and the trainer's code, for the instance.

        A job waiting for spot capacity comes back here on every try; objects S3 holds already
        with the same bytes are not sent again, so a long wait uploads the job once.
        """
        prefix = self.job_prefix(job_id)
        sent = 0
        for path in datasets:
            with path.open("rb") as body:
                sent += self._upload(f"{prefix}/datasets/{path.name}", body)
        request_json = json.dumps(request, indent=2, sort_keys=True).encode()
        sent += self._upload(f"{prefix}/request.json", io.BytesIO(request_json))
        sent += self._upload(f"{prefix}/code.tar.gz", io.BytesIO(training_code_archive()))
        log.info(
            "exchange.job_uploaded",
            job_id=job_id,
            datasets=len(datasets),
            sent=sent,
            unchanged=len(datasets) + 2 - sent,
            prefix=prefix,
        )

    def complete_version(self, job_id: str, model_kind: str) -> str | None:
        """The key prefix of the job's finished version once every file and the manifest are in."""
        base = f"{self.job_prefix(job_id)}/versions/{model_kind}/"
        keys = set(self._list(base))
        for key in sorted(keys):
            if not key.endswith(f"/{MANIFEST}"):
                continue
            prefix = key.removesuffix(f"/{MANIFEST}")
            try:
                manifest = json.loads(self._get(key))
                listed = manifest["files"]
            except (ValueError, KeyError, TypeError) as exc:
                log.warning("exchange.bad_manifest", key=key, error=str(exc))
                continue
            missing = [name for name in listed if f"{prefix}/{name}" not in keys]
            if missing:
                log.info("exchange.version_incomplete", prefix=prefix, missing=missing[:5])
                continue
            return prefix
        return None

    def status(self, job_id: str, attempt: int) -> str | None:
        return self._get_or_none(f"{self.job_prefix(job_id)}/status/attempt-{attempt}")

    def log_tail(self, job_id: str, attempt: int, lines: int = 20) -> list[str]:
        text = self._get_or_none(f"{self.job_prefix(job_id)}/logs/attempt-{attempt}.log")
        return text.splitlines()[-lines:] if text else []

    def promote(self, model_kind: str, version_prefix: str) -> None:
        """Point `checkpoints/<model>/LATEST` at a complete version, for every daemon to pull."""
        self._put(f"{self.root}/checkpoints/{model_kind}/{LATEST}", version_prefix + "\n")
        log.info("exchange.promoted", model_kind=model_kind, version=version_prefix)

    # --- daemon side --------------------------------------------------------------------
    def pull(self, model_dir: Path, *, skip: Any = ()) -> PullResult:
        """Download the version `LATEST` names in S3 if new here, verified, and point LATEST at it.

        Everything in S3 under the job's prefix was written by the trainer, which this host does
        not trust: `LATEST` must name a job version of this account and model, and only the
        manifest and the files it lists are downloaded, each to a path checked to lie inside the
        staging folder. A version whose manifest is missing is not complete: it is left for a
        later poll. One that breaks those rules, or whose files do not match their sha256, is
        refused (reported in `refused`, and the daemon records it as bad so it is never
        downloaded again). An S3 error is neither: transient ones are retried here, and
        whatever still fails is logged and left for the next poll, with nothing downloaded
        kept and nothing refused.
        """
        from training.publish import CheckpointError, new_staging_dir, set_latest, verify_version

        result = PullResult()
        try:
            pointer = self._retrying(
                self._get_or_none, f"{self.root}/checkpoints/{model_dir.name}/{LATEST}"
            )
        except S3_ERRORS as exc:
            # S3 out of reach must not stop the daemon's other checkpoint work; retry next poll.
            log.warning("exchange.unavailable", error=_describe(exc))
            return result
        if not pointer:
            return result
        prefix = pointer.strip()
        version = prefix.rsplit("/", 1)[-1]
        if version in skip:
            return result
        if not self.is_version_prefix(prefix, model_dir.name):
            return self._refuse(
                result,
                version,
                f"LATEST points at {prefix!r}, not at a job version of "
                f"{self.root}/jobs/*/versions/{model_dir.name}/",
            )
        if (model_dir / version).is_dir():
            return result
        staging: Path | None = None
        try:
            keys = self._retrying(self._list, prefix + "/")
            if f"{prefix}/{MANIFEST}" not in keys:
                log.info("exchange.version_incomplete", version=version, reason="no manifest")
                return result
            staging = new_staging_dir(model_dir)
            folder = staging / version
            folder.mkdir()
            manifest_path = folder / MANIFEST
            self._retrying(
                self.s3.download_file, self.bucket, f"{prefix}/{MANIFEST}", str(manifest_path)
            )
            listed = manifest_files(manifest_path, self.url(f"{prefix}/{MANIFEST}"))
            unlisted = sorted(set(keys) - {f"{prefix}/{name}" for name in [MANIFEST, *listed]})
            if unlisted:
                raise CheckpointError(
                    f"{self.url(prefix)}: objects not listed in the manifest: {unlisted[:5]}"
                )
            for name in listed:
                target = inside(folder, name)
                target.parent.mkdir(parents=True, exist_ok=True)
                self._retrying(self.s3.download_file, self.bucket, f"{prefix}/{name}", str(target))
            verify_version(folder, expected_kind=model_dir.name)
            os.rename(folder, model_dir / version)
        except S3_ERRORS as exc:
            # Transient or not (a policy denying reads), this is no verdict on the version.
            level = log.warning if is_transient(exc) else log.error
            level(
                "exchange.download_failed",
                version=version,
                error=_describe(exc),
                transient=is_transient(exc),
                next_try="next checkpoint poll",
            )
            return result
        except CheckpointError as exc:
            return self._refuse(result, version, str(exc))
        finally:
            if staging is not None:
                shutil.rmtree(staging, ignore_errors=True)
        set_latest(model_dir, version)
        result.installed = version
        log.info("exchange.version_pulled", version=version, files=len(keys))
        return result

    def is_version_prefix(self, prefix: str, model_kind: str) -> bool:
        """True for `<root>/jobs/<job>/versions/<model_kind>/<version>`, each a plain name."""
        pattern = (
            rf"{re.escape(self.root)}/jobs/{SAFE_NAME}/versions/{re.escape(model_kind)}/{SAFE_NAME}"
        )
        return re.fullmatch(pattern, prefix) is not None

    @staticmethod
    def _refuse(result: PullResult, version: str, reason: str) -> PullResult:
        result.refused[version] = reason
        log.error("exchange.version_refused", version=version, reason=reason)
        return result

    # --- S3 helpers -----------------------------------------------------------------
    def _retrying(self, call: Any, *args: Any) -> Any:
        """`call(*args)`, again after a growing wait while S3 fails transiently.

        botocore retries each request a few times already; this covers outages longer than
        that, and a download whose body keeps being cut off (s3transfer's own retries spent).
        """
        policy = self.settings.download_retry
        retrying = Retrying(
            retry=retry_if_exception(is_transient),
            wait=wait_exponential(multiplier=policy.first_seconds, max=policy.max_seconds),
            stop=stop_after_attempt(policy.attempts),
            before_sleep=_log_retry,
            reraise=True,
        )
        return retrying(call, *args)

    def _list(self, prefix: str) -> list[str]:
        pages = self.s3.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix)
        return [item["Key"] for page in pages for item in page.get("Contents", [])]

    def _upload(self, key: str, body: BinaryIO) -> bool:
        """Upload `body` to `key` unless S3 holds the same bytes there; True when it was sent.

        "The same" is the same size and the sha256 that our upload stored in the object's
        metadata. Not the ETag: `upload_fileobj` turns into a multipart upload above 8 MB, and
        a multipart object's ETag is an MD5 of its parts' MD5s (it changes with the part size,
        not only with the bytes); under SSE-KMS even a single-part ETag is no MD5 of the body.
        The metadata travels in the request that creates the object, and S3 creates an object
        whole or not at all, so an object that has it holds the bytes it names.

        `body` is hashed and then sent from the same handle: a dataset the scraper replaces
        meanwhile (it renames a new file over the old) cannot make the two disagree.
        """
        digest = hashlib.sha256()
        size = 0
        for chunk in iter(lambda: body.read(1 << 20), b""):
            digest.update(chunk)
            size += len(chunk)
        sha256 = digest.hexdigest()
        if self._holds(key, size, sha256):
            log.debug("exchange.upload_skipped", key=key, size=size)
            return False
        body.seek(0)
        metadata = {SHA256_META: sha256}
        self.s3.upload_fileobj(body, self.bucket, key, ExtraArgs={"Metadata": metadata})
        return True

    def _holds(self, key: str, size: int, sha256: str) -> bool:
        try:
            head = self.s3.head_object(Bucket=self.bucket, Key=key)
        except ClientError as exc:
            if is_transient(exc):
                raise
            return False  # not there (404), or not readable here (403): the upload will tell
        return head["ContentLength"] == size and head.get("Metadata", {}).get(SHA256_META) == sha256

    def _put(self, key: str, body: str | bytes) -> None:
        self.s3.put_object(Bucket=self.bucket, Key=key, Body=body)

    def _get(self, key: str) -> str:
        return self.s3.get_object(Bucket=self.bucket, Key=key)["Body"].read().decode()

    def _get_or_none(self, key: str) -> str | None:
        try:
            return self._get(key)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404", "NotFound"):
                return None
            raise


def _log_retry(state: RetryCallState) -> None:
    exc = state.outcome.exception() if state.outcome else None
    log.warning(
        "exchange.s3_retry",
        call=getattr(state.fn, "__name__", str(state.fn)),
        args=[str(arg) for arg in state.args],
        attempt=state.attempt_number,
        wait_s=round(state.upcoming_sleep, 2),
        error=_describe(exc) if exc else None,
    )


def _describe(exc: BaseException) -> str:
    """The error, with the cause s3transfer wraps in its RetriesExceededError."""
    last = getattr(exc, "last_exception", None)
    return f"{exc}: {last}" if last is not None else str(exc)


def manifest_files(manifest_path: Path, source: str) -> list[str]:
    """The relative paths a downloaded manifest lists, each checked to be a plain relative path.

    Raises CheckpointError naming the manifest (`source`, where it came from) and the entry: an
    unparsable manifest, or a path that is absolute, empty, has an empty, `.` or `..` segment,
    or a backslash.
    """
    from training.publish import CheckpointError, Manifest

    if manifest_path.stat().st_size > MAX_MANIFEST_BYTES:
        raise CheckpointError(f"{source}: manifest is over {MAX_MANIFEST_BYTES} bytes")
    manifest = Manifest.from_json(manifest_path.read_text(encoding="utf-8"), source)
    for name in manifest.files:
        problem = unsafe_path(name)
        if problem:
            raise CheckpointError(f"{source}: manifest entry {name!r} {problem}")
    return sorted(manifest.files)


def unsafe_path(name: str) -> str | None:
    """Why `name` is no plain relative path inside a version (None when it is one)."""
    if not name:
        return "is empty"
    if name.startswith("/") or "\\" in name or "\0" in name:
        return "is not a relative posix path"
    if any(part in ("", ".", "..") for part in name.split("/")):
        return "has an empty, '.' or '..' segment"
    if name == MANIFEST:
        return "is the manifest itself"
    return None


def inside(folder: Path, name: str) -> Path:
    """`folder/name`, resolved, and refused unless it lies under `folder` (links included)."""
    from training.publish import CheckpointError

    root = folder.resolve()
    target = (root / name).resolve()
    if target == root or not target.is_relative_to(root):
        raise CheckpointError(f"{name!r} resolves to {target}, outside the staging folder")
    return target


def training_code_archive() -> bytes:
    """The `training` package as a .tar.gz: the instance runs the same code as this host.

    The same files give the same bytes (gzip's header time is fixed), so a job uploaded again
    finds its code already there.
    """
    import training

    package = Path(training.__file__).parent
    buffer = io.BytesIO()
    with (
        gzip.GzipFile(fileobj=buffer, mode="wb", mtime=0) as compressed,
        tarfile.open(fileobj=compressed, mode="w") as archive,
    ):
        for path in sorted(package.rglob("*.py")):
            archive.add(path, arcname=str(path.relative_to(package.parent)))
    return buffer.getvalue()
