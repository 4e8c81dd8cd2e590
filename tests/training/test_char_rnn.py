"""The char-RNN trains, samples in batches with state, and survives a save/load round trip."""

from __future__ import annotations

from pathlib import Path

import pytest

from training.char_rnn import WEIGHTS_FILE, CharRNN, CharRNNConfig, Vocab
from training.char_rnn_train import fit
from training.models import EpochReport, TextModel, load_model
from training.publish import ModelLoadError

# Keras/TF call np.array() on variables when saving, which numpy 2 flags; not our code.
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")

PHRASES = ["the cat sat on the mat", "the dog ate a bone", "a bird sang all day long"]
TINY = CharRNNConfig(
    embedding_dim=16, units=32, seq_len=32, batch_size=16, epochs=16, learning_rate=1e-2
)


@pytest.fixture(scope="module")
def trained() -> tuple[CharRNN, list[EpochReport]]:
    reports: list[EpochReport] = []
    texts = PHRASES * 40
    model, result = fit(texts, PHRASES * 4, TINY, on_epoch=reports.append)
    assert result.step == reports[-1].step > 0
    return model, reports


def test_config_rejects_unknown_and_bad_values() -> None:
    assert CharRNNConfig.from_dict({"units": 8}).units == 8
    with pytest.raises(ValueError, match="unitz, unknwn"):
        CharRNNConfig.from_dict({"unitz": 8, "unknwn": 1})
    with pytest.raises(ValueError, match="cell"):
        CharRNNConfig.from_dict({"cell": "rnn"})
    with pytest.raises(ValueError, match="units"):
        CharRNNConfig.from_dict({"units": "32"})


def test_vocab_reserves_padding_and_boundary() -> None:
    vocab = Vocab.from_texts(["ba", "c"])
    assert vocab.chars == ["a", "b", "c"] and vocab.size == 5
    assert vocab.encode("abz") == [2, 3, 0]
    assert vocab.encode_stream(["ab", "c"]).tolist() == [1, 2, 3, 1, 4, 1]


def test_validation_loss_falls(trained: tuple[CharRNN, list[EpochReport]]) -> None:
    _, reports = trained
    assert [r.epoch for r in reports] == list(range(1, 17)) and all(r.complete for r in reports)
    assert reports[-1].val_loss < reports[0].val_loss
    assert reports[-1].val_bits_per_char == pytest.approx(reports[-1].val_loss / 0.6931, 1e-3)


def test_generate_batch_starts_with_seeds_and_stops(
    trained: tuple[CharRNN, list[EpochReport]],
) -> None:
    model, _ = trained
    assert isinstance(model, TextModel)
    seeds = ["the ", "a b", "", "héllo ☃"]
    out = model.generate(seeds, max_length=60, temperature=0.8, random_seed=1)
    assert len(out) == len(seeds)
    allowed = set("".join(PHRASES)) | set("héllo ☃")
    for seed, text in zip(seeds, out, strict=True):
        assert text.startswith(seed)
        assert len(text) <= 60
        assert set(text) <= allowed  # no boundary/padding token leaks as a character
    assert model.generate(["the cat sat on"], max_length=5, temperature=1.0) == ["the cat sat on"]
    with pytest.raises(ValueError, match="temperature"):
        model.generate(["x"], max_length=10, temperature=0)


def test_generation_ends_at_the_boundary(trained: tuple[CharRNN, list[EpochReport]]) -> None:
    model, _ = trained
    out = model.generate(["the cat"] * 4, max_length=200, temperature=0.05, random_seed=0)
    # The corpus's tweets are under 30 chars, so a learned boundary ends far before 200.
    assert all(len(text) < 200 for text in out), out


def test_save_load_round_trip(tmp_path: Path, trained: tuple[CharRNN, list[EpochReport]]) -> None:
    model, _ = trained
    model.save(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "config.json",
        "model.weights.h5",
        "vocab.json",
    ]
    loaded = load_model("char_rnn", tmp_path)
    assert isinstance(loaded, CharRNN) and loaded.config == model.config
    seeds = ["the ", "a bird"]
    kwargs = {"max_length": 50, "temperature": 0.01, "random_seed": 3}
    assert loaded.generate(seeds, **kwargs) == model.generate(seeds, **kwargs)


