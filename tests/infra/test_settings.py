"""The retry settings of `training.aws`, as an operator writes them in the config."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.config import ConfigError, load_config
from infra.settings import DownloadRetry, LaunchRetry
from tests.support.configs import VALID, write_config_text

AWS = """\
training:
  backend: aws
  aws:
    bucket: my-parrotbot-bucket
    ami_id: ami-0123456789abcdef0
"""


def test_the_defaults_wait_for_capacity_for_hours_and_retry_downloads_briefly(
    tmp_path: Path,
) -> None:
    aws = load_config(write_config_text(tmp_path, VALID + AWS)).training.aws
    assert aws is not None
    assert aws.launch_retry == LaunchRetry(
        first_seconds=60, max_seconds=900, give_up_seconds=12 * 3600
    )
    delays = [aws.launch_retry.delay(n) for n in range(1, 8)]
    assert delays == [60, 120, 240, 480, 900, 900, 900]
    assert aws.download_retry == DownloadRetry(first_seconds=1, max_seconds=10, attempts=4)


def test_launch_retry_settings_are_read(tmp_path: Path) -> None:
    text = VALID + AWS + "    launch_retry:\n      first_seconds: 5\n      give_up_seconds: 0\n"
    retry = load_config(write_config_text(tmp_path, text)).training.aws.launch_retry
    assert retry.first_seconds == 5 and retry.max_seconds == 900 and retry.give_up_seconds == 0


@pytest.mark.parametrize(
    ("block", "expected"),
    [
        (
            "    launch_retry:\n      give_up_seconds: -1\n",
            "training.aws.launch_retry.give_up_seconds: Input should be greater than or equal to 0",
        ),
        (
            "    launch_retry:\n      first_seconds: 0\n",
            "training.aws.launch_retry.first_seconds: Input should be greater than 0",
        ),
        (
            "    launch_retry:\n      first_seconds: 1200\n",
            "training.aws.launch_retry.max_seconds: 900 is below first_seconds (1200)",
        ),
        (
            "    launch_retry:\n      give_up_after: 60\n",
            "training.aws.launch_retry.give_up_after: unknown setting",
        ),
        (
            "    download_retry:\n      attempts: 0\n",
            "training.aws.download_retry.attempts: Input should be greater than or equal to 1",
        ),
        (
            "    download_retry:\n      first_seconds: 5\n      max_seconds: 2\n",
            "training.aws.download_retry.max_seconds: 2 is below first_seconds (5)",
        ),
    ],
)
def test_bad_retry_settings_name_the_field(tmp_path: Path, block: str, expected: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(write_config_text(tmp_path, VALID + AWS + block))
    assert any(expected in problem for problem in caught.value.problems), caught.value.problems
