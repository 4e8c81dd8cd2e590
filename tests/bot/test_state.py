"""Redis state: cursors, the lease, posted history, and the embedded Redis."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import redis

from bot.config import BotConfig
from bot.lease import Lease
from bot.state import BotState, PostedTweet, connect


def config_for(account: str, data_dir: Path, redis_url: str | None) -> BotConfig:
    return BotConfig(account=account, data_dir=data_dir, redis_url=redis_url, targets=["someone"])


def test_keys_live_under_the_account_namespace(
    account: str, redis_url: str, tmp_path: Path
) -> None:
    state = BotState(connect(config_for(account, tmp_path, redis_url)), account)
    state.set_cursor("mentions", "5")
    state.record_posted(PostedTweet(tweet_id="9", text="hi", kind="post", model_version="v1"))
    state.set_current_model("v1", {"step": 3})
    names = set(state.redis.scan_iter(match="parrotbot:*"))
    mine = {name for name in names if name.startswith(f"parrotbot:{account}:")}
    assert mine == {
        f"parrotbot:{account}:cursor:mentions",
        f"parrotbot:{account}:posted",
        f"parrotbot:{account}:model:current",
        f"parrotbot:{account}:posted_count:{time.strftime('%Y%m%d', time.gmtime())}",
    }
    assert state.posted_today() == {"posts": 1, "replies": 0}


def test_cursor_only_moves_forward_numerically(
    account: str, redis_url: str, tmp_path: Path
) -> None:
    state = BotState(connect(config_for(account, tmp_path, redis_url)), account)
    assert state.cursor("mentions") is None
    state.set_cursor("mentions", "999")
    state.set_cursor("mentions", "1000")  # longer number: larger, although "1000" < "999" as text
    assert state.cursor("mentions") == "1000"
    state.set_cursor("mentions", "998")
    assert state.cursor("mentions") == "1000"


def test_state_survives_a_new_connection(account: str, redis_url: str, tmp_path: Path) -> None:
    config = config_for(account, tmp_path, redis_url)
    first = BotState(connect(config), account)
    first.set_cursor("timeline:someone", "1234")
    first.record_posted(PostedTweet(tweet_id="77", text="hello", kind="post", model_version="v"))
    first.redis.close()
    second = BotState(connect(config), account)
    assert second.cursor("timeline:someone") == "1234"
    assert second.recent_posted()[0]["text"] == "hello"


def test_lease_admits_one_holder_until_it_lapses(redis_client: redis.Redis, account: str) -> None:
    key = f"parrotbot:{account}:lease"
    first = Lease(redis_client, key, "daemon-a", ttl_ms=300)
    second = Lease(redis_client, key, "daemon-b", ttl_ms=300)
    assert first.acquire()
    assert not second.acquire()
    assert first.renew()
    assert second.holder() == "daemon-a"
    redis_client.pexpire(key, 1)  # as if daemon-a died and stopped renewing
    assert _eventually(second.acquire)
    assert not first.renew()
    first.release()  # releasing a lease we lost must not free someone else's
    assert second.holder() == "daemon-b"
    second.release()
    assert second.holder() is None


def _eventually(predicate, attempts: int = 200) -> bool:
    import time

    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return False


EMBEDDED_WRITER = """
import sys
from pathlib import Path
from bot.config import BotConfig
from bot.state import BotState, connect
config = BotConfig(account="emb", data_dir=Path(sys.argv[1]), targets=["someone"])
state = BotState(connect(config), "emb")
if sys.argv[2] == "write":
    state.set_cursor("mentions", "4242")
else:
    print(state.cursor("mentions"))
"""


def test_embedded_redis_persists_across_processes(tmp_path: Path) -> None:
    """With no redis_url the bot runs its own redis-server, and a restart finds its state."""
    run = [sys.executable, "-c", EMBEDDED_WRITER, str(tmp_path)]
    subprocess.run([*run, "write"], check=True, timeout=60)
    # The first process shut its server down on exit (it was the last client), so this
    # read starts a fresh server from the files under data_dir/redis.
    read = subprocess.run([*run, "read"], check=True, timeout=60, capture_output=True, text=True)
    assert read.stdout.strip() == "4242"
    assert (tmp_path / "redis").is_dir()


def test_a_redis_call_that_hangs_fails_well_within_a_third_of_the_lease_ttl(
    account: str, redis_url: str, tmp_path: Path
) -> None:
    """A hung call (and its one retry) ends long before the daemon's next lease renewal."""
    import time

    from tests.support.redis_faults import RedisFaultProxy

    ttl = 6
    target = redis.Redis.from_url(redis_url).connection_pool.connection_kwargs
    proxy = RedisFaultProxy(target["host"], target["port"]).start()
    try:
        config = config_for(account, tmp_path, f"redis://127.0.0.1:{proxy.port}/0")
        config = config.model_copy(
            update={"schedule": config.schedule.model_copy(update={"lease_ttl_seconds": ttl})}
        )
        client = connect(config)
        client.ping()
        proxy.stall("GET", "hung", times=10)
        started = time.monotonic()
        try:
            client.get("hung")
        except redis.TimeoutError:
            pass
        else:
            raise AssertionError("a call that never got an answer returned")
        elapsed = time.monotonic() - started
    finally:
        proxy.stop()
    assert proxy.hits["GET"] == 2  # the call and its one retry
    assert elapsed < ttl / 3, f"a hung call took {elapsed:.1f} s (lease TTL {ttl} s)"


def test_the_launcher_client_waits_out_a_blocking_read_under_a_short_lease(
    account: str, redis_url: str, tmp_path: Path
) -> None:
    """Its socket timeout adds the longest block, so an idle XREADGROUP is not a timeout."""
    from bot.retrain import LAUNCHER_BLOCK_SECONDS, build_launcher
    from bot.state import call_timeout

    config = config_for(account, tmp_path, redis_url)
    config = config.model_copy(
        update={"schedule": config.schedule.model_copy(update={"lease_ttl_seconds": 3})}
    )
    assert call_timeout(config) < LAUNCHER_BLOCK_SECONDS
    launcher = build_launcher(config)
    launcher.queue.ensure_group()
    assert launcher.queue.read_new(launcher.consumer, int(LAUNCHER_BLOCK_SECONDS * 1000)) == []
