"""Exactly-once replies under SIGKILL: real daemons against the X emulator, killed mid-reply.

A burst of mentions arrives; a daemon answers them while the emulator loses some answers
to its posts (the post is created, the connection closes) or answers 503 after creating
them. The active daemon is SIGKILLed at chosen points: when a post request arrives (not
yet created), once a post is created (its answer never reaches the daemon), while it reads
mentions, while it reads its own timeline, and at random moments after a post. A warm
standby takes over each time and a new standby is started. At the end every summoned
mention has exactly one reply and none has two, and Redis records each reply's id.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import threading
import time
from pathlib import Path

import pytest
import redis
import yaml

from tests.support.configs import X_SECRETS, x_config_data
from tests.support.daemon_process import DaemonProcess, wait_until
from tests.support.x_emulator import CREATE, MENTIONS, TIMELINE, Fault, Request

KILL_POINTS = [
    ("committed", CREATE),
    ("received", CREATE),
    ("timer", CREATE),
    ("received", MENTIONS),
    ("committed", CREATE),
    ("received", TIMELINE),
]


class Killer:
    """SIGKILLs the lease holder at the armed point, from inside the emulator's request path."""

    def __init__(self, client: redis.Redis, lease_key: str, pids: set[int], seed: int) -> None:
        self.client = client
        self.lease_key = lease_key
        self.pids = pids
        self.random = random.Random(seed)
        self.armed: tuple[str, str] | None = None
        self.fired = threading.Event()
        self.kills: list[str] = []
        self.lock = threading.RLock()

    def arm(self, phase: str, endpoint: str) -> None:
        with self.lock:
            self.fired.clear()
            self.armed = (phase, endpoint)

    def hook(self, phase: str, request: Request) -> bool:
        """At "received" the request dies with the daemon: X never sees it."""
        with self.lock:
            armed = self.armed
            if armed is None or request.endpoint != armed[1]:
                return False
            if armed[0] == "timer" and phase == "received":
                self.armed = None
                delay = self.random.uniform(0.0, 0.8)  # somewhere after the post went out
                threading.Timer(delay, self.kill_leader, args=(f"timer+{delay:.2f}s",)).start()
            elif armed[0] == phase:
                self.armed = None
                return self.kill_leader(f"{phase} {request.endpoint}") and phase == "received"
            return False

    def disarm(self) -> None:
        with self.lock:
            self.armed = None

    def kill_leader(self, point: str) -> bool:
        with self.lock:
            holder = self.client.get(self.lease_key)
            pid = int(holder.split(":")[1]) if holder else None
            if pid not in self.pids:
                return False  # no lease, or a dead daemon's lease not yet lapsed
            os.kill(pid, signal.SIGKILL)
            self.pids.discard(pid)
            self.kills.append(f"{time.monotonic():.1f} {point}")
            self.fired.set()
            return True


def _run(
    tmp_path: Path,
    account: str,
    redis_url: str,
    emulator,
    trained_checkpoints: Path,
    *,
    mentions: int,
    kills: int,
) -> None:
    data = x_config_data(tmp_path / "volume", account, redis_url, emulator.url)
    data["schedule"].update(post_every_seconds=3600, scrape_every_seconds=3600)
    config = tmp_path / "bot.yaml"
    config.write_text(yaml.safe_dump(data))
    shutil.copytree(trained_checkpoints, tmp_path / "volume" / "checkpoints")
    poorrichard = emulator.add_user("poorrichard")
    emulator.add_post(poorrichard, "Early to bed and early to rise")
    authors = [emulator.add_user(f"fan{n}") for n in range(mentions)]
    burst = [emulator.add_post(a, f"@parrotbot tell me something, #{n}") for n, a in
             enumerate(authors)]  # fmt: skip
    emulator.random.seed(7)  # a fixed, varied pattern of faults
    emulator.inject(CREATE, Fault("lost_response", times=None, probability=0.25))
    emulator.inject(CREATE, Fault("status_after_commit", status=503, times=None, probability=0.1))

    client = redis.Redis.from_url(redis_url, decode_responses=True)
    killer = Killer(client, f"parrotbot:{account}:lease", set(), seed=kills)
    emulator.hooks.append(killer.hook)
    started: list[DaemonProcess] = []

    def start() -> DaemonProcess:
        daemon = DaemonProcess(config, tmp_path / f"daemon-{len(started)}.log", env=X_SECRETS)
        daemon.start()
        started.append(daemon)
        killer.pids.add(daemon.pid)
        return daemon

    def bot_replies(post_id: str) -> list:
        return [p for p in emulator.replies_to(post_id) if p.author_id == emulator.bot.id]

    def all_recorded() -> bool:
        keys = [f"parrotbot:{account}:reply:{m.id}" for m in burst]
        return all(client.hget(key, "outcome") for key in keys)

    began = time.monotonic()
    try:
        start()
        start()  # the warm standby
        for number in range(kills):
            phase, endpoint = KILL_POINTS[number % len(KILL_POINTS)]
            killer.arm(phase, endpoint)
            # The first life includes loading the model; later ones take over warm.
            if not killer.fired.wait(timeout=40 if number == 0 else 12):
                killer.disarm()  # the point never came: kill now
                point = f"fallback after {phase} {endpoint}"
                wait_until(
                    lambda point=point: killer.kill_leader(point),
                    timeout=30,
                    message=f"no live leader to kill; kills so far: {killer.kills}",
                )
            start()  # the next standby
        killer.disarm()
        wait_until(all_recorded, timeout=90, message="not every mention got an outcome")
        assert len(killer.kills) == kills, killer.kills
        survivors = [d for d in started if d.pid in killer.pids]
        for daemon in survivors:  # stop them together; each must exit cleanly
            daemon.process.send_signal(signal.SIGTERM)
        assert [d.process.wait(timeout=15) for d in survivors] == [0] * len(survivors)
    finally:
        for daemon in started:
            daemon.kill()

    for mention in burst:
        assert len(bot_replies(mention.id)) == 1, f"mention {mention.id}: {bot_replies(mention.id)}"
        record = client.hgetall(f"parrotbot:{account}:reply:{mention.id}")
        assert record["outcome"] in ("replied", "reconciled")
        assert record["tweet_id"] == bot_replies(mention.id)[0].id
    posts = emulator.requests_to(CREATE)
    lost = [r for r in posts if r.post_id and r.status != 201]
    assert lost, "the lost-response faults never struck"
    print(
        "began",
        f"{began:.1f}",
        "kills:",
        killer.kills,
        "lost answers:",
        len(lost),
        "posts:",
        len(posts),
        "end",
        f"{time.monotonic():.1f}",
    )
    assert len([r for r in posts if r.post_id]) == mentions  # every created post is one reply
    logs = "".join(d.text() for d in started)
    assert '"event": "reply.reconciled"' in logs
    for name, value in X_SECRETS.items():
        assert value not in logs, f"{name} reached a daemon log"


def test_every_mention_gets_exactly_one_reply_across_sigkills(
    tmp_path: Path, account: str, redis_url: str, emulator, trained_checkpoints: Path
) -> None:
    _run(tmp_path, account, redis_url, emulator, trained_checkpoints, mentions=12, kills=10)


@pytest.mark.slow
def test_exactly_once_through_many_sigkills(
    tmp_path: Path, account: str, redis_url: str, emulator, trained_checkpoints: Path
) -> None:
    _run(tmp_path, account, redis_url, emulator, trained_checkpoints, mentions=60, kills=40)
