"""Run every CPU benchmark in one process; write results.json and docs/benchmarks.md's table.

    python tests/benchmarks/run_benchmarks.py [--scale 1.0] [--only gpt2|char_rnn]

``--scale`` multiplies every time budget (1.0: about 15 minutes on two cores). All trainers
of one comparison run back to back in this process, on the same data, so they share the
machine's state; on a shared machine the absolute numbers move, the ratios much less.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import platform
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
RESULTS = HERE / "results.json"
TABLE_PAGE = REPO / "docs" / "benchmarks.md"  # the page that holds the table
BEGIN, END = "<!-- benchmarks:begin -->", "<!-- benchmarks:end -->"

# (n_layer, n_head, n_embd, seconds per trainer). Vocabulary: an 2,048-token BPE trained on
# the corpus (GPT-2's own 50,257-token vocabulary would need a download).
GPT2_SIZES = {"tiny": (2, 4, 128, 90.0), "small": (12, 12, 768, 180.0)}
VOCAB = 2048


def machine() -> str:
    """The CPU the numbers came from, kept with each section.

    The project's machines change between sessions (one run was on an Intel Xeon with AMX,
    another on an AMD EPYC), and the ratios depend on the CPU: the GPT-2 rows on whether it
    does bf16 in hardware, the char-RNN rows on how each trainer spreads over the cores.
    """
    model = "unknown CPU"
    flags: set[str] = set()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                model = value.strip()
            elif key.strip() == "flags":
                flags = set(value.split())
            if model != "unknown CPU" and flags:
                break
    bf16 = [name for name in ("amx_bf16", "avx512_bf16") if name in flags]
    hardware_bf16 = f"bf16 in hardware: {', '.join(bf16)}" if bf16 else "no bf16 in hardware"
    return f"{os.cpu_count()} cores of {model} ({platform.machine()}, {hardware_bf16})"


def _texts() -> tuple[list[str], list[str]]:
    from training.prepare import prepare

    prepared = prepare([REPO / "config/sample_timelines/poorrichard.jsonl"], None, 0.1)
    return prepared.train_texts, prepared.val_texts


def bench_gpt2(size: str, scale: float, work: Path) -> dict[str, Any]:
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel, GPT2TokenizerFast

    from tests.benchmarks.gpt2_recipes import concatenated_blocks, evaluator, run_recipe
    from training.gpt2_config import GPT2Settings
    from training.gpt2_train import EvalReport, fit, resolve_device_and_dtype
    from training.packing import encode_tweets, pack, train_tokenizer

    n_layer, n_head, n_embd, seconds = GPT2_SIZES[size]
    seconds *= scale
    train, val = _texts()
    tok_dir = train_tokenizer(train, VOCAB, work / f"tok-{size}")
    tok = GPT2TokenizerFast.from_pretrained(str(tok_dir), local_files_only=True)
    eos = tok.eos_token_id
    evaluate = evaluator(pack(encode_tweets(tok, val), 128, eos))
    plain = [tok.encode(t) for t in train]

    def fresh() -> Any:
        torch.manual_seed(0)
        config = GPT2Config(
            vocab_size=len(tok), n_positions=1024, n_layer=n_layer, n_head=n_head,
            n_embd=n_embd, bos_token_id=eos, eos_token_id=eos,
        )  # fmt: skip
        return GPT2LMHeadModel._from_config(config, attn_implementation="sdpa")

    ht_blocks = concatenated_blocks(plain, 1024, separator=eos)
    ht = run_recipe(
        "huggingtweets", fresh(), ht_blocks, seconds=seconds, evaluate=evaluate,
        eval_every=max(1, len(ht_blocks) // 2), work_dir=work,
    )  # fmt: skip
    clm_blocks = concatenated_blocks(plain, 1024, separator=None)
    clm = run_recipe(
        "run_clm", fresh(), clm_blocks, seconds=seconds / 2, evaluate=evaluate,
        eval_every=10**9, work_dir=work,
    )  # fmt: skip

    # Ours: its defaults, at this size, with the schedule sized to the same budget.
    settings = GPT2Settings(base_model=None, n_layer=n_layer, n_head=n_head, n_embd=n_embd,
                            vocab_size=VOCAB, early_stopping_patience=0, seed=0)  # fmt: skip
    from tests.benchmarks.gpt2_recipes import _seconds_per_step

    blocks = pack(encode_tweets(tok, train), settings.block_size, eos)
    probe_batch = torch.from_numpy(blocks.input_ids[: settings.batch_size])
    dtype = resolve_device_and_dtype(settings)[1]
    steps = max(20, int(seconds / _seconds_per_step(fresh(), probe_batch, dtype)))
    settings = GPT2Settings(**(settings.to_dict() | {
        "max_steps": steps, "eval_interval": max(1, steps // 25),
        "checkpoint_interval": steps, "log_interval": max(1, steps // 25),
    }))  # fmt: skip
    points: list[EvalReport] = []
    stop = threading.Event()

    def on_eval(report: EvalReport) -> None:
        points.append(report)
        if report.train_seconds >= seconds:
            stop.set()

    result = fit(train, val, settings, run_dir=work / f"ours-{size}", resume=False, stop=stop,
                 on_eval=on_eval)  # fmt: skip
    ours_curve = [(r.train_seconds, r.val_loss) for r in points]
    # Our curve is evaluated under the trainer's autocast; the recipes' by the fp32 evaluator.
    # The best weights again through the fp32 evaluator show what that difference is worth.
    best_fp32 = evaluate(result.model.model)  # fp32 weights: autocast never changes them
    ours_tps = points[-1].tokens / max(points[-1].train_seconds, 1e-9)
    target = ht.best
    t_ht = ht.seconds_to(target)
    t_ours = next((t for t, v in ours_curve if v <= target), None)
    return {
        "config": {
            "n_layer": n_layer,
            "n_head": n_head,
            "n_embd": n_embd,
            "vocab": len(tok),
            "params": sum(p.numel() for p in fresh().parameters()),
            "seconds_per_trainer": seconds,
        },
        "huggingtweets": {
            "best_val_loss": ht.best,
            "seconds_to_best": t_ht,
            "steps": ht.steps,
            "tokens_per_s": ht.tokens_per_s,
            "curve": ht.points,
        },
        "run_clm": {
            "tokens_per_s": clm.tokens_per_s,
            "steps": clm.steps,
            "val_loss": clm.points[-1][1],
        },
        "ours": {
            "useful_tokens_per_s": ours_tps,
            "best_val_loss": min(v for _, v in ours_curve),
            "seconds_to_huggingtweets_best": t_ours,
            "best_val_loss_fp32_evaluator": best_fp32,
            "precision": str(dtype or "fp32"),
            "steps": points[-1].step,
            "curve": ours_curve,
            "settings": settings.to_dict(),
        },
        "speedup_vs_huggingtweets_to_loss": (t_ht / t_ours) if t_ht and t_ours else None,
        "useful_tokens_ratio_vs_run_clm": ours_tps / clm.tokens_per_s,
    }


GPT2_HEADLINES = ("speedup_vs_huggingtweets_to_loss", "useful_tokens_ratio_vs_run_clm")


def _worst(sizes: dict[str, dict[str, Any]], key: str) -> float | None:
    """The lowest ratio; None (the anchor's loss never reached) counts as the lowest."""
    values = [size[key] for size in sizes.values()]
    return None if None in values else min(values)


def bench_char_rnn(scale: float) -> dict[str, Any]:
    from tests.benchmarks.char_rnn_baselines import ours, plain_keras, tutorial_windows

    train, val = _texts()
    seconds = 90.0 * scale
    # The machine is shared: the 1-minute load average before each trainer, to read ratios by.
    load = {"keras_baseline": os.getloadavg()[0]}
    base = plain_keras(train, val, seconds)
    size = {"units": 256, "embedding_dim": 64, "seq_len": 100, "batch_size": 64}
    load["ours"] = os.getloadavg()[0]
    mine = ours(train, val, seconds, **size, jit_compile=True)
    load["ours_lstm"] = os.getloadavg()[0]
    mine_lstm = ours(train, val, seconds, **size, cell="lstm")
    load["tutorial_window_model"] = os.getloadavg()[0]
    window = tutorial_windows(train, val, seconds)
    load["end"] = os.getloadavg()[0]
    return {
        "load_average_1min": load,
        "seconds_per_trainer": seconds,
        "keras_baseline": base,
        "ours": mine,
        "ours_lstm": mine_lstm,
        "tutorial_window_model": window,
        "chars_per_s_ratio_vs_keras_baseline": mine["chars_per_s"] / base["chars_per_s"],
        "val_bpc_difference_vs_keras_baseline": mine["val_bpc"] - base["val_bpc"],
        "lstm_chars_per_s_ratio_vs_keras_baseline": mine_lstm["chars_per_s"] / base["chars_per_s"],
    }


def _fmt(x: Any, digits: int = 2) -> str:
    return "n/a" if x is None else f"{x:,.{digits}f}"


def table(results: dict[str, Any]) -> str:
    rows = ["| benchmark | ours | anchor | ratio |", "| --- | --- | --- | --- |"]
    for size, g in results.get("gpt2", {}).get("sizes", {}).items():
        ht, ours = g["huggingtweets"], g["ours"]
        rows.append(
            f"| GPT-2 {size}: seconds to huggingtweets' best val loss ({_fmt(ht['best_val_loss'])})"
            f" | {_fmt(ours['seconds_to_huggingtweets_best'], 1)} s"
            f" | {_fmt(ht['seconds_to_best'], 1)} s"
            f" | {_fmt(g['speedup_vs_huggingtweets_to_loss'])}× |"
        )
        rows.append(
            f"| GPT-2 {size}: useful tokens/s vs run_clm | {_fmt(ours['useful_tokens_per_s'], 0)}"
            f" | {_fmt(g['run_clm']['tokens_per_s'], 0)}"
            f" | {_fmt(g['useful_tokens_ratio_vs_run_clm'])}× |"
        )
    c = results.get("char_rnn")
    if c:
        b, o, w = c["keras_baseline"], c["ours"], c["tutorial_window_model"]
        rows.append(
            "| char-RNN chars/s (fused GRU 256, XLA) vs plain Keras LSTM 256"
            f" | {_fmt(o['chars_per_s'], 0)}"
            f" | {_fmt(b['chars_per_s'], 0)} | {_fmt(c['chars_per_s_ratio_vs_keras_baseline'])}× |"
        )
        rows.append(
            f"| char-RNN val bits/char after {c['seconds_per_trainer']:.0f} s"
            f" | {_fmt(o['val_bpc'], 3)} | {_fmt(b['val_bpc'], 3)} | |"
        )
        rows.append(
            "| char-RNN chars/s, ours as LSTM 256 without XLA"
            f" | {_fmt(c['ours_lstm']['chars_per_s'], 0)}"
            f" | {_fmt(b['chars_per_s'], 0)}"
            f" | {_fmt(c['lstm_chars_per_s_ratio_vs_keras_baseline'])}× |"
        )
        rows.append(
            f"| tutorial one-hot window model: predicted chars/s, val bits/char | |"
            f" {_fmt(w['predicted_chars_per_s'], 0)}, {_fmt(w['val_bpc'], 3)} | |"
        )
    rows.extend(_serving_rows(results))
    return "\n".join(rows)


def _serving_rows(results: dict[str, Any]) -> list[str]:
    """The serving benchmarks' rows (tests/benchmarks/serving.py writes their sections)."""
    rows = []
    for name, g in results.get("generation", {}).get("models", {}).items():
        base, ours = g["baseline_one_at_a_time"], g["ours_batched_32"]
        rows.append(
            f"| serving, {name}: accepted tweets/s, batched + filtered (32) vs one at a time"
            f" | {_fmt(ours['accepted_per_s'])} | {_fmt(base['accepted_per_s'])}"
            f" | {_fmt(g['accepted_tweets_per_s_ratio'])}× (target ≥ 6×) |"
        )
    h = results.get("hot_swap")
    if h and "runs" in h:
        requests = h["requests_steady"] + h["requests_during_swaps"]
        rows.append(
            f"| serving: failed reply requests while {h['versions_per_run']} versions were "
            f"published, {len(h['runs'])} runs (1 corrupt each)"
            f" | {h['failed_requests']} of {requests} | 0 | |"
        )
        for number, run in enumerate(h["runs"], 1):
            steady, during = run["steady"], run["during_swaps"]
            rows.append(
                f"| serving, run {number} (load {run['load_average_1min_before']:.2f}): reply "
                f"p50 / p99 during swaps ({during['requests']} replies) vs steady "
                f"({steady['requests']})"
                f" | {_fmt(during['p50_s'], 3)} / {_fmt(during['p99_s'], 3)} s"
                f" | {_fmt(steady['p50_s'], 3)} / {_fmt(steady['p99_s'], 3)} s"
                f" | p99 {_fmt(run['p99_ratio'])}× (target ≤ 1.3×) |"
            )
    n = results.get("novelty")
    if n:
        rows.append(
            f"| serving: samples copying a training tweet, after the filter vs before"
            f" ({n['samples']}, memorising model)"
            f" | {n['copies_after_filter']} | {n['copies_before_filter']} | |"
        )
    return rows


def write_readme(results: dict[str, Any]) -> None:
    text = TABLE_PAGE.read_text(encoding="utf-8")
    if BEGIN not in text:
        return
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    # Each section keeps when and where it was measured: a run of one leaves the others be.
    times = "; ".join(
        f"{name} {results[key]['measured_at']} on "
        f"{results[key].get('machine', results.get('machine', 'an unrecorded machine'))}"
        for key, name in (("gpt2", "GPT-2"), ("char_rnn", "char-RNN"))
        if key in results
    )
    stamp = f"Measured {times}; budgets and caveats in [training.md](training.md#results)."
    if "generation" in results:
        stamp += (
            f" Serving rows (`python -m tests.benchmarks.serving`): "
            f"{results['generation']['measured_at']}, {results['generation']['machine']}."
        )
    page = f"{head}{BEGIN}\n{stamp}\n\n{table(results)}\n{END}{tail}"
    TABLE_PAGE.write_text(page, encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--only", choices=["gpt2", "char_rnn"])
    parser.add_argument("--sizes", default="tiny,small")
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    sys.path.insert(0, str(REPO))
    results: dict[str, Any] = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    results |= {
        "measured_at": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": machine(),
        "scale": args.scale,
    }
    with tempfile.TemporaryDirectory() as tmp:
        if args.only in (None, "gpt2"):
            sizes = {s: bench_gpt2(s, args.scale, Path(tmp)) for s in args.sizes.split(",")}
            results["gpt2"] = {
                "measured_at": results["measured_at"],
                "machine": results["machine"],
                # The headline is the weaker size: a target is met only if every size meets it.
                **{key: _worst(sizes, key) for key in GPT2_HEADLINES},
                "headline_is": "the lowest ratio over the sizes measured",
                "sizes": sizes,
            }
        if args.only in (None, "char_rnn"):
            results["char_rnn"] = bench_char_rnn(args.scale)
            results["char_rnn"]["measured_at"] = results["measured_at"]
            results["char_rnn"]["machine"] = results["machine"]
    RESULTS.write_text(json.dumps(results, indent=2, default=float) + "\n", encoding="utf-8")
    write_readme(results)
    print(table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
