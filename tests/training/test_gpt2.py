"""The GPT-2 fine-tuner on a tiny from-scratch config: trains, validates, samples, resumes."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from tests.support.training_data import TINY_GPT2, sample_texts
from training.gpt2 import GPT2, WEIGHTS_FILE
from training.gpt2_config import GPT2Settings
from training.gpt2_train import (
    EvalReport,
    FitResult,
    cpu_has_native_bf16,
    fit,
    lr_at,
    resolve_device_and_dtype,
)
from training.models import TextModel, load_model
from training.publish import ModelLoadError
from training.runs import list_checkpoints
from training.trainlog import read_rows

TEXTS = sample_texts()
TRAIN, VAL = TEXTS[:340], TEXTS[340:]
SETTINGS = GPT2Settings.from_dict(TINY_GPT2 | {"max_steps": 40})


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[FitResult, list[EvalReport], Path]:
    run_dir = tmp_path_factory.mktemp("run")
    evals: list[EvalReport] = []
    result = fit(TRAIN, VAL, SETTINGS, run_dir=run_dir, resume=False, on_eval=evals.append)
    return result, evals, run_dir


def test_settings_reject_unknown_keys_and_bad_values() -> None:
    with pytest.raises(ValueError, match="blok_size"):
        GPT2Settings.from_dict({"blok_size": 64})
    with pytest.raises(ValueError, match="n_embd"):
        GPT2Settings(n_embd=30, n_head=4)
    with pytest.raises(ValueError, match="block_size"):
        GPT2Settings(block_size=2048)
    with pytest.raises(ValueError, match="precision"):
        GPT2Settings(precision="fp8")  # type: ignore[arg-type]


def test_precision_on_cpu_is_bf16_where_native_else_fp32_and_fp16_needs_a_gpu() -> None:
    import torch

    auto = torch.bfloat16 if cpu_has_native_bf16() else None
    assert resolve_device_and_dtype(GPT2Settings(device="cpu")) == (torch.device("cpu"), auto)
    fp32 = GPT2Settings(device="cpu", precision="fp32")
    assert resolve_device_and_dtype(fp32) == (torch.device("cpu"), None)
    bf16 = GPT2Settings(device="cpu", precision="bf16")
    assert resolve_device_and_dtype(bf16)[1] == torch.bfloat16
    with pytest.raises(ValueError, match="fp16 needs a CUDA device"):
        resolve_device_and_dtype(GPT2Settings(device="cpu", precision="fp16"))


def test_learning_rate_warms_up_then_decays_to_the_floor() -> None:
    s = GPT2Settings(learning_rate=1e-3, warmup_steps=10, min_lr_ratio=0.1)
    lrs = [lr_at(step, s, 100) for step in range(100)]
    assert lrs[0] < lrs[5] < lrs[9] == pytest.approx(1e-3)
    assert lrs[50] < lrs[10] and lrs[-1] == pytest.approx(1e-4, rel=0.05)


def test_validation_loss_falls_and_the_best_weights_are_kept(trained) -> None:
    result, evals, run_dir = trained
    assert [e.step for e in evals] == [10, 20, 30, 40] and result.step == 40
    rows = read_rows(run_dir / "train.log")
    assert rows[0]["step"] == 0 and rows[0]["val_loss"] is not None  # the untrained baseline
    assert min(e.val_loss for e in evals) < rows[0]["val_loss"] - 1.0
    best = min(evals, key=lambda e: e.val_loss)
    assert result.best_step == best.step and result.val_loss == pytest.approx(best.val_loss)
    assert all(e.perplexity == pytest.approx(2.718281828**e.val_loss, rel=1e-6) for e in evals)
    assert [r["step"] for r in rows if r["train_loss"] is not None] == list(range(5, 41, 5))
    assert len(list_checkpoints(run_dir)) == 2  # older ones pruned


def test_generate_starts_with_the_seed_and_stops_at_end_of_text(trained) -> None:
    model = trained[0].model
    assert isinstance(model, TextModel)
    seeds = ["They ", "", "A penny"]
    out = model.generate(seeds, max_length=120, temperature=0.8, random_seed=1)
    assert len(out) == 3
    for seed, text in zip(seeds, out, strict=True):
        assert text.startswith(seed) and len(text) <= 120
        assert "<|endoftext|>" not in text
    # Sayings are under ~100 characters: a model that learned to end them stops well before
    # 280 characters at a low temperature, instead of running on into the next "tweet".
    short = model.generate(["The "] * 4, max_length=280, temperature=0.3, random_seed=2)
    assert all(len(t) < 200 for t in short), short
    with pytest.raises(ValueError, match="temperature"):
        model.generate(["x"], max_length=10, temperature=0)


def test_save_and_load_round_trip_without_a_hub(trained, tmp_path: Path) -> None:
    model = trained[0].model
    model.save(tmp_path)
    assert {"config.json", WEIGHTS_FILE, "tokenizer.json"} <= {p.name for p in tmp_path.iterdir()}
    loaded = load_model("gpt2", tmp_path)
    assert isinstance(loaded, GPT2) and loaded.settings == model.settings
    kwargs = {"max_length": 60, "temperature": 0.7, "random_seed": 5}
    assert loaded.generate(["They "], **kwargs) == model.generate(["They "], **kwargs)


def test_missing_or_corrupt_files_are_clear_load_errors(trained, tmp_path: Path) -> None:
    trained[0].model.save(tmp_path)
    weights = tmp_path / WEIGHTS_FILE
    weights.write_bytes(weights.read_bytes()[:200])
    with pytest.raises(ModelLoadError, match=r"model\.safetensors: cannot load"):
        load_model("gpt2", tmp_path)
    weights.unlink()
    with pytest.raises(ModelLoadError, match=r"model\.safetensors: file is missing"):
        load_model("gpt2", tmp_path)


def test_a_resumed_run_matches_an_uninterrupted_one(trained, tmp_path: Path) -> None:
    """Stopped after step 20 (checkpoint), resumed: same steps, same losses (CPU is exact)."""
    full, full_evals, _ = trained
    stop = threading.Event()

    def stop_at_20(report: EvalReport) -> None:
        if report.step == 20:
            stop.set()

    first = fit(TRAIN, VAL, SETTINGS, run_dir=tmp_path, resume=False, stop=stop, on_eval=stop_at_20)
    assert first.step == 21  # the step in flight when the flag was seen completes
    evals: list[EvalReport] = []
    resumed = fit(TRAIN, VAL, SETTINGS, run_dir=tmp_path, resume=True, on_eval=evals.append)
    assert resumed.step == full.step == 40
    assert [e.step for e in evals] == [30, 40]
    assert evals[-1].val_loss == pytest.approx(full_evals[-1].val_loss, abs=0.02)
    steps = [r["step"] for r in read_rows(tmp_path / "train.log")]
    assert steps == sorted(set(steps))  # rows after the checkpoint were not written twice


def test_fifty_tweets_train_with_no_block_size_rejection(tmp_path: Path) -> None:
    settings = SETTINGS.model_copy(update={"block_size": 128, "batch_size": 16, "max_steps": 6})
    texts = sample_texts(50)
    result = fit(texts[:45], texts[45:], settings, run_dir=tmp_path, resume=False)
    assert result.step == 6 and result.val_loss is not None


SEEDS = ["They ", "", "A penny saved is a penny", "Early to bed and early to rise makes a man"]


def untrained(trained, init: float = 0.3) -> GPT2:
    """A fresh model on the trained tokenizer: it never chooses to stop, so every greedy row
    runs its whole budget, and its wide random logits make any padding leak change a token."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    model = trained[0].model
    eos = model.tokenizer.eos_token_id
    torch.manual_seed(0)
    config = GPT2Config(
        vocab_size=len(model.tokenizer), n_positions=256, n_layer=2, n_head=2, n_embd=32,
        initializer_range=init, bos_token_id=eos, eos_token_id=eos,
    )  # fmt: skip
    net = GPT2LMHeadModel._from_config(config, attn_implementation="sdpa").eval()
    return GPT2(net, model.tokenizer, model.settings)


