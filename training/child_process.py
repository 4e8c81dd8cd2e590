"""What a framework child process starts with: its environment and its log format.

The children are the trainer and the model workers. Both run TensorFlow or PyTorch on files
the daemon did not write and need no X, AWS or Redis access, so they inherit an allow-list of
the daemon's environment, never the whole of it: a native crash dump, a library that logs its
environment or a compromised checkpoint then has no credential to show. It lives in
`training/` because every layer starts such children (`infra.backends.local` the trainer,
`bot.model_worker` the workers).
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Mapping

import structlog

from training.tf_quiet import QUIET_TF_LOG_LEVEL

# What a child may inherit: the OS basics, Python's own, and the ML runtimes' knobs (threads,
# devices, offline hubs, distributed ranks). Nothing else.
_ALLOWED_NAMES = frozenset(
    {"PATH", "HOME", "USER", "LOGNAME", "SHELL", "LANG", "LANGUAGE", "TZ", "TERM", "TMPDIR"}
    | {"TEMP", "TMP", "VIRTUAL_ENV", "LD_LIBRARY_PATH", "SSL_CERT_FILE", "SSL_CERT_DIR"}
    | {"REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"}
    | {"WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"}
)
_ALLOWED_PREFIXES = (
    "LC_", "PYTHON", "CUDA_", "NVIDIA_", "OMP_", "MKL_", "OPENBLAS_", "KMP_", "TF_", "XLA_",
    "TORCH", "NCCL_", "HF_", "TRANSFORMERS_", "KERAS_", "XDG_",
)  # fmt: skip
# Even under an allowed prefix (HF_TOKEN, a TF_… password): a name that says secret stays out.
# Every credential the bot reads (X's keys and tokens, AWS's, a Redis password) says so.
_SECRET_NAME_PARTS = ("TOKEN", "SECRET", "PASSWORD", "PASSWD", "CREDENTIAL", "KEY")


def framework_environment(parent: Mapping[str, str], *, debug: bool = False) -> dict[str, str]:
    """The allowed part of ``parent``, with TensorFlow's C++ start-up notices silenced.

    A child's stderr ends up in a log (the trainer's log file, whose tail the launcher stores;
    the daemon's own log for a worker); oneDNN notices and a failed cuInit on a host without a
    GPU would fill it. They are kept at DEBUG, or when ``parent`` sets TF_CPP_MIN_LOG_LEVEL.
    """
    env = {
        name: value
        for name, value in parent.items()
        if (name in _ALLOWED_NAMES or name.startswith(_ALLOWED_PREFIXES))
        and not any(part in name.upper() for part in _SECRET_NAME_PARTS)
    }
    if not debug:
        env.setdefault("TF_CPP_MIN_LOG_LEVEL", QUIET_TF_LOG_LEVEL)
    return env


def configure_logging(level: str = "DEBUG") -> None:
    """JSON lines on stderr at ``level`` and above: the launcher parses them, stdout stays free.

    The model workers (`training.worker`) log the same way, at the daemon's level.
    """
    structlog.configure(
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(),
        ],
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
    )
