"""torchrun support: which process this is, and the few collectives the training loop needs."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch

from mct.device import resolve_device


@dataclass
class Dist:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def is_main_process() -> bool:
    """Rank 0 of a torchrun job, or a lone process (before the process group exists)."""
    return os.environ.get("RANK", "0") == "0"


def setup_distributed(device_spec: str) -> tuple[Dist, torch.device]:
    """Join the torchrun process group when WORLD_SIZE > 1 (nccl on GPUs, gloo on CPU)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size == 1:
        return Dist(), resolve_device(device_spec)
    import torch.distributed as dist

    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    device = resolve_device(device_spec)
    if device.type == "cuda":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return Dist(rank, world_size, local_rank), device


def all_reduce_sum(tensor: torch.Tensor, dist_info: Dist) -> torch.Tensor:
    """Sum of `tensor` over all processes (itself when there is one); stays on the device."""
    if dist_info.enabled:
        import torch.distributed as dist

        dist.all_reduce(tensor)
    return tensor


def barrier(dist_info: Dist) -> None:
    if dist_info.enabled:
        import torch.distributed as dist

        dist.barrier()
