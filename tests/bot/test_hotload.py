"""Hot-loading: only complete, checksummed versions are ever put into service."""

from __future__ import annotations

import json
import shutil
import threading
from pathlib import Path

import pytest
import redis
from structlog.testing import capture_logs

from bot.config import FilterConfig, GenerationConfig
from bot.generation import GenerationService
from bot.hotload import CheckpointWatcher
from bot.state import BotState
from tests.support.daemon_process import wait_until
from training.publish import LATEST_NAME, MANIFEST_NAME, list_versions, read_latest


@pytest.fixture
def model_dir(tmp_path: Path, trained_checkpoints: Path) -> Path:
    target = tmp_path / "checkpoints"
    shutil.copytree(trained_checkpoints, target)
    return target / "char_rnn"


@pytest.fixture
def watcher(model_dir: Path, redis_client: redis.Redis, account: str) -> CheckpointWatcher:
    service = GenerationService(GenerationConfig(max_length=40), FilterConfig())
    return CheckpointWatcher(model_dir, "char_rnn", service, BotState(redis_client, account))


def copy_version(model_dir: Path, source: str, name: str) -> Path:
    """A second version with its own name, as a later training run would publish it."""
    folder = model_dir / name
    shutil.copytree(model_dir / source, folder)
    manifest = json.loads((folder / MANIFEST_NAME).read_text())
    manifest["version"] = name
    (folder / MANIFEST_NAME).write_text(json.dumps(manifest))
    return folder


def point_latest(model_dir: Path, version: str) -> None:
    (model_dir / LATEST_NAME).write_text(version + "\n")


def test_the_published_version_is_loaded_and_recorded(watcher: CheckpointWatcher) -> None:
    assert watcher.check()
    current = watcher.service.current
    assert current is not None and current.version == read_latest(watcher.model_dir)
    assert watcher.state.current_model_version() == current.version
    generated, _batch = watcher.service.generate_post()
    assert generated is not None and generated.model_version == current.version
    assert not watcher.check()  # nothing new: no reload


def test_a_version_without_a_manifest_is_never_loaded(
    watcher: CheckpointWatcher, model_dir: Path
) -> None:
    good = read_latest(model_dir)
    broken = copy_version(model_dir, good, "29990101T000000000000Z-aaaaaa")
    (broken / MANIFEST_NAME).unlink()
    point_latest(model_dir, broken.name)
    # Nothing serving yet: the broken LATEST is refused, the newest good version serves.
    assert watcher.check()
    assert watcher.service.current.version == good
    assert broken.name in watcher.state.bad_versions()
    assert "manifest" in watcher.state.bad_versions()[broken.name]


