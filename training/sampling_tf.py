"""The sampling rule of :mod:`training.sampling` in TensorFlow ops, for decoding in a graph.

The char-RNN samples a whole batch inside one ``tf.function`` (a ``tf.while_loop`` around its
one-step model), so there the rule must be graph ops, not numpy. It is the same rule, in the
same order: repetition penalty (CTRL's, on the raw logits, for the tokens marked seen), then
temperature, then top-k, then top-p (the smallest set whose mass reaches ``top_p``, the best
token always kept), then an exact sample (Gumbel-max); ``top_k=1`` is greedy, the argmax
after the penalty. Tests hold it to :func:`training.sampling.choose` on fixed logits.

The settings arrive as scalar tensors (:class:`Settings`), so one traced graph serves every
setting; checking them stays with :class:`training.sampling.Sampling`. Kept apart from
:mod:`training.sampling`, which GPT-2 uses and which must not import TensorFlow.
"""

from __future__ import annotations

from typing import NamedTuple

from training.sampling import Sampling
from training.tf_quiet import quiet_tensorflow

with quiet_tensorflow():
    import tensorflow as tf

__all__ = ["SETTINGS_SIGNATURE", "Settings", "choose", "filter_logits", "penalise", "settings"]

# int32 is what the graph computes top-k with; a larger k means "off" just as k >= vocab does.
_INT32_MAX = 2**31 - 1


class Settings(NamedTuple):
    """:class:`training.sampling.Sampling` as scalar tensors (a tuple, so tf.nest reads it)."""

    temperature: tf.Tensor  # float32
    top_k: tf.Tensor  # int32; 0: off
    top_p: tf.Tensor  # float32; 1: off
    repetition_penalty: tf.Tensor  # float32; 1: off


SETTINGS_SIGNATURE = Settings(
    tf.TensorSpec([], tf.float32),
    tf.TensorSpec([], tf.int32),
    tf.TensorSpec([], tf.float32),
    tf.TensorSpec([], tf.float32),
)


def settings(sampling: Sampling) -> Settings:
    """Tensors for an already validated ``sampling``."""
    return Settings(
        tf.constant(sampling.temperature, tf.float32),
        tf.constant(min(sampling.top_k, _INT32_MAX), tf.int32),
        tf.constant(sampling.top_p, tf.float32),
        tf.constant(sampling.repetition_penalty, tf.float32),
    )


def penalise(logits: tf.Tensor, seen: tf.Tensor, penalty: tf.Tensor) -> tf.Tensor:
    """CTRL's penalty: a seen token's logit moves towards "less likely" whatever its sign.

    A penalty of 1 leaves every logit as it is, so no branch is needed for "off".
    """
    penalised = tf.where(logits > 0, logits / penalty, logits * penalty)
    return tf.where(seen, penalised, logits)


def filter_logits(logits: tf.Tensor, sampling: Settings) -> tf.Tensor:
    """Temperature, then top-k, then top-p on (rows, vocab) logits; cut tokens become -inf.

    One sort serves both cuts: entries below the k-th best sit at the sorted tail, so setting
    them to -inf keeps the order the nucleus is read in. ``tf.math.top_k`` keeps equal values
    in index order, so ties are cut as a stable sort would cut them.
    """
    logits = logits / sampling.temperature
    vocab = tf.shape(logits)[1]
    ranked, order = tf.math.top_k(logits, k=vocab)
    k = sampling.top_k
    kth = ranked[:, tf.clip_by_value(k, 1, vocab) - 1][:, None]
    cut_k = (k > 0) & (k < vocab)
    neg_inf = tf.constant(float("-inf"), logits.dtype)
    ranked = tf.where(cut_k & (ranked < kth), neg_inf, ranked)
    keep_ranked = _nucleus(ranked, sampling.top_p) | (sampling.top_p >= 1)
    keep = tf.gather(keep_ranked, tf.argsort(order, axis=1), batch_dims=1)
    return tf.where(keep & ~(cut_k & (logits < kth)), logits, neg_inf)


def _nucleus(ranked: tf.Tensor, top_p: tf.Tensor) -> tf.Tensor:
    """Which of the descending ``ranked`` logits lie in the smallest set holding ``top_p``.

    A token stays while the mass before it is short of ``top_p``, so the best one always does.
    """
    probs = tf.exp(ranked - ranked[:, :1])
    probs = probs / tf.reduce_sum(probs, axis=1, keepdims=True)
    return tf.cumsum(probs, axis=1, exclusive=True) < top_p


def choose(
    logits: tf.Tensor, sampling: Settings, seed: tf.Tensor, seen: tf.Tensor | None = None
) -> tf.Tensor:
    """One int32 token id per row of ``logits`` (rows, vocab); ``-inf`` marks forbidden tokens.

    ``seed`` is a stateless-random seed of shape [2]: the same seed and logits give the same
    ids, which is what makes a seeded generation repeatable.
    """
    if seen is not None:
        logits = penalise(logits, seen, sampling.repetition_penalty)
    greedy = tf.argmax(logits, axis=1, output_type=tf.int32)
    filtered = filter_logits(logits, sampling)
    # Gumbel-max, as in training.sampling: -log(-log(u)) in float32; u = 0 gives -inf.
    uniform = tf.random.stateless_uniform(tf.shape(filtered), seed, dtype=filtered.dtype)
    gumbel = -tf.math.log(-tf.math.log(uniform))
    sampled = tf.argmax(filtered + gumbel, axis=1, output_type=tf.int32)
    return tf.where(sampling.top_k == 1, greedy, sampled)
