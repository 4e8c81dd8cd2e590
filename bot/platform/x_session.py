"""The `requests` session under tweepy's `Client`: base URL, timeouts and rate-limit bookkeeping.

tweepy hard-codes its API host and sends requests without a timeout. Every request it makes
goes through `session.request`, so this is the one place to send it to the configured base
URL (an emulator in tests, a proxy), to always put a timeout on it, to refuse to call an
endpoint before its rate-limit reset, and to note the reset whenever X says none are left.
"""

from __future__ import annotations

import re
import time
from typing import Any

import requests

from bot import metrics
from bot.platform.ratelimits import DEFAULT_WAIT_SECONDS, RateLimitGate

# The hosts tweepy builds its URLs on (older releases say api.twitter.com).
TWEEPY_HOSTS = ("https://api.twitter.com", "https://api.x.com")
# Numeric segments are ids, except the first one: that is the API version (`/2/...`).
_NUMERIC_SEGMENT = re.compile(r"(?<!^)/\d+(?=/|$)")
_USERNAME_SEGMENT = re.compile(r"/by/username/[^/]+")


def endpoint_name(method: str, url: str) -> str:
    """`GET /2/users/:id/tweets`: X's rate limits are per endpoint, whatever the ids."""
    path = "/" + url.split("://", 1)[-1].split("/", 1)[-1].split("?", 1)[0]
    path = _USERNAME_SEGMENT.sub("/by/username/:username", path)
    return f"{method.upper()} {_NUMERIC_SEGMENT.sub('/:id', path)}"


class XSession(requests.Session):
    def __init__(self, base_url: str, *, timeout: tuple[float, float], gate: RateLimitGate) -> None:
        super().__init__()
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.gate = gate

    def request(self, method: str | bytes, url: str | bytes, *args: Any, **kwargs: Any) -> Any:
        method, url = _text(method), _text(url)
        for host in TWEEPY_HOSTS:
            if url.startswith(host):
                url = self.base_url + url[len(host) :]
                break
        endpoint = endpoint_name(method, url)
        self.gate.check(endpoint)
        if kwargs.get("timeout") is None:
            kwargs["timeout"] = self.timeout
        try:
            response = super().request(method, url, *args, **kwargs)
        except requests.RequestException:
            metrics.X_API_CALLS.labels(endpoint=endpoint, status="error").inc()
            raise
        metrics.X_API_CALLS.labels(endpoint=endpoint, status=str(response.status_code)).inc()
        self._note_limits(endpoint, response)
        return response

    def _note_limits(self, endpoint: str, response: requests.Response) -> None:
        headers = response.headers
        reset_header = headers.get("x-rate-limit-reset")
        if response.status_code == 429:
            reset = float(reset_header) if reset_header else time.time() + DEFAULT_WAIT_SECONDS
            self.gate.record(endpoint, reset, status=429)
        elif headers.get("x-rate-limit-remaining") == "0" and reset_header:
            # The last call of the window went through: the next one would be a 429.
            self.gate.record(endpoint, float(reset_header), status=response.status_code)


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value