def test_load_refuses_missing_or_corrupt_files(
    tmp_path: Path, trained: tuple[CharRNN, list[EpochReport]]
) -> None:
    model, _ = trained
    model.save(tmp_path)
    weights = tmp_path / WEIGHTS_FILE
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(ModelLoadError, match=r"model\.weights\.h5"):
        CharRNN.load(tmp_path)
    weights.unlink()
    with pytest.raises(ModelLoadError, match=r"model\.weights\.h5.*missing"):
        CharRNN.load(tmp_path)
    (tmp_path / "vocab.json").write_text("[1, 2")
    with pytest.raises(ModelLoadError, match=r"vocab\.json"):
        CharRNN.load(tmp_path)
    (tmp_path / "config.json").write_text('{"units": 32, "bogus": 1}')
    with pytest.raises(ModelLoadError, match=r"config\.json.*bogus"):
        CharRNN.load(tmp_path)


def test_load_model_dispatch(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="'bert'"):
        load_model("bert", tmp_path)
    with pytest.raises(ModelLoadError, match=r"config\.json: file is missing"):
        load_model("gpt2", tmp_path)


def test_stacked_lstm_with_dropout_trains_and_round_trips(tmp_path: Path) -> None:
    config = CharRNNConfig(
        embedding_dim=8, units=16, layers=2, cell="lstm", dropout=0.1, seq_len=16, epochs=1
    )
    model, result = fit(PHRASES * 5, [], config)
    assert result.step > 0 and result.val_loss is None
    model.save(tmp_path)
    loaded = CharRNN.load(tmp_path)
    kwargs = {"max_length": 30, "temperature": 0.5, "random_seed": 7}
    assert loaded.generate(["the", "a"], **kwargs) == model.generate(["the", "a"], **kwargs)


def repeat_share(texts: list[str]) -> float:
    """Share of characters that repeat one already in their text: what a penalty lowers."""
    chars = sum(len(t) for t in texts)
    return sum(len(t) - len(set(t)) for t in texts) / max(chars, 1)


def test_sampling_controls(trained: tuple[CharRNN, list[EpochReport]]) -> None:
    model, _ = trained
    seeds = ["the ", "a", ""]

    def run(**kwargs) -> list[str]:
        return model.generate(seeds, **({"max_length": 60, "temperature": 1.0} | kwargs))

    greedy = run(top_k=1, random_seed=1)
    assert run(top_k=1, random_seed=2, temperature=3.0) == greedy  # no randomness left
    assert run(top_p=1e-9, random_seed=3) == greedy  # a tiny nucleus is the top token only
    assert run(random_seed=4) == run(random_seed=4) != run(random_seed=5)
    plain = repeat_share(run(random_seed=6))
    assert repeat_share(run(random_seed=6, repetition_penalty=3.0)) < plain - 0.1
    with pytest.raises(ValueError, match="top_p"):
        run(top_p=0)


def test_the_context_conditions_the_sample_and_is_not_returned(
    trained: tuple[CharRNN, list[EpochReport]],
) -> None:
    model, _ = trained

    def reply(context: str, **kwargs) -> list[str]:
        kwargs = {"max_length": 40, "temperature": 1.0, "random_seed": 9} | kwargs
        return model.generate(["", "a"] * 3, context=context, **kwargs)

    assert reply("the dog ate a bone") == reply("the dog ate a bone")
    assert reply("the dog ate a bone") != reply("a bird sang all day long")
    assert reply("") == model.generate(["", "a"] * 3, max_length=40, temperature=1.0, random_seed=9)
    for text, seed in zip(reply("QQQ the cat"), ["", "a"] * 3, strict=True):
        assert text.startswith(seed) and len(text) <= 40 and "Q" not in text
    budgeted = model.generate(["the"] * 4, max_length=60, temperature=1.0, max_new_tokens=5)
    assert all(len(text) <= len("the") + 5 for text in budgeted)


