"""The launcher with the local backend: the real trainer as a child process, real Redis."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis
from structlog.testing import capture_logs

from bot.config import FilterConfig, GenerationConfig
from bot.generation import GenerationService
from bot.hotload import CheckpointWatcher
from bot.state import BotState
from infra.backend import LaunchError, Outcome, OutcomeKind, TransientLaunchError
from infra.backends.local import LocalBackend
from infra.job import Job, JobState
from infra.launcher import Launcher
from infra.retrain_queue import RetrainQueue
from infra.settings import LaunchRetry
from tests.support.configs import SAMPLE_TIMELINE
from tests.support.retrain import job_spec, scrape_more, wait_job
from training.dataset import dataset_hash, load_tweets
from training.publish import read_latest

TINY = {"units": 16, "embedding_dim": 8, "seq_len": 16, "epochs": 1, "batch_size": 64}


@pytest.fixture
def queue(redis_client: redis.Redis, account: str) -> RetrainQueue:
    return RetrainQueue(redis_client, account)


@pytest.fixture
def volume(tmp_path: Path) -> Path:
    datasets = tmp_path / "volume" / "datasets"
    datasets.mkdir(parents=True)
    shutil.copyfile(SAMPLE_TIMELINE, datasets / "poorrichard.jsonl")
    return tmp_path / "volume"


@pytest.fixture
def launchers(queue: RetrainQueue, volume: Path) -> Iterator[Callable[[], Launcher]]:
    started: list[Launcher] = []

    def start() -> Launcher:
        launcher = Launcher(queue, LocalBackend(volume), claim_idle_seconds=60, block_ms=100)
        launcher.start()
        started.append(launcher)
        return launcher

    yield start
    for launcher in started:
        launcher.stop(timeout=5)


def request(queue: RetrainQueue, account: str, volume: Path, dataset: str = "poorrichard") -> Job:
    path = str(volume / "datasets" / f"{dataset}.jsonl")
    return queue.request(job_spec(account, [path], model_config=TINY)).job


def test_the_local_backend_trains_and_the_result_is_hot_loaded(
    queue: RetrainQueue, launchers, account: str, volume: Path, redis_client: redis.Redis
) -> None:
    job = request(queue, account, volume)
    launchers()
    done = wait_job(queue, job.id, lambda j: j.state.terminal, "finished")
    assert done.state is JobState.DONE, done.log_tail
    model_dir = volume / "checkpoints" / "char_rnn"
    assert done.version == read_latest(model_dir)
    assert done.instance_id.startswith("local:") and done.cost_estimate == 0
    assert queue.history(job.id) == ["queued", "launching", "running", "done"]
    assert queue.in_flight("char_rnn") == (None, None)

    service = GenerationService(GenerationConfig(max_length=40), FilterConfig())
    watcher = CheckpointWatcher(model_dir, "char_rnn", service, BotState(redis_client, account))
    assert watcher.check() and service.current.version == done.version


def test_a_stopped_launchers_job_is_requeued_and_finished_by_the_next(
    queue: RetrainQueue, launchers, account: str, volume: Path
) -> None:
    job = request(queue, account, volume)
    first = launchers()
    running = wait_job(queue, job.id, lambda j: j.state is JobState.RUNNING, "ran")
    pid = int(running.instance_id.rsplit(":", 1)[1])
    first.stop(timeout=5)
    stopped = queue.get(job.id)
    assert stopped.state is JobState.QUEUED and stopped.outcome == "interrupted: launcher stopped"
    assert not _alive(pid), "the trainer must not outlive its launcher's stop"

    launchers()  # takes the released entry at once, without waiting for claim_idle
    done = wait_job(queue, job.id, lambda j: j.state.terminal, "finished")
    assert done.state is JobState.DONE and done.attempt == 2, done.log_tail
    assert queue.history(job.id)[-4:] == ["queued", "launching", "running", "done"]


def test_a_failing_trainer_fails_the_job_with_its_log_tail(
    queue: RetrainQueue, launchers, account: str, volume: Path
) -> None:
    (volume / "datasets" / "broken.jsonl").write_text("{not json\n")
    job = request(queue, account, volume, dataset="broken")
    launchers()
    failed = wait_job(queue, job.id, lambda j: j.state.terminal, "finished")
    assert failed.state is JobState.FAILED
    assert failed.outcome.startswith("trainer failed") and "broken.jsonl" in failed.outcome
    assert any("train.failed" in line for line in failed.log_tail)
    assert failed.attempt == 1, "a failure is not retried"


X_AND_AWS_SECRETS = {
    "CONSUMER_KEY": "ck-launcherTest1",
    "CONSUMER_SECRET": "cs-launcherTest2",
    "ACCESS_TOKEN": "99-launcherTest3",
    "ACCESS_TOKEN_SECRET": "ats-launcherTest4",
    "BEARER_TOKEN": "AAAAlauncherTest5",
    "AWS_SECRET_ACCESS_KEY": "aws-launcherTest6",
    "REDIS_PASSWORD": "redis-launcherTest7",
    "HF_TOKEN": "hf_launcherTest8",
}


def test_the_trainer_child_gets_no_credentials(
    queue: RetrainQueue, launchers, account: str, volume: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The daemon holds the X keys; the trainer it starts (real process) sees none of them."""
    for name, value in X_AND_AWS_SECRETS.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("TF_CPP_MIN_LOG_LEVEL", raising=False)
    job = request(queue, account, volume)
    launchers()
    running = wait_job(queue, job.id, lambda j: j.instance_id.startswith("local:"), "started")
    pid = int(running.instance_id.rsplit(":", 1)[1])
    raw = Path(f"/proc/{pid}/environ").read_bytes()
    environ = dict(item.split("=", 1) for item in raw.decode().split("\0") if "=" in item)
    assert not set(X_AND_AWS_SECRETS) & set(environ), sorted(environ)
    for value in X_AND_AWS_SECRETS.values():
        assert value not in raw.decode()
    assert environ["PATH"] == os.environ["PATH"]
    assert environ["TF_CPP_MIN_LOG_LEVEL"] == "3"  # its log tail holds no TF start-up notices
    done = wait_job(queue, job.id, lambda j: j.state.terminal, "finished")
    assert done.state is JobState.DONE, done.log_tail
    assert not any("cuInit" in line or "cudart_stub" in line for line in done.log_tail)


