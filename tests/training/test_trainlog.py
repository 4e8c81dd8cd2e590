"""train.log: gnuplot-friendly columns, resume without duplicate rows, PNG and terminal plots."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.training_data import REPO
from training.trainlog import COLUMNS, TrainLog, find_log, read_rows, save_plot, terminal_plot


def test_columns_start_with_step_and_training_loss(tmp_path: Path) -> None:
    log = TrainLog(tmp_path)
    log.append(step=0, val_loss=5.5, lr=0.0, elapsed_s=0.0)
    log.append(step=10, train_loss=4.25, lr=3e-4, tokens_per_s=1234.5, elapsed_s=1.5)
    lines = (tmp_path / "train.log").read_text().splitlines()
    assert lines == [",".join(COLUMNS), "0,,5.5,0,,0", "10,4.25,,0.0003,1234.5,1.5"]
    assert COLUMNS[:2] == ("step", "train_loss")


def test_resume_drops_rows_past_the_checkpoint(tmp_path: Path) -> None:
    log = TrainLog(tmp_path)
    for step in (10, 20, 30):
        log.append(step=step, train_loss=1.0)
    TrainLog(tmp_path, resume_step=20).append(step=30, train_loss=0.5)
    assert [(r["step"], r["train_loss"]) for r in read_rows(tmp_path / "train.log")] == [
        (10, 1.0),
        (20, 1.0),
        (30, 0.5),
    ]


def test_plots_as_png_and_as_text(tmp_path: Path) -> None:
    log = TrainLog(tmp_path)
    for step in range(0, 50, 5):
        log.append(step=step, train_loss=5 - step / 20, val_loss=5.2 - step / 25)
    png = save_plot(tmp_path / "train.log")
    assert png == tmp_path / "loss.png" and png.read_bytes()[:4] == b"\x89PNG"
    text = terminal_plot(find_log(tmp_path), width=60, height=15)
    assert "loss" in text and len(text.splitlines()) >= 10


def test_malformed_logs_name_the_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "train.log"
    path.write_text("epoch,loss\n1,2\n")
    with pytest.raises(ValueError, match="header must start with step,train_loss"):
        read_rows(path)
    path.write_text("step,train_loss\n1,2\n2,abc\n")
    with pytest.raises(ValueError, match=r"train\.log:3: not a number"):
        read_rows(path)
    with pytest.raises(ValueError, match=r"no train\.log"):
        find_log(tmp_path / "elsewhere")


def test_gpu_mfu_refuses_without_cuda_and_has_a_cpu_smoke_mode(tmp_path: Path) -> None:
    script = REPO / "tests" / "benchmarks" / "gpu_mfu.py"
    env = os.environ | {"CUDA_VISIBLE_DEVICES": ""}
    out = tmp_path / "mfu.json"
    proc = subprocess.run(
        [sys.executable, str(script), "--out", str(out)],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 2 and "no CUDA device" in proc.stderr and not out.exists()
    smoke = [sys.executable, str(script), "--out", str(out), "--device", "cpu", "--steps", "2"]
    proc = subprocess.run(
        [*smoke, "--size", "tiny", "--batch-size", "4", "--profile", "2", "--top", "5"],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    result = json.loads(out.read_text())
    assert result["steps"] == 2 and result["tokens_per_s"] > 0 and 0 < result["mfu"] < 1
    assert result["flops_per_token"] > 6 * result["params_without_wpe"]
    ops = result["top_ops"]
    assert len(ops) == 5 and all(op["ms_per_step"] > 0 for op in ops)
    assert 0 < sum(op["share"] for op in ops) <= 1 and ops[0]["share"] >= ops[-1]["share"]
