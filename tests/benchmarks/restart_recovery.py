"""Restart-to-first-reply after SIGKILL: how long a crashed daemon's own restart stays mute.

    python -m tests.benchmarks.restart_recovery [--kills 20] [--label after] [--code DIR]

One daemon on the offline platform, a real Redis, a model already published. Each cycle:
kill -9 the daemon (the leader, answering), write a fresh mention into its mentions file,
start the daemon again on the same volume and Redis, and time from that start until the
reply to the mention is in the outbox. The lease TTL is the default (15 s); the mention poll
runs every second so the poll does not hide the wait for the lease. `--code DIR` runs the
daemon from another checkout (e.g. a `git worktree` of the commit before a change), with
this checkout's benchmark driving it, so before and after are measured the same way.

Writes the `restart_recovery` section of tests/benchmarks/results.json, keyed by `--label`
(other labels and sections are kept), with the machine and its load average: the project's
machines are shared, and a loaded machine starts daemons more slowly.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import redis
import yaml

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
RESULTS = HERE / "results.json"
CORPUS = REPO / "config" / "sample_timelines" / "poorrichard.jsonl"
REDIS_URL = os.environ.get("PARROTBOT_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
LEASE_TTL_SECONDS = 15  # the default: what a user gets
START_TIMEOUT_S = 120.0


def train(work: Path) -> Path:
    """The offline default model size (a few epochs: load time depends on the size only)."""
    dataset = work / "poorrichard.jsonl"
    shutil.copyfile(CORPUS, dataset)
    request = {
        "model_kind": "char_rnn",
        "datasets": [str(dataset)],
        "checkpoints_dir": str(work / "checkpoints"),
        "model_config": {"units": 128, "batch_size": 32, "epochs": 3},
        "trigger": "benchmark",
    }
    request_path = work / "request.json"
    request_path.write_text(json.dumps(request))
    subprocess.run(
        [sys.executable, "-m", "training.train", "--request", str(request_path)],
        check=True,
        cwd=REPO,
        capture_output=True,
        timeout=600,
    )
    return work / "checkpoints"


def write_config(work: Path, account: str) -> Path:
    data = yaml.safe_load((REPO / "config" / "offline.yaml").read_text())
    data.update(account=account, data_dir=str(work / "volume"), redis_url=REDIS_URL)
    data["platform"]["local"]["seed_timelines_dir"] = str(REPO / "config" / "sample_timelines")
    data["schedule"].update(
        post_every_seconds=3600,  # replies only: one thing on the outbox to wait for
        mentions_every_seconds=1,
        checkpoint_poll_seconds=1,
        config_poll_seconds=1,
        lease_ttl_seconds=LEASE_TTL_SECONDS,
    )
    data["model"]["char_rnn"]["epochs"] = 3  # no retrain: the published model stays current
    data["replies"] = {"author_cooldown_seconds": 0}  # one author, a mention per kill
    data["health"] = {"enabled": False}
    data["console"] = {"port": 0}  # served, as by default, on a free port
    data["logging"] = {"level": "INFO"}
    path = work / "bot.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


class Bot:
    """The daemon process of one cycle, run from `code` (a checkout) with its own log."""

    def __init__(self, code: Path, config: Path, log_path: Path) -> None:
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(code)}
        with log_path.open("wb") as log_file:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "bot.cli", "run", "--config", str(config)],
                cwd=code,
                env=env,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        self.log_path = log_path

    def events(self) -> list[dict[str, Any]]:
        from tests.support.daemon_process import parse_events

        return parse_events(self.log_path.read_text(errors="replace"))

    def wait_recorded(self, mention_id: str) -> None:
        """Until the daemon logged the reply as recorded (it is in the outbox already)."""
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if any(
                e["event"] == "reply.published" and e.get("mention_id") == mention_id
                for e in self.events()
            ):
                return
            time.sleep(0.05)
        raise RuntimeError(f"reply to {mention_id} never recorded:\n{self.tail()}")

    def tail(self, lines: int = 20) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()


def add_mention(volume: Path, mention_id: str) -> None:
    path = volume / "local" / "mentions.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as mentions:
        record = {"id": mention_id, "author": "alice", "text": "@parrotbot what now?"}
        mentions.write(json.dumps(record) + "\n")


def wait_for_reply(volume: Path, mention_id: str, bot: Bot) -> float:
    """Poll the outbox (a measurement poll, 20 ms) until the reply is there; its time."""
    outbox = volume / "local" / "outbox.jsonl"
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if mention_id in replied_to(outbox):
            return time.monotonic()
        if bot.process.poll() is not None:
            raise RuntimeError(f"daemon exited ({bot.process.returncode}):\n{bot.tail()}")
        time.sleep(0.02)
    raise RuntimeError(f"no reply to {mention_id} within {START_TIMEOUT_S}s:\n{bot.tail()}")


def replied_to(outbox: Path) -> set[str]:
    """The mention ids the outbox holds replies to (a half-written last line is skipped)."""
    if not outbox.exists():
        return set()
    found = set()
    for line in outbox.read_text().splitlines():
        try:
            found.add(json.loads(line).get("in_reply_to_tweet_id"))
        except ValueError:
            continue
    return found


def lease_pttl_ms(client: redis.Redis, account: str) -> int:
    return int(client.pttl(f"parrotbot:{account}:lease"))


def run_cycles(code: Path, kills: int, work: Path, account: str) -> dict[str, Any]:
    client = redis.Redis.from_url(REDIS_URL, decode_responses=True)
    config = write_config(work, account)
    volume = work / "volume"
    shutil.copytree(train(work), volume / "checkpoints")
    bot = Bot(code, config, work / "daemon-0.log")
    add_mention(volume, "9200000000000000000")
    wait_for_reply(volume, "9200000000000000000", bot)  # warm: leader, model loaded
    bot.wait_recorded("9200000000000000000")
    cycles = []
    loads = [os.getloadavg()[0]]
    try:
        for number in range(1, kills + 1):
            bot.kill()
            left_ms = lease_pttl_ms(client, account)  # what the dead lease still had
            mention_id = f"92000000000000{number:05d}"
            add_mention(volume, mention_id)
            started = time.monotonic()
            bot = Bot(code, config, work / f"daemon-{number}.log")
            replied = wait_for_reply(volume, mention_id, bot)
            bot.wait_recorded(mention_id)  # kill next between jobs, not mid-reply
            taken = [e for e in bot.events() if e["event"] == "lease.taken_over"]
            cycles.append(
                {
                    "seconds": round(replied - started, 3),
                    "dead_lease_left_ms_at_kill": left_ms,
                    "taken_over": bool(taken),
                }
            )
            loads.append(os.getloadavg()[0])
            print(f"kill {number}: {cycles[-1]}", flush=True)
    finally:
        bot.kill()
        for key in client.scan_iter(match=f"parrotbot:{account}:*"):
            client.delete(key)
    return summarize(cycles, loads)


def summarize(cycles: list[dict[str, Any]], loads: list[float]) -> dict[str, Any]:
    seconds = sorted(cycle["seconds"] for cycle in cycles)
    p90 = statistics.quantiles(seconds, n=10)[-1] if len(seconds) >= 2 else seconds[0]
    return {
        "kills": len(cycles),
        "restart_to_first_reply_s": {
            "median": round(statistics.median(seconds), 3),
            "p90": round(p90, 3),
            "min": seconds[0],
            "max": seconds[-1],
        },
        "taken_over_at_once": sum(cycle["taken_over"] for cycle in cycles),
        "load_average_1min": {"min": min(loads), "max": max(loads), "start": loads[0]},
        "cycles": cycles,
    }


def main(argv: list[str] | None = None) -> int:
    from tests.benchmarks.run_benchmarks import machine

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--label", default="after", help="the results key: before or after")
    parser.add_argument("--code", type=Path, default=REPO, help="the checkout the daemon runs")
    args = parser.parse_args(argv)
    account = f"bench-restart-{int(time.time())}"
    code = args.code.resolve()
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=code, capture_output=True, text=True
    ).stdout.strip()
    with tempfile.TemporaryDirectory() as tmp:
        result = run_cycles(code, args.kills, Path(tmp), account)
    result.update(
        commit=commit,
        measured_at=dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        machine=machine(),
        settings={
            "lease_ttl_seconds": LEASE_TTL_SECONDS,
            "mentions_every_seconds": 1,
            "model": "char_rnn GRU 128 (offline default size)",
            "platform": "local (offline)",
        },
    )
    existing = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    section = existing.setdefault("restart_recovery", {})
    section[args.label] = result
    section["what"] = (
        "seconds from starting the daemon again after kill -9 to the reply to a mention that "
        "arrived while it was down; the machine is shared (other engineers' tests ran "
        "meanwhile): see each run's load_average_1min"
    )
    RESULTS.write_text(json.dumps(existing, indent=2, sort_keys=True) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "cycles"}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
