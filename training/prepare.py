"""From dataset files to training texts: load, clean, split by id, weight per target.

The split is by tweet id (see :func:`training.dataset.split_by_id`), so a tweet never moves
between train and validation when more data arrives. Weights oversample the training side
only; validation stays one copy per tweet, so validation losses remain comparable.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from training.cleaning import DEFAULT_OPTIONS, CleaningOptions, clean_tweets
from training.dataset import DatasetError, dataset_hash, load_tweets, split_by_id


@dataclass(frozen=True)
class Prepared:
    train_texts: list[str]
    val_texts: list[str]
    dataset_hash: str
    tweets: int


def _copies(tweet_id: str, weight: float) -> int:
    """floor(weight) copies, plus one more for a hash-chosen share of tweets (deterministic)."""
    whole = int(weight)
    frac = int.from_bytes(hashlib.sha256(f"weight:{tweet_id}".encode()).digest()[:8], "big")
    return whole + (1 if frac / 2**64 < weight - whole else 0)


def prepare(
    datasets: Sequence[Path],
    weights: Sequence[float] | None,
    val_fraction: float,
    cleaning: CleaningOptions = DEFAULT_OPTIONS,
) -> Prepared:
    """Texts ready for a trainer; raises DatasetError when nothing usable remains.

    Cleaning (training.cleaning) runs before the split: retweets and duplicates go, URLs and
    @mentions become placeholders. The dataset hash is over the raw tweets, so it names the
    data, not the cleaning settings.
    """
    if weights is not None and len(weights) != len(datasets):
        raise DatasetError("'weights' must have one number per dataset")
    weights = list(weights) if weights is not None else [1.0] * len(datasets)
    if any(not w > 0 for w in weights):
        raise DatasetError("'weights' must all be > 0")
    lowest = min(weights)
    weight_of: dict[str, float] = {}
    for path, weight in zip(datasets, weights, strict=True):
        for tweet in load_tweets([path]):
            # A tweet in two targets' files counts once, with the larger weight.
            weight_of[tweet["id"]] = max(weight_of.get(tweet["id"], 0.0), weight / lowest)
    tweets = load_tweets(list(datasets))
    train, val = split_by_id(clean_tweets(tweets, cleaning).tweets, val_fraction)
    train_texts = [
        tweet["text"]
        for tweet in train
        for _ in range(_copies(tweet["id"], weight_of[tweet["id"]]))
    ]
    val_texts = [tweet["text"] for tweet in val]
    if not train_texts:
        names = ", ".join(str(p) for p in datasets)
        raise DatasetError(f"{names}: no non-empty tweets to train on")
    return Prepared(train_texts, val_texts, dataset_hash(tweets), len(tweets))
