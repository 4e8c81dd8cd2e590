"""Keeping TensorFlow's C++ start-up chatter out of the log unless the log is at DEBUG.

On import and on first use TensorFlow's C++ side writes straight to file descriptor 2: oneDNN
and CPU-feature notices, "Could not find cuda drivers", "failed call to cuInit" on a host
without a GPU. They are not our log format and they read like faults. `TF_CPP_MIN_LOG_LEVEL`
(read by TensorFlow once, when it loads) silences most of them; a few are written by absl
before TensorFlow applies that level, so while TensorFlow loads, descriptor 2 also goes
through a filter that drops lines in absl's native format and passes everything else on.
Set `TF_CPP_MIN_LOG_LEVEL=0` (or log at DEBUG, before TensorFlow is imported) to see it all.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress

# 3: errors too. A missing GPU is reported as an error ("failed call to cuInit") though the
# CPU is the expected device here; a real TensorFlow failure still raises in Python.
QUIET_TF_LOG_LEVEL = "3"
# absl/glog native lines: `I0000 00:00:1796313319.821094   15433 cudart_stub.cc:31] …`,
# absl's notice that it is not initialised yet, and the CPU-feature notice's second line.
_NATIVE_CHATTER = re.compile(
    r"^(?:[IWEF]\d{4} \d\d:\d\d:\d+\.\d+\s+\d+ [\w.\-/]+:\d+\]"
    r"|WARNING: All log messages before absl::InitializeLog\(\) is called"
    r"|To enable the following instructions:)"
)
_JOIN_SECONDS = 10.0


def is_native_chatter(line: str) -> bool:
    """True for a line TensorFlow's C++ side (absl) wrote, not one of ours."""
    return bool(_NATIVE_CHATTER.match(line))


@contextmanager
def quiet_tensorflow() -> Iterator[None]:
    """Import TensorFlow (or Keras) inside this block to keep its start-up notices out.

    At DEBUG (the root logger's level when the block starts) nothing is hidden, and neither
    is it when `TF_CPP_MIN_LOG_LEVEL` is already set to 0 in the environment.
    """
    if not logging.getLogger().isEnabledFor(logging.DEBUG):
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", QUIET_TF_LOG_LEVEL)
    if os.environ.get("TF_CPP_MIN_LOG_LEVEL", "0").strip() in ("", "0"):
        yield
        return
    with _filtered_stderr_fd(is_native_chatter):
        yield


@contextmanager
def _filtered_stderr_fd(drop: Callable[[str], bool]) -> Iterator[None]:
    """Route descriptor 2 through a pipe whose reader forwards each line `drop` refuses.

    Other threads' log lines written meanwhile pass through unchanged and in order. The
    reader is a thread: a temporary file would hold them back until the block ends.
    """
    try:
        _flush_stderr()
        saved = os.dup(2)
    except OSError:  # no descriptor 2 (a detached process): nothing to filter
        yield
        return
    read_end, write_end = os.pipe()
    os.dup2(write_end, 2)
    os.close(write_end)

    def forward() -> None:
        with os.fdopen(read_end, "rb") as pipe:
            for raw in pipe:
                if not drop(raw.decode("utf-8", errors="replace")):
                    os.write(saved, raw)

    reader = threading.Thread(target=forward, name="tf-stderr-filter", daemon=True)
    reader.start()
    try:
        yield
    finally:
        _flush_stderr()
        os.dup2(saved, 2)  # closes the pipe's last write end: the reader sees EOF
        reader.join(_JOIN_SECONDS)
        if not reader.is_alive():
            os.close(saved)


def _flush_stderr() -> None:
    """Lines Python buffered so far belong before (or inside) the filtered stretch."""
    if sys.stderr is not None:
        with suppress(OSError, ValueError):  # closed or detached: nothing buffered to lose
            sys.stderr.flush()
