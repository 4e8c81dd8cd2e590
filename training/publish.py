"""Checkpoint publishing: manifest, sha256 of every file, and the ``LATEST`` pointer.

Layout::

    <checkpoints_root>/<model_kind>/<version>/...files + manifest.json
    <checkpoints_root>/<model_kind>/LATEST          (holds one version name)
    <checkpoints_root>/<model_kind>/.staging-*/     (work in progress, never a version)

A trainer writes into a staging folder, then :func:`publish` checksums and fsyncs it, writes
the manifest, renames the folder into place and only then moves ``LATEST``. A reader that
follows ``LATEST`` and calls :func:`verify_version` therefore never sees a half-written model:
either the rename happened (and every byte is on disk and listed), or it did not.

Nothing here imports TensorFlow or PyTorch, so the daemon can verify versions cheaply.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import secrets
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import structlog

from training.files import atomic_write_text, fsync_dir

log = structlog.get_logger(__name__)

MANIFEST_NAME = "manifest.json"
LATEST_NAME = "LATEST"
STAGING_PREFIX = ".staging-"
_CHUNK = 1 << 20


class CheckpointError(Exception):
    """A version or pointer is missing, incomplete or corrupt; the message names the path."""


class ModelLoadError(CheckpointError):
    """A model folder is missing a file or holds a corrupt one; the message names it.

    A subclass of :class:`CheckpointError` so callers that already treat a bad checkpoint as
    "record and skip" handle a model that will not load the same way. It lives here, not
    beside the loader in :mod:`training.models`, because the model families raise it and
    the loader imports them: here nobody's import runs back to its importer.
    """


@dataclass(frozen=True)
class Manifest:
    """What a published version is: kind, provenance, losses and a checksum per file.

    ``files`` maps relative posix paths to sha256 hex digests and lists every file in the
    version except ``manifest.json`` itself, so a verifier can spot both corruption and
    stray extra files.
    """

    model_kind: str
    version: str
    step: int
    train_loss: float | None
    val_loss: float | None
    dataset_hash: str
    files: dict[str, str]
    created_at: str
    config: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        """Serialise with sorted keys so two identical manifests are byte-identical."""
        return json.dumps(asdict(self), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str, source: str | Path) -> Manifest:
        """Parse and type-check a manifest; ``source`` is named in every error."""
        try:
            raw = json.loads(text)
        except json.JSONDecodeError as e:
            raise CheckpointError(f"{source}: manifest is not valid JSON ({e})") from e
        if not isinstance(raw, dict):
            raise CheckpointError(f"{source}: manifest must be a JSON object")

        def need(name: str, types: type | tuple[type, ...], optional: bool = False) -> Any:
            if name not in raw:
                raise CheckpointError(f"{source}: manifest is missing field {name!r}")
            value = raw[name]
            if value is None and optional:
                return None
            # bool is an int subclass; a step of ``true`` is a bug, not a number.
            if isinstance(value, bool) or not isinstance(value, types):
                raise CheckpointError(
                    f"{source}: manifest field {name!r} has the wrong type ({type(value).__name__})"
                )
            return value

        files = need("files", dict)
        for rel, digest in files.items():
            if not isinstance(rel, str) or not isinstance(digest, str) or len(digest) != 64:
                raise CheckpointError(f"{source}: manifest entry for {rel!r} is not a sha256")
        train_loss = need("train_loss", (int, float), optional=True)
        val_loss = need("val_loss", (int, float), optional=True)
        return cls(
            model_kind=need("model_kind", str),
            version=need("version", str),
            step=need("step", int),
            train_loss=None if train_loss is None else float(train_loss),
            val_loss=None if val_loss is None else float(val_loss),
            dataset_hash=need("dataset_hash", str),
            files=dict(files),
            created_at=need("created_at", str),
            config=need("config", dict),
        )


def new_staging_dir(model_dir: Path) -> Path:
    """Create ``model_dir/.staging-<random>``; same filesystem as versions, so rename is atomic."""
    model_dir.mkdir(parents=True, exist_ok=True)
    staging = model_dir / f"{STAGING_PREFIX}{secrets.token_hex(8)}"
    staging.mkdir()
    return staging


def new_version_name() -> str:
    """Return ``YYYYmmddTHHMMSSffffffZ-<6 hex>``: sorts by time, unique across trainers."""
    now = dt.datetime.now(dt.UTC)
    return f"{now.strftime('%Y%m%dT%H%M%S%fZ')}-{secrets.token_hex(3)}"


def _is_version_name(name: str) -> bool:
    return not name.startswith(".") and name != LATEST_NAME


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _fsync_file(path: Path) -> None:
    with path.open("rb") as f:
        os.fsync(f.fileno())


def _walk_files(root: Path) -> dict[str, Path]:
    """Every regular file under ``root`` keyed by relative posix path (symlinks refused)."""
    found: dict[str, Path] = {}
    for path in sorted(root.rglob("*")):
        if path.is_symlink():
            raise CheckpointError(f"{path}: symlinks are not allowed in a checkpoint")
        if path.is_file():
            found[path.relative_to(root).as_posix()] = path
    return found


def publish(
    staging: Path,
    *,
    model_kind: str,
    step: int,
    train_loss: float | None,
    val_loss: float | None,
    dataset_hash: str,
    config: dict[str, Any],
) -> Manifest:
    """Turn a filled staging folder into a verified version and point ``LATEST`` at it.

    Order matters: file data is durable before the manifest names it, the manifest is durable
    before the rename makes the version visible, and the version is durable before ``LATEST``
    moves. A crash at any point leaves either a stray staging folder or a complete version.
    """
    staging = Path(staging)
    if not staging.is_dir():
        raise CheckpointError(f"{staging}: staging folder does not exist")
    model_dir = staging.parent
    files = _walk_files(staging)
    files.pop(MANIFEST_NAME, None)
    if not files:
        raise CheckpointError(f"{staging}: staging folder holds no files to publish")
    digests: dict[str, str] = {}
    for rel, path in files.items():
        _fsync_file(path)
        digests[rel] = _sha256(path)
    for sub in sorted({p.parent for p in files.values()}, key=lambda p: len(p.parts)):
        fsync_dir(sub)

    version = new_version_name()
    manifest = Manifest(
        model_kind=model_kind,
        version=version,
        step=int(step),
        train_loss=None if train_loss is None else float(train_loss),
        val_loss=None if val_loss is None else float(val_loss),
        dataset_hash=dataset_hash,
        files=digests,
        created_at=dt.datetime.now(dt.UTC).isoformat().replace("+00:00", "Z"),
        config=dict(config),
    )
    atomic_write_text(staging / MANIFEST_NAME, manifest.to_json())
    fsync_dir(staging)

    final = model_dir / version
    os.rename(staging, final)
    fsync_dir(model_dir)
    atomic_write_text(model_dir / LATEST_NAME, version + "\n")
    log.info("publish.version_published", model_kind=model_kind, version=version, path=str(final))
    return manifest


def read_latest(model_dir: Path) -> str | None:
    """Return the version ``LATEST`` names, or None when nothing was published yet."""
    try:
        text = (Path(model_dir) / LATEST_NAME).read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    return text.strip() or None


def set_latest(model_dir: Path, version: str) -> None:
    """Point ``LATEST`` at an existing version (a rollback); refuses one that does not verify."""
    model_dir = Path(model_dir)
    if not _is_version_name(version) or "/" in version or version in ("", "..", "."):
        raise CheckpointError(f"{model_dir}: {version!r} is not a version name")
    verify_version(model_dir / version)
    atomic_write_text(model_dir / LATEST_NAME, version + "\n")
    log.info("publish.latest_set", model_dir=str(model_dir), version=version)


def verify_version(version_dir: Path, *, expected_kind: str | None = None) -> Manifest:
    """Check a version against its manifest; the only way a reader should accept one.

    Refuses: a missing or unparsable manifest, a kind other than ``expected_kind``, a
    manifest whose version is not the folder name (a copied or renamed folder), a listed
    file that is missing or whose sha256 differs, and any file the manifest does not list.
    """
    version_dir = Path(version_dir)
    if not version_dir.is_dir():
        raise CheckpointError(f"{version_dir}: version folder does not exist")
    if version_dir.name.startswith("."):
        raise CheckpointError(f"{version_dir}: a staging or hidden folder is not a version")
    manifest_path = version_dir / MANIFEST_NAME
    try:
        text = manifest_path.read_text(encoding="utf-8")
    except FileNotFoundError as e:
        raise CheckpointError(f"{manifest_path}: manifest is missing") from e
    except (OSError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{manifest_path}: manifest is unreadable ({e})") from e
    manifest = Manifest.from_json(text, manifest_path)

    if expected_kind is not None and manifest.model_kind != expected_kind:
        raise CheckpointError(
            f"{manifest_path}: model kind is {manifest.model_kind!r}, expected {expected_kind!r}"
        )
    if manifest.version != version_dir.name:
        raise CheckpointError(
            f"{manifest_path}: manifest names version {manifest.version!r} "
            f"but the folder is {version_dir.name!r}"
        )
    present = _walk_files(version_dir)
    present.pop(MANIFEST_NAME, None)
    for rel, digest in manifest.files.items():
        path = present.pop(rel, None)
        if path is None:
            raise CheckpointError(f"{version_dir / rel}: file listed in the manifest is missing")
        if _sha256(path) != digest:
            raise CheckpointError(f"{version_dir / rel}: sha256 does not match the manifest")
    if present:
        extra = ", ".join(sorted(present))
        raise CheckpointError(f"{version_dir}: files not listed in the manifest: {extra}")
    return manifest


def list_versions(model_dir: Path, *, verified: bool = False) -> list[str]:
    """Version folder names, newest first (names sort by creation time).

    Staging folders and ``LATEST`` are never listed. By default the folders are not checked,
    because hashing every version's weights is slow; pass ``verified=True`` to list only
    versions that pass :func:`verify_version` (e.g. when choosing a rollback target).
    """
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        return []
    names = [p.name for p in model_dir.iterdir() if p.is_dir() and _is_version_name(p.name)]
    if verified:
        names = [n for n in names if _verifies(model_dir / n)]
    return sorted(names, reverse=True)


def _verifies(version_dir: Path) -> bool:
    try:
        verify_version(version_dir)
    except CheckpointError as e:
        log.warning("publish.version_invalid", path=str(version_dir), error=str(e))
        return False
    return True
