"""The volume's instance lock (real flock, real processes) and the lease takeover (real Redis)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import redis

from bot.instance_lock import InstanceLock
from bot.keys import Keys
from bot.lease import Lease

# A holder in another process: takes the lock, says so, starts a long-lived child, and waits.
HOLDER = """
import subprocess, sys, time
from pathlib import Path
from bot.instance_lock import InstanceLock
lock = InstanceLock(Path(sys.argv[1]), sys.argv[2])
assert lock.try_acquire()
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
print(child.pid, flush=True)
time.sleep(600)
"""


def start_holder(path: Path, instance_id: str) -> tuple[subprocess.Popen[str], int]:
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(path), instance_id],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout is not None
    child_pid = int(holder.stdout.readline())  # printed only once the lock is held
    return holder, child_pid


def test_a_fresh_volume_has_no_previous_holder_and_records_ours(tmp_path: Path) -> None:
    lock = InstanceLock(tmp_path / "volume" / "daemon.lock", "host:1:aaa")
    assert lock.try_acquire()
    assert lock.previous is None
    assert (tmp_path / "volume" / "daemon.lock").read_text() == "host:1:aaa\n"
    lock.release()


def test_a_live_holder_keeps_the_lock_and_its_id(tmp_path: Path) -> None:
    path = tmp_path / "daemon.lock"
    first = InstanceLock(path, "host:1:aaa")
    assert first.try_acquire()
    second = InstanceLock(path, "host:2:bbb")
    assert not second.try_acquire()
    assert not second.held
    assert path.read_text() == "host:1:aaa\n"
    first.release()
    assert second.try_acquire()
    assert second.previous == "host:1:aaa"
    assert path.read_text() == "host:2:bbb\n"
    second.release()


def test_a_killed_holder_frees_the_lock_even_while_its_child_lives(tmp_path: Path) -> None:
    """The daemon's trainer may outlive it; the lock must not (the fd is close-on-exec)."""
    path = tmp_path / "daemon.lock"
    holder, child_pid = start_holder(path, "host:10:dead")
    try:
        assert not InstanceLock(path, "host:11:new").try_acquire()
        holder.kill()
        holder.wait()
        lock = InstanceLock(path, "host:11:new")
        assert lock.try_acquire()
        assert lock.previous == "host:10:dead"
        lock.release()
    finally:
        holder.kill()
        holder.wait()
        subprocess.run(["kill", "-9", str(child_pid)], check=False)


def test_an_unusable_lock_path_raises_oserror(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(OSError):
        InstanceLock(blocker / "daemon.lock", "host:1:aaa").try_acquire()


def lease_for(client: redis.Redis, account: str, owner: str) -> Lease:
    return Lease(client, Keys(account).lease, owner, ttl_ms=15_000)


def test_take_over_replaces_only_the_dead_holders_lease(
    redis_client: redis.Redis, account: str
) -> None:
    dead = lease_for(redis_client, account, "host:1:dead")
    assert dead.acquire()
    new = lease_for(redis_client, account, "host:2:new")
    assert not new.acquire()
    remaining = new.take_over_from("host:1:dead")
    assert remaining is not None and 0 < remaining <= 15_000
    assert redis_client.get(new.key) == "host:2:new"
    assert 0 < redis_client.pttl(new.key) <= 15_000
    assert new.renew()
    assert not dead.renew()  # the dead one's token no longer holds anything


def test_take_over_leaves_a_live_standbys_lease_alone(
    redis_client: redis.Redis, account: str
) -> None:
    live = lease_for(redis_client, account, "host:3:live")
    assert live.acquire()  # the dead lease lapsed and a standby took it meanwhile
    late = lease_for(redis_client, account, "host:2:new")
    assert late.take_over_from("host:1:dead") is None
    assert redis_client.get(live.key) == "host:3:live"


def test_take_over_creates_no_lease_when_there_is_none(
    redis_client: redis.Redis, account: str
) -> None:
    new = lease_for(redis_client, account, "host:2:new")
    assert new.take_over_from("host:1:dead") is None
    assert redis_client.get(new.key) is None
