"""A character-level RNN (Keras 3 on TensorFlow): small, CPU-trainable, the offline default.

Ids 0 and 1 are reserved: 0 for padding and characters the vocabulary does not know, 1 for
the end-of-tweet boundary. Training text is ``<eot> tweet <eot> tweet <eot> ...``, so after a
boundary the model has learned to start a tweet; generation feeds the boundary first for the
same reason.

Two Keras models share one set of layers: a sequence model for training (a prediction at
every position) and a one-step model with explicit RNN state for sampling, so generating a
character costs one step instead of re-running the whole prefix. A batch is sampled inside
one ``tf.function``: a ``tf.while_loop`` steps that model and applies the sampling rule in
graph ops (:mod:`training.sampling_tf`), so a character costs no trip through Python.

This module is the model: build, save, load, generate. The loop that trains it is
:mod:`training.char_rnn_train`, which imports this module and never the other way round.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, ClassVar, NamedTuple

import numpy as np
import structlog

from training import sampling_tf
from training.char_rnn_config import CharRNNConfig
from training.publish import ModelLoadError
from training.sampling import Sampling, per_row
from training.tf_quiet import quiet_tensorflow

# Imported inside the filter, or TensorFlow's C++ side prints notices on every load.
with quiet_tensorflow():
    import keras
    import tensorflow as tf

__all__ = ["CharRNN", "CharRNNConfig", "Vocab"]

log = structlog.get_logger(__name__)

PAD_ID = 0
EOT_ID = 1
CONFIG_FILE = "config.json"
VOCAB_FILE = "vocab.json"
WEIGHTS_FILE = "model.weights.h5"
_MAX_BUDGET = 2**30  # int32 in the graph, with room for prefix + budget; no tweet nears it


class Vocab:
    """Maps characters to ids 2.. (0 and 1 are reserved, see the module docstring)."""

    def __init__(self, chars: Sequence[str]) -> None:
        self.chars = list(chars)
        self.ids = {c: i + 2 for i, c in enumerate(self.chars)}

    @classmethod
    def from_texts(cls, texts: Sequence[str]) -> Vocab:
        """Sorted, so the same corpus always gives the same ids."""
        return cls(sorted({c for text in texts for c in text}))

    @property
    def size(self) -> int:
        return len(self.chars) + 2

    def encode(self, text: str) -> list[int]:
        return [self.ids.get(c, PAD_ID) for c in text]

    def encode_stream(self, texts: Sequence[str]) -> np.ndarray:
        """``<eot> t1 <eot> t2 <eot>``: each tweet is preceded by a boundary, as in sampling."""
        ids = [EOT_ID]
        for text in texts:
            ids.extend(self.encode(text))
            ids.append(EOT_ID)
        return np.asarray(ids, dtype=np.int32)


def _sigmoid(x: tf.Tensor) -> tf.Tensor:
    """The logistic function through tanh, which XLA's CPU backend computes much faster.

    Same function (σ(x) = (1 + tanh(x/2)) / 2); in the GRU loop it took the elementwise part
    of a 100-step forward from 43 to 30 ms (batch 64, 256 units), about 4% of a training step.
    """
    return 0.5 * tf.tanh(0.5 * x) + 0.5


def _gru_sequence(xp: tf.Tensor, h0: tf.Tensor, u: tf.Tensor, rb: tf.Tensor) -> tf.Tensor:
    """Run a ``reset_after`` GRU over time-major input projections; return every state.

    ``xp`` (time, batch, 3·units) holds ``x_t @ kernel + input_bias`` for all steps at once,
    ``u`` is the recurrent kernel and ``rb`` the recurrent bias; the result is (time, batch,
    units). Keras' generic loop multiplies the input and accumulates ``dU`` inside the loop,
    one small matrix product per step; here the loop keeps only the recurrent product, and
    the gradient of ``u`` is one large product over every step after the backward loop.
    Same arithmetic as ``keras.layers.GRU`` (a test checks values and gradients).
    """
    n = int(u.shape[0])

    @tf.custom_gradient
    def run(xp: tf.Tensor, h0: tf.Tensor, u: tf.Tensor, rb: tf.Tensor) -> Any:
        def step(acc: tuple[tf.Tensor, ...], x_t: tf.Tensor) -> tuple[tf.Tensor, ...]:
            h = acc[0]
            inner = tf.matmul(h, u) + rb
            zr = _sigmoid(x_t[:, : 2 * n] + inner[:, : 2 * n])
            rh = inner[:, 2 * n :]
            hh = tf.tanh(x_t[:, 2 * n :] + zr[:, n:] * rh)
            return hh + zr[:, :n] * (h - hh), zr, hh, rh

        zeros = tf.zeros_like(h0)
        start = (h0, tf.concat([zeros, zeros], axis=1), zeros, zeros)
        # The gates are kept for the backward pass: recomputing them would cost a product.
        hs, zrs, hhs, rhs = tf.scan(step, xp, initializer=start)

        def grad(dhs: tf.Tensor) -> tuple[tf.Tensor, ...]:
            h_prev = tf.concat([h0[None], hs[:-1]], axis=0)

            def back(acc: tuple[tf.Tensor, ...], elems: tuple[tf.Tensor, ...]) -> Any:
                d_out, h_p, zr, hh, rh = elems
                g = d_out + acc[0]  # from the output at t and from step t + 1
                z, r = zr[:, :n], zr[:, n:]
                d_h = g * (1 - z) * (1 - hh * hh)
                d_z = g * (h_p - hh) * z * (1 - z)
                d_r = d_h * rh * r * (1 - r)
                d_inner = tf.concat([d_z, d_r, d_h * r], axis=1)
                d_x = tf.concat([d_z, d_r, d_h], axis=1)
                return g * z + tf.matmul(d_inner, u, transpose_b=True), d_x, d_inner

            rows = tf.shape(xp)[1:]
            start = (tf.zeros_like(h0), tf.zeros(rows), tf.zeros(rows))
            elems = (dhs, h_prev, zrs, hhs, rhs)
            d_h0, d_xp, d_inner = tf.scan(back, elems, initializer=start, reverse=True)
            flat_inner = tf.reshape(d_inner, [-1, 3 * n])
            d_u = tf.matmul(tf.reshape(h_prev, [-1, n]), flat_inner, transpose_a=True)
            return d_xp, d_h0[0], d_u, tf.reduce_sum(flat_inner, axis=0)

        return hs, grad

    return run(xp, h0, u, rb)


class GRU(keras.layers.GRU):
    """``keras.layers.GRU`` with the same weights, trained through :func:`_gru_sequence`.

    Named ``GRU`` on purpose: Keras keys a weights file by layer class name, so files written
    with the stock layer (every checkpoint published before this one existed) still load.

    On CPU, Keras runs a GRU as a generic loop (cuDNN is GPU-only) that multiplies each step's
    input separately. This layer multiplies all of them in one product, and, after
    :meth:`fold_embedding`, not at all: ``embedding[t] @ kernel`` is ``(embedding @ kernel)[t]``,
    a lookup in a vocabulary-sized table, which saves about a fifth of the arithmetic per
    character. Anything the fused path does not cover (one-step sampling, masks, in-cell
    dropout, other activations, stateful use) goes through the stock loop unchanged.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._embeddings: Callable[[], Any] | None = None

    def fold_embedding(self, embedding: keras.layers.Embedding) -> None:
        """Read inputs as rows of ``embedding``'s table projected by the kernel; see the class.

        Then call with ``tokens=`` the ids the embedded ``sequences`` came from (nothing may
        sit between the two, dropout included). Held as a function, not an attribute, so
        Keras does not track the embedding as part of this layer and saved weights keep
        their layout.
        """
        self._embeddings = lambda: embedding.embeddings

    def _fusable(self, sequences: Any, mask: Any) -> bool:
        cell = self.cell
        return (
            sequences.shape[1] != 1
            and mask is None
            and not (self.go_backwards or self.unroll or self.stateful)
            and not (cell.dropout or cell.recurrent_dropout)
            and cell.reset_after
            and cell.use_bias
            and cell.activation is keras.activations.tanh
            and cell.recurrent_activation is keras.activations.sigmoid
        )

    def call(
        self,
        sequences: Any,
        initial_state: Any = None,
        mask: Any = None,
        training: bool = False,
        tokens: Any = None,
    ) -> Any:
        if not self._fusable(sequences, mask):
            return super().call(sequences, initial_state, mask, training)
        cell = self.cell
        kernel = tf.convert_to_tensor(cell.kernel)
        bias = tf.convert_to_tensor(cell.bias)
        if tokens is not None and self._embeddings is not None:
            table = tf.matmul(tf.convert_to_tensor(self._embeddings()), kernel) + bias[0]
            xp = tf.gather(table, tf.transpose(tokens))  # time-major for the scan
        else:
            # One product for every step's input projection. (A plain 2-D matmul:
            # tf.einsum's transposes cost more than the product itself here.)
            x = tf.transpose(sequences, [1, 0, 2])
            xp = tf.matmul(tf.reshape(x, [-1, x.shape[-1]]), kernel) + bias[0]
            xp = tf.reshape(xp, tf.concat([tf.shape(x)[:2], [-1]], axis=0))
        if initial_state is None:
            h0 = tf.zeros(tf.stack([tf.shape(sequences)[0], self.units]), sequences.dtype)
        else:
            h0 = initial_state[0] if isinstance(initial_state, list | tuple) else initial_state
        hs = _gru_sequence(xp, h0, tf.convert_to_tensor(cell.recurrent_kernel), bias[1])
        last = hs[-1]
        output = tf.transpose(hs, [1, 0, 2]) if self.return_sequences else last
        return (output, last) if self.return_state else output

    def compute_output_shape(
        self, sequences_shape: Any, initial_state_shape: Any = None, tokens_shape: Any = None
    ) -> Any:
        return super().compute_output_shape(sequences_shape, initial_state_shape)


