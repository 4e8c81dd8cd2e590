"""Interrupting and resuming ``python -m training.train``: real processes, real signals."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from tests.support.daemon_process import parse_events
from tests.support.training_data import REPO, TINY_GPT2, request, write_dataset
from training.publish import list_versions, read_latest, verify_version
from training.runs import list_checkpoints, runs_root
from training.train import run_training
from training.trainlog import read_rows

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")
TINY_RNN = {"embedding_dim": 8, "units": 16, "seq_len": 32, "batch_size": 16, "epochs": 3}


def _start(tmp_path: Path, req: dict[str, Any], *extra: str) -> subprocess.Popen[str]:
    path = tmp_path / "request.json"
    path.write_text(json.dumps(req))
    command = [sys.executable, "-m", "training.train", "--request", str(path), *extra]
    env = os.environ | {"PYTHONPATH": str(REPO)}
    return subprocess.Popen(command, cwd=REPO, env=env, stderr=subprocess.PIPE, text=True)


def _wait_for(proc: subprocess.Popen[str], event: str, timeout: float = 90) -> list[str]:
    """Read stderr lines until one names ``event``; the lines read so far."""
    assert proc.stderr is not None
    deadline = time.monotonic() + timeout
    seen = []
    for line in proc.stderr:
        seen.append(line)
        if f'"{event}"' in line:
            return seen
        assert time.monotonic() < deadline, f"no {event} in time"
    raise AssertionError(f"process ended before {event}: {''.join(seen[-5:])}")


def _sigterm_after(proc: subprocess.Popen[str], event: str) -> str:
    """SIGTERM once ``event`` is logged; assert a clean exit 0; the log lines after it."""
    try:
        _wait_for(proc, event)
        proc.send_signal(signal.SIGTERM)
        assert proc.stderr is not None
        rest = proc.stderr.read()
        assert proc.wait(timeout=60) == 0, rest
        return rest
    finally:
        if proc.poll() is None:
            proc.kill()


def test_sigterm_saves_a_checkpoint_exits_0_and_resume_finishes_the_run(tmp_path: Path) -> None:
    dataset = write_dataset(tmp_path / "datasets" / "poorrichard.jsonl")
    req = request(tmp_path, dataset, "gpt2", **TINY_GPT2 | {"max_steps": 60, "eval_interval": 10})
    rest = _sigterm_after(_start(tmp_path, req), "train.eval_done")
    events = parse_events(rest)
    stopped = next(e for e in events if e["event"] == "gpt2.stopping")
    assert stopped["stop_requested"] and 10 <= stopped["step"] < 60
    assert "train.stop_requested" in [e["event"] for e in events]
    (run_dir,) = runs_root(tmp_path / "checkpoints", "gpt2").iterdir()
    assert list_checkpoints(run_dir)[0].name == f"ckpt-{stopped['step']:08d}.pt"

    resumed = _start(tmp_path, req, "--resume")
    _, err = resumed.communicate(timeout=240)
    assert resumed.returncode == 0, err
    events = parse_events(err)
    assert next(e for e in events if e["event"] == "gpt2.resumed")["step"] == stopped["step"]
    model_dir = tmp_path / "checkpoints" / "gpt2"
    manifest = verify_version(model_dir / str(read_latest(model_dir)), expected_kind="gpt2")
    assert manifest.step == 60
    assert {"train.log", "loss.png", "model.safetensors", "tokenizer.json"} <= set(manifest.files)
    steps = [r["step"] for r in read_rows(model_dir / manifest.version / "train.log")]
    assert steps[0] == 0 and steps[-1] == 60 and steps == sorted(set(steps))


def test_a_killed_run_publishes_nothing_and_a_corrupt_checkpoint_is_skipped(
    tmp_path: Path,
) -> None:
    dataset = write_dataset(tmp_path / "datasets" / "poorrichard.jsonl")
    req = request(
        tmp_path, dataset, "gpt2", **TINY_GPT2 | {"max_steps": 30, "checkpoint_interval": 5}
    )
    proc = _start(tmp_path, req)
    try:
        _wait_for(proc, "gpt2.checkpoint_saved")
        _wait_for(proc, "gpt2.checkpoint_saved")
        proc.kill()  # no chance to clean up: what a power cut leaves behind
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    model_dir = tmp_path / "checkpoints" / "gpt2"
    assert read_latest(model_dir) is None and list_versions(model_dir) == []
    (run_dir,) = runs_root(tmp_path / "checkpoints", "gpt2").iterdir()
    newest, older = list_checkpoints(run_dir)[:2]
    newest.write_bytes(newest.read_bytes()[:1000])  # a torn write from a broken disk

    with capture_logs() as logs:
        manifest = run_training(req | {"resume": True})
    events = {e["event"]: e for e in logs}
    assert events["runs.checkpoint_unreadable"]["path"] == str(newest)
    assert events["gpt2.resumed"]["checkpoint"] == str(older)
    assert manifest.step == 30
    assert verify_version(model_dir / manifest.version) == manifest
    assert list_versions(model_dir) == [manifest.version]  # the run folder is never a version


def test_resume_never_continues_a_run_made_from_other_data(tmp_path: Path) -> None:
    """The spot launcher resumes every job: a volume's older run for other data is skipped."""
    dataset = write_dataset(tmp_path / "datasets" / "poorrichard.jsonl", n=60)
    req = request(tmp_path, dataset, "char_rnn", **TINY_RNN)
    run_training(req)
    (old_run,) = runs_root(tmp_path / "checkpoints", "char_rnn").iterdir()
    write_dataset(dataset, n=80)
    with capture_logs() as logs:
        manifest = run_training(req | {"resume": True})
    fresh = next(e for e in logs if e["event"] == "train.resume_fresh")
    assert old_run.name in fresh["reason"] and "different dataset_hash" in fresh["reason"]
    assert len(list(runs_root(tmp_path / "checkpoints", "char_rnn").iterdir())) == 2
    assert manifest.dataset_hash != json.loads((old_run / "run.json").read_text())["dataset_hash"]


