"""Data parallelism for the GPT-2 loop, active only under ``torchrun``/``accelerate launch``.

Both launchers start one process per device and set ``WORLD_SIZE``, ``RANK`` and
``LOCAL_RANK``; with ``WORLD_SIZE`` unset or 1 every helper here is a no-op, so the same loop
runs on a laptop. Rank 0 alone writes checkpoints, train.log and the published version.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any

import torch

_initialised = False


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


def is_main() -> bool:
    return rank() == 0


def wrap(model: torch.nn.Module, device: torch.device) -> Any:
    """Join the process group (NCCL on GPUs, gloo on CPUs) and wrap the model in DDP."""
    global _initialised
    if world_size() <= 1:
        return model
    import torch.distributed as tdist
    from torch.nn.parallel import DistributedDataParallel

    if not _initialised:
        if device.type == "cuda":
            torch.cuda.set_device(device)
        tdist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        _initialised = True
    ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=ids)


@contextlib.contextmanager
def no_sync(model: Any, *, last: bool) -> Iterator[None]:
    """Skip the gradient all-reduce on all but the last micro-batch of an accumulation."""
    if world_size() > 1 and not last and hasattr(model, "no_sync"):
        with model.no_sync():
            yield
    else:
        yield


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    if world_size() > 1 and _initialised:
        import torch.distributed as tdist

        tdist.all_reduce(tensor)
    return tensor


def any_flag(flag: bool, device: torch.device) -> bool:
    """True on every rank when any rank saw it: all ranks must stop at the same step."""
    if world_size() <= 1 or not _initialised:
        return flag
    value = all_reduce_sum(torch.tensor([float(flag)], device=device))
    return bool(value.item() > 0)
