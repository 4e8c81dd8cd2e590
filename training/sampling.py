"""Choosing the next token: temperature, top-k, top-p (nucleus) and repetition penalty.

Both model families hand this module one row of next-token logits per sequence and get one
token id per row back, so the two samplers cannot drift apart. It is numpy only: the
char-RNN's logits are numpy already, and a CPU torch tensor becomes one without a copy.

The order follows transformers' logits processors: repetition penalty on the raw logits,
then temperature, then top-k, then top-p, then an exact sample (Gumbel-max), so the same
settings mean the same thing here and in ``model.generate`` of transformers.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass

import numpy as np

# Top-p first looks for the nucleus among this many best tokens (a partial sort, cheap on a
# 50,257-token vocabulary); only a row whose nucleus is wider than that gets a full sort.
_NUCLEUS_PROBE = 256


@dataclass(frozen=True)
class Sampling:
    """How the next token is drawn; the defaults are plain sampling at temperature 1.

    ``top_k=0`` and ``top_p=1.0`` switch those cuts off, ``repetition_penalty=1.0`` the
    penalty; ``top_k=1`` is greedy decoding.
    """

    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    repetition_penalty: float = 1.0

    def __post_init__(self) -> None:
        # The messages name the argument, so a bad value from any caller says what to fix.
        if not self.temperature > 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")
        if isinstance(self.top_k, bool) or not isinstance(self.top_k, int) or self.top_k < 0:
            raise ValueError(f"top_k must be an integer >= 0 (0: off), got {self.top_k!r}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1] (1: off), got {self.top_p}")
        if not self.repetition_penalty >= 1:
            raise ValueError(
                f"repetition_penalty must be >= 1 (1: off), got {self.repetition_penalty}"
            )

    @property
    def penalises(self) -> bool:
        return self.repetition_penalty != 1.0


def per_row(context: str | Sequence[str] | None, rows: int) -> list[str]:
    """One context text per row: a single text applies to every row."""
    if context is None:
        return [""] * rows
    if isinstance(context, str):
        return [context] * rows
    if len(context) != rows:
        raise ValueError(f"context has {len(context)} texts for {rows} seeds")
    return list(context)


def seen_tokens(
    prefixes: Sequence[Sequence[int]], vocab_size: int, ignore: Collection[int]
) -> np.ndarray:
    """A (rows, vocab) mask of the tokens each row has read, for the repetition penalty.

    Boundary and padding ids are left out: penalising the end-of-text token the prompt
    starts with would teach the sampler never to stop.
    """
    seen = np.zeros((len(prefixes), vocab_size), dtype=bool)
    for row, prefix in enumerate(prefixes):
        seen[row, list(prefix)] = True
    seen[:, list(ignore)] = False
    return seen


def choose(
    logits: np.ndarray,
    sampling: Sampling,
    rng: np.random.Generator,
    seen: np.ndarray | None = None,
) -> np.ndarray:
    """One token id per row of ``logits`` (rows, vocab); ``-inf`` marks forbidden tokens."""
    # float32 throughout: sampling needs no more, and every array op here costs half as much.
    logits = np.array(logits, dtype=np.float32)
    if sampling.penalises and seen is not None:
        # CTRL's penalty, as transformers applies it: a seen token's logit moves towards
        # "less likely" whatever its sign.
        penalty = sampling.repetition_penalty
        logits = np.where(seen, np.where(logits > 0, logits / penalty, logits * penalty), logits)
    if sampling.top_k == 1:
        return np.argmax(logits, axis=1)
    logits /= sampling.temperature
    vocab = logits.shape[1]
    if 0 < sampling.top_k < vocab:
        kth = np.partition(logits, vocab - sampling.top_k, axis=1)[:, vocab - sampling.top_k]
        logits[logits < kth[:, None]] = -np.inf
    if sampling.top_p < 1:
        _keep_nucleus(logits, sampling.top_p)
    # Gumbel-max: an exact sample from softmax(logits), stable even for a tiny temperature.
    # (Drawn as -log(-log(u)) in float32: Generator.gumbel has no float32 form.)
    with np.errstate(divide="ignore"):
        gumbel = -np.log(-np.log(rng.random(logits.shape, dtype=np.float32)))
    return np.argmax(logits + gumbel, axis=1)


def _keep_nucleus(logits: np.ndarray, top_p: float) -> None:
    """Set to -inf (in place) every token outside the smallest set holding ``top_p`` mass."""
    shifted = logits - logits.max(axis=1, keepdims=True)
    probs = np.exp(shifted)
    probs /= probs.sum(axis=1, keepdims=True)
    vocab = probs.shape[1]
    probe = min(vocab, _NUCLEUS_PROBE)
    # Whole-batch array operations: a Python loop over rows cost more than the model step
    # for the char-RNN's small vocabulary.
    best = np.argpartition(-probs, probe - 1, axis=1)[:, :probe] if probe < vocab else None
    order = np.broadcast_to(np.arange(vocab), probs.shape) if best is None else best
    order = np.take_along_axis(order, np.argsort(-np.take_along_axis(probs, order, 1), 1), 1)
    sorted_probs = np.take_along_axis(probs, order, axis=1)
    mass = np.cumsum(sorted_probs, axis=1)
    wide = np.flatnonzero(mass[:, -1] < top_p) if best is not None else []
    # Keep a token while the mass before it is short of top_p: the best one always stays.
    keep_sorted = (mass - sorted_probs) < top_p
    keep = np.zeros(probs.shape, dtype=bool)
    np.put_along_axis(keep, order, keep_sorted, axis=1)
    if len(wide):  # the nucleus is wider than the probe: sort those rows in full, together
        rows = probs[wide]
        full = np.argsort(-rows, axis=1)
        ordered = np.take_along_axis(rows, full, axis=1)
        inside = (np.cumsum(ordered, axis=1) - ordered) < top_p
        wide_keep = np.zeros(rows.shape, dtype=bool)
        np.put_along_axis(wide_keep, full, inside, axis=1)
        keep[wide] = wide_keep
    logits[~keep] = -np.inf
