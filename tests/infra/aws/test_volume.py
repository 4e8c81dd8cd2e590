"""Moving the data volume between zones never leaves zero volumes holding the data."""

from __future__ import annotations

import threading

from infra.aws.cloud import ROLE_DATA, ROLE_RELOCATING, TAG_ROLE, Cloud
from infra.aws.volume import DataVolume


def data_holders(cloud: Cloud) -> list[dict]:
    """Volumes that hold the data: the data volume and a relocation copy that is complete.

    One describe call, classified here: two calls (one per role) could straddle the retag
    of the copy from relocating to data and see neither.
    """

    def role(volume: dict) -> str | None:
        return next((t["Value"] for t in volume.get("Tags", []) if t["Key"] == TAG_ROLE), None)

    return [
        volume
        for volume in cloud.volumes()
        if role(volume) in (ROLE_DATA, ROLE_RELOCATING)
        and volume["State"] in ("available", "in-use")
    ]


def test_relocation_keeps_a_volume_with_the_data_at_every_step(cloud: Cloud) -> None:
    volumes = DataVolume(cloud)
    original = volumes.create("us-east-1a")
    seen: list[tuple[str, list[str], list[str]]] = []

    def on_step(step: str) -> None:
        holders = data_holders(cloud)
        snapshots = [s["State"] for s in cloud.snapshots()]
        seen.append((step, sorted(v["VolumeId"] for v in holders), snapshots))
        assert holders, f"no volume holds the data after {step}"

    # A second observer samples continuously while the relocation runs.
    stop = threading.Event()
    samples: list[int] = []

    def sample() -> None:
        probe = Cloud(cloud.settings, cloud.account)
        while not stop.is_set():
            samples.append(len(data_holders(probe)))

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        moved = volumes.relocate(original, "us-east-1b", on_step)
    finally:
        stop.set()
        sampler.join()

    steps = [step for step, _ids, _snaps in seen]
    assert steps == [
        "snapshot_started",
        "snapshot_completed",
        "new_volume_created",
        "new_volume_available",
        "old_volume_deleted",
        "snapshot_deleted",
    ]
    by_step = {step: ids for step, ids, _snaps in seen}
    # The old volume is still there once the new one is available, and only then goes.
    assert original["VolumeId"] in by_step["new_volume_available"]
    assert moved["VolumeId"] in by_step["new_volume_available"]
    assert by_step["old_volume_deleted"] == [moved["VolumeId"]]
    assert samples and min(samples) >= 1

    assert moved["AvailabilityZone"] == "us-east-1b"
    assert volumes.find()["VolumeId"] == moved["VolumeId"]  # tagged as the data volume now
    assert not cloud.snapshots(), "the relocation snapshot is removed afterwards"
    assert moved["VolumeType"] == "gp3" and moved["Encrypted"]


def test_ensure_in_moves_only_when_the_zone_differs(cloud: Cloud) -> None:
    volumes = DataVolume(cloud)
    created = volumes.ensure_in("us-east-1a")  # none yet: made there
    assert volumes.ensure_in("us-east-1a")["VolumeId"] == created["VolumeId"]
    moved = volumes.ensure_in("us-east-1b")
    assert moved["VolumeId"] != created["VolumeId"]
    assert [v["VolumeId"] for v in cloud.volumes()] == [moved["VolumeId"]]
