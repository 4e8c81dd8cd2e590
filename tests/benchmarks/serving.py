"""Serving benchmarks: batched generation, hot swap under load, novelty filtering.

    python -m tests.benchmarks.serving [--seconds 10] [--runs 3] [--only hot_swap]

Writes the `generation`, `hot_swap` and `novelty` sections of tests/benchmarks/results.json
(keeping the others) and the table in docs/benchmarks.md. This process plays the daemon: the
generation service and the checkpoint watcher run here, and each model is served by its
worker process, as in the daemon, so every request's IPC is in the numbers. Each comparison
runs both sides one after the other, with the same model and sampling settings, so they share
the machine's state; the one-at-a-time baselines run in-process (no IPC).

Models: the char-RNN of the offline default trained here on the sample corpus; GPT-2 tiny
and GPT-2-small-sized configs with a BPE tokenizer trained here (their weights are
untrained: throughput depends on the shapes, and neither side may stop early); for novelty
a char-RNN overfit on a few dozen tweets, so that it does copy them.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
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


SAMPLING = {"temperature": 0.8, "top_p": 0.95, "top_k": 0, "repetition_penalty": 1.0}
GPT2_SIZES = {"tiny": (2, 4, 128), "small": (12, 12, 768)}
GPT2_NEW_TOKENS = 48  # both sides stop here: untrained weights never choose end-of-text
BATCH = 32
# Both sides get every core, as a serving box would give them (torch's own default). On an
# oversubscribed machine pass --torch-threads 1: two spinning threads then slow both sides.
TORCH_THREADS = os.cpu_count() or 1


def _corpus() -> list[str]:
    from training.dataset import clean_text, load_tweets

    return [clean_text(t["text"]) for t in load_tweets([CORPUS])]


def _service(model: Any, corpus: list[str], **settings: Any):
    """A generation service serving ``model``, with the default filters over ``corpus``."""
    from bot.config import FilterConfig, GenerationConfig
    from bot.filters import NoveltyIndex
    from bot.generation import GenerationService, LoadedModel

    filters = FilterConfig()
    service = GenerationService(GenerationConfig(**(SAMPLING | settings)), filters)
    novelty = NoveltyIndex(corpus, filters.novelty_ngram_words)
    service.swap(LoadedModel(version="bench", manifest=None, model=model, novelty=novelty))
    return service


def _service_and_watcher(model_dir: Path, account: str, corpus: list[str]):
    from bot.config import FilterConfig, GenerationConfig
    from bot.generation import GenerationService
    from bot.hotload import CheckpointWatcher
    from bot.state import BotState

    state = BotState(redis.Redis.from_url(REDIS_URL, decode_responses=True), account)
    service = GenerationService(GenerationConfig(**SAMPLING, attempts=8), FilterConfig())
    watcher = CheckpointWatcher(model_dir, "char_rnn", service, state, corpus=lambda: corpus)
    assert watcher.check(), "the trained model did not load"
    return service, watcher, state


def _rate(step: Any, seconds: float) -> dict[str, Any]:
    """Run ``step`` (-> accepted, generated) until ``seconds`` pass, at least once."""
    accepted = generated = 0
    started = time.perf_counter()
    while True:
        ok, made = step()
        accepted, generated = accepted + ok, generated + made
        elapsed = time.perf_counter() - started
        if elapsed >= seconds:
            break
    return {
        "accepted": accepted,
        "generated": generated,
        "seconds": round(elapsed, 2),
        "accepted_per_s": round(accepted / elapsed, 3),
    }


def _compare(service: Any, baseline_one: Any, seconds: float, label: str) -> dict[str, Any]:
    """Accepted tweets/s: ``baseline_one()`` one text at a time vs the service's batches.

    Both sides pass the same filters: the baseline's texts one by one, ours inside
    ``service.sample`` as the daemon runs them.
    """
    from bot.filters import CandidateFilter

    check = CandidateFilter(service.filters, service.current.novelty).check

    def baseline_step() -> tuple[int, int]:
        return int(check(" ".join(baseline_one().split())).accepted), 1

    def ours_step() -> tuple[int, int]:
        batch = service.sample(BATCH)
        return len(batch.accepted), batch.checked

    baseline = _rate(baseline_step, seconds)
    ours = _rate(ours_step, seconds)
    ratio = ours["accepted_per_s"] / baseline["accepted_per_s"] if baseline["accepted"] else None
    return {
        "model": label,
        "baseline_one_at_a_time": baseline,
        f"ours_batched_{BATCH}": ours,
        "accepted_tweets_per_s_ratio": None if ratio is None else round(ratio, 2),
    }


def bench_generation_char_rnn(service: Any, seconds: float) -> dict[str, Any]:
    """Ours: the service's batches from the serving worker (every request crosses the pipe).
    Baseline: the same version loaded here, in-process, one seed per call (no IPC)."""
    from training.models import load_model

    model = load_model("char_rnn", service.current.model.folder)
    sampling = service.settings.sampling()
    return _compare(
        service, lambda: model.generate([""], **sampling)[0], seconds,
        "char_rnn GRU 128 (offline default size), trained, served by its worker process; "
        "baseline: the same model's generate in-process, one seed",
    )  # fmt: skip


def _publish(model: Any, model_dir: Path, kind: str) -> Path:
    """Publish ``model`` as a version, as the trainer would: the worker loads it from there."""
    from training.publish import new_staging_dir, publish

    model_dir.mkdir(parents=True, exist_ok=True)
    staging = new_staging_dir(model_dir)
    model.save(staging)
    manifest = publish(
        staging, model_kind=kind, step=1, train_loss=1.0, val_loss=1.0,
        dataset_hash="bench", config={},
    )  # fmt: skip
    return model_dir / manifest.version


def bench_generation_gpt2(
    size: str, corpus: list[str], work: Path, seconds: float, threads: int = TORCH_THREADS
):
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel, GPT2TokenizerFast

    from bot.model_worker import ModelWorker
    from training.gpt2 import GPT2
    from training.gpt2_config import GPT2Settings
    from training.packing import train_tokenizer

    torch.set_num_threads(threads)  # the same for both sides
    n_layer, n_head, n_embd = GPT2_SIZES[size]
    tok_dir = work / "gpt2-tokenizer"
    if not tok_dir.exists():
        train_tokenizer(corpus, 2048, tok_dir)
    tok = GPT2TokenizerFast.from_pretrained(str(tok_dir), local_files_only=True)
    eos = tok.eos_token_id
    torch.manual_seed(0)
    config = GPT2Config(
        vocab_size=len(tok), n_positions=1024, n_layer=n_layer, n_head=n_head, n_embd=n_embd,
        bos_token_id=eos, eos_token_id=eos,
    )  # fmt: skip
    net = GPT2LMHeadModel._from_config(config, attn_implementation="sdpa").eval()
    settings = GPT2Settings(base_model=None, n_layer=n_layer, n_head=n_head, n_embd=n_embd)
    folder = _publish(GPT2(net, tok, settings), work / f"gpt2-{size}" / "gpt2", "gpt2")
    # The worker's torch gets the same threads as the baseline (OMP_ reaches the worker).
    previous = os.environ.get("OMP_NUM_THREADS")
    os.environ["OMP_NUM_THREADS"] = str(threads)
    try:
        worker = ModelWorker.start("gpt2", folder).worker
    finally:
        if previous is None:
            del os.environ["OMP_NUM_THREADS"]
        else:
            os.environ["OMP_NUM_THREADS"] = previous
    service = _service(worker, corpus, max_new_tokens=GPT2_NEW_TOKENS)
    prompt = torch.tensor([[eos]])

    def hf_one() -> str:
        """transformers' own sampler, one prompt at a time: what a plain bot would call."""
        with torch.inference_mode():
            out = net.generate(
                input_ids=prompt, attention_mask=torch.ones_like(prompt), do_sample=True,
                max_new_tokens=GPT2_NEW_TOKENS, pad_token_id=eos, eos_token_id=eos, **SAMPLING,
            )  # fmt: skip
        return tok.decode(out[0, 1:], skip_special_tokens=True)[:280]

    params = sum(p.numel() for p in net.parameters())
    label = (
        f"GPT-2 {size} ({n_layer} layers, {n_head} heads, {n_embd}; {params / 1e6:.1f}M params, "
        f"2,048-token local BPE, untrained weights), {GPT2_NEW_TOKENS} new tokens, served by "
        "its worker process; baseline: transformers model.generate(do_sample=True) in-process, "
        "one prompt at a time"
    )
    try:
        return _compare(service, hf_one, seconds, label)
    finally:
        worker.close()


