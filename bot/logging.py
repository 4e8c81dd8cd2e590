"""One logging setup for the whole process: structlog in front, stdlib behind, secrets masked.

Entry points (the CLI, the daemon, the launcher) call `configure_logging` once. Library code only
does `structlog.get_logger(__name__)` and never installs handlers. Third-party libraries that log
through the stdlib (tweepy, urllib3, apscheduler, requests_oauthlib, botocore) are routed through
the same processor chain, so every line has one format and passes through one redaction step:
tweepy and requests_oauthlib log full `Authorization` headers at DEBUG, and a traceback can
carry a Redis URL or a token, so masking cannot be left to each call site.
"""

from __future__ import annotations

import logging
import os
import re
import sys
from typing import Any, TextIO
from urllib.parse import quote

import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

from bot.config import SECRET_ENV_VARS as X_CREDENTIAL_ENV_VARS

# The X credentials the config reads, plus what boto3 and a Redis URL may carry.
SECRET_ENV_VARS = (
    *X_CREDENTIAL_ENV_VARS,
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "REDIS_PASSWORD",
)
MASK = "***"
_MIN_SECRET_LEN = 4  # shorter values (a "0", a "dev") would mask half of every line
_HANDLER_NAME = "parrotbot"  # marks our root handler so a second configure replaces it

# No leading \b: in `\r\nAuthorization` or `%26oauth_token%3D` the name follows a letter or digit.
# `%3D`/`%26` are `=`/`&` inside the percent-encoded OAuth signature base string.
_OAUTH_PARAM = re.compile(
    r"""(oauth_\w+(?:['"]?\s*[:=]\s*|%3D))("[^"]*"|'[^']*'|(?:(?!%26)[^\s&,;"'\\])+)""",
    re.IGNORECASE,
)
_AUTH_HEADER = re.compile(
    r"""((?:proxy-)?authorization['"]?\s*[:=]\s*)('[^']*'|"[^"]*"|[^\r\n\\]+)""",
    re.IGNORECASE,
)
_BEARER = re.compile(r"\b(Bearer\s+)[A-Za-z0-9\-._~+/%]{8,}=*")
# Any scheme's user:password@ (redis://, rediss://, amqp://, https://): the password goes.
_URL_PASSWORD = re.compile(r"""\b([a-z][a-z0-9+.\-]*://[^\s:/@'"]*:)[^\s@'"]+@""", re.IGNORECASE)
# `token` only as a whole word segment: `access_token`, not `max_new_tokens` or `tokenizer`.
_SECRET_KEY = re.compile(
    r"password|passwd|secret|authorization|api_?key|(?:^|[_\-])token(?:$|[_\-])", re.IGNORECASE
)
_STRUCTLOG_META = frozenset({"_record", "_from_structlog"})
# Libraries that narrate routine work at INFO (APScheduler: two lines per job run, every few
# seconds). Above DEBUG only their warnings and errors are shown.
_CHATTY_LIBRARIES = ("apscheduler",)


def _quoted_mask(match: re.Match[str]) -> str:
    """Keep the key and the quote style so the masked text still reads like the original."""
    value = match.group(2)
    quote_char = value[0] if value[:1] in ("'", '"') else ""
    return f"{match.group(1)}{quote_char}{MASK}{quote_char}"


def _env_secrets() -> tuple[str, ...]:
    """The current secret values, read at call time so rotated credentials are masked too.

    Eight dict lookups per call are cheap next to rendering a line. Percent-encoded forms are
    included because OAuth signs and sends values URL-encoded. Longest first, so a secret that
    contains another is masked whole.
    """
    values: set[str] = set()
    for name in SECRET_ENV_VARS:
        value = os.environ.get(name, "")
        if len(value) >= _MIN_SECRET_LEN:
            values.update((value, quote(value, safe="")))
    return tuple(sorted(values, key=len, reverse=True))


