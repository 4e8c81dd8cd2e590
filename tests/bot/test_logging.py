"""bot.logging: one format for structlog and stdlib lines, and no secret reaches the stream."""

from __future__ import annotations

import io
import json
import logging
import os
import subprocess
import sys
import threading

import pytest
import structlog

from bot.logging import MASK, configure_logging, redact
from tests.support.training_data import REPO

SECRETS = {
    "CONSUMER_KEY": "ck-Zq81ConsumerKey",
    "CONSUMER_SECRET": "cs-Wp72ConsumerSecret",
    "ACCESS_TOKEN": "1234567890-AccessTokenXy",
    "ACCESS_TOKEN_SECRET": "ats-Vb55AccessTokenSecret",
    "BEARER_TOKEN": "AAAAAAAAAAAAAAAAAAAAABearer/Tok+en=",
    "AWS_SECRET_ACCESS_KEY": "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
    "AWS_SESSION_TOKEN": "FwoGZXIvYXdzSessionToken",
    "REDIS_PASSWORD": "redis-pw-Hunter2",
}
STDLIB_LOGGERS = ["tweepy.client", "urllib3.connectionpool", "requests_oauthlib.oauth1_auth"]


@pytest.fixture(autouse=True)
def _restore_logging(monkeypatch: pytest.MonkeyPatch):
    """Set the secrets, and undo our handler, level and structlog config after each test."""
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    hooks = sys.excepthook, threading.excepthook
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    logging.captureWarnings(False)
    sys.excepthook, threading.excepthook = hooks
    structlog.reset_defaults()


def _configure(level: str = "DEBUG", *, json_mode: bool = True) -> io.StringIO:
    stream = io.StringIO()
    configure_logging(level, json=json_mode, stream=stream)
    return stream


def _assert_no_secrets(text: str) -> None:
    for name, value in SECRETS.items():
        assert value not in text, f"{name} leaked: {text}"


