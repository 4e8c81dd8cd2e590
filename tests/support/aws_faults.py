"""AWS having a bad day, over its own protocol: a loopback HTTP proxy in front of moto_server.

boto3 reaches the proxy through `AWS_ENDPOINT_URL`, as it reaches moto; every request goes on
to moto unchanged unless the test armed a fault for it:

- `no_instances(code, message)`: CreateFleet answers as EC2 does when it launches nothing (by
  default: no spot pool has capacity): a fleet without instances and one error per override
  (the request goes on to moto with a target capacity of 0, so the fleet is real and
  DeleteFleets works on it: moto refuses to terminate the no instances of such a fleet, so
  its DeleteFleets goes on without TerminateInstances); `capacity_back()` ends it;
- `no_spot_prices()`: DescribeSpotPriceHistory answers with an empty history, as it does for
  a type no zone offers;
- `s3_fault(bucket, prefix, kind, times, method="GET")`: requests of that method (`GET` or
  `PUT`) for object keys under `prefix` are answered with a `throttle` (503 SlowDown), an
  `error` (500 InternalError), a `deny` (403 AccessDenied), or, for GETs, `cut` (moto's
  answer, but the body stops halfway and the connection closes), for the next `times`
  requests or for good; an error never reaches moto (a refused PUT stores nothing);
  `s3_healthy()` ends them all;
- `ec2_fault(action, kind, times, after=None)`: the EC2 action (`DescribeLaunchTemplates`, …)
  is answered with a `throttle` (503 RequestLimitExceeded), an `error` (500 InternalError) or
  `not_found` (400 InvalidInstanceID.NotFound, as EC2 may answer for a just-made instance),
  or `drop`ped (the connection closed with no answer), for the next `times` requests or for
  good, without reaching moto; with `after` (an action such as `CreateFleet`), only once the
  proxy has seen that action: the same call then fails after the launch and not before it;
  `ec2_healthy()` ends them.

botocore retries what a fault answers (5 times with `Cloud`'s defaults, after random waits of
up to 1, 2, 4, 8, 16 s for throttling, a twentieth of that for a 5xx): `times` counts requests,
not calls. `hits` counts the faults served, by kind; `requests` counts, faulted or not, every
EC2 request as `"ec2:<Action>"` and every S3 request for a key as `"<METHOD> <bucket>/<key>"`.
"""

from __future__ import annotations

import http.client
import threading
import urllib.parse
import uuid
from collections import Counter
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "expect", "proxy-connection"}
S3_ERRORS = {
    "throttle": (503, "SlowDown", "Please reduce your request rate."),
    "error": (500, "InternalError", "We encountered an internal error. Please try again."),
    "deny": (403, "AccessDenied", "Access Denied"),
}
EC2_ERRORS = {
    "throttle": (503, "RequestLimitExceeded", "Request limit exceeded."),
    "error": (500, "InternalError", "An internal error has occurred."),
    # What EC2's eventually consistent API answers for a moment about a just-made instance.
    "not_found": (400, "InvalidInstanceID.NotFound", "The instance ID does not exist"),
}


@dataclass
class Fault:
    target: str  # S3: "<METHOD> <bucket>/<key prefix>"; EC2: "ec2:<Action>"
    kind: str
    times: int | None  # None: for good
    after: str | None = None  # "ec2:<Action>": armed once such a request has been seen


