"""TensorFlow's C++ start-up notices stay out of the log unless it is at DEBUG."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.support.training_data import REPO
from training.tf_quiet import is_native_chatter

# What a process that logs through bot.logging does when it first loads the char-RNN: the
# daemon's hot-load (import, a first op on the default device) with logging configured.
_LOAD_MODEL = """
import sys
import structlog
from bot.logging import configure_logging
configure_logging(sys.argv[1], json=True)
structlog.get_logger("probe").info("probe.before")
from training.char_rnn import CharRNN, CharRNNConfig, Vocab
import tensorflow as tf
tf.config.list_physical_devices()
model = CharRNN(CharRNNConfig(embedding_dim=8, units=16, seq_len=16), Vocab.from_texts(["ab"]))
structlog.get_logger("probe").info("probe.after")
"""
_CHATTER = ("cudart_stub", "cuInit", "oneDNN", "cpu_feature_guard", "absl::InitializeLog")


def _load_model(level: str) -> list[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TF_CPP")}
    env |= {"PYTHONPATH": str(REPO), "CUDA_VISIBLE_DEVICES": ""}
    result = subprocess.run(
        [sys.executable, "-c", _LOAD_MODEL, level],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 0, result.stderr
    return result.stderr.splitlines()


def test_loading_the_char_rnn_at_info_prints_only_our_json_lines() -> None:
    lines = _load_model("INFO")
    for line in lines:
        assert not any(word in line for word in _CHATTER), line
        json.loads(line)  # every line is one of ours
    assert [json.loads(line)["event"] for line in lines] == ["probe.before", "probe.after"]


@pytest.mark.parametrize(
    "line",
    [
        "I0000 00:00:1796313319.821094   15433 cudart_stub.cc:31] Could not find cuda drivers",
        "E0000 00:00:1796313326.546402   15433 cuda_platform.cc:52] failed call to cuInit",
        "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
        "To enable the following instructions: AVX2 FMA, in other operations, rebuild TensorFlow",
    ],
)
def test_native_lines_are_chatter(line: str) -> None:
    assert is_native_chatter(line)


@pytest.mark.parametrize(
    "line",
    ['{"event": "daemon.started", "level": "info"}', "Traceback (most recent call last):"],
)
def test_our_lines_are_not_chatter(line: str) -> None:
    assert not is_native_chatter(line)
