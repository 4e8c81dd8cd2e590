"""Model workers: real `python -m training.worker` processes serving the session's char-RNN."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest
import redis

from bot.config import FilterConfig, GenerationConfig
from bot.generation import GenerationService
from bot.hotload import CheckpointWatcher
from bot.model_worker import ModelWorker, WorkerDied
from bot.state import BotState
from tests.support.daemon_process import wait_until
from training.publish import MANIFEST_NAME, list_versions, read_latest, set_latest

SECRETS = {
    "CONSUMER_KEY": "ck-never-in-a-worker",
    "ACCESS_TOKEN_SECRET": "ats-never-in-a-worker",
    "AWS_SECRET_ACCESS_KEY": "aws-never-in-a-worker",
    "HF_TOKEN": "hf-never-in-a-worker",
}


@pytest.fixture
def model_dir(tmp_path: Path, trained_checkpoints: Path) -> Path:
    shutil.copytree(trained_checkpoints, tmp_path / "checkpoints")
    return tmp_path / "checkpoints" / "char_rnn"


def published(model_dir: Path) -> Path:
    return model_dir / str(read_latest(model_dir))


def copy_version(model_dir: Path, name: str) -> Path:
    """A second version of the published one, as a later training run would publish it."""
    folder = model_dir / name
    shutil.copytree(published(model_dir), folder)
    manifest = json.loads((folder / MANIFEST_NAME).read_text())
    manifest["version"] = name
    (folder / MANIFEST_NAME).write_text(json.dumps(manifest))
    return folder


def test_a_worker_sees_no_credential_of_the_daemon(
    model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)
    started = ModelWorker.start("char_rnn", published(model_dir))
    try:
        environ = Path(f"/proc/{started.worker.pid}/environ").read_bytes()
        assert b"PATH=" in environ  # the allow-listed part did arrive
        for name, value in SECRETS.items():
            assert name.encode() not in environ and value.encode() not in environ
    finally:
        started.worker.close()


def thread_niceness(pid: int) -> dict[str, set[int]]:
    """Each thread name of process ``pid`` -> the niceness values its threads run at."""
    found: dict[str, set[int]] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        stat = (task / "stat").read_text()
        nice = int(stat[stat.rindex(")") + 2 :].split()[16])  # field 19 of proc_pid_stat(5)
        found.setdefault((task / "comm").read_text().strip(), set()).add(nice)
    return found


def test_only_the_loading_thread_runs_nicer_the_serving_threads_keep_the_priority(
    model_dir: Path,
) -> None:
    """TensorFlow starts its compute pool at the first op, and threads inherit the niceness
    of the thread that starts them: started by the loader, a promoted worker would serve at
    the loader's priority and the next load would compete with it as an equal."""
    own = os.getpriority(os.PRIO_PROCESS, 0)
    worker = ModelWorker.start("char_rnn", published(model_dir), niceness=10).worker
    try:
        worker.generate([""] * 8, max_length=40, temperature=1.0)
        threads = thread_niceness(worker.pid)
        assert threads["tf_Compute"] == {own}, threads
        niced = [name for name, values in threads.items() if own + 10 in values]
        assert niced == ["python"], threads  # the loader thread, now idle
    finally:
        worker.close()


def test_a_worker_killed_mid_request_is_replaced_and_the_request_still_answered(
    model_dir: Path,
) -> None:
    worker = ModelWorker.start("char_rnn", published(model_dir)).worker
    first_pid = worker.pid
    result: dict[str, object] = {}

    def ask() -> None:  # a big batch, so the kill lands while it is being sampled
        result["texts"] = worker.generate(["a"] * 256, max_length=280, temperature=1.0)

    asker = threading.Thread(target=ask)
    try:
        asker.start()
        wait_until(lambda: worker.in_flight, timeout=30, message="no request in flight")
        os.kill(first_pid, signal.SIGKILL)
        asker.join(timeout=120)
        texts = result["texts"]
        assert isinstance(texts, list) and len(texts) == 256
        assert all(t.startswith("a") for t in texts)
        stats = worker.stats()
        assert stats.pid != first_pid and stats.restarts == 1 and stats.requests == 1
    finally:
        worker.close()
    with pytest.raises(WorkerDied, match="stopped"):
        worker.generate(["a"], max_length=10, temperature=1.0)


