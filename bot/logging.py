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
import re
import sys
import threading
import traceback
from types import TracebackType
from typing import Any, TextIO

import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

from infra.redaction import MASK, SECRET_ENV_VARS, redact

__all__ = [
    "MASK",
    "SECRET_ENV_VARS",
    "configure_logging",
    "install_excepthooks",
    "redact",
    "redact_secrets",
]

_HANDLER_NAME = "parrotbot"  # marks our root handler so a second configure replaces it
# `token` only as a whole word segment: `access_token`, not `max_new_tokens` or `tokenizer`.
_SECRET_KEY = re.compile(
    r"password|passwd|secret|authorization|api_?key|(?:^|[_\-])token(?:$|[_\-])", re.IGNORECASE
)
_STRUCTLOG_META = frozenset({"_record", "_from_structlog"})
# Libraries that narrate routine work at INFO (APScheduler: two lines per job run, every few
# seconds). Above DEBUG only their warnings and errors are shown.
_CHATTY_LIBRARIES = ("apscheduler",)


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


def _log_uncaught(
    exc_type: type[BaseException],
    exc: BaseException | None,
    tb: TracebackType | None,
    thread: threading.Thread | None = None,
) -> None:
    """Log an exception nobody caught through the same chain (so the same redaction).

    Python's default hooks print the raw traceback to stderr, and a traceback's message can
    hold a token or a Redis URL. When logging itself fails (interpreter shutdown, a closed
    stream), the traceback is still printed, redacted.
    """
    exc_info = (exc_type, exc if exc is not None else exc_type(), tb)
    try:
        structlog.get_logger("parrotbot.uncaught").critical(
            "process.uncaught_exception",
            thread=None if thread is None else thread.name,
            exc_info=exc_info,
        )
    except Exception:  # the last word: never raise from an excepthook
        text = "".join(traceback.format_exception(*exc_info))
        if sys.__stderr__ is not None:
            sys.__stderr__.write(redact(text))


def _thread_excepthook(args: threading.ExceptHookArgs) -> None:
    if args.exc_type is SystemExit:  # as the default hook: a thread's sys.exit() is quiet
        return
    _log_uncaught(args.exc_type, args.exc_value, args.exc_traceback, args.thread)


def install_excepthooks() -> None:
    """Route uncaught exceptions, in the main thread and in others, through `_log_uncaught`."""
    sys.excepthook = _log_uncaught
    threading.excepthook = _thread_excepthook


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
    install_excepthooks()

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