def test_a_truncated_manifest_or_weight_file_keeps_the_old_model_serving(
    watcher: CheckpointWatcher, model_dir: Path
) -> None:
    good = read_latest(model_dir)
    assert watcher.check()
    half_manifest = copy_version(model_dir, good, "29990101T000000000000Z-bbbbbb")
    text = (half_manifest / MANIFEST_NAME).read_text()
    (half_manifest / MANIFEST_NAME).write_text(text[: len(text) // 2])
    point_latest(model_dir, half_manifest.name)
    assert not watcher.check()

    bad_weights = copy_version(model_dir, good, "29990101T000000000000Z-cccccc")
    weights = next(bad_weights.glob("*.h5"))
    weights.write_bytes(weights.read_bytes()[:100])
    point_latest(model_dir, bad_weights.name)
    assert not watcher.check()

    assert watcher.service.current.version == good
    assert set(watcher.state.bad_versions()) == {half_manifest.name, bad_weights.name}
    assert not watcher.check()  # refused versions are not retried
    assert len(list_versions(model_dir)) == 3


def test_a_refused_latest_falls_back_to_the_newest_good_version_not_an_older_one(
    watcher: CheckpointWatcher, model_dir: Path
) -> None:
    """Regression (chaos suite): a standby that preloaded before the last good publish took
    over after a corrupt publish and kept serving its older model."""
    older = read_latest(model_dir)
    assert watcher.check()  # this daemon preloaded `older`, then went on standby
    newest_good = copy_version(model_dir, older, "29990101T000000000000Z-bbbbbb").name
    corrupt = copy_version(model_dir, older, "29990102T000000000000Z-cccccc")
    weights = next(corrupt.glob("*.h5"))
    weights.write_bytes(weights.read_bytes()[:100])
    point_latest(model_dir, corrupt.name)
    watcher.state.mark_bad_version(corrupt.name, "refused by the daemon that was leader")
    assert watcher.check()
    assert watcher.service.current.version == newest_good
    assert not watcher.check()  # settled: nothing is reloaded again


def test_a_manifest_of_the_wrong_model_kind_is_refused(
    watcher: CheckpointWatcher, model_dir: Path
) -> None:
    good = read_latest(model_dir)
    assert watcher.check()
    other = copy_version(model_dir, good, "29990101T000000000000Z-eeeeee")
    manifest = json.loads((other / MANIFEST_NAME).read_text())
    manifest["model_kind"] = "gpt2"
    (other / MANIFEST_NAME).write_text(json.dumps(manifest))
    point_latest(model_dir, other.name)
    assert not watcher.check()
    assert watcher.service.current.version == good
    assert "kind" in watcher.state.bad_versions()[other.name]


def test_a_model_with_nan_weights_is_refused_at_the_smoke_generation(
    watcher: CheckpointWatcher, model_dir: Path
) -> None:
    """Weights that load but cannot write (all NaN, as an fp16 overflow leaves them)."""
    import h5py
    import numpy as np

    from training.publish import publish

    good = read_latest(model_dir)
    assert watcher.check()
    staging = model_dir / ".staging-nan"
    shutil.copytree(model_dir / good, staging)
    (staging / MANIFEST_NAME).unlink()
    with h5py.File(staging / "model.weights.h5", "r+") as weights:
        arrays = []
        weights.visititems(lambda _name, item: arrays.append(item))
        for item in arrays:
            if isinstance(item, h5py.Dataset) and item.dtype.kind == "f" and item.shape:
                item[...] = np.nan
    manifest = json.loads((model_dir / good / MANIFEST_NAME).read_text())
    fields = ("step", "train_loss", "val_loss", "dataset_hash", "config")
    broken = publish(staging, model_kind="char_rnn", **{k: manifest[k] for k in fields})
    assert not watcher.check()
    assert watcher.service.current.version == good
    assert "empty texts" in watcher.state.bad_versions()[broken.version]


def test_rollback_points_latest_at_the_previous_good_version(
    watcher: CheckpointWatcher, model_dir: Path
) -> None:
    from bot.hotload import RollbackError, rollback

    first = read_latest(model_dir)
    second = copy_version(model_dir, first, "29990101T000000000000Z-ffffff").name
    point_latest(model_dir, second)
    assert watcher.check() and watcher.service.current.version == second

    assert rollback(model_dir, watcher.state) == (second, first)
    assert read_latest(model_dir) == first
    assert watcher.check() and watcher.service.current.version == first
    assert "rolled back" in watcher.state.bad_versions()[second]
    with pytest.raises(RollbackError, match="no good version older"):
        rollback(model_dir, watcher.state)


def test_versions_trained_on_the_same_data_share_one_novelty_index(
    model_dir: Path, redis_client: redis.Redis, account: str
) -> None:
    reads: list[int] = []

    def corpus() -> list[str]:
        reads.append(1)
        return ["Early to bed and early to rise makes a man healthy"]

    service = GenerationService(GenerationConfig(max_length=40), FilterConfig())
    state = BotState(redis_client, account)
    watcher = CheckpointWatcher(model_dir, "char_rnn", service, state, corpus=corpus)
    first = read_latest(model_dir)
    assert watcher.check()
    index = service.current.novelty
    point_latest(model_dir, copy_version(model_dir, first, "29990101T000000000000Z-gggggg").name)
    assert watcher.check() and service.current.novelty is index and len(reads) == 1

    other = copy_version(model_dir, first, "29990101T000000000000Z-hhhhhh")
    manifest = json.loads((other / MANIFEST_NAME).read_text())
    (other / MANIFEST_NAME).write_text(json.dumps(manifest | {"dataset_hash": "other-data"}))
    point_latest(model_dir, other.name)
    assert watcher.check() and service.current.novelty is not index and len(reads) == 2
    assert service.current.novelty.copies("early to bed and early to rise makes a man")


def test_the_background_load_runs_nicer_and_hands_back_its_outcome() -> None:
    import os
    import threading

    from bot.hotload import LOADER_NICENESS, run_in_background

    def niceness() -> tuple[int, str]:
        name = threading.current_thread().name
        return os.getpriority(os.PRIO_PROCESS, threading.get_native_id()), name

    mine, _ = niceness()
    theirs, name = run_in_background(niceness)
    assert name == "hotload" and theirs == min(19, mine + LOADER_NICENESS)
    assert niceness()[0] == mine  # the caller keeps its priority

    def fail() -> None:
        raise ValueError("bad weights")

    with pytest.raises(ValueError, match="bad weights"):
        run_in_background(fail)


def test_replies_keep_flowing_while_a_new_version_replaces_the_old(
    watcher: CheckpointWatcher, model_dir: Path
) -> None:
    from bot.platform.base import Tweet

    first = read_latest(model_dir)
    assert watcher.check()
    mention = Tweet(
        id="7", text="@parrotbot any advice?", author_id="3", author_handle="reader",
        created_at="",
    )  # fmt: skip
    versions: list[str] = []
    failures: list[str] = []
    stop = threading.Event()

    def client() -> None:
        while not stop.is_set():
            try:
                generated, _batch = watcher.service.generate_reply(mention, handle="parrotbot")
                versions.append(generated.model_version if generated else "none")
            except Exception as exc:  # every failed request is what this test is about
                failures.append(repr(exc))

    thread = threading.Thread(target=client)
    thread.start()
    try:
        wait_until(lambda: versions, timeout=60, message="no answer from the first version")
        second = copy_version(model_dir, first, "29990101T000000000000Z-second").name
        point_latest(model_dir, second)
        assert watcher.check()
        wait_until(lambda: second in versions, timeout=60, message="no answer from the new version")
    finally:
        stop.set()
        thread.join(timeout=30)
    assert failures == []
    assert versions[0] == first and versions[-1] == second
    assert set(versions) <= {first, second, "none"}
    # The swap is one assignment: once the new version answered, the old one never did again.
    assert first not in versions[versions.index(second) :]


def test_the_novelty_index_holds_the_training_texts_as_the_trainer_cleaned_them(
    write_config, model_dir: Path, redis_client: redis.Redis, account: str
) -> None:
    """Serving and training agree on what a training tweet is: the config's cleaning, not the
    default. With `urls: keep` the model learned the link, so a post copying the tweet with
    it is a copy; a retweet the trainer dropped is not in the index at all."""
    from bot.config import load_config
    from bot.daemon import Daemon
    from training.dataset import dataset_path, merge_records
    from training.prepare import prepare

    config_path = write_config(cleaning={"urls": "keep"})
    config = load_config(config_path)
    with_url = "Buy the almanac https://poorrichard.example/almanac-1758 today"
    dataset = dataset_path(config.data_dir, "poorrichard")
    merge_records(
        dataset,
        [
            {"id": "1", "text": with_url},
            {"id": "2", "text": "RT @franklin: Early to rise, the bell of the almanac rings"},
            {"id": "3", "text": "A penny saved is a penny earned &amp; kept"},
        ],
    )
    daemon = Daemon(config, config_path)
    trained = prepare([dataset], None, 0.3, config.cleaning)
    assert sorted(daemon._training_texts()) == sorted({*trained.train_texts, *trained.val_texts})

    service = GenerationService(GenerationConfig(max_length=40), config.filters)
    state = BotState(redis_client, account)
    watcher = CheckpointWatcher(
        model_dir, "char_rnn", service, state, corpus=daemon._training_texts
    )
    assert watcher.check()
    assert service.current.novelty.copies(with_url)


def test_a_check_during_the_preload_waits_for_it_instead_of_loading_again(
    watcher: CheckpointWatcher,
) -> None:
    with capture_logs() as logs:
        preload = watcher.check_in_background()
        assert not watcher.check()  # waited: the version it would load already serves
        preload.join(timeout=120)
    assert watcher.service.current is not None
    assert [e["event"] for e in logs].count("hotload.loading") == 1


def test_a_load_that_ends_after_close_is_stopped_not_served(watcher: CheckpointWatcher) -> None:
    """The daemon stops while its preload runs: the worker it started never serves."""
    with capture_logs() as logs:
        preload = watcher.check_in_background()
        watcher.close()
        preload.join(timeout=120)
    assert not preload.is_alive() and watcher.service.current is None
    assert "hotload.abandoned" in [e["event"] for e in logs]
    (pid,) = [e["pid"] for e in logs if e["event"] == "worker.starting"]
    wait_until(lambda: not Path(f"/proc/{pid}").exists(), timeout=10, message="worker lives")
