"""The checkpoint publishing protocol: what readers may trust, and what they must refuse."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from training.publish import (
    LATEST_NAME,
    MANIFEST_NAME,
    CheckpointError,
    Manifest,
    list_versions,
    new_staging_dir,
    new_version_name,
    publish,
    read_latest,
    set_latest,
    verify_version,
)

KIND = "char_rnn"


def _publish(model_dir: Path, payload: bytes = b"weights", step: int = 10) -> Manifest:
    staging = new_staging_dir(model_dir)
    (staging / "model.weights.h5").write_bytes(payload)
    (staging / "config.json").write_text('{"units": 32}')
    (staging / "sub").mkdir()
    (staging / "sub" / "vocab.json").write_text('{"chars": ["a"]}')
    return publish(
        staging,
        model_kind=KIND,
        step=step,
        train_loss=1.5,
        val_loss=None,
        dataset_hash="d" * 64,
        config={"units": 32},
    )


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    return tmp_path / "checkpoints" / KIND


def test_publish_then_verify(model_dir: Path) -> None:
    manifest = _publish(model_dir)
    version_dir = model_dir / manifest.version
    assert verify_version(version_dir, expected_kind=KIND) == manifest
    assert set(manifest.files) == {"model.weights.h5", "config.json", "sub/vocab.json"}
    assert manifest.step == 10 and manifest.val_loss is None
    assert manifest.created_at.endswith("Z")
    assert read_latest(model_dir) == manifest.version
    assert not [p for p in model_dir.iterdir() if p.name.startswith(".")]


def test_manifest_json_round_trip_and_rejects_bad_fields() -> None:
    manifest = Manifest(KIND, "v1", 3, 1.0, 2.0, "h", {"a": "0" * 64}, "2024-01-01T00:00:00Z", {})
    assert Manifest.from_json(manifest.to_json(), "m.json") == manifest
    raw = json.loads(manifest.to_json())
    del raw["dataset_hash"]
    with pytest.raises(CheckpointError, match=r"m\.json.*dataset_hash"):
        Manifest.from_json(json.dumps(raw), "m.json")
    raw = json.loads(manifest.to_json()) | {"step": "3"}
    with pytest.raises(CheckpointError, match="step"):
        Manifest.from_json(json.dumps(raw), "m.json")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        Manifest.from_json("{", "m.json")


def test_latest_moves_to_newest_and_leaves_no_temp_files(model_dir: Path) -> None:
    first = _publish(model_dir)
    second = _publish(model_dir, payload=b"better weights")
    assert read_latest(model_dir) == second.version
    assert (model_dir / LATEST_NAME).read_text().strip() == second.version
    assert list_versions(model_dir) == [second.version, first.version]
    assert sorted(p.name for p in model_dir.iterdir()) == sorted(
        [LATEST_NAME, first.version, second.version]
    )


def test_read_latest_without_pointer(model_dir: Path) -> None:
    assert read_latest(model_dir) is None
    model_dir.mkdir(parents=True)
    (model_dir / LATEST_NAME).write_text("  v1 \n")
    assert read_latest(model_dir) == "v1"


def test_version_names_sort_by_time_and_are_unique() -> None:
    names = [new_version_name() for _ in range(50)]
    assert len(set(names)) == 50
    assert names == sorted(names)
    assert len(names[0].split("-")[1]) == 6


def _corrupt_missing_manifest(d: Path) -> None:
    (d / MANIFEST_NAME).unlink()


def _corrupt_truncate(d: Path) -> None:
    (d / "model.weights.h5").write_bytes(b"wei")


def _corrupt_flip_bytes(d: Path) -> None:
    (d / "model.weights.h5").write_bytes(b"WEIGHTS")


def _corrupt_extra_file(d: Path) -> None:
    (d / "stray.bin").write_bytes(b"x")


def _corrupt_missing_file(d: Path) -> None:
    (d / "sub" / "vocab.json").unlink()


def _corrupt_manifest_json(d: Path) -> None:
    (d / MANIFEST_NAME).write_text('{"model_kind": "char_rnn"')


def _corrupt_incomplete_manifest(d: Path) -> None:
    raw = json.loads((d / MANIFEST_NAME).read_text())
    del raw["files"]
    (d / MANIFEST_NAME).write_text(json.dumps(raw))


@pytest.mark.parametrize(
    ("corrupt", "message"),
    [
        (_corrupt_missing_manifest, "manifest is missing"),
        (_corrupt_truncate, "sha256 does not match"),
        (_corrupt_flip_bytes, "sha256 does not match"),
        (_corrupt_extra_file, "not listed in the manifest: stray.bin"),
        (_corrupt_missing_file, "vocab.json: file listed in the manifest is missing"),
        (_corrupt_manifest_json, "not valid JSON"),
        (_corrupt_incomplete_manifest, "missing field 'files'"),
    ],
)
def test_damaged_versions_are_refused(model_dir: Path, corrupt, message: str) -> None:
    manifest = _publish(model_dir)
    version_dir = model_dir / manifest.version
    corrupt(version_dir)
    with pytest.raises(CheckpointError, match=message) as info:
        verify_version(version_dir)
    assert manifest.version in str(info.value)
    assert list_versions(model_dir, verified=True) == []
    with pytest.raises(CheckpointError):
        set_latest(model_dir, manifest.version)


def test_wrong_kind_and_renamed_folder_are_refused(model_dir: Path) -> None:
    manifest = _publish(model_dir)
    version_dir = model_dir / manifest.version
    with pytest.raises(CheckpointError, match="expected 'gpt2'"):
        verify_version(version_dir, expected_kind="gpt2")
    moved = version_dir.rename(model_dir / "20000101T000000000000Z-abcdef")
    with pytest.raises(CheckpointError, match="but the folder is"):
        verify_version(moved)


def test_staging_folder_is_never_a_version(model_dir: Path) -> None:
    published = _publish(model_dir)
    staging = new_staging_dir(model_dir)
    assert staging.parent == model_dir and staging.name.startswith(".staging-")
    (staging / "model.weights.h5").write_bytes(b"half written")
    assert list_versions(model_dir) == [published.version]
    with pytest.raises(CheckpointError, match="staging"):
        verify_version(staging)
    with pytest.raises(CheckpointError):
        set_latest(model_dir, staging.name)


def test_list_versions_newest_first_and_skips_files(model_dir: Path) -> None:
    versions = [_publish(model_dir, step=i).version for i in range(3)]
    assert list_versions(model_dir) == versions[::-1]
    assert list_versions(model_dir, verified=True) == versions[::-1]
    assert list_versions(model_dir.parent / "missing") == []


def test_set_latest_rolls_back_only_to_good_versions(model_dir: Path) -> None:
    old = _publish(model_dir)
    new = _publish(model_dir)
    set_latest(model_dir, old.version)
    assert read_latest(model_dir) == old.version
    (model_dir / new.version / "model.weights.h5").write_bytes(b"corrupt")
    with pytest.raises(CheckpointError, match="sha256"):
        set_latest(model_dir, new.version)
    with pytest.raises(CheckpointError, match="does not exist"):
        set_latest(model_dir, "20990101T000000000000Z-000000")
    assert read_latest(model_dir) == old.version


def test_publish_refuses_missing_or_empty_staging(model_dir: Path) -> None:
    with pytest.raises(CheckpointError, match="does not exist"):
        publish(
            model_dir / ".staging-nope",
            model_kind=KIND,
            step=1,
            train_loss=None,
            val_loss=None,
            dataset_hash="h",
            config={},
        )
    with pytest.raises(CheckpointError, match="no files"):
        publish(
            new_staging_dir(model_dir),
            model_kind=KIND,
            step=1,
            train_loss=None,
            val_loss=None,
            dataset_hash="h",
            config={},
        )
