"""GPT-2 (PyTorch + transformers): settings, building, saving, loading and sampling.

The training loop is in :mod:`training.gpt2_train`; this module is what the daemon needs to
serve a published GPT-2 version, so it stays free of optimizer and data code.

A base model comes from a hub name (``gpt2``, ``distilgpt2``) or a local folder through
``from_pretrained``, or is built from scratch by size (``n_layer``/``n_head``/``n_embd``) with
a byte-level BPE tokenizer trained on the dataset, for machines without a hub.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar, Literal

import structlog

from training.models import ModelLoadError
from training.settings import StrictSettings

log = structlog.get_logger(__name__)

SETTINGS_FILE = "parrotbot_gpt2.json"
WEIGHTS_FILE = "model.safetensors"
_REQUIRED_FILES = ("config.json", WEIGHTS_FILE, "tokenizer.json", SETTINGS_FILE)
Precision = Literal["auto", "fp32", "bf16", "fp16"]
_MAY_BE_ZERO = ("seed", "warmup_steps", "early_stopping_patience")


@dataclasses.dataclass(frozen=True)
class GPT2Settings(StrictSettings):
    """Model and training settings; the resolved set is saved with every checkpoint."""

    family: ClassVar[str] = "gpt2"

    base_model: str | None = "gpt2"
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 256
    vocab_size: int = 8192
    block_size: int = 128
    batch_size: int = 16
    grad_accum: int = 1
    learning_rate: float = 3e-4
    min_lr_ratio: float = 0.1
    warmup_steps: int = 50
    weight_decay: float = 0.1
    grad_clip: float = 1.0
    dropout: float = 0.1
    epochs: int = 3
    max_steps: int | None = None
    eval_interval: int = 50
    checkpoint_interval: int = 50
    early_stopping_patience: int = 5
    val_fraction: float = 0.1
    precision: Precision = "auto"
    compile: bool = False
    device: str = "auto"
    seed: int = 0
    log_interval: int = 10

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.type == "float" and (
                isinstance(value, bool) or not isinstance(value, int | float)
            ):
                raise ValueError(f"gpt2 config {f.name!r} must be a number, got {value!r}")
            if f.type not in ("int", "int | None") or value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(f"gpt2 config {f.name!r} must be an integer, got {value!r}")
            if value < (0 if f.name in _MAY_BE_ZERO else 1):
                raise ValueError(f"gpt2 config {f.name!r} is out of range: {value}")
        if not 4 <= self.block_size <= 1024:
            raise ValueError(f"gpt2 config 'block_size' must be in [4, 1024]: {self.block_size}")
        if self.n_embd % self.n_head:
            raise ValueError("gpt2 config 'n_embd' must be a multiple of 'n_head'")
        if self.precision not in ("auto", "fp32", "bf16", "fp16"):
            raise ValueError(
                f"gpt2 config 'precision' must be auto|fp32|bf16|fp16: {self.precision!r}"
            )
        if not 0 <= self.val_fraction < 1 or not 0 <= self.dropout < 1:
            raise ValueError("gpt2 config 'val_fraction' and 'dropout' must be in [0, 1)")
        if self.vocab_size < 300:
            raise ValueError("gpt2 config 'vocab_size' must be >= 300 (256 bytes + merges)")


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
        random_seed: int | None = None,
    ) -> list[str]:
        """Sample one continuation per seed; a row stops at its first end-of-text token.

        Seeds of equal token length run as one batch with a KV cache, so no padding (and no
        padding-aware position ids) is needed. ``max_length`` counts characters, seed
        included, like the char-RNN's.
        """
        import torch

        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        if not seeds:
            return []
        eos = self.tokenizer.eos_token_id
        prefixes = [[eos, *self.tokenizer.encode(s, add_special_tokens=False)] for s in seeds]
        groups: dict[int, list[int]] = {}
        for i, p in enumerate(prefixes):
            groups.setdefault(len(p), []).append(i)
        results: list[str] = list(seeds)
        with torch.random.fork_rng(devices=[]):
            if random_seed is not None:
                torch.manual_seed(random_seed)
            for length, rows in sorted(groups.items()):
                budget = max(0, max_length - min(len(seeds[i]) for i in rows))
                new = self._sample([prefixes[i] for i in rows], budget, temperature, length)
                for i, ids in zip(rows, new, strict=True):
                    text = self.tokenizer.decode(ids).rstrip("\ufffd")
                    results[i] = (seeds[i] + text)[: max(max_length, len(seeds[i]))]
        return results

    def _sample(
        self, prefixes: list[list[int]], budget: int, temperature: float, length: int
    ) -> list[list[int]]:
        """Token ids after each prefix, up to (not including) the first end-of-text token."""
        import torch

        eos = self.tokenizer.eos_token_id
        model = self.model
        device = next(model.parameters()).device
        limit = min(budget, model.config.n_positions - length)
        out: list[list[int]] = [[] for _ in prefixes]
        if limit <= 0:
            return out
        done = torch.zeros(len(prefixes), dtype=torch.bool, device=device)
        ids = torch.tensor(prefixes, device=device)
        # transformers 5 renamed past_key_values to cache; 4.x knows only the old name.
        cache_arg = "cache" if "cache" in inspect.signature(model.forward).parameters else None
        cache_arg = cache_arg or "past_key_values"
        cache = None
        with torch.inference_mode():
            for _ in range(limit):
                result = model(input_ids=ids, use_cache=True, **{cache_arg: cache})
                cache = getattr(result, "cache", None) or result.past_key_values
                logits = result.logits[:, -1, :].float() / temperature
                token = torch.multinomial(torch.softmax(logits, dim=-1), 1).squeeze(1)
                done |= token == eos
                for row in torch.nonzero(~done).flatten().tolist():
                    out[row].append(int(token[row]))
                if bool(done.all()):
                    break
                ids = token.unsqueeze(1)
        return out
