"""The char-RNN training loop: epochs of shuffled windows, validation in bits per character,
early stopping, best-epoch selection, and full-state checkpoints for resuming.

The model itself (layers, save, load, sampling) is :mod:`training.char_rnn`; this module
imports it, as :mod:`training.gpt2_train` imports :mod:`training.gpt2`.

Each epoch's windows (a different start offset) and their order are pure functions of
(seed, epoch), so a checkpoint's data position is just (epoch, batch index); resuming
rebuilds the epoch and skips the batches already seen. A checkpoint is one ``.npz`` file
(weights, optimizer slots, loop state, RNG states) written atomically.
"""

from __future__ import annotations

import io
import json
import math
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import structlog

from training.char_rnn import CharRNN, Vocab
from training.char_rnn_config import CharRNNConfig
from training.files import atomic_write_bytes
from training.models import EpochReport, TrainResult
from training.runs import (
    checkpoint_path,
    epoch_permutation,
    load_newest,
    prune_checkpoints,
    python_numpy_rng_state,
    restore_python_numpy_rng,
)
from training.tf_quiet import quiet_tensorflow
from training.trainlog import Progress, TrainLog

with quiet_tensorflow():  # Keras loads TensorFlow (training.char_rnn already did, quietly)
    import keras

log = structlog.get_logger(__name__)

BEST_FILE = "best.npz"
LOG_EVERY = 20


def windows(stream: np.ndarray, seq_len: int, offset: int) -> tuple[np.ndarray, np.ndarray]:
    """Non-overlapping (input, next-char target) windows starting at ``offset``.

    A different offset each epoch shows the model other window boundaries for free. A stream
    shorter than one window becomes a single shorter window rather than nothing.
    """
    usable = stream[offset:] if len(stream) - offset > seq_len else stream
    if len(usable) <= seq_len:
        seq_len = len(usable) - 1
    n = (len(usable) - 1) // seq_len
    x = usable[: n * seq_len].reshape(n, seq_len)
    y = usable[1 : n * seq_len + 1].reshape(n, seq_len)
    return x, y


def mean_loss(model: keras.Model, x: np.ndarray, y: np.ndarray, batch_size: int) -> float:
    """Mean next-char cross-entropy (nats) over every position of the given windows."""
    total, count = 0.0, 0
    for start in range(0, len(x), batch_size):
        xb, yb = x[start : start + batch_size], y[start : start + batch_size]
        total += float(model.test_on_batch(xb, yb)) * yb.size
        count += yb.size
    return total / count


def _epoch_data(stream: np.ndarray, config: CharRNNConfig, epoch: int) -> tuple[Any, Any]:
    """The epoch's windows in training order; a new offset each epoch shows new boundaries."""
    offset = int(np.random.default_rng([config.seed, epoch, 1]).integers(config.seq_len))
    x, y = windows(stream, config.seq_len, offset)
    order = epoch_permutation(config.seed, epoch, len(x))
    return x[order], y[order]


def _pack(arrays: dict[str, np.ndarray], state: dict[str, Any]) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, state=np.frombuffer(json.dumps(state).encode(), dtype=np.uint8), **arrays)
    return buffer.getvalue()


def _unpack(path: Path) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    with np.load(path) as data:
        arrays = {k: data[k] for k in data.files if k != "state"}
        state = json.loads(data["state"].tobytes().decode())
    return arrays, state


def _weights(model: keras.Model, prefix: str = "w") -> dict[str, np.ndarray]:
    return {f"{prefix}{i}": w for i, w in enumerate(model.get_weights())}


def _set_weights(model: keras.Model, arrays: dict[str, np.ndarray], prefix: str = "w") -> None:
    n = sum(1 for k in arrays if k.startswith(prefix) and k[len(prefix) :].isdigit())
    model.set_weights([arrays[f"{prefix}{i}"] for i in range(n)])