def test_a_left_padded_batch_decodes_exactly_like_each_row_alone(trained) -> None:
    model = untrained(trained)
    lengths = {len(model.tokenizer.encode(s)) for s in SEEDS}
    assert len(lengths) == len(SEEDS)  # really different token lengths: padding is exercised
    greedy = {"max_length": 280, "temperature": 1.0, "top_k": 1, "max_new_tokens": 40}
    contexts = ["", "Lost time is never found again.", "Haste makes waste", "x"]
    for context in (None, contexts):
        batch = model.generate(SEEDS, context=context, **greedy)
        alone = [
            model.generate([s], context=None if context is None else c, **greedy)[0]
            for s, c in zip(SEEDS, contexts, strict=True)
        ]
        assert batch == alone
        assert all(len(text) > len(seed) + 40 for text, seed in zip(batch, SEEDS, strict=True))


def test_gpt2_sampling_controls_and_token_budget(trained) -> None:
    model = trained[0].model

    def run(**kwargs) -> list[str]:
        return model.generate(SEEDS[:2] * 2, **({"max_length": 100, "temperature": 1.0} | kwargs))

    assert run(top_p=1e-9, random_seed=1) == run(top_k=1, random_seed=2, temperature=4.0)
    assert run(top_k=5, random_seed=3) == run(top_k=5, random_seed=3) != run(random_seed=4)
    free = untrained(trained)
    kwargs = {"max_length": 280, "temperature": 1.0, "random_seed": 5}
    short = free.generate(SEEDS, max_new_tokens=3, **kwargs)
    longer = free.generate(SEEDS, max_new_tokens=30, **kwargs)
    for seed, a, b in zip(SEEDS, short, longer, strict=True):
        assert b.startswith(a) and len(seed) < len(a) < len(b)  # the same draws, cut sooner
    ids = [model.tokenizer.encode(t) for t in run(random_seed=6, temperature=1.5)]
    penalised = [
        model.tokenizer.encode(t)
        for t in run(random_seed=6, temperature=1.5, repetition_penalty=4.0)
    ]

    def repeats(rows: list[list[int]]) -> float:
        return sum(len(r) - len(set(r)) for r in rows) / max(1, sum(len(r) for r in rows))

    assert repeats(penalised) < repeats(ids)