def test_fused_gru_matches_keras_gru_values_and_gradients(monkeypatch: pytest.MonkeyPatch) -> None:
    """Both fused paths compute the stock layers' values and gradients: a GRU over any
    inputs from any initial state, and one reading its inputs through a folded embedding."""
    import keras
    import numpy as np
    import tensorflow as tf

    import training.char_rnn as char_rnn

    calls = []
    fused_sequence = char_rnn._gru_sequence
    monkeypatch.setattr(char_rnn, "_gru_sequence", lambda *a: calls.append(1) or fused_sequence(*a))
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)  # non-zero biases, so both bias rows are exercised
    tokens = tf.constant(rng.integers(0, 9, (3, 7)), dtype=tf.int32)
    x, h0 = tf.random.normal((3, 7, 5)), tf.random.normal((3, 6))

    def gradients(embed: keras.layers.Layer, rnn: keras.layers.Layer, folded: bool) -> list:
        with tf.GradientTape() as tape:
            tape.watch([x, h0])
            if folded:
                kwargs = {"tokens": tokens} if isinstance(rnn, char_rnn.GRU) else {}
                seq, last = rnn(embed(tokens), **kwargs)
            else:
                seq, last = rnn(x, initial_state=[h0])
            loss = tf.reduce_sum(seq * tf.range(6.0)) + tf.reduce_sum(last**2)
        inputs = embed.trainable_weights if folded else [x, h0]
        grads = tape.gradient(loss, [*rnn.trainable_weights, *inputs])
        return [loss, *(tf.convert_to_tensor(g) for g in grads)]

    for folded in (False, True):
        embeds = [keras.layers.Embedding(9, 5) for _ in range(2)]
        stock = keras.layers.GRU(6, return_sequences=True, return_state=True)
        fused = char_rnn.GRU(6, return_sequences=True, return_state=True)
        for embed, rnn in zip(embeds, (stock, fused), strict=True):
            rnn(embed(tokens))
        stock.set_weights([w + 0.3 * rng.standard_normal(w.shape) for w in stock.get_weights()])
        fused.set_weights(stock.get_weights())
        embeds[1].set_weights(embeds[0].get_weights())
        if folded:
            fused.fold_embedding(embeds[1])
        calls.clear()
        expected = gradients(embeds[0], stock, folded)
        got = gradients(embeds[1], fused, folded)
        assert calls, "the fused path was not taken"
        for a, b in zip(expected, got, strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_weights_from_the_stock_keras_gru_still_load(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Checkpoints published before the fused layer existed load unchanged."""
    import keras
    import numpy as np

    import training.char_rnn as char_rnn

    config = CharRNNConfig(embedding_dim=8, units=16)
    with monkeypatch.context() as patch:
        patch.setattr(char_rnn, "GRU", keras.layers.GRU)
        old = CharRNN(config, Vocab(list("abc")))
    assert type(old._model.get_layer("rnn0")) is keras.layers.GRU
    old.save(tmp_path)
    new = CharRNN.load(tmp_path)
    assert type(new._model.get_layer("rnn0")) is char_rnn.GRU
    tokens = np.array([[1, 2, 3, 4, 2, 1]], dtype=np.int32)
    np.testing.assert_allclose(new._model(tokens), old._model(tokens), atol=1e-5)


def reference_generate(model: CharRNN, seeds: list[str], **kwargs) -> list[str]:
    """The pre-graph sampler, one step-model call and one numpy ``choose`` per character.

    Greedy settings only (``top_k=1``), so it and the graph must agree to the character.
    """
    import numpy as np
    import tensorflow as tf

    from training.char_rnn import EOT_ID, PAD_ID
    from training.sampling import Sampling, choose, per_row, seen_tokens

    sampling = Sampling(1.0, 1, 1.0, kwargs.get("repetition_penalty", 1.0))
    prefixes = [
        [EOT_ID, *model._known_ids(c), *([EOT_ID] if c else []), *model._known_ids(s)]
        for c, s in zip(per_row(kwargs.get("context"), len(seeds)), seeds, strict=True)
    ]
    budgets = [min(kwargs["max_length"] - len(s), kwargs["max_new_tokens"]) for s in seeds]
    seen = seen_tokens(prefixes, model.vocab.size, (PAD_ID, EOT_ID))
    outputs, done = [""] * len(seeds), [b <= 0 for b in budgets]
    states = [tf.zeros((len(seeds), model.config.units))]
    tokens = np.array([[p[0]] for p in prefixes], np.int32)
    t = 0
    while not all(done):
        logits, *states = model._step_model([tf.constant(tokens), *states], training=False)
        logits = np.array(logits)[:, 0, :]
        logits[:, PAD_ID] = -np.inf
        sampled = choose(logits, sampling, np.random.default_rng(0), seen)
        t += 1
        for i, prefix in enumerate(prefixes):
            token = prefix[t] if t < len(prefix) else PAD_ID if done[i] else int(sampled[i])
            tokens[i, 0] = token
            if t >= len(prefix) and not done[i]:
                done[i] = token == EOT_ID
                if token != EOT_ID:
                    outputs[i] += model.vocab.chars[token - 2]
                    seen[i, token] = True
                    done[i] = len(outputs[i]) >= budgets[i]
    return [seed + out for seed, out in zip(seeds, outputs, strict=True)]


def test_the_graph_sampler_matches_the_step_by_step_one(
    trained: tuple[CharRNN, list[EpochReport]],
) -> None:
    """Prefix feeding, contexts, budgets, the penalty and stopping, character for character."""
    model, _ = trained
    seeds = ["the ", "", "a bird", "the dog ate a bone and"]
    kwargs = {
        "max_length": 26,
        "max_new_tokens": 18,
        "repetition_penalty": 1.4,
        "context": ["the dog ate a bone", "", "the cat", "a"],
    }
    expected = reference_generate(model, seeds, **kwargs)
    assert model.generate(seeds, temperature=0.9, top_k=1, **kwargs) == expected
    assert sum(len(t) - len(s) for t, s in zip(expected, seeds, strict=True)) > 20


def untrained(eot_bias: float = -1e4) -> CharRNN:
    """A small fresh model whose ``<eot>`` logit is ``eot_bias`` above its others' scale."""
    model = CharRNN(CharRNNConfig(embedding_dim=8, units=16), Vocab(list("abcdexyz ")))
    head = model._step_model.get_layer("logits")
    kernel, bias = head.get_weights()
    bias[1] = eot_bias
    head.set_weights([kernel, bias])
    return model


def test_budgets_hold_exactly_and_seeded_samples_repeat() -> None:
    model = untrained()  # never draws <eot>: every row samples its whole budget
    seeds = ["", "ab", "xyz ab", "a" * 12]
    context = "dead beef"

    def run(**kwargs) -> list[str]:
        return model.generate(seeds, **({"temperature": 1.0, "context": context} | kwargs))

    out = run(max_length=10, random_seed=3)
    assert [len(t) for t in out] == [10, 10, 10, 12]  # max_length counts the seed
    assert [t[: len(s)] for t, s in zip(out, seeds, strict=True)] == seeds
    assert out == run(max_length=10, random_seed=3) != run(max_length=10, random_seed=4)
    assert run(max_length=10, random_seed=None) != run(max_length=10, random_seed=None)
    capped = run(max_length=10, max_new_tokens=4, random_seed=3, top_p=0.5, top_k=3)
    assert [len(t) for t in capped] == [4, 6, 10, 12]
    assert run(max_length=100, max_new_tokens=0) == seeds
    assert [len(t) for t in run(max_length=2)] == [2, 2, 6, 12]  # long seeds come back whole


def test_a_row_stops_at_the_boundary_it_draws() -> None:
    """Constant logits make the walk known: 'a', then 'b' once 'a' is penalised, then <eot>
    once both are; PAD, though its logit is the highest, is never drawn."""
    model = untrained()
    head = model._step_model.get_layer("logits")
    kernel, bias = head.get_weights()
    bias[:] = 0.0
    bias[:5] = [10.0, 1.5, 2.0, 1.8, 0.5]  # PAD, <eot>, 'a', 'b', 'c'
    head.set_weights([kernel * 0, bias])
    steps = []
    sample = model._sample

    def counting(*args: object) -> object:  # how many steps the graph's loop ran
        ids = sample(*args)
        steps.append(ids.shape[0])
        return ids

    model._sample = counting

    def run(seeds: list[str], **kwargs) -> list[str]:
        kwargs = {"max_length": 100, "temperature": 1.0, "top_k": 1} | kwargs
        return model.generate(seeds, repetition_penalty=2.0, **kwargs)

    assert run(["", "x", "a", "ab"]) == ["ab", "xab", "ab", "ab"]
    assert steps[-1] == 1 + 3  # the "x" row's prefix, then a, b, <eot>: not 99 steps more
    assert run([""], context="b") == ["a"]  # the context counts as seen, and is not returned
    assert run(["", ""], temperature=0.01, top_k=0, random_seed=1) == ["ab", "ab"]


def test_the_sampling_graph_is_traced_once() -> None:
    model = untrained(eot_bias=0.0)
    assert model._sample.experimental_get_tracing_count() == 0
    model.generate(["a"], max_length=5, temperature=1.0)
    calls = [
        {"seeds": ["a", "b", ""], "max_length": 9, "temperature": 0.5, "top_k": 3},
        {"seeds": [""] * 7, "max_length": 30, "temperature": 2.0, "top_p": 0.8},
        {"seeds": ["xyz"], "max_length": 20, "temperature": 1.0, "repetition_penalty": 1.5},
        {"seeds": ["a", "b"], "max_length": 40, "temperature": 1.0, "top_k": 1,
         "context": ["a much longer context than before", "c"], "max_new_tokens": 3},
        {"seeds": ["ab"] * 5, "max_length": 12, "temperature": 0.8, "random_seed": 2},
    ]  # fmt: skip
    for kwargs in calls:
        model.generate(kwargs.pop("seeds"), **kwargs)
    assert model._sample.experimental_get_tracing_count() == 1