class AwsFaults:
    def __init__(self, upstream: str) -> None:
        parts = urllib.parse.urlsplit(upstream)
        self.upstream = (parts.hostname or "127.0.0.1", parts.port or 80)
        self.lock = threading.Lock()
        self.fleet_error: tuple[str, str] | None = None
        self.empty_spot_prices = False
        self.empty_fleets: set[str] = set()
        self.faults: list[Fault] = []
        self.hits: Counter[str] = Counter()  # faults served, by kind
        self.requests: Counter[str] = Counter()  # "PUT <bucket>/<key>", "ec2:<Action>"
        self._server: ThreadingHTTPServer | None = None

    # --- what a test arms -----------------------------------------------------------
    def no_instances(
        self,
        code: str = "InsufficientInstanceCapacity",
        message: str = "There is no Spot capacity available that matches your request.",
    ) -> None:
        with self.lock:
            self.fleet_error = (code, message)

    def capacity_back(self) -> None:
        with self.lock:
            self.fleet_error = None

    def no_spot_prices(self) -> None:
        with self.lock:
            self.empty_spot_prices = True

    def s3_fault(
        self, bucket: str, key_prefix: str, kind: str, times: int | None = None, method: str = "GET"
    ) -> None:
        kinds = (*S3_ERRORS, "cut") if method == "GET" else tuple(S3_ERRORS)
        if method not in ("GET", "PUT") or kind not in kinds:
            raise ValueError(f"unknown S3 fault {kind!r} for {method}")
        with self.lock:
            self.faults.append(Fault(f"{method} {bucket}/{key_prefix}", kind, times))

    def s3_healthy(self) -> None:
        with self.lock:
            self.faults = [f for f in self.faults if f.target.startswith("ec2:")]

    def ec2_fault(
        self, action: str, kind: str, times: int | None = None, after: str | None = None
    ) -> None:
        if kind not in (*EC2_ERRORS, "drop"):
            raise ValueError(f"unknown EC2 fault {kind!r}")
        with self.lock:
            self.faults.append(
                Fault(f"ec2:{action}", kind, times, after=f"ec2:{after}" if after else None)
            )

    def ec2_healthy(self) -> None:
        with self.lock:
            self.faults = [f for f in self.faults if not f.target.startswith("ec2:")]

    # --- lifecycle ------------------------------------------------------------------
    @property
    def url(self) -> str:
        assert self._server is not None, "not started"
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> None:
        faults = self

        class Handler(_Handler):
            pass

        Handler.faults = faults
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, name="aws-faults", daemon=True).start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    # --- used by the handler ---------------------------------------------------------
    def take_fault(self, request: str) -> str | None:
        """The kind of fault armed for `request` (counted as served), or None; `request` is
        `"<METHOD> <bucket>/<key>"` or `"ec2:<Action>"`; an S3 target matches by prefix."""
        with self.lock:
            self.requests[request] += 1
            for fault in self.faults:
                if fault.after is not None and not self.requests[fault.after]:
                    continue
                if request == fault.target or (
                    not request.startswith("ec2:") and request.startswith(fault.target)
                ):
                    if fault.times is not None:
                        fault.times -= 1
                        if fault.times <= 0:
                            self.faults.remove(fault)
                    self.hits[fault.kind] += 1
                    return fault.kind
        return None


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    faults: AwsFaults

    def log_message(self, format: str, *args: object) -> None:
        """Quiet: pytest shows what matters."""

    def do_GET(self) -> None:
        self._handle()

    do_PUT = do_POST = do_HEAD = do_DELETE = do_GET

    def _handle(self) -> None:
        body = self._read_body()
        path = urllib.parse.unquote(urllib.parse.urlsplit(self.path).path).lstrip("/")
        faults = self.faults
        action = _form(body).get("Action") if self.command == "POST" else None
        if action is not None:
            kind = faults.take_fault(f"ec2:{action}")
            if kind == "drop":
                self.close_connection = True  # no answer at all: the client sees it closed
                return None
            if kind is not None:
                status, code, message = EC2_ERRORS[kind]
                return self._send(status, _ec2_error(code, message))
        if action == "DescribeSpotPriceHistory" and faults.empty_spot_prices:
            faults.hits["no_spot_prices"] += 1
            return self._send(200, _ec2_xml(action, "<spotPriceHistorySet/><nextToken/>"))
        fleet_error = faults.fleet_error
        if action == "CreateFleet" and fleet_error is not None:
            faults.hits["no_instances"] += 1
            return self._create_fleet_without_capacity(body, fleet_error)
        if action == "DeleteFleets":
            body = self._without_terminating_nothing(body)
        on_object = action is None and "/" in path  # an S3 key, not a bucket or EC2
        kind = faults.take_fault(f"{self.command} {path}") if on_object else None
        if kind in S3_ERRORS:
            status, code, message = S3_ERRORS[kind]
            error = f"<Error><Code>{code}</Code><Message>{message}</Message></Error>"
            return self._send(status, error.encode(), content_type="application/xml")
        status, headers, payload = self._forward(body)
        if kind == "cut":
            return self._send_cut(status, headers, payload)
        self._send(status, payload, headers=headers)

    # --- faults ---------------------------------------------------------------------
    def _create_fleet_without_capacity(self, body: bytes, error: tuple[str, str]) -> None:
        pairs = urllib.parse.parse_qsl(body.decode(), keep_blank_values=True)
        overrides: dict[str, dict[str, str]] = {}
        for key, value in pairs:
            if ".Overrides." in key:
                number, field = key.split(".Overrides.", 1)[1].split(".", 1)
                overrides.setdefault(number, {})[field] = value
        none_wanted = [
            (key, "0" if key == "TargetCapacitySpecification.TotalTargetCapacity" else value)
            for key, value in pairs
        ]
        status, headers, payload = self._forward(urllib.parse.urlencode(none_wanted).encode())
        code, message = error
        items = "".join(
            "<item><launchTemplateAndOverrides><overrides>"
            f"<instanceType>{o.get('InstanceType', '')}</instanceType>"
            f"<subnetId>{o.get('SubnetId', '')}</subnetId>"
            "</overrides></launchTemplateAndOverrides><lifecycle>spot</lifecycle>"
            f"<errorCode>{code}</errorCode><errorMessage>{message}</errorMessage></item>"
            for o in overrides.values()
        )
        text = payload.decode()
        assert status == 200 and "</CreateFleetResponse>" in text, text[:500]
        fleet_id = text.split("<fleetId>", 1)[1].split("</fleetId>", 1)[0]
        with self.faults.lock:
            self.faults.empty_fleets.add(fleet_id)
        end = "</CreateFleetResponse>"
        text = text.replace(end, f"<errorSet>{items}</errorSet>{end}")
        self._send(200, text.encode(), headers=headers)

    def _without_terminating_nothing(self, body: bytes) -> bytes:
        pairs = urllib.parse.parse_qsl(body.decode(), keep_blank_values=True)
        fleets = {value for key, value in pairs if key.startswith("FleetId.")}
        if not fleets or not fleets <= self.faults.empty_fleets:
            return body
        pairs = [(k, "false" if k == "TerminateInstances" else v) for k, v in pairs]
        return urllib.parse.urlencode(pairs).encode()

    def _send_cut(self, status: int, headers: list[tuple[str, str]], payload: bytes) -> None:
        """The full length announced, half the body sent, then the connection gone."""
        self.send_response(status)
        for name, value in headers:
            if name.lower() != "content-length":
                self.send_header(name, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload[: len(payload) // 2])
        self.wfile.flush()
        self.close_connection = True

    # --- plumbing -------------------------------------------------------------------
    def _read_body(self) -> bytes:
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _forward(self, body: bytes) -> tuple[int, list[tuple[str, str]], bytes]:
        connection = http.client.HTTPConnection(*self.faults.upstream, timeout=60)
        try:
            headers = {
                name: value
                for name, value in self.headers.items()
                if name.lower() not in HOP_BY_HOP and name.lower() != "content-length"
            }
            if body or self.command in ("POST", "PUT"):
                headers["Content-Length"] = str(len(body))
            connection.request(self.command, self.path, body=body or None, headers=headers)
            response = connection.getresponse()
            payload = response.read()
            kept = [(n, v) for n, v in response.getheaders() if n.lower() not in HOP_BY_HOP]
            return response.status, kept, payload
        finally:
            connection.close()

    def _send(
        self,
        status: int,
        payload: bytes,
        *,
        headers: list[tuple[str, str]] | None = None,
        content_type: str = "text/xml",
    ) -> None:
        self.send_response(status)
        headers = headers or [("Content-Type", content_type)]
        for name, value in headers:
            if name.lower() != "content-length":
                self.send_header(name, value)
        if self.command == "HEAD":  # no body, but the length a GET would have
            length = next((v for n, v in headers if n.lower() == "content-length"), "0")
            self.send_header("Content-Length", length)
            self.end_headers()
            return
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)


def _form(body: bytes) -> dict[str, str]:
    try:
        return dict(urllib.parse.parse_qsl(body.decode(), keep_blank_values=True))
    except (UnicodeDecodeError, ValueError):
        return {}


def _ec2_error(code: str, message: str) -> bytes:
    return (
        '<?xml version="1.0" encoding="UTF-8"?>'
        f"<Response><Errors><Error><Code>{code}</Code><Message>{message}</Message></Error>"
        f"</Errors><RequestID>{uuid.uuid4()}</RequestID></Response>"
    ).encode()


def _ec2_xml(action: str, inner: str) -> bytes:
    return (
        '<?xml version="1.0" encoding="UTF-8"?>'
        f'<{action}Response xmlns="http://ec2.amazonaws.com/doc/2016-11-15/">'
        f"<requestId>{uuid.uuid4()}</requestId>{inner}</{action}Response>"
    ).encode()
