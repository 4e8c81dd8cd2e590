"""Dataset files: merged without duplicates, and never left with a partial line by a crash."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

from training.dataset import known_ids, merge_records
from training.files import TMP_PREFIX

REPO = Path(__file__).resolve().parents[2]
WRITER = """
import sys
from pathlib import Path
from training.dataset import merge_records
path, start = Path(sys.argv[1]), int(sys.argv[2])
print("ready", flush=True)
for batch in range(1000):
    first = start + batch * 3000
    merge_records(path, [{"id": str(n), "text": "x" * 80} for n in range(first, first + 3000)])
"""


def test_merge_adds_only_new_ids_in_id_order(tmp_path: Path) -> None:
    path = tmp_path / "datasets" / "someone.jsonl"
    assert merge_records(path, [{"id": "30", "text": "c"}, {"id": "10", "text": "a"}]) == 2
    assert merge_records(path, [{"id": "10", "text": "again"}, {"id": "20", "text": "b"},
                                {"id": "20", "text": "dup"}]) == 1  # fmt: skip
    assert merge_records(path, []) == 0
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert [(r["id"], r["text"]) for r in lines] == [("10", "a"), ("30", "c"), ("20", "b")]


def test_a_writer_killed_mid_merge_never_leaves_a_partial_line(tmp_path: Path) -> None:
    path = tmp_path / "datasets" / "big.jsonl"
    merge_records(path, [{"id": str(n), "text": "seed"} for n in range(20_000)])
    rng = random.Random(3)
    for round_number in range(6):
        writer = subprocess.Popen(
            [sys.executable, "-c", WRITER, str(path), str(100_000 * (round_number + 1))],
            stdout=subprocess.PIPE, text=True, cwd=REPO,
            env={**os.environ, "PYTHONPATH": str(REPO)},
        )  # fmt: skip
        assert writer.stdout is not None and writer.stdout.readline().strip() == "ready"
        time.sleep(rng.uniform(0.05, 0.4))  # picks the moment of the crash, syncs nothing
        writer.send_signal(signal.SIGKILL)
        writer.wait()
        raw = path.read_bytes()
        assert raw.endswith(b"\n")
        ids = [json.loads(line)["id"] for line in raw.decode().splitlines()]
        assert len(ids) == len(set(ids)) and len(ids) % 3000 == 20_000 % 3000
    merge_records(path, [{"id": "1", "text": "after the crashes"}])
    assert not list(path.parent.glob(f"{TMP_PREFIX}*"))  # the next writer swept the leftovers
    assert "1" in known_ids(path)
