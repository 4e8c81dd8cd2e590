"""A model worker: one process that loads one published version and samples from it.

The daemon starts one per version it serves (``bot.model_worker``). Serving from a process
of its own instead of the daemon's thread keeps four things out of the process that holds
the lease and the X credentials: the framework's interpreter-lock time (a version loading in
a thread held the serving thread off for a switch interval at a time), its memory, its
start-up (the daemon imports no framework at all), and a native crash.

The protocol is a subprocess's pipes, not `multiprocessing`: a subprocess gets an explicit,
scrubbed environment (``training.child_process``) and a command line an operator can read in
``ps``, and its one job needs no shared objects. Each message is a frame: a 4-byte
big-endian length, then that many bytes of a UTF-8 JSON object (JSON, not pickle: the
payloads are texts and numbers, and neither side should run code the other sent).

- worker → daemon, once: ``{"ready": {"manifest": "<manifest.json text>", "smoke": "..."}}``
  after the version verified, loaded and passed the smoke generation; or
  ``{"failed": "<ExceptionType>: <message>"}``, after which the worker exits.
- daemon → worker: ``{"generate": {"seeds": [...], "options": {...}}}``, answered by
  ``{"texts": [...]}`` or ``{"error": "<ExceptionType>: <message>"}`` (a bad option).
- The daemon closing the worker's stdin is the stop signal. It is also the lifeline: a
  thread polls stdin for the hang-up from the first moment, so when the daemon dies (even by
  SIGKILL) the kernel closes the pipe and the worker exits at once, mid-load, mid-request or
  idle. (``PR_SET_PDEATHSIG`` would fire when the *thread* that started the worker ends, and
  the daemon starts workers from short-lived loader threads.)

Replies go to a private copy of descriptor 1; descriptor 1 itself is pointed at stderr at
start, so a library that prints cannot corrupt the stream.

The load runs in a thread at a lower OS priority while the old worker still serves; the
main thread, which answers requests afterwards, keeps the process's own priority (Linux
priorities are per thread, and an unprivileged thread can never lower its niceness again),
and so do the framework's compute threads, which the main thread starts (see ``_Worker``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import select
import struct
import sys
import threading
from pathlib import Path
from typing import Any, BinaryIO

from training.child_process import configure_logging

_HEADER = struct.Struct(">I")
# A frame larger than this is a protocol error, not a big batch (256 tweets are ~100 KB).
MAX_FRAME_BYTES = 64 * 1024 * 1024
SMOKE_SAMPLES = 4


class ProtocolError(Exception):
    """A frame that is not what the protocol allows; the message says what was read."""


def write_frame(stream: BinaryIO, message: dict[str, Any]) -> None:
    """Send one message and flush it."""
    body = json.dumps(message, ensure_ascii=False).encode("utf-8")
    stream.write(_HEADER.pack(len(body)) + body)
    stream.flush()


def read_frame(stream: BinaryIO) -> dict[str, Any] | None:
    """The next message, or None at a clean end of stream (the other side closed it)."""
    header = _read_exactly(stream, _HEADER.size)
    if header is None:
        return None
    (length,) = _HEADER.unpack(header)
    if length > MAX_FRAME_BYTES:
        raise ProtocolError(f"frame of {length} bytes is over the {MAX_FRAME_BYTES} limit")
    body = _read_exactly(stream, length)
    if body is None:
        raise ProtocolError(f"stream ended inside a frame of {length} bytes")
    message = json.loads(body.decode("utf-8"))
    if not isinstance(message, dict):
        raise ProtocolError(f"frame is a JSON {type(message).__name__}, not an object")
    return message


def _read_exactly(stream: BinaryIO, size: int) -> bytes | None:
    chunks: list[bytes] = []
    remaining = size
    while remaining:
        chunk = stream.read(remaining)
        if not chunk:
            if chunks:
                raise ProtocolError(f"stream ended {remaining} bytes short of a {size}-byte read")
            return None
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)


def smoke_test(model: Any) -> str:
    """A short batch from a freshly loaded model: it must generate, and not only empty texts.

    Weights full of NaN (what an fp16 overflow leaves behind) load fine and then sample
    nothing but end-of-tweet tokens; this is where such a version is caught. It also traces
    the sampling step, so the first real request does not pay for that.
    """
    samples = model.generate([""] * SMOKE_SAMPLES, max_length=40, temperature=1.0)
    if len(samples) != SMOKE_SAMPLES or not all(isinstance(s, str) for s in samples):
        raise TypeError(f"smoke generation returned {samples!r:.80}, not {SMOKE_SAMPLES} texts")
    if not any(sample.strip() for sample in samples):
        raise ValueError("smoke generation produced only empty texts")
    return max(samples, key=len)


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


class _Worker:
    """The worker's threads: the loader (nicer, once), the main one (serves), the lifeline.

    The load is split where the framework creates its compute threads: the loader verifies
    the version and imports the framework at its lower priority, the main thread then starts
    the framework's thread pools (so they get the main thread's priority, see
    :func:`training.models.start_thread_pools`), and the loader builds the model and runs
    the smoke generation.
    """

    def __init__(self, kind: str, folder: Path, niceness: int, out: BinaryIO) -> None:
        self.kind = kind
        self.folder = folder
        self.niceness = niceness
        self.out = out
        self.model: Any = None
        self.imported = threading.Event()
        self.pools_started = threading.Event()
        self.loaded = threading.Event()

    def load(self) -> None:
        from training.models import import_framework, load_model
        from training.publish import verify_version

        _raise_thread_niceness(self.niceness)
        try:
            manifest = verify_version(self.folder, expected_kind=self.kind)
            import_framework(self.kind)
            self.imported.set()
            self.pools_started.wait()
            self.model = load_model(self.kind, self.folder)
            sample = smoke_test(self.model)
        except BaseException as exc:  # reported, then the worker ends: the version is refused
            self._fail(exc)
        write_frame(self.out, {"ready": {"manifest": manifest.to_json(), "smoke": sample}})
        self.loaded.set()

    def start_pools_when_imported(self) -> None:
        """Run on the main thread: the framework's thread pools, at the serving priority."""
        from training.models import start_thread_pools

        self.imported.wait()
        try:
            start_thread_pools(self.kind)
        except BaseException as exc:
            self._fail(exc)
        self.pools_started.set()

    def _fail(self, exc: BaseException) -> None:
        write_frame(self.out, {"failed": _describe(exc)})
        os._exit(3)

    def serve(self, requests: BinaryIO) -> None:
        """Answer requests until stdin closes (requests sent before "ready" wait in the pipe)."""
        self.loaded.wait()
        while (message := read_frame(requests)) is not None:
            request = message.get("generate")
            if not isinstance(request, dict):
                raise ProtocolError(f"unknown request {sorted(message)}")
            try:
                texts = self.model.generate(request["seeds"], **request["options"])
            except (TypeError, ValueError) as exc:  # a bad option; the model still serves
                write_frame(self.out, {"error": _describe(exc)})
                continue
            write_frame(self.out, {"texts": texts})