def test_gpt2_replies_read_the_context_and_never_return_it(trained) -> None:
    model = trained[0].model
    kwargs = {"max_length": 80, "temperature": 1.0, "random_seed": 11}

    def reply(context: str) -> list[str]:
        return model.generate(["", "The "] * 2, context=context, **kwargs)

    assert reply("A penny saved") == reply("A penny saved") != reply("Lost time is never found")
    context = "Zebras quarrel xylophones"
    for text in reply(context):
        assert "Zebras" not in text and "xylophones" not in text


def test_a_version_that_loads_but_raises_on_generate_is_refused(
    trained, tmp_path: Path, redis_client, account: str
) -> None:
    """A tokenizer that does not fit its model (its end-of-text id is past the embedding)
    loads fine and only fails when asked to write: the smoke generation catches it."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    from bot.config import FilterConfig, GenerationConfig
    from bot.generation import GenerationService
    from bot.hotload import CheckpointWatcher
    from bot.state import BotState
    from training.publish import new_staging_dir, publish

    model_dir = tmp_path / "checkpoints" / "gpt2"
    model_dir.mkdir(parents=True)
    good = trained[0].model
    eos = good.tokenizer.eos_token_id

    def publish_model(model: GPT2) -> str:
        staging = new_staging_dir(model_dir)
        model.save(staging)
        manifest = publish(
            staging, model_kind="gpt2", step=1, train_loss=1.0, val_loss=1.0,
            dataset_hash="test", config={},
        )  # fmt: skip
        return manifest.version

    service = GenerationService(GenerationConfig(max_length=40), FilterConfig())
    watcher = CheckpointWatcher(model_dir, "gpt2", service, BotState(redis_client, account))
    serving = publish_model(good)
    assert watcher.check() and service.current.version == serving

    torch.manual_seed(0)
    config = GPT2Config(
        vocab_size=eos, n_positions=64, n_layer=1, n_head=2, n_embd=16,
        bos_token_id=0, eos_token_id=0,
    )  # fmt: skip
    net = GPT2LMHeadModel._from_config(config, attn_implementation="sdpa").eval()
    broken = publish_model(GPT2(net, good.tokenizer, good.settings))
    assert load_model("gpt2", model_dir / broken) is not None  # it loads...
    assert not watcher.check()  # ...but cannot write, so it never serves
    assert service.current.version == serving
    reason = watcher.state.bad_versions()[broken]
    assert "index" in reason.lower() and "ModelLoadError" not in reason  # raised by generate