def test_a_reply_whose_worker_is_killed_goes_out_once(
    model_dir: Path, redis_client: redis.Redis, account: str
) -> None:
    """Killed between two requests the worker is seen dead at the next one and replaced."""
    service = GenerationService(GenerationConfig(max_length=60), FilterConfig())
    watcher = CheckpointWatcher(model_dir, "char_rnn", service, BotState(redis_client, account))
    assert watcher.check()
    worker = service.current.model
    os.kill(worker.pid, signal.SIGKILL)
    batch = service.sample(8)
    assert batch is not None and batch.checked == 8
    assert worker.stats().restarts == 1
    service.close()


def test_a_version_whose_worker_crashes_loading_is_refused_and_the_old_one_serves(
    model_dir: Path, redis_client: redis.Redis, account: str, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    """A real native crash: a `sitecustomize` on the workers' PYTHONPATH segfaults every
    worker started for the bad version (Python runs it at start-up, before our code)."""
    state = BotState(redis_client, account)
    service = GenerationService(GenerationConfig(max_length=40), FilterConfig())
    watcher = CheckpointWatcher(model_dir, "char_rnn", service, state)
    assert watcher.check()
    old = service.current
    bad = copy_version(model_dir, "29991231T000000000000Z-crash0")
    hooks = tmp_path / "hooks"
    hooks.mkdir()
    (hooks / "sitecustomize.py").write_text(
        textwrap.dedent(f"""\
        import ctypes, sys
        if {str(bad)!r} in sys.argv:
            ctypes.string_at(0)
        """)
    )
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(hooks), *sys.path]))
    set_latest(model_dir, bad.name)
    assert not watcher.check()
    reason = state.bad_versions()[bad.name]
    assert "died twice while loading" in reason and "SIGSEGV" in reason
    assert service.current is old and old.model.generate([""], max_length=20, temperature=1.0)
    assert bad.name in list_versions(model_dir)
    service.close()


def test_a_hot_swap_stops_the_old_worker(
    model_dir: Path, redis_client: redis.Redis, account: str
) -> None:
    service = GenerationService(GenerationConfig(max_length=40), FilterConfig())
    watcher = CheckpointWatcher(model_dir, "char_rnn", service, BotState(redis_client, account))
    assert watcher.check()
    old_pid = service.current.model.pid
    new = copy_version(model_dir, "29991231T000000000000Z-next00")
    set_latest(model_dir, new.name)
    assert watcher.check()
    assert service.current.version == new.name and service.current.model.pid != old_pid
    wait_until(
        lambda: not Path(f"/proc/{old_pid}").exists(), timeout=10, message="old worker lives"
    )
    service.close()


DAEMON_THROUGH_A_SWAP = """
import json, sys, threading, time
from pathlib import Path
from bot.config import load_config
from bot.daemon import Daemon
from bot.state import BotState, connect
from training.publish import set_latest

config = load_config(sys.argv[1])
daemon = Daemon(config, Path(sys.argv[1]))
state = BotState(connect(config), config.account)
seen = {}

def drive():  # the daemon runs in the main thread (it installs signal handlers)
    deadline = time.monotonic() + 240
    while state.current_model_version() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    seen["first"] = state.current_model_version()
    set_latest(config.model_dir, sys.argv[2])
    while state.current_model_version() != sys.argv[2] and time.monotonic() < deadline:
        time.sleep(0.2)
    seen["second"] = state.current_model_version()
    stats = daemon.service.worker_stats()
    seen["worker_pid"] = stats.pid if stats else None
    daemon.stop_event.set()

threading.Thread(target=drive, daemon=True).start()
daemon.run()
frameworks = [m for m in ("torch", "tensorflow", "transformers", "keras") if m in sys.modules]
print(json.dumps({**seen, "frameworks": frameworks}))
"""


def test_the_daemon_imports_no_framework_through_a_swap(
    tmp_path: Path, trained_checkpoints: Path, account: str, redis_url: str
) -> None:
    import yaml

    from tests.support.configs import offline_config_data

    data = offline_config_data(tmp_path / "volume", account, redis_url)
    data["health"] = {"enabled": False}  # no port to clash with another test
    data["console"] = {"enabled": False}
    shutil.copytree(trained_checkpoints, tmp_path / "volume" / "checkpoints")
    model_dir = tmp_path / "volume" / "checkpoints" / "char_rnn"
    first = read_latest(model_dir)
    new = copy_version(model_dir, "29991231T000000000000Z-swap00")
    config = tmp_path / "bot.yaml"
    config.write_text(yaml.safe_dump(data, sort_keys=False))
    run = subprocess.run(
        [sys.executable, "-c", DAEMON_THROUGH_A_SWAP, str(config), new.name],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads(run.stdout.strip().splitlines()[-1])
    assert result["first"] == first and result["second"] == new.name
    assert result["worker_pid"] and result["frameworks"] == []
