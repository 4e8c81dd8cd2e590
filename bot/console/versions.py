"""The published model versions as the models page shows them, read from the volume.

Manifests are parsed but the weights are not hashed: checking every version's checksums on
each page view would be slow, and the daemon verifies a version before loading it anyway
(as `rollback` does before pointing LATEST at one).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from bot.state import BotState
from training.publish import (
    MANIFEST_NAME,
    CheckpointError,
    Manifest,
    list_versions,
    read_latest,
)
from training.trainlog import LOG_NAME, read_rows


@dataclass(frozen=True)
class VersionRow:
    name: str
    manifest: Manifest | None
    problem: str | None  # why the manifest could not be read
    latest: bool  # LATEST names it
    serving: bool  # the daemon reported it as the model serving now
    bad_reason: str | None  # recorded as bad (never loaded again), and why
    has_log: bool


def version_rows(model_dir: Path, state: BotState) -> list[VersionRow]:
    """Every version folder in `model_dir`, newest first, with what is known about it."""
    latest = read_latest(model_dir)
    serving = state.current_model_version()
    bad = state.bad_versions()
    rows = []
    for name in list_versions(model_dir):
        manifest, problem = read_manifest(model_dir / name)
        rows.append(
            VersionRow(
                name=name,
                manifest=manifest,
                problem=problem,
                latest=name == latest,
                serving=name == serving,
                bad_reason=bad.get(name),
                has_log=(model_dir / name / LOG_NAME).is_file(),
            )
        )
    return rows


def read_manifest(version_dir: Path) -> tuple[Manifest | None, str | None]:
    path = version_dir / MANIFEST_NAME
    try:
        return Manifest.from_json(path.read_text(encoding="utf-8"), path), None
    except (OSError, UnicodeDecodeError) as exc:
        return None, f"{path.name}: {exc.strerror if isinstance(exc, OSError) else exc}"
    except CheckpointError as exc:
        return None, str(exc)


def loss_series(version_dir: Path) -> tuple[dict[str, list[tuple[float, float]]], str | None]:
    """Train and val loss against step from the version's train.log, or why there are none."""
    try:
        rows = read_rows(version_dir / LOG_NAME)
    except ValueError as exc:
        return {}, str(exc)
    series: dict[str, list[tuple[float, float]]] = {"train": [], "val": []}
    for row in rows:
        step = row["step"]
        assert step is not None  # read_rows refuses a row without one
        for name, column in (("train", "train_loss"), ("val", "val_loss")):
            value = row.get(column)
            if value is not None:
                series[name].append((step, value))
    return series, None


def rollback_target(rows: list[VersionRow]) -> str | None:
    """The version `bot.hotload.rollback` would most likely choose, for the confirmation page
    only: the newest older version not recorded as bad (rollback also checks checksums)."""
    latest = next((row.name for row in rows if row.latest), None)
    if latest is None:
        return None
    return next((r.name for r in rows if r.name < latest and r.bad_reason is None), None)