def bench_generation(
    char_service: Any, corpus: list[str], work: Path, seconds: float, threads: int
) -> dict[str, Any]:
    """Accepted tweets/s for every model; the headline ratio is the worst of them."""
    models = {"char_rnn": bench_generation_char_rnn(char_service, seconds)}
    for size in GPT2_SIZES:
        models[f"gpt2_{size}"] = bench_generation_gpt2(size, corpus, work, seconds, threads)
    ratios = [m["accepted_tweets_per_s_ratio"] for m in models.values()]
    return {
        "sampling": SAMPLING,
        "batch": BATCH,
        "torch_threads": threads,
        "seconds_each": seconds,
        "models": models,
        "accepted_tweets_per_s_ratio": min(r for r in ratios if r is not None),
        "accepted_tweets_per_s_ratio_is": "the lowest of the models' ratios",
    }


HOT_SWAP_VERSIONS = 12  # per run: enough loads that well over 50 replies overlap one
HOT_SWAP_CORRUPT = 5  # this one's weights are cut short: refused, the old worker serves on
HOT_SWAP_NEW_DATA = 9  # this one was "trained on new tweets": its novelty index is rebuilt


def _publish_copy(model_dir: Path, source: str, name: str, index: int) -> None:
    """A copy of ``source`` published as ``name``, as a later training run would publish it."""
    from training.publish import LATEST_NAME, MANIFEST_NAME

    folder = model_dir / name
    shutil.copytree(model_dir / source, folder)
    manifest = json.loads((folder / MANIFEST_NAME).read_text())
    manifest["version"] = name
    if index == HOT_SWAP_NEW_DATA:
        manifest["dataset_hash"] = f"{manifest['dataset_hash']}-new-tweets"
    (folder / MANIFEST_NAME).write_text(json.dumps(manifest))
    if index == HOT_SWAP_CORRUPT:  # after the manifest was written: the checksum catches it
        weights = next(folder.glob("*.h5"))
        weights.write_bytes(weights.read_bytes()[:1000])
    (model_dir / LATEST_NAME).write_text(name + "\n")


