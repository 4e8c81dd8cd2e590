"""The char-RNN anchors: a plain Keras 3 model and the tutorial's one-hot window model.

* Plain baseline: Embedding → LSTM(256, return_sequences) → Dense, ``model.fit`` with its
  defaults (Adam 1e-3), batch 64, 100-character sequences, tweets joined by newlines.
* Tutorial (Keras' lstm_text_generation example, which textgenrnn-era posts link): one-hot
  40-character windows every 3 characters → LSTM(128) → softmax, RMSprop(0.01), batch 128.

Both are given the same wall-clock budget as our trainer and scored in bits per character
on the same validation tweets.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from typing import Any

import numpy as np


def _codec(texts: Sequence[str]) -> tuple[dict[str, int], int]:
    chars = sorted({c for t in texts for c in t} | {"\n"})
    return {c: i for i, c in enumerate(chars)}, len(chars)


def _encode(texts: Sequence[str], ids: dict[str, int]) -> np.ndarray:
    return np.array([ids.get(c, ids["\n"]) for c in "\n".join(texts) + "\n"], dtype=np.int32)


class _Timer:
    def __init__(self, seconds: float) -> None:
        import keras

        outer = self

        class Stop(keras.callbacks.Callback):
            def on_train_batch_begin(self, batch: int, logs: Any = None) -> None:
                outer.t0 = time.perf_counter()

            def on_train_batch_end(self, batch: int, logs: Any = None) -> None:
                outer.batches += 1
                if outer.batches > 2:  # the first batches compile the step
                    outer.train_seconds += time.perf_counter() - outer.t0
                    outer.counted += 1
                if time.perf_counter() - outer.started >= seconds:
                    self.model.stop_training = True

        self.callback = Stop()
        self.started = time.perf_counter()
        self.batches = self.counted = 0
        self.train_seconds = 0.0


def plain_keras(train: Sequence[str], val: Sequence[str], seconds: float) -> dict[str, float]:
    import keras

    ids, vocab = _codec(train)
    stream, val_stream = _encode(train, ids), _encode(val, ids)
    seq = 100
    n = (len(stream) - 1) // seq
    x = stream[: n * seq].reshape(n, seq)
    y = stream[1 : n * seq + 1].reshape(n, seq)
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((None,), dtype="int32"),
            keras.layers.Embedding(vocab, 64),
            keras.layers.LSTM(256, return_sequences=True),
            keras.layers.Dense(vocab),
        ]
    )
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    timer = _Timer(seconds)
    model.fit(x, y, batch_size=64, epochs=100_000, verbose=0, callbacks=[timer.callback])
    vn = (len(val_stream) - 1) // seq
    vx = val_stream[: vn * seq].reshape(vn, seq)
    vy = val_stream[1 : vn * seq + 1].reshape(vn, seq)
    val_loss = float(model.evaluate(vx, vy, batch_size=64, verbose=0))
    return {
        "chars_per_s": timer.counted * 64 * seq / max(timer.train_seconds, 1e-9),
        "val_bpc": val_loss / math.log(2),
        "batches": timer.batches,
        "wall_seconds": time.perf_counter() - timer.started,
    }


def tutorial_windows(train: Sequence[str], val: Sequence[str], seconds: float) -> dict[str, float]:
    import keras

    ids, vocab = _codec(train)
    window, step = 40, 3

    def windows(stream: np.ndarray, every: int) -> tuple[np.ndarray, np.ndarray]:
        starts = np.arange(0, len(stream) - window, every)
        x = np.zeros((len(starts), window, vocab), dtype=np.float32)
        for k, s in enumerate(starts):
            x[k, np.arange(window), stream[s : s + window]] = 1.0
        return x, stream[starts + window]

    x, y = windows(_encode(train, ids), step)
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((window, vocab)),
            keras.layers.LSTM(128),
            keras.layers.Dense(vocab, activation="softmax"),
        ]
    )
    model.compile(keras.optimizers.RMSprop(0.01), "sparse_categorical_crossentropy")
    timer = _Timer(seconds)
    model.fit(x, y, batch_size=128, epochs=100_000, verbose=0, callbacks=[timer.callback])
    vx, vy = windows(_encode(val, ids), 1)
    val_loss = float(model.evaluate(vx, vy, batch_size=256, verbose=0))
    predicted = timer.counted * 128 / max(timer.train_seconds, 1e-9)
    return {
        "predicted_chars_per_s": predicted,
        "input_chars_per_s": predicted * window,
        "val_bpc": val_loss / math.log(2),
        "batches": timer.batches,
        "wall_seconds": time.perf_counter() - timer.started,
    }


def ours(train: Sequence[str], val: Sequence[str], seconds: float, **overrides: Any) -> dict:
    """Our CharRNN trainer with its defaults at the baseline's size, stopped at the budget."""
    import tempfile
    import threading
    from pathlib import Path

    from training.char_rnn import CharRNNConfig
    from training.char_rnn_train import fit
    from training.trainlog import read_rows

    config = CharRNNConfig(epochs=100_000, early_stopping_patience=0, **overrides)
    stop = threading.Event()
    timer = threading.Timer(seconds, stop.set)
    started = time.perf_counter()
    timer.start()
    with tempfile.TemporaryDirectory() as tmp:
        _, result = fit(train, val, config, stop=stop, run_dir=Path(tmp))
        rows = read_rows(Path(tmp) / "train.log")
    timer.cancel()
    # The trainer logs step 1 (tracing, compiling) on its own row; the rest are windows of
    # equal steps, so their harmonic mean is total chars over total step time, the same
    # statistic as the baseline's (which skips its first two batches for the same reason).
    rates = [r["tokens_per_s"] for r in rows if r.get("tokens_per_s")][1:]
    vals = [r["val_loss"] for r in rows if r.get("val_loss") is not None]
    return {
        "chars_per_s": len(rates) / sum(1 / r for r in rates) if rates else float("nan"),
        # The model our trainer publishes: the best whole epoch on the validation split.
        "val_bpc": (result.val_loss or math.nan) / math.log(2),
        "final_val_bpc": vals[-1] / math.log(2),
        "steps": result.step,
        "config": config.to_dict(),
        "wall_seconds": time.perf_counter() - started,
    }
