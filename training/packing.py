"""Tokenizer training and block packing for the GPT-2 fine-tuner.

Each tweet becomes ``<|endoftext|> tweet <|endoftext|>``: the leading one is GPT-2's usual
start token (so generation from an empty seed has a first token), the trailing one is what the
model learns to emit when a tweet is over. Tweets are packed whole into short blocks (best
fit, largest first), so a small dataset never fails a "not enough tokens for one 1,024-token
block" check and padding stays low.

No cross-tweet attention: position ids restart at 0 for every tweet. transformers (4.5x and
5.x) turns restarting position ids into a block-diagonal causal mask when no 2D attention
mask is passed (``masking_utils.find_packed_sequence_indices``), for the ``sdpa`` and
``eager`` attention implementations alike, so a tweet sees only itself and the restarted
positions are also the ones it gets at generation time. The first token of every tweet gets
label -100: predicting it would mean predicting across the boundary.

Pure NumPy plus the ``tokenizers`` library: no torch needed to prepare data.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

EOS_TOKEN = "<|endoftext|>"
IGNORE = -100


def train_tokenizer(texts: Sequence[str], vocab_size: int, out_dir: Path) -> Path:
    """Train a byte-level BPE (GPT-2's scheme) on ``texts``; save it as a transformers folder.

    Byte-level means every string is encodable (no unknown token), like GPT-2's own. The
    folder loads with ``GPT2TokenizerFast.from_pretrained`` without any network access.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import GPT2TokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOS_TOKEN],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    fast = GPT2TokenizerFast(
        tokenizer_object=tok, bos_token=EOS_TOKEN, eos_token=EOS_TOKEN, unk_token=EOS_TOKEN
    )
    out_dir = Path(out_dir)
    fast.save_pretrained(str(out_dir))
    return out_dir


def encode_tweets(tokenizer: object, texts: Sequence[str]) -> list[list[int]]:
    """``[eos] + tokens + [eos]`` per tweet, one batched tokenizer call."""
    eos = tokenizer.eos_token_id  # type: ignore[attr-defined]
    if not texts:
        return []
    encoded = tokenizer(list(texts), add_special_tokens=False)["input_ids"]  # type: ignore[operator]
    return [[eos, *ids, eos] for ids in encoded]


@dataclass(frozen=True)
class Blocks:
    """Packed training blocks: equal-length rows of ids, labels and restarting positions."""

    input_ids: np.ndarray
    labels: np.ndarray
    position_ids: np.ndarray
    row_tokens: np.ndarray  # tweet (non-padding) tokens per row

    @property
    def useful_tokens(self) -> int:
        return int(self.row_tokens.sum())

    def __len__(self) -> int:
        return len(self.input_ids)

    @property
    def fill(self) -> float:
        """Share of block slots that hold tweet tokens rather than padding."""
        return self.useful_tokens / max(1, self.input_ids.size)


def _pieces(seqs: Sequence[list[int]], block_size: int) -> list[list[int]]:
    """Tweets longer than a block are cut into block-sized pieces, so no tweet is dropped."""
    out = []
    for seq in seqs:
        for start in range(0, len(seq), block_size):
            piece = seq[start : start + block_size]
            if len(piece) > 1 or start == 0:
                out.append(piece)
    return out


def pack(seqs: Sequence[list[int]], block_size: int, pad_id: int) -> Blocks:
    """Best-fit-decreasing packing of whole tweets into ``block_size`` rows.

    Deterministic (a stable sort), so the same data always packs the same way, which a
    resumed run relies on to find its data position again.
    """
    if block_size < 4:
        raise ValueError(f"block_size must be >= 4, got {block_size}")
    pieces = _pieces(seqs, block_size)
    order = sorted(range(len(pieces)), key=lambda i: -len(pieces[i]))
    rows: list[list[int]] = []  # piece indices per block
    free: list[int] = []
    by_free: dict[int, list[int]] = {}  # free slots -> blocks with exactly that many
    for i in order:
        need = len(pieces[i])
        target = next((c for c in range(need, block_size + 1) if by_free.get(c)), None)
        if target is None:
            rows.append([])
            free.append(block_size)
            block = len(rows) - 1
        else:
            block = by_free[target].pop()
        rows[block].append(i)
        free[block] -= need
        by_free.setdefault(free[block], []).append(block)

    n = max(1, len(rows))
    ids = np.full((n, block_size), pad_id, dtype=np.int64)
    labels = np.full((n, block_size), IGNORE, dtype=np.int64)
    positions = np.zeros((n, block_size), dtype=np.int64)
    useful = np.zeros(n, dtype=np.int64)
    for b, members in enumerate(rows):
        at = 0
        for i in members:
            piece = pieces[i]
            end = at + len(piece)
            ids[b, at:end] = piece
            labels[b, at + 1 : end] = piece[1:]
            positions[b, at:end] = np.arange(len(piece))
            at = end
        useful[b] = at
        # Padding gets its own run of positions: a segment of its own that no tweet sees.
        positions[b, at:] = np.arange(block_size - at)
    return Blocks(input_ids=ids, labels=labels, position_ids=positions, row_tokens=useful)
