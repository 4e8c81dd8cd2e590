"""The sampling controls both model families share (training/sampling.py), on known logits,
and the same rule in TensorFlow ops (training/sampling_tf.py) held to it."""

from __future__ import annotations

import numpy as np
import pytest

from training import sampling_tf
from training.sampling import Sampling, choose, per_row, seen_tokens
from training.tf_quiet import quiet_tensorflow

with quiet_tensorflow():
    import tensorflow as tf

LOGITS = np.log(np.array([[0.5, 0.3, 0.15, 0.05], [0.1, 0.2, 0.3, 0.4]]))


def draws(logits: np.ndarray, sampling: Sampling, n: int = 400, seen=None) -> np.ndarray:
    """``n`` draws per row, as an (n, rows) array, from one seeded generator."""
    rng = np.random.default_rng(0)
    return np.stack([choose(logits, sampling, rng, seen) for _ in range(n)])


@pytest.mark.parametrize(
    ("field", "value"),
    [("temperature", 0), ("top_k", -1), ("top_k", 1.5), ("top_p", 0), ("top_p", 1.2),
     ("repetition_penalty", 0.9)],
)  # fmt: skip
def test_bad_values_are_refused_naming_the_setting(field: str, value: float) -> None:
    with pytest.raises(ValueError, match=field):
        Sampling(**{field: value})


def test_top_k_1_is_greedy_argmax_whatever_the_temperature() -> None:
    rng = np.random.default_rng(3)
    logits = rng.normal(size=(16, 50))
    for temperature in (0.1, 1.0, 5.0):
        picked = draws(logits, Sampling(temperature=temperature, top_k=1), n=5)
        assert (picked == np.argmax(logits, axis=1)).all()


def test_top_k_samples_only_among_the_k_best() -> None:
    picked = draws(LOGITS, Sampling(temperature=2.0, top_k=2))
    assert set(picked[:, 0]) == {0, 1} and set(picked[:, 1]) == {2, 3}


def test_a_tiny_top_p_keeps_only_the_top_token() -> None:
    picked = draws(LOGITS, Sampling(temperature=5.0, top_p=1e-6))
    assert (picked[:, 0] == 0).all() and (picked[:, 1] == 3).all()


def test_top_p_keeps_the_smallest_set_holding_the_mass() -> None:
    # Row 0: 0.5 + 0.3 = 0.8 covers 0.75, so tokens 0 and 1 only; row 1 needs 0.4+0.3+0.2.
    picked = draws(LOGITS, Sampling(top_p=0.75))
    assert set(picked[:, 0]) == {0, 1} and set(picked[:, 1]) == {1, 2, 3}


def test_a_nucleus_wider_than_the_partial_sort_is_still_exact() -> None:
    # 1,000 equally likely tokens: top_p=0.9 must keep 900 of them, not the first 256.
    picked = draws(np.zeros((1, 1000)), Sampling(top_p=0.9), n=3000)
    assert 600 < len(set(picked[:, 0])) <= 900


def test_sampling_follows_the_distribution() -> None:
    picked = draws(LOGITS[:1], Sampling(), n=4000)
    share = np.bincount(picked[:, 0], minlength=4) / 4000
    assert share == pytest.approx([0.5, 0.3, 0.15, 0.05], abs=0.03)


def test_repetition_penalty_makes_seen_tokens_rarer() -> None:
    seen = seen_tokens([[0], [3]], 4, ignore=())
    plain = draws(LOGITS, Sampling())
    penalised = draws(LOGITS, Sampling(repetition_penalty=3.0), seen=seen)
    assert (penalised[:, 0] == 0).mean() < (plain[:, 0] == 0).mean() - 0.2
    assert (penalised[:, 1] == 3).mean() < (plain[:, 1] == 3).mean() - 0.2


def test_seen_tokens_leave_out_boundaries_and_contexts_apply_per_row() -> None:
    seen = seen_tokens([[1, 2, 2], [0]], 4, ignore=(1,))
    assert seen.tolist() == [[False, False, True, False], [True, False, False, False]]
    assert per_row(None, 2) == ["", ""] and per_row("hi", 2) == ["hi", "hi"]
    assert per_row(["a", "b"], 2) == ["a", "b"]
    with pytest.raises(ValueError, match="context has 1 texts for 2 seeds"):
        per_row(["a"], 2)


# The same rule in TensorFlow ops (training/sampling_tf.py), which the char-RNN samples with
# inside its graph: held to choose() above on the same fixed logits.

