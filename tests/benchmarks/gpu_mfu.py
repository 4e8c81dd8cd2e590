"""GPT-2 124M-config model FLOPs utilisation (MFU) of our training step, in bf16 on a GPU.

    python tests/benchmarks/gpu_mfu.py --out mfu.json [--seconds 60] [--peak-flops 989e12]

Trains a randomly initialised GPT-2 124M config (no download) with the trainer's own
``train_step`` (AdamW, clipping, autocast, packed blocks whose position ids restart per
"tweet", so the same block-diagonal masks as real training) for ``--seconds`` after a
warm-up, then reports tokens/s and MFU = FLOPs per token × tokens/s / peak, with FLOPs per
token = 6·N + 12·L·H·Q·T (N parameters without position embeddings; the attention term as in
the PaLM paper and nanoGPT, for the full block length T). The default peak, 989 TFLOP/s, is
the H100/H200 SXM dense bf16 figure; pass another chip's with ``--peak-flops``.

``--profile N`` then runs N more steps under ``torch.profiler`` and adds the operators that
took the most device time (``top_ops``) to the result, so one short GPU session shows where a
step's time goes (the attention, the 50,257-way softmax, the optimizer) before anyone tunes.

Exits 2 with a clear message when CUDA is requested but absent. ``--device cpu --steps 2
--size tiny`` is a smoke mode for machines without a GPU (the MFU it prints is meaningless).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path

SIZES = {
    "124M": {"n_layer": 12, "n_head": 12, "n_embd": 768, "vocab_size": 50257},
    "tiny": {"n_layer": 2, "n_head": 2, "n_embd": 64, "vocab_size": 512},
}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--out", type=Path, required=True, help="where to write the JSON result")
    p.add_argument("--device", default="cuda", help="cuda (default) or cpu for a smoke run")
    p.add_argument("--size", choices=sorted(SIZES), default="124M")
    p.add_argument("--seconds", type=float, default=60.0, help="measured time after warm-up")
    p.add_argument("--steps", type=int, default=None, help="measure this many steps instead")
    p.add_argument("--warmup-steps", type=int, default=None, help="default: 10 on GPU, 1 on CPU")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--block-size", type=int, default=128)
    p.add_argument("--tweet-tokens", type=int, default=40, help="0: no packing (plain causal)")
    p.add_argument("--peak-flops", type=float, default=989e12)
    p.add_argument("--no-compile", action="store_true", help="skip torch.compile")
    p.add_argument(
        "--compile-scope", choices=["model", "loss"], default="model",
        help="compile the model (as the trainer does) or the model with its loss",
    )  # fmt: skip
    p.add_argument("--compile-mode", default=None, help="torch.compile mode, e.g. max-autotune")
    p.add_argument("--profile", type=int, default=0, metavar="N", help="profile N more steps")
    p.add_argument("--top", type=int, default=20, help="operators to report with --profile")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import torch

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print(
            "gpu_mfu: no CUDA device is available; this benchmark needs a GPU "
            "(for a smoke run without one: --device cpu --steps 2 --size tiny)",
            file=sys.stderr,
        )
        return 2
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    from transformers import GPT2Config, GPT2LMHeadModel

    from training.gpt2_config import GPT2Settings
    from training.gpt2_train import make_optimizer, token_loss, train_step

    device = torch.device(args.device)
    on_gpu = device.type == "cuda"
    dtype = torch.bfloat16 if on_gpu else None
    if on_gpu:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    size = SIZES[args.size]
    torch.manual_seed(0)
    config = GPT2Config(n_positions=1024, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, **size)
    model = GPT2LMHeadModel._from_config(config, attn_implementation="sdpa").to(device).train()
    settings = GPT2Settings(base_model=None, **size, learning_rate=3e-4)
    optimizer = make_optimizer(model, settings, device)
    scaler = torch.amp.GradScaler(device.type, enabled=False)  # bf16 needs no scaler
    compiled = on_gpu and not args.no_compile
    step_model, loss_fn = model, token_loss
    if compiled and args.compile_scope == "model":
        step_model = torch.compile(model, mode=args.compile_mode)
    elif compiled:
        loss_fn = torch.compile(token_loss, mode=args.compile_mode)

    b, t = args.batch_size, args.block_size
    ids = torch.randint(0, size["vocab_size"], (b, t), device=device)
    labels = ids.clone()
    if args.tweet_tokens:
        pos = (torch.arange(t, device=device) % args.tweet_tokens).expand(b, t).contiguous()
        labels[:, :: args.tweet_tokens] = -100
    else:
        pos = torch.arange(t, device=device).expand(b, t).contiguous()
    batch = [(ids, labels, pos)]

    def sync() -> None:
        if on_gpu:
            torch.cuda.synchronize()

    warmup = args.warmup_steps if args.warmup_steps is not None else (10 if on_gpu else 1)
    for _ in range(warmup):  # includes torch.compile's first, slow, steps
        train_step(step_model, optimizer, scaler, batch, dtype, 1.0, loss_fn)
    sync()
    steps, started = 0, time.perf_counter()
    while True:
        loss = train_step(step_model, optimizer, scaler, batch, dtype, 1.0, loss_fn)
        steps += 1
        if args.steps is not None and steps >= args.steps:
            break
        if args.steps is None and steps % 10 == 0:
            sync()
            if time.perf_counter() - started >= args.seconds:
                break
    sync()
    seconds = time.perf_counter() - started

    n_params = sum(p.numel() for p in model.parameters()) - model.transformer.wpe.weight.numel()
    layers, heads = size["n_layer"], size["n_head"]
    head_dim = size["n_embd"] // heads
    flops_per_token = 6 * n_params + 12 * layers * heads * head_dim * t
    tokens_per_s = steps * b * t / seconds
    achieved = flops_per_token * tokens_per_s
    result = {
        "size": args.size,
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if on_gpu else platform.processor(),
        "dtype": "bf16" if dtype is not None else "fp32",
        "compiled": compiled,
        "compile_scope": args.compile_scope if compiled else None,
        "compile_mode": (args.compile_mode or "default") if compiled else None,
        "params_without_wpe": n_params,
        "batch_size": b,
        "block_size": t,
        "tweet_tokens": args.tweet_tokens,
        "steps": steps,
        "seconds": round(seconds, 3),
        "tokens_per_s": round(tokens_per_s, 1),
        "flops_per_token": flops_per_token,
        "achieved_flops": achieved,
        "peak_flops": args.peak_flops,
        "mfu": achieved / args.peak_flops,
        "final_loss": float(loss),
        "torch": torch.__version__,
    }
    if args.profile:
        result["top_ops"] = profile_steps(
            lambda: train_step(step_model, optimizer, scaler, batch, dtype, 1.0, loss_fn),
            args.profile, on_gpu, args.top,
        )  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(result, indent=2))
    return 0


def profile_steps(step: Callable[[], object], steps: int, on_gpu: bool, top: int) -> list[dict]:
    """The operators with the most self time over ``steps`` steps (device time on a GPU)."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if on_gpu else [])
    with profile(activities=activities) as prof:
        for _ in range(steps):
            step()
        if on_gpu:
            torch.cuda.synchronize()
    attr = "self_device_time_total" if on_gpu else "self_cpu_time_total"
    events = [e for e in prof.key_averages() if getattr(e, attr) > 0]
    total = sum(getattr(e, attr) for e in events) or 1.0
    events.sort(key=lambda e: getattr(e, attr), reverse=True)
    return [
        {
            "op": e.key,
            "calls_per_step": e.count / steps,
            "ms_per_step": getattr(e, attr) / 1e3 / steps,
            "share": getattr(e, attr) / total,
        }
        for e in events[:top]
    ]


if __name__ == "__main__":
    sys.exit(main())