def _records(stream: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_structlog_event_values_are_redacted_recursively() -> None:
    stream = _configure()
    structlog.get_logger("parrotbot.test").info(
        "client.created",
        note=f"using consumer key {SECRETS['CONSUMER_KEY']} for @bot",
        nested={"inner": [f"secret={SECRETS['CONSUMER_SECRET']}"], "t": (SECRETS["ACCESS_TOKEN"],)},
    )
    out = stream.getvalue()
    _assert_no_secrets(out)
    (record,) = _records(stream)
    assert record["note"] == f"using consumer key {MASK} for @bot"
    assert record["nested"] == {"inner": [f"secret={MASK}"], "t": [MASK]}


@pytest.mark.parametrize("name", STDLIB_LOGGERS)
def test_stdlib_debug_auth_headers_are_redacted(name: str) -> None:
    stream = _configure()
    logger = logging.getLogger(name)
    oauth = (
        f'OAuth oauth_nonce="91827364550192837465", oauth_timestamp="1700000000", '
        f'oauth_version="1.0", oauth_signature_method="HMAC-SHA1", '
        f'oauth_consumer_key="{SECRETS["CONSUMER_KEY"]}", oauth_token="{SECRETS["ACCESS_TOKEN"]}", '
        f'oauth_signature="kT4%2Bsig%3DnatureValue"'
    )
    logger.debug("Making API request: %s", {"Authorization": oauth, "User-Agent": "tweepy/4.14"})
    logger.debug("Updated headers: {'Authorization': 'Bearer %s'}", SECRETS["BEARER_TOKEN"])
    logger.debug("send: b'GET /2/users/me HTTP/1.1\\r\\nAuthorization: Bearer zzTopSecret99\\r\\n'")
    logger.debug("Signing request with oauth_signature=Zm9vYmFyYmF6 and oauth_nonce=998877")
    logger.debug("Base string: POST&https%3A%2F%2Fapi.x.com&oauth_nonce%3D5544332211%26a%3Db")

    out = stream.getvalue()
    _assert_no_secrets(out)
    not_env = ("918273645501", "kT4%2Bsig", "zzTopSecret99", "Zm9vYmFyYmF6", "998877", "5544332")
    for leaked in not_env:
        assert leaked not in out
    records = _records(stream)
    assert [r["logger"] for r in records] == [name] * 5
    assert [r["level"] for r in records] == ["debug"] * 5
    assert "'Authorization': '***'" in records[0]["event"]
    assert "'User-Agent': 'tweepy/4.14'" in records[0]["event"]
    assert records[1]["event"] == "Updated headers: {'Authorization': '***'}"
    assert records[2]["event"] == "send: b'GET /2/users/me HTTP/1.1\\r\\nAuthorization: ***\\r\\n'"
    assert records[3]["event"] == "Signing request with oauth_signature=*** and oauth_nonce=***"
    assert records[4]["event"].endswith("&oauth_nonce%3D***%26a%3Db")


def test_exception_traceback_has_no_secret() -> None:
    stream = _configure()
    try:
        raise RuntimeError(f"401 for token {SECRETS['ACCESS_TOKEN']} at redis://:pw1234@h:6379")
    except RuntimeError:
        structlog.get_logger("parrotbot.test").exception("post.failed", attempt=2)
        logging.getLogger("botocore.endpoint").exception("stdlib side %s", "also")

    out = stream.getvalue()
    _assert_no_secrets(out)
    assert "pw1234" not in out
    first, second = _records(stream)
    for record in (first, second):
        assert record["exception"].startswith("Traceback (most recent call last):")
        expected = f"RuntimeError: 401 for token {MASK} at redis://:{MASK}@h:6379"
        assert expected in record["exception"]
    assert first["attempt"] == 2
    assert second["event"] == "stdlib side also"


def test_redis_url_password_is_redacted() -> None:
    stream = _configure()
    structlog.get_logger("parrotbot.state").info(
        "redis.connect", url="redis://default:n0tInEnv-pass@cache:6379/0"
    )
    logging.getLogger("redis").warning("retrying rediss://bot:other-Pass_9@r.example:6380/1")

    out = stream.getvalue()
    assert "n0tInEnv-pass" not in out and "other-Pass_9" not in out
    first, second = _records(stream)
    assert first["url"] == "redis://default:***@cache:6379/0"
    assert second["event"] == "retrying rediss://bot:***@r.example:6380/1"


def test_json_mode_is_one_object_per_line() -> None:
    stream = _configure()
    log = structlog.get_logger("parrotbot.daemon")
    log.info("daemon.started", account="poorrichard")
    logging.getLogger("apscheduler.scheduler").info("Scheduler started")
    try:
        1 / 0  # noqa: B018
    except ZeroDivisionError:
        log.exception("job.crashed")

    lines = stream.getvalue().splitlines()
    assert len(lines) == 3  # the traceback stays inside its line
    records = [json.loads(line) for line in lines]
    for record in records:
        assert {"event", "level", "timestamp", "logger"} <= record.keys()
        assert record["timestamp"].endswith("Z")
    assert [r["event"] for r in records] == ["daemon.started", "Scheduler started", "job.crashed"]
    assert [r["logger"] for r in records][:2] == ["parrotbot.daemon", "apscheduler.scheduler"]
    assert "ZeroDivisionError" in records[2]["exception"]


def test_non_secret_text_passes_through_unchanged() -> None:
    stream = _configure()
    text = "Early to bed and early to rise, makes a man healthy, wealthy, and wise."
    structlog.get_logger("parrotbot.posting").info(
        "tweet.posted", text=text, max_new_tokens=40, tokenizer="gpt2", tokens=[1, 2]
    )
    (record,) = _records(stream)
    assert record["text"] == text
    assert record["max_new_tokens"] == 40
    assert record["tokenizer"] == "gpt2"
    assert record["tokens"] == [1, 2]
    assert redact(text) == text
    assert redact("redis://cache:6379/0 token bucket") == "redis://cache:6379/0 token bucket"


def test_secret_named_keys_are_masked() -> None:
    stream = _configure()
    structlog.get_logger("parrotbot.test").info(
        "config.loaded",
        password="p-value",
        api_key="k-value",
        access_token="t-value",
        headers={"Authorization": "x-value", "Accept": "application/json"},
        redis_password=None,
    )
    (record,) = _records(stream)
    assert record["password"] == record["api_key"] == record["access_token"] == MASK
    assert record["headers"] == {"Authorization": MASK, "Accept": "application/json"}
    assert record["redis_password"] is None


def test_env_is_reread_and_short_values_ignored(monkeypatch: pytest.MonkeyPatch) -> None:
    stream = _configure()
    monkeypatch.setenv("BEARER_TOKEN", "rotated-Bearer-777")
    monkeypatch.setenv("REDIS_PASSWORD", "abc")
    structlog.get_logger("parrotbot.test").info("after rotation rotated-Bearer-777 abcdef")
    (record,) = _records(stream)
    assert record["event"] == f"after rotation {MASK} abcdef"


def test_level_applies_to_structlog_and_stdlib() -> None:
    stream = _configure("INFO")
    structlog.get_logger("parrotbot.test").debug("hidden.structlog")
    logging.getLogger("urllib3.connectionpool").debug("hidden stdlib")
    logging.getLogger("urllib3.connectionpool").info("shown stdlib")
    assert [r["event"] for r in _records(stream)] == ["shown stdlib"]
    assert logging.getLogger().level == logging.INFO


def test_configure_twice_does_not_duplicate_handlers() -> None:
    _configure()
    stream = _configure()
    logging.getLogger("tweepy.client").info("once")
    assert [r["event"] for r in _records(stream)] == ["once"]
    assert sum(h.get_name() == "parrotbot" for h in logging.getLogger().handlers) == 1


def test_console_mode_on_a_tty_is_readable_and_redacted() -> None:
    class TTY(io.StringIO):
        def isatty(self) -> bool:
            return True

    stream = TTY()
    configure_logging("DEBUG", stream=stream)
    try:
        raise ValueError(f"bad key {SECRETS['CONSUMER_SECRET']}")
    except ValueError:
        structlog.get_logger("parrotbot.test").exception("console.event", count=3)
    out = stream.getvalue()
    _assert_no_secrets(out)
    assert "console.event" in out and "count" in out
    assert f"ValueError: bad key {MASK}" in out
    with pytest.raises(json.JSONDecodeError):
        json.loads(out.splitlines()[0])


def test_unknown_level_is_rejected() -> None:
    with pytest.raises(ValueError, match="unknown log level"):
        configure_logging("LOUD", stream=io.StringIO())


def test_aws_session_token_and_sigv4_signature_are_redacted() -> None:
    """botocore's DEBUG dumps and presigned URLs carry both; neither is an env value here."""
    stream = _configure()
    url = (
        "https://b.s3.amazonaws.com/jobs/x?X-Amz-Algorithm=AWS4-HMAC-SHA256"
        "&X-Amz-Credential=AKIAEXAMPLE%2F20260101%2Fus-east-1%2Fs3%2Faws4_request"
        "&X-Amz-Security-Token=IQoJb3JpZ2luX2VjEXAMPLEtoken%2Fpart&X-Amz-Expires=3600"
        "&X-Amz-Signature=5d672d79c15b13162d9279b0855cfba6789a8edb4c82c400e06b5924a6f2b5d7"
    )
    boto = logging.getLogger("botocore.endpoint")
    boto.debug("Generated presigned url: %s", url)
    boto.debug(
        "Sending http request: <AWSPreparedRequest headers={'X-Amz-Security-Token': "
        "b'FQoGZXIvYXdzEXAMPLEsessionZZ', 'Authorization': b'AWS4-HMAC-SHA256 Credential=AKIA/x, "
        "SignedHeaders=host, Signature=0a1b2c3d4e5f60718293a4b5c6d7e8f9'}>"
    )
    boto.debug("StringToSign ... Signature=ffee99887766aabbccdd&x=1")

    out = stream.getvalue()
    for leaked in ("IQoJb3JpZ2lu", "5d672d79c15b", "FQoGZXIvYXdz", "0a1b2c3d4e5f", "ffee99887766"):
        assert leaked not in out, out
    first, second, third = (r["event"] for r in _records(stream))
    assert f"X-Amz-Security-Token={MASK}&X-Amz-Expires=3600" in first
    assert first.endswith(f"X-Amz-Signature={MASK}")
    assert f"'X-Amz-Security-Token': b'{MASK}'" in second
    assert third == f"StringToSign ... Signature={MASK}&x=1"


def test_oauthlib_parameter_tuples_are_redacted() -> None:
    """oauthlib logs its parameters as a list of tuples, and a request's repr shows them too."""
    stream = _configure()
    params = [
        ("oauth_nonce", "127683194718372615321700000000"),
        ("oauth_timestamp", "1700000000"),
        ("oauth_consumer_key", "ckNotInEnv123"),
        ("oauth_token", "99-tokNotInEnv"),
        ("oauth_signature", "c2lnTm90SW5FbnY="),
        ("status", "hello"),
    ]
    logging.getLogger("oauthlib.oauth1.rfc5849").debug("Collected params: %s", params)
    structlog.get_logger("parrotbot.test").debug("oauth.params", params=repr(params))
    out = stream.getvalue()
    for _, value in params[:5]:
        assert value not in out, out
    first, second = _records(stream)
    assert f"('oauth_token', '{MASK}')" in first["event"]
    assert "('status', 'hello')" in first["event"]
    assert f"('oauth_consumer_key', '{MASK}')" in second["params"]


_UNCAUGHT = """
import threading
from bot.logging import configure_logging
configure_logging("INFO", json=True)
def boom():
    raise RuntimeError("thread saw oauth_token=tHrEaDsEcReT and redis://:pw-Thread9@h:6379")
worker = threading.Thread(target=boom, name="worker-1")
worker.start()
worker.join()
raise RuntimeError("main saw token {token} at rediss://u:pw-Main77@h:6380")
"""


def test_uncaught_exceptions_in_main_and_threads_are_logged_redacted() -> None:
    """A real process dies of an uncaught exception: both tracebacks are JSON lines, masked."""
    code = _UNCAUGHT.format(token=SECRETS["ACCESS_TOKEN"])
    env = os.environ | SECRETS | {"PYTHONPATH": str(REPO)}
    result = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 1
    for leaked in (SECRETS["ACCESS_TOKEN"], "tHrEaDsEcReT", "pw-Thread9", "pw-Main77"):
        assert leaked not in result.stderr, result.stderr
    thread, main = (json.loads(line) for line in result.stderr.splitlines())
    assert thread["event"] == main["event"] == "process.uncaught_exception"
    assert thread["thread"] == "worker-1" and main["thread"] is None
    assert thread["level"] == main["level"] == "critical"
    assert "RuntimeError: thread saw oauth_token=***" in thread["exception"]
    assert f"RuntimeError: main saw token {MASK} at rediss://u:{MASK}@h:6380" in main["exception"]
