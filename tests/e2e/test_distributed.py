"""The GPT-2 loop under torchrun: two CPU processes (gloo), one published version."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.training_data import REPO, TINY_GPT2, request, write_dataset
from training.publish import list_versions, read_latest, verify_version

pytestmark = pytest.mark.slow


def test_torchrun_two_ranks_train_and_rank_0_alone_publishes(tmp_path: Path) -> None:
    dataset = write_dataset(tmp_path / "datasets" / "poorrichard.jsonl")
    req = request(tmp_path, dataset, "gpt2", **TINY_GPT2 | {"max_steps": 10, "batch_size": 4})
    path = tmp_path / "request.json"
    path.write_text(json.dumps(req))
    command = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
        "--master_port", "29517", "-m", "training.train", "--request", str(path),
    ]  # fmt: skip
    env = os.environ | {"PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    events = [json.loads(x) for x in proc.stderr.splitlines() if x.startswith("{")]
    assert [e["rank"] for e in events if e["event"] == "train.rank_done"] == ["1"]
    model_dir = tmp_path / "checkpoints" / "gpt2"
    assert len(list_versions(model_dir)) == 1
    assert verify_version(model_dir / str(read_latest(model_dir))).step == 10
