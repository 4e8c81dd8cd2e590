"""Small corpora and tiny model configs shared by the training tests."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "config" / "sample_timelines" / "poorrichard.jsonl"

# Two layers of width 32: trains a few hundred steps a second on two shared cores.
TINY_GPT2: dict[str, Any] = {
    "base_model": None,
    "n_layer": 2,
    "n_head": 2,
    "n_embd": 32,
    "vocab_size": 400,
    "block_size": 64,
    "batch_size": 8,
    "learning_rate": 3e-3,
    "warmup_steps": 5,
    "eval_interval": 10,
    "checkpoint_interval": 10,
    "log_interval": 5,
    "early_stopping_patience": 0,
    "dropout": 0.0,
    "seed": 3,
}


def sample_texts(n: int | None = None) -> list[str]:
    lines = SAMPLE.read_text(encoding="utf-8").splitlines()[:n]
    return [json.loads(line)["text"] for line in lines]


def write_dataset(path: Path, n: int | None = None) -> Path:
    """The first ``n`` sample tweets as a dataset file (ids and texts kept)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = SAMPLE.read_text(encoding="utf-8").splitlines()[:n]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def request(tmp_path: Path, dataset: Path, kind: str, **config: Any) -> dict[str, Any]:
    return {
        "model_kind": kind,
        "datasets": [str(dataset)],
        "checkpoints_dir": str(tmp_path / "checkpoints"),
        "model_config": config,
        "trigger": "test",
    }
