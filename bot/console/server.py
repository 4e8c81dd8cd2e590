"""`ConsoleServer`: the console app under uvicorn, on a loopback port, in a daemon thread.

The daemon serves the console beside its own work, so the server must not take the main
thread or its signals: uvicorn installs signal handlers only when it runs in the main thread
(`Server.capture_signals`), and here it never does; the daemon's own handlers stay in charge
and `stop()` ends the server. The socket is bound in `start()` itself, so a port clash is an
`OSError` there (as with the health server) and port 0 is known at once.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable
from typing import Any

import structlog

from bot.config import BotConfig
from bot.console.auth import load_or_create_token, token_path
from bot.state import BotState

log = structlog.get_logger(__name__)

STOP_SECONDS = 5.0
# Open connections (an htmx poll's keep-alive) get this long to finish when the server stops.
GRACEFUL_SECONDS = 2


class ConsoleServer:
    """Constructed idle; `start()` reads the token, binds, serves, and logs where it listens
    (the login link itself, which holds the token, is `login_url`, for a terminal only).

    `config` is the config or a callable returning the live one (the daemon applies edits
    while it runs); `state_factory` makes the `BotState` the pages read, once, at start.
    """

    def __init__(
        self,
        config: BotConfig | Callable[[], BotConfig],
        state_factory: Callable[[], BotState],
    ) -> None:
        self._config = config
        self._state_factory = state_factory
        self._server: Any = None
        self._thread: threading.Thread | None = None
        self._socket: socket.socket | None = None
        self.port: int | None = None
        self.login_url: str | None = None

    def _settings(self) -> BotConfig:
        return self._config() if callable(self._config) else self._config

    def start(self) -> int:
        """Serve from a daemon thread; returns the port (the chosen one when `console.port`
        is 0). Raises OSError when the port cannot be bound."""
        import uvicorn

        from bot.console.app import build_app

        settings = self._settings()
        host, port = settings.console.host, settings.console.port
        token = load_or_create_token(settings.data_dir)
        app = build_app(self._config, self._state_factory(), token)
        self._socket = _bind(host, port)
        self.port = self._socket.getsockname()[1]
        shown_host = f"[{host}]" if ":" in host else host
        self.login_url = f"http://{shown_host}:{self.port}/login?token={token}"
        server_config = uvicorn.Config(
            app,
            log_config=None,  # the process's logging (structlog) stays as configured
            access_log=False,
            lifespan="off",
            timeout_graceful_shutdown=GRACEFUL_SECONDS,
        )
        self._server = uvicorn.Server(server_config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [self._socket]}, name="console", daemon=True
        )
        self._thread.start()
        # The token is a credential: never in a log line (logs are shipped and kept). The CLI
        # shows the whole login link on the operator's terminal (`login_url`).
        log.info(
            "console.listening",
            url=f"http://{shown_host}:{self.port}/",
            login_token_in=str(token_path(settings.data_dir)),
        )
        return self.port

    def stop(self) -> None:
        """Stop serving and close the socket; waits at most STOP_SECONDS for the thread."""
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(STOP_SECONDS)
            if self._thread.is_alive():
                log.warning("console.stop_timed_out", seconds=STOP_SECONDS)
        if self._socket is not None:
            self._socket.close()
        self._server = self._thread = self._socket = None
        log.info("console.stopped")

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()


def _bind(host: str, port: int) -> socket.socket:
    """A listening socket on host:port; listening before uvicorn's loop starts, so a client
    that connects at once waits in the backlog rather than being refused."""
    family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(128)
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(False)
    return sock
