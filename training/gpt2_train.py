"""The GPT-2 training loop: one readable loop, nanoGPT-style, with full-state resume.

Per optimizer step: set the learning rate → ``grad_accum`` micro-batches under autocast →
unscale, clip, step → log; every ``eval_interval`` steps: validation loss, best weights,
early stopping; every ``checkpoint_interval`` steps (and on a stop request): the full state.

Precision: bf16 autocast on GPUs that support it, fp16 with a GradScaler on those that do not
(fp16 overflows without one: the "fp16 NaNs" of older fine-tuning scripts). On a CPU, bf16
autocast where the cores multiply bf16 natively (AMX or AVX512-BF16: 2.3x fp32's tokens/s
for GPT-2 small on two Sapphire Rapids cores), fp32 elsewhere, where bf16 is emulated and slow.
Data parallel: started under ``torchrun`` (or ``accelerate launch``, which sets the same
``WORLD_SIZE``/``RANK`` variables), every rank runs this same loop on its own shard of each
batch; see :mod:`training.distributed`.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import structlog
import torch
import torch.nn.functional as F

from training import distributed as dist
from training.files import atomic_write
from training.gpt2 import GPT2, build
from training.gpt2_config import GPT2Settings
from training.packing import IGNORE, Blocks, encode_tweets, pack
from training.runs import (
    checkpoint_path,
    epoch_permutation,
    load_newest,
    prune_checkpoints,
    python_numpy_rng_state,
    restore_python_numpy_rng,
)
from training.trainlog import Progress, TrainLog

log = structlog.get_logger(__name__)

BEST_FILE = "best.pt"


@dataclass(frozen=True)
class EvalReport:
    step: int
    train_loss: float | None
    val_loss: float
    perplexity: float
    best: bool
    train_seconds: float  # time in training steps only (no evaluation, no checkpoints)
    tokens: int  # tweet tokens trained on so far (padding not counted)


@dataclass
class FitResult:
    model: GPT2
    step: int
    best_step: int | None
    train_loss: float | None
    val_loss: float | None
    stopped_early: bool


def resolve_device_and_dtype(settings: GPT2Settings) -> tuple[torch.device, torch.dtype | None]:
    """Pick the device and the autocast dtype (None: plain fp32)."""
    name = settings.device
    if name == "auto":
        name = f"cuda:{dist.local_rank()}" if torch.cuda.is_available() else "cpu"
    device = torch.device(name)
    precision = settings.precision
    if precision == "auto":
        if device.type == "cuda":
            precision = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        else:
            precision = "bf16" if device.type == "cpu" and cpu_has_native_bf16() else "fp32"
    if precision == "fp16" and device.type != "cuda":
        raise ValueError("gpt2 config 'precision': fp16 needs a CUDA device (use fp32 or bf16)")
    return device, {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]


def cpu_has_native_bf16() -> bool:
    """Whether this CPU multiplies bf16 in hardware (AMX tiles or AVX512-BF16).

    Autocast keeps fp32 master weights and runs matmuls in bf16, so where the hardware does
    bf16 it is the GPU recipe at CPU scale; without it oneDNN emulates bf16 below fp32 speed.
    """
    probes = ("_is_amx_tile_supported", "_is_avx512_bf16_supported")
    return any(bool(getattr(torch.cpu, name, lambda: False)()) for name in probes)


def lr_at(step: int, settings: GPT2Settings, total: int) -> float:
    """Linear warmup, then cosine decay to ``min_lr_ratio`` of the peak at the last step."""
    peak = settings.learning_rate
    warmup = min(settings.warmup_steps, max(1, total // 10))
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    floor = peak * settings.min_lr_ratio
    return floor + 0.5 * (1 + math.cos(math.pi * progress)) * (peak - floor)


def make_optimizer(model: torch.nn.Module, settings: GPT2Settings, device: torch.device) -> Any:
    """AdamW; weight decay on matrices only (decaying biases and LayerNorm gains hurts)."""
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": settings.weight_decay},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]
    fused = device.type == "cuda"
    return torch.optim.AdamW(groups, lr=settings.learning_rate, betas=(0.9, 0.95), fused=fused)


def token_loss(model: Any, ids: torch.Tensor, labels: torch.Tensor, pos: torch.Tensor) -> Any:
    """Summed next-token cross-entropy and the number of predicted tokens.

    ``use_cache=False`` matters: with a cache transformers skips the packed-sequence mask and
    tweets would attend to each other. The labels are shifted, not the logits: slicing the
    logits copies a (batch, block, vocabulary) tensor, 8-11% of a CPU step at GPT-2's 50,257.
    """
    logits = model(input_ids=ids, position_ids=pos, use_cache=False).logits
    targets = F.pad(labels[:, 1:], (0, 1), value=IGNORE)
    loss = F.cross_entropy(
        logits.flatten(0, 1).float(), targets.flatten(), ignore_index=IGNORE, reduction="sum"
    )
    return loss, (targets != IGNORE).sum()


def to_device(blocks: Blocks, rows: np.ndarray, device: torch.device) -> list[torch.Tensor]:
    arrays = (blocks.input_ids[rows], blocks.labels[rows], blocks.position_ids[rows])
    return [torch.from_numpy(a).to(device, non_blocking=True) for a in arrays]


@torch.no_grad()
def evaluate(model: Any, blocks: Blocks, batch: int, device: torch.device, dtype: Any) -> float:
    """Mean loss per predicted token over the whole validation split (summed over ranks)."""
    model.eval()
    total = torch.zeros(2, dtype=torch.float64, device=device)
    for start in range(dist.rank() * batch, len(blocks), batch * dist.world_size()):
        ids, labels, pos = to_device(
            blocks, np.arange(start, min(start + batch, len(blocks))), device
        )
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            loss, count = token_loss(model, ids, labels, pos)
        total += torch.stack([loss.double(), count.double()])
    model.train()
    total = dist.all_reduce_sum(total)
    return float(total[0] / total[1].clamp(min=1))


def _rng_state() -> dict[str, Any]:
    state = python_numpy_rng_state()
    state["torch"] = torch.get_rng_state()
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def load_checkpoint(path: Path) -> dict[str, Any]:
    """A resume checkpoint: tensors, numbers, strings and containers only.

    ``weights_only=True`` refuses any other pickled object, which would otherwise run code
    on load: a run folder on a shared volume is not trusted to be what we wrote.
    """
    return torch.load(path, map_location="cpu", weights_only=True)


def _restore_rng(state: dict[str, Any]) -> None:
    restore_python_numpy_rng(state)
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def train_step(
    model: Any,
    optimizer: Any,
    scaler: Any,
    micro_batches: Sequence[Sequence[torch.Tensor]],
    dtype: torch.dtype | None,
    grad_clip: float,
    loss_fn: Callable[..., Any] = token_loss,
) -> torch.Tensor:
    """One optimizer step over ``micro_batches`` (gradient accumulation); the mean loss.

    The loss comes back as a detached device tensor, so a caller that does not log this step
    never waits for the GPU. ``loss_fn`` is :func:`token_loss` or a compiled version of it
    (compiling the loss with the model lets the compiler fuse the vocabulary-wide softmax).
    """
    total = torch.zeros((), device=micro_batches[0][0].device)
    n = len(micro_batches)
    for k, (ids, labels, pos) in enumerate(micro_batches):
        # DDP: only the last micro-batch synchronises gradients.
        with dist.no_sync(model, last=k == n - 1):
            with torch.autocast(ids.device.type, dtype=dtype, enabled=dtype is not None):
                loss_sum, count = loss_fn(model, ids, labels, pos)
                loss = loss_sum / count.clamp(min=1) / n
            scaler.scale(loss).backward()
        total += loss.detach().float()
    scaler.unscale_(optimizer)
    torch.nn.utils.clip_grad_norm_(
        [p for group in optimizer.param_groups for p in group["params"]], grad_clip
    )
    scaler.step(optimizer)
    scaler.update()
    optimizer.zero_grad(set_to_none=True)
    return total


def fit(
    train_texts: Sequence[str],
    val_texts: Sequence[str],
    settings: GPT2Settings,
    *,
    run_dir: Path,
    resume: bool,
    stop: threading.Event | None = None,
    on_eval: Callable[[EvalReport], None] | None = None,
) -> FitResult:
    """Train (or continue training) in ``run_dir``; return the best weights found."""
    stop = stop or threading.Event()
    device, dtype = resolve_device_and_dtype(settings)
    writer = dist.is_main()
    torch.manual_seed(settings.seed)
    model, tokenizer = _build_or_reload(settings, train_texts, run_dir, resume)
    model.to(device).train()
    pad = tokenizer.eos_token_id
    train_blocks = pack(encode_tweets(tokenizer, train_texts), settings.block_size, pad)
    val_blocks = pack(encode_tweets(tokenizer, val_texts), settings.block_size, pad)
    have_val = bool(val_texts)
    batch = max(1, min(settings.batch_size, len(train_blocks) // dist.world_size()))
    micro_per_epoch = max(1, len(train_blocks) // (batch * dist.world_size()))
    accum = settings.grad_accum
    total = settings.max_steps or math.ceil(settings.epochs * micro_per_epoch / accum)
    log.info(
        "gpt2.data_packed",
        train_blocks=len(train_blocks),
        val_blocks=len(val_blocks) if have_val else 0,
        fill=round(train_blocks.fill, 4),
        batch=batch,
        steps=total,
        device=str(device),
        dtype=str(dtype),
        params=sum(p.numel() for p in model.parameters()),
    )

    optimizer = make_optimizer(model, settings, device)
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)
    raw_model = model
    model = dist.wrap(model, device)
    if settings.compile:
        model = torch.compile(model)

    state: dict[str, Any] = {"step": 0, "best_val": math.inf, "best_step": None, "bad_evals": 0}
    state |= {"elapsed": 0.0, "train_loss": None, "val_loss": None}
    state |= {"train_seconds": 0.0, "tokens": 0}
    if resume:
        path, ckpt = load_newest(run_dir, load_checkpoint)
        raw_model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scaler.load_state_dict(ckpt["scaler"])
        state |= ckpt["state"]
        _restore_rng(ckpt["rng"])
        log.info("gpt2.resumed", checkpoint=str(path), step=state["step"])
    trainlog = TrainLog(run_dir, resume_step=state["step"] if resume else None) if writer else None

    def save_checkpoint() -> None:
        if not writer:
            return
        ckpt = {
            "model": raw_model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scaler": scaler.state_dict(),
            "state": dict(state),
            "rng": _rng_state(),
            "settings": settings.to_dict(),
        }
        atomic_write(checkpoint_path(run_dir, state["step"], "pt"), lambda f: torch.save(ckpt, f))
        prune_checkpoints(run_dir)
        log.info("gpt2.checkpoint_saved", step=state["step"])

    def run_eval(train_loss: float | None) -> bool:
        """Validate, keep the best weights; True when early stopping says enough."""
        if not have_val:
            return False
        val = evaluate(model, val_blocks, batch, device, dtype)
        better = val < state["best_val"]
        state["val_loss"] = val
        if better:
            state.update(best_val=val, best_step=state["step"], bad_evals=0)
            if writer:
                weights = raw_model.state_dict()
                atomic_write(run_dir / BEST_FILE, lambda f: torch.save(weights, f))
        else:
            state["bad_evals"] += 1
        report = EvalReport(
            state["step"], train_loss, val, math.exp(min(val, 50)), better,
            state["train_seconds"], state["tokens"],
        )  # fmt: skip
        log.info("gpt2.eval", **report.__dict__)
        if on_eval is not None:
            on_eval(report)
        patience = settings.early_stopping_patience
        return bool(patience) and state["bad_evals"] >= patience

    if state["step"] == 0 and have_val:
        val0 = evaluate(model, val_blocks, batch, device, dtype)
        state["val_loss"] = val0
        if trainlog:
            trainlog.append(step=0, val_loss=val0, lr=0.0, elapsed_s=0.0)

    progress = Progress(total, state["step"], every=settings.log_interval, name="gpt2")
    started = time.monotonic() - state["elapsed"]
    window_loss, window_tokens, window_start, window_steps = 0.0, 0, time.monotonic(), 0
    early = False
    while state["step"] < total:
        step = state["step"]
        step_started = time.monotonic()
        lr = lr_at(step, settings, total)
        for group in optimizer.param_groups:
            group["lr"] = lr
        micro_batches, step_count = [], 0
        for k in range(accum):
            epoch, index = divmod(step * accum + k, micro_per_epoch)
            perm = epoch_permutation(settings.seed, epoch, len(train_blocks))
            width = batch * dist.world_size()
            rows = perm[index * width : (index + 1) * width][dist.rank() :: dist.world_size()]
            micro_batches.append(to_device(train_blocks, rows, device))
            step_count += int(train_blocks.row_tokens[rows].sum())
        loss = train_step(model, optimizer, scaler, micro_batches, dtype, settings.grad_clip)
        state["step"] = step = step + 1
        state["elapsed"] = time.monotonic() - started
        state["train_seconds"] += time.monotonic() - step_started
        state["tokens"] += step_count * dist.world_size()
        window_loss += loss  # a device tensor: no host sync until the next log line
        window_tokens += step_count * dist.world_size()
        window_steps += 1
        stop_now = dist.any_flag(stop.is_set(), device)

        is_eval = step % settings.eval_interval == 0 or step == total
        logged = step % settings.log_interval == 0 or is_eval or stop_now
        if logged:
            now = time.monotonic()
            train_loss = float(window_loss) / window_steps
            state["train_loss"] = train_loss
            tps = window_tokens / max(now - window_start, 1e-9)
            if is_eval:
                early = run_eval(train_loss)
            if trainlog:
                val = state["val_loss"] if is_eval else None
                trainlog.append(
                    step=step, train_loss=train_loss, val_loss=val, lr=lr,
                    tokens_per_s=tps, elapsed_s=state["elapsed"],
                )  # fmt: skip
            progress.update(step, loss=train_loss, lr=lr, tok_s=tps)
            window_loss, window_tokens, window_steps = 0.0, 0, 0
        if step % settings.checkpoint_interval == 0 or stop_now or early or step == total:
            save_checkpoint()
        if logged:  # tokens/s measures training only, not evaluation or checkpoint writes
            window_start = time.monotonic()
        if stop_now or early:
            log.info("gpt2.stopping", step=step, early_stopping=early, stop_requested=stop_now)
            break
    progress.close()

    if have_val and (run_dir / BEST_FILE).exists() and state["best_step"] is not None:
        raw_model.load_state_dict(torch.load(run_dir / BEST_FILE, weights_only=True))
    raw_model.eval()
    return FitResult(
        model=GPT2(raw_model, tokenizer, settings),
        step=state["step"],
        best_step=state["best_step"] if have_val else state["step"],
        train_loss=state["train_loss"],
        val_loss=state["best_val"] if state["best_step"] is not None else None,
        stopped_early=early,
    )


def _build_or_reload(
    settings: GPT2Settings, texts: Sequence[str], run_dir: Path, resume: bool
) -> tuple[Any, Any]:
    """A fresh run builds (and for a scratch model trains its tokenizer into the run folder);
    a resumed one reuses that tokenizer so token ids mean what the checkpoint learned."""
    tok_dir = run_dir / "tokenizer"
    if resume and not settings.base_model and tok_dir.exists():
        from transformers import GPT2TokenizerFast

        tokenizer = GPT2TokenizerFast.from_pretrained(str(tok_dir), local_files_only=True)
        model, _ = build(settings, [], run_dir, tokenizer=tokenizer)
        return model, tokenizer
    return build(settings, texts, run_dir)
