"""An X API v2 emulator: a real HTTP server on 127.0.0.1 for tweepy to talk to in tests.

It serves the endpoints the bot uses with X's shapes (`data`, `includes`, `meta`, `errors`,
problem bodies), sends `x-rate-limit-*` headers and 429s, enforces the reply rule, and can
inject faults: latency, 5xx before or after a post is created, a post created whose answer
is lost (the connection is closed without a response). Every request is recorded, and hooks
run when a request arrives and when a post is committed (the exactly-once test kills the
daemon there). It runs in a thread of the pytest process, so what it holds survives the
daemons it serves being killed.

OAuth: an `Authorization` header is required; for user context its `oauth_token` names the
account (signatures are not checked). A bearer token is app context.
"""

from __future__ import annotations

import json
import math
import random
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal
from urllib.parse import parse_qs, unquote, urlsplit

from tests.support.x_emulator import handlers
from tests.support.x_emulator.world import Account, Post, World

ME = "GET /2/users/me"
USER_BY_NAME = "GET /2/users/by/username/:username"
TIMELINE = "GET /2/users/:id/tweets"
MENTIONS = "GET /2/users/:id/mentions"
CREATE = "POST /2/tweets"

_ROUTES = [
    ("GET", re.compile(r"^/2/users/me$"), ME),
    ("GET", re.compile(r"^/2/users/by/username/(?P<username>[^/]+)$"), USER_BY_NAME),
    ("GET", re.compile(r"^/2/users/(?P<id>\d+)/tweets$"), TIMELINE),
    ("GET", re.compile(r"^/2/users/(?P<id>\d+)/mentions$"), MENTIONS),
    ("POST", re.compile(r"^/2/tweets$"), CREATE),
]
_OAUTH_REQUIRED = {"oauth_consumer_key", "oauth_token", "oauth_signature", "oauth_nonce",
                   "oauth_timestamp", "oauth_signature_method"}  # fmt: skip
WINDOW_SECONDS = 900

FaultKind = Literal["latency", "status", "lost_response", "status_after_commit"]
# A hook returning True at "received" drops the request unanswered and unprocessed, as if
# the connection broke before X read it.
Hook = Callable[[str, "Request"], bool | None]


@dataclass
class Request:
    method: str
    path: str
    endpoint: str
    query: dict[str, str]
    body: Any
    headers: dict[str, str]
    at: float
    principal: str | None = None  # "user:<id>" or "app"
    status: int | None = None  # None: no answer was sent (a lost response)
    post_id: str | None = None  # the post this request created


@dataclass
class Fault:
    """`latency` sleeps `seconds` first; `status` answers `status` before anything happens
    (with X's problem body; `detail` as X words it, e.g. a 403 "You are not allowed to create
    a Tweet with duplicate content."); `lost_response` creates the post and closes the
    connection without an answer; `status_after_commit` creates the post and answers
    `status` anyway."""

    kind: FaultKind
    status: int = 503
    seconds: float = 0.0
    detail: str | None = None
    times: int | None = 1  # None: every matching request (with `probability`)
    probability: float = 1.0


@dataclass
class _Window:
    limit: int
    remaining: int
    reset: int