def _quantile(values: list[float], q: int) -> float | None:
    """The q-th percentile (statistics' exclusive method); None for no values."""
    if not values:
        return None
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100)[q - 1]


def _latency_summary(values: list[float]) -> dict[str, Any]:
    p50, p99 = _quantile(values, 50), _quantile(values, 99)
    return {
        "requests": len(values),
        "p50_s": None if p50 is None else round(p50, 4),
        "p99_s": None if p99 is None else round(p99, 4),
    }


def bench_hot_swap(
    service: Any, watcher: Any, model_dir: Path, seconds: float, run: int
) -> dict[str, Any]:
    """Replies asked for back to back while HOT_SWAP_VERSIONS versions are published.

    One client thread asks for replies as the daemon's mentions job does, one at a time; the
    main thread publishes a version, runs the watcher's check (start the new worker, wait
    until it is ready, swap, stop the old one) as the daemon's checkpoints job does, then
    waits a second before the next. A request counts as "during swaps" when its time
    overlaps any check at all; every other request is steady state.
    """
    from bot.platform.base import Tweet

    mention = Tweet(
        id="1", text="@parrotbot what is a penny worth?", author_id="2", author_handle="reader",
        created_at="",
    )  # fmt: skip
    stop = threading.Event()
    requests: list[tuple[float, float]] = []
    windows: list[tuple[float, float]] = []
    failures: list[str] = []

    def client() -> None:
        while not stop.is_set():
            started = time.perf_counter()
            try:
                generated, _batch = service.generate_reply(mention, handle="parrotbot")
                if generated is None:
                    failures.append("no acceptable text")
            except Exception as exc:  # a failed request is what we count
                failures.append(repr(exc))
            requests.append((started, time.perf_counter()))

    load_before = os.getloadavg()[0]
    thread = threading.Thread(target=client)
    thread.start()
    stop.wait(seconds)  # steady state first
    source = watcher.service.current.version
    versions = []
    for index in range(HOT_SWAP_VERSIONS):
        name = f"299901{run + 1:02d}T0000{index:02d}000000Z-bench{index}"
        _publish_copy(model_dir, source, name, index)
        began = time.perf_counter()
        swapped = watcher.check()
        windows.append((began, time.perf_counter()))
        versions.append(
            {"version": name, "swapped": swapped, "seconds": round(windows[-1][1] - began, 2)}
        )
        stop.wait(1.0)
    stop.wait(seconds / 3)
    stop.set()
    thread.join()

    def overlaps(request: tuple[float, float]) -> bool:
        return any(request[0] < end and request[1] > begin for begin, end in windows)

    latencies: dict[str, list[float]] = {"steady": [], "during": []}
    for request in requests:
        latencies["during" if overlaps(request) else "steady"].append(request[1] - request[0])
    steady, during = _latency_summary(latencies["steady"]), _latency_summary(latencies["during"])
    ratio = (
        round(during["p99_s"] / steady["p99_s"], 2)
        if during["p99_s"] is not None and steady["p99_s"]
        else None
    )
    return {
        "load_average_1min_before": round(load_before, 2),
        "steady": steady,
        "during_swaps": during,
        "p99_ratio": ratio,
        "p50_ratio": (
            round(during["p50_s"] / steady["p50_s"], 2)
            if during["p50_s"] is not None and steady["p50_s"]
            else None
        ),
        "failed_requests": len(failures),
        "failures": failures[:5],
        "versions_published": len(versions),
        "versions_swapped": sum(v["swapped"] for v in versions),
        "load_seconds": sorted(v["seconds"] for v in versions if v["swapped"]),
    }


