"""`parrotbot infra gc`: find and remove strays by tag.

A stray is anything tagged for this account that no job in flight uses: a trainer instance or
fleet a crashed launcher left running, a half-made relocation volume or snapshot, a detached
trainer root volume, a job's launch template. The data volume, the template setup made
and the resources of jobs still launching or running are never touched.
"""

from __future__ import annotations

import structlog

from infra.aws.cloud import (
    GONE_STATES,
    ROLE_RELOCATING,
    ROLE_SNAPSHOT,
    ROLE_TRAINER,
    TAG_JOB,
    TAG_ROLE,
    Cloud,
    tag_value,
)
from infra.aws.fleet import Fleets
from infra.aws.setup import Report

log = structlog.get_logger(__name__)


def collect(cloud: Cloud, busy_jobs: set[str]) -> Report:
    """Remove strays; `busy_jobs` are ids of jobs launching or running (left alone)."""
    report = Report()
    ec2 = cloud.ec2
    fleets = Fleets(cloud)
    for fleet in cloud.fleets():
        if tag_value(fleet, TAG_JOB) not in busy_jobs:
            fleets.delete(fleet["FleetId"])
            report.add("deleted", "fleet", fleet["FleetId"])
    for instance in cloud.instances(**{TAG_ROLE: ROLE_TRAINER}):
        alive = instance["State"]["Name"] not in GONE_STATES
        if alive and tag_value(instance, TAG_JOB) not in busy_jobs:
            fleets.terminate(instance["InstanceId"], None)
            report.add("terminated", "instance", instance["InstanceId"])
    if not busy_jobs:  # a relocation belongs to a launch in progress: only gc when none is
        for volume in cloud.volumes(ROLE_RELOCATING) + cloud.volumes(ROLE_TRAINER):
            if volume["State"] == "available":
                ec2.delete_volume(VolumeId=volume["VolumeId"])
                report.add("deleted", "volume", volume["VolumeId"])
        for snapshot in cloud.snapshots(ROLE_SNAPSHOT):
            ec2.delete_snapshot(SnapshotId=snapshot["SnapshotId"])
            report.add("deleted", "snapshot", snapshot["SnapshotId"])
    _job_templates(fleets, busy_jobs, report)
    return report


def _job_templates(fleets: Fleets, busy_jobs: set[str], report: Report) -> None:
    for job_id in fleets.job_templates():
        if job_id not in busy_jobs and fleets.delete_job_template(job_id):
            report.add("deleted", "launch template", fleets.job_template_name(job_id))