@dataclass
class XEmulator:
    seed: int = 0
    limits: dict[str, int] = field(default_factory=dict)  # endpoint -> calls per window
    world: World = field(default_factory=World)
    requests: list[Request] = field(default_factory=list)
    hooks: list[Hook] = field(default_factory=list)
    revoked_tokens: set[str] = field(default_factory=set)
    read_only_tokens: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.lock = threading.RLock()
        self.random = random.Random(self.seed)
        self._faults: dict[str, list[Fault]] = {}
        self._windows: dict[tuple[str, str], _Window] = {}
        self._server: ThreadingHTTPServer | None = None

    # --- lifecycle ---------------------------------------------------------------------
    def start(self) -> XEmulator:
        emulator = self

        class Handler(_Handler):
            pass

        Handler.emulator = emulator
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(
            target=self._server.serve_forever, args=(0.05,), name="x-emulator", daemon=True
        ).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    @property
    def url(self) -> str:
        assert self._server is not None, "start() the emulator first"
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    # --- the test's controls -------------------------------------------------------------
    def add_user(self, username: str, access_token: str | None = None) -> Account:
        with self.lock:
            return self.world.add_account(username, access_token)

    def add_post(self, author: Account, text: str, **options: Any) -> Post:
        with self.lock:
            return self.world.add_post(author, text, **options)

    def add_retweet(self, author: Account, original: Post) -> Post:
        """`author` retweets `original` (text `RT @<original's author>: …`, type retweeted)."""
        with self.lock:
            return self.world.add_retweet(author, original)

    def add_quote(
        self, author: Account, quoted: Post, text: str, *, reply_to: Post | None = None
    ) -> Post:
        """`author` quotes `quoted` with their own `text` (X appends the quoted post's link)."""
        with self.lock:
            return self.world.add_quote(author, quoted, text, reply_to=reply_to)

    def delete_post(self, post_id: str) -> None:
        """The author deleted the post: it is no longer served, and replies to it fail."""
        with self.lock:
            self.world.posts.pop(post_id, None)

    def inject(self, endpoint: str, fault: Fault) -> None:
        with self.lock:
            self._faults.setdefault(endpoint, []).append(fault)

    def clear_faults(self) -> None:
        with self.lock:
            self._faults.clear()

    def exhaust(self, endpoint: str, reset_in: float) -> int:
        """Use up `endpoint`'s window for everyone; returns the reset (epoch seconds)."""
        reset = math.ceil(time.time() + reset_in)
        with self.lock:
            self.limits.setdefault(endpoint, WINDOW_SECONDS)
            for principal in ("app", *(f"user:{i}" for i in self.world.accounts)):
                self._windows[(endpoint, principal)] = _Window(self.limits[endpoint], 0, reset)
        return reset

    def requests_to(self, endpoint: str) -> list[Request]:
        with self.lock:
            return [r for r in self.requests if r.endpoint == endpoint]

    def replies_to(self, post_id: str) -> list[Post]:
        with self.lock:
            return self.world.replies_to(post_id)

    # --- serving -----------------------------------------------------------------------
    def serve(self, handler: _Handler, method: str) -> None:
        split = urlsplit(handler.path)
        route = next(((m, p, e) for m, p, e in _ROUTES if m == method and p.match(split.path)),
                     None)  # fmt: skip
        if route is None:
            handler.respond(404, handlers.problem(404, "Not Found Error", "no such endpoint"))
            return
        params = route[1].match(split.path).groupdict()  # type: ignore[union-attr]
        request = Request(
            method=method,
            path=split.path,
            endpoint=route[2],
            query={k: v[0] for k, v in parse_qs(split.query).items()},
            body=handler.json_body(),
            headers={k: v for k, v in handler.headers.items()},
            at=time.time(),
        )
        with self.lock:
            self.requests.append(request)
        status, body, headers = self._answer(request, params)
        if status == 0:  # a lost response: the connection closes with no answer
            handler.close_connection = True
            return
        request.status = status
        handler.respond(status, body, headers)

    def _answer(
        self, request: Request, params: dict[str, str]
    ) -> tuple[int, dict[str, Any], dict[str, str]]:
        account, refusal = self._authenticate(request)
        if refusal is not None:
            return refusal, handlers.auth_problem(refusal), {}
        request.principal = f"user:{account.id}" if account else "app"
        limited, headers = self._count_call(request.endpoint, request.principal)
        if limited:
            return 429, handlers.problem(429, "Too Many Requests", "Too Many Requests"), headers
        if self._run_hooks("received", request):
            return 0, {}, {}
        fault = self._take_fault(request.endpoint)
        if fault is not None and fault.kind == "latency":
            time.sleep(fault.seconds)
        elif fault is not None and fault.kind == "status":
            return fault.status, handlers.server_problem(fault.status, fault.detail), headers
        token = _oauth(request.headers).get("oauth_token", "")
        with self.lock:
            status, body = handlers.handle(
                self.world, request, params, account, read_only=token in self.read_only_tokens
            )
        if request.post_id is not None:
            self._run_hooks("committed", request)
            if fault is not None and fault.kind == "lost_response":
                return 0, {}, {}
            if fault is not None and fault.kind == "status_after_commit":
                return fault.status, handlers.server_problem(fault.status), headers
        return status, body, headers

    def _authenticate(self, request: Request) -> tuple[Account | None, int | None]:
        header = request.headers.get("Authorization", "")
        if header.startswith("Bearer ") and len(header) > len("Bearer "):
            return None, None
        oauth = _oauth(request.headers)
        if not oauth.keys() >= _OAUTH_REQUIRED:
            return None, 401
        with self.lock:
            account = self.world.account_with_token(oauth["oauth_token"])
        if account is None or oauth["oauth_token"] in self.revoked_tokens:
            return None, 401
        return account, None

    def _count_call(self, endpoint: str, principal: str) -> tuple[bool, dict[str, str]]:
        now = time.time()
        with self.lock:
            limit = self.limits.get(endpoint, 300 if endpoint == CREATE else WINDOW_SECONDS)
            window = self._windows.get((endpoint, principal))
            if window is None or window.reset <= now:
                window = _Window(limit, limit, math.ceil(now + WINDOW_SECONDS))
                self._windows[(endpoint, principal)] = window
            limited = window.remaining <= 0
            if not limited:
                window.remaining -= 1
            headers = {
                "x-rate-limit-limit": str(window.limit),
                "x-rate-limit-remaining": str(window.remaining),
                "x-rate-limit-reset": str(window.reset),
            }
        return limited, headers

    def _take_fault(self, endpoint: str) -> Fault | None:
        with self.lock:
            for fault in self._faults.get(endpoint, []):
                if fault.times is not None and fault.times <= 0:
                    continue
                if self.random.random() >= fault.probability:
                    continue
                if fault.times is not None:
                    fault.times -= 1
                return fault
        return None

    def _run_hooks(self, phase: str, request: Request) -> bool:
        return any([bool(hook(phase, request)) for hook in list(self.hooks)])


def _oauth(headers: dict[str, str]) -> dict[str, str]:
    header = headers.get("Authorization", "")
    if not header.startswith("OAuth "):
        return {}
    return {k: unquote(v) for k, v in re.findall(r'(\w+)="([^"]*)"', header)}


class _Handler(BaseHTTPRequestHandler):
    emulator: XEmulator
    server_version = "x-emulator"

    def do_GET(self) -> None:
        self.emulator.serve(self, "GET")

    def do_POST(self) -> None:
        self.emulator.serve(self, "POST")

    def json_body(self) -> Any:
        length = int(self.headers.get("Content-Length") or 0)
        if not length:
            return None
        raw = self.rfile.read(length)
        try:
            return json.loads(raw)
        except ValueError:
            return {"_unparsable": raw.decode("utf-8", "replace")}

    def respond(self, status: int, body: dict[str, Any], headers: dict[str, str] | None = None):
        data = json.dumps(body).encode()
        content_type = "application/problem+json" if "type" in body else "application/json"
        try:
            self.send_response(status)
            self.send_header("Content-Type", f"{content_type}; charset=utf-8")
            self.send_header("Content-Length", str(len(data)))
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client is gone (a killed daemon); the post, if any, stands

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the emulator's record of requests is what tests read."""