def bench_hot_swap_runs(
    service: Any, watcher: Any, model_dir: Path, seconds: float, runs: int
) -> dict[str, Any]:
    """``runs`` hot-swap runs, one after the other; the headline ratio is the worst run's."""
    results = [bench_hot_swap(service, watcher, model_dir, seconds, run) for run in range(runs)]
    ratios = [r["p99_ratio"] for r in results if r["p99_ratio"] is not None]
    return {
        "runs": results,
        "versions_per_run": HOT_SWAP_VERSIONS,
        "requests_during_swaps": sum(r["during_swaps"]["requests"] for r in results),
        "requests_steady": sum(r["steady"]["requests"] for r in results),
        "failed_requests": sum(r["failed_requests"] for r in results),
        "p99_ratio_worst": max(ratios) if ratios else None,
        "p99_ratios": ratios,
        "note": f"each run publishes {HOT_SWAP_VERSIONS} versions: number {HOT_SWAP_CORRUPT} "
        f"is corrupt (refused, the old worker serves on), number {HOT_SWAP_NEW_DATA} has a new "
        "dataset hash (its novelty index is rebuilt in the daemon); every other one reuses "
        "the index. Each swap starts a worker process (a framework import and a load) at "
        "niceness 10",
    }


def bench_novelty(corpus: list[str], samples: int, epochs: int) -> dict[str, Any]:
    """A char-RNN overfit on a few dozen tweets: raw copies before the filter, none after."""
    from training.char_rnn import CharRNNConfig
    from training.char_rnn_train import fit

    tweets = [t for t in corpus if len(t.split()) >= 8][:40]
    config = CharRNNConfig(units=256, seq_len=64, batch_size=16, epochs=epochs, val_fraction=0.0)
    started = time.perf_counter()
    model, result = fit(tweets, [], config)
    train_seconds = time.perf_counter() - started
    service = _service(model, tweets)
    raw = model.generate([""] * samples, **service.settings.sampling())
    copies_before = sum(service.current.novelty.copies(text) for text in raw)
    batch = service.sample(samples)
    copies_after = sum(service.current.novelty.copies(text) for text in batch.accepted)
    return {
        "model": f"char_rnn GRU 256 overfit on {len(tweets)} tweets ({epochs} epochs, "
        f"{train_seconds:.0f} s, final train loss {result.train_loss:.3f})",
        "samples": samples,
        "sampling": SAMPLING,
        "copies_before_filter": copies_before,
        "copy_share_before_filter": round(copies_before / samples, 3),
        "accepted_after_filter": len(batch.accepted),
        "copies_after_filter": copies_after,
        "rejected_by_reason": dict(batch.rejected),
    }


def main(argv: list[str] | None = None) -> int:
    from tests.benchmarks.run_benchmarks import machine, write_readme

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--novelty-epochs", type=int, default=150)
    parser.add_argument("--torch-threads", type=int, default=TORCH_THREADS)
    parser.add_argument("--runs", type=int, default=3, help="hot-swap runs")
    parser.add_argument("--only", choices=["hot_swap", "generation", "novelty"])
    args = parser.parse_args(argv)
    account = f"bench-{int(time.time())}"
    corpus = _corpus()
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = train(Path(tmp), args.epochs)
        service, watcher, state = _service_and_watcher(model_dir, account, corpus)
        results: dict[str, Any] = {}
        try:
            if args.only in (None, "hot_swap"):
                results["hot_swap"] = bench_hot_swap_runs(
                    service, watcher, model_dir, args.seconds, args.runs
                )
            if args.only in (None, "generation"):
                results["generation"] = bench_generation(
                    service, corpus, Path(tmp), args.seconds, args.torch_threads
                )
            if args.only in (None, "novelty"):
                results["novelty"] = bench_novelty(corpus, 200, args.novelty_epochs)
        finally:
            service.close()
            for key in state.redis.scan_iter(match=f"parrotbot:{account}:*"):
                state.redis.delete(key)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    load = f"load average {load_before[0]:.2f} before, {os.getloadavg()[0]:.2f} after (1 min)"
    for section in results.values():
        section["measured_at"] = stamp
        section["machine"] = f"{machine()}; {load}"
    existing = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    existing.update(results)
    RESULTS.write_text(json.dumps(existing, indent=2, sort_keys=True) + "\n")
    write_readme(existing)
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