def test_char_rnn_resumed_run_matches_an_uninterrupted_one(tmp_path: Path) -> None:
    """SIGTERM mid-epoch in a real process, then --resume: same steps, loss within noise."""
    dataset = write_dataset(tmp_path / "datasets" / "poorrichard.jsonl", n=150)
    config = TINY_RNN | {"epochs": 4, "checkpoint_interval": 0, "early_stopping_patience": 0}
    whole = run_training(request(tmp_path / "whole", dataset, "char_rnn", **config))

    req = request(tmp_path / "split", dataset, "char_rnn", **config)
    _sigterm_after(_start(tmp_path, req), "char_rnn.progress")  # mid-epoch 1 or 2
    resumed = _start(tmp_path, req, "--resume")
    _, err = resumed.communicate(timeout=240)
    assert resumed.returncode == 0, err
    assert "char_rnn.resumed" in [e["event"] for e in parse_events(err)]
    model_dir = tmp_path / "split" / "checkpoints" / "char_rnn"
    final = verify_version(model_dir / str(read_latest(model_dir)))
    assert final.step == whole.step
    assert final.val_loss == pytest.approx(whole.val_loss, abs=0.05)


def test_char_rnn_publishes_its_best_epoch_and_stops_early(tmp_path: Path) -> None:
    dataset = write_dataset(tmp_path / "datasets" / "poorrichard.jsonl", n=120)
    # A high learning rate on a tiny corpus overfits fast: validation turns up, training stops.
    config = TINY_RNN | {
        "units": 64,
        "epochs": 60,
        "learning_rate": 0.03,
        "early_stopping_patience": 2,
    }
    manifest = run_training(request(tmp_path, dataset, "char_rnn", **config))
    rows = read_rows(tmp_path / "checkpoints" / "char_rnn" / manifest.version / "train.log")
    val = [r["val_loss"] for r in rows if r["val_loss"] is not None]
    assert manifest.val_loss == pytest.approx(min(val), rel=1e-4)
    assert len(val) < 60  # stopped early
    assert val[-1] > min(val) and val[-2] > min(val)  # after `patience` epochs without a gain


class _OpensAFile:
    """A pickled object that runs code when unpickled: it creates the file it names."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (str(self.path), "w"))


def test_a_checkpoint_holding_a_pickled_object_is_refused_not_run(tmp_path: Path) -> None:
    """A run folder is on a volume a trainer shares: resume unpickles no arbitrary object."""
    import torch

    dataset = write_dataset(tmp_path / "datasets" / "poorrichard.jsonl")
    req = request(
        tmp_path, dataset, "gpt2", **TINY_GPT2 | {"max_steps": 20, "checkpoint_interval": 5}
    )
    proc = _start(tmp_path, req)
    try:
        _wait_for(proc, "gpt2.checkpoint_saved")
        _wait_for(proc, "gpt2.checkpoint_saved")
        proc.kill()
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    (run_dir,) = runs_root(tmp_path / "checkpoints", "gpt2").iterdir()
    newest, older = list_checkpoints(run_dir)[:2]
    marker = tmp_path / "code-ran"
    good = torch.load(newest, weights_only=False)  # ours: the test trusts it
    torch.save(good | {"state": _OpensAFile(marker)}, newest)  # the rest of it looks right

    with capture_logs() as logs:
        manifest = run_training(req | {"resume": True})
    assert not marker.exists(), "unpickling the checkpoint ran its code"
    events = {e["event"]: e for e in logs}
    assert events["runs.checkpoint_unreadable"]["path"] == str(newest)
    assert "weights_only" in events["runs.checkpoint_unreadable"]["error"]
    assert events["gpt2.resumed"]["checkpoint"] == str(older)  # a checkpoint we wrote: loads
    assert manifest.step == 20
