"""The two GPT-2 anchors, implemented with transformers' Trainer as their authors ran them.

* huggingtweets: all tweets joined by ``<|endoftext|>``, cut into 1,024-token blocks (the
  remainder dropped), batch 1, fp32, AdamW lr 1.372e-4 with weight decay 0.01, cosine
  schedule without warm-up over the run.
* run_clm (transformers' example): texts concatenated with no separator, grouped into
  1,024-token blocks, Trainer defaults (batch 8, lr 5e-5, linear schedule).

Both get the same tokenizer, the same model config and the same seed as our trainer, and
are scored by the same evaluator: mean loss per token of each validation tweet on its own
(``<eos> tweet <eos>``), which is what generating one tweet needs.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from training.packing import Blocks


@dataclass
class Curve:
    """Validation loss against training-only seconds, and the throughput behind it."""

    points: list[tuple[float, float]] = field(default_factory=list)  # (train_seconds, val)
    steps: int = 0
    tokens: int = 0
    train_seconds: float = 0.0

    @property
    def best(self) -> float:
        return min(v for _, v in self.points)

    def seconds_to(self, target: float) -> float | None:
        return next((t for t, v in self.points if v <= target), None)

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / max(self.train_seconds, 1e-9)


def concatenated_blocks(
    token_lists: Sequence[list[int]], block: int, separator: int | None
) -> torch.Tensor:
    """run_clm's ``group_texts``: concatenate (with a separator or not), drop the remainder."""
    ids: list[int] = []
    for tokens in token_lists:
        ids.extend(tokens)
        if separator is not None:
            ids.append(separator)
    usable = len(ids) // block * block
    if usable == 0:
        raise ValueError(f"{len(ids)} tokens make no {block}-token block (the recipe's limit)")
    return torch.tensor(ids[:usable]).view(-1, block)


class _Blocks(torch.utils.data.Dataset):
    def __init__(self, blocks: torch.Tensor) -> None:
        self.blocks = blocks

    def __len__(self) -> int:
        return len(self.blocks)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"input_ids": self.blocks[i], "labels": self.blocks[i]}


def run_recipe(
    name: str,
    model: Any,
    blocks: torch.Tensor,
    *,
    seconds: float,
    evaluate: Callable[[Any], float],
    eval_every: int,
    work_dir: Path,
) -> Curve:
    """Train with Trainer for about ``seconds`` of training time, evaluating every N steps."""
    from transformers import Trainer, TrainerCallback, TrainingArguments

    recipes = {
        "huggingtweets": {
            "per_device_train_batch_size": 1,
            "learning_rate": 1.372e-4,
            "weight_decay": 0.01,
            "lr_scheduler_type": "cosine",
            "warmup_steps": 0,
        },
        "run_clm": {"per_device_train_batch_size": 8},
    }
    batch = recipes[name]["per_device_train_batch_size"]
    curve = Curve()

    class Clock(TrainerCallback):
        """Counts training time only; evaluation pauses the clock."""

        def on_step_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            self.t0 = time.perf_counter()

        def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            curve.train_seconds += time.perf_counter() - self.t0
            curve.steps = state.global_step
            curve.tokens = curve.steps * batch * blocks.shape[1]
            if state.global_step % eval_every == 0:
                curve.points.append((curve.train_seconds, evaluate(kw["model"])))
            if curve.train_seconds >= seconds:
                control.should_training_stop = True

    # Size the schedule to the time budget, as a user would size epochs to their data.
    probe = _seconds_per_step(model, blocks[:batch])
    max_steps = max(eval_every, int(seconds / probe))
    args = TrainingArguments(
        output_dir=str(work_dir / name),
        max_steps=max_steps,
        save_strategy="no",
        report_to=[],
        logging_strategy="no",
        disable_tqdm=True,
        use_cpu=not torch.cuda.is_available(),
        seed=0,
        dataloader_drop_last=False,
        **recipes[name],
    )
    trainer = Trainer(model=model, args=args, train_dataset=_Blocks(blocks), callbacks=[Clock()])
    trainer.train()
    if not curve.points or curve.points[-1][0] < curve.train_seconds:
        curve.points.append((curve.train_seconds, evaluate(model)))
    return curve


def _seconds_per_step(model: Any, batch: torch.Tensor, dtype: torch.dtype | None = None) -> float:
    """One forward/backward on a copy of the model's state, to size a schedule to a budget.

    ``dtype`` is the autocast a trainer will use: a bf16 trainer sized by fp32 steps would
    finish its schedule in half the budget.
    """
    state = {k: v.clone() for k, v in model.state_dict().items()}
    model.train()
    started = time.perf_counter()
    for _ in range(2):
        with torch.autocast("cpu", dtype=dtype, enabled=dtype is not None):
            loss = model(input_ids=batch, labels=batch, use_cache=False).loss
        loss.backward()
    model.zero_grad(set_to_none=True)
    model.load_state_dict(state)
    return (time.perf_counter() - started) / 2


def evaluator(val_blocks: Blocks) -> Callable[[Any], float]:
    """The shared yardstick: our trainer's per-tweet validation loss, for any GPT-2 model."""
    from training.gpt2_train import evaluate

    return lambda model: evaluate(model, val_blocks, 16, torch.device("cpu"), None)
