"""Data-parallel training under `torchrun`: process group, device, and gradient averaging.

`torchrun --nproc_per_node N -m mmrface train ...` sets RANK / WORLD_SIZE / LOCAL_RANK; we then
join a process group (nccl on CUDA, gloo on CPU). Every rank holds full copies of the networks
and draws its own shard of the data (DistributedSampler); after each backward pass the gradients
are averaged across ranks with one all-reduce per optimiser, so every rank takes the same step
and the weights stay identical. This is what DistributedDataParallel does, written out: the
training step calls the generator and the discriminators several times per step (R1 needs a
double backward, the G step reads D with frozen weights), which DDP's hooks do not allow.
Only rank 0 writes files and logs.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Iterable

import torch
import torch.distributed as dist

from mmrface.errors import UserError


@dataclass
class DistContext:
    """Where this process runs: rank, world size, device."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world > 1


def resolve_device(pref: str, local_rank: int = 0) -> torch.device:
    """`auto` = cuda (this rank's GPU) if available, else cpu; `cuda:N` and `cpu` as given."""
    if pref in (None, "auto"):
        return torch.device(f"cuda:{local_rank}") if torch.cuda.is_available() else torch.device("cpu")
    try:
        dev = torch.device(pref)
    except RuntimeError as exc:
        raise UserError(f"train.device: {exc}") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise UserError(f"train.device={pref!r} but CUDA is not available here; use auto or cpu")
        if dev.index is None:
            dev = torch.device(f"cuda:{local_rank}")
    return dev


def setup(device_pref: str = "auto") -> DistContext:
    """Join the process group when launched by torchrun with WORLD_SIZE > 1; pick the device."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = resolve_device(device_pref, local_rank)
    if world > 1 and not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(backend=backend)
    return DistContext(rank, world, local_rank, device)


def shutdown(ctx: DistContext) -> None:
    if ctx.distributed and dist.is_initialized():
        dist.destroy_process_group()


def broadcast_module(module: torch.nn.Module, ctx: DistContext) -> None:
    """Copy rank 0's parameters and buffers to every rank (identical start)."""
    if not ctx.distributed:
        return
    with torch.no_grad():
        for t in list(module.parameters()) + list(module.buffers()):
            dist.broadcast(t.data, src=0)


def average_gradients(params: Iterable[torch.nn.Parameter], ctx: DistContext) -> None:
    """All-reduce the gradients of `params` (those that have one) into their mean, in one bucket.

    Which parameters have a gradient depends only on the config and the step, so it is the same
    on every rank.
    """
    if not ctx.distributed:
        return
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat /= ctx.world
    offset = 0
    for g in grads:
        n = g.numel()
        g.copy_(flat[offset:offset + n].view_as(g))
        offset += n


def all_reduce_mean(values: torch.Tensor, ctx: DistContext) -> torch.Tensor:
    """Mean of a tensor over ranks (a NaN on any rank makes it NaN everywhere)."""
    if not ctx.distributed:
        return values
    values = values.clone()
    dist.all_reduce(values)
    return values / ctx.world
