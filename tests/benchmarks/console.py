"""Console benchmark: page latency on a full account, and replies while the console is polled.

    python -m tests.benchmarks.console [--requests 200] [--phase-seconds 15] [--phases 3]

Writes the `console` section of tests/benchmarks/results.json (keeping the others). This
process plays the daemon: the console is a `ConsoleServer` thread here (as each daemon serves
it), and a char-RNN (trained here on the sample corpus) serves replies from its worker
process through the generation service, asked for back to back by a thread, as the mentions
job asks. The browser is another process (`console_client`), so its own work is not counted
on this process's interpreter lock. The account holds 10,000 history items, 200 held
replies, two published versions with their train.log, opt-outs and a lease holder.

- `pages`: each page answered `--requests` times in a row (after a warm-up) on a keep-alive
  connection with the session cookie: p50/p95 in ms, against a 50 ms p95 target.
- `replies`: reply latency with the console idle and while the browser asks for its pages
  20 times a second, in alternating phases (idle, polled, idle, polled, ...) so both sides
  share the machine's drift: p50/p95 of each side and their ratio.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import redis

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
RESULTS = HERE / "results.json"
REDIS_URL = "redis://127.0.0.1:6379/0"
HISTORY_ITEMS = 10_000
HELD_ITEMS = 200
POLLS_PER_SECOND = 20
TARGET_P95_MS = 50.0


def _p(values: list[float], q: int) -> float:
    return statistics.quantiles(values, n=100)[q - 1] if len(values) > 1 else values[0]


def _summary_ms(values: list[float]) -> dict[str, Any]:
    return {
        "requests": len(values),
        "p50_ms": round(_p(values, 50) * 1000, 2),
        "p95_ms": round(_p(values, 95) * 1000, 2),
    }


def _account(work: Path) -> tuple[Any, Any]:
    """A config and a state for a fresh account, seeded as the daemon would have left it."""
    from bot.config import BotConfig
    from bot.state import BotState
    from tests.support.browser import seed_full
    from tests.support.configs import offline_config_data

    account = f"bench-console-{int(time.time())}"
    data = offline_config_data(work / "volume", account, REDIS_URL)
    config = BotConfig.model_validate(data)
    state = BotState(redis.Redis.from_url(REDIS_URL, decode_responses=True), account)
    seed_full(config, state, history=HISTORY_ITEMS, held=HELD_ITEMS)
    return config, state


def _client(base: str, token: str, out: Path, *options: str) -> subprocess.Popen:
    command = [sys.executable, "-m", "tests.benchmarks.console_client", base, token]
    client = subprocess.Popen(
        [*command, "--out", str(out), *options], cwd=REPO, stdout=subprocess.PIPE, text=True
    )
    assert client.stdout is not None
    if client.stdout.readline().strip() != "ready":  # logged in, about to ask
        raise RuntimeError("the console client did not log in")
    return client


def bench_pages(base: str, token: str, requests: int, work: Path) -> dict[str, Any]:
    out = work / "pages.json"
    if _client(base, token, out, "--requests", str(requests)).wait() != 0:
        raise RuntimeError("the console client failed")
    pages = {page: _summary_ms(v) for page, v in json.loads(out.read_text()).items()}
    worst = max(row["p95_ms"] for row in pages.values())
    return {
        "pages": pages,
        "worst_p95_ms": worst,
        "target_p95_ms": TARGET_P95_MS,
        "within_target": worst < TARGET_P95_MS,
    }


def bench_replies(
    service: Any, base: str, token: str, phase_seconds: float, phases: int, work: Path
) -> dict[str, Any]:
    """Replies back to back; the console idle or polled, in alternating phases."""
    from bot.platform.base import Tweet

    mention = Tweet(
        id="1", text="@parrotbot what is a penny worth?", author_id="2", author_handle="reader",
        created_at="",
    )  # fmt: skip
    latencies: dict[str, list[float]] = {"idle": [], "polled": []}
    polls: list[float] = []
    for phase in range(phases * 2):
        side = "idle" if phase % 2 == 0 else "polled"
        client = None
        if side == "polled":
            out = work / f"poll-{phase}.json"
            options = ("--rate", str(POLLS_PER_SECOND), "--seconds", str(phase_seconds + 1))
            client = _client(base, token, out, *options)
        ends = time.perf_counter() + phase_seconds
        while time.perf_counter() < ends:
            started = time.perf_counter()
            generated, _batch = service.generate_reply(mention, handle="parrotbot")
            if generated is None:
                raise RuntimeError("no acceptable reply")
            latencies[side].append(time.perf_counter() - started)
        if client is not None:
            if client.wait() != 0:
                raise RuntimeError("the console client failed")
            polls += [s for values in json.loads(out.read_text()).values() for s in values]
    idle, polled = _summary_ms(latencies["idle"]), _summary_ms(latencies["polled"])
    return {
        "idle": idle,
        "polled": polled,
        "p95_ratio": round(polled["p95_ms"] / idle["p95_ms"], 2),
        "p50_ratio": round(polled["p50_ms"] / idle["p50_ms"], 2),
        "console_requests_while_polled": len(polls),
        "console_p95_ms_while_polled": _summary_ms(polls)["p95_ms"],
        "polls_per_second": POLLS_PER_SECOND,
        "phases": f"{phases} idle and {phases} polled of {phase_seconds:g} s, alternating",
    }


def run(requests: int, phase_seconds: float, phases: int, work: Path) -> dict[str, Any]:
    from bot.console.auth import load_or_create_token
    from bot.console.server import ConsoleServer
    from tests.benchmarks.serving import _corpus, _service_and_watcher, train

    config, state = _account(work)
    server = ConsoleServer(config, lambda: state)
    server.start()
    token = load_or_create_token(config.data_dir)
    base = f"http://127.0.0.1:{server.port}"
    try:
        pages = bench_pages(base, token, requests, work)
        (work / "model").mkdir()
        model_dir = train(work / "model", epochs=1)
        service, watcher, _model_state = _service_and_watcher(
            model_dir, state.keys.account, _corpus()
        )
        try:
            replies = bench_replies(service, base, token, phase_seconds, phases, work)
        finally:
            watcher.close()
    finally:
        server.stop()
        for key in state.redis.scan_iter(match=f"{state.keys.prefix}:*"):
            state.redis.delete(key)
    return {
        "history_items": HISTORY_ITEMS,
        "held_items": HELD_ITEMS,
        **pages,
        "replies": replies,
    }


def main(argv: list[str] | None = None) -> int:
    from tests.benchmarks.run_benchmarks import machine

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--phase-seconds", type=float, default=15.0)
    parser.add_argument("--phases", type=int, default=3)
    args = parser.parse_args(argv)
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        section = run(args.requests, args.phase_seconds, args.phases, Path(tmp))
    load = f"load average {load_before[0]:.2f} before, {os.getloadavg()[0]:.2f} after (1 min)"
    section["measured_at"] = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    section["machine"] = f"{machine()}; {load}"
    existing = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    existing["console"] = section
    RESULTS.write_text(json.dumps(existing, indent=2, sort_keys=True) + "\n")
    print(json.dumps(section, indent=2))
    return 0 if section["within_target"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