def fit(
    texts: Sequence[str],
    val_texts: Sequence[str],
    config: CharRNNConfig,
    *,
    stop: threading.Event | None = None,
    on_epoch: Callable[[EpochReport], None] | None = None,
    run_dir: Path | None = None,
    resume: bool = False,
) -> tuple[CharRNN, TrainResult]:
    """Train from scratch or from ``run_dir``'s newest checkpoint; return the best epoch.

    The returned model holds the weights of the best validation epoch; the result, their
    losses. A set ``stop`` ends training after the current batch; the epoch is still
    validated and, with a ``run_dir``, checkpointed, so a resumed run continues from that
    very batch.
    """
    if not any(texts):
        raise ValueError("char_rnn needs at least one non-empty training text")
    keras.utils.set_random_seed(config.seed)
    model = CharRNN(config, Vocab.from_texts(texts))
    train_model = model.sequence_model
    optimizer = train_model.optimizer
    optimizer.build(train_model.trainable_variables)
    stream = model.vocab.encode_stream(texts)
    val = windows_for(model, val_texts, config)

    state: dict[str, Any] = {"step": 0, "epoch": 1, "batch": 0, "elapsed": 0.0}
    state |= {"best_val": None, "best_epoch": None, "bad_epochs": 0, "loss_sum": 0.0}
    state |= {"loss_count": 0, "last_train_loss": math.nan, "last_val_loss": None}
    best_weights: list[np.ndarray] | None = None
    if resume and run_dir is not None:
        path, (arrays, saved) = load_newest(run_dir, _unpack)
        if saved["vocab"] != model.vocab.chars:
            raise ValueError(f"{path}: checkpoint vocabulary differs from the dataset's")
        _set_weights(train_model, arrays)
        for var, i in zip(optimizer.variables, range(len(optimizer.variables)), strict=True):
            var.assign(arrays[f"o{i}"])
        state |= saved["state"]
        restore_python_numpy_rng(saved["rng"])
        if (run_dir / BEST_FILE).exists():
            best_arrays = _unpack(run_dir / BEST_FILE)[0]
            best_weights = [best_arrays[f"w{i}"] for i in range(len(best_arrays))]
        log.info("char_rnn.resumed", checkpoint=str(path), step=state["step"])
    trainlog = None
    if run_dir is not None:
        trainlog = TrainLog(run_dir, resume_step=state["step"] if resume else None)

    def save_checkpoint() -> None:
        if run_dir is None:
            return
        arrays = _weights(train_model)
        arrays |= {f"o{i}": np.asarray(v) for i, v in enumerate(optimizer.variables)}
        blob = _pack(
            arrays, {"state": state, "rng": python_numpy_rng_state(), "vocab": model.vocab.chars}
        )
        atomic_write_bytes(checkpoint_path(run_dir, state["step"], "npz"), blob)
        prune_checkpoints(run_dir)
        log.debug("char_rnn.checkpoint_saved", step=state["step"])

    steps_per_epoch = len(_epoch_data(stream, config, 1)[0]) // max(1, config.batch_size) or 1
    progress = Progress(config.epochs * steps_per_epoch, state["step"], name="char_rnn")
    started = time.monotonic() - state["elapsed"]
    # chars/s counts time inside training steps only: no validation, no checkpoint writes.
    window_seconds, window_chars = 0.0, 0
    stop = stop or threading.Event()
    stopping = False
    first_step = state["step"] + 1
    while state["epoch"] <= config.epochs and not stopping:
        epoch = state["epoch"]
        epoch_started = time.monotonic()
        x, y = _epoch_data(stream, config, epoch)
        batch = min(config.batch_size, len(x))
        n_batches = len(x) // batch
        while state["batch"] < n_batches:
            b = state["batch"]
            rows = slice(b * batch, (b + 1) * batch)
            step_started = time.monotonic()
            loss = float(train_model.train_on_batch(x[rows], y[rows]))
            window_seconds += time.monotonic() - step_started
            state["step"] += 1
            state["batch"] += 1
            state["loss_sum"] += loss
            state["loss_count"] += 1
            window_chars += batch * x.shape[1]
            # This process's first step gets a row of its own: it includes tracing (and XLA
            # compiling), so the later rows show the steady speed.
            logged = state["step"] % LOG_EVERY == 0 or state["step"] == first_step
            if logged and trainlog is not None:
                now = time.monotonic()
                trainlog.append(
                    step=state["step"], train_loss=loss, lr=config.learning_rate,
                    tokens_per_s=window_chars / max(window_seconds, 1e-9),
                    elapsed_s=now - started,
                )  # fmt: skip
                window_seconds, window_chars = 0.0, 0
            progress.update(state["step"], loss=loss)
            if stop.is_set():
                stopping = True
                break
            if config.checkpoint_interval and state["step"] % config.checkpoint_interval == 0:
                state["elapsed"] = time.monotonic() - started
                save_checkpoint()
        if state["loss_count"] == 0:
            break
        complete = state["batch"] >= n_batches
        train_loss = state["loss_sum"] / state["loss_count"]
        val_loss = None if val is None else mean_loss(train_model, *val, config.batch_size)
        state |= {"last_train_loss": train_loss, "last_val_loss": val_loss}
        # Only whole epochs compete for "best": a cut-short one is finished after a resume.
        if complete and val_loss is not None:
            if state["best_val"] is None or val_loss < state["best_val"]:
                state |= {"best_val": val_loss, "best_epoch": epoch, "bad_epochs": 0}
                best_weights = train_model.get_weights()
                if run_dir is not None:
                    atomic_write_bytes(run_dir / BEST_FILE, _pack(_weights(train_model), {}))
            else:
                state["bad_epochs"] += 1
        patience = config.early_stopping_patience
        early = bool(patience) and state["bad_epochs"] >= patience
        if complete:
            state |= {"epoch": epoch + 1, "batch": 0, "loss_sum": 0.0, "loss_count": 0}
        state["elapsed"] = time.monotonic() - started
        if trainlog is not None:
            trainlog.append(
                step=state["step"], train_loss=train_loss, val_loss=val_loss,
                lr=config.learning_rate, elapsed_s=state["elapsed"],
            )  # fmt: skip
        last = state["epoch"] > config.epochs
        if not config.checkpoint_interval or stopping or early or last:
            save_checkpoint()
        if on_epoch is not None:
            on_epoch(
                EpochReport(
                    epoch=epoch,
                    step=state["step"],
                    train_loss=train_loss,
                    val_loss=val_loss,
                    val_bits_per_char=None if val_loss is None else val_loss / math.log(2),
                    seconds=time.monotonic() - epoch_started,
                    complete=complete,
                )
            )
        if early:
            log.info("char_rnn.early_stopping", epoch=epoch, best_epoch=state["best_epoch"])
            break
    progress.close()
    if best_weights is not None:
        train_model.set_weights(best_weights)
    best = state["best_val"]
    return model, TrainResult(
        step=state["step"],
        train_loss=state["last_train_loss"],
        val_loss=best if best is not None else state["last_val_loss"],
    )


def windows_for(model: CharRNN, texts: Sequence[str], config: CharRNNConfig) -> Any:
    """Validation windows (offset 0, fixed), or None without validation texts."""
    if not texts:
        return None
    return windows(model.vocab.encode_stream(texts), config.seq_len, 0)
