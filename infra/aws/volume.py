"""The data volume: one gp3 EBS volume per account holding datasets and resumable checkpoints.

An EBS volume lives in one Availability Zone and attaches only to instances there. When spot
capacity is only in another zone the volume moves, and it moves safely: snapshot, wait for the
snapshot, create the new volume from it, wait until it is available, and only then delete the
old one. At every moment at least one volume holds the data; a crash midway leaves the old
volume in place (and a `data-relocating` stray that `parrotbot infra gc` removes). All waits are
boto3 waiters, never sleeps.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import structlog

from infra.aws.cloud import ROLE_DATA, ROLE_RELOCATING, ROLE_SNAPSHOT, TAG_ROLE, Cloud

log = structlog.get_logger(__name__)

# The device name the volume is attached as; Nitro instances show it as an NVMe device whose
# serial is the volume id, which is how the instance finds it.
DEVICE_NAME = "/dev/sdf"
WAIT = {"Delay": 5, "MaxAttempts": 360}  # up to 30 minutes for a big snapshot

Step = Callable[[str], None]


class DataVolumeError(Exception):
    """The data volume is missing or in a state it cannot be used in; the message says which."""


class DataVolume:
    def __init__(self, cloud: Cloud) -> None:
        self.cloud = cloud
        self.ec2 = cloud.ec2

    def find(self) -> dict[str, Any] | None:
        """The account's data volume, or None before `parrotbot infra setup` made one."""
        found = self.cloud.volumes(ROLE_DATA)
        if len(found) > 1:
            ids = ", ".join(v["VolumeId"] for v in found)
            raise DataVolumeError(f"more than one data volume is tagged for this account: {ids}")
        return found[0] if found else None

    def create(self, availability_zone: str) -> dict[str, Any]:
        settings = self.cloud.settings
        volume = self.ec2.create_volume(
            AvailabilityZone=availability_zone,
            Size=settings.volume_size_gb,
            VolumeType="gp3",
            Encrypted=True,
            TagSpecifications=[self.cloud.tag_spec("volume", ROLE_DATA)],
        )
        self.ec2.get_waiter("volume_available").wait(
            VolumeIds=[volume["VolumeId"]], WaiterConfig=WAIT
        )
        log.info("volume.created", volume_id=volume["VolumeId"], zone=availability_zone)
        return self._describe(volume["VolumeId"])

    def ensure_in(self, availability_zone: str, on_step: Step | None = None) -> dict[str, Any]:
        """The data volume, in `availability_zone`: created there, or moved there if elsewhere."""
        volume = self.find()
        if volume is None:
            return self.create(availability_zone)
        if volume["AvailabilityZone"] == availability_zone:
            return volume
        return self.relocate(volume, availability_zone, on_step or (lambda _step: None))

    def relocate(self, volume: dict[str, Any], zone: str, on_step: Step) -> dict[str, Any]:
        """Snapshot → wait → new volume from it → wait → only then delete the old one."""
        old_id = volume["VolumeId"]
        log.info("volume.relocating", volume_id=old_id, source=volume["AvailabilityZone"], to=zone)
        self.wait_detached(old_id)
        snapshot = self.ec2.create_snapshot(
            VolumeId=old_id,
            Description=f"parrotbot: moving {old_id} to {zone}",
            TagSpecifications=[self.cloud.tag_spec("snapshot", ROLE_SNAPSHOT)],
        )
        snapshot_id = snapshot["SnapshotId"]
        on_step("snapshot_started")
        self.ec2.get_waiter("snapshot_completed").wait(SnapshotIds=[snapshot_id], WaiterConfig=WAIT)
        on_step("snapshot_completed")
        new = self.ec2.create_volume(
            AvailabilityZone=zone,
            SnapshotId=snapshot_id,
            VolumeType="gp3",
            Encrypted=True,
            Size=max(volume["Size"], self.cloud.settings.volume_size_gb),
            TagSpecifications=[self.cloud.tag_spec("volume", ROLE_RELOCATING)],
        )
        new_id = new["VolumeId"]
        on_step("new_volume_created")
        self.ec2.get_waiter("volume_available").wait(VolumeIds=[new_id], WaiterConfig=WAIT)
        on_step("new_volume_available")
        # The copy is complete and usable: now, and only now, the old volume may go.
        self.ec2.delete_volume(VolumeId=old_id)
        self.ec2.get_waiter("volume_deleted").wait(VolumeIds=[old_id], WaiterConfig=WAIT)
        on_step("old_volume_deleted")
        self.ec2.create_tags(Resources=[new_id], Tags=[{"Key": TAG_ROLE, "Value": ROLE_DATA}])
        self.ec2.delete_snapshot(SnapshotId=snapshot_id)
        on_step("snapshot_deleted")
        log.info("volume.relocated", old=old_id, new=new_id, zone=zone)
        return self._describe(new_id)

    def detach(self, volume_id: str, instance_id: str) -> None:
        """Detach from `instance_id` if attached there (moto needs InstanceId and Device)."""
        volume = self._describe(volume_id)
        for attachment in volume.get("Attachments", []):
            if attachment["InstanceId"] == instance_id and attachment["State"] in (
                "attaching",
                "attached",
            ):
                self.ec2.detach_volume(
                    VolumeId=volume_id,
                    InstanceId=instance_id,
                    Device=attachment.get("Device", DEVICE_NAME),
                    Force=True,
                )
                log.info("volume.detached", volume_id=volume_id, instance_id=instance_id)
        self.wait_detached(volume_id)

    def wait_detached(self, volume_id: str) -> None:
        self.ec2.get_waiter("volume_available").wait(VolumeIds=[volume_id], WaiterConfig=WAIT)

    def _describe(self, volume_id: str) -> dict[str, Any]:
        return self.ec2.describe_volumes(VolumeIds=[volume_id])["Volumes"][0]
