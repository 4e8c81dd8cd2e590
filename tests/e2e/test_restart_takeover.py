"""A daemon restarted after SIGKILL takes its dead predecessor's lease at once (real processes).

The lease TTL here is long (60 s), so a restart that waited it out could not pass: the new
daemon must become leader while the dead daemon's lease still had time left, and it proves
so from Redis itself (the takeover script returns that lease's PTTL when it replaced it).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
from pathlib import Path

import pytest
import redis
import yaml

from tests.support.configs import offline_config_data
from tests.support.daemon_process import read_jsonl, wait_until

LONG_TTL = 60


@pytest.fixture
def config(tmp_path: Path, account: str, redis_url: str, trained_checkpoints: Path) -> Path:
    """The tiny offline config with a model published and a lease TTL too long to wait out."""
    data = offline_config_data(tmp_path / "volume", account, redis_url)
    data["schedule"]["lease_ttl_seconds"] = LONG_TTL
    data["schedule"]["post_every_seconds"] = 3600  # replies only: one thing to wait for
    shutil.copytree(trained_checkpoints, tmp_path / "volume" / "checkpoints")
    path = tmp_path / "bot.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def add_mention(volume: Path, mention_id: str) -> None:
    path = volume / "local" / "mentions.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as mentions:
        record = {"id": mention_id, "author": "alice", "text": "@parrotbot well?"}
        mentions.write(json.dumps(record) + "\n")


def test_a_restart_after_sigkill_takes_the_dead_lease_before_its_ttl(
    config: Path, daemons, redis_client: redis.Redis, account: str
) -> None:
    volume = Path(yaml.safe_load(config.read_text())["data_dir"])
    lease_key = f"parrotbot:{account}:lease"
    first = daemons(config, "first")
    first_id = first.wait_for("daemon.starting")["instance"]
    first.wait_for("lease.acquired", timeout=120)

    first.process.send_signal(signal.SIGKILL)  # no release: the lease stays with a dead id
    first.process.wait()
    assert redis_client.get(lease_key) == first_id
    assert redis_client.pttl(lease_key) > 0

    add_mention(volume, "9100000000000000001")
    second = daemons(config, "second")
    second_id = second.wait_for("daemon.starting")["instance"]
    acquired = second.wait_for("lease.acquired", timeout=LONG_TTL + 60)

    names = [event["event"] for event in second.events()]
    assert "lease.taken_over" in names, "the restart waited out the dead daemon's lease"
    assert second.named("instance_lock.acquired")[0]["previous"] == first_id
    assert names.index("lease.taken_over") < names.index("lease.acquired")
    taken = second.named("lease.taken_over")[0]
    assert taken["dead_instance"] == first_id
    assert taken["remaining_ms"] > 0  # the dead lease was still alive when it was replaced
    assert acquired["instance"] == second_id
    assert redis_client.get(lease_key) == second_id

    reply = second.wait_for("reply.published", timeout=120)
    assert reply["mention_id"] == "9100000000000000001"
    outbox = read_jsonl(volume / "local" / "outbox.jsonl")
    assert [t["in_reply_to_tweet_id"] for t in outbox if t.get("in_reply_to_tweet_id")] == [
        "9100000000000000001"
    ]
    assert second.stop() == 0


def test_a_standby_on_the_same_volume_stays_standby_while_the_holder_lives(
    config: Path, daemons, redis_client: redis.Redis, account: str
) -> None:
    """Two live daemons on one volume: the second gets no lock and takes nothing over."""
    lease_key = f"parrotbot:{account}:lease"
    active = daemons(config, "active")
    active_id = active.wait_for("daemon.starting")["instance"]
    active.wait_for("lease.acquired", timeout=120)
    standby = daemons(config, "standby")
    standby.wait_for("lease.waiting", timeout=120)
    mark = len(standby.events())
    # The active daemon keeps answering while the standby, holding no lock, waits.
    add_mention(Path(yaml.safe_load(config.read_text())["data_dir"]), "9100000000000000002")
    active.wait_for("reply.published", timeout=120)
    assert not standby.named("instance_lock.acquired")
    assert not standby.named("lease.taken_over")
    assert not [e for e in standby.events()[mark:] if e["event"] == "lease.acquired"]
    assert redis_client.get(lease_key) == active_id

    active.process.send_signal(signal.SIGKILL)
    active.process.wait()
    # The standby learns of the death from the lock at its next round, not from the TTL.
    standby.wait_for("lease.acquired", timeout=LONG_TTL + 60)
    taken = standby.named("lease.taken_over")
    assert taken and taken[0]["dead_instance"] == active_id and taken[0]["remaining_ms"] > 0
    assert redis_client.get(lease_key) == standby.wait_for("daemon.starting")["instance"]
    assert standby.stop() == 0


def test_a_sigterm_taken_by_another_thread_still_stops_the_daemon_promptly(
    config: Path, daemons
) -> None:
    """The kernel may deliver SIGTERM to any thread; the daemon must not sleep through it.

    Sent to one of the daemon's other threads by its thread id (Linux then delivers the
    process-wide signal to that thread), it reached the main thread only when its wait for
    the next lease round ended: up to 20 s with this config's 60 s TTL.
    """
    daemon = daemons(config, "leader")
    daemon.wait_for("lease.acquired", timeout=120)
    pid = daemon.process.pid
    others = [int(t.name) for t in Path(f"/proc/{pid}/task").iterdir() if int(t.name) != pid]
    assert others, "the leader runs scheduler and health threads"
    os.kill(others[0], signal.SIGTERM)
    assert daemon.process.wait(timeout=5) == 0


def test_a_killed_daemon_takes_its_model_worker_with_it(
    config: Path, daemons, redis_client: redis.Redis, account: str
) -> None:
    """The worker watches its stdin, the daemon's pipe: SIGKILL closes it, the worker ends."""
    daemon = daemons(config, "leader")
    instance = daemon.wait_for("daemon.starting")["instance"]
    daemon.wait_for("lease.acquired", timeout=120)
    workers_key = f"parrotbot:{account}:workers"
    wait_until(
        lambda: redis_client.hget(workers_key, instance), timeout=60, message="no worker recorded"
    )
    worker_pid = json.loads(redis_client.hget(workers_key, instance))["pid"]
    assert Path(f"/proc/{worker_pid}").exists()
    daemon.process.send_signal(signal.SIGKILL)
    daemon.process.wait()
    wait_until(lambda: not _alive(worker_pid), timeout=2, message="the worker outlived us")


def _alive(pid: int) -> bool:
    """Running and not a zombie (an orphan's zombie is reaped by init, not by us)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"