def redact(text: str) -> str:
    """Mask credentials in free text: env secret values, URL passwords, auth headers, OAuth params.

    Safe to call on anything about to be shown or stored (exception texts, HTTP error bodies).
    It over-masks rather than under-masks: a whole `Authorization` value goes, scheme included.
    """
    for secret in _env_secrets():
        text = text.replace(secret, MASK)
    text = _OAUTH_PARAM.sub(_quoted_mask, text)
    text = _AUTH_HEADER.sub(_quoted_mask, text)
    text = _BEARER.sub(rf"\g<1>{MASK}", text)
    return _URL_PASSWORD.sub(rf"\g<1>{MASK}@", text)


def _redact_value(key: object, value: Any) -> Any:
    """Mask one event-dict value, recursing into containers; secret-named keys lose their value."""
    blank = value is None or (isinstance(value, str) and not value)  # "unset" is worth seeing
    if isinstance(key, str) and not blank and _SECRET_KEY.search(key):
        return MASK
    if isinstance(value, str):
        return redact(value)
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, dict):
        return {k: _redact_value(k, v) for k, v in value.items()}
    if type(value) in (list, tuple):  # exact types: a namedtuple can't be rebuilt from an iterable
        return type(value)(_redact_value(None, v) for v in value)
    # Renderers fall back to repr() for other objects (header dicts, exceptions, requests);
    # rendering it here means that text is masked too.
    return redact(repr(value))


def redact_secrets(_logger: WrappedLogger, _method: str, event_dict: EventDict) -> EventDict:
    """structlog processor: `redact` every value of the event, the rendered `exception` included.

    It must run after `format_exc_info` (so the traceback is already text) and right before the
    renderer (so nothing added later escapes it).
    """
    return {k: v if k in _STRUCTLOG_META else _redact_value(k, v) for k, v in event_dict.items()}


def _shared_processors() -> list[Processor]:
    """The chain both structlog events and stdlib records go through, redaction last."""
    return [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.StackInfoRenderer(),
        # Tracebacks become plain text here so redaction sees them; pretty (rich) tracebacks
        # would render frame locals later, after redaction, and could print a token.
        structlog.processors.format_exc_info,
        redact_secrets,
    ]


def configure_logging(
    level: str = "INFO", *, json: bool | None = None, stream: TextIO | None = None
) -> None:
    """Configure structlog and the stdlib root logger; call once, from an entry point.

    JSON lines when `stream` is not a terminal (services, files, CI) or `json=True`; a readable
    console format on a terminal. Calling it again replaces the previous setup (tests, a CLI
    that re-reads its flags) instead of stacking a second handler.
    """
    stream = sys.stderr if stream is None else stream
    levels = logging.getLevelNamesMapping()
    if level.upper() not in levels:
        raise ValueError(f"unknown log level {level!r}; use one of {sorted(levels)}")
    if json is None:
        isatty = getattr(stream, "isatty", None)
        json = not (callable(isatty) and isatty())
    renderer: Processor = (
        structlog.processors.JSONRenderer()
        if json
        else structlog.dev.ConsoleRenderer(
            colors=True, exception_formatter=structlog.dev.plain_traceback
        )
    )
    shared = _shared_processors()
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
    )
    handler = logging.StreamHandler(stream)
    handler.set_name(_HANDLER_NAME)
    handler.setFormatter(formatter)

    root = logging.getLogger()
    for old in [h for h in root.handlers if h.get_name() == _HANDLER_NAME]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(levels[level.upper()])
    for name in _CHATTY_LIBRARIES:
        quiet = levels[level.upper()] > logging.DEBUG
        logging.getLogger(name).setLevel(logging.WARNING if quiet else logging.NOTSET)
    logging.captureWarnings(True)

    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            structlog.stdlib.PositionalArgumentsFormatter(),
            *shared,
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        # Uncached, so `structlog.testing.capture_logs()` still sees loggers created earlier.
        cache_logger_on_first_use=False,
    )