def test_the_stored_log_tail_and_outcome_are_redacted(
    queue: RetrainQueue, launchers, account: str, volume: Path, redis_client: redis.Redis
) -> None:
    """A trainer's failure text carrying a credential-shaped value reaches Redis masked."""
    folder = volume / "datasets" / "oauth_token=tRaInErLeAk42"
    folder.mkdir()
    (folder / "broken.jsonl").write_text("{not json\n")
    job = queue.request(job_spec(account, [str(folder / "broken.jsonl")], model_config=TINY)).job
    launchers()
    failed = wait_job(queue, job.id, lambda j: j.state.terminal, "finished")
    assert failed.state is JobState.FAILED
    raw = redis_client.hgetall(queue.keys.job(job.id))
    assert "tRaInErLeAk42" in raw["datasets"]  # the spec is ours, as requested
    assert "tRaInErLeAk42" not in raw["outcome"] + raw["log_tail"], raw
    assert "oauth_token=***" in raw["outcome"]
    assert any("oauth_token=***" in line for line in json.loads(raw["log_tail"]))


def test_a_job_records_the_data_its_attempt_trained_on(
    queue: RetrainQueue, launchers, account: str, volume: Path
) -> None:
    """Regression: the record kept the dataset hash of when the job was queued, though the
    trainer read the datasets as they were when it started."""
    path = volume / "datasets" / "poorrichard.jsonl"
    queued_hash = dataset_hash(load_tweets([path]))
    spec = job_spec(account, [str(path)], model_config=TINY)
    job = queue.request(dataclasses.replace(spec, dataset_hash=queued_hash)).job
    new_hash = scrape_more(path)  # while the job waits (here: for a launcher)
    assert new_hash != queued_hash and queue.get(job.id).dataset_hash == queued_hash
    with capture_logs() as logs:
        launchers()
        done = wait_job(queue, job.id, lambda j: j.state.terminal, "finished")
    assert done.state is JobState.DONE, done.log_tail
    assert done.dataset_hash == new_hash
    manifest = volume / "checkpoints" / "char_rnn" / done.version / "manifest.json"
    assert json.loads(manifest.read_text())["dataset_hash"] == new_hash  # what it trained on
    changed = [e for e in logs if e["event"] == "launcher.dataset_changed"]
    assert [(e["old_hash"], e["new_hash"]) for e in changed] == [(queued_hash, new_hash)]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}").exists() and "Z" not in Path(f"/proc/{pid}/stat").read_text()[:64]


class InterruptedRun:
    """An attempt the cloud reclaimed at once, whose cleanup takes as long as the test says."""

    instance_id = "i-slow"

    def __init__(self, cloud: SlowCloud) -> None:
        self.cloud = cloud

    def poll(self) -> Outcome:
        return Outcome(OutcomeKind.INTERRUPTED, "reclaimed")

    def cost(self) -> float:
        return 0.0

    def log_tail(self, lines: int = 20) -> list[str]:
        return []

    def interrupt(self, timeout: float) -> None:
        """Nothing runs here."""

    def terminate(self, reason: str) -> None:
        """Nothing runs here."""

    def cleanup(self) -> None:
        self.cloud.wait_here("cleanup")


