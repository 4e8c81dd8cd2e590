"""Run folders and resumable checkpoints, shared by both model families.

A run folder holds everything a training run needs to continue after an interruption::

    <checkpoints_root>/runs/<model_kind>/<run_id>/
        run.json             what was trained (kind, config, dataset hash): resume checks it
        ckpt-00000120.<ext>  full training state at step 120 (model, optimizer, RNG, position)
        best.<ext>           weights of the best validation loss so far
        train.log, loss.png  the training curve (see training.trainlog)

Run folders live outside ``<checkpoints_root>/<model_kind>/`` on purpose: that folder holds
only published versions, and a run folder is never served. Only :func:`training.publish.publish`
turns a staging copy of the best weights into a version.

Every file here is written through :func:`training.files.atomic_write` (a temporary name,
fsynced, then ``os.replace``d): a checkpoint with its final name is complete, whatever
happened while it was written. Nothing in this module imports a framework; the families
serialise their own state into bytes.
"""

from __future__ import annotations

import datetime as dt
import json
import random
import re
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import structlog

from training.files import atomic_write

log = structlog.get_logger(__name__)

RUN_FILE = "run.json"
_CKPT = re.compile(r"^ckpt-(\d{8})\.(\w+)$")
KEEP_CHECKPOINTS = 2


class ResumeError(Exception):
    """``--resume`` cannot continue: no run folder, or one made for other data or settings."""


def runs_root(checkpoints_dir: Path, model_kind: str) -> Path:
    return Path(checkpoints_dir) / "runs" / model_kind


def new_run_dir(checkpoints_dir: Path, model_kind: str, identity: dict[str, Any]) -> Path:
    """Create a run folder named by time (so the newest sorts last) and record its identity."""
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    run_dir = runs_root(checkpoints_dir, model_kind) / f"{stamp}-{secrets.token_hex(3)}"
    run_dir.mkdir(parents=True)
    atomic_write(run_dir / RUN_FILE, lambda f: f.write(_identity_bytes(identity)))
    return run_dir


def find_resumable_run(checkpoints_dir: Path, model_kind: str, identity: dict[str, Any]) -> Path:
    """The newest run folder of this kind, made from this data and these settings, that holds
    at least one complete checkpoint.

    A run made from other data or other settings cannot be continued meaningfully (the
    optimizer state and data position would describe something else), so it is skipped, not
    resumed: the spot launcher passes ``--resume`` to every job, and a volume keeps the runs
    of earlier jobs. ResumeError says what the newest skipped run differed in.
    """
    root = runs_root(checkpoints_dir, model_kind)
    candidates = sorted((p for p in root.glob("*") if p.is_dir()), reverse=True)
    skipped: list[str] = []
    for run_dir in candidates:
        if not list_checkpoints(run_dir):
            continue
        try:
            recorded = json.loads((run_dir / RUN_FILE).read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            log.warning("runs.unreadable_run_file", run_dir=str(run_dir))
            continue
        differs = sorted(k for k in identity if recorded.get(k) != _jsonable(identity[k]))
        if not differs:
            return run_dir
        skipped.append(f"{run_dir.name} (different {', '.join(differs)})")
    detail = f"; skipped {', '.join(skipped[:3])}" if skipped else ""
    raise ResumeError(f"{root}: no run folder with a complete checkpoint to resume{detail}")


def checkpoint_path(run_dir: Path, step: int, ext: str) -> Path:
    return Path(run_dir) / f"ckpt-{step:08d}.{ext}"


def list_checkpoints(run_dir: Path) -> list[Path]:
    """Complete checkpoints (final names only; temp files are never listed), newest first."""
    found = [p for p in Path(run_dir).glob("ckpt-*") if _CKPT.match(p.name)]
    return sorted(found, key=lambda p: p.name, reverse=True)


def prune_checkpoints(run_dir: Path, keep: int = KEEP_CHECKPOINTS) -> None:
    """Drop all but the newest ``keep``; an older one is the fallback if the newest is bad."""
    for old in list_checkpoints(run_dir)[keep:]:
        old.unlink(missing_ok=True)


def load_newest(run_dir: Path, load: Callable[[Path], Any]) -> tuple[Path, Any]:
    """Load the newest checkpoint that ``load`` accepts; a corrupt one falls back to older."""
    for path in list_checkpoints(run_dir):
        try:
            return path, load(path)
        except Exception as e:  # a truncated or foreign file: try the one before it
            log.warning("runs.checkpoint_unreadable", path=str(path), error=str(e))
    raise ResumeError(f"{run_dir}: no checkpoint could be loaded")


def python_numpy_rng_state() -> dict[str, Any]:
    """The global Python and legacy NumPy RNG states (libraries may draw from either).

    As plain lists and numbers: a checkpoint holding them loads without unpickling objects
    (JSON for char-RNN, ``torch.load(weights_only=True)`` for GPT-2).
    """
    version, internal, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "python": [version, list(internal), gauss],
        "numpy": [str(kind), keys.tolist(), int(pos), int(has_gauss), float(cached)],
    }


def restore_python_numpy_rng(state: dict[str, Any]) -> None:
    py = state["python"]
    # JSON/pickle round trips turn the inner tuple into a list; random wants tuples.
    random.setstate((py[0], tuple(py[1]), py[2]))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))


def epoch_permutation(seed: int, epoch: int, n: int) -> np.ndarray:
    """The data order of one epoch, a pure function of (seed, epoch).

    Deriving it instead of drawing it from a running generator is what makes the data
    position resumable: the checkpoint stores (epoch, index) and the order is rebuilt.
    """
    return np.random.default_rng([seed, epoch]).permutation(n)


def _identity_bytes(identity: dict[str, Any]) -> bytes:
    return (json.dumps(_jsonable(identity), indent=2, sort_keys=True) + "\n").encode()


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, sort_keys=True, default=str))
