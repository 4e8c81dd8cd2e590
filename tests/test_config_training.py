"""The model settings in the operator's config reach the trainer's own config types intact."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.config import ConfigError, load_config
from tests.test_config import VALID, write
from training.char_rnn_config import CharRNNConfig
from training.gpt2 import GPT2Settings


def test_gpt2_is_a_model_kind_and_its_settings_are_the_trainers(tmp_path: Path) -> None:
    text = VALID + "model:\n  kind: gpt2\n  gpt2:\n    base_model: null\n    block_size: 64\n"
    config = load_config(write(tmp_path, text))
    settings = config.model.hyperparameters()
    assert settings["block_size"] == 64 and settings["base_model"] is None
    # Every field the config offers is one the trainer accepts, with the same defaults.
    assert GPT2Settings.from_dict(settings) == GPT2Settings(base_model=None, block_size=64)
    assert config.model_dir == tmp_path / "volume" / "checkpoints" / "gpt2"


def test_char_rnn_defaults_match_the_trainers(tmp_path: Path) -> None:
    settings = load_config(write(tmp_path, VALID)).model.hyperparameters()
    assert CharRNNConfig.from_dict(settings) == CharRNNConfig()


@pytest.mark.parametrize(
    ("block", "expected"),
    [
        ("    n_embd: 100\n    n_head: 3\n", "model.gpt2: Value error, n_embd must be a multiple"),
        ("    precision: fp8\n", "model.gpt2.precision"),
        ("    block_size: 4096\n", "model.gpt2.block_size"),
        ("    lr: 0.1\n", "model.gpt2.lr: unknown setting"),
    ],
)
def test_bad_gpt2_settings_name_the_field(tmp_path: Path, block: str, expected: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(write(tmp_path, VALID + "model:\n  gpt2:\n" + block))
    assert any(expected.replace("Value error, ", "") in p for p in caught.value.problems), (
        caught.value.problems
    )
