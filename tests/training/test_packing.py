"""Packing tweets into short blocks: nothing lost, nothing seen across a tweet boundary."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.support.training_data import sample_texts
from training.packing import EOS_TOKEN, IGNORE, encode_tweets, pack, train_tokenizer


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory: pytest.TempPathFactory):
    from transformers import GPT2TokenizerFast

    folder = train_tokenizer(sample_texts(), 400, tmp_path_factory.mktemp("tok"))
    return GPT2TokenizerFast.from_pretrained(str(folder), local_files_only=True)


def test_local_tokenizer_is_byte_level_with_an_end_of_text_token(tokenizer) -> None:
    assert tokenizer.eos_token == EOS_TOKEN and len(tokenizer) <= 400
    text = "Unseen: naïve ☃ émoji 🦜!"
    assert tokenizer.decode(tokenizer.encode(text)) == text  # no unknown token, ever


def test_every_token_of_every_tweet_lands_in_exactly_one_block(tokenizer) -> None:
    texts = [*sample_texts(50), "word " * 60]  # the last one is longer than a block
    seqs = encode_tweets(tokenizer, texts)
    blocks = pack(seqs, 64, tokenizer.eos_token_id)
    assert max(len(s) for s in seqs) > 64
    assert blocks.useful_tokens == sum(len(s) for s in seqs)
    assert blocks.input_ids.shape[1] == 64 and blocks.fill > 0.8
    # Each tweet starts at position 0 and its first token is never a target.
    starts = blocks.position_ids == 0
    assert (blocks.labels[starts] == IGNORE).all()
    packed = sorted(
        tuple(blocks.input_ids[b, s : s + n])
        for b in range(len(blocks))
        for s, n in _segments(blocks.position_ids[b], int(blocks.row_tokens[b]))
    )
    pieces = sorted(tuple(s[i : i + 64]) for s in seqs for i in range(0, len(s), 64))
    assert packed == pieces


def _segments(positions: np.ndarray, used: int) -> list[tuple[int, int]]:
    starts = [i for i in range(used) if positions[i] == 0]
    return [(s, (starts[k + 1] if k + 1 < len(starts) else used) - s) for k, s in enumerate(starts)]


def test_a_few_tweets_make_one_block_rather_than_an_error(tokenizer) -> None:
    blocks = pack(encode_tweets(tokenizer, ["hi", "ok"]), 128, tokenizer.eos_token_id)
    assert len(blocks) == 1 and blocks.useful_tokens < 128
    with pytest.raises(ValueError, match="block_size"):
        pack([[1, 2]], 2, 0)


def test_packed_tweets_do_not_attend_to_each_other(tokenizer, tmp_path: Path) -> None:
    """A tweet's logits are the same whether it is packed after another tweet or alone."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    config = GPT2Config(vocab_size=len(tokenizer), n_positions=64, n_embd=32, n_layer=2, n_head=2)
    model = GPT2LMHeadModel._from_config(config, attn_implementation="sdpa").eval()
    a, b = encode_tweets(
        tokenizer, ["A penny saved is a penny earned.", "Lost time is never found."]
    )
    blocks = pack([a, b], 64, tokenizer.eos_token_id)
    ids = torch.from_numpy(blocks.input_ids)
    pos = torch.from_numpy(blocks.position_ids)
    start = int(np.flatnonzero(blocks.position_ids[0] == 0)[1])  # where the second tweet begins
    second = blocks.input_ids[0, start : start + len(b)].tolist()
    with torch.no_grad():
        packed = model(input_ids=ids, position_ids=pos, use_cache=False).logits[0]
        alone = model(input_ids=torch.tensor([second]), use_cache=False).logits[0]
        leaky = model(input_ids=ids, use_cache=False).logits[0]  # plain causal mask
    assert torch.allclose(packed[start : start + len(b)], alone, atol=1e-4)
    assert not torch.allclose(leaky[start : start + len(b)], alone, atol=1e-2)
