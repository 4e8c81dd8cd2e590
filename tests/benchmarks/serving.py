"""Serving benchmarks: batched generation, hot swap under load, novelty filtering.

    python -m tests.benchmarks.serving [--seconds 10]

Writes the `generation`, `hot_swap` and `novelty` sections of tests/benchmarks/results.json
(keeping the training sections). Everything runs in this process on the char-RNN of the
offline default, trained here on the sample corpus, so both sides of each ratio share the
model, the sampling settings and the machine's state.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import shutil
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import redis

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
RESULTS = HERE / "results.json"
CORPUS = REPO / "config" / "sample_timelines" / "poorrichard.jsonl"
REDIS_URL = "redis://127.0.0.1:6379/0"


def train(work: Path, epochs: int) -> Path:
    from training.train import run_training

    dataset = work / "poorrichard.jsonl"
    shutil.copyfile(CORPUS, dataset)
    request = {
        "model_kind": "char_rnn",
        "datasets": [str(dataset)],
        "checkpoints_dir": str(work / "checkpoints"),
        "model_config": {"units": 128, "batch_size": 32, "epochs": epochs},
        "trigger": "benchmark",
    }
    run_training(request)
    return work / "checkpoints" / "char_rnn"


def _service_and_watcher(model_dir: Path, account: str):
    from bot.config import FilterConfig, GenerationConfig
    from bot.generation import GenerationService
    from bot.hotload import CheckpointWatcher
    from bot.state import BotState
    from training.dataset import clean_text, load_tweets

    state = BotState(redis.Redis.from_url(REDIS_URL, decode_responses=True), account)
    service = GenerationService(GenerationConfig(temperature=0.8, attempts=8), FilterConfig())
    texts = [clean_text(t["text"]) for t in load_tweets([CORPUS])]
    watcher = CheckpointWatcher(model_dir, "char_rnn", service, state, corpus=lambda: texts)
    assert watcher.check(), "the trained model did not load"
    return service, watcher, state


def bench_generation(service: Any, seconds: float) -> dict[str, Any]:
    """Accepted tweets/s: our batched, filtered sampling vs one `generate` call per tweet."""
    from bot.filters import CandidateFilter

    loaded = service.current
    check = CandidateFilter(service.filters, loaded.novelty).check
    settings = service.settings

    def one_at_a_time() -> tuple[int, int]:
        accepted = tried = 0
        deadline = time.perf_counter() + seconds
        while time.perf_counter() < deadline:
            (text,) = loaded.model.generate(
                [""], max_length=settings.max_length, temperature=settings.temperature
            )
            tried += 1
            accepted += check(" ".join(text.split())).accepted
        return accepted, tried

    def batched(batch_size: int) -> tuple[int, int]:
        accepted = tried = 0
        deadline = time.perf_counter() + seconds
        while time.perf_counter() < deadline:
            batch = service.sample(batch_size)
            tried += batch.checked
            accepted += len(batch.accepted)
        return accepted, tried

    base_accepted, base_tried = one_at_a_time()
    ours_accepted, ours_tried = batched(32)
    base_rate, ours_rate = base_accepted / seconds, ours_accepted / seconds
    return {
        "model": "char_rnn GRU 128 (offline default size)",
        "seconds_each": seconds,
        "baseline_one_at_a_time": {"accepted": base_accepted, "generated": base_tried},
        "ours_batched_32": {"accepted": ours_accepted, "generated": ours_tried},
        "baseline_accepted_per_s": round(base_rate, 2),
        "ours_accepted_per_s": round(ours_rate, 2),
        "accepted_tweets_per_s_ratio": round(ours_rate / base_rate, 2) if base_rate else None,
    }


def bench_hot_swap(service: Any, watcher: Any, model_dir: Path, seconds: float) -> dict[str, Any]:
    """Replies asked for continuously while three versions are published, one corrupt."""
    from training.publish import LATEST_NAME, MANIFEST_NAME

    stop = threading.Event()
    swapping = threading.Event()
    steady: list[float] = []
    during: list[float] = []
    failures: list[str] = []

    def client() -> None:
        while not stop.is_set():
            started = time.perf_counter()
            try:
                generated, _batch = service.generate_post()
                if generated is None:
                    failures.append("no acceptable text")
            except Exception as exc:  # a failed request is what we count
                failures.append(repr(exc))
            (during if swapping.is_set() else steady).append(time.perf_counter() - started)

    thread = threading.Thread(target=client)
    thread.start()
    time.sleep(seconds)  # steady state
    source = watcher.service.current.version
    versions = []
    for index in range(3):
        name = f"29990101T00000{index}000000Z-bench{index}"
        folder = model_dir / name
        shutil.copytree(model_dir / source, folder)
        manifest = json.loads((folder / MANIFEST_NAME).read_text())
        manifest["version"] = name
        (folder / MANIFEST_NAME).write_text(json.dumps(manifest))
        if index == 1:  # the corrupt one: weights cut short after the manifest was written
            weights = next(folder.glob("*.h5"))
            weights.write_bytes(weights.read_bytes()[:1000])
        (model_dir / LATEST_NAME).write_text(name + "\n")
        swapping.set()
        swapped = watcher.check()
        swapping.clear()
        versions.append({"version": name, "swapped": swapped})
        time.sleep(seconds / 3)
    stop.set()
    thread.join()

    def p99(values: list[float]) -> float:
        return statistics.quantiles(values, n=100)[98] if len(values) >= 2 else max(values)

    steady_p99, during_p99 = p99(steady), p99(during) if during else None
    return {
        "requests_steady": len(steady),
        "requests_during_swaps": len(during),
        "failed_requests": len(failures),
        "failures": failures[:5],
        "versions": versions,
        "p99_steady_s": round(steady_p99, 4),
        "p99_during_swaps_s": None if during_p99 is None else round(during_p99, 4),
        "p99_ratio": None if during_p99 is None else round(during_p99 / steady_p99, 2),
    }


def bench_novelty(service: Any, samples: int) -> dict[str, Any]:
    """How many raw samples copy a training tweet, and how many pass the filter (must be 0)."""
    loaded = service.current
    raw = loaded.model.generate(
        [""] * samples, max_length=service.settings.max_length, temperature=0.5
    )
    copies_before = sum(loaded.novelty.copies(text) for text in raw)
    batch = service.sample(samples)
    copies_after = sum(loaded.novelty.copies(text) for text in batch.accepted)
    return {
        "samples": samples,
        "temperature_for_raw": 0.5,
        "copies_before_filter": copies_before,
        "copy_share_before_filter": round(copies_before / samples, 3),
        "accepted_after_filter": len(batch.accepted),
        "copies_after_filter": copies_after,
        "rejected_by_reason": dict(batch.rejected),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--epochs", type=int, default=40)
    args = parser.parse_args(argv)
    account = f"bench-{int(time.time())}"
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = train(Path(tmp), args.epochs)
        service, watcher, state = _service_and_watcher(model_dir, account)
        results = {
            "generation": bench_generation(service, args.seconds),
            "novelty": bench_novelty(service, 200),
            "hot_swap": bench_hot_swap(service, watcher, model_dir, args.seconds),
        }
        for key in state.redis.scan_iter(match=f"parrotbot:{account}:*"):
            state.redis.delete(key)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    for section in results.values():
        section["measured_at"] = stamp
    existing = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    existing.update(results)
    RESULTS.write_text(json.dumps(existing, indent=2, sort_keys=True) + "\n")
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
