"""The console benchmark's browser stand-in, a process of its own (as a browser is).

    python -m tests.benchmarks.console_client BASE TOKEN --out FILE --requests N
    python -m tests.benchmarks.console_client BASE TOKEN --out FILE --rate R --seconds S

Logs in with the token and says `ready` on stdout, then either times `--requests` answers of
each page one after the other (keep-alive, as a browser), or asks for the pages in turn at
`--rate` a second for `--seconds`. Writes the latencies (seconds) per page to FILE; a page
that answers anything but 200 ends it with an error.
"""

from __future__ import annotations

import argparse
import http.client
import json
import time
from pathlib import Path
from urllib.parse import urlsplit

# What an operator's tabs ask for: the overview's htmx refresh above all, then each page.
PAGES = [
    "/",
    "/overview/fragment",
    "/review",
    "/history",
    "/history?q=number+77",
    "/models",
    "/opt-outs",
]
WARM_UP = 5


class Browser:
    """One keep-alive connection and the session cookie."""

    def __init__(self, base: str, token: str) -> None:
        parts = urlsplit(base)
        self.connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
        self.connection.request("GET", f"/login?token={token}")
        response = self.connection.getresponse()
        response.read()
        cookie = response.getheader("set-cookie") or ""
        if response.status != 303 or not cookie:
            raise SystemExit(f"login failed: {response.status}")
        self.cookie = cookie.split(";", 1)[0]

    def get(self, path: str) -> tuple[int, float]:
        started = time.perf_counter()
        self.connection.request("GET", path, headers={"Cookie": self.cookie})
        response = self.connection.getresponse()
        response.read()
        return response.status, time.perf_counter() - started


def timed(browser: Browser, requests: int) -> dict[str, list[float]]:
    latencies: dict[str, list[float]] = {}
    for page in PAGES:
        for _ in range(WARM_UP):
            browser.get(page)
        latencies[page] = [_ok(browser.get(page)) for _ in range(requests)]
    return latencies


def polled(browser: Browser, rate: float, seconds: float) -> dict[str, list[float]]:
    latencies: dict[str, list[float]] = {page: [] for page in PAGES}
    started = time.perf_counter()
    for sent in range(int(rate * seconds)):
        due = started + sent / rate
        time.sleep(max(0.0, due - time.perf_counter()))
        page = PAGES[sent % len(PAGES)]
        latencies[page].append(_ok(browser.get(page)))
    return latencies


def _ok(answer: tuple[int, float]) -> float:
    status, seconds = answer
    if status != 200:
        raise SystemExit(f"a page answered {status}")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("base")
    parser.add_argument("token")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--requests", type=int)
    parser.add_argument("--rate", type=float)
    parser.add_argument("--seconds", type=float)
    args = parser.parse_args()
    browser = Browser(args.base, args.token)
    print("ready", flush=True)  # logged in: the caller starts its phase now
    if args.requests:
        latencies = timed(browser, args.requests)
    else:
        latencies = polled(browser, args.rate, args.seconds)
    args.out.write_text(json.dumps(latencies))


if __name__ == "__main__":
    main()