class SlowCloud(LocalBackend):
    """A backend whose cloud calls take as long as the test says (a spot fleet, a volume moved
    to another zone, an instance slow to end), seen from the launcher."""

    survives_launcher = True

    def __init__(self, volume: Path, slow: str) -> None:
        super().__init__(volume)
        self.slow = slow
        self.waiting = threading.Event()
        self.finish = threading.Event()

    def wait_here(self, step: str) -> None:
        if step == self.slow:
            self.waiting.set()
            self.finish.wait(30)

    def start(self, job: Job, progress):  # type: ignore[no-untyped-def]
        if job.attempt > 1:
            raise LaunchError("the test ends the job here")
        self.wait_here("start")
        if self.slow == "start":
            raise LaunchError("the test ends the job here")
        return InterruptedRun(self)

    def adopt(self, job: Job) -> None:
        return None


@pytest.mark.parametrize("slow", ["start", "cleanup"])
def test_a_long_launch_or_cleanup_keeps_the_entry_claimed(
    queue: RetrainQueue, account: str, volume: Path, slow: str
) -> None:
    """Regression (chaos suite): while a live launcher's spot launch (or the cleanup of an
    interrupted attempt) ran, another launcher claimed its entry and launched the job again."""
    backend = SlowCloud(volume, slow)
    launcher = Launcher(queue, backend, claim_idle_seconds=1, block_ms=100)
    job = request(queue, account, volume)
    launcher.start()
    try:
        assert backend.waiting.wait(30), f"the {slow} never began"
        deadline = time.monotonic() + 2.5  # well past claim_idle
        while time.monotonic() < deadline:
            assert queue.reclaim("another-launcher", 1000) == [], "a live job was taken"
            time.sleep(0.1)
        backend.finish.set()
        done = wait_job(queue, job.id, lambda j: j.state.terminal, "ended", timeout=30)
    finally:
        backend.finish.set()
        launcher.stop(timeout=5)
    assert done.attempt == (1 if slow == "start" else 2) and done.consumer == launcher.consumer


@dataclass(frozen=True)
class LaunchTry:
    job_id: str
    at: float
    due_at: float | None  # the job's launch_retry_at when the launcher tried
    launched: bool


class SpotRun:
    """An instance the test ends by publishing its job's version (what the user-data does)."""

    def __init__(self, cloud: SpotCloud, job_id: str) -> None:
        self.cloud = cloud
        self.job_id = job_id
        self.instance_id = f"i-{job_id}"

    def poll(self) -> Outcome | None:
        if self.job_id in self.cloud.published:
            return Outcome(OutcomeKind.DONE, "published v1", version="v1")
        return None

    def cost(self) -> float:
        return 0.0

    def log_tail(self, lines: int = 20) -> list[str]:
        return []

    def interrupt(self, timeout: float) -> None:
        """The instance goes on; the next launcher adopts it."""

    def terminate(self, reason: str) -> None:
        """Nothing runs here."""

    def cleanup(self) -> None:
        """Nothing runs here."""


class SpotCloud:
    """A spot cloud seen from the launcher: capacity only for the model kinds the test opens
    (a launch elsewhere fails transiently, as CreateFleet does with no capacity), and
    instances that run until the test publishes their job's version."""

    name = "spot"
    max_run_seconds: float | None = None
    poll_seconds = 0.05
    survives_launcher = True

    def __init__(self, retry: LaunchRetry) -> None:
        self.launch_retry = retry
        self.capacity: set[str] = set()
        self.published: set[str] = set()
        self.tries: list[LaunchTry] = []

    def start(self, job: Job, progress):  # type: ignore[no-untyped-def]
        launched = job.model_kind in self.capacity
        self.tries.append(LaunchTry(job.id, time.time(), job.launch_retry_at, launched))
        if not launched:
            raise TransientLaunchError("no spot capacity: InsufficientInstanceCapacity")
        return SpotRun(self, job.id)

    def adopt(self, job: Job) -> SpotRun | None:
        return SpotRun(self, job.id) if job.instance_id else None

    def tries_of(self, job_id: str) -> list[LaunchTry]:
        return [t for t in list(self.tries) if t.job_id == job_id]


def spot_request(queue: RetrainQueue, account: str, volume: Path, model_kind: str) -> Job:
    path = str(volume / "datasets" / "poorrichard.jsonl")
    return queue.request(job_spec(account, [path], model_kind=model_kind)).job


