"""Config validation: every malformed config names its problem, with exit code 2."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from bot.cli import app
from bot.config import ConfigError, Secrets, load_config
from tests.support.configs import VALID, write_config_text

REPO = Path(__file__).resolve().parents[2]
runner = CliRunner()

def test_shipped_offline_config_is_valid() -> None:
    result = runner.invoke(app, ["check-config", str(REPO / "config" / "offline.yaml")])
    assert result.exit_code == 0, result.output
    config = load_config(REPO / "config" / "offline.yaml")
    assert config.redis_url is None
    assert config.data_dir == (REPO / "data" / "offline").resolve()
    assert config.platform.local.seed_timelines_dir == REPO / "config" / "sample_timelines"


def test_relative_paths_resolve_against_the_config_folder(tmp_path: Path) -> None:
    config = load_config(write_config_text(tmp_path, VALID))
    assert config.data_dir == tmp_path / "volume"
    assert [t.handle for t in config.targets] == ["poorrichard"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param(
            VALID.replace("account: demo\n", ""),
            ["bot.yaml", "account", "Field required"],
            id="missing-field",
        ),
        pytest.param(
            VALID.replace("post_every_seconds: 60", "post_every_seconds: soon"),
            ["bot.yaml:6", "schedule.post_every_seconds", "integer"],
            id="wrong-type",
        ),
        pytest.param(
            VALID + "shedule:\n  post_every_seconds: 5\n",
            ["bot.yaml:7", "shedule", "unknown setting"],
            id="unknown-key",
        ),
        pytest.param(
            VALID.replace("post_every_seconds: 60", "post_cron: '61 * * * *'"),
            ["bot.yaml:6", "schedule.post_cron", "crontab"],
            id="bad-cron",
        ),
        pytest.param(
            VALID.replace("post_every_seconds: 60", "post_every_seconds: -5"),
            ["bot.yaml:6", "schedule.post_every_seconds", "greater than 0"],
            id="negative-interval",
        ),
        pytest.param(
            VALID + "redis_url: http://localhost:6379\n",
            ["bot.yaml:7", "redis_url", "not a Redis URL"],
            id="bad-redis-url",
        ),
        pytest.param(
            VALID + "targets: [poor richard]\n",
            ["targets", "pattern"],
            id="bad-handle",
        ),
        pytest.param(
            VALID + "model:\n  char_rnn:\n    units: 0\n",
            ["bot.yaml:9", "model.char_rnn.units", "greater than 0"],
            id="nested-bad-value",
        ),
        pytest.param(
            "account: demo\ntargets: [a\ndata_dir: x\n",
            ["bot.yaml:3", "invalid YAML"],
            id="invalid-yaml",
        ),
        pytest.param("- just\n- a list\n", ["top level"], id="not-a-mapping"),
    ],
)
def test_malformed_config_exits_2_naming_the_problem(
    tmp_path: Path, text: str, expected: list[str]
) -> None:
    path = write_config_text(tmp_path, text)
    result = runner.invoke(app, ["check-config", str(path)])
    assert result.exit_code == 2
    output = result.stderr
    for fragment in expected:
        assert fragment in output, output
    assert "Traceback" not in output


def test_unreadable_file_exits_2(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    result = runner.invoke(app, ["check-config", str(missing)])
    assert result.exit_code == 2
    assert "nope.yaml: cannot read config file" in result.stderr


def test_every_problem_is_reported_one_line_each(tmp_path: Path) -> None:
    text = VALID.replace("account: demo", "account: 'bad name!'").replace(
        "post_every_seconds: 60", "post_every_seconds: 0"
    )
    with pytest.raises(ConfigError) as caught:
        load_config(write_config_text(tmp_path, text))
    problems = caught.value.problems
    assert len(problems) == 2
    assert any(p.startswith(f"{tmp_path / 'bot.yaml'}:1: account:") for p in problems)
    assert any("schedule.post_every_seconds" in p for p in problems)


def test_secrets_come_from_the_environment_and_never_show_in_repr() -> None:
    secrets = Secrets.from_env({"CONSUMER_KEY": "ck-very-secret", "BEARER_TOKEN": ""})
    assert secrets.consumer_key == "ck-very-secret"
    assert secrets.bearer_token is None
    assert "ck-very-secret" not in repr(secrets)


def test_check_config_as_a_real_process_exits_2(tmp_path: Path) -> None:
    import subprocess
    import sys

    path = write_config_text(tmp_path, VALID + "bogus: 1\n")
    done = subprocess.run(
        [sys.executable, "-m", "bot.cli", "check-config", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "bogus: unknown setting" in done.stderr


def test_the_x_example_config_is_valid_and_x_settings_are_checked(tmp_path: Path) -> None:
    config = load_config(REPO / "config" / "x.example.yaml")
    assert config.platform.kind == "x" and config.platform.dry_run
    assert config.platform.x.budgets.posts_per_day == 20
    bad = (
        VALID + "platform:\n  kind: x\n  x:\n    exclude: [retweets, quotes]\n"
        "    budgets:\n      posts_per_day: -1\n"
        "cleaning:\n  urls: erase\n  shout: true\n"
    )
    result = runner.invoke(app, ["check-config", str(write_config_text(tmp_path, bad))])
    assert result.exit_code == 2
    for expected in ("platform.x.exclude.1", "platform.x.budgets.posts_per_day",
                     "cleaning.urls", "cleaning.shout: unknown setting"):  # fmt: skip
        assert expected in result.stderr, result.stderr


def test_reply_words_are_normalised_and_an_empty_one_is_named(tmp_path: Path) -> None:
    text = VALID + "replies:\n  opt_out_words: ['STOP', '  opt   out ']\n  max_attempts: 2\n"
    replies = load_config(write_config_text(tmp_path, text)).replies
    assert replies.opt_out_words == ["stop", "opt out"] and replies.max_attempts == 2
    assert replies.keep_days == 60 and replies.opt_in_words == ["start"]
    with pytest.raises(ConfigError) as caught:
        text = VALID + "replies:\n  opt_in_words: ['start', ' ']\n"
        load_config(write_config_text(tmp_path, text))
    assert any("replies.opt_in_words" in p and "empty" in p for p in caught.value.problems)


@pytest.mark.parametrize(
    "url",
    ["https://api.x.com", "http://127.0.0.1:8123", "http://127.3.4.5", "http://[::1]:9000",
     "http://localhost:8000/"],
)  # fmt: skip
def test_api_base_url_takes_https_or_a_loopback_http(tmp_path: Path, url: str) -> None:
    text = VALID + f"platform:\n  api_base_url: '{url}'\n"
    assert load_config(write_config_text(tmp_path, text)).platform.api_base_url == url.rstrip("/")


@pytest.mark.parametrize(
    "url", ["http://api.x.com", "http://10.0.0.5:8080", "http://[::2]", "http://127.0.0.1.example"]
)
def test_api_base_url_over_plain_http_to_another_host_is_refused(tmp_path: Path, url: str) -> None:
    """The OAuth signature and the bearer token would cross the network in clear text."""
    text = VALID + f"platform:\n  api_base_url: '{url}'\n"
    with pytest.raises(ConfigError) as caught:
        load_config(write_config_text(tmp_path, text))
    (problem,) = caught.value.problems
    assert "platform.api_base_url" in problem and "must use https" in problem, problem
