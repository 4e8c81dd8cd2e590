"""The sampling controls both model families share (training/sampling.py), on known logits."""

from __future__ import annotations

import numpy as np
import pytest

from training.sampling import Sampling, choose, per_row, seen_tokens

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