def _build(config: CharRNNConfig, vocab_size: int) -> tuple[keras.Model, keras.Model]:
    """Return (sequence model for training, one-step model with state in and out)."""
    embed = keras.layers.Embedding(vocab_size, config.embedding_dim, name="embed")
    rnn_cls = GRU if config.cell == "gru" else keras.layers.LSTM
    rnns = [
        rnn_cls(config.units, return_sequences=True, return_state=True, name=f"rnn{i}")
        for i in range(config.layers)
    ]
    head = keras.layers.Dense(vocab_size, name="logits")
    drop = keras.layers.Dropout(config.dropout) if config.dropout else None

    tokens = keras.Input(shape=(None,), dtype="int32", name="tokens")
    x = embed(tokens)
    for i, rnn in enumerate(rnns):
        if i == 0 and drop is None and hasattr(rnn, "fold_embedding"):  # the GRU, not LSTM
            rnn.fold_embedding(embed)
            x = rnn(x, tokens=tokens)[0]
            continue
        x = drop(x) if drop is not None else x
        x = rnn(x)[0]
    x = drop(x) if drop is not None else x
    train_model = keras.Model(tokens, head(x), name="char_rnn")

    n_states = 1 if config.cell == "gru" else 2
    step_tokens = keras.Input(shape=(1,), dtype="int32", name="step_tokens")
    states_in = [
        keras.Input(shape=(config.units,), name=f"state{i}_{j}")
        for i in range(config.layers)
        for j in range(n_states)
    ]
    x = embed(step_tokens)
    states_out = []
    for i, rnn in enumerate(rnns):
        x, *new = rnn(x, initial_state=states_in[i * n_states : (i + 1) * n_states])
        states_out.extend(new)
    step_model = keras.Model([step_tokens, *states_in], [head(x), *states_out], name="step")
    return train_model, step_model


