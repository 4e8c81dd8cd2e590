"""Model versions for the chaos suite: good ones (as a trainer publishes) and corrupt ones.

Good versions go through `training.publish.publish`, the trainers' own path, so they are
exactly what a real run leaves. The corrupt ones are what goes wrong in the field: a file
damaged after its manifest was written (a bad disk, an interrupted copy), and a version
whose manifest is consistent but whose weights cannot be loaded (a trainer bug).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from training.publish import LATEST_NAME, MANIFEST_NAME, Manifest, new_staging_dir, publish

WEIGHTS = "model.weights.h5"


def republish(source: Path, model_dir: Path, *, damage_weights: bool = False) -> str:
    """Publish a copy of the version `source` under a new name in `model_dir`; its name.

    `damage_weights` replaces the weights with garbage before publishing: the manifest's
    checksums match, loading fails.
    """
    manifest = Manifest.from_json((source / MANIFEST_NAME).read_text(), source)
    staging = new_staging_dir(model_dir)
    for path in source.iterdir():
        if path.is_file() and path.name != MANIFEST_NAME:
            shutil.copyfile(path, staging / path.name)
    if damage_weights:
        (staging / WEIGHTS).write_bytes(b"not an HDF5 file: " + os.urandom(512))
    published = publish(
        staging,
        model_kind=manifest.model_kind,
        step=manifest.step + 1,
        train_loss=manifest.train_loss,
        val_loss=manifest.val_loss,
        dataset_hash=manifest.dataset_hash,
        config=manifest.config,
    )
    return published.version


def publish_with_bad_checksum(source: Path, model_dir: Path, scratch: Path) -> str:
    """A complete-looking version whose weights no longer match the manifest, made LATEST."""
    version = republish(source, scratch)
    folder = scratch / version
    weights = bytearray((folder / WEIGHTS).read_bytes())
    middle = len(weights) // 2
    weights[middle : middle + 64] = bytes(b ^ 0xFF for b in weights[middle : middle + 64])
    (folder / WEIGHTS).write_bytes(bytes(weights))
    staging = new_staging_dir(model_dir)
    shutil.move(str(folder), staging / version)
    os.rename(staging / version, model_dir / version)  # visible whole, as a publish makes it
    staging.rmdir()
    pointer = model_dir / f".{LATEST_NAME}.chaos"
    pointer.write_text(version + "\n")
    os.replace(pointer, model_dir / LATEST_NAME)
    return version
