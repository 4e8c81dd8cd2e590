"""GPT-2 (PyTorch + transformers): building, saving, loading and sampling.

The training loop is in :mod:`training.gpt2_train`; this module is what the daemon needs to
serve a published GPT-2 version, so it stays free of optimizer and data code.

A base model comes from a hub name (``gpt2``, ``distilgpt2``) or a local folder through
``from_pretrained``, or is built from scratch by size (``n_layer``/``n_head``/``n_embd``) with
a byte-level BPE tokenizer trained on the dataset, for machines without a hub.
"""

from __future__ import annotations

import functools
import inspect
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import structlog

from training.gpt2_config import GPT2Settings
from training.publish import ModelLoadError
from training.sampling import Sampling, choose, per_row, seen_tokens

log = structlog.get_logger(__name__)

SETTINGS_FILE = "parrotbot_gpt2.json"
WEIGHTS_FILE = "model.safetensors"
_REQUIRED_FILES = ("config.json", WEIGHTS_FILE, "tokenizer.json", SETTINGS_FILE)


def build(
    settings: GPT2Settings, texts: Sequence[str], work_dir: Path, *, tokenizer: Any = None
) -> tuple[Any, Any]:
    """Return (model, tokenizer): a pretrained base, or a fresh one with a local tokenizer.

    A scratch model trains its tokenizer on ``texts`` into ``work_dir/tokenizer`` unless one
    is given (a resumed run must reuse the tokenizer its checkpoint was trained with).
    """
    from transformers import GPT2Config, GPT2LMHeadModel, GPT2TokenizerFast

    if settings.base_model:
        try:
            tokenizer = GPT2TokenizerFast.from_pretrained(settings.base_model)
            model = GPT2LMHeadModel.from_pretrained(settings.base_model, attn_implementation="sdpa")
        except OSError as e:
            raise ValueError(
                f"cannot load base model {settings.base_model!r} ({e}); offline, set "
                "model.gpt2.base_model to a local folder or to null to train from scratch"
            ) from e
        return model, tokenizer
    from training.packing import train_tokenizer

    if tokenizer is None:
        tok_dir = train_tokenizer(texts, settings.vocab_size, Path(work_dir) / "tokenizer")
        tokenizer = GPT2TokenizerFast.from_pretrained(str(tok_dir), local_files_only=True)
    config = GPT2Config(
        vocab_size=len(tokenizer),
        n_positions=1024,
        n_embd=settings.n_embd,
        n_layer=settings.n_layer,
        n_head=settings.n_head,
        resid_pdrop=settings.dropout,
        embd_pdrop=settings.dropout,
        attn_pdrop=settings.dropout,
        bos_token_id=tokenizer.eos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    return GPT2LMHeadModel._from_config(config, attn_implementation="sdpa"), tokenizer


def _quiet_transformers() -> None:
    """No progress bars for loading one small file: they are noise in the daemon's log."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()


class GPT2:
    """A trained GPT-2 with its tokenizer; see :class:`training.models.TextModel`."""

    kind: ClassVar[str] = "gpt2"

    def __init__(self, model: Any, tokenizer: Any, settings: GPT2Settings) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.settings = settings

    def save(self, directory: Path) -> None:
        """Weights as safetensors, config, tokenizer, and our settings, into ``directory``."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        _quiet_transformers()
        self.model.save_pretrained(str(directory), safe_serialization=True)
        self.tokenizer.save_pretrained(str(directory))
        (directory / SETTINGS_FILE).write_text(
            json.dumps(self.settings.to_dict(), indent=2, sort_keys=True) + "\n", encoding="utf-8"
        )

    @classmethod
    def load(cls, directory: Path) -> GPT2:
        """Load from :meth:`save`'s files, never from a hub; a bad file is a ModelLoadError."""
        from transformers import GPT2LMHeadModel, GPT2TokenizerFast

        directory = Path(directory)
        _quiet_transformers()
        for name in _REQUIRED_FILES:
            if not (directory / name).is_file():
                raise ModelLoadError(f"{directory / name}: file is missing")
        try:
            raw = json.loads((directory / SETTINGS_FILE).read_text(encoding="utf-8"))
            settings = GPT2Settings.from_dict(raw)
        except (OSError, json.JSONDecodeError, TypeError, ValueError) as e:
            raise ModelLoadError(f"{directory / SETTINGS_FILE}: {e}") from e
        try:
            tokenizer = GPT2TokenizerFast.from_pretrained(str(directory), local_files_only=True)
        except Exception as e:
            raise ModelLoadError(f"{directory / 'tokenizer.json'}: cannot load ({e})") from e
        try:
            model = GPT2LMHeadModel.from_pretrained(
                str(directory), local_files_only=True, attn_implementation="sdpa"
            )
        except Exception as e:
            raise ModelLoadError(f"{directory / WEIGHTS_FILE}: cannot load ({e})") from e
        model.eval()
        return cls(model, tokenizer, settings)

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
        """Sample one continuation per seed, every seed in one left-padded batch.

        A row reads ``<eot>``, its context followed by ``<eot>`` when there is one (the
        previous tweet, so the sample is a new tweet answering it), then its seed; it stops
        at its first end-of-text token, after ``max_new_tokens`` tokens, or once it holds
        ``max_length`` characters including the seed. The context is never in the result.
        """
        sampling = Sampling(temperature, top_k, top_p, repetition_penalty)
        if not seeds:
            return []
        eos = self.tokenizer.eos_token_id
        budgets = [max(0, max_length - len(s)) for s in seeds]
        # A token is rarely shorter than a character, so the character budget bounds tokens.
        limit = max(budgets) if max_new_tokens is None else min(max(budgets), max_new_tokens)
        limit = min(limit, self.model.config.n_positions // 2)
        room = self.model.config.n_positions - limit
        prefixes = []
        for text, seed in zip(per_row(context, len(seeds)), seeds, strict=True):
            seed_ids = _last(self._encode(seed), room - 1)
            # The oldest context tokens go first when a long mention would not fit.
            ctx_ids = [*self._encode(text), eos] if text else []
            prefixes.append([eos, *_last(ctx_ids, room - 1 - len(seed_ids)), *seed_ids])
        new = self._sample(prefixes, budgets, limit, sampling, np.random.default_rng(random_seed))
        results = []
        for seed, budget, ids in zip(seeds, budgets, new, strict=True):
            text = self.tokenizer.decode(ids).rstrip("\ufffd")
            results.append(seed + text[:budget])
        return results

    def _encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=False) if text else []

    @functools.cached_property
    def _token_chars(self) -> np.ndarray:
        """Characters each token decodes to: how a row knows its character budget is spent."""
        pieces = self.tokenizer.batch_decode([[i] for i in range(len(self.tokenizer))])
        return np.array([max(1, len(p)) for p in pieces], dtype=np.int64)

    def _sample(
        self,
        prefixes: list[list[int]],
        budgets: list[int],
        limit: int,
        sampling: Sampling,
        rng: np.random.Generator,
    ) -> list[list[int]]:
        """Token ids after each prefix, up to (not including) the first end-of-text token.

        Prefixes are left-padded into one batch: the attention mask hides the padding and
        the position ids count only real tokens, so a row's logits do not depend on what
        else is in the batch; after the first step the KV cache makes each step one token.
        """
        import torch

        eos = self.tokenizer.eos_token_id
        model = self.model
        device = next(model.parameters()).device
        rows = len(prefixes)
        out: list[list[int]] = [[] for _ in prefixes]
        if limit <= 0:
            return out
        width = max(len(p) for p in prefixes)
        ids = torch.full((rows, width), eos, dtype=torch.long)
        mask = torch.zeros((rows, width), dtype=torch.long)
        for row, prefix in enumerate(prefixes):
            ids[row, width - len(prefix) :] = torch.tensor(prefix)
            mask[row, width - len(prefix) :] = 1
        ids, mask = ids.to(device), mask.to(device)
        positions = (mask.cumsum(dim=1) - 1).clamp(min=0)
        seen = None
        if sampling.penalises:
            seen = seen_tokens(prefixes, model.config.vocab_size, (eos,))
        token_chars = self._token_chars
        chars = np.zeros(rows, dtype=np.int64)
        done = np.array([b == 0 for b in budgets])
        # transformers 5 renamed past_key_values to cache; 4.x knows only the old name.
        cache_arg = "cache" if "cache" in inspect.signature(model.forward).parameters else None
        cache_arg = cache_arg or "past_key_values"
        cache = None
        with torch.inference_mode():
            for _ in range(limit):
                result = model(
                    input_ids=ids,
                    attention_mask=mask,
                    position_ids=positions,
                    use_cache=True,
                    logits_to_keep=1,
                    **{cache_arg: cache},
                )
                cache = getattr(result, "cache", None) or result.past_key_values
                logits = result.logits[:, -1, : model.config.vocab_size].float().cpu().numpy()
                tokens = choose(logits, sampling, rng, seen)
                for row in np.flatnonzero(~done):
                    token = int(tokens[row])
                    if token == eos:
                        done[row] = True
                        continue
                    out[row].append(token)
                    chars[row] += token_chars[token]
                    done[row] = chars[row] >= budgets[row]
                    if seen is not None:
                        seen[row, token] = True
                if done.all():
                    break
                tokens[done] = eos  # finished rows idle on a harmless token
                ids = torch.from_numpy(tokens).to(device=device, dtype=torch.long).unsqueeze(1)
                mask = torch.cat([mask, mask.new_ones((rows, 1))], dim=1)
                positions = positions[:, -1:] + 1
        return out


def _last(ids: list[int], keep: int) -> list[int]:
    """The last ``keep`` ids (none when ``keep`` <= 0)."""
    return ids[max(0, len(ids) - keep) :] if keep > 0 else []
