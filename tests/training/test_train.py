"""``python -m training.train`` as a backend runs it: a real subprocess, real files, signals."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from infra.job import Job, JobSpec
from tests.support.daemon_process import parse_events
from training.dataset import dataset_hash, load_tweets
from training.publish import list_versions, read_latest, verify_version
from training.request import RequestError, TrainRequest
from training.train import TrainingStopped, run_training

ROOT = Path(__file__).resolve().parents[2]
TINY = {"embedding_dim": 8, "units": 16, "seq_len": 16, "batch_size": 8, "epochs": 2, "seed": 1}
PHRASES = ["the cat sat on the mat", "the dog ate a bone &amp; a stick", "a bird\nsang all day"]


def _dataset(tmp_path: Path, n: int = 60) -> Path:
    path = tmp_path / "datasets" / "someone.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [
        json.dumps(
            # Numbered: cleaning drops exact duplicates, and these tests want n distinct tweets.
            {
                "id": str(1000 + i),
                "text": f"{PHRASES[i % 3]} {i}",
                "created_at": "2024-01-01T00:00:00Z",
            }
        )
        for i in range(n)
    ]
    path.write_text("\n".join([*lines, lines[0]]) + "\n")  # a duplicate id is tolerated
    return path


def _request(tmp_path: Path, datasets: list[str], **config: Any) -> dict[str, Any]:
    return {
        "model_kind": "char_rnn",
        "datasets": datasets,
        "checkpoints_dir": str(tmp_path / "checkpoints"),
        "model_config": TINY | config,
        "trigger": "first_start",
    }


def _write_request(tmp_path: Path, request: dict[str, Any]) -> Path:
    path = tmp_path / "request.json"
    path.write_text(json.dumps(request))
    return path


def _command(request_path: Path) -> list[str]:
    return [sys.executable, "-m", "training.train", "--request", str(request_path)]


def _env() -> dict[str, str]:
    return os.environ | {"PYTHONPATH": str(ROOT)}


def test_trains_and_publishes_a_verified_version(tmp_path: Path) -> None:
    dataset = _dataset(tmp_path)
    request_path = _write_request(tmp_path, _request(tmp_path, [str(dataset)]))
    proc = subprocess.run(
        _command(request_path), cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == ""
    events = parse_events(proc.stderr)
    names = [e["event"] for e in events]
    assert names.count("train.epoch_done") == 2
    assert names.index("train.started") < names.index("train.published")
    epoch = next(e for e in events if e["event"] == "train.epoch_done")
    assert {"train_loss", "val_loss", "val_bits_per_char", "timestamp"} <= set(epoch)

    model_dir = tmp_path / "checkpoints" / "char_rnn"
    latest = read_latest(model_dir)
    assert latest is not None and list_versions(model_dir) == [latest]
    manifest = verify_version(model_dir / latest, expected_kind="char_rnn")
    published = next(e for e in events if e["event"] == "train.published")
    assert published["version"] == latest
    assert manifest.step > 0 and manifest.train_loss is not None
    assert manifest.dataset_hash == dataset_hash(load_tweets([dataset]))
    assert manifest.config["units"] == 16 and manifest.config["cell"] == "gru"
    assert set(manifest.files) == {
        "config.json",
        "vocab.json",
        "model.weights.h5",
        "train.log",
        "loss.png",
    }
    header = (model_dir / latest / "train.log").read_text().splitlines()[0]
    assert header == "step,train_loss,val_loss,lr,tokens_per_s,elapsed_s"


def test_missing_dataset_fails_with_one_clear_line(tmp_path: Path) -> None:
    missing = tmp_path / "datasets" / "nobody.jsonl"
    request_path = _write_request(tmp_path, _request(tmp_path, [str(missing)]))
    proc = subprocess.run(
        _command(request_path), cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 1
    failed = [e for e in parse_events(proc.stderr) if e["event"] == "train.failed"]
    assert len(failed) == 1 and str(missing) in failed[0]["error"]
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "checkpoints" / "char_rnn").exists()


def test_sigterm_after_an_epoch_publishes_what_it_has(tmp_path: Path) -> None:
    dataset = _dataset(tmp_path, n=200)
    request_path = _write_request(tmp_path, _request(tmp_path, [str(dataset)], epochs=5000))
    proc = subprocess.Popen(
        _command(request_path), cwd=ROOT, env=_env(), stderr=subprocess.PIPE, text=True
    )
    try:
        assert proc.stderr is not None
        deadline = time.monotonic() + 60
        for line in proc.stderr:
            if '"train.epoch_done"' in line:
                break
            assert time.monotonic() < deadline, "no epoch finished in time"
        proc.send_signal(signal.SIGTERM)
        rest = proc.stderr.read()
        assert proc.wait(timeout=60) == 0, rest
    finally:
        if proc.poll() is None:
            proc.kill()
    names = [e["event"] for e in parse_events(rest)]
    assert "train.stop_requested" in names and "train.published" in names
    model_dir = tmp_path / "checkpoints" / "char_rnn"
    manifest = verify_version(model_dir / str(read_latest(model_dir)))
    assert 0 < manifest.step < 5000


def test_stop_before_the_first_epoch_publishes_nothing(tmp_path: Path) -> None:
    stop = threading.Event()
    stop.set()
    with pytest.raises(TrainingStopped):
        run_training(_request(tmp_path, [str(_dataset(tmp_path))]), stop=stop)
    assert list_versions(tmp_path / "checkpoints" / "char_rnn") == []


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"model_kind": "bert"}, "unknown model_kind 'bert'"),
        ({"datasets": []}, "'datasets'"),
        ({"model_config": {"unitz": 3}}, "unitz"),
        ({"model_config": {"units": "32"}}, "'model_config': char_rnn config 'units'"),
        ({"weights": [1.0, 2.0]}, "'weights' must be a list of numbers, one per dataset"),
        ({"resume": "yes"}, "'resume'"),
        ({"cleaning": {"url": "drop"}}, "'cleaning': unknown cleaning option"),
    ],
)
def test_bad_requests_are_refused_in_process(
    tmp_path: Path, change: dict[str, Any], message: str
) -> None:
    request = _request(tmp_path, [str(_dataset(tmp_path))]) | change
    with pytest.raises(ValueError, match=message):
        run_training(request)


def test_a_request_round_trips_through_its_wire_json(tmp_path: Path) -> None:
    wire = _request(tmp_path, ["datasets/a.jsonl"]) | {"weights": [2], "jobid": "tagged"}
    request = TrainRequest.from_dict(wire)
    assert request.weights == (2.0,) and request.model_settings == TINY
    text = request.to_json()
    assert set(json.loads(text)) == {
        "model_kind", "datasets", "checkpoints_dir", "model_config", "trigger", "weights",
        "resume", "cleaning",
    }  # fmt: skip
    assert json.loads(text)["datasets"] == ["datasets/a.jsonl"]  # resolved only by the trainer
    assert TrainRequest.from_json(text) == request
    with pytest.raises(RequestError, match="request is missing model_kind, checkpoints_dir"):
        TrainRequest.from_dict({"datasets": ["a.jsonl"]})
    with pytest.raises(RequestError, match="not JSON"):
        TrainRequest.from_json("{")


def test_a_request_for_a_job_carries_the_jobs_training_fields(tmp_path: Path) -> None:
    spec = JobSpec(
        account="demo", model_kind="gpt2", targets=["a"], datasets=["/volume/datasets/a.jsonl"],
        dataset_hash="h", model_config={"block_size": 64}, trigger="auto", weights=[2.0],
        cleaning={"urls": "keep"},
    )  # fmt: skip
    request = TrainRequest.for_job(Job.create(spec), checkpoints_dir=tmp_path)
    assert request.datasets == (Path("/volume/datasets/a.jsonl"),)
    assert request.checkpoints_dir == tmp_path and request.trigger == "auto"
    assert request.weights == (2.0,) and request.cleaning.urls == "keep"
    assert request.settings().block_size == 64 and not request.resume
    elsewhere = TrainRequest.for_job(spec, checkpoints_dir="/mnt/ck", datasets=["/mnt/a.jsonl"])
    assert elsewhere.to_dict()["datasets"] == ["/mnt/a.jsonl"]
    assert elsewhere.to_dict()["model_config"] == {"block_size": 64}