class CharRNN:
    """A character RNN, trained by :func:`training.char_rnn_train.fit`; see
    :class:`training.models.TextModel`."""

    kind: ClassVar[str] = "char_rnn"

    def __init__(self, config: CharRNNConfig, vocab: Vocab) -> None:
        self.config = config
        self.vocab = vocab
        self._model, self._step_model = _build(config, vocab.size)
        self._model.compile(
            # clipnorm: RNNs see occasional gradient spikes that a high lr turns into NaNs.
            optimizer=keras.optimizers.Adam(config.learning_rate, clipnorm=5.0),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            jit_compile=config.jit_compile,
        )
        # One signature for every batch size and setting: traced once (by the hot-loader's
        # smoke test), never again on the serving path when another batch or setting comes.
        self._sample = tf.function(
            self._sample_ids,
            input_signature=[
                tf.TensorSpec([None, None], tf.int32, name="prefixes"),
                tf.TensorSpec([None], tf.int32, name="lengths"),
                tf.TensorSpec([None], tf.int32, name="budgets"),
                sampling_tf.SETTINGS_SIGNATURE,
                tf.TensorSpec([2], tf.int64, name="seed"),
            ],
        )

    @property
    def sequence_model(self) -> keras.Model:
        """The compiled model the training loop steps, validates and checkpoints.

        It shares its layers with the one-step sampling model, so the weights
        :mod:`training.char_rnn_train` trains are the ones :meth:`generate` samples from.
        """
        return self._model

    def generate(
        self,
        seeds: Sequence[str],
        *,
        max_length: int,
        temperature: float,
        top_k: int = 0,
        top_p: float = 1.0,
        repetition_penalty: float = 1.0,
        context: str | Sequence[str] | None = None,
        max_new_tokens: int | None = None,
        random_seed: int | None = None,
    ) -> list[str]:
        """Sample one continuation per seed, all seeds in one batch, keeping the RNN state.

        Each row first consumes ``<eot>``, its context followed by ``<eot>`` when there is one
        (read as the previous tweet, so the sample is a new tweet that answers it), and its
        seed (characters the vocabulary lacks are skipped); then it samples until it draws
        ``<eot>``, reaches ``max_length`` characters including the seed, or has sampled
        ``max_new_tokens`` characters. Rows still reading their prefix are fed it instead of
        a sample. The context is never part of the result.
        """
        sampling = Sampling(temperature, top_k, top_p, repetition_penalty)
        if not seeds:
            return []
        prefixes = [
            [EOT_ID, *self._known_ids(c), *([EOT_ID] if c else []), *self._known_ids(s)]
            for c, s in zip(per_row(context, len(seeds)), seeds, strict=True)
        ]
        budgets = [max(0, max_length - len(s)) for s in seeds]
        if max_new_tokens is not None:
            budgets = [min(b, max(0, max_new_tokens)) for b in budgets]
        if not any(budgets):  # nothing to sample: the graph would only read the prefixes
            return list(seeds)
        # Stateless ops: the seed alone fixes every draw, whatever ran before in the process.
        key = np.random.default_rng(random_seed).integers(0, 2**63 - 1, size=2, dtype=np.int64)
        ids = self._sample(
            _padded(prefixes),
            tf.constant([len(p) for p in prefixes], tf.int32),
            tf.constant([min(b, _MAX_BUDGET) for b in budgets], tf.int32),
            sampling_tf.settings(sampling),
            tf.constant(key),
        )
        return [seed + self._decode(row) for seed, row in zip(seeds, ids.numpy().T, strict=True)]

    def _decode(self, ids: np.ndarray) -> str:
        """The characters of one row's sampled ids; PAD marks a step the row sampled nothing."""
        return "".join(self.vocab.chars[i - 2] for i in ids.tolist() if i != PAD_ID)

    def _sample_ids(
        self,
        prefixes: tf.Tensor,
        lengths: tf.Tensor,
        budgets: tf.Tensor,
        sampling: sampling_tf.Settings,
        seed: tf.Tensor,
    ) -> tf.Tensor:
        """Sample the batch in one graph; return (steps, rows) ids, PAD where none was kept.

        Row ``i`` reads ``prefixes[i, :lengths[i]]`` one id a step, then feeds back what it
        samples until it draws ``<eot>`` or has kept ``budgets[i]`` characters; a finished
        row is fed PAD until the last row ends. (Wrapped in ``self._sample``.)
        """
        rows = tf.shape(prefixes)[0]
        vocab = self.vocab.size
        ids = tf.range(vocab)
        countable = (ids != PAD_ID) & (ids != EOT_ID)  # never "seen", as in sampling.seen_tokens
        seen = tf.reduce_any(tf.one_hot(prefixes, vocab, on_value=True, off_value=False), 1)
        n_states = self.config.layers * (1 if self.config.cell == "gru" else 2)
        start = _Loop(
            step=tf.constant(0),
            tokens=prefixes[:, 0],
            states=tuple(tf.zeros([rows, self.config.units]) for _ in range(n_states)),
            seen=seen & countable,
            done=budgets <= 0,
            kept=tf.zeros([rows], tf.int32),
            out=tf.TensorArray(tf.int32, size=0, dynamic_size=True, element_shape=[None]),
        )

        def step(loop: _Loop) -> _Loop:
            logits, *states = self._step_model([loop.tokens[:, None], *loop.states], training=False)
            logits = tf.where(ids != PAD_ID, logits[:, 0, :], -np.inf)
            t = loop.step + 1
            reading = t < lengths
            sampling_now = ~reading & ~loop.done
            key = tf.random.experimental.stateless_fold_in(seed, t)
            sampled = tf.cond(
                tf.reduce_any(sampling_now),
                lambda: sampling_tf.choose(logits, sampling, key, loop.seen),
                lambda: tf.fill([rows], PAD_ID),
            )
            keeps = sampling_now & (sampled != EOT_ID)
            kept = loop.kept + tf.cast(keeps, tf.int32)
            next_prefix = tf.gather(prefixes, tf.minimum(t, tf.shape(prefixes)[1] - 1), axis=1)
            fed = tf.where(loop.done, PAD_ID, sampled)
            return _Loop(
                step=t,
                tokens=tf.where(reading, next_prefix, fed),
                states=tuple(states),
                seen=loop.seen | (tf.one_hot(sampled, vocab, True, False) & keeps[:, None]),
                done=loop.done | (sampling_now & ((sampled == EOT_ID) | (kept >= budgets))),
                kept=kept,
                out=loop.out.write(loop.step, tf.where(keeps, sampled, PAD_ID)),
            )

        (end,) = tf.while_loop(
            lambda loop: ~tf.reduce_all(loop.done),
            lambda loop: (step(loop),),
            (start,),
            # No row needs more steps than its prefix and budget; a bound, should that break.
            maximum_iterations=tf.reduce_max(lengths + budgets),
        )
        return end.out.stack()

    def _known_ids(self, text: str) -> list[int]:
        """``text``'s ids, skipping characters the vocabulary lacks (it never saw them)."""
        return [self.vocab.ids[c] for c in text if c in self.vocab.ids]

    def save(self, directory: Path) -> None:
        """Write ``config.json``, ``vocab.json`` and ``model.weights.h5`` into ``directory``."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        (directory / CONFIG_FILE).write_text(
            json.dumps(self.config.to_dict(), indent=2, sort_keys=True) + "\n", encoding="utf-8"
        )
        (directory / VOCAB_FILE).write_text(
            json.dumps({"pad_id": PAD_ID, "eot_id": EOT_ID, "chars": self.vocab.chars}) + "\n",
            encoding="utf-8",
        )
        self._model.save_weights(str(directory / WEIGHTS_FILE))

    @classmethod
    def load(cls, directory: Path) -> CharRNN:
        """Rebuild from :meth:`save`'s files; any missing or corrupt one is a ModelLoadError."""
        directory = Path(directory)
        raw_config = _read_json(directory / CONFIG_FILE)
        try:
            config = CharRNNConfig.from_dict(raw_config)
        except (TypeError, ValueError) as e:
            raise ModelLoadError(f"{directory / CONFIG_FILE}: invalid config ({e})") from e
        raw_vocab = _read_json(directory / VOCAB_FILE)
        chars = raw_vocab.get("chars")
        if (
            raw_vocab.get("pad_id") != PAD_ID
            or raw_vocab.get("eot_id") != EOT_ID
            or not isinstance(chars, list)
            or not all(isinstance(c, str) and len(c) == 1 for c in chars)
            or len(set(chars)) != len(chars)
        ):
            raise ModelLoadError(f"{directory / VOCAB_FILE}: not a char_rnn vocabulary")
        model = cls(config, Vocab(chars))
        weights = directory / WEIGHTS_FILE
        if not weights.is_file():
            raise ModelLoadError(f"{weights}: weights file is missing")
        # Build the optimizer first so its saved state (for resuming) loads instead of being
        # skipped with a warning.
        model._model.optimizer.build(model._model.trainable_variables)
        try:
            model._model.load_weights(str(weights))
        except Exception as e:  # h5py and Keras raise many types for a damaged file
            raise ModelLoadError(f"{weights}: cannot load weights ({e})") from e
        log.debug("char_rnn.loaded", path=str(directory), vocab_size=model.vocab.size)
        return model


class _Loop(NamedTuple):
    """What :meth:`CharRNN._sample_ids`'s while-loop carries from one step to the next."""

    step: tf.Tensor  # steps taken; the next one reads prefix position step + 1
    tokens: tf.Tensor  # (rows,) the ids fed to this step
    states: tuple[tf.Tensor, ...]  # the RNN states, (rows, units) each
    seen: tf.Tensor  # (rows, vocab) bool: what the repetition penalty applies to
    done: tf.Tensor  # (rows,) bool: drew <eot> or reached its budget
    kept: tf.Tensor  # (rows,) int32: characters sampled so far
    out: tf.TensorArray  # (steps, rows) the kept ids, PAD elsewhere


def _padded(prefixes: Sequence[Sequence[int]]) -> tf.Tensor:
    """The rows as one (rows, longest) int32 tensor, PAD after each row's end."""
    width = max(len(p) for p in prefixes)
    return tf.constant([[*p, *[PAD_ID] * (width - len(p))] for p in prefixes], tf.int32)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as e:
        raise ModelLoadError(f"{path}: file is missing") from e
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ModelLoadError(f"{path}: unreadable ({e})") from e
    if not isinstance(raw, dict):
        raise ModelLoadError(f"{path}: expected a JSON object")
    return raw
