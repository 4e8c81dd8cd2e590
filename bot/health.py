"""/healthz and /metrics on a loopback port, for a supervisor and a Prometheus scraper.

Healthy means the daemon can do its job right now: Redis answers, a model is serving and
this daemon's scheduler runs (a standby daemon is alive but not healthy, and says why).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import structlog
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class Health:
    redis: bool
    model_version: str | None
    scheduler_running: bool

    @property
    def problems(self) -> list[str]:
        found = []
        if not self.redis:
            found.append("redis does not answer")
        if self.model_version is None:
            found.append("no model loaded")
        if not self.scheduler_running and self.redis:
            found.append("scheduler not running (standby: another daemon holds the lease)")
        elif not self.scheduler_running:
            found.append("scheduler not running (the lease needs Redis)")
        return found


class HealthServer:
    """Constructed idle; `start()` binds and serves from a daemon thread."""

    def __init__(self, host: str, port: int, probe: Callable[[], Health]) -> None:
        self.host = host
        self.port = port
        self.probe = probe
        self._server: ThreadingHTTPServer | None = None

    def start(self) -> int:
        probe = self.probe

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path == "/healthz":
                    health = probe()
                    problems = health.problems
                    body = json.dumps(
                        {
                            "status": "ok" if not problems else "unavailable",
                            "problems": problems,
                            "model_version": health.model_version,
                        }
                    ).encode()
                    self._send(200 if not problems else 503, "application/json", body)
                elif self.path == "/metrics":
                    self._send(200, CONTENT_TYPE_LATEST, generate_latest())
                else:
                    self._send(404, "text/plain", b"not found: try /healthz or /metrics\n")

            def _send(self, status: int, content_type: str, body: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                log.debug("health.request", line=format % args)

        self._server = ThreadingHTTPServer((self.host, self.port), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, name="health", daemon=True).start()
        log.info("health.listening", url=f"http://{self.host}:{self.port}/healthz")
        return self.port

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
