"""The daemon's footprint: cold start to ready, and its memory with and without a model.

    python -m tests.benchmarks.daemon_footprint [--starts 5] [--label after] [--code DIR]

A daemon on the offline platform and a real Redis, started `--starts` times from scratch:
once on a volume with no model (the retrain it would queue is left to an external launcher,
so no trainer competes), once on a volume with the offline default's char-RNN published.

- **cold start to ready**: from starting `python -m bot.cli run` to the log line
  `lease.acquired` (the leader's scheduler is about to run its jobs), on the volume with no
  model; and to `hotload.swapped`-then-leader on the one with a model.
- **RSS**: the daemon's resident memory (``VmRSS``) once it is ready, after its first scrape,
  and with a model the serving worker's too (the daemon's child running
  ``training.worker``; a daemon from before the worker process holds the model itself).

`--code DIR` runs the daemon from another checkout (a `git worktree` of an older commit), so
before and after are measured by the same driver. Writes the `daemon_footprint` section of
tests/benchmarks/results.json, keyed by `--label`, with the machine and its load average.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import redis
import yaml

from tests.benchmarks.restart_recovery import REDIS_URL, REPO, RESULTS, Bot, train, write_config

START_TIMEOUT_S = 120.0
WORKER_MODULE = "training.worker"


def _rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for {pid}")


def _workers_of(pid: int) -> list[int]:
    """The daemon's children that run a model worker."""
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    found = []
    for child in children:
        try:
            command = Path(f"/proc/{child}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if WORKER_MODULE.encode() in command:
            found.append(int(child))
    return found


def _wait_for(bot: Bot, event: str, started: float) -> float:
    """Seconds from ``started`` until ``event`` is in the daemon's log (a 20 ms poll)."""
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if any(e["event"] == event for e in bot.events()):
            return time.monotonic() - started
        if bot.process.poll() is not None:
            raise RuntimeError(f"daemon exited ({bot.process.returncode}):\n{bot.tail()}")
        time.sleep(0.02)
    raise RuntimeError(f"no {event} within {START_TIMEOUT_S}s:\n{bot.tail()}")


def _config(work: Path, account: str) -> Path:
    path = write_config(work, account)
    data = yaml.safe_load(path.read_text())
    data["training"] = {"backend": "local", "launcher": "external"}  # no trainer competes
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def one_start(code: Path, work: Path, account: str, *, with_model: Path | None) -> dict[str, Any]:
    volume = work / "volume"
    shutil.rmtree(volume, ignore_errors=True)
    if with_model is not None:
        shutil.copytree(with_model, volume / "checkpoints")
    config = _config(work, account)
    load = os.getloadavg()[0]
    started = time.monotonic()
    bot = Bot(code, config, work / f"daemon-{time.monotonic_ns()}.log")
    try:
        result: dict[str, Any] = {"load_average_1min": round(load, 2)}
        result["ready_s"] = round(_wait_for(bot, "lease.acquired", started), 3)
        if with_model is not None:
            result["model_swapped_s"] = round(_wait_for(bot, "hotload.swapped", started), 3)
        _wait_for(bot, "scrape.done", started)
        result["daemon_rss_mb"] = round(_rss_bytes(bot.process.pid) / 1e6, 1)
        workers = _workers_of(bot.process.pid)
        if with_model is not None:
            result["worker_rss_mb"] = round(sum(_rss_bytes(p) for p in workers) / 1e6, 1)
            result["workers"] = len(workers)
        return result
    finally:
        bot.kill()
        client = redis.Redis.from_url(REDIS_URL, decode_responses=True)
        for key in client.scan_iter(match=f"parrotbot:{account}:*"):
            client.delete(key)


def _median(runs: list[dict[str, Any]], field: str) -> float | None:
    values = [run[field] for run in runs if field in run]
    return round(statistics.median(values), 3) if values else None


def measure(code: Path, starts: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        model = train(work)
        runs: dict[str, list[dict[str, Any]]] = {"no_model": [], "char_rnn_published": []}
        for number in range(starts):
            account = f"bench-footprint-{int(time.time())}-{number}"
            runs["no_model"].append(one_start(code, work, account, with_model=None))
            runs["char_rnn_published"].append(one_start(code, work, account, with_model=model))
            print(f"start {number + 1}: {runs['no_model'][-1]} {runs['char_rnn_published'][-1]}")
    summary = {
        name: {
            field: _median(values, field)
            for field in ("ready_s", "model_swapped_s", "daemon_rss_mb", "worker_rss_mb")
            if _median(values, field) is not None
        }
        for name, values in runs.items()
    }
    return {"starts": starts, "median": summary, "runs": runs}


def main(argv: list[str] | None = None) -> int:
    from tests.benchmarks.run_benchmarks import machine

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--starts", type=int, default=5)
    parser.add_argument("--label", default="after", help="the results key: before or after")
    parser.add_argument("--code", type=Path, default=REPO, help="the checkout the daemon runs")
    args = parser.parse_args(argv)
    code = args.code.resolve()
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=code, capture_output=True, text=True
    ).stdout.strip()
    result = measure(code, args.starts)
    result.update(
        commit=commit,
        measured_at=dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        machine=machine(),
        model="char_rnn GRU 128 (offline default size)",
    )
    existing = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    section = existing.setdefault("daemon_footprint", {})
    section[args.label] = result
    section["what"] = (
        "cold start = `python -m bot.cli run` to `lease.acquired`; RSS = VmRSS after the first "
        "scrape; medians of `starts` fresh starts on a shared machine (see load_average_1min)"
    )
    RESULTS.write_text(json.dumps(existing, indent=2, sort_keys=True) + "\n")
    print(json.dumps(result["median"], indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
