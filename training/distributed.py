"""Processes and devices: which rank this is, joining a torchrun process group, and the
device a run uses."""
from __future__ import annotations

import os

import torch
import torch.distributed as dist


def world() -> tuple[int, int]:
    """(rank, world size); (0, 1) outside a process group."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def init_distributed_from_env() -> bool:
    """Join the process group when launched by torchrun (WORLD_SIZE > 1)."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        dist.init_process_group("gloo")
        return True
    return False


def pick_device(spec: str, world_size: int) -> torch.device:
    """``auto`` (CUDA when available, else CPU), ``cpu``, ``cuda`` or ``cuda:N``; under
    torchrun each rank takes the GPU of its LOCAL_RANK."""
    if spec == "auto":
        spec = "cuda" if torch.cuda.is_available() else "cpu"
    if spec.startswith("cuda") and world_size > 1:
        spec = f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}"
    return torch.device(spec)


def barrier(world_size: int) -> None:
    if world_size > 1:
        dist.barrier()
