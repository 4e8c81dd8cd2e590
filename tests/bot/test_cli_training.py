"""`parrotbot train`, `generate` and `plot` for both families, and their error messages."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from bot.cli import app
from tests.support.training_data import SAMPLE, TINY_GPT2
from training.publish import read_latest

runner = CliRunner()
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")


@pytest.fixture
def gpt2_config(write_config) -> tuple[Path, Path]:
    """A config whose model is a tiny from-scratch GPT-2, with the sample as its dataset."""
    model = {"kind": "gpt2", "gpt2": TINY_GPT2 | {"max_steps": 30}}
    config = write_config(model=model)
    data_dir = Path(yaml.safe_load(config.read_text())["data_dir"])
    (data_dir / "datasets").mkdir(parents=True)
    shutil.copyfile(SAMPLE, data_dir / "datasets" / "poorrichard.jsonl")
    return config, data_dir


def test_train_generate_and_plot_a_gpt2(gpt2_config: tuple[Path, Path]) -> None:
    config, data_dir = gpt2_config
    result = runner.invoke(app, ["train", "--profile", "poorrichard", "-c", str(config)])
    assert result.exit_code == 0, result.output
    model_dir = data_dir / "checkpoints" / "gpt2"
    version = read_latest(model_dir)
    assert version is not None and f"published gpt2 version {version} (step 30" in result.stdout

    args = ["generate", "-c", str(config), "--seed", "They ", "-n", "3", "--temperature", "0.8"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert len(lines) == 3 and all(line.startswith("They ") for line in lines)

    result = runner.invoke(app, ["plot", str(model_dir / version)])
    assert result.exit_code == 0, result.output
    assert "loss" in result.stdout and len(result.stdout.splitlines()) > 10
    assert (model_dir / version / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_generate_names_a_missing_or_corrupt_checkpoint(
    write_config, trained_checkpoints: Path, tmp_path: Path
) -> None:
    config = write_config()
    missing = tmp_path / "nowhere"
    result = runner.invoke(app, ["generate", "-c", str(config), "--checkpoint", str(missing)])
    assert result.exit_code == 1
    assert f"cannot load {missing}" in result.stderr and "does not exist" in result.stderr

    versions = tmp_path / "copy"
    shutil.copytree(trained_checkpoints / "char_rnn", versions)
    version = versions / str(read_latest(versions))
    weights = version / "model.weights.h5"
    weights.write_bytes(weights.read_bytes()[:-64] + b"\0" * 64)
    result = runner.invoke(app, ["generate", "-c", str(config), "--checkpoint", str(version)])
    assert result.exit_code == 1
    assert "model.weights.h5: sha256 does not match the manifest" in result.stderr
    assert "Traceback" not in result.output


def test_train_without_a_dataset_and_plot_without_a_log_fail_clearly(
    gpt2_config: tuple[Path, Path], tmp_path: Path
) -> None:
    config, _ = gpt2_config
    result = runner.invoke(app, ["train", "-p", "nobody", "--model", "char_rnn", "-c", str(config)])
    assert result.exit_code == 1
    assert "nobody.jsonl: dataset file does not exist" in result.stderr
    result = runner.invoke(app, ["plot", str(tmp_path)])
    assert result.exit_code == 1 and "no train.log" in result.stderr


def test_help_lists_the_training_commands() -> None:
    result = runner.invoke(app, ["--help"])
    for command in ("train", "generate", "plot"):
        assert command in result.output


def test_train_cleans_with_the_configs_cleaning(write_config) -> None:
    """`parrotbot train` cleans as a queued job does: with the config's `cleaning` section."""
    config = write_config(cleaning={"min_chars": 100_000})  # no saying is this long
    data_dir = Path(yaml.safe_load(config.read_text())["data_dir"])
    (data_dir / "datasets").mkdir(parents=True)
    shutil.copyfile(SAMPLE, data_dir / "datasets" / "poorrichard.jsonl")
    result = runner.invoke(app, ["train", "--profile", "poorrichard", "-c", str(config)])
    assert result.exit_code == 1, result.output
    assert "cannot train" in result.stderr and "no non-empty tweets to train on" in result.stderr
    assert not (data_dir / "checkpoints" / "char_rnn").exists()