# Token 0 is padding, -inf as the char-RNN hands it over; no two probabilities tie.
with np.errstate(divide="ignore"):
    ROWS = np.log([[0, 0.3, 0.05, 0.25, 0.12, 0.2, 0.08], [0, 0.07, 0.33, 0.1, 0.04, 0.26, 0.2]])


def tf_draws(logits: np.ndarray, sampling: Sampling, n: int = 2000, seen=None) -> np.ndarray:
    """``n`` draws per row from the TF rule, as an (n, rows) array, in one batched call."""
    rows = logits.shape[0]
    tiled = tf.constant(np.tile(logits, (n, 1)), tf.float32)
    tiled_seen = None if seen is None else tf.constant(np.tile(seen, (n, 1)))
    seed = tf.constant([1, 2], tf.int64)
    ids = sampling_tf.choose(tiled, sampling_tf.settings(sampling), seed, tiled_seen)
    return ids.numpy().reshape(n, rows)


def supports(picked: np.ndarray) -> list[set[int]]:
    return [set(column.tolist()) for column in picked.T]


@pytest.mark.parametrize(
    "sampling",
    [Sampling(top_k=3), Sampling(temperature=2.0, top_k=2), Sampling(top_p=0.8),
     Sampling(temperature=1.5, top_p=0.7), Sampling(top_k=4, top_p=0.6),
     Sampling(temperature=0.7, top_k=5, top_p=0.9, repetition_penalty=2.0)],
)  # fmt: skip
def test_the_tf_rule_can_draw_exactly_the_tokens_choose_can(sampling: Sampling) -> None:
    seen = seen_tokens([[1, 3], [2]], ROWS.shape[1], ignore=(0,))
    expected = supports(draws(ROWS, sampling, n=2000, seen=seen))
    assert all(0 not in s and 1 < len(s) < ROWS.shape[1] - 1 for s in expected)  # real cuts
    assert supports(tf_draws(ROWS, sampling, seen=seen)) == expected
    # The filter itself, without sampling: finite exactly where choose() can land.
    logits = sampling_tf.penalise(
        tf.constant(ROWS, tf.float32), tf.constant(seen), sampling.repetition_penalty
    )
    kept = np.isfinite(sampling_tf.filter_logits(logits, sampling_tf.settings(sampling)))
    assert [set(np.flatnonzero(row).tolist()) for row in kept] == expected


def test_the_tf_rule_is_greedy_at_top_k_1_after_the_same_penalty() -> None:
    rng = np.random.default_rng(5)
    logits = rng.normal(size=(64, 30))
    logits[:, 0] = -np.inf
    seen = rng.random((64, 30)) < 0.3
    for penalty in (1.0, 1.3, 3.0):
        for temperature in (0.1, 5.0):
            sampling = Sampling(temperature=temperature, top_k=1, repetition_penalty=penalty)
            expected = choose(logits, sampling, rng, seen)
            assert (tf_draws(logits, sampling, n=1, seen=seen)[0] == expected).all()
    # The penalty does move the argmax of some rows, so the comparison above means something.
    assert (
        choose(logits, Sampling(top_k=1, repetition_penalty=3.0), rng, seen)
        != choose(logits, Sampling(top_k=1), rng)
    ).any()


@pytest.mark.parametrize(
    "sampling", [Sampling(), Sampling(temperature=2.0), Sampling(repetition_penalty=3.0)]
)
def test_the_tf_rule_draws_with_choose_s_probabilities(sampling: Sampling) -> None:
    seen = seen_tokens([[0], [3]], 4, ignore=())
    ours = tf_draws(LOGITS, sampling, n=8000, seen=seen)
    theirs = draws(LOGITS, sampling, n=8000, seen=seen)
    for row in range(2):
        share = np.bincount(ours[:, row], minlength=4) / 8000
        assert share == pytest.approx(np.bincount(theirs[:, row], minlength=4) / 8000, abs=0.025)


def test_the_tf_rule_repeats_for_a_seed_only() -> None:
    logits = tf.constant(np.tile(LOGITS, (50, 1)), tf.float32)
    settings = sampling_tf.settings(Sampling())

    def ids(seed: list[int]) -> list[int]:
        return sampling_tf.choose(logits, settings, tf.constant(seed, tf.int64)).numpy().tolist()

    assert ids([3, 4]) == ids([3, 4]) != ids([3, 5])
