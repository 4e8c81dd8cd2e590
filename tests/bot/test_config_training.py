"""The config's model settings are the trainer's own classes, and reach it intact."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.config import ConfigError, load_config
from tests.support.configs import VALID, write_config_text
from training.char_rnn_config import CharRNNConfig
from training.gpt2_config import GPT2Settings


def test_gpt2_is_a_model_kind_and_its_settings_are_the_trainers(tmp_path: Path) -> None:
    text = VALID + "model:\n  kind: gpt2\n  gpt2:\n    base_model: null\n    block_size: 64\n"
    config = load_config(write_config_text(tmp_path, text))
    settings = config.model.hyperparameters()
    assert settings["block_size"] == 64 and settings["base_model"] is None
    # The request carries them as a plain dict; the trainer parses it back (strictly).
    assert GPT2Settings.from_dict(settings) == GPT2Settings(base_model=None, block_size=64)
    assert config.model_dir == tmp_path / "volume" / "checkpoints" / "gpt2"


def test_the_config_holds_the_trainers_settings_classes(tmp_path: Path) -> None:
    model = load_config(write_config_text(tmp_path, VALID)).model
    assert type(model.char_rnn) is CharRNNConfig and type(model.gpt2) is GPT2Settings
    assert model.hyperparameters() == CharRNNConfig().to_dict()


def test_yaml_forms_are_read_as_config_but_a_request_is_strict(tmp_path: Path) -> None:
    # YAML 1.1 reads 3e-4 as a string: the operator's file may say it so, a request may not.
    text = VALID + "model:\n  char_rnn:\n    learning_rate: 3e-4\n"
    settings = load_config(write_config_text(tmp_path, text)).model.hyperparameters()
    assert settings["learning_rate"] == 3e-4
    assert CharRNNConfig.from_dict(settings).learning_rate == 3e-4
    with pytest.raises(ValueError, match="learning_rate"):
        CharRNNConfig.from_dict({"learning_rate": "3e-4"})


def test_bad_char_rnn_settings_name_the_field_and_line(tmp_path: Path) -> None:
    text = VALID + "model:\n  char_rnn:\n    units: 8\n    layers: 5\n"
    with pytest.raises(ConfigError) as caught:
        load_config(write_config_text(tmp_path, text))
    assert caught.value.problems == [
        f"{tmp_path / 'bot.yaml'}:10: model.char_rnn.layers: Input should be less than or "
        "equal to 4"
    ]


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
        load_config(write_config_text(tmp_path, VALID + "model:\n  gpt2:\n" + block))
    assert any(expected.replace("Value error, ", "") in p for p in caught.value.problems), (
        caught.value.problems
    )