def test_a_job_waiting_for_spot_capacity_does_not_hold_up_another_models_job(
    queue: RetrainQueue, account: str, volume: Path
) -> None:
    """Regression: the launcher slept until the waiting job's next launch was due (for up to
    `give_up_seconds`), so a job of another model that could run now waited behind it."""
    cloud = SpotCloud(LaunchRetry(first_seconds=1, max_seconds=1, give_up_seconds=300))
    cloud.capacity.add("gpt2")
    launcher = Launcher(queue, cloud, claim_idle_seconds=60, block_ms=100)
    waiting = spot_request(queue, account, volume, "char_rnn")
    launcher.start()
    try:
        wait_job(queue, waiting.id, lambda j: j.launch_failures >= 1, "waited", timeout=10)
        other = spot_request(queue, account, volume, "gpt2")
        wait_job(queue, other.id, lambda j: j.state is JobState.RUNNING, "ran", timeout=10)
        # The waiting job keeps its model's slot: a second char_rnn job is queued, not started.
        second = spot_request(queue, account, volume, "char_rnn")
        assert second.id != waiting.id, "a job waiting for capacity takes no more requests"
        cloud.published.add(other.id)
        done = wait_job(queue, other.id, lambda j: j.state.terminal, "finished", timeout=10)
        assert done.state is JobState.DONE
        still = queue.get(waiting.id)
        assert still.state is JobState.QUEUED and still.launch_retry_at is not None
        assert still.outcome.startswith("waiting to launch: no spot capacity")
        assert queue.in_flight("char_rnn") == (second.id, waiting.id)
        assert not any(t.launched for t in cloud.tries_of(waiting.id))

        cloud.capacity.add("char_rnn")
        running = wait_job(queue, waiting.id, lambda j: j.state is JobState.RUNNING, "ran", 10)
        assert cloud.tries_of(second.id) == [], "two char_rnn jobs in flight"
        cloud.published.add(waiting.id)
        wait_job(queue, waiting.id, lambda j: j.state.terminal, "finished", timeout=10)
        wait_job(queue, second.id, lambda j: j.state is JobState.RUNNING, "ran", timeout=10)
        cloud.published.add(second.id)
        wait_job(queue, second.id, lambda j: j.state.terminal, "finished", timeout=10)
    finally:
        launcher.stop(timeout=5)
    tries = cloud.tries_of(waiting.id)
    assert [t.launched for t in tries].count(True) == 1, "launched once"
    assert all(t.at >= t.due_at for t in tries[1:]), "a retry came before it was due"
    assert running.attempt == 1 and running.launch_waited_s > 0
    assert queue.get(second.id).state is JobState.DONE


def test_a_dead_launchers_waiting_job_is_claimed_and_launched_when_due(
    queue: RetrainQueue, account: str, volume: Path
) -> None:
    cloud = SpotCloud(LaunchRetry(first_seconds=1, max_seconds=1, give_up_seconds=300))
    cloud.capacity.add("char_rnn")
    job = spot_request(queue, account, volume, "char_rnn")
    # A launcher took the job, found no capacity and died: the entry stays pending, untouched.
    queue.ensure_group()
    (delivery,) = queue.read_new("dead-launcher", block_ms=100)
    assert delivery.job_id == job.id and queue.acquire(job)
    due_at = time.time() + 2.5  # past claim_idle: the live launcher holds it parked first
    queue.set_state(
        job, JobState.QUEUED, outcome="waiting to launch: no spot capacity",
        launch_failures=1, launch_waiting_since=time.time(), launch_retry_at=due_at,
    )  # fmt: skip
    launcher = Launcher(queue, cloud, claim_idle_seconds=1, block_ms=100)
    launcher.start()
    try:
        running = wait_job(queue, job.id, lambda j: j.state is JobState.RUNNING, "ran", 15)
    finally:
        launcher.stop(timeout=5)
    (launch,) = cloud.tries_of(job.id)
    assert launch.at >= due_at and running.consumer == launcher.consumer
    assert queue.history(job.id)[-2:] == ["launching", "running"]


def test_a_stopping_launcher_hands_its_waiting_job_on(
    queue: RetrainQueue, account: str, volume: Path
) -> None:
    cloud = SpotCloud(LaunchRetry(first_seconds=30, max_seconds=30, give_up_seconds=300))
    launcher = Launcher(queue, cloud, claim_idle_seconds=60, block_ms=100)
    job = spot_request(queue, account, volume, "char_rnn")
    launcher.start()
    waiting = wait_job(queue, job.id, lambda j: j.launch_failures == 1, "waited", timeout=10)
    stopping = time.monotonic()
    launcher.stop(timeout=5)
    # Far inside the 30 s wait, and loose enough for a busy machine: the stop cut it short.
    assert time.monotonic() - stopping < 15 and not launcher._thread.is_alive()
    claimed = queue.reclaim("next-launcher", min_idle_ms=60_000)
    assert [d.job_id for d in claimed] == [job.id], "the entry was not handed on"
    kept = queue.get(job.id)
    assert kept.state is JobState.QUEUED and kept.launch_retry_at == waiting.launch_retry_at
    assert queue.in_flight("char_rnn") == (None, job.id)