def _watch_lifeline(requests: BinaryIO) -> None:
    """Exit the moment the daemon's end of stdin closes, whatever the other threads do.

    Polls for the hang-up only (no data is read), so the main thread can be loading or
    answering; a daemon killed by SIGKILL closes the pipe, and so ends its workers.
    """
    poller = select.poll()
    poller.register(requests.fileno(), 0)  # POLLHUP and POLLERR are always reported
    while True:
        for _fd, event in poller.poll():
            if event & (select.POLLHUP | select.POLLERR | select.POLLNVAL):
                os._exit(0)


def _raise_thread_niceness(increment: int) -> None:
    if increment <= 0:
        return
    try:
        tid = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, tid, os.getpriority(os.PRIO_PROCESS, tid) + increment)
    except (AttributeError, OSError):  # not Linux, or a sandbox that forbids it
        pass


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.worker", description=__doc__)
    parser.add_argument("kind", help="the model kind the version must be")
    parser.add_argument("folder", type=Path, help="the published version's folder")
    parser.add_argument("--niceness", type=int, default=0, help="added to the loader's niceness")
    parser.add_argument("--log-level", default="INFO", help="the daemon's log level")
    args = parser.parse_args(argv)
    configure_logging(args.log_level)
    # Our replies get a private descriptor; whatever a library prints goes to stderr.
    out = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    worker = _Worker(args.kind, args.folder, args.niceness, out)
    threading.Thread(target=_watch_lifeline, args=(sys.stdin.buffer,), daemon=True).start()
    threading.Thread(target=worker.load, name="load", daemon=True).start()
    worker.start_pools_when_imported()
    with contextlib.suppress(BrokenPipeError):  # the daemon went away while we answered
        worker.serve(sys.stdin.buffer)
    # stdin closed (a stop, or the daemon died): leave at once, without framework teardown.
    os._exit(0)


if __name__ == "__main__":
    raise SystemExit(main())
