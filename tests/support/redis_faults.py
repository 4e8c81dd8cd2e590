"""Redis having a bad moment, over its own protocol: a loopback TCP proxy in front of Redis.

Clients connect to the proxy's port; every command goes on to the real server unchanged
unless the test armed a fault for it: `fail(command, key, times)` answers the next `times`
commands named `command` (upper case) whose first argument is `key` with an error reply, as
a server in trouble does (`-ERR ...`), without sending them on. The reply comes in order
because redis-py waits for each reply before it sends the next command on a connection
(pipelines excepted: arm no fault on a command that travels in a pipeline). `stall(command,
key, times)` swallows such commands instead and never answers, as a server that hangs does.
`hits` counts the faults served.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections import Counter
from dataclasses import dataclass


@dataclass
class _Fault:
    command: str
    key: str
    times: int
    stall: bool = False


def _parse_command(buffer: bytes) -> tuple[list[bytes], int] | None:
    """One RESP array of bulk strings from the start of `buffer`: (parts, bytes used)."""
    if not buffer:
        return None
    if not buffer.startswith(b"*"):
        raise ValueError(f"not a RESP command: {buffer[:20]!r}")
    end = buffer.find(b"\r\n")
    if end < 0:
        return None
    count, position, parts = int(buffer[1:end]), end + 2, []
    for _ in range(count):
        end = buffer.find(b"\r\n", position)
        if end < 0:
            return None
        length = int(buffer[position + 1 : end])
        start = end + 2
        if len(buffer) < start + length + 2:
            return None
        parts.append(buffer[start : start + length])
        position = start + length + 2
    return parts, position


class RedisFaultProxy:
    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.hits: Counter[str] = Counter()
        self._faults: list[_Fault] = []
        self._lock = threading.Lock()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._closing = threading.Event()

    @property
    def port(self) -> int:
        return self._listener.getsockname()[1]

    def start(self) -> RedisFaultProxy:
        threading.Thread(target=self._accept, name="redis-fault-proxy", daemon=True).start()
        return self

    def stop(self) -> None:
        self._closing.set()
        self._listener.close()

    def fail(self, command: str, key: str, times: int = 1) -> None:
        with self._lock:
            self._faults.append(_Fault(command.upper(), key, times))

    def stall(self, command: str, key: str, times: int = 1) -> None:
        with self._lock:
            self._faults.append(_Fault(command.upper(), key, times, stall=True))

    def _take_fault(self, parts: list[bytes]) -> _Fault | None:
        name = parts[0].decode(errors="replace").upper()
        key = parts[1].decode(errors="replace") if len(parts) > 1 else ""
        with self._lock:
            for fault in self._faults:
                if fault.times > 0 and fault.command == name and fault.key == key:
                    fault.times -= 1
                    self.hits[name] += 1
                    return fault
        return None

    def _accept(self) -> None:
        while not self._closing.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            server = socket.create_connection(self.target)
            threading.Thread(target=self._upstream, args=(client, server), daemon=True).start()
            threading.Thread(target=self._downstream, args=(server, client), daemon=True).start()

    def _upstream(self, client: socket.socket, server: socket.socket) -> None:
        """Client to server, command by command, answering armed faults in its place."""
        buffer = b""
        try:
            while chunk := client.recv(65536):
                buffer += chunk
                while parsed := _parse_command(buffer):
                    parts, used = parsed
                    raw, buffer = buffer[:used], buffer[used:]
                    if fault := self._take_fault(parts):
                        if not fault.stall:
                            client.sendall(b"-ERR injected by the test's fault proxy\r\n")
                    else:
                        server.sendall(raw)
        except OSError:
            pass
        finally:
            _close(client, server)

    def _downstream(self, server: socket.socket, client: socket.socket) -> None:
        try:
            while chunk := server.recv(65536):
                client.sendall(chunk)
        except OSError:
            pass
        finally:
            _close(client, server)


def _close(*sockets: socket.socket) -> None:
    for sock in sockets:
        with contextlib.suppress(OSError):
            sock.close()
